"""Quantizers: continuous latents z (B, D, *S) -> code vectors (B, D, *S) + integer ids (B, *S).

Three families, all channel-first and agnostic to the number of spatial dims (images (B, D, h, w),
video (B, D, t, h, w)):
- `vq`: nearest-code vector quantization with a learned codebook (VQ-VAE; MAGVIT's 3D-VQ uses
  1024 codes of dim 256, commitment 0.25, codebook loss 1.0), optional cosine-sim codes, EMA
  codebook updates and dead-code restarts.
- `lfq`: lookup-free quantization (MAGVIT-v2 section 3.1): q = sign(z), 2^d codes, no codebook
  parameters, entropy penalty computed without ever materialising N x 2^d probabilities.
- `fsq`: finite scalar quantization (Mentzer et al. 2023): per-channel bounded rounding, no loss.

Every quantizer runs in fp32 with autocast off (the entropy terms of MAGVIT-v2's LFQ, section 3.1,
overflow to NaN under fp16). The straight-through estimator is written `q + (z - z.detach())`: the gradient is that
of `z + (q - z).detach()`, and the forward value is exactly q, so `embed(ids)` matches bit for bit.
"""

from magvit.tokenizers.quantizers.base import (
    QUANTIZERS,
    Quantizer,
    QuantizerOutput,
    bits_to_ids,
    build_quantizer,
    ids_to_bits,
)
from magvit.tokenizers.quantizers.fsq import FiniteScalarQuantizer, FSQConfig
from magvit.tokenizers.quantizers.lfq import LFQConfig, LookupFreeQuantizer, entropy_group_sizes, lfq_entropy
from magvit.tokenizers.quantizers.vq import VectorQuantizer, VQConfig

__all__ = [
    "FSQConfig", "FiniteScalarQuantizer", "LFQConfig", "LookupFreeQuantizer", "QUANTIZERS", "Quantizer",
    "QuantizerOutput", "VQConfig", "VectorQuantizer", "bits_to_ids", "build_quantizer", "entropy_group_sizes",
    "ids_to_bits", "lfq_entropy",
]
