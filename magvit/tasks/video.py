"""MAGVIT's video tasks (MAGVIT section 4 and its task table), plus CG and UNCOND.

Every region is a `given` pixel mask; the latent condition mask follows from the condition rule of
`magvit.tasks.base` (MAGVIT's `any` by default). Boxes and strips are laid out in whole tokens (a
0.5H x 0.5W central box is the central h/2 x w/2 tokens, scaled by the downsampling), so on every
token grid both rules give exactly the table's latent mask; in time the rule matters: for a
16x64x64 clip through vq3d (4x16x16 tokens) or a 17x64x64 clip through causal3d (5x16x16), rule any:

| task | condition positions (every latent frame unless said) | padding |
|---|---|---|
| cg, uncond | none | - |
| fp, cfp | the latent frames the first `cond_frames` frames fall in (default 1: latent frame 0) | replicate |
| fi | latent frames 0 and t - 1 (pixel frames 0 and T - 1 given) | interpolate |
| opc | central h/2 x w/2 tokens | replicate |
| opv / oph | central w/2 columns / h/2 rows | replicate |
| opd | columns [o_i, o_i + w/2) in latent frame i, o_i = round(i (w - w/2) / (t - 1)) | zeros |
| ipc | all but the central h/2 x w/2 tokens | zeros |
| ipd | all but rows of the central h/2, columns [o_i, o_i + w/2) in latent frame i | zeros |

Frame prediction follows MAGVIT's protocols: BAIR gives 1 frame (`cond_frames: 1`, the default:
latent frame 0), Kinetics-600 gives 5 (`cond_frames: 5`: vq3d latent frames 0-1). Any count from 1
to T - 1 is accepted while a latent frame is left to predict.

The moving strip and box of opd / ipd move once per latent frame (every pixel frame of latent
frame i uses o_i), so that their latent masks are exactly the strip / box.
"""

from __future__ import annotations

import torch
from torch import Tensor

from magvit.errors import MagvitError
from magvit.tasks.base import NO_OPTIONS, Layout, Task, TaskOptions, register


def _none(layout: Layout, options: TaskOptions) -> Tensor:
    return torch.zeros(1, layout.frames, layout.height, layout.width, dtype=torch.bool)


def _central(n: int) -> tuple[int, int]:
    """[start, end) of the central half of n tokens (at least one token)."""
    size = max(1, n // 2)
    start = (n - size) // 2
    return start, start + size


def _paint(layout: Layout, boxes: list[tuple[int, int, int, int]]) -> Tensor:
    """Token boxes (row0, row1, col0, col1), one per latent frame -> pixels (1, T, H, W) bool."""
    given = _none(layout, NO_OPTIONS)
    for (start, end), (r0, r1, c0, c1) in zip(layout.time_blocks, boxes):
        given[:, start:end, r0 * layout.fh : r1 * layout.fh, c0 * layout.fw : c1 * layout.fw] = True
    return given


def _offsets(layout: Layout, size: int) -> list[int]:
    """Left edge (tokens) of a `size`-wide strip moving left to right over the latent frames."""
    travel = layout.w - size
    return [round(i * travel / (layout.t - 1)) if layout.t > 1 else 0 for i in range(layout.t)]


def first_frames(layout: Layout, options: TaskOptions) -> Tensor:
    """The first `cond_frames` frames, 1 <= cond_frames < T (default 1: BAIR's protocol; under the
    strict condition rule the frames of latent frame 0, see `Task.masks`)."""
    k = 1 if options.cond_frames is None else options.cond_frames
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < layout.frames:
        raise MagvitError(f"cond_frames must be a whole number of frames from 1 to {layout.frames - 1} for a "
                          f"{layout.frames}-frame clip, got {k!r}")
    given = _none(layout, NO_OPTIONS)
    given[:, :k] = True
    return given


def end_frames(layout: Layout, options: TaskOptions) -> Tensor:
    """The first and the last frame (MAGVIT's frame interpolation)."""
    given = _none(layout, NO_OPTIONS)
    given[:, [0, layout.frames - 1]] = True
    return given


def central_box(layout: Layout, options: TaskOptions) -> Tensor:
    return _paint(layout, [(*_central(layout.h), *_central(layout.w))] * layout.t)


def vertical_strip(layout: Layout, options: TaskOptions) -> Tensor:
    return _paint(layout, [(0, layout.h, *_central(layout.w))] * layout.t)


def horizontal_strip(layout: Layout, options: TaskOptions) -> Tensor:
    return _paint(layout, [(*_central(layout.h), 0, layout.w)] * layout.t)


def moving_strip(layout: Layout, options: TaskOptions) -> Tensor:
    size = max(1, layout.w // 2)
    return _paint(layout, [(0, layout.h, o, o + size) for o in _offsets(layout, size)])


def all_but_central_box(layout: Layout, options: TaskOptions) -> Tensor:
    return ~central_box(layout, options)


def all_but_moving_box(layout: Layout, options: TaskOptions) -> Tensor:
    size = max(1, layout.w // 2)
    return ~_paint(layout, [(*_central(layout.h), o, o + size) for o in _offsets(layout, size)])


register(Task("cg", "class-conditional generation: the class token only", _none, "zeros", use_class=True))
register(Task("uncond", "unconditional generation", _none, "zeros", use_class=False))
register(Task("fp", "frame prediction from the first cond_frames frames", first_frames, "replicate",
              use_class=False, options=("cond_frames",), min_latent_frames=2))
register(Task("fi", "frame interpolation between the first and the last frames", end_frames, "interpolate",
              use_class=False, min_latent_frames=2))
register(Task("opc", "central outpainting: a central 0.5H x 0.5W box is given", central_box, "replicate",
              use_class=False))
register(Task("opv", "vertical outpainting: a central half-width strip is given", vertical_strip, "replicate",
              use_class=False))
register(Task("oph", "horizontal outpainting: a central half-height strip is given", horizontal_strip,
              "replicate", use_class=False))
register(Task("opd", "dynamic outpainting: a half-width strip moving left to right is given", moving_strip,
              "zeros", use_class=False))
register(Task("ipc", "central inpainting: all but a central 0.5H x 0.5W box is given", all_but_central_box,
              "zeros", use_class=False))
register(Task("ipd", "dynamic inpainting: all but a half-size box moving left to right is given",
              all_but_moving_box, "zeros", use_class=False))
register(Task("cfp", "class-conditional frame prediction from the first cond_frames frames", first_frames,
              "replicate", use_class=True, options=("cond_frames",), min_latent_frames=2))
