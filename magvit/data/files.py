"""What every file-backed dataset shares: a list of files (or folders of frames) with their labels,
skip accounting for bad ones, and the video / image readers.

A subclass only says which files a split holds and their labels (a folder scan, an official split
file or annotation CSV) and passes them as `entries`. Then, once, when the dataset is built:
- a file that is missing (listed by an annotation file but not on disk) or empty is skipped;
- with `probe`, every file is also opened (a video: its frame count, "too short" below one clip;
  an image: Pillow's verify) and an unreadable one skipped. The paper datasets hold 13k to 1.3M
  files, so the large ones default to `probe: false`: opening each would take hours there.
All skipped files are counted by reason in ONE warning and listed in `dataset.skipped`. A file
that still fails when read (truncated mid-stream, or never probed) is skipped then, with a warning,
by deterministically reading the next one, so an epoch never crashes on bad data. No usable file
at all is one `MagvitError`.
"""

from __future__ import annotations

import abc
import stat
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from magvit.data.base import ClipDataset, resize_crop
from magvit.errors import MagvitError
from magvit.media import VideoReader, VideoReadError, open_video

Entry = tuple[Path, int | None]  # a file (or folder of frames) and its label (None: unlabelled)


@dataclass(frozen=True)
class ImageFilesConfig:
    """The keys of every dataset of image files (`ImageClips`): which one and where its files are, then how
    a sample is cut from a file. A dataset's config gives `name` and `root` their defaults, changes the
    defaults it needs and adds its own keys after these."""

    name: str
    root: str = ""
    size: int = 64  # side of the square frames
    random_crop: bool = False  # the largest square at a random offset, else the centred one
    flip: bool = False  # a random horizontal flip
    seed: int = 0
    variants: int | None = None  # the random draws repeat every `variants` epochs (magvit.data.base)


@dataclass(frozen=True)
class VideoFilesConfig(ImageFilesConfig):
    """The keys of every dataset of video files (`VideoClips`): those of image files, then which frames
    make a clip."""

    frames: int = 16
    stride: int = 1  # source frames from one clip frame to the next
    random_clip: bool = True  # a random start, else the middle clip


def dataset_folder(root: str | Path, what: str, split: str, splits: Sequence[str]) -> Path:
    """`root` (`~` expanded) of the dataset `what`, once `split` is one of its `splits` and `root` is a
    folder; else one MagvitError line."""
    if split not in splits:
        raise MagvitError(f"{what} splits are {', '.join(splits[:-1])} and {splits[-1]}, got {split!r}")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise MagvitError(f"{root}: {what} folder not found")
    return base


def official_file(path: Path, what: str) -> Path:
    """`path` if it is a file, else one MagvitError line naming it: `what` says which file it is."""
    if not path.is_file():
        raise MagvitError(f"{path}: {what} not found")
    return path


def usual_dir(root: Path, given: str, usual: Sequence[str]) -> Path:
    """`given` (relative to `root`, or absolute) if set; else the first of the `usual` folder names
    the official archives unpack to that exists under `root`; else `root` itself."""
    if given:
        return root / Path(given).expanduser()
    return next((root / name for name in usual if (root / name).is_dir()), root)


def _missing_or_empty(path: Path) -> str | None:
    try:
        info = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except OSError:  # no permission, a broken mount
        return "unreadable"
    return "empty" if stat.S_ISREG(info.st_mode) and info.st_size == 0 else None


class FileDataset(ClipDataset, abc.ABC):
    """One sample per entry (file, label); see the module docstring for how bad files are handled."""

    kind = "file"  # in messages: "none of the 3 video files is usable"

    def __init__(self, root: str | Path, entries: Sequence[Entry], seed: int = 0, probe: bool = True):
        super().__init__(seed)
        self.root = Path(root).expanduser()
        self.items: list[Path] = []
        self.labels: list[int | None] = []
        self.skipped: list[tuple[Path, str]] = []
        for path, label in entries:
            reason = self._rejected(path, label) or _missing_or_empty(path) or (self._probe(path) if probe else None)
            if reason is None:
                self.items.append(path)
                self.labels.append(label)
            else:
                self.skipped.append((path, reason))
        if self.skipped:
            reasons = Counter(reason for _, reason in self.skipped)
            detail = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
            warnings.warn(
                f"{type(self).__name__}: skipped {len(self.skipped)} of {len(entries)} files under {root} ({detail})",
                stacklevel=3,
            )
        if not self.items:
            raise MagvitError(
                f"{root}: none of the {len(entries)} {self.kind} files is usable ({len(self.skipped)} skipped)"
            )

    def _rejected(self, path: Path, label: int | None) -> str | None:
        """A short reason when the entry itself is unusable, before its file is opened (a subclass's rule,
        e.g. an image its label file does not list); None by default."""
        return None

    @abc.abstractmethod
    def _probe(self, path: Path) -> str | None:
        """None if `path` is usable, else a short reason ("unreadable", "too short")."""

    @abc.abstractmethod
    def _load(self, path: Path, gen: torch.Generator) -> torch.Tensor:
        """One sample's clip (3, T, size, size) in [-1, 1]."""

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        # A file that passed the checks but fails now is skipped: warn, then deterministically try
        # the next ones (with this index's generator), so the sample is the same in every worker.
        for offset in range(len(self.items)):
            i = (index + offset) % len(self.items)
            try:
                video = self._load(self.items[i], self.generator(index))
            except Exception as e:  # decoders raise many types for broken data
                warnings.warn(f"{type(self).__name__}: skipping {self.items[i]} ({type(e).__name__}: {e})",
                              stacklevel=2)
                continue
            sample = {"video": video}
            if self.labels[i] is not None:
                sample["label"] = self.labels[i]
            return sample
        raise MagvitError(f"{self.root}: no file could be read")


