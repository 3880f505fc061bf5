"""The ONE decode loop: MaskGIT's iterative parallel decoding with MAGVIT's COMMIT condition.

MaskGIT section 3.2 (iterative decoding) and MAGVIT section 3.2 (COMMIT). Every task goes through
`decode`:

1. Start: positions outside the condition show [MASK]; condition positions show z~. COMMIT tasks
   (`cond.refine`) count condition positions as unknown, to be refined; image tasks with a user
   region fix the condition tokens from the start and decode only the region. The schedule is
   fixed here too: n_s = floor(U * gamma((s + 1) / T)) positions stay masked after step s, U = the
   unknown count of each sample, clamped to [1, U - 1] before the last step and 0 at it: one
   (T, B) table of counts.
2. Step s of T (`decode_step`): one forward pass (with guidance: cond and uncond batched in one
   forward, logits = c + w_s (c - u) = u + (1 + w_s)(c - u), so w = 0 is plain conditional
   decoding); sample every sub-token (temperature, top-k, top-p); confidence = the model's
   log-probability of the sample (summed over sub-tokens); fixed positions get +inf.
3. Rank by confidence + tau (1 - (s + 1) / T) * Gumbel (tau annealed linearly, never compounded)
   and keep the n_s lowest masked. Fixed tokens are never re-masked; a re-masked condition
   position shows z~ again.
4. After step T every position is fixed; the fixed tokens are returned (not a pre-re-mask sample).

The step has static shapes: it maps fixed-size tensors (ids, fixed flags, the step's count, weight
and tau, and its uniform noise) to fixed-size tensors, with no host sync and no branch on tensor
values (ranks against the count replace variable-size index sets). The noise is drawn outside the
step from `generator`, in the same order every step (the sub-token noise, then the ranking noise),
so a seed gives the same samples on every path. That makes two fast paths possible
(`DecodeConfig.compile`, `DecodeConfig.cuda_graph`): torch.compile of the step, and, on CUDA, the
step captured once as a CUDA graph and replayed T times (kernel launches cost nothing on replay).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from magvit.config import option
from magvit.errors import MagvitError
from magvit.schedules import MASK_SCHEDULES, mask_ratio
from magvit.tasks import TASKS, Condition, prefix_tokens
from magvit.tasks.base import TokenGrid
from magvit.transformer import MaskedTransformer, merge_ids

GUIDANCE_SCHEDULES = ("constant", "linear", "cosine")  # how the guidance weight ramps over the steps


@dataclass(frozen=True)
class DecodeConfig:
    steps: int = option(12, "decoding steps")
    schedule: str = option("cosine", "mask schedule", names="magvit.schedules:MASK_SCHEDULES")
    temperature: float = option(1.0, "sampling temperature; 0 = the most likely tokens")
    choice_temperature: float = option(4.5, "Gumbel noise on the confidences (tau)")
    top_k: int | None = option(None, "keep the k most likely codes per token (default: all)")
    top_p: float | None = option(None, "keep the codes within probability mass p per token (default: all)")
    guidance: float = option(0.0, "classifier-free guidance weight w (0: none; a task without classes: 0)",
                             flags=("--guidance", "--cfg"))
    guidance_schedule: Literal["constant", "linear", "cosine"] = option(
        "constant", "ramp of the guidance weight over the steps")
    paste_back: bool = option(True, "keep the pixels you gave (the given frames, the kept region) in the result; "
                              "--no-paste-back shows the raw decode")
    compile: bool = option(False, "torch.compile the step (one warning and eager where compiling fails)", cli=False)
    cuda_graph: bool | None = option(None, "replay each decode step as a CUDA graph (default: on CUDA when the "
                                     "shapes allow)")


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


def masked_counts(unknown: Tensor, cfg: DecodeConfig, num_tokens: int) -> Tensor:
    """How many of the `unknown` (B,) positions are still masked after each step: (T, B) int64.

    MaskGIT section 3.2: floor(U gamma((s + 1) / T)), clamped to [1, U - 1] before the last step,
    0 after it. gamma is evaluated one step at a time in float64, as a scalar: a vectorised cosine
    may differ in the last bit, which moves floor() where U gamma is an integer.
    """
    gammas = [float(mask_ratio(cfg.schedule, (s + 1) / cfg.steps, num_tokens)) for s in range(cfg.steps)]
    gamma = torch.tensor(gammas, dtype=torch.float64, device=unknown.device)  # (T,)
    n = torch.floor(unknown.double() * gamma[:, None]).long()  # (T, B)
    n = torch.minimum(n, unknown - 1).clamp(min=1).where(unknown > 0, 0)
    return torch.cat([n[:-1], torch.zeros_like(n[-1:])])


# ---------------------------------------------------------------------------------------------
# Sampling


def _uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def gumbel_from_uniform(u: Tensor) -> Tensor:
    """U(0, 1) noise -> Gumbel(0, 1) noise, same shape."""
    return -torch.log(-torch.log(u.clamp(1e-20, 1 - 1e-7)))


def gumbel(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    return gumbel_from_uniform(_uniform(shape, generator, device))


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


def sample_with_noise(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None,
                      uniform: Tensor | None) -> Tensor:
    """logits (..., k, V) -> sub-tokens (..., k) int64 by Gumbel-max over `uniform` noise of the same
    shape as `logits` (None, and unused, when temperature = 0: greedy)."""
    if temperature == 0:
        return logits.argmax(-1)
    scaled = filter_logits(logits / temperature, top_k, top_p)
    return (scaled + gumbel_from_uniform(uniform)).argmax(-1)


def sample_sub_tokens(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None,
                      generator: torch.Generator) -> Tensor:
    """logits (..., k, V) -> sub-tokens (..., k) int64: each sub-token independently (Gumbel-max)."""
    uniform = None if temperature == 0 else _uniform(tuple(logits.shape), generator, logits.device)
    return sample_with_noise(logits, temperature, top_k, top_p, uniform)


# ---------------------------------------------------------------------------------------------
# One step


def _class_ids(model: MaskedTransformer, task: str, classes: Tensor | None, batch: int, device: torch.device) -> Tensor:
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


def _logits(model: MaskedTransformer, inputs: Tensor, task_ids: Tensor, cls_ids: Tensor, weight: float | Tensor | None,
            prefix: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """(B, t, h, w) -> logits (B, t, h, w, k, V); guided (weight not None): one forward of 2B samples,
    cond then uncond, combined as c + w (c - u)."""
    extra = () if prefix is None else (prefix,)
    if weight is None:
        return model(inputs, task_ids, cls_ids, *extra)
    uncond = torch.full_like(cls_ids, model.vocab.uncond)
    if prefix is not None:
        extra = ((torch.cat([prefix[0], prefix[0]]), prefix[1]),)
    both = model(torch.cat([inputs, inputs]), torch.cat([task_ids, task_ids]), torch.cat([cls_ids, uncond]), *extra)
    c, u = both.chunk(2)
    return c + weight * (c - u)


def decode_step(model: MaskedTransformer, cfg: DecodeConfig, shape: tuple[int, int, int], guided: bool,
                ids: Tensor, fixed: Tensor, z_cond: Tensor, is_cond: Tensor, task_ids: Tensor, cls_ids: Tensor,
                prefix_ids: Tensor | None, prefix_positions: Tensor | None, still: Tensor, weight: Tensor,
                tau: Tensor, u_tokens: Tensor | None, u_choice: Tensor) -> tuple[Tensor, Tensor]:
    """One decoding step on fixed-shape tensors, without a host sync -> new (ids, fixed) (B, N).

    ids (B, N) fixed tokens or MASK, fixed (B, N) bool, z_cond / is_cond (B, N) the condition,
    task_ids / cls_ids (B,), prefix (B, P) and (P,) or None, still (B,) positions left masked after
    this step, weight / tau () the step's guidance weight and Gumbel temperature, u_tokens
    (B, N, k, V) and u_choice (B, N) uniform noise (u_tokens None when temperature = 0).
    """
    prefix = None if prefix_ids is None else (prefix_ids, prefix_positions)
    inputs = torch.where(fixed | ~is_cond, ids, z_cond)  # unfixed condition positions show z~
    logits = _logits(model, inputs.view(-1, *shape), task_ids, cls_ids, weight if guided else None, prefix)
    logits = rearrange(logits, "b t h w k v -> b (t h w) k v")
    sub = sample_with_noise(logits, cfg.temperature, cfg.top_k, cfg.top_p, u_tokens)  # (B, N, k)
    sampled = merge_ids(sub, model.bits_per)  # (B, N)
    confidence = F.log_softmax(logits, -1).gather(-1, sub.unsqueeze(-1)).squeeze(-1).sum(-1)  # (B, N)
    score = (confidence + tau * gumbel_from_uniform(u_choice)).masked_fill(fixed, math.inf)
    # the `still` lowest scores stay masked: ranks (stable, as a sort would) instead of a
    # data-dependent index set keep every shape fixed
    rank = score.argsort(dim=1, stable=True).argsort(dim=1)  # (B, N)
    newly = ~fixed & (rank >= still[:, None])
    return torch.where(newly, sampled, ids), fixed | newly


# ---------------------------------------------------------------------------------------------
# Fast paths: torch.compile and CUDA graphs


@functools.cache
def compiled_decode_step() -> Callable[..., tuple[Tensor, Tensor]]:
    """torch.compile(decode_step), built once: dynamo keeps one compiled graph per model, settings
    and shapes (dynamic=False: a new batch size compiles again rather than going symbolic)."""
    return torch.compile(decode_step, dynamic=False)


class CompiledStep:
    """torch.compile(decode_step) with the step's settings bound; where compiling or running the
    compiled step fails (no backend, no compiler), one warning line and eager from then on."""

    def __init__(self, eager: functools.partial):
        self.eager = eager
        self.failed = False

    def __call__(self, *tensors: Tensor | None) -> tuple[Tensor, Tensor]:
        if not self.failed:
            try:
                return compiled_decode_step()(*self.eager.args, *tensors)
            except MagvitError:
                raise
            except Exception as e:  # a missing backend or compiler shows up at the first call
                self.failed = True
                reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
                warnings.warn(f"decode: torch.compile failed ({type(e).__name__}: {reason[:200]}); decoding eagerly",
                              stacklevel=3)
        return self.eager(*tensors)


class GraphedStep:
    """One step captured as a CUDA graph over static input buffers: a call copies its tensors into
    the buffers, replays the graph (which rewrites the static outputs) and returns copies of them.

    The step draws no random numbers (its noise is an input), so the graph needs no graph-safe
    generator. Capture runs under autocast with its cache off: cached casts made before the capture
    would be freed when the caller's autocast exits while the graph still reads them (so under
    autocast the graph casts the weights at every replay). The graph's memory pool (the step's
    intermediates: logits and noise of B x N x k x V) stays with the model until the next capture.
    """

    def __init__(self, step: Callable[..., tuple[Tensor, Tensor]], example: list[Tensor | None],
                 device: torch.device):
        self.inputs = [None if x is None else x.clone() for x in example]
        self.outputs = self.capture(step, device)

    def capture(self, step: Callable[..., tuple[Tensor, Tensor]], device: torch.device) -> tuple[Tensor, Tensor]:
        amp = dict(device_type="cuda", enabled=torch.is_autocast_enabled("cuda"),
                   dtype=torch.get_autocast_dtype("cuda"), cache_enabled=False)
        with torch.cuda.device(device), torch.autocast(**amp):
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside the capture: cuBLAS workspaces, compiling
                step(*self.inputs)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            # thread_local: other threads (a DataLoader's pin-memory thread) may keep using CUDA
            with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
                return step(*self.inputs)

    def replay(self) -> None:
        self.graph.replay()

    def __call__(self, *tensors: Tensor | None) -> tuple[Tensor, Tensor]:
        for buffer, x in zip(self.inputs, tensors):
            if buffer is not None:
                buffer.copy_(x)
        self.replay()
        return tuple(out.clone() for out in self.outputs)


# one captured step per model, reused by the next call with the same settings, shapes and weights
_GRAPHS: weakref.WeakKeyDictionary[Any, tuple[tuple, GraphedStep]] = weakref.WeakKeyDictionary()


def use_cuda_graph(cfg: DecodeConfig, device: torch.device) -> bool:
    """cuda_graph None: on CUDA yes, elsewhere no; True where there is no CUDA device: MagvitError."""
    if cfg.cuda_graph and device.type != "cuda":
        raise MagvitError(f"cuda_graph needs the model on a CUDA device, it is on {device.type} "
                          "(set cuda_graph to null or false)")
    return device.type == "cuda" if cfg.cuda_graph is None else cfg.cuda_graph


def step_function(model: MaskedTransformer, cfg: DecodeConfig, shape: tuple[int, int, int], guided: bool,
                  device: torch.device, graphed: bool,
                  example: list[Tensor | None]) -> Callable[..., tuple[Tensor, Tensor]]:
    """The step the loop calls: eager `decode_step`, compiled, and with `graphed` (CUDA) replayed
    from a graph captured on the `example` inputs."""
    eager = functools.partial(decode_step, model, cfg, shape, guided)
    step = CompiledStep(eager) if cfg.compile else eager
    if not graphed:
        return step
    key = (shape, guided, cfg.temperature, cfg.top_k, cfg.top_p, cfg.compile, device,
           torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"), torch.is_inference_mode_enabled(),
           tuple(None if x is None else (x.shape, x.dtype) for x in example),
           tuple(t.data_ptr() for t in (*model.parameters(), *model.buffers())))  # weights moved: capture again
    cached = _GRAPHS.get(model)
    if cached is not None and cached[0] == key:
        return cached[1]
    _GRAPHS.pop(model, None)  # one graph (and its memory pool) per model
    try:
        replay = GraphedStep(step, example, device)
    except RuntimeError as e:  # an operator that cannot be captured
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        warnings.warn(f"decode: CUDA graph capture failed ({reason[:200]}); decoding without it", stacklevel=3)
        return step
    _GRAPHS[model] = (key, replay)
    return replay


# ---------------------------------------------------------------------------------------------
# The loop


@torch.no_grad()
def decode(model: MaskedTransformer, cond: Condition | None, task: str, classes: Tensor | None,
           shape: tuple[int, int, int], batch: int, cfg: DecodeConfig, generator: torch.Generator, trace: bool = False,
           on_step: Callable[[int], None] | None = None):
    """-> ids (B, t, h, w); with `trace`, also one dict per step: "masked" (B,) positions still masked
    after it, "scheduled" (B,) the schedule's count, "fixed" (B, t, h, w) bool, "ids" (B, t, h, w)
    with MASK where not fixed. `on_step(s)` is called after step s (1 to T) is issued (on CUDA it may
    still be running: the call waits for nothing), for a progress bar. The model runs in eval mode
    (restored afterwards). Guidance applies to
    the class-conditional tasks (cg, cfp, edit) and is 0 for the others: a task without a class has no
    unconditional twin to guide away from, and one setting can serve a run of many tasks."""
    check_decode_config(cfg)
    if not TASKS.build(task).use_class:
        cfg = dataclasses.replace(cfg, guidance=0.0)
    device = next(model.parameters()).device
    graphed = use_cuda_graph(cfg, device)
    t, h, w = shape
    n = t * h * w
    mask = model.vocab.mask
    task_ids = torch.full((batch,), model.vocab.task(task), device=device)
    cls_ids = _class_ids(model, task, classes, batch, device)
    z_cond, is_cond, refine = _condition(cond, shape, batch, device)
    conditioning = getattr(model.config, "conditioning", "commit")
    prefix_ids = prefix_positions = None
    if conditioning == "prefix":  # z~ goes in as a prefix; every latent position is generated
        prefix_ids, prefix_positions = prefix_tokens(z_cond, is_cond)
        is_cond = torch.zeros_like(is_cond)
    elif conditioning == "latent":  # MaskGIT's latent masking: the condition stays as given
        refine = False

    fixed = is_cond.clone() if not refine else torch.zeros_like(is_cond)  # (B, N)
    ids = torch.where(fixed, z_cond, mask)  # fixed tokens, MASK elsewhere
    still = masked_counts((~fixed).sum(1), cfg, n)  # (T, B), known before the first step
    # every step's guidance weight and Gumbel temperature as tensors: a step's inputs, not constants
    weights = torch.tensor([guidance_at(cfg, s) for s in range(cfg.steps)], device=device)  # (T,)
    taus = torch.tensor([choice_temperature_at(cfg, s) for s in range(cfg.steps)], device=device)  # (T,)
    guided = cfg.guidance != 0  # w_s != 0 at every step then: each ramp is > 0 for s >= 0
    token_noise = (batch, n, model.sub_tokens, model.sub_vocab)  # the logits' shape (B, N, k, V)
    steps, step = [], None
    was_training = model.training
    model.eval()
    try:
        for s in range(cfg.steps):
            # the noise of this step, in a fixed order: sub-token sampling, then the ranking
            u_tokens = _uniform(token_noise, generator, device) if cfg.temperature > 0 else None
            u_choice = _uniform((batch, n), generator, device)
            tensors = [ids, fixed, z_cond, is_cond, task_ids, cls_ids, prefix_ids, prefix_positions, still[s],
                       weights[s], taus[s], u_tokens, u_choice]
            if step is None:
                step = step_function(model, cfg, shape, guided, device, graphed, tensors)
            ids, fixed = step(*tensors)
            if on_step is not None:
                on_step(s + 1)
            if trace:
                steps.append({"masked": (~fixed).sum(1), "scheduled": still[s], "fixed": fixed.view(batch, t, h, w),
                              "ids": ids.view(batch, t, h, w)})
    finally:
        model.train(was_training)
    out = ids.view(batch, t, h, w)
    return (out, steps) if trace else out


def decode_flops(model: MaskedTransformer, num_tokens: int, cfg: DecodeConfig, batch: int = 1) -> int:
    """Matmul FLOPs of one `decode` call: T forwards over the whole grid (2 samples each when guided)."""
    guided = sum(guidance_at(cfg, s) != 0 for s in range(cfg.steps))
    return batch * model.flops_per_forward(num_tokens) * (cfg.steps + guided)


@torch.no_grad()
def generate_video(model: MaskedTransformer, tokenizer: TokenGrid, task: str, cfg: DecodeConfig,
                   generator: torch.Generator, *,
                   cond: Condition | None = None, classes: Tensor | None = None, batch: int | None = None,
                   video_shape: tuple[int, int, int] | None = None,
                   on_step: Callable[[int], None] | None = None, return_ids: bool = False):
    """decode -> tokenizer.decode -> video (B, 3, T, H, W) in [-1, 1] (with `return_ids`, also the ids
    (B, t, h, w) it decoded).

    With `cond` the grid and batch come from it; without, give `video_shape` (T, H, W) and `batch`
    (default: the number of classes, else 1). `cfg.paste_back` puts the given condition pixels back.
    `on_step` is `decode`'s.
    """
    if cond is not None:
        batch, shape = cond.tokens.shape[0], tuple(cond.tokens.shape[1:])
    else:
        if video_shape is None:
            raise MagvitError(f"task {task} without a condition needs video_shape (frames, height, width)")
        shape = tokenizer.token_shape(*video_shape)
        batch = batch or (int(torch.as_tensor(classes).numel()) if classes is not None else 1)
    ids = decode(model, cond, task, classes, shape, batch, cfg, generator, on_step=on_step)
    video = tokenizer.decode(ids).clamp(-1, 1)
    if cfg.paste_back and cond is not None:
        video = torch.where(cond.pixel_mask.to(video.device), cond.pixels.to(video.device), video)
    return (video, ids) if return_ids else video
