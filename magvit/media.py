"""Reading and writing results: MP4 and GIF clips, PNG grids.

One writer for both video formats: imageio. It writes GIF through Pillow and MP4 through
imageio-ffmpeg, whose wheel ships its own ffmpeg binary (libx264), so no system ffmpeg is needed
and the same call works on a laptop, a cluster node and CI. Reading goes through decord, the
loader used for training data, so what a test reads back is what training would see.

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

from magvit.errors import MagvitError
from magvit.fileio import atomic_path

VIDEO_SUFFIXES = (".mp4", ".gif")


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
    """Write a clip (3, T, H, W) in [-1, 1] as .mp4 (H.264, yuv420p) or .gif, atomically."""
    path = Path(path)
    frames = to_uint8(video)  # (T, H, W, 3)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise MagvitError(f"{path}: unsupported video format {suffix!r}; use one of {', '.join(VIDEO_SUFFIXES)}")
    import imageio.v3 as iio

    with atomic_path(path) as tmp:
        if suffix == ".gif":
            # Pillow: loop forever; one duration per frame in ms
            iio.imwrite(tmp, frames, extension=".gif", duration=1000.0 / fps, loop=0)
        else:
            # yuv420p needs even sides: pad by repeating the last row / column
            t, h, w, _ = frames.shape
            frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            iio.imwrite(
                tmp, frames, extension=".mp4", plugin="FFMPEG", fps=fps, codec="libx264",
                macro_block_size=1, pixelformat="yuv420p", output_params=["-crf", str(crf)],
            )
    return path


def write_image_grid(path: str | Path, images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> Path:
    """Write images (N, 3, H, W) or frames (N, 3, 1, H, W) in [-1, 1] as one PNG grid, atomically."""
    from PIL import Image

    if images.ndim == 4:
        images = images.unsqueeze(2)
    if images.shape[2] != 1:
        raise ValueError(f"write_image_grid takes single frames, got clips of {images.shape[2]} frames")
    grid = to_uint8(make_grid(images, nrow=nrow, padding=padding))[0]  # (H', W', 3)
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return path


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


def open_video(path: str | Path):
    """A decord VideoReader for `path`, opened without decord's own error output (it raises instead)."""
    import decord

    decord.logging.set_level(decord.logging.QUIET)
    with native_stderr_silenced():
        return decord.VideoReader(str(path), num_threads=1)


def read_video(path: str | Path, max_frames: int | None = None) -> tuple[torch.Tensor, float]:
    """Read a video with decord -> ((3, T, H, W) float in [-1, 1], fps). One clear error if unreadable."""
    import decord

    path = Path(path)
    if not path.is_file():
        raise MagvitError(f"{path}: video file not found")
    try:
        reader = open_video(path)
        count = len(reader) if max_frames is None else min(len(reader), max_frames)
        if count == 0:
            raise MagvitError(f"{path}: the video has no frames")
        frames = reader.get_batch(list(range(count))).asnumpy()
        fps = float(reader.get_avg_fps())
    except (decord.DECORDError, RuntimeError) as e:  # decord raises either for a corrupt file
        raise MagvitError(f"{path}: cannot decode video ({str(e).splitlines()[0][:120]})") from None
    return from_uint8(frames), fps
