"""The ONE decode loop: MaskGIT's iterative parallel decoding with MAGVIT's COMMIT condition.

MaskGIT section 3.2 (iterative decoding) and MAGVIT section 3.2 (COMMIT). Every task goes through
`decode`:

1. Start: positions outside the condition show [MASK]; condition positions show z~. COMMIT tasks
   (`cond.refine`) count condition positions as unknown, to be refined; image tasks with a user
   region fix the condition tokens from the start and decode only the region.
2. Step s of T: one forward pass (with guidance: cond and uncond batched in one forward,
   logits = c + w_s (c - u) = u + (1 + w_s)(c - u), so w = 0 is plain conditional decoding);
   sample every sub-token (temperature, top-k, top-p); confidence = the model's log-probability
   of the sample (summed over sub-tokens); fixed positions get +inf.
3. n = floor(U * gamma((s + 1) / T)) positions stay masked, U = the unknown count at the start,
   clamped to [1, U - 1] before the last step and 0 at it; rank by confidence + tau (1 - (s + 1) / T)
   * Gumbel (tau annealed linearly, never compounded) and re-mask the n lowest. Fixed tokens are
   never re-masked; a re-masked condition position shows z~ again.
4. After step T every position is fixed; the fixed tokens are returned (not a pre-re-mask sample).

All randomness comes from `generator`, so a seed gives the same samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from magvit.errors import MagvitError
from magvit.schedules import MASK_SCHEDULES, mask_ratio
from magvit.tasks import TASKS, Condition, prefix_tokens
from magvit.transformer import merge_ids

GUIDANCE_SCHEDULES = ("constant", "linear", "cosine")  # how the guidance weight ramps over the steps


@dataclass(frozen=True)
class DecodeConfig:
    steps: int = 12
    schedule: str = "cosine"  # a MASK_SCHEDULES name
    temperature: float = 1.0  # sampling temperature; 0 = greedy
    choice_temperature: float = 4.5  # tau of the Gumbel noise on the confidences
    top_k: int | None = None
    top_p: float | None = None
    guidance: float = 0.0  # classifier-free guidance weight w (0: none)
    guidance_schedule: Literal["constant", "linear", "cosine"] = "constant"
    paste_back: bool = False  # generate_video: put the given condition pixels back


def check_decode_config(cfg: DecodeConfig) -> None:
    if cfg.steps < 1:
        raise MagvitError(f"decoding needs steps >= 1, got {cfg.steps}")
    if cfg.schedule not in MASK_SCHEDULES:
        raise MagvitError(f"unknown mask schedule {cfg.schedule!r} (one of: {', '.join(MASK_SCHEDULES.names())})")
    if cfg.temperature < 0 or cfg.choice_temperature < 0:
        raise MagvitError(f"temperatures must be >= 0, got {cfg.temperature} and {cfg.choice_temperature}")
    if cfg.top_k is not None and cfg.top_k < 1:
        raise MagvitError(f"top_k must be >= 1, got {cfg.top_k}")
    if cfg.top_p is not None and not 0 < cfg.top_p <= 1:
        raise MagvitError(f"top_p must be in (0, 1], got {cfg.top_p}")
    if cfg.guidance_schedule not in GUIDANCE_SCHEDULES:
        raise MagvitError(f"guidance_schedule must be one of {', '.join(GUIDANCE_SCHEDULES)}, "
                          f"got {cfg.guidance_schedule!r}")


def guidance_at(cfg: DecodeConfig, step: int) -> float:
    """w_s: the guidance weight at step s, ramped over progress p = (s + 1) / T."""
    p = (step + 1) / cfg.steps
    ramp = {"constant": 1.0, "linear": p, "cosine": (1 - math.cos(math.pi * p)) / 2}[cfg.guidance_schedule]
    return cfg.guidance * ramp


def choice_temperature_at(cfg: DecodeConfig, step: int) -> float:
    """tau_s = tau (1 - (s + 1) / T): linear to 0 at the last step, from tau each time (not compounded)."""
    return cfg.choice_temperature * (1 - (step + 1) / cfg.steps)


# ---------------------------------------------------------------------------------------------
# Sampling


def _uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def gumbel(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    u = _uniform(shape, generator, device).clamp(1e-20, 1 - 1e-7)
    return -torch.log(-torch.log(u))


def filter_logits(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    """Set everything outside the top-k and outside the nucleus of mass top_p to -inf (last dim)."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # the mass before a token already reaches p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), -math.inf)
    return logits


