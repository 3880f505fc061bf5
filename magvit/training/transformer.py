"""`magvit train`: the masked transformer (MaskGIT MVTM + MAGVIT COMMIT, multi-task) with accelerate.

The recipe: setup (config, run folder, tokens, model, optimizer, resume) -> loop (draw a task,
COMMIT-mask the tokens, mask + refine + reconstruction losses, EMA, log, validate + preview,
checkpoint) -> write the release folder `<run_dir>/model/` that the sampling commands load.

Tokens come from a frozen tokenizer on the fly (`tokenizer: DIR`) or from a cache written by
`magvit extract-tokens` (`tokens: DIR`); both give the same batches (see `magvit.training.tokens`).
Every random choice of a step (its task, its mask, its class dropout) comes from a generator seeded
by (seed, step, micro-batch, process), so `--resume` continues exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from magvit.config import registry_field, save_config, to_dict
from magvit.data import DATASETS, build_dataloader
from magvit.errors import MagvitError
from magvit.media import write_video
from magvit.release import ModelInfo, write_model_folder
from magvit.runtime import compile_forward
from magvit.schedules import MASK_SCHEDULES
from magvit.tasks import TASKS, TaskOptions, commit_inputs, prefix_tokens
from magvit.tasks.base import KIND_GIVEN, KIND_MASK, KIND_ORIGINAL, KIND_REFINE
from magvit.training.common import (
    LoopConfig,
    NonFiniteGuard,
    OptimConfig,
    apply_gradients,
    build_optimizer,
    check_run_dir,
    deepspeed_engine,
    log_preview,
    make_accelerator,
    make_ema,
    prepare_loader,
    start_trackers,
    step_generator,
)
from magvit.training.loop import Batch, Terms, TrainingLoop, restore
from magvit.training.sharding import Sharding
from magvit.training.tokens import TokenSource, check_tokenizer, open_token_source
from magvit.transformer import TRANSFORMERS, TransformerBase, masked_token_loss, split_ids, token_cross_entropy

if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch.utils.data import DataLoader


@dataclass(frozen=True)
class TransformerLossConfig:
    """MAGVIT's COMMIT loss (section 3.2): cross-entropy on every latent position, each position
    weighted by its kind: masked ([MASK] input), refine (condition token input) or reconstruction
    (original input).

    `normalize: positions` (MAGVIT's, the default): the weighted sum over all positions divided by
    the number of positions, so every position counts alike. `per_kind`: each kind's mean, then the
    weighted sum of the three means; a masked token then weighs (N - M - R) / M times a
    reconstruction token (about 9x at 10% masked). MaskGIT (section 3.2) is `normalize: per_kind`
    with `recon_weight: 0` (and nothing to refine): the mean cross-entropy over masked positions.
    """

    mask_weight: float = 1.0
    refine_weight: float = 1.0
    recon_weight: float = 1.0
    normalize: Literal["positions", "per_kind"] = "positions"  # see above
    label_smoothing: float = 0.1  # MaskGIT
    schedule: str = "cosine"  # training mask ratio gamma(r), r ~ U[0, 1)
    class_dropout: float = 0.1  # labels replaced by UNCOND, for classifier-free guidance


@dataclass(frozen=True)
class PreviewConfig:
    """Sample previews written at every validation: `num` samples per task, decoded in `steps`."""

    num: int = 4
    steps: int = 12
    guidance: float = 0.0
    tasks: tuple[str, ...] = ()  # default: every trained task


@dataclass(frozen=True, kw_only=True)
class TransformerTrainConfig:
    """`kind: train_transformer`."""

    kind: str = "train_transformer"
    run_dir: str = "runs/transformer"
    tokenizer: str | None = None  # a tokenizer release folder (train-tokenizer's <run_dir>/tokenizer)
    tokens: str | None = None  # a token cache from `magvit extract-tokens` (the fast path)
    transformer: object = registry_field(TRANSFORMERS)
    data: object | None = registry_field(DATASETS, default=None)
    val_data: object | None = registry_field(DATASETS, default=None)
    tasks: Mapping[str, float] = field(default_factory=lambda: {"cg": 1.0})  # task -> sampling weight
    task_options: Mapping[str, TaskOptions] = field(default_factory=dict)  # e.g. {fp: {cond_frames: 5}}
    num_classes: int | None = None  # default: the dataset's
    condition_rule: Literal["any", "all"] = "any"  # MAGVIT | only fully given blocks condition (magvit.tasks)
    loss: TransformerLossConfig = TransformerLossConfig()
    optim: OptimConfig = OptimConfig(lr=1e-4, betas=(0.9, 0.96), weight_decay=0.045, warmup_steps=100)
    loop: LoopConfig = LoopConfig()
    preview: PreviewConfig = PreviewConfig()
    copy_tokenizer: bool = True  # the release folder holds a copy of the tokenizer (else its path)
    fps: float = 8.0


def check_config(cfg: TransformerTrainConfig) -> None:
    """Cross-field checks the schema cannot express; one line each."""
    if cfg.tokens is None and (cfg.tokenizer is None or cfg.data is None):
        raise MagvitError("set `tokenizer` and `data` (tokenize on the fly) or `tokens` (an extract-tokens cache)")
    if not cfg.tasks:
        raise MagvitError("`tasks` is empty; name at least one task, e.g. tasks: {cg: 1.0}")
    for name, weight in cfg.tasks.items():
        TASKS[name]  # one clear line for an unknown task
        if weight < 0:
            raise MagvitError(f"tasks.{name}: a sampling weight must be >= 0, got {weight}")
    if sum(cfg.tasks.values()) <= 0:
        raise MagvitError("`tasks`: the weights sum to 0; give at least one task a positive weight")
    for name in [*cfg.task_options, *cfg.preview.tasks]:
        if name not in cfg.tasks:
            raise MagvitError(f"task '{name}' has options or previews but is not trained; add it to `tasks`")
    MASK_SCHEDULES[cfg.loss.schedule]
    weights = (cfg.loss.mask_weight, cfg.loss.refine_weight, cfg.loss.recon_weight)
    if min(weights) < 0 or cfg.loss.mask_weight <= 0:
        raise MagvitError(f"loss weights must be >= 0 and mask_weight > 0, got mask/refine/recon {weights}")
    if not 0 <= cfg.loss.class_dropout <= 1:
        raise MagvitError(f"loss.class_dropout must lie in [0, 1], got {cfg.loss.class_dropout}")


def build_model(cfg: TransformerTrainConfig, source: TokenSource) -> TransformerBase:
    """The transformer sized for the tokens: codebook, classes and grid come from the data."""
    tcfg = cfg.transformer
    if tcfg.codebook_size not in (0, source.codebook_size):
        raise MagvitError(f"transformer.codebook_size {tcfg.codebook_size} differs from the tokenizer's "
                          f"{source.codebook_size}; leave it unset")
    num_classes = cfg.num_classes if cfg.num_classes is not None else source.num_classes
    needs_class = [t for t in cfg.tasks if TASKS.build(t).use_class]
    if needs_class and num_classes == 0:
        raise MagvitError(f"task(s) {', '.join(needs_class)} need class labels, and the data has none; "
                          "train uncond / fp / ... instead, or set num_classes")
    tcfg = dataclasses.replace(tcfg, codebook_size=source.codebook_size, num_classes=num_classes,
                               grid=tuple(source.grid))
    return TRANSFORMERS[tcfg.name].build(tcfg)


def draw_task(names: list[str], weights: torch.Tensor, seed: int, step: int) -> str:
    """One task per step, drawn from the weighted list; the same on every process."""
    gen = step_generator(seed, step, 1 << 20)
    return names[int(torch.multinomial(weights, 1, generator=gen))]


def class_ids(model: TransformerBase, labels: torch.Tensor, use_class: bool, dropout: float,
              gen: torch.Generator) -> torch.Tensor:
    """(B,) class prompt ids: the label's class token, or UNCOND (no label, a task without class,
    a model without classes, or dropped with probability `dropout` for classifier-free guidance)."""
    vocab = model.vocab
    uncond = torch.full_like(labels, vocab.uncond)
    if not use_class or model.config.num_classes == 0:
        return uncond
    keep = labels >= 0
    if dropout > 0:
        keep &= torch.rand(labels.shape, generator=gen, device=gen.device).to(labels.device) >= dropout
    return torch.where(keep, vocab.cls(labels.clamp(min=0)), uncond)


def commit_loss(logits: torch.Tensor, tokens: torch.Tensor, kinds: torch.Tensor,
                loss: TransformerLossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """COMMIT's loss and its terms. logits (B, t, h, w, k, V), tokens and kinds (B, t, h, w).

    Returns the loss to minimise (normalised as `loss.normalize` says) and, for the logs,
    {"mask", "refine", "recon"}: the mean CE over the positions of each kind (absent kinds give 0),
    and {"share_mask", ...}: the share of positions of each kind."""
    ce = token_cross_entropy(logits, tokens, loss.label_smoothing)  # (B, t, h, w)
    weights = {"mask": loss.mask_weight, "refine": loss.refine_weight, "recon": loss.recon_weight}
    terms, total = {}, ce.new_zeros(())
    positions = (kinds != KIND_GIVEN).sum().clamp(min=1)  # latent masking's given condition has no loss
    for name, kind in (("mask", KIND_MASK), ("refine", KIND_REFINE), ("recon", KIND_ORIGINAL)):
        where = kinds == kind  # (B, t, h, w)
        count = where.sum()
        summed = (ce * where).sum()
        terms[name] = summed / count.clamp(min=1)
        terms[f"share_{name}"] = count.float() / where.numel()
        if weights[name]:
            part = summed / positions if loss.normalize == "positions" else terms[name]
            total = total + weights[name] * part
    return total, terms


def train_transformer(cfg: TransformerTrainConfig, resume: bool = False, quiet: bool = False) -> dict[str, float]:
    """Run the recipe; returns the last validation metrics."""
    # ---------------------------------------------------------------- setup
    from accelerate.utils import set_seed

    check_config(cfg)
    if cfg.tokens is None:
        check_tokenizer(cfg.tokenizer)  # a tokenizer not trained yet: one line naming the command that makes it
    loop = cfg.loop
    run_dir = Path(cfg.run_dir)
    accelerator = make_accelerator(loop.mixed_precision, loop.grad_accum, loop.log_with, run_dir)
    main, device = accelerator.is_main_process, accelerator.device
    sharding = Sharding.of(accelerator)  # None: one process or DDP
    previous = check_run_dir(run_dir, resume, main, quiet)
    set_seed(loop.seed)
    if main:
        save_config(cfg, run_dir)

    source = open_token_source(cfg, device)
    model = build_model(cfg, source)
    ema = make_ema(model) if loop.ema_decay else None
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    loader = build_dataloader(source.train, loop.batch_size, shuffle=True, seed=loop.seed,
                              num_workers=loop.num_workers)
    if len(loader) == 0:
        raise MagvitError(f"the training set has {len(source.train)} samples, fewer than one batch of "
                          f"{loop.batch_size}")
    modules = {"transformer": model, **({"ema": ema} if ema else {})}
    # a sharded engine loads the optimizer state once prepare has shared it out (below)
    start = restore(run_dir, previous, modules, {} if sharding else {"opt": optimizer}, accelerator, quiet)

    model, optimizer, loader, raw = prepare_model(model, optimizer, ema, loader, cfg, accelerator, sharding, previous)
    names = list(cfg.tasks)
    start_trackers(accelerator, cfg, run_dir, start.step)
    step_fn = TransformerStep(cfg, source, model, raw, optimizer, accelerator)

    # ---------------------------------------------------------------- the loop (training.loop)
    def shown_model():
        """The weights validation and the release see: the EMA's (else the model's); a plain copy under
        a sharded engine."""
        return sharding.eval_copy if sharding else ema or raw

    def validate(step: int) -> dict[str, float]:
        metrics = evaluate(shown_model(), source, names, loop.val_batches, loop.batch_size, loop.seed)
        if cfg.preview.num > 0 and source.tokenizer is not None:
            shown = preview_clip(shown_model(), source, cfg.preview.tasks or tuple(names), cfg.preview, loop.seed,
                                 model_info(cfg, source, step, ema is not None))
            write_video(run_dir / "samples" / f"step-{step:08d}.gif", shown, fps=cfg.fps)
            log_preview(accelerator, "val/samples", shown, step, cfg.fps)
        return metrics

    training = TrainingLoop(loop, accelerator, run_dir, start, "train", quiet)
    val_metrics = training.run(loader, {"opt": (optimizer, cfg.optim)}, step_fn, step_fn.log_row, validate,
                               lambda: {"transformer": raw, **({"ema": ema} if ema else {})}, ema=ema, raw=raw,
                               sharding=sharding)
    step = training.step

    # ---------------------------------------------------------------- release folder
    if sharding:
        sharding.refresh_eval_copy(ema if ema is not None else raw)
    if main:
        folder = write_model_folder(run_dir / "model", shown_model(), source.tokenizer,
                                    model_info(cfg, source, step, ema is not None), source.tokenizer_dir,
                                    copy=cfg.copy_tokenizer)
        if not quiet:
            print(f"saved {folder} ({'EMA' if ema else 'raw'} weights, tasks {', '.join(names)})")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return val_metrics


def prepare_model(model: TransformerBase, optimizer: torch.optim.Optimizer, ema: TransformerBase | None,
                  loader: DataLoader, cfg: TransformerTrainConfig, accelerator: Accelerator, sharding: Sharding | None,
                  previous: Path | None) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader, TransformerBase]:
    """The model, optimizer and loader wrapped for this process (DDP, FSDP2 or DeepSpeed), the EMA moved
    (sharded like the model under FSDP2), and the plain model with its speed options."""
    loop = cfg.loop
    if sharding:
        model, optimizer = sharding.prepare("opt", model, optimizer, loop.batch_size, cfg.optim.grad_clip)
        if previous is not None:
            sharding.load_optimizers(previous)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)
    loader = prepare_loader(accelerator, loader)
    if ema is not None:
        ema.to(accelerator.device)
    raw = accelerator.unwrap_model(model)
    if sharding and ema is not None:
        sharding.shard_ema(ema, raw)
    raw.checkpoint_activations(loop.checkpointing)
    if loop.compile:  # after the EMA copy: the EMA stays a plain module
        compile_forward(raw, "the transformer")
    return model, optimizer, loader, raw


class TransformerStep:
    """One optimizer step (`TrainingLoop.run`'s step): draw the step's task, COMMIT-mask each micro-batch's
    tokens, the mask + refine + reconstruction loss, the gradients; `log_row` turns its terms into the
    logs' row."""

    def __init__(self, cfg: TransformerTrainConfig, source: TokenSource, model: nn.Module, raw: TransformerBase,
                 optimizer: torch.optim.Optimizer, accelerator: Accelerator):
        self.cfg, self.source, self.model, self.raw = cfg, source, model, raw
        self.optimizer, self.accelerator = optimizer, accelerator
        self.engine = deepspeed_engine(model)
        self.names = list(cfg.tasks)
        self.weights = torch.tensor([float(cfg.tasks[n]) for n in self.names], dtype=torch.float64)
        self.guard = NonFiniteGuard()

    def __call__(self, step: int, next_batch: Callable[[], Batch]) -> Terms:
        loop, losses, raw, accelerator = self.cfg.loop, self.cfg.loss, self.raw, self.accelerator
        task = draw_task(self.names, self.weights, loop.seed, step)
        terms: dict[str, Any] = {}
        for micro in range(loop.grad_accum):
            batch = next_batch()
            gen = step_generator(loop.seed, step, micro, accelerator.process_index, device=accelerator.device)
            tokens, labels, cond = self.source.batch(batch, task)  # (B, t, h, w), (B,), the task's condition
            inputs, kinds = commit_inputs(tokens, cond, raw.vocab.mask, gen, schedule=losses.schedule,
                                          conditioning=raw.config.conditioning)
            cls = class_ids(raw, labels, cond.use_class, losses.class_dropout, gen)
            prompt = torch.full_like(labels, raw.vocab.task(task))
            prefix = prefix_tokens(cond.tokens, cond.latent_mask) if raw.config.conditioning == "prefix" else None
            with accelerator.accumulate(self.model), accelerator.autocast():
                logits = self.model(inputs, prompt, cls, prefix)  # (B, t, h, w, k, V)
                total, terms = commit_loss(logits, tokens, kinds, losses)
                terms["loss"] = total
                if not self.guard.ok(accelerator, total, step):
                    self.optimizer.zero_grad(set_to_none=True)
                    continue
                norm = apply_gradients(accelerator, self.optimizer, total, self.model.parameters(),
                                       self.cfg.optim.grad_clip, engine=self.engine)
                if norm is not None:
                    terms["grad_norm"] = norm
        return {"task": task, **terms}

    @staticmethod
    def log_row(terms: Terms) -> tuple[dict[str, Any], dict[str, str]]:
        metrics = {k: float(v.detach().float()) if torch.is_tensor(v) else float(v)
                   for k, v in terms.items() if k != "task"}
        task = str(terms["task"])
        return {"task": task, **metrics}, {"task": task, "mask": f"{metrics['mask']:.3f}"}


def model_info(cfg: TransformerTrainConfig, source: TokenSource, step: int, ema: bool) -> ModelInfo:
    """What the sampling commands need besides the weights (magvit.json)."""
    frames, height, width = source.clip
    return ModelInfo(
        tasks=tuple(cfg.tasks), task_options=cfg.task_options,
        num_classes=cfg.num_classes if cfg.num_classes is not None else source.num_classes,
        class_names=tuple(source.class_names) if source.class_names is not None else None, grid=tuple(source.grid),
        frames=frames, size=(height, width), fps=cfg.fps, trained_steps=step, weights="ema" if ema else "raw",
        condition_rule=cfg.condition_rule, loss_normalize=cfg.loss.normalize,
        data=to_dict(cfg.data) if cfg.data is not None else None,  # what "held-out clips" means for it
    )


# ---------------------------------------------------------------------------------------------
# Validation and previews


def held_out_batches(source: TokenSource, batches: int, batch_size: int) -> Iterable[dict]:
    loader = build_dataloader(source.val, batch_size, shuffle=False, drop_last=False)
    return (b for _, b in zip(range(batches), loader))


@torch.no_grad()
def evaluate(model: TransformerBase, source: TokenSource, tasks: list[str], batches: int, batch_size: int,
             seed: int) -> dict[str, float]:
    """Held-out CE (no label smoothing) and accuracy on COMMIT-masked tokens per task, with fixed
    masks; and `unigram_entropy`, the entropy of the held-out tokens' own histogram: no model that
    ignores context can have a lower masked-token CE on them."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    sums: dict[str, float] = {}
    counts = torch.zeros(source.codebook_size, dtype=torch.float64)
    for i, batch in enumerate(held_out_batches(source, batches, batch_size)):
        for t, task in enumerate(tasks):
            tokens, labels, cond = source.batch(batch, task)
            if t == 0:
                counts += torch.bincount(tokens.flatten().cpu(), minlength=source.codebook_size).double()
            gen = step_generator(seed, 1 << 21, i, t, device=device)
            inputs, kinds = commit_inputs(tokens, cond, model.vocab.mask, gen, conditioning=model.config.conditioning)
            cls = class_ids(model, labels, cond.use_class, 0.0, gen)
            prefix = prefix_tokens(cond.tokens, cond.latent_mask) if model.config.conditioning == "prefix" else None
            logits = model(inputs, torch.full_like(labels, model.vocab.task(task)), cls, prefix).float()
            masked = kinds == KIND_MASK
            ce = masked_token_loss(logits, tokens, masked.float(), 0.0)
            sub = split_ids(tokens, logits.shape[-2], logits.shape[-1].bit_length() - 1)  # (B, t, h, w, k)
            correct = (logits.argmax(-1) == sub).all(-1) & masked
            n = int(masked.sum())
            sums[f"{task}.mask_ce"] = sums.get(f"{task}.mask_ce", 0.0) + float(ce) * n
            sums[f"{task}.mask_acc"] = sums.get(f"{task}.mask_acc", 0.0) + float(correct.sum())
            sums[f"{task}.n"] = sums.get(f"{task}.n", 0.0) + n
    model.train(was_training)
    out = {k: v / max(sums[f"{k.split('.')[0]}.n"], 1) for k, v in sums.items() if not k.endswith(".n")}
    p = counts[counts > 0] / counts.sum()
    out["unigram_entropy"] = float(-(p * p.log()).sum())
    return out


@torch.no_grad()
def preview_clip(model: TransformerBase, source: TokenSource, tasks: Iterable[str], preview: PreviewConfig, seed: int,
                 info: ModelInfo) -> torch.Tensor:
    """A grid clip (3, T, H', W'): for each task a row of held-out clips (as the tokenizer reconstructs
    them) over a row of samples decoded from their condition, through the pipeline's decode path (the
    raw decode: the preview shows what the model makes of every pixel)."""
    from magvit.decode import DecodeConfig
    from magvit.media import make_grid
    from magvit.pipeline import MagvitPipeline

    was_training = model.training
    pipe = MagvitPipeline(model, source.tokenizer, info)  # puts the model in eval mode
    batch = next(iter(held_out_batches(source, 1, preview.num)))
    rows = []
    for t, task in enumerate(tasks):
        tokens, labels, cond = source.batch(batch, task)
        classes = labels.clamp(min=0) if cond.use_class and model.config.num_classes > 0 else None
        # no CUDA graph: a preview runs once per save, and a captured graph would keep its memory pool
        cfg = DecodeConfig(steps=preview.steps, guidance=preview.guidance, paste_back=False, cuda_graph=False)
        task_seed = step_generator(seed, 1 << 22, t).initial_seed()  # one stream per task, as every save
        made, _ = pipe.decode_batches(task, cfg, task_seed, len(tokens), len(tokens), classes=classes,
                                      condition=lambda *_, cond=cond: cond)
        rows += [source.tokenizer.decode(tokens).float().clamp(-1, 1).cpu(), made]
    model.train(was_training)
    videos = torch.cat(rows)  # (2 * tasks * n, 3, T, H, W)
    return make_grid(videos, nrow=len(tokens))
