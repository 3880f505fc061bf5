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

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import pack, rearrange, unpack
from torch import Tensor, nn

from magvit.errors import MagvitError
from magvit.registry import Registry

QUANTIZERS: Registry[Quantizer] = Registry("quantizer")


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


@dataclass(frozen=True)
class LFQConfig:
    name: str = "lfq"
    bits: int = 18  # codebook size 2^bits
    # Measured on the lfq-vs-vq study's tokenizer (BENCHMARKS.md, LFQ section): MAGVIT-v2's tau =
    # 0.01 makes the per-bit logit 400 z, so once |z| ~ 1 (where the commitment loss pulls it) the
    # entropy gradient vanishes and the codes collapse; tau = 0.3 with a light commitment keeps it.
    commitment: float = 0.05  # MAGVIT-v2: 0.25
    entropy_weight: float = 0.1  # MAGVIT-v2: 0.1; 0.01 collapses
    diversity_gamma: float = 1.0  # weight of the codebook entropy inside the entropy penalty
    tau: float = 0.3  # softmax temperature of p(c|z); MAGVIT-v2: 0.01
    # The codebook entropy H(E[p(c|z)]) over groups of bits; None: the fewest groups of at most
    # `max_group_bits` bits (one group, the exact joint entropy, up to 2^18 codes). Groups may be
    # unequal (bits 15 in 2 groups: 8 + 7). More than one group is only an upper bound on the joint
    # entropy: it stays maximal while the groups copy each other.
    entropy_groups: int | None = None
    max_group_bits: int = 18  # a group's batch average holds 2^bits floats (1 MiB at 18)
    # Annealing (MAGVIT-v2 recommends one for large vocabularies): the entropy weight starts at
    # entropy_weight * entropy_anneal_factor and falls linearly to entropy_weight over
    # entropy_anneal_steps training steps; factor 1 (or 0 steps) is a constant weight.
    entropy_anneal_steps: int = 0
    entropy_anneal_factor: float = 1.0


@dataclass(frozen=True)
class FSQConfig:
    name: str = "fsq"
    levels: tuple[int, ...] = (8, 8, 8, 5, 5, 5)  # 64,000 codes (Mentzer et al. table 1)


