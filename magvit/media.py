"""Reading and writing results: video clips (MP4, GIF, AVI, WebM, MKV) and image grids (PNG, JPEG).

One writer for the video formats: imageio. It writes GIF through Pillow and the others through
imageio-ffmpeg, whose wheel ships its own ffmpeg binary (libx264, libvpx, mpeg4), so no system ffmpeg
is needed and the same call works on a laptop, a cluster node and CI. Images go through Pillow.
Every write is atomic (magvit.fileio.atomic_path): a killed run leaves no half-written file under
the final name. Reading goes through `open_video`, the reader training data uses too, so what a test
reads back is what training would see: decord where it is installed (its wheels cover x86-64 Linux,
Windows and Intel macOS), else PyAV (aarch64 Linux such as GH200 nodes, Apple silicon); GIF and
animated WebP go through Pillow whatever the reader (decord cannot count a GIF's frames, FFmpeg
decodes no animated WebP). All give the same clip semantics: `len(reader)` frames,
`get_batch(indices)` -> (N, H, W, 3) uint8 by frame index in presentation order, `fps`. The
environment variable MAGVIT_VIDEO_READER=decord|pyav picks the reader of the other formats.

Tensors in this module are float videos (3, T, H, W) or batches (N, 3, T, H, W) in [-1, 1].
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from magvit.errors import MagvitError, first_line
from magvit.fileio import atomic_path

# suffix -> (ffmpeg codec, its quality options): H.264 at `crf` in MP4 and MKV, VP9 at constant
# quality `crf` in WebM, MPEG-4 part 2 in AVI (what players expect in that container)
FFMPEG_FORMATS = {
    ".mp4": ("libx264", ["-crf", "{crf}"]),
    ".mkv": ("libx264", ["-crf", "{crf}"]),
    ".webm": ("libvpx-vp9", ["-crf", "{crf}", "-b:v", "0"]),
    ".avi": ("mpeg4", ["-q:v", "2"]),
}
VIDEO_SUFFIXES = (".mp4", ".gif", *[s for s in FFMPEG_FORMATS if s != ".mp4"])  # what write_video writes
IMAGE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}  # what write_image_grid writes
OUTPUT_SUFFIXES = (*VIDEO_SUFFIXES, *IMAGE_SUFFIXES)  # write_grid: clips, or first frames as an image
PILLOW_VIDEO_SUFFIXES = (".gif", ".webp")  # read through Pillow whatever the reader (PillowReader)
SEQUENCE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")  # the frames of a folder read as a video
IMAGE_SEQUENCE_FPS = 8.0  # the frame rate given to a folder of frames (ImageSequenceReader)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(3, T, H, W) float in [-1, 1] -> (T, H, W, 3) uint8."""
    video = ((video.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return rearrange(video, "c t h w -> t h w c").numpy()


def from_uint8(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, H, W) float in [-1, 1]."""
    frames = torch.as_tensor(frames)
    return rearrange(frames.float() / 127.5 - 1.0, "t h w c -> c t h w")


def make_grid(videos: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: float = -1.0) -> torch.Tensor:
    """(N, 3, T, H, W) -> one clip (3, T, H', W') with the N clips tiled `nrow` per row."""
    n, c, t, h, w = videos.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = videos.new_full((c, t, rows * (h + padding) + padding, nrow * (w + padding) + padding), pad_value)
    for i in range(n):
        y, x = divmod(i, nrow)
        top, left = padding + y * (h + padding), padding + x * (w + padding)
        grid[:, :, top : top + h, left : left + w] = videos[i]
    return grid


def write_video(path: str | Path, video: torch.Tensor, fps: float = 8.0, crf: int = 17) -> Path:
    """Write a clip (3, T, H, W) in [-1, 1] as the format `path`'s suffix names (VIDEO_SUFFIXES),
    atomically: .gif through Pillow, .mp4 / .mkv (H.264, yuv420p), .webm (VP9) or .avi (MPEG-4)."""
    path = Path(path)
    frames = to_uint8(video)  # (T, H, W, 3)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise MagvitError(f"{path}: unsupported video format {suffix!r}; use one of {', '.join(VIDEO_SUFFIXES)}")
    import imageio.v3 as iio

    with atomic_path(path) as tmp:
        if suffix == ".gif":
            # Pillow: loop forever; one duration per frame in ms, a whole number of the GIF's 10 ms units,
            # so that the frames Pillow merges (identical consecutive ones) last exact multiples of it
            duration = max(1, round(100.0 / fps)) * 10
            iio.imwrite(tmp, frames, extension=".gif", duration=duration, loop=0)
        else:
            # yuv420p needs even sides: pad by repeating the last row / column
            t, h, w, _ = frames.shape
            frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            codec, quality = FFMPEG_FORMATS[suffix]
            iio.imwrite(
                tmp, frames, extension=suffix, plugin="FFMPEG", fps=fps, codec=codec, macro_block_size=1,
                pixelformat="yuv420p", output_params=[option.format(crf=crf) for option in quality],
            )
    return path


def write_image_grid(path: str | Path, images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> Path:
    """Write images (N, 3, H, W) or frames (N, 3, 1, H, W) in [-1, 1] as one PNG or JPEG grid (by
    `path`'s suffix), atomically."""
    from PIL import Image

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise MagvitError(f"{path}: unsupported image format {suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    if images.ndim == 4:
        images = images.unsqueeze(2)
    if images.shape[2] != 1:
        raise ValueError(f"write_image_grid takes single frames, got clips of {images.shape[2]} frames")
    grid = to_uint8(make_grid(images, nrow=nrow, padding=padding))[0]  # (H', W', 3)
    options = {"quality": 95} if IMAGE_SUFFIXES[suffix] == "JPEG" else {}
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format=IMAGE_SUFFIXES[suffix], **options)
    return path


def check_grid_suffix(path: str | Path) -> Path:
    """`path` if `write_grid` writes its suffix (OUTPUT_SUFFIXES), else one line listing the formats;
    commands call it before their work."""
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise MagvitError(f"{path}: cannot write {path.suffix or 'a file without a suffix'!r}; "
                          f"use one of {', '.join(OUTPUT_SUFFIXES)}")
    return path


def write_grid(path: str | Path, videos: torch.Tensor, fps: float = 8.0, nrow: int | None = None) -> Path:
    """Videos (N, 3, T, H, W) in [-1, 1] as one grid file: a clip (VIDEO_SUFFIXES) or an image of the
    first frames (IMAGE_SUFFIXES); any other suffix is one line listing the formats."""
    path = check_grid_suffix(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return write_image_grid(path, videos[:, :, :1], nrow=nrow)
    return write_video(path, make_grid(videos, nrow=nrow), fps=fps)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block: decord's C++ side prints "ERROR opening ..."
    for a broken file whatever its log level, and we report bad files ourselves, in one line."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


VIDEO_READERS = ("decord", "pyav")


class VideoReadError(RuntimeError):
    """A file that the reader cannot decode (not a video, truncated, no video stream)."""


def video_reader_name() -> str:
    """MAGVIT_VIDEO_READER if set, else decord when it imports, else pyav."""
    chosen = os.environ.get("MAGVIT_VIDEO_READER", "").strip().lower()
    if chosen:
        if chosen not in VIDEO_READERS:
            raise MagvitError(f"MAGVIT_VIDEO_READER must be one of {', '.join(VIDEO_READERS)}, got {chosen!r}")
        return chosen
    try:
        import decord  # noqa: F401
    except ImportError:
        return "pyav"
    return "decord"


class DecordReader:
    """decord's VideoReader, opened and read without decord's own C++ error output."""

    def __init__(self, path: str | Path):
        import decord

        decord.logging.set_level(decord.logging.QUIET)
        try:
            with native_stderr_silenced():
                self._reader = decord.VideoReader(str(path), num_threads=1)
        except (decord.DECORDError, RuntimeError) as e:  # decord raises either for a corrupt file
            raise VideoReadError(first_line(e)) from None

    def __len__(self) -> int:
        return len(self._reader)

    @property
    def fps(self) -> float:
        return float(self._reader.get_avg_fps())

    def get_batch(self, indices: list[int]) -> np.ndarray:
        import decord

        try:
            with native_stderr_silenced():
                return self._reader.get_batch(list(indices)).asnumpy()
        except (decord.DECORDError, RuntimeError) as e:
            raise VideoReadError(first_line(e)) from None


class PyAVReader:
    """The same interface over PyAV (FFmpeg's libraries). Frames are decoded in order, so any index
    gives the frame decord gives; reading on from the last batch continues the decoder, an earlier
    index reopens the file."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self._container, self._frames, self._next = None, None, 0
        self._open()
        stream = self._container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        self._fps = float(rate) if rate else 0.0
        count = stream.frames  # from the container's index; 0 when it does not say
        self._length = count if count > 0 else sum(1 for packet in self._container.demux(stream) if packet.size)
        self._open()  # counting packets consumed the demuxer

    def _open(self) -> None:
        import av

        self.close()
        try:
            self._container = av.open(self.path)
        except (av.FFmpegError, OSError, ValueError) as e:
            raise VideoReadError(first_line(e)) from None
        if not self._container.streams.video:
            self.close()
            raise VideoReadError("no video stream")
        self._frames, self._next = self._container.decode(self._container.streams.video[0]), 0

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
        self._container, self._frames = None, None

    def __del__(self) -> None:
        self.close()

    def __len__(self) -> int:
        return self._length

    @property
    def fps(self) -> float:
        return self._fps

    def get_batch(self, indices: list[int]) -> np.ndarray:
        import av

        wanted = set(indices)
        if not wanted:
            raise VideoReadError("no frame index given")
        first, last = min(wanted), max(wanted)
        if first < 0 or last >= self._length:
            raise VideoReadError(f"frame index out of range [0, {self._length})")
        if self._frames is None or first < self._next:
            self._open()
        frames: dict[int, np.ndarray] = {}
        try:
            while self._next <= last:
                frame = next(self._frames)
                if self._next in wanted:
                    frames[self._next] = frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8
                self._next += 1
        except StopIteration:
            raise VideoReadError(f"the stream ends before frame {self._next} (truncated?)") from None
        except (av.FFmpegError, ValueError) as e:
            raise VideoReadError(first_line(e)) from None
        return np.stack([frames[i] for i in indices])


class PillowReader:
    """The same interface over Pillow, for GIF and animated WebP. A frame shown k times as long as the
    shortest one counts k times (Pillow's GIF writer merges identical consecutive frames into one
    longer frame), so the clip keeps its timing at fps = 1000 / the shortest duration in ms."""

    def __init__(self, path: str | Path):
        from PIL import Image, UnidentifiedImageError

        try:
            self._image = Image.open(path)
            durations = []
            for i in range(getattr(self._image, "n_frames", 1)):
                self._image.seek(i)
                self._image.load()  # WebP sets the frame's duration on load
                durations.append(self._image.info.get("duration") or 100)  # none / 0 ms: shown as 100 ms
        except (UnidentifiedImageError, OSError, EOFError, ValueError) as e:
            raise VideoReadError(first_line(e)) from None
        base = min(durations)
        self._fps = 1000.0 / base
        # frame index -> the stored frame shown then
        self._stored = [i for i, duration in enumerate(durations) for _ in range(max(1, round(duration / base)))]

    def close(self) -> None:
        if getattr(self, "_image", None) is not None:
            self._image.close()
            self._image = None

    def __del__(self) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._stored)

    @property
    def fps(self) -> float:
        return self._fps

    def get_batch(self, indices: list[int]) -> np.ndarray:
        if not len(indices):
            raise VideoReadError("no frame index given")
        if min(indices) < 0 or max(indices) >= len(self):
            raise VideoReadError(f"frame index out of range [0, {len(self)})")
        decoded: dict[int, np.ndarray] = {}
        try:
            for stored in sorted({self._stored[i] for i in indices}):  # in order: Pillow seeks GIFs forwards
                self._image.seek(stored)
                decoded[stored] = np.asarray(self._image.convert("RGB"))  # (H, W, 3) uint8
        except (OSError, EOFError, ValueError) as e:
            raise VideoReadError(first_line(e)) from None
        return np.stack([decoded[self._stored[i]] for i in indices])


class ImageSequenceReader:
    """The same interface over a folder of still images (PNG, JPEG, BMP, WebP), one frame each, in
    natural order of their names (frame2.png before frame10.png). A folder carries no frame rate:
    IMAGE_SEQUENCE_FPS."""

    def __init__(self, path: str | Path):
        import re

        def natural(p: Path) -> list:
            return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", p.name)]

        self._files = sorted((p for p in Path(path).iterdir() if p.is_file() and p.suffix.lower() in SEQUENCE_SUFFIXES),
                             key=natural)
        if not self._files:
            raise VideoReadError(f"no image files ({', '.join(SEQUENCE_SUFFIXES)}) in the folder")
        self._size: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self._files)

    @property
    def fps(self) -> float:
        return IMAGE_SEQUENCE_FPS

    def get_batch(self, indices: list[int]) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        if not len(indices) or min(indices) < 0 or max(indices) >= len(self):
            raise VideoReadError(f"frame indices must lie in [0, {len(self)})")
        frames = []
        for i in indices:
            try:
                with Image.open(self._files[i]) as image:
                    frame = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
            except (UnidentifiedImageError, OSError) as e:
                raise VideoReadError(f"{self._files[i].name}: {first_line(e)}") from None
            if self._size is None:
                self._size = frame.shape[:2]
            if frame.shape[:2] != self._size:
                raise VideoReadError(f"{self._files[i].name} is {frame.shape[1]}x{frame.shape[0]}, the first frame "
                                     f"{self._size[1]}x{self._size[0]}: the frames of a sequence share one size")
            frames.append(frame)
        return np.stack(frames)


VideoReader = DecordReader | PyAVReader | PillowReader | ImageSequenceReader  # len(), fps, get_batch(indices)


def open_video(path: str | Path, reader: str | None = None) -> VideoReader:
    """A reader for `path`: a folder of images (ImageSequenceReader), Pillow for GIF and WebP, else
    `video_reader_name()` unless `reader` names one; VideoReadError if the file cannot be decoded."""
    if Path(path).is_dir():
        return ImageSequenceReader(path)
    if Path(path).suffix.lower() in PILLOW_VIDEO_SUFFIXES:
        return PillowReader(path)
    name = reader or video_reader_name()
    if name == "decord":
        return DecordReader(path)
    try:
        import av  # noqa: F401
    except ImportError:
        raise MagvitError("reading videos needs decord or PyAV: pip install av") from None
    return PyAVReader(path)


def read_video(path: str | Path, max_frames: int | None = None, start: int = 0, stride: int = 1,
               name: str | None = None) -> tuple[torch.Tensor, float, list[int]]:
    """Read a video (a file or a folder of frames) -> ((3, T, H, W) float in [-1, 1], fps, the frame
    indices read): frames start, start + stride, ... to the end, at most `max_frames` of them. One
    clear error if unreadable or if `start` lies past the end, naming the video `name` (default: its path)."""
    path = Path(path)
    name = name or str(path)
    if not path.exists():
        raise MagvitError(f"{name}: video file not found")
    if start < 0 or stride < 1:
        raise MagvitError(f"{name}: the start frame must be >= 0 and the stride >= 1, got {start} and {stride}")
    try:
        reader = open_video(path)
        if len(reader) == 0:
            raise MagvitError(f"{name}: the video has no frames")
        if start >= len(reader):
            raise MagvitError(f"{name}: start frame {start} is past the end (the video has {len(reader)} frames)")
        indices = list(range(start, len(reader), stride))[:max_frames]
        frames = reader.get_batch(indices)
        fps = reader.fps
    except VideoReadError as e:
        raise MagvitError(f"{name}: cannot decode video ({e})") from None
    return from_uint8(frames), fps, indices