def sample_sub_tokens(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None,
                      generator: torch.Generator) -> Tensor:
    """logits (..., k, V) -> sub-tokens (..., k) int64: each sub-token independently (Gumbel-max)."""
    if temperature == 0:
        return logits.argmax(-1)
    scaled = filter_logits(logits / temperature, top_k, top_p)
    return (scaled + gumbel(tuple(scaled.shape), generator, scaled.device)).argmax(-1)


# ---------------------------------------------------------------------------------------------
# The loop


def masked_after(unknown: Tensor, step: int, cfg: DecodeConfig, num_tokens: int) -> Tensor:
    """How many of the `unknown` (B,) positions are still masked after step `step` (B,) int64."""
    if step == cfg.steps - 1:
        return torch.zeros_like(unknown)
    gamma = float(mask_ratio(cfg.schedule, (step + 1) / cfg.steps, num_tokens))
    n = torch.floor(unknown.double() * gamma).long()
    return torch.minimum(n, unknown - 1).clamp(min=1).where(unknown > 0, 0)


def _class_ids(model: Any, task: str, classes: Tensor | None, batch: int, device: torch.device) -> Tensor:
    vocab = model.vocab
    if not TASKS.build(task).use_class:
        return torch.full((batch,), vocab.uncond, device=device)
    if classes is None:
        raise MagvitError(f"task {task} is class-conditional: give a class label per sample")
    classes = torch.as_tensor(classes, device=device).long().reshape(-1)
    if classes.numel() == 1:
        classes = classes.expand(batch)
    if classes.numel() != batch:
        raise MagvitError(f"got {classes.numel()} class labels for {batch} samples")
    return vocab.cls(classes)


def _condition(cond: Condition | None, shape: tuple[int, int, int], batch: int, device: torch.device):
    """-> z~ (B, N), condition positions (B, N) bool, refine flag."""
    n = math.prod(shape)
    if cond is None:
        return torch.zeros(batch, n, dtype=torch.long, device=device), torch.zeros(batch, n, dtype=torch.bool,
                                                                                    device=device), True
    if tuple(cond.tokens.shape[1:]) != tuple(shape) or cond.tokens.shape[0] not in (1, batch):
        raise MagvitError(f"the condition has tokens of shape {tuple(cond.tokens.shape)}, "
                          f"decoding wants ({batch}, {', '.join(map(str, shape))})")
    z = rearrange(cond.tokens.to(device), "b t h w -> b (t h w)").expand(batch, -1)
    where = rearrange(cond.latent_mask.to(device), "b t h w -> b (t h w)").expand(batch, -1)
    return z, where, cond.refine