class VideoClips(FileDataset):
    """Video files (or folders of frames, see magvit.media.open_video): a clip of `frames` frames
    `stride` apart, at a random start (`random_clip`) or the middle one; the largest square, centred
    or at a random offset (`random_crop`), resized to `size`; a random horizontal flip (`flip`)."""

    kind = "video"
    check_ends = False  # probe: also decode the first and last frame (finds truncated files, but
    #                     PyAV decodes the whole clip to reach the last frame: only for small sets)

    def __init__(
        self, root: str | Path, entries: Sequence[Entry], frames: int, size: int, stride: int = 1,
        random_clip: bool = True, random_crop: bool = False, flip: bool = False, seed: int = 0, probe: bool = True,
    ):
        if frames < 1 or stride < 1 or size < 1:
            raise MagvitError(
                f"{type(self).__name__} needs frames, stride and size >= 1, got {frames}, {stride}, {size}"
            )
        self.frames, self.size, self.stride = frames, size, stride
        self.span = (frames - 1) * stride + 1  # frames of the source a clip covers
        self.random_clip, self.random_crop, self.flip = random_clip, random_crop, flip
        self.lengths: dict[Path, int] = {}  # frame counts of probed files
        super().__init__(root, entries, seed, probe)

    def _open(self, path: Path) -> VideoReader:
        return open_video(path)

    def _probe(self, path: Path) -> str | None:
        try:
            reader = self._open(path)
            length = len(reader)
            if length < self.span:
                return "too short"
            if self.check_ends:
                reader.get_batch([0, length - 1])
        except VideoReadError:
            return "unreadable"
        self.lengths[path] = length
        return None

    def _load(self, path: Path, gen: torch.Generator) -> torch.Tensor:
        reader = self._open(path)
        last_start = len(reader) - self.span
        if last_start < 0:
            raise VideoReadError(f"{len(reader)} frames, fewer than the {self.span} one clip spans")
        start = int(torch.randint(0, last_start + 1, (), generator=gen)) if self.random_clip else last_start // 2
        frames = reader.get_batch(list(range(start, start + self.span, self.stride)))  # (T, H, W, 3) uint8
        return resize_crop(torch.from_numpy(frames), self.size, gen if self.random_crop else None, self.flip)


class ImageClips(FileDataset):
    """Image files as one-frame clips (3, 1, size, size): the largest square, centred or at a random
    offset (`random_crop`), resized to `size`; a random horizontal flip (`flip`)."""

    kind = "image"

    def __init__(
        self, root: str | Path, entries: Sequence[Entry], size: int, random_crop: bool = False, flip: bool = False,
        seed: int = 0, probe: bool = True,
    ):
        if size < 1:
            raise MagvitError(f"{type(self).__name__} needs size >= 1, got {size}")
        self.size, self.random_crop, self.flip = size, random_crop, flip
        super().__init__(root, entries, seed, probe)

    def _probe(self, path: Path) -> str | None:
        from PIL import Image

        try:
            with Image.open(path) as image:
                image.verify()
        except Exception:  # PIL raises several types for broken files
            return "unreadable"
        return None

    def _load(self, path: Path, gen: torch.Generator) -> torch.Tensor:
        from PIL import Image

        with Image.open(path) as image:
            pixels = torch.from_numpy(np.asarray(image.convert("RGB")).copy())  # (H, W, 3) uint8
        return resize_crop(pixels[None], self.size, gen if self.random_crop else None, self.flip)
