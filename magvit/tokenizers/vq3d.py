"""vq3d: MAGVIT's 3D-VQ tokenizer (CVPR 2023, section 3.1).

3x3x3 conv res blocks (GroupNorm -> swish -> conv), average-pool downsampling with temporal
downsampling in the first two stages only (`temporal_downsample: early`), a decoder that mirrors
it with nearest-neighbour upsampling + conv, VQ with 1024 codes of dim 256. Base: channels 64,
multipliers (1, 2, 2, 4): 16x128x128 -> 8x64x64 -> 4x32x32 -> 4x16x16 tokens. Clips need a
multiple of 4 frames; images go through vqgan2d or causal3d.

MAGVIT initialises it by inflating a trained 2D VQGAN (`inflate_from`): "central" puts each 2D
kernel in the middle temporal slice of a zero 3D kernel (rFVD 58 vs 103 for "average", 127 from
scratch, B on UCF-101), so a static clip is first tokenized exactly like its frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from magvit.errors import MagvitError
from magvit.tokenizers.base import TOKENIZERS, Conv3dTokenizerConfig, Tokenizer
from magvit.tokenizers.vqgan2d import VQGAN2d, VQGAN2dConfig


@dataclass(frozen=True)
class VQ3dConfig(Conv3dTokenizerConfig):
    name: str = "vq3d"
    channels: int = 64
    temporal_downsample: Literal["early", "late"] | tuple[bool, ...] = "early"  # MAGVIT's first two stages


def inflate_kernel(kernel_2d: Tensor, frames: int, mode: Literal["central", "average"]) -> Tensor:
    """(O, I, kh, kw) -> (O, I, frames, kh, kw): central slice only, or repeated / frames."""
    if mode == "average":
        return kernel_2d.unsqueeze(2).repeat(1, 1, frames, 1, 1) / frames
    kernel = kernel_2d.new_zeros(kernel_2d.shape[:2] + (frames,) + kernel_2d.shape[2:])
    kernel[:, :, frames // 2] = kernel_2d
    return kernel


@TOKENIZERS.register("vq3d", VQ3dConfig)
class VQ3d(Tokenizer):
    """MAGVIT's 3D-VQ: (B, 3, T, H, W) -> ids (B, T / 2^n_t, H / f, W / f)."""

    @torch.no_grad()
    def inflate_from(self, tokenizer_2d: VQGAN2d, mode: Literal["central", "average"] = "central") -> VQ3d:
        """Copy a vqgan2d of the same architecture into this model, inflating every conv kernel.

        Norms, the codebook and every other tensor are copied as they are. Returns self.
        """
        if mode not in ("central", "average"):
            raise MagvitError(f"inflation mode must be 'central' or 'average', got {mode!r}")
        if not isinstance(tokenizer_2d, VQGAN2d):
            raise MagvitError(f"vq3d inflates from a vqgan2d tokenizer, got {type(tokenizer_2d).__name__}")
        arch = lambda c: (
            f"channels {c.channels}, multipliers {list(c.multipliers)}, num_res_blocks {c.num_res_blocks}"
        )
        if arch(tokenizer_2d.config) != arch(self.config):
            raise MagvitError(
                f"vq3d inflation needs a vqgan2d of the same architecture, got {arch(tokenizer_2d.config)} "
                f"for {arch(self.config)} (vqgan2d preset 'magvit_base' matches vq3d 'base')"
            )
        source, target = tokenizer_2d.state_dict(), self.state_dict()
        if source.keys() != target.keys():
            key = next(iter(source.keys() ^ target.keys()))
            raise MagvitError(
                f"vq3d inflation: the vqgan2d has different parameters (first mismatch '{key}')"
            )
        inflated = {}
        for key, value in target.items():
            weight = source[key]
            if value.ndim == 5 and weight.ndim == 4 and value.shape[:2] + value.shape[3:] == weight.shape:
                inflated[key] = inflate_kernel(weight, value.shape[2], mode)
            elif value.shape == weight.shape:
                inflated[key] = weight.clone()
            else:
                raise MagvitError(
                    f"vq3d inflation: '{key}' has shape {tuple(weight.shape)} in the vqgan2d, "
                    f"{tuple(value.shape)} here; use the same quantizer and architecture"
                )
        self.load_state_dict(inflated, strict=True)
        return self


# Each the vqgan2d preset it inflates from (the same architecture and quantizer), with time halved too
VQ3dConfig.PRESETS = {
    # CPU tests: 16x32x32 -> 4x8x8
    "tiny": dict(VQGAN2dConfig.PRESETS["tiny"], temporal_downsample=(True, True)),
    # MAGVIT-B (41M): 16x128x128 -> 4x16x16
    "base": dict(VQGAN2dConfig.PRESETS["magvit_base"], temporal_downsample="early"),
    # MAGVIT-L (158M)
    "large": dict(VQGAN2dConfig.PRESETS["magvit_large"], temporal_downsample="early"),
}
