"""A user's own data: every video (or image) under a folder, labels from sub-folder names.

Files that cannot be used (zero bytes, not a video, truncated, shorter than one clip) are found
when the folder is scanned, skipped with one warning that counts them by reason, and listed in
`dataset.skipped`; a file that still fails to decode later is skipped then, so an epoch never
crashes on bad data. A folder with no usable file raises one clear `MagvitError`. (That handling
is shared with the paper datasets: magvit.data.files.)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from magvit.data.base import DATASETS
from magvit.data.files import Entry, ImageClips, ImageFilesConfig, VideoClips, VideoFilesConfig
from magvit.errors import MagvitError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".gif", ".webp")  # a still WebP: "too short"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _scan(root: str, extensions: tuple[str, ...], kind: str) -> tuple[Path, list[Entry], list[str]]:
    """The files under `root` with one of `extensions`, sorted, each with the index of its class folder;
    the class names are the sub-folders when every file sits in one (else the files have no label)."""
    base = Path(root).expanduser()
    if not base.is_dir():
        raise MagvitError(f"{root}: {kind} folder not found")
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
    if not files:
        raise MagvitError(f"{root}: no {kind} files ({', '.join(extensions)}) under this folder")
    in_subfolders = all(len(p.relative_to(base).parts) > 1 for p in files)
    classes = sorted({p.relative_to(base).parts[0] for p in files}) if in_subfolders else []
    return base, [(p, classes.index(p.relative_to(base).parts[0]) if classes else None) for p in files], classes


@dataclass(frozen=True)
class VideoFolderConfig(VideoFilesConfig):
    name: str = "video_folder"
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS


@DATASETS.register("video_folder", VideoFolderConfig)
class VideoFolder(VideoClips):
    """Every video under `root` (read with decord, or PyAV: magvit.media.open_video): a clip of
    `frames` frames `stride` apart."""

    check_ends = True  # a user's folder is small enough to decode each file's last frame once

    def __init__(
        self, root: str, frames: int, size: int, stride: int = 1, random_clip: bool = True,
        random_crop: bool = False, flip: bool = False, extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
        seed: int = 0,
    ):
        base, entries, self.classes = _scan(root, tuple(e.lower() for e in extensions), self.kind)
        super().__init__(base, entries, frames, size, stride, random_clip, random_crop, flip, seed)


@dataclass(frozen=True)
class ImageFolderConfig(ImageFilesConfig):
    name: str = "image_folder"
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS


@DATASETS.register("image_folder", ImageFolderConfig)
class ImageFolder(ImageClips):
    """Every image under `root` as a one-frame clip (3, 1, size, size)."""

    def __init__(
        self, root: str, size: int, random_crop: bool = False, flip: bool = False,
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS, seed: int = 0,
    ):
        base, entries, self.classes = _scan(root, tuple(e.lower() for e in extensions), self.kind)
        super().__init__(base, entries, size, random_crop, flip, seed)
