"""Mask schedules gamma(r): the fraction of tokens still masked at progress r in [0, 1].

Every schedule falls from gamma(0) = 1 (all masked) to gamma(1) = 0 (none). MaskGIT (section 3.3)
draws the training mask ratio as gamma(r) with r ~ U[0, 1) and, at decoding step s of T, keeps
floor(N * gamma((s + 1) / T)) tokens masked. Concave schedules (cosine, square) mask more and
worked best in the paper's ablation; linear is next; convex (sqrt) is worst. `log` and `exp`
need the token count N (MaskGIT section 3.3).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from magvit.registry import Registry

Schedule = Callable[[torch.Tensor, int], torch.Tensor]  # (r, num_tokens) -> gamma(r), same shape as r

MASK_SCHEDULES: Registry[Schedule] = Registry("mask schedule")


@MASK_SCHEDULES.register("cosine")
def cosine(r: torch.Tensor, n: int) -> torch.Tensor:
    """cos(pi r / 2): MaskGIT's default."""
    return torch.cos(r * math.pi / 2)


@MASK_SCHEDULES.register("linear")
def linear(r: torch.Tensor, n: int) -> torch.Tensor:
    """1 - r."""
    return 1 - r


@MASK_SCHEDULES.register("square")
def square(r: torch.Tensor, n: int) -> torch.Tensor:
    """1 - r^2 (concave)."""
    return 1 - r**2


@MASK_SCHEDULES.register("cubic")
def cubic(r: torch.Tensor, n: int) -> torch.Tensor:
    """1 - r^3 (concave)."""
    return 1 - r**3


@MASK_SCHEDULES.register("sqrt")
def sqrt(r: torch.Tensor, n: int) -> torch.Tensor:
    """1 - sqrt(r) (convex)."""
    return 1 - r.clamp(min=0).sqrt()


@MASK_SCHEDULES.register("log")
def log(r: torch.Tensor, n: int) -> torch.Tensor:
    """-log2(r) / log2(N), clamped to [0, 1] (convex)."""
    return (-torch.log2(r.clamp(min=1e-12)) / math.log2(max(n, 2))).clamp(0, 1)


@MASK_SCHEDULES.register("exp")
def exp(r: torch.Tensor, n: int) -> torch.Tensor:
    """1 - 2^(-log2(N) (1 - r)) (concave)."""
    return 1 - torch.exp2(-math.log2(max(n, 2)) * (1 - r))


@MASK_SCHEDULES.register("arccos")
def arccos(r: torch.Tensor, n: int) -> torch.Tensor:
    """arccos(r) / (pi / 2)."""
    return torch.arccos(r.clamp(-1, 1)) / (math.pi / 2)


def mask_ratio(name: str, r: torch.Tensor | float, num_tokens: int) -> torch.Tensor:
    """gamma(r) for schedule `name`, clamped to [0, 1]."""
    r = torch.as_tensor(r, dtype=torch.float64)
    return MASK_SCHEDULES[name].build(r, num_tokens).clamp(0, 1)
