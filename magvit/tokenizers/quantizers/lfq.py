"""LFQ: lookup-free quantization (MAGVIT-v2 section 3.1): q = sign(z), 2^bits codes, no codebook
parameters, and the entropy penalty that keeps the codes in use."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from magvit.errors import MagvitError
from magvit.tokenizers.quantizers.base import (
    QUANTIZERS,
    Quantizer,
    QuantizerOutput,
    _distributed,
    _entropy,
    bits_to_ids,
    ids_to_bits,
)


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

