"""Tokenizers: video (B, 3, T, H, W) in [-1, 1] <-> token ids (B, t, h, w). An image is T = 1.

- `vqgan2d`: MaskGIT's 2D VQGAN, frame by frame.
- `vq3d`: MAGVIT's 3D-VQ, inflatable from a vqgan2d of the same architecture.
- `causal3d`: MAGVIT-v2's causal 3D CNN with lookup-free quantization (images and video alike).

Training pieces: `discriminators` (PatchGAN 2D/3D, StyleGAN-style 3D) and `losses` (LPIPS, GAN
losses, LeCAM, R1, VQGAN's adaptive weight), used by `magvit train-tokenizer`.
"""

from magvit.tokenizers.base import (
    TOKENIZERS,
    Tokenizer,
    TokenizerOutput,
    build_tokenizer,
)
from magvit.tokenizers.causal3d import Causal3d, Causal3dConfig
from magvit.tokenizers.discriminators import DISCRIMINATORS, build_discriminator
from magvit.tokenizers.peer_lfq import PeerLFQConfig
from magvit.tokenizers.quantizers import (
    QUANTIZERS,
    FSQConfig,
    LFQConfig,
    Quantizer,
    QuantizerOutput,
    VQConfig,
    build_quantizer,
)
from magvit.tokenizers.vq3d import VQ3d, VQ3dConfig, inflate_kernel
from magvit.tokenizers.vqgan2d import VQGAN2d, VQGAN2dConfig

__all__ = [
    "DISCRIMINATORS",
    "QUANTIZERS",
    "TOKENIZERS",
    "Causal3d",
    "Causal3dConfig",
    "FSQConfig",
    "LFQConfig",
    "PeerLFQConfig",
    "Quantizer",
    "QuantizerOutput",
    "Tokenizer",
    "TokenizerOutput",
    "VQ3d",
    "VQ3dConfig",
    "VQConfig",
    "VQGAN2d",
    "VQGAN2dConfig",
    "build_discriminator",
    "build_quantizer",
    "build_tokenizer",
    "inflate_kernel",
]
