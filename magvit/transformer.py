"""The masked transformer of MaskGIT / MAGVIT / MAGVIT-v2: vocabulary, blocks, model, presets, weights.

A bidirectional pre-norm transformer over the sequence [task][class | UNCOND][t*h*w latent tokens]
(MAGVIT section 3.2: 2 + 1024 tokens for 4x16x16). Ids are explicit and non-negative:
codes [0, codebook_size), then MASK, one prompt per task, the classes, UNCOND. Learned position
embeddings are separate t, h and w tables summed, so one model serves images (1 x h x w, the first
time slot) and videos (t x h x w) up to its `grid`. For k = 1 the output head is tied to the code
embeddings plus a bias (MaskGIT). For LFQ's 2^d codes (MAGVIT-v2 section 3.1) a code is k sub-tokens
of b = d / k bits: the input embedding is the sum of k sub-embeddings and there are k heads of 2^b
classes, so p(code) = prod_j p_j(sub-token j).

`ARTransformer` (magvit/autoregressive.py) shares everything here but the attention mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from magvit.config import PresetConfig, build_registered
from magvit.errors import MagvitError
from magvit.registry import Registry
from magvit.runtime import run_block
from magvit.tasks import TASKS
from magvit.weights import load_weights_folder, resolve_folder, save_weights_folder

TRANSFORMERS: Registry[nn.Module] = Registry("transformer")

FORMAT, VERSION = "magvit-transformer", 1


@dataclass(frozen=True)
class TransformerConfig(PresetConfig):
    name: str = "masked"
    preset: str = "tiny"
    layers: int = 2
    width: int = 64
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    codebook_size: int = 0  # set from the tokenizer (tokenizer.codebook_size)
    sub_tokens: int = 1  # k factorised sub-tokens (2 for LFQ 2^18)
    num_classes: int = 0
    grid: tuple[int, int, int] = (1, 16, 16)  # the largest (t, h, w) token grid the positions cover
    tasks: tuple[str, ...] = field(default_factory=lambda: tuple(TASKS.names()))  # prompt tokens, in order
    # how a task's condition tokens z~ reach the model (MAGVIT section 3.2 and its conditioning ablation):
    # commit  COMMIT: z~ at masked condition positions, refined by the model (the default)
    # latent  MaskGIT's latent masking: z~ placed at the condition positions, never masked, kept as given
    # prefix  z~ of the condition positions prepended to the sequence; every latent position is generated
    conditioning: Literal["commit", "latent", "prefix"] = "commit"


def check_config(cfg: TransformerConfig) -> None:
    """One MagvitError line for any setting the model cannot be built with."""
    if cfg.codebook_size < 1:
        raise MagvitError(f"{cfg.name} transformer needs codebook_size >= 1; set it from the tokenizer "
                          f"(codebook_size = tokenizer.codebook_size), got {cfg.codebook_size}")
    if cfg.layers < 1 or cfg.heads < 1 or cfg.width % cfg.heads:
        raise MagvitError(f"{cfg.name} transformer needs layers >= 1 and width divisible by heads, "
                          f"got layers {cfg.layers}, width {cfg.width}, heads {cfg.heads}")
    if min(cfg.grid) < 1 or cfg.num_classes < 0 or cfg.mlp_ratio <= 0 or not 0 <= cfg.dropout < 1:
        raise MagvitError(f"{cfg.name} transformer needs grid >= 1, num_classes >= 0, mlp_ratio > 0 and "
                          f"dropout in [0, 1), got {list(cfg.grid)}, {cfg.num_classes}, {cfg.mlp_ratio}, "
                          f"{cfg.dropout}")
    k, size = cfg.sub_tokens, cfg.codebook_size
    bits = size.bit_length() - 1
    if k < 1 or (k > 1 and (size != 2**bits or bits % k)):
        raise MagvitError(f"sub_tokens={k} needs a codebook of 2^d codes with d divisible by {k} "
                          f"(e.g. LFQ 2^18 with sub_tokens=2), got codebook_size {size}")
    unknown = [t for t in cfg.tasks if t not in TASKS]
    if unknown or len(set(cfg.tasks)) != len(cfg.tasks):
        raise MagvitError(f"transformer tasks must be distinct names from: {', '.join(TASKS.names())}; "
                          f"got {list(cfg.tasks)}")


# ---------------------------------------------------------------------------------------------
# Vocabulary and ids


@dataclass(frozen=True)
class Vocab:
    """Token ids: codes [0, codebook_size), then MASK, one prompt per task, classes, UNCOND.

    Special id s sits in row k * V + (s - codebook_size) of the input table, after the k sub-token
    tables of V rows (for k = 1 the id is its own row).
    """

    codebook_size: int
    tasks: tuple[str, ...]
    num_classes: int

    @property
    def mask(self) -> int:
        return self.codebook_size

    def task(self, name: str) -> int:
        if name not in self.tasks:
            raise MagvitError(f"this model has no prompt token for task {name!r} (it has: {', '.join(self.tasks)})")
        return self.codebook_size + 1 + self.tasks.index(name)

    def cls(self, c: int | Tensor) -> int | Tensor:
        """Class label(s) in [0, num_classes) -> id(s); tensors keep their shape."""
        if self.num_classes == 0:
            raise MagvitError("this model is not class-conditional (num_classes = 0); use no class")
        if isinstance(c, Tensor):
            bad = c[(c < 0) | (c >= self.num_classes)]
            if bad.numel():
                raise MagvitError(f"class labels must be in [0, {self.num_classes}), got {int(bad[0])}")
        elif not 0 <= c < self.num_classes:
            raise MagvitError(f"class labels must be in [0, {self.num_classes}), got {c}")
        return c + self.codebook_size + 1 + len(self.tasks)

    @property
    def uncond(self) -> int:
        return self.codebook_size + 1 + len(self.tasks) + self.num_classes

    @property
    def num_special(self) -> int:
        return 2 + len(self.tasks) + self.num_classes

    @property
    def size(self) -> int:
        return self.codebook_size + self.num_special


def split_ids(ids: Tensor, k: int, bits_per: int) -> Tensor:
    """ids (...) -> sub-tokens (..., k); sub-token j = bits [j b, (j + 1) b) of the id."""
    if k == 1:
        return ids.unsqueeze(-1)
    shifts = torch.arange(k, device=ids.device) * bits_per
    return (ids.unsqueeze(-1) >> shifts) & (2**bits_per - 1)


def merge_ids(sub: Tensor, bits_per: int) -> Tensor:
    """sub-tokens (..., k) -> ids (...); the inverse of `split_ids`."""
    if sub.shape[-1] == 1:
        return sub[..., 0]
    shifts = torch.arange(sub.shape[-1], device=sub.device) * bits_per
    return (sub << shifts).sum(-1)


def _bits_of(logits: Tensor) -> int:
    return logits.shape[-1].bit_length() - 1  # V = 2^b whenever k > 1


def token_log_probs(logits: Tensor, ids: Tensor) -> Tensor:
    """logits (B, t, h, w, k, V), ids (B, t, h, w) -> log p(ids) (B, t, h, w), summed over sub-tokens."""
    sub = split_ids(ids, logits.shape[-2], _bits_of(logits))  # (B, t, h, w, k)
    log_p = F.log_softmax(logits.float(), dim=-1).gather(-1, sub.unsqueeze(-1)).squeeze(-1)
    return log_p.sum(-1)


def token_cross_entropy(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of each position, summed over its sub-tokens (fp32).

    logits (B, t, h, w, k, V), targets (B, t, h, w) code ids -> (B, t, h, w)."""
    k, v = logits.shape[-2:]
    sub = split_ids(targets, k, _bits_of(logits))  # (B, t, h, w, k)
    ce = F.cross_entropy(logits.float().reshape(-1, v), sub.reshape(-1), reduction="none",
                         label_smoothing=label_smoothing)
    return ce.view(sub.shape).sum(-1)


