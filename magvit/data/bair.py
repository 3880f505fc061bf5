"""BAIR robot pushing: 30-frame 64x64 videos, in the layout the usual TFRecord converters write.

Either a folder of frames per video or one NumPy array per video (both may be mixed):

    root/train/<video_id>/0.png ... 29.png      (frames in natural order of their names)
    root/test/<video_id>.npy                    (T, 64, 64, 3) uint8

Splits: train (43,264 videos in the softmotion30_44k release) and test (256). No labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from magvit.data.base import DATASETS
from magvit.data.files import Entry, VideoClips, VideoFilesConfig, dataset_folder
from magvit.errors import MagvitError
from magvit.media import VideoReader, VideoReadError, open_video


@dataclass(frozen=True)
class BAIRConfig(VideoFilesConfig):
    """Clips as MAGVIT (section 4.1) predicts them: 16 frames (of the 30) at 64x64, 1 frame given."""

    name: str = "bair"
    root: str = "data/bair"
    split: Literal["train", "test"] = "train"
    probe: bool = True  # cheap here: a folder is listed, an array's header read (magvit.data.files)


class NpyReader:
    """A video stored as one (T, H, W, 3) uint8 array, with magvit.media's reader interface; memory-mapped,
    so a clip reads only its own frames."""

    fps = 10.0  # BAIR's frame rate is not recorded in the arrays; 10 is what previews use

    def __init__(self, path: str | Path):
        try:
            self._frames = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise VideoReadError(f"not a NumPy array ({e})") from None
        if self._frames.dtype != np.uint8 or self._frames.ndim != 4 or self._frames.shape[-1] != 3:
            raise VideoReadError(f"expected a (T, H, W, 3) uint8 array, got {self._frames.dtype} {self._frames.shape}")

    def __len__(self) -> int:
        return len(self._frames)

    def get_batch(self, indices: list[int]) -> np.ndarray:
        if not len(indices) or min(indices) < 0 or max(indices) >= len(self):
            raise VideoReadError(f"frame indices must lie in [0, {len(self)})")
        return np.ascontiguousarray(self._frames[list(indices)])  # (N, H, W, 3) uint8


def _natural(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


@DATASETS.register("bair", BAIRConfig)
class BAIR(VideoClips):
    """BAIR robot pushing (frame folders or .npy arrays): 16-frame 64x64 clips by default, no labels."""

    def __init__(
        self, root: str = BAIRConfig.root, split: str = BAIRConfig.split, frames: int = BAIRConfig.frames,
        stride: int = BAIRConfig.stride, size: int = BAIRConfig.size, random_clip: bool = BAIRConfig.random_clip,
        random_crop: bool = BAIRConfig.random_crop, flip: bool = BAIRConfig.flip, seed: int = BAIRConfig.seed,
        probe: bool = BAIRConfig.probe,
    ):
        videos = dataset_folder(root, "BAIR", split, ("train", "test")) / split
        if not videos.is_dir():
            raise MagvitError(f"{videos}: BAIR {split} folder not found")
        found = sorted((p for p in videos.iterdir() if p.is_dir() or p.suffix.lower() == ".npy"), key=_natural)
        if not found:
            raise MagvitError(f"{videos}: no video (a folder of frames or a .npy array) in this folder")
        self.split = split
        entries: list[Entry] = [(p, None) for p in found]
        super().__init__(videos, entries, frames, size, stride, random_clip, random_crop, flip, seed, probe)

    def _open(self, path: Path) -> VideoReader | NpyReader:
        return NpyReader(path) if path.suffix.lower() == ".npy" else open_video(path)