def _logits(model: Any, inputs: Tensor, task_ids: Tensor, cls_ids: Tensor, weight: float,
            prefix: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """(B, t, h, w) -> guided logits (B, t, h, w, k, V); one forward of 2B samples when guided."""
    extra = () if prefix is None else (prefix,)
    if weight == 0:
        return model(inputs, task_ids, cls_ids, *extra)
    uncond = torch.full_like(cls_ids, model.vocab.uncond)
    if prefix is not None:
        extra = ((torch.cat([prefix[0], prefix[0]]), prefix[1]),)
    both = model(torch.cat([inputs, inputs]), torch.cat([task_ids, task_ids]), torch.cat([cls_ids, uncond]), *extra)
    c, u = both.chunk(2)
    return c + weight * (c - u)


@torch.no_grad()
def decode(model: Any, cond: Condition | None, task: str, classes: Tensor | None, shape: tuple[int, int, int],
           batch: int, cfg: DecodeConfig, generator: torch.Generator, trace: bool = False):
    """-> ids (B, t, h, w); with `trace`, also one dict per step: "masked" (B,) positions still masked
    after it, "scheduled" (B,) the schedule's count, "fixed" (B, t, h, w) bool, "ids" (B, t, h, w)
    with MASK where not fixed. The model runs in eval mode (restored afterwards)."""
    check_decode_config(cfg)
    spec = TASKS.build(task)
    if cfg.guidance != 0 and not spec.use_class:
        raise MagvitError(f"guidance needs a class-conditional task (cg, cfp, edit), got {task}")
    device = next(model.parameters()).device
    t, h, w = shape
    n = t * h * w
    mask = model.vocab.mask
    task_ids = torch.full((batch,), model.vocab.task(task), device=device)
    cls_ids = _class_ids(model, task, classes, batch, device)
    z_cond, is_cond, refine = _condition(cond, shape, batch, device)
    conditioning = getattr(model.config, "conditioning", "commit")
    prefix = None
    if conditioning == "prefix":  # z~ goes in as a prefix; every latent position is generated
        prefix = prefix_tokens(z_cond, is_cond)
        is_cond = torch.zeros_like(is_cond)
    elif conditioning == "latent":  # MaskGIT's latent masking: the condition stays as given
        refine = False

    fixed = is_cond.clone() if not refine else torch.zeros_like(is_cond)  # (B, N)
    ids = torch.where(fixed, z_cond, mask)  # fixed tokens, MASK elsewhere
    unknown = (~fixed).sum(1)  # (B,)
    steps = []
    was_training = model.training
    model.eval()
    try:
        for s in range(cfg.steps):
            inputs = torch.where(fixed | ~is_cond, ids, z_cond)  # unfixed condition positions show z~
            logits = _logits(model, inputs.view(batch, t, h, w), task_ids, cls_ids, guidance_at(cfg, s), prefix)
            logits = rearrange(logits, "b t h w k v -> b (t h w) k v")
            sub = sample_sub_tokens(logits, cfg.temperature, cfg.top_k, cfg.top_p, generator)  # (B, N, k)
            sampled = merge_ids(sub, model.bits_per)  # (B, N)
            confidence = F.log_softmax(logits, -1).gather(-1, sub.unsqueeze(-1)).squeeze(-1).sum(-1)  # (B, N)
            score = confidence + choice_temperature_at(cfg, s) * gumbel((batch, n), generator, device)
            score = score.masked_fill(fixed, math.inf)
            still = masked_after(unknown, s, cfg, n)  # (B,)
            rank = score.argsort(dim=1, stable=True).argsort(dim=1)
            newly = ~fixed & (rank >= still[:, None])
            ids = torch.where(newly, sampled, ids)
            fixed = fixed | newly
            if trace:
                steps.append({"masked": (~fixed).sum(1), "scheduled": still, "fixed": fixed.view(batch, t, h, w),
                              "ids": ids.view(batch, t, h, w)})
    finally:
        model.train(was_training)
    out = ids.view(batch, t, h, w)
    return (out, steps) if trace else out


def decode_flops(model: Any, num_tokens: int, cfg: DecodeConfig, batch: int = 1) -> int:
    """Matmul FLOPs of one `decode` call: T forwards over the whole grid (2 samples each when guided)."""
    guided = sum(guidance_at(cfg, s) != 0 for s in range(cfg.steps))
    return batch * model.flops_per_forward(num_tokens) * (cfg.steps + guided)


@torch.no_grad()
def generate_video(model: Any, tokenizer: Any, task: str, cfg: DecodeConfig, generator: torch.Generator, *,
                   cond: Condition | None = None, classes: Tensor | None = None, batch: int | None = None,
                   video_shape: tuple[int, int, int] | None = None) -> Tensor:
    """decode -> tokenizer.decode -> video (B, 3, T, H, W) in [-1, 1].

    With `cond` the grid and batch come from it; without, give `video_shape` (T, H, W) and `batch`
    (default: the number of classes, else 1). `cfg.paste_back` puts the given condition pixels back.
    """
    if cond is not None:
        batch, shape = cond.tokens.shape[0], tuple(cond.tokens.shape[1:])
    else:
        if video_shape is None:
            raise MagvitError(f"task {task} without a condition needs video_shape (frames, height, width)")
        shape = tokenizer.token_shape(*video_shape)
        batch = batch or (int(torch.as_tensor(classes).numel()) if classes is not None else 1)
    ids = decode(model, cond, task, classes, shape, batch, cfg, generator)
    video = tokenizer.decode(ids).clamp(-1, 1)
    if cfg.paste_back and cond is not None:
        video = torch.where(cond.pixel_mask.to(video.device), cond.pixels.to(video.device), video)
    return video