def masked_token_loss(logits: Tensor, targets: Tensor, weight: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """`token_cross_entropy` weighted, averaged over the positions with weight > 0.

    weight (B, t, h, w) float: e.g. 1 on masked positions only (MaskGIT's MVTM loss)."""
    ce = token_cross_entropy(logits, targets, label_smoothing)  # (B, t, h, w)
    count = (weight > 0).sum().clamp(min=1)
    return (ce * weight).sum() / count


# ---------------------------------------------------------------------------------------------
# Building blocks


class KVCache(Protocol):
    """One layer's keys and values so far, in autoregressive decoding (magvit.autoregressive.LayerCache)."""

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new keys/values (B, heads, L, d); return all of them so far (B, heads, past + L, d)."""
        ...


class Attention(nn.Module):
    """Multi-head self-attention through SDPA, with a `KVCache` in autoregressive decoding."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, causal: bool = False, cache: KVCache | None = None) -> Tensor:
        """x (B, L, C) -> (B, L, C)."""
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, heads, past + L, d)
        # a causal mask is needed only when queries and keys are the same sequence (a cache is filled
        # by one multi-token prefill, then one token at a time, which sees everything before it)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=causal and q.shape[2] > 1
        )
        return self.proj(rearrange(y, "b h l d -> b l (h d)"))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = Attention(width, heads, dropout)
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, causal: bool = False, cache: KVCache | None = None) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), causal, cache))
        return x + self.drop(self.fc2(self.drop(F.gelu(self.fc1(self.norm2(x))))))


