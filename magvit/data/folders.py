"""A user's own data: every video (or image) under a folder, labels from sub-folder names.

Files that cannot be used (zero bytes, not a video, truncated, shorter than one clip) are found
when the folder is scanned, skipped with one warning that counts them by reason, and listed in
`dataset.skipped`; a file that still fails to decode later is skipped then, so an epoch never
crashes on bad data. A folder with no usable file raises one clear `MagvitError`.
"""

from __future__ import annotations

import abc
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from magvit.data.base import DATASETS, ClipDataset, resize_crop
from magvit.errors import MagvitError
from magvit.media import VideoReadError, open_video

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".gif", ".webp")  # a still WebP: "too short"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _scan(root: str, extensions: tuple[str, ...], kind: str) -> tuple[Path, list[Path], list[str]]:
    """Files under `root` with one of `extensions`, sorted; class names if all sit in sub-folders."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise MagvitError(f"{root}: {kind} folder not found")
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    if not files:
        raise MagvitError(f"{root}: no {kind} files ({', '.join(extensions)}) under this folder")
    in_subfolders = all(len(p.relative_to(base).parts) > 1 for p in files)
    classes = sorted({p.relative_to(base).parts[0] for p in files}) if in_subfolders else []
    return base, files, classes


class _FolderDataset(ClipDataset, abc.ABC):
    """Shared by VideoFolder and ImageFolder: the list of usable files, labels, skip accounting."""

    kind = "file"

    def __init__(self, root: str, extensions: tuple[str, ...], seed: int):
        super().__init__(seed)
        self.root, files, self.classes = _scan(root, extensions, self.kind)
        self.skipped: list[tuple[Path, str]] = []
        self.items = []
        for path in files:
            reason = self._probe(path)
            if reason is None:
                self.items.append(path)
            else:
                self.skipped.append((path, reason))
        if self.skipped:
            reasons = Counter(reason for _, reason in self.skipped)
            detail = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
            warnings.warn(
                f"{type(self).__name__}: skipped {len(self.skipped)} of {len(files)} files under {root} ({detail})",
                stacklevel=3,
            )
        if not self.items:
            raise MagvitError(
                f"{root}: none of the {len(files)} {self.kind} files is usable ({len(self.skipped)} skipped)"
            )

    @abc.abstractmethod
    def _probe(self, path: Path) -> str | None:
        """None if `path` is usable, else a short reason."""

    def label(self, path: Path) -> int | None:
        return self.classes.index(path.relative_to(self.root).parts[0]) if self.classes else None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        # A file that passed the scan but fails now (e.g. damaged mid-stream) is skipped: warn,
        # then deterministically try the next ones rather than crash the epoch.
        for offset in range(len(self.items)):
            path = self.items[(index + offset) % len(self.items)]
            try:
                video = self._load(path, self.generator(index))
            except Exception as e:  # decoders raise many types for broken data
                warnings.warn(f"{type(self).__name__}: skipping {path} ({type(e).__name__}: {e})", stacklevel=2)
                continue
            sample = {"video": video}
            label = self.label(path)
            if label is not None:
                sample["label"] = label
            return sample
        raise MagvitError(f"{self.root}: no file could be read")

    @abc.abstractmethod
    def _load(self, path: Path, gen: torch.Generator) -> torch.Tensor:
        """One sample's clip (3, T, size, size) in [-1, 1]."""


@dataclass(frozen=True)
class VideoFolderConfig:
    name: str = "video_folder"
    root: str = ""
    frames: int = 16
    size: int = 64
    stride: int = 1
    random_clip: bool = True
    random_crop: bool = False
    flip: bool = False
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    seed: int = 0


@DATASETS.register("video_folder", VideoFolderConfig)
class VideoFolder(_FolderDataset):
    """Every video under `root` (read with decord, or PyAV: magvit.media.open_video): a clip of
    `frames` frames `stride` apart."""

    kind = "video"

    def __init__(
        self, root: str, frames: int, size: int, stride: int = 1, random_clip: bool = True,
        random_crop: bool = False, flip: bool = False, extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
        seed: int = 0,
    ):
        if frames < 1 or stride < 1 or size < 1:
            raise MagvitError(f"VideoFolder needs frames, stride and size >= 1, got {frames}, {stride}, {size}")
        self.frames, self.size, self.stride = frames, size, stride
        self.span = (frames - 1) * stride + 1  # frames of the source a clip covers
        self.random_clip, self.random_crop, self.flip = random_clip, random_crop, flip
        self.lengths: dict[Path, int] = {}
        super().__init__(root, tuple(e.lower() for e in extensions), seed)

    def _probe(self, path: Path) -> str | None:
        if path.stat().st_size == 0:
            return "empty"
        try:
            reader = open_video(path)
            length = len(reader)
            if length < self.span:
                return "too short"
            reader.get_batch([0, length - 1])  # a truncated file fails here, not mid-epoch
        except VideoReadError:
            return "unreadable"
        self.lengths[path] = length
        return None

    def _load(self, path: Path, gen: torch.Generator) -> torch.Tensor:
        reader = open_video(path)
        last_start = len(reader) - self.span
        start = int(torch.randint(0, last_start + 1, (), generator=gen)) if self.random_clip else last_start // 2
        frames = reader.get_batch(list(range(start, start + self.span, self.stride)))  # (T, H, W, 3) uint8
        return resize_crop(torch.from_numpy(frames), self.size, gen if self.random_crop else None, self.flip)


@dataclass(frozen=True)
class ImageFolderConfig:
    name: str = "image_folder"
    root: str = ""
    size: int = 64
    random_crop: bool = False
    flip: bool = False
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS
    seed: int = 0


@DATASETS.register("image_folder", ImageFolderConfig)
class ImageFolder(_FolderDataset):
    """Every image under `root` as a one-frame clip (3, 1, size, size)."""

    kind = "image"

    def __init__(
        self, root: str, size: int, random_crop: bool = False, flip: bool = False,
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS, seed: int = 0,
    ):
        self.size, self.random_crop, self.flip = size, random_crop, flip
        super().__init__(root, tuple(e.lower() for e in extensions), seed)

    def _probe(self, path: Path) -> str | None:
        from PIL import Image

        if path.stat().st_size == 0:
            return "empty"
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception:  # PIL raises several types for broken files
            return "unreadable"
        return None

    def _load(self, path: Path, gen: torch.Generator) -> torch.Tensor:
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            pixels = torch.from_numpy(np.asarray(image.convert("RGB")).copy())  # (H, W, 3)
        return resize_crop(pixels[None], self.size, gen if self.random_crop else None, self.flip)
