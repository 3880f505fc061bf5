"""The autoregressive baseline: the same transformer sizes with a causal mask, raster order and a KV
cache (the "autoregressive video transformer" MaskGIT and MAGVIT compare decoding speed against).

Sequence [class | UNCOND][token 0 .. token N-1] in raster order (t, then h, then w); position i
predicts token i from the class and the tokens before it. `generate` samples one token per
forward: N forwards instead of the masked model's T (MaskGIT reports decoding up to 64x faster than
autoregressive decoding: its abstract and section 4.2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from magvit.decode import sample_sub_tokens
from magvit.errors import MagvitError
from magvit.transformer import TRANSFORMERS, TransformerBase, TransformerConfig, merge_ids


@dataclass(frozen=True)
class ARConfig(TransformerConfig):
    """The masked transformer's fields and presets; no task prompts."""

    name: str = "autoregressive"
    tasks: tuple[str, ...] = ()


class LayerCache:
    """Keys and values of one attention layer, (B, heads, length, d), grown in place."""

    def __init__(self, length: int):
        self.length, self.size = length, 0
        self.k = self.v = None

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new keys/values (B, heads, L, d); return all so far (B, heads, size, d)."""
        if self.k is None:
            shape = (*k.shape[:2], self.length, k.shape[3])
            self.k, self.v = k.new_empty(shape), v.new_empty(shape)
        if k.shape[2] > 1 and self.size:
            raise ValueError("a KV cache takes one multi-token prefill, then one token at a time")
        end = self.size + k.shape[2]
        self.k[:, :, self.size : end], self.v[:, :, self.size : end] = k, v
        self.size = end
        return self.k[:, :, :end], self.v[:, :, :end]


@TRANSFORMERS.register("autoregressive", ARConfig)
class ARTransformer(TransformerBase):
    """Causal: [class | UNCOND][tokens] in raster order; the logits at position i are for token i."""

    prefix, causal = 1, True

    def forward(self, tokens: Tensor, cls: Tensor) -> Tensor:
        """Teacher forcing: tokens (B, t, h, w), cls (B,) class or UNCOND ids -> logits (B, t, h, w, k, V)."""
        if tokens.ndim != 4:
            raise MagvitError(f"the transformer takes tokens (B, t, h, w), got shape {tuple(tokens.shape)}")
        b, t, h, w = tokens.shape
        seq = torch.cat([cls.view(b, 1), rearrange(tokens, "b t h w -> b (t h w)")[:, :-1]], 1)  # (B, N)
        x = self.drop(self.embed_ids(seq) + self.pos(t, h, w)[: seq.shape[1]])
        logits = self.head(self.run_blocks(x))  # (B, N, k, V)
        return rearrange(logits, "b (t h w) k v -> b t h w k v", t=t, h=h, w=w)

    @torch.no_grad()
    def generate(self, shape: tuple[int, int, int], batch: int = 1, classes: Tensor | None = None,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None, use_cache: bool = True) -> Tensor:
        """Sample (B, t, h, w) ids token by token (temperature 0 = greedy). `use_cache=False` re-runs
        the whole prefix every step (the reference the cache is checked against)."""
        device = self.head_bias.device
        t, h, w = shape
        n = t * h * w
        if classes is None:
            cls = torch.full((batch,), self.vocab.uncond, device=device)
        else:
            cls = self.vocab.cls(torch.as_tensor(classes, device=device).long().reshape(-1).expand(batch))
        if generator is None and temperature > 0:
            raise MagvitError("sampling with temperature > 0 needs a torch.Generator (seeded determinism)")
        pos = self.pos(t, h, w)  # (1 + N, C)
        caches = [LayerCache(n) for _ in self.blocks] if use_cache else None
        x = self.embed_ids(cls[:, None]) + pos[:1]  # (B, 1, C): the new positions to run
        seq = x
        out = torch.empty(batch, n, dtype=torch.long, device=device)
        was_training = self.training
        self.eval()
        try:
            for i in range(n):
                feats = self.run_blocks(x if use_cache else seq, caches)[:, -1:]  # (B, 1, C)
                sub = sample_sub_tokens(self.head(feats)[:, 0], temperature, top_k, top_p, generator)  # (B, k)
                out[:, i] = merge_ids(sub, self.bits_per)
                if i == n - 1:
                    break
                x = self.embed_ids(out[:, i : i + 1]) + pos[i + 1 : i + 2]
                seq = torch.cat([seq, x], 1)
        finally:
            self.train(was_training)
        return out.view(batch, t, h, w)

    def flops_per_forward(self, num_tokens: int) -> int:
        """Matmul FLOPs of one teacher-forced forward at batch 1 (a sequence of `num_tokens` positions)."""
        return self.sequence_flops(num_tokens)

    def generate_flops(self, num_tokens: int) -> int:
        """Matmul FLOPs of `generate` with the KV cache at batch 1: one position per forward, each
        attending to those before it, the head on it."""
        return sum(self.sequence_flops(1, past=i, head_tokens=1) for i in range(num_tokens))
