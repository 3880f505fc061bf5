"""vqgan2d: MaskGIT's first stage, a 2D VQGAN applied frame by frame.

MaskGIT (section 3, appendix): conv encoder with average-pool downsampling and no attention,
base channels 128, multipliers (1, 1, 2, 2, 4), 2 res blocks per stage, 16x downsampling, VQ
with 1024 codes of dim 256. A clip is tokenized one frame at a time (time folded into the
batch): (T, H, W) -> (T, H/f, W/f). Its parameters have the names and shapes of `vq3d`'s up to
the temporal kernel axis, so a trained vqgan2d inflates into the vq3d preset of the same
architecture (`magvit_base` -> vq3d `base`, `magvit_large` -> `large`, `tiny` -> `tiny`).
"""

from __future__ import annotations

from dataclasses import dataclass

from magvit.tokenizers.base import TOKENIZERS, ConvTokenizerConfig, Tokenizer


@dataclass(frozen=True)
class VQGAN2dConfig(ConvTokenizerConfig):
    name: str = "vqgan2d"
    multipliers: tuple[int, ...] = (1, 1, 2, 2, 4)  # MaskGIT: 16x downsampling


@TOKENIZERS.register("vqgan2d", VQGAN2dConfig)
class VQGAN2d(Tokenizer):
    """MaskGIT's 2D VQGAN; video frame by frame: (B, 3, T, H, W) -> ids (B, T, H/f, W/f)."""


VQGAN2dConfig.PRESETS = {
    # CPU tests: 32x32 frames -> 8x8 tokens; overfits a few clips in seconds
    "tiny": dict(
        channels=16,
        multipliers=(1, 2, 2),
        num_res_blocks=1,
        quantizer=dict(name="vq", codebook_size=256, dim=16, init="data"),
    ),
    # MaskGIT ImageNet: 256x256 -> 16x16
    "base": dict(
        channels=128,
        multipliers=(1, 1, 2, 2, 4),
        num_res_blocks=2,
        quantizer=dict(name="vq", codebook_size=1024, dim=256),
    ),
    # the 2D twins of vq3d base / large (MAGVIT section 3.1: inflation), 128x128 -> 16x16
    "magvit_base": dict(
        channels=64,
        multipliers=(1, 2, 2, 4),
        num_res_blocks=2,
        quantizer=dict(name="vq", codebook_size=1024, dim=256),
    ),
    "magvit_large": dict(
        channels=128,
        multipliers=(1, 2, 2, 4),
        num_res_blocks=2,
        quantizer=dict(name="vq", codebook_size=1024, dim=256),
    ),
}