@dataclass
class QuantizerOutput:
    quantized: Tensor  # (B, D, *S) straight-through: value = code vectors, gradient flows to z
    ids: Tensor  # (B, *S) int64 in [0, codebook_size)
    loss: Tensor  # scalar: the weighted sum of this quantizer's auxiliary losses
    metrics: dict[str, Tensor]  # detached scalars, unweighted, one per term


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _at_least_fp32(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _entropy(probs: Tensor) -> Tensor:
    """Entropy in nats of a distribution along the last dim; finite gradient at p = 0."""
    return -(probs * probs.clamp_min(1e-30).log()).sum(-1)


def ids_to_bits(ids: Tensor, bits: int) -> Tensor:
    """(...) int ids -> (..., bits) float in {-1, +1}; bit i is +1 when 2^i is set in the id."""
    shifts = torch.arange(bits, device=ids.device)
    return ((ids.unsqueeze(-1) >> shifts) & 1).float() * 2 - 1


def bits_to_ids(bits: Tensor) -> Tensor:
    """(..., bits) in {-1, +1} (or any sign) -> (...) int64 ids = sum_i 2^i [bit_i > 0]."""
    shifts = torch.arange(bits.shape[-1], device=bits.device)
    return ((bits > 0).long() << shifts).sum(-1)


class Quantizer(nn.Module, abc.ABC):
    """Base class: maps z (B, dim, *S) to `QuantizerOutput`; `embed` maps ids back to codes."""

    codebook_size: int
    dim: int  # channels of z expected

    @abc.abstractmethod
    def forward(self, z: Tensor) -> QuantizerOutput: ...

    def set_step(self, step: int) -> None:
        """The training step, given by the trainer before each forward (LFQ anneals a loss weight)."""

    @abc.abstractmethod
    def codebook(self) -> Tensor:
        """(codebook_size, D): every code vector, row k for id k."""

    def embed(self, ids: Tensor) -> Tensor:
        """(B, *S) int ids -> (B, D, *S) code vectors, equal to `forward(z).quantized` in value."""
        return rearrange(self._codes_of(ids), "b ... d -> b d ...")

    def _codes_of(self, ids: Tensor) -> Tensor:
        """(...) ids -> (..., D) code vectors; subclasses compute them without the full codebook."""
        return self.codebook()[ids]

    def _tokens(self, z: Tensor) -> tuple[Tensor, list]:
        """(B, D, *S) -> (N, D) in at least fp32, and the packed shape for `_output`."""
        if z.dim() < 3 or z.shape[1] != self.dim:
            raise MagvitError(
                f"{type(self).__name__} expects z of shape (B, {self.dim}, *spatial), got {tuple(z.shape)}; "
                f"make the encoder output {self.dim} channels"
            )
        flat, ps = pack([rearrange(z, "b d ... -> b ... d")], "* d")
        return _at_least_fp32(flat), ps

    def _output(
        self, quantized: Tensor, ids: Tensor, ps: list, loss: Tensor, metrics: dict[str, Tensor]
    ) -> QuantizerOutput:
        """Back to (B, D, *S) / (B, *S), plus the batch's code usage and perplexity."""
        counts = torch.bincount(ids, minlength=self.codebook_size).float()
        metrics["usage"] = (counts > 0).float().mean()  # fraction of codes used in this batch
        metrics["perplexity"] = _entropy(counts / counts.sum()).exp()
        return QuantizerOutput(
            quantized=rearrange(unpack(quantized, ps, "* d")[0], "b ... d -> b d ..."),
            ids=unpack(ids, ps, "*")[0],
            loss=loss,
            metrics={k: v.detach() for k, v in metrics.items()},
        )


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


# ---------------------------------------------------------------------------------------------
# LFQ: lookup-free quantization (MAGVIT-v2)


def _mean_over_processes(x: Tensor) -> Tensor:
    """The cross-process mean of x in value, with x's local gradient.

    We all-reduce a detached copy and add it as a constant offset instead of using the
    differentiable `torch.distributed.nn.functional.all_reduce`: the backward pass then needs no
    collective (no hang if one process skips backward), and after DDP averages the parameter
    gradients over the W processes the result equals the exact gradient of the global loss, whose
    derivative with respect to each local average carries a 1/W that DDP's averaging supplies.
    """
    if not _distributed():
        return x
    total = x.detach().clone()
    dist.all_reduce(total)
    return x + (total / dist.get_world_size() - x.detach())


def _group_code_probs(p_one: Tensor, p_zero: Tensor) -> Tensor:
    """Per-bit probabilities (N, k) -> (N, 2^k) probabilities of every k-bit code, column = its id."""
    probs = p_one.new_ones(p_one.shape[0], 1)
    for j in range(p_one.shape[1]):  # columns [2^j, 2^(j+1)) are the codes with bit j set
        probs = torch.cat([probs * p_zero[:, j : j + 1], probs * p_one[:, j : j + 1]], dim=-1)
    return probs


def _average_code_probs(p_one: Tensor, p_zero: Tensor) -> Tensor:
    """Per-bit probabilities (N, k) -> (2^k,) batch average of p(c|z) over every k-bit code.

    p(c|z) is a product over bits, so split the bits into low (a) and high (k - a) halves:
    E_n[p(c)] = (1/N) sum_n P_hi[n, c_hi] P_lo[n, c_lo], one (2^(k-a), N) x (N, 2^a) matmul.
    Memory is N (2^a + 2^(k-a)) + 2^k floats instead of N 2^k: at k = 18 and N = 10,240,
    21 MB instead of 10.7 GB; the compute is the same N 2^k multiply-adds, in one matmul.
    """
    low = p_one.shape[1] // 2
    p_low = _group_code_probs(p_one[:, :low], p_zero[:, :low])  # (N, 2^a), column = low bits' id
    p_high = _group_code_probs(p_one[:, low:], p_zero[:, low:])  # (N, 2^(k-a))
    average = p_high.t() @ p_low / p_one.shape[0]  # (2^(k-a), 2^a): row = high id, column = low id
    return average.flatten()  # index = high * 2^a + low = the code's id


def entropy_group_sizes(bits: int, groups: int | None, max_group_bits: int = 18) -> list[int]:
    """Sizes of the bit groups the codebook entropy is taken over: `groups` groups (None: the
    fewest of at most `max_group_bits` bits), as equal as possible, larger ones first."""
    if groups is None:
        groups = math.ceil(bits / max_group_bits)
    if not 1 <= groups <= bits:
        raise MagvitError(f"lfq entropy_groups must be in [1, bits={bits}] or null (automatic), got {groups}")
    size, extra = divmod(bits, groups)
    return [size + 1] * extra + [size] * (groups - extra)


def lfq_entropy(
    z: Tensor, tau: float, groups: int | list[int] | None = None, sync: bool = True
) -> tuple[Tensor, Tensor]:
    """z (N, d) -> (mean per-token entropy, codebook entropy), in nats.

    p(c|z) = softmax_c(2 z.c / tau) over c in {-1, +1}^d (= softmax(-||z - c||^2 / tau), |c|^2
    being constant) factorises exactly into independent bits: p(c_i = +1 | z) = sigmoid(4 z_i / tau).
    So the per-token entropy is a sum of d Bernoulli entropies, H_b = softplus(l) - sigmoid(l) l
    for logit l (stable at any |l|). The entropy of the batch average E[p(c|z)] does not
    factorise: it is summed over bit groups (`groups`: a count, the sizes, or None for the
    automatic count of `entropy_group_sizes`), each group's average taken without materialising
    N x 2^group probabilities (`_average_code_probs`). One group is the exact joint entropy; more
    are an upper bound (subadditivity). With `sync` (training) the batch average is taken over
    every process; without it (eval, which may run on one process only) it is local.
    """
    sizes = groups if isinstance(groups, list) else entropy_group_sizes(z.shape[-1], groups)
    logits = 4 * z / tau  # (N, d)
    p_one, p_zero = torch.sigmoid(logits), torch.sigmoid(-logits)
    per_token = (F.softplus(logits) - p_one * logits).sum(-1).mean()
    codebook = z.new_zeros(())
    for ones, zeros in zip(p_one.split(sizes, dim=-1), p_zero.split(sizes, dim=-1)):
        average = _average_code_probs(ones, zeros)  # (2^size,)
        average = _mean_over_processes(average) if sync else average
        codebook = codebook + _entropy(average)
    return per_token, codebook


@QUANTIZERS.register("lfq", LFQConfig)
class LookupFreeQuantizer(Quantizer):
    """q = sign(z) in {-1, +1}^bits (0 -> -1), id = sum_i 2^i [z_i > 0]; no codebook parameters.

    loss = commitment * ||z - sg(q)||^2 + entropy_weight * (E[H(p(c|z))] - gamma H(E[p(c|z)])):
    the first entropy term makes each token confident, the second spreads tokens over the codebook.
    The entropy penalty is often negative; `metrics` reports its terms separately.
    """

    def __init__(self, cfg: LFQConfig):
        super().__init__()
        if not 1 <= cfg.bits <= 62:
            raise MagvitError(f"lfq bits must be in [1, 62] (ids are int64), got {cfg.bits}")
        if not 1 <= cfg.max_group_bits <= 24:
            raise MagvitError(f"lfq max_group_bits must be in [1, 24] (2^24 floats a group), got {cfg.max_group_bits}")
        self.group_sizes = entropy_group_sizes(cfg.bits, cfg.entropy_groups, cfg.max_group_bits)
        if max(self.group_sizes) > cfg.max_group_bits:
            raise MagvitError(
                f"lfq entropy groups of {max(self.group_sizes)} bits exceed max_group_bits={cfg.max_group_bits}: "
                f"use entropy_groups >= {math.ceil(cfg.bits / cfg.max_group_bits)} or null (automatic)"
            )
        if cfg.tau <= 0:
            raise MagvitError(f"lfq tau must be > 0, got {cfg.tau}")
        if cfg.entropy_anneal_steps < 0 or cfg.entropy_anneal_factor < 0:
            raise MagvitError(
                f"lfq entropy_anneal_steps and entropy_anneal_factor must be >= 0, "
                f"got {cfg.entropy_anneal_steps}, {cfg.entropy_anneal_factor}"
            )
        self.cfg = cfg
        self.codebook_size, self.dim = 2**cfg.bits, cfg.bits
        self.step = 0  # the training step, set by the trainer (`set_step`): the annealed entropy weight

    def set_step(self, step: int) -> None:
        self.step = step

    def entropy_weight_at(self, step: int) -> float:
        """entropy_weight * factor at step 0, linearly down to entropy_weight at entropy_anneal_steps."""
        cfg = self.cfg
        left = max(0.0, 1.0 - step / cfg.entropy_anneal_steps) if cfg.entropy_anneal_steps else 0.0
        return cfg.entropy_weight * (1.0 + (cfg.entropy_anneal_factor - 1.0) * left)

    def codebook(self) -> Tensor:
        return ids_to_bits(torch.arange(self.codebook_size), self.dim)

    def _codes_of(self, ids: Tensor) -> Tensor:
        return ids_to_bits(ids, self.dim)

    def forward(self, z: Tensor) -> QuantizerOutput:
        """z (B, bits, *S) -> quantized (B, bits, *S) in {-1, +1}, ids (B, *S)."""
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat, ps = self._tokens(z)  # (N, d), fp32
            q = (flat > 0).to(flat.dtype) * 2 - 1  # (N, d)
            ids = bits_to_ids(q)
            commitment = F.mse_loss(flat, q)
            per_token, codebook = lfq_entropy(flat, self.cfg.tau, self.group_sizes, sync=self.training)
            entropy_loss = per_token - self.cfg.diversity_gamma * codebook
            weight = self.entropy_weight_at(self.step)
            loss = self.cfg.commitment * commitment + weight * entropy_loss
            metrics = {
                "entropy_weight": torch.tensor(weight),
                "commitment": commitment,
                "entropy_per_token": per_token,
                "entropy_codebook": codebook,
                "entropy_loss": entropy_loss,
            }
            quantized = q + (flat - flat.detach())
        return self._output(quantized, ids, ps, loss, metrics)


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


def build_quantizer(cfg) -> Quantizer:
    """Build the quantizer a registered config dataclass describes (its `name` picks the entry)."""
    return QUANTIZERS[cfg.name].build(cfg)
