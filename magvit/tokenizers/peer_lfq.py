"""`lfq_peer`: vector-quantize-pytorch's `LFQ` (the most used public LFQ) behind our quantizer contract.

For side-by-side measurements only (`configs/studies/lfq-peer.yaml`, BENCHMARKS.md section 9): the same
causal3d tokenizer, data, steps and seed with either LFQ. The peer is an optional dependency
(`pip install vector-quantize-pytorch`, in the `[dev]` extra); building this quantizer without it is
one clear error. Its codes are the same {-1, +1}^bits vectors as ours (`codebook_scale` 1), so ids are
computed from the signs in our bit order and `embed` is ours: a trained tokenizer saves and decodes
like any other. Its loss is the peer's own: per-sample minus codebook entropy of the full N x 2^bits
softmax at `inv_temperature` (100, i.e. tau = 0.01, by default), weighted, plus its commitment term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from magvit.errors import MagvitError
from magvit.tokenizers.quantizers import QUANTIZERS, Quantizer, QuantizerOutput, bits_to_ids, ids_to_bits


@dataclass(frozen=True)
class PeerLFQConfig:
    name: str = "lfq_peer"
    bits: int = 10
    # the peer's own defaults (vector-quantize-pytorch 1.x)
    entropy_weight: float = 0.1
    commitment: float = 0.0
    diversity_gamma: float = 1.0
    inv_temperature: float = 100.0


@QUANTIZERS.register("lfq_peer", PeerLFQConfig, help="vector-quantize-pytorch's LFQ (side-by-side studies)")
class PeerLookupFreeQuantizer(Quantizer):
    """vector_quantize_pytorch.LFQ on z (B, bits, *S); ids and codes in our convention."""

    def __init__(self, cfg: PeerLFQConfig):
        super().__init__()
        try:
            from vector_quantize_pytorch import LFQ
        except ImportError:
            raise MagvitError(
                "quantizer lfq_peer needs vector-quantize-pytorch: pip install vector-quantize-pytorch "
                "(it is in magvit's [dev] extra)"
            ) from None
        if not 1 <= cfg.bits <= 16:
            raise MagvitError(f"lfq_peer bits must be in [1, 16] (it builds N x 2^bits probabilities), got {cfg.bits}")
        self.cfg = cfg
        self.codebook_size, self.dim = 2**cfg.bits, cfg.bits
        self.peer = LFQ(dim=cfg.bits, codebook_size=2**cfg.bits, entropy_loss_weight=cfg.entropy_weight,
                        commitment_loss_weight=cfg.commitment, diversity_gamma=cfg.diversity_gamma,
                        channel_first=True)

    def codebook(self) -> Tensor:
        return ids_to_bits(torch.arange(self.codebook_size), self.dim)

    def _codes_of(self, ids: Tensor) -> Tensor:
        return ids_to_bits(ids, self.dim)

    def forward(self, z: Tensor) -> QuantizerOutput:
        """z (B, bits, *S) -> quantized (B, bits, *S) in {-1, +1}, ids (B, *S)."""
        flat, ps = self._tokens(z)  # checks the shape; (N, d) for usage metrics
        with torch.autocast(device_type=z.device.type, enabled=False):
            quantized, _, loss = self.peer(z.float(), inv_temperature=self.cfg.inv_temperature)
        ids = bits_to_ids(flat.detach())  # our bit order: id = sum_i 2^i [z_i > 0]
        out = self._output(flat.detach().sign(), ids, ps, loss.sum(), {"peer_loss": loss.sum()})
        out = out._replace(quantized=quantized)  # (B, d, *S): the peer's straight-through output, same values as ours
        return out
