"""Image tasks with a user region (MaskGIT section 4.3): class-conditional editing of a box,
inpainting and outpainting. They work on clips too (the region applies to every frame).

Options, in pixels: `box=(top, left, height, width)`, or `mask` (B, H, W) or (H, W) bool, True on
the region to generate. For edit and inpaint the box is the region to generate; for outpaint it is
the region that is kept (everything around it is generated). Whatever the video tasks' condition
rule, MaskGIT's editing semantics hold: every token that touches the region to generate is
generated (rule `all`), the generated region grows by one token (the encoder's receptive field
reaches past a token's block), and the condition tokens are fixed from the first decoding step
(`refine=False`): only the region is decoded.
"""

from __future__ import annotations

import torch
from torch import Tensor

from magvit.errors import MagvitError
from magvit.tasks.base import Layout, Task, TaskOptions, register


def _box(layout: Layout, box: object) -> Tensor:
    """(top, left, height, width) pixels -> (1, T, H, W) bool, True inside the box."""
    if not isinstance(box, (tuple, list)) or len(box) != 4 or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in box
    ):
        raise MagvitError(f"box must be 4 integers (top, left, height, width) in pixels, got {box!r}")
    top, left, height, width = box
    if height < 1 or width < 1 or top < 0 or left < 0 or top + height > layout.height or left + width > layout.width:
        raise MagvitError(f"box (top {top}, left {left}, height {height}, width {width}) must lie inside the "
                          f"{layout.height}x{layout.width} image and not be empty")
    region = torch.zeros(1, layout.frames, layout.height, layout.width, dtype=torch.bool)
    region[..., top : top + height, left : left + width] = True
    return region


def _mask(layout: Layout, mask: object) -> Tensor:
    """(B, H, W) or (H, W) bool, True = generate -> (B, T, H, W) bool."""
    if not isinstance(mask, Tensor) or mask.ndim not in (2, 3) or tuple(mask.shape[-2:]) != (
        layout.height, layout.width
    ):
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise MagvitError(f"mask must be a bool tensor (B, {layout.height}, {layout.width}) or "
                          f"({layout.height}, {layout.width}), True on the region to generate; got {shape}")
    mask = mask.bool().cpu()
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if not mask.flatten(1).any(1).all():
        raise MagvitError("mask marks nothing to generate (it must be True on the region to generate)")
    return mask.unsqueeze(1).expand(-1, layout.frames, -1, -1)


def _region(layout: Layout, options: TaskOptions) -> Tensor:
    """The user region as given: box or mask, exactly one."""
    if (options.box is None) == (options.mask is None):
        raise MagvitError("give exactly one of box=(top, left, height, width) or a mask")
    return _box(layout, options.box) if options.box is not None else _mask(layout, options.mask)


def outside_box(layout: Layout, options: TaskOptions) -> Tensor:
    """Edit: everything but the box is given (a box is required)."""
    if options.box is None:
        raise MagvitError("needs box=(top, left, height, width), the region to regenerate")
    return ~_box(layout, options.box)


def outside_region(layout: Layout, options: TaskOptions) -> Tensor:
    """Inpaint: everything but the box / mask is given."""
    return ~_region(layout, options)


def kept_region(layout: Layout, options: TaskOptions) -> Tensor:
    """Outpaint: the box is kept; with a mask, everything but the mask is kept."""
    if options.box is not None and options.mask is None:
        return _box(layout, options.box)
    return ~_region(layout, options)


register(Task("edit", "class-conditional editing: regenerate a box with a target class", outside_box, "none",
              use_class=True, options=("box",), refine=False, expand=1, rule="all"))
register(Task("inpaint", "inpainting: generate a box or masked region", outside_region, "zeros", use_class=False,
              options=("box", "mask"), refine=False, expand=1, rule="all"))
register(Task("outpaint", "outpainting: keep a box (or all but a mask), generate the rest", kept_region,
              "replicate", use_class=False, options=("box", "mask"), refine=False, expand=1, rule="all"))
