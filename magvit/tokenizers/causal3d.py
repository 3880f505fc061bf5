"""causal3d: MAGVIT-v2's causal 3D CNN tokenizer with lookup-free quantization (ICLR 2024, sec. 3.2).

Every temporal conv pads k_t - 1 frames before and none after, and every GroupNorm normalises
each frame on its own, so latent frame j depends on input frames <= 4j only: the first frame is
tokenized alone and an image (T = 1) exactly like the first frame of a clip (joint image-video
tokenization). Strided-conv downsampling (T = 1 + 2k -> 1 + k), depth-to-space upsampling that
drops the leading extra frame (1 + k -> 1 + 2k), and a decoder whose GroupNorms take their scale
and shift from the quantized latent (adaptive GroupNorm), itself causal: output frame n depends
on latent frames <= ceil(n / 4). Base: 17x128x128 -> 5x16x16 tokens, LFQ with 2^18 codes.

Time is halved in the last two downsamplings (`temporal_downsample: late`), where MAGVIT-v2
section 3.2 moved it from MAGVIT's first two (`early`); the decoder mirrors either. Both bounds
above hold for any placement: a causal strided conv's output frame t sees inputs <= 2t, and two
of them make 4j, wherever they sit.
"""

from __future__ import annotations

from dataclasses import dataclass

from magvit.config import RegisteredConfig, registry_field
from magvit.tokenizers.base import TOKENIZERS, Conv3dTokenizerConfig, Tokenizer
from magvit.tokenizers.quantizers import QUANTIZERS, LFQConfig


@dataclass(frozen=True)
class Causal3dConfig(Conv3dTokenizerConfig):
    name: str = "causal3d"
    quantizer: RegisteredConfig = registry_field(QUANTIZERS, default=LFQConfig(bits=18))


@TOKENIZERS.register("causal3d", Causal3dConfig)
class Causal3d(Tokenizer):
    """MAGVIT-v2's causal tokenizer: (B, 3, 1 + r k, H, W) -> ids (B, 1 + k, H / f, W / f), r = 2^n_t."""

    def __init__(self, config: Causal3dConfig):
        super().__init__(config, causal=True, downsample="conv", upsample="depth_to_space", adaptive_norm=True)


Causal3dConfig.PRESETS = {
    # CPU tests: 17x32x32 -> 5x8x8, 2^10 codes. Two downsamplings, both temporal: the placement does
    # not apply (early and late are this same network), so the flags stay as they were
    "tiny": dict(
        channels=16,
        multipliers=(1, 2, 2),
        num_res_blocks=1,
        temporal_downsample=(True, True),
        quantizer=dict(name="lfq", bits=10),
    ),
    # one GPU on a user's videos (configs/tokenizer/video_folder.yaml): 17x64x64 -> 5x8x8, 2^14 codes
    "small": dict(
        channels=64,
        multipliers=(1, 2, 2, 4),
        num_res_blocks=2,
        temporal_downsample="late",
        quantizer=dict(name="lfq", bits=14),
    ),
    # 17x128x128 -> 5x16x16, 2^18 codes (MAGVIT-v2 section 4; its exact widths were not published)
    "base": dict(
        channels=128,
        multipliers=(1, 2, 2, 4),
        num_res_blocks=2,
        temporal_downsample="late",
        quantizer=dict(name="lfq", bits=18),
    ),
}
