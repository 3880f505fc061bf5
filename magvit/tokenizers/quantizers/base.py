"""The quantizer contract every family implements (`Quantizer`, `QuantizerOutput`), their registry
and the helpers they share. The families: vq.py, lfq.py, fsq.py (see the package docstring)."""

from __future__ import annotations

import abc
from typing import NamedTuple

import torch
import torch.distributed as dist
from einops import pack, rearrange, unpack
from torch import Tensor, nn

from magvit.errors import MagvitError
from magvit.registry import Registry

QUANTIZERS: Registry[Quantizer] = Registry("quantizer")


# A NamedTuple, not a dataclass: DeepSpeed ZeRO-3 gathers a module's weights for its backward from hooks on
# the tensors of its output, and finds them only in tuples, lists and dicts ("active_backward_submodules is
# empty during backward pass" otherwise).
class QuantizerOutput(NamedTuple):
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



def build_quantizer(cfg) -> Quantizer:
    """Build the quantizer a registered config dataclass describes (its `name` picks the entry)."""
    return QUANTIZERS[cfg.name].build(cfg)
