"""VQ: the nearest code of a learned codebook (VQ-VAE; MaskGIT's and MAGVIT's tokenizers)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from magvit.errors import MagvitError
from magvit.tokenizers.quantizers.base import (
    QUANTIZERS,
    Quantizer,
    QuantizerOutput,
    _distributed,
)


@dataclass(frozen=True)
class VQConfig:
    name: str = "vq"
    codebook_size: int = 1024
    dim: int = 256
    l2_normalize: bool = False  # cosine-similarity VQ: codes and inputs on the unit sphere
    commitment: float = 0.25
    codebook_weight: float = 1.0  # dropped when ema=True (the codebook gets no gradient then)
    ema: bool = False
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5  # Laplace smoothing of the EMA cluster sizes
    restart_dead_codes: bool = True
    dead_code_threshold: float = 1.0  # EMA assignments per step below which a code is restarted
    # U(-1/K, 1/K), N(0, 0.02^2), or "data": the first training batch's encoder outputs (random
    # codes start far from the encoder's scale and stay unused for the restart grace period)
    init: Literal["uniform", "normal", "data"] = "uniform"



# ---------------------------------------------------------------------------------------------
# VQ: nearest code in a learned codebook


@QUANTIZERS.register("vq", VQConfig)
class VectorQuantizer(Quantizer):
    """Euclidean nearest-code VQ, straight-through; loss = w_cb ||sg(z) - q||^2 + beta ||z - sg(q)||^2."""

    max_distance_elements = 2**24  # tokens x codes per distance chunk: 64 MiB in fp32

    def __init__(self, cfg: VQConfig):
        super().__init__()
        if cfg.codebook_size < 1 or cfg.dim < 1:
            raise MagvitError(f"vq needs codebook_size >= 1 and dim >= 1, got {cfg.codebook_size}, {cfg.dim}")
        if not 0.0 <= cfg.ema_decay < 1.0:
            raise MagvitError(f"vq ema_decay must be in [0, 1), got {cfg.ema_decay}")
        self.cfg = cfg
        self.codebook_size, self.dim = cfg.codebook_size, cfg.dim
        self.codes = nn.Parameter(torch.empty(cfg.codebook_size, cfg.dim), requires_grad=not cfg.ema)
        # EMA of the per-step assignment counts: the EMA cluster size, and the dead-code signal
        self.register_buffer("usage", torch.zeros(cfg.codebook_size))
        self.register_buffer("stats_ready", torch.tensor(False))
        if cfg.ema:  # EMA of the sum of the inputs assigned to each code
            self.register_buffer("ema_sum", torch.zeros(cfg.codebook_size, cfg.dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            if self.cfg.init == "normal":
                self.codes.normal_(0.0, 0.02)
            else:  # "data" also starts uniform: replaced by `_init_from_data` at the first training step
                self.codes.uniform_(-1 / self.codebook_size, 1 / self.codebook_size)
            self.usage.zero_()
            self.stats_ready.fill_(False)

    def codebook(self) -> Tensor:
        return F.normalize(self.codes, dim=-1) if self.cfg.l2_normalize else self.codes

    def forward(self, z: Tensor) -> QuantizerOutput:
        """z (B, D, *S) -> quantized (B, D, *S), ids (B, *S)."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat, ps = self._tokens(z)  # (N, D)
            if self.cfg.l2_normalize:
                flat = F.normalize(flat, dim=-1)
            # (re)set codes before the lookup: the graph below must not see codes change afterwards
            if self.training and self.cfg.init == "data" and not self.stats_ready:
                self._init_from_data(flat.detach())
            if self.training and self.cfg.restart_dead_codes:
                self._restart_dead_codes(flat.detach())
            codes = self.codebook().to(flat.dtype)  # (K, D)
            ids = self._nearest(flat.detach(), codes.detach())  # (N,)
            q = codes[ids]  # (N, D)
            commitment = F.mse_loss(flat, q.detach())
            loss = self.cfg.commitment * commitment
            metrics = {"commitment": commitment}
            if not self.cfg.ema:
                metrics["codebook"] = F.mse_loss(q, flat.detach())
                loss = loss + self.cfg.codebook_weight * metrics["codebook"]
            if self.training:
                self._update_statistics(flat.detach(), ids)
            quantized = q.detach() + (flat - flat.detach())
        return self._output(quantized, ids, ps, loss, metrics)

    @torch.no_grad()
    def _nearest(self, flat: Tensor, codes: Tensor) -> Tensor:
        """argmin_k ||x - c_k||^2 = argmin_k ||c_k||^2 - 2 x.c_k, in chunks of tokens."""
        sq_norms = codes.pow(2).sum(-1)  # (K,)
        chunk = max(1, self.max_distance_elements // self.codebook_size)
        distances = (torch.addmm(sq_norms, x, codes.t(), alpha=-2) for x in flat.split(chunk))  # (chunk, K)
        return torch.cat([d.argmin(-1) for d in distances])

    @torch.no_grad()
    def _update_statistics(self, flat: Tensor, ids: Tensor) -> None:
        """Usage EMA (all codes) and, with `ema`, the EMA codebook (VQ-VAE appendix A.1)."""
        counts = torch.bincount(ids, minlength=self.codebook_size).to(self.usage.dtype)  # (K,)
        sums = None
        if self.cfg.ema:
            sums = torch.zeros_like(self.codes).index_add_(0, ids, flat.to(self.codes.dtype))  # (K, D)
        if _distributed():  # every process must end with the same codebook
            dist.all_reduce(counts)
            if sums is not None:
                dist.all_reduce(sums)
        if not self.stats_ready:
            # every code starts with its fair share of the first step's tokens: a grace period
            # of about log(share / threshold) / -log(decay) steps before it can be declared dead
            self.usage.fill_(float(counts.sum()) / self.codebook_size)
            if self.cfg.ema:
                self.ema_sum.copy_(self.codes * self.usage[:, None])
            self.stats_ready.fill_(True)
        decay = self.cfg.ema_decay
        self.usage.mul_(decay).add_(counts, alpha=1 - decay)
        if self.cfg.ema:
            self.ema_sum.mul_(decay).add_(sums, alpha=1 - decay)
            total, eps = self.usage.sum(), self.cfg.ema_epsilon
            size = (self.usage + eps) / (total + self.codebook_size * eps) * total  # Laplace smoothing
            self.codes.copy_(self.ema_sum / size[:, None])

    @torch.no_grad()
    def _init_from_data(self, flat: Tensor) -> None:
        """Every code becomes a random token of the first training batch (process 0's, broadcast)."""
        n = flat.shape[0]
        k = self.codebook_size
        picks = torch.randperm(n, device=flat.device)[:k] if n >= k else torch.randint(n, (k,), device=flat.device)
        fresh = flat[picks].to(self.codes.dtype)  # (K, D)
        if _distributed():
            dist.broadcast(fresh, src=0)
        self.codes.copy_(fresh)

    @torch.no_grad()
    def _restart_dead_codes(self, flat: Tensor) -> None:
        """Codes whose usage EMA fell below the threshold jump to random encoder outputs of this batch."""
        if not self.stats_ready:
            return
        dead = self.usage < self.cfg.dead_code_threshold  # (K,) identical on every process
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        n = flat.shape[0]
        picks = torch.randperm(n, device=flat.device)[:n_dead] if n >= n_dead else torch.randint(n, (n_dead,))
        fresh = flat[picks.to(flat.device)].to(self.codes.dtype)  # (n_dead, D)
        if _distributed():
            dist.broadcast(fresh, src=0)
        share = self.usage.mean()
        self.codes[dead] = fresh
        self.usage[dead] = share
        if self.cfg.ema:
            self.ema_sum[dead] = fresh * share