class GridPosition(nn.Module):
    """Learned positions: `prefix` slots, then t, h, w tables summed over the (t, h, w) grid."""

    def __init__(self, grid: tuple[int, int, int], prefix: int, width: int):
        super().__init__()
        self.grid = tuple(grid)
        self.prefix = nn.Parameter(torch.zeros(prefix, width))
        self.t, self.h, self.w = (nn.Parameter(torch.zeros(n, width)) for n in grid)

    def forward(self, t: int, h: int, w: int) -> Tensor:
        """-> (prefix + t h w, C)."""
        if t > self.grid[0] or h > self.grid[1] or w > self.grid[2]:
            raise MagvitError(f"token grid {(t, h, w)} is larger than the model's position grid {self.grid}; "
                              "build the transformer with a larger `grid`")
        pos = self.t[:t, None, None] + self.h[None, :h, None] + self.w[None, None, :w]  # (t, h, w, C)
        return torch.cat([self.prefix, rearrange(pos, "t h w c -> (t h w) c")])


class TransformerBase(nn.Module):
    """Embeddings, blocks and the head, shared by the masked and the autoregressive model.

    Subclasses set `prefix` (number of special tokens before the latent tokens) and `causal`.
    """

    prefix: int = 2
    causal: bool = False

    def __init__(self, config: TransformerConfig):
        super().__init__()
        check_config(config)
        self.config = config
        self.vocab = Vocab(config.codebook_size, tuple(config.tasks), config.num_classes)
        k, size, c = config.sub_tokens, config.codebook_size, config.width
        self.sub_tokens = k
        self.bits_per = (size.bit_length() - 1) // k if k > 1 else 0
        self.sub_vocab = 2**self.bits_per if k > 1 else size  # V: classes per head
        # rows: k sub-token tables of V rows, then the specials (MASK, prompts, classes, UNCOND)
        self.embed = nn.Embedding(k * self.sub_vocab + self.vocab.num_special, c)
        self.pos = GridPosition(config.grid, self.prefix, c)
        # prefix conditioning: condition tokens carry their latent position plus this segment vector
        self.prefix_segment = nn.Parameter(torch.zeros(c)) if config.conditioning == "prefix" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(c, config.heads, config.mlp_ratio, config.dropout) for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(c)
        # MaskGIT head: dense -> GELU -> LayerNorm, then logits against the code embeddings + bias
        self.head_fc, self.head_norm = nn.Linear(c, c), nn.LayerNorm(c)
        self.head_bias = nn.Parameter(torch.zeros(k * self.sub_vocab))
        self.head_weight = nn.Parameter(torch.zeros(k * self.sub_vocab, c)) if k > 1 else None
        self.checkpointing = False
        self.init_weights()

    def init_weights(self) -> None:
        """Truncated normal (std 0.02) for every weight and table, zero biases, unit LayerNorms;
        residual output projections scaled by 1 / sqrt(2 layers) (GPT-2), so the stack starts near
        the identity."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for table in (self.embed.weight, self.pos.prefix, self.pos.t, self.pos.h, self.pos.w):
            nn.init.trunc_normal_(table, std=0.02)
        if self.prefix_segment is not None:
            nn.init.trunc_normal_(self.prefix_segment, std=0.02)
        if self.head_weight is not None:
            nn.init.trunc_normal_(self.head_weight, std=0.02)
        nn.init.zeros_(self.head_bias)
        for block in self.blocks:
            for proj in (block.attn.proj, block.fc2):
                nn.init.trunc_normal_(proj.weight, std=0.02 / math.sqrt(2 * self.config.layers))

    # -- pieces -----------------------------------------------------------------------------------

    def embed_ids(self, ids: Tensor) -> Tensor:
        """ids (...) of codes or special ids -> (..., C): sum of sub-embeddings, or the special's row."""
        size, k, v = self.config.codebook_size, self.sub_tokens, self.sub_vocab
        special = ids >= size
        rows = split_ids(ids.clamp(max=size - 1), k, self.bits_per) + torch.arange(k, device=ids.device) * v
        codes = self.embed(rows).sum(-2)  # (..., C)
        specials = self.embed((ids - size).clamp(min=0) + k * v)
        return torch.where(special.unsqueeze(-1), specials, codes)

    def run_blocks(self, x: Tensor, caches: list[KVCache] | None = None) -> Tensor:
        """x (B, L, C) -> normalised features (B, L, C)."""
        for i, block in enumerate(self.blocks):
            x = run_block(block, x, self.causal, None if caches is None else caches[i],
                          checkpointing=self.checkpointing)
        return self.norm(x)

    def checkpoint_activations(self, enabled: bool = True) -> None:
        """Activation checkpointing per block (`loop.checkpointing`): training keeps each block's input
        only and recomputes the block in the backward pass."""
        self.checkpointing = enabled

    def head(self, x: Tensor) -> Tensor:
        """features (B, L, C) -> logits (B, L, k, V) float32."""
        x = self.head_norm(F.gelu(self.head_fc(x)))
        weight = self.embed.weight[: self.head_bias.shape[0]] if self.head_weight is None else self.head_weight
        logits = F.linear(x, weight, self.head_bias)
        return rearrange(logits.float(), "b l (k v) -> b l k v", k=self.sub_tokens)

    def sequence_flops(self, queries: int, past: int = 0, head_tokens: int | None = None) -> int:
        """Matmul FLOPs (2 per multiply-add) at batch 1 of running `queries` sequence positions that
        attend to `past` cached ones and to each other (causally for the autoregressive model), with
        the head on `head_tokens` positions (default: all of them). Softmax and norms are not counted."""
        c, layers = self.config.width, self.config.layers
        hidden = int(c * self.config.mlp_ratio)
        pairs = queries * past + (queries * (queries + 1) // 2 if self.causal else queries * queries)
        per_layer = 2 * queries * (4 * c * c + 2 * c * hidden) + 4 * pairs * c  # qkv + proj + MLP; QK^T + AV
        heads = queries if head_tokens is None else head_tokens
        return layers * per_layer + 2 * heads * (c * c + c * self.head_bias.shape[0])

    # -- release weights --------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `config.json` and `model.safetensors` into `directory`, each atomically."""
        return save_weights_folder(self, directory, FORMAT, VERSION)

    @classmethod
    def from_pretrained(cls, name: str | Path, device: str | torch.device = "cpu",
                        revision: str | None = None) -> TransformerBase:
        """Rebuild a transformer from a `save_pretrained` folder (or a Hub id `owner/name`); called on
        `MaskedTransformer` or `ARTransformer`, the folder must hold that kind. MagvitError if
        anything does not match."""
        directory = resolve_folder(name, revision)
        return load_weights_folder(directory, TRANSFORMERS, FORMAT, VERSION, "transformer", device, kind=cls)


@TRANSFORMERS.register("masked", TransformerConfig)
class MaskedTransformer(TransformerBase):
    """Bidirectional: [task][class | UNCOND][tokens] -> logits over codes at every latent position."""

    prefix, causal = 2, False

    def forward(self, tokens: Tensor, task: Tensor, cls: Tensor, prefix: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """tokens (B, t, h, w) codes or MASK, task (B,) prompt ids, cls (B,) class or UNCOND ids
        -> logits (B, t, h, w, k, V) float32. `prefix` (conditioning: prefix): condition tokens
        (B, P) and their flat latent positions (P,), placed between the prompts and the latent tokens."""
        if tokens.ndim != 4:
            raise MagvitError(f"the transformer takes tokens (B, t, h, w), got shape {tuple(tokens.shape)}")
        b, t, h, w = tokens.shape
        seq = torch.cat([task.view(b, 1), cls.view(b, 1), rearrange(tokens, "b t h w -> b (t h w)")], 1)
        x = self.embed_ids(seq) + self.pos(t, h, w)  # (B, 2 + N, C)
        if (prefix is not None) != (self.prefix_segment is not None):
            raise MagvitError(f"a transformer with conditioning '{self.config.conditioning}' "
                              f"{'needs' if prefix is None else 'takes no'} prefix condition tokens")
        skip = self.prefix
        if prefix is not None:
            ids, where = prefix  # (B, P), (P,)
            pos = self.pos(t, h, w)[self.prefix :][where]  # (P, C): the condition tokens' own positions
            cond = self.embed_ids(ids) + pos + self.prefix_segment  # (B, P, C)
            x = torch.cat([x[:, : self.prefix], cond, x[:, self.prefix :]], 1)  # (B, 2 + P + N, C)
            skip += ids.shape[1]
        logits = self.head(self.run_blocks(self.drop(x))[:, skip:])  # (B, N, k, V)
        return rearrange(logits, "b (t h w) k v -> b t h w k v", t=t, h=h, w=w)

    def flops_per_forward(self, num_tokens: int) -> int:
        """Matmul FLOPs of one forward at batch 1 over `num_tokens` latent tokens (plus the 2 prefix)."""
        return self.sequence_flops(num_tokens + self.prefix, head_tokens=num_tokens)


TransformerConfig.PRESETS = {
    # CPU tests and tiny runs
    "tiny": dict(layers=2, width=64, heads=4, mlp_ratio=4.0, grid=(5, 16, 16)),
    # MaskGIT ImageNet 256: 24 layers, 768 wide, MLP 3072, 16 heads (~174M with its heads)
    "maskgit": dict(layers=24, width=768, heads=16, mlp_ratio=4.0, grid=(1, 16, 16)),
    # MAGVIT-B (87M) and -L (306M); grid covers 4x16x16 (vq3d) and 5x16x16 (causal3d)
    "magvit_b": dict(layers=12, width=768, heads=12, mlp_ratio=4.0, grid=(5, 16, 16)),
    "magvit_l": dict(layers=24, width=1024, heads=16, mlp_ratio=4.0, grid=(5, 16, 16)),
}


def build_transformer(preset: str = "tiny", **overrides: object) -> TransformerBase:
    """`build_transformer("magvit_b", codebook_size=1024, num_classes=101)`; keys validated like a
    config. `name="autoregressive"` builds the autoregressive baseline of the same preset (registered
    by magvit.autoregressive, which defines it)."""
    name = overrides.pop("name", "masked")
    config = build_registered(TRANSFORMERS, {"name": name, "preset": preset, **overrides}, source="build_transformer")
    return TRANSFORMERS[config.name].build(config)
