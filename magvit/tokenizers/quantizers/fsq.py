"""FSQ: finite scalar quantization (Mentzer et al. 2023): per-channel bounded rounding, no loss."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from magvit.errors import MagvitError
from magvit.tokenizers.quantizers.base import (
    QUANTIZERS,
    Quantizer,
    QuantizerOutput,
)


@dataclass(frozen=True)
class FSQConfig:
    name: str = "fsq"
    levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)  # 64,000 codes (Mentzer et al. table 1)


# ---------------------------------------------------------------------------------------------
# FSQ: finite scalar quantization


@QUANTIZERS.register("fsq", FSQConfig)
class FiniteScalarQuantizer(Quantizer):
    """Channel i is bounded to L_i levels and rounded; codes lie in [-1, 1]; id = mixed-radix digits."""

    def __init__(self, cfg: FSQConfig):
        super().__init__()
        if not cfg.levels or min(cfg.levels) < 2:
            raise MagvitError(f"fsq levels must be a non-empty list of integers >= 2, got {list(cfg.levels)}")
        if math.prod(cfg.levels) >= 2**62:
            raise MagvitError(f"fsq levels {list(cfg.levels)} give over 2^62 codes; use fewer levels")
        self.cfg = cfg
        self.codebook_size, self.dim = math.prod(cfg.levels), len(cfg.levels)
        levels = torch.tensor(cfg.levels)
        self.register_buffer("levels", levels, persistent=False)  # (D,)
        basis = torch.cumprod(torch.cat([levels.new_ones(1), levels[:-1]]), 0)  # (D,) place values
        self.register_buffer("basis", basis, persistent=False)

    def _bound(self, z: Tensor) -> Tensor:
        """(N, D) -> (N, D) in (-L/2 - 1e-3, L/2) so that round() hits exactly L values.

        Odd L: (L-1)/2 tanh(z), levels -(L-1)/2 .. (L-1)/2. Even L: the range is shifted by half a
        level, tanh(z + atanh(1/2 / half)) half - 1/2, levels -L/2 .. L/2 - 1, still 0 at z = 0.
        """
        levels = self.levels.to(z.dtype)
        half = (levels - 1) * (1 + 1e-3) / 2  # the 1e-3 lets the outermost level be reached
        offset = (self.levels % 2 == 0).to(z.dtype) / 2
        return torch.tanh(z + torch.atanh(offset / half)) * half - offset

    def _codes_of(self, ids: Tensor) -> Tensor:
        digits = (ids.unsqueeze(-1) // self.basis) % self.levels  # (..., D) in [0, L_i)
        return (digits - self.levels // 2).float() / (self.levels // 2).float()

    def codebook(self) -> Tensor:
        return self._codes_of(torch.arange(self.codebook_size, device=self.levels.device))

    def forward(self, z: Tensor) -> QuantizerOutput:
        """z (B, D, *S) -> quantized (B, D, *S) in [-1, 1], ids (B, *S)."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat, ps = self._tokens(z)  # (N, D)
            bounded = self._bound(flat)
            rounded = bounded.detach().round()  # integers in [-(L//2), (L-1)//2]
            ids = ((rounded.long() + self.levels // 2) * self.basis).sum(-1)
            quantized = (rounded + (bounded - bounded.detach())) / (self.levels // 2).to(flat.dtype)
        return self._output(quantized, ids, ps, flat.new_zeros(()), {})

