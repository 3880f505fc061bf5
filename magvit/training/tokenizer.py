"""`magvit train-tokenizer`: train a tokenizer (VQGAN / 3D-VQ / causal LFQ) with accelerate.

The recipe: setup (config, run folder, models, data, optimizers, resume) -> loop (generator step,
discriminator step, EMA, log, validate, checkpoint) -> save the release weights. Losses follow
MAGVIT (section 3.1 and its appendix): pixel L2 (or L1), LPIPS, a GAN loss with VQGAN's adaptive weight
that starts after a warm-up, LeCAM and R1 on the discriminator, plus the quantizer's own terms.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from magvit import runtime
from magvit.config import registry_field, save_config
from magvit.data import DATASETS, build_dataloader, build_dataset
from magvit.errors import MagvitError
from magvit.tokenizers import TOKENIZERS, Tokenizer, TokenizerOutput
from magvit.tokenizers.discriminators import DISCRIMINATORS, build_discriminator
from magvit.tokenizers.losses import (
    GAN_LOSSES,
    LeCAM,
    Perceptual,
    adaptive_generator_weight,
    gan_warmup_weight,
    gradient_difference_loss,
    r1_penalty,
    reconstruction_loss,
)
from magvit.training.common import (
    LoopConfig,
    NonFiniteGuard,
    OptimConfig,
    apply_gradients,
    build_optimizer,
    check_run_dir,
    deepspeed_engine,
    held_out_version,
    log_preview,
    make_accelerator,
    make_ema,
    prepare_loader,
    start_trackers,
)
from magvit.training.loop import Batch, Terms, TrainingLoop, restore
from magvit.training.sharding import Sharding

if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch.utils.data import DataLoader, Dataset


@dataclass(frozen=True)
class TokenizerLossConfig:
    reconstruction: Literal["l1", "l2"] = "l2"
    reconstruction_weight: float = 1.0
    gradient_weight: float = 0.0  # gradient difference loss (sharpness without pretrained weights)
    perceptual_weight: float = 0.0  # MAGVIT: 0.1
    perceptual_net: Literal["vgg", "alex"] = "vgg"
    perceptual_pretrained: bool = True  # False: random backbone (tests only)
    gan_weight: float = 0.0  # MAGVIT: 0.1; needs a `discriminator` section
    gan_loss: Literal["hinge", "non_saturating"] = "hinge"
    adaptive_gan_weight: bool = True  # VQGAN: balance GAN and reconstruction gradients
    gan_start_step: int = 0  # discriminator warm-up: no GAN term before this step
    gan_warmup_steps: int = 0  # then ramp its weight linearly over this many steps
    lecam_weight: float = 0.0
    lecam_decay: float = 0.999
    r1_weight: float = 0.0  # MAGVIT: 10
    r1_every: int = 4  # lazy R1 (StyleGAN2): every N steps, weighted by N


@dataclass(frozen=True, kw_only=True)
class TokenizerTrainConfig:
    """`kind: train_tokenizer`."""

    kind: str = "train_tokenizer"
    run_dir: str = "runs/tokenizer"
    tokenizer: object = registry_field(TOKENIZERS)
    data: object = registry_field(DATASETS)
    val_data: object | None = registry_field(DATASETS, default=None)
    discriminator: object | None = registry_field(DISCRIMINATORS, default=None)
    loss: TokenizerLossConfig = TokenizerLossConfig()
    optim: OptimConfig = OptimConfig(lr=1e-4, betas=(0.0, 0.99), warmup_steps=100)
    disc_optim: OptimConfig = OptimConfig(lr=1e-4, betas=(0.0, 0.99), warmup_steps=100)
    loop: LoopConfig = LoopConfig()
    inflate_from: str | None = None  # a saved vqgan2d folder to inflate a vq3d from (MAGVIT 3.1)
    inflate_mode: Literal["central", "average"] = "central"
    channels_last: bool = False  # 3D conv weights channels-last-3d (magvit.runtime.channels_last; not faster on CPU)
    fps: float = 8.0


def train_tokenizer(cfg: TokenizerTrainConfig, resume: bool = False, quiet: bool = False) -> dict[str, float]:
    """Run the recipe; returns the last validation metrics."""
    # ---------------------------------------------------------------- setup
    from accelerate.utils import set_seed

    loop = cfg.loop
    run_dir = Path(cfg.run_dir)
    accelerator = make_accelerator(loop.mixed_precision, loop.grad_accum, loop.log_with, run_dir)
    main = accelerator.is_main_process
    sharding = Sharding.of(accelerator)  # None: one process or DDP
    previous = check_run_dir(run_dir, resume, main, quiet)
    check_recipe(cfg)
    set_seed(loop.seed)
    if main:
        save_config(cfg, run_dir)
    parts = build_parts(cfg)
    # a sharded engine loads the optimizer states once prepare has shared them out (prepare_parts)
    start = restore(run_dir, previous, parts.modules(), {} if sharding else parts.optimizers(), accelerator, quiet)
    prepare_parts(parts, cfg, accelerator, sharding, previous)
    speed_options(parts.raw, loop, cfg.channels_last)
    start_trackers(accelerator, cfg, run_dir, start.step)
    step_fn = TokenizerStep(cfg, parts, accelerator, sharding)

    # ---------------------------------------------------------------- the loop (training.loop)
    def shown_model() -> Tokenizer:
        """The weights validation and the release see: the EMA's (else the model's); a plain copy under
        a sharded engine."""
        return sharding.eval_copy if sharding else parts.ema if parts.ema is not None else parts.raw

    def validate_at(step: int) -> dict[str, float]:
        gif = run_dir / "samples" / f"step-{step:08d}.gif"
        metrics, shown = validate(shown_model(), parts.val_set, loop, gif, cfg.fps)
        log_preview(accelerator, "val/reconstruction", shown, step, cfg.fps)
        return metrics

    schedules = {"opt_g": (parts.opt_g, cfg.optim),
                 **({"opt_d": (parts.opt_d, cfg.disc_optim)} if parts.opt_d is not None else {})}
    val_metrics = TrainingLoop(loop, accelerator, run_dir, start, "train-tokenizer", quiet).run(
        parts.loader, schedules, step_fn, step_fn.log_row, validate_at,
        parts.modules, ema=parts.ema, raw=parts.raw,
        sharding=sharding)

    # ---------------------------------------------------------------- release weights
    if sharding:
        sharding.refresh_eval_copy(parts.ema if parts.ema is not None else parts.raw)
    if main:
        shown_model().save_pretrained(run_dir / "tokenizer")
        if not quiet:
            print(f"saved {run_dir / 'tokenizer'} ({'raw' if parts.ema is None else 'EMA'} weights)")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return val_metrics




def check_recipe(cfg: TokenizerTrainConfig) -> None:
    """What the recipe cannot run, in one line, before any work. (Every engine runs every recipe: DDP,
    FSDP2, DeepSpeed ZeRO-2 and ZeRO-3, the GAN with R1 and the adaptive weight included.)"""
    if cfg.loss.gan_weight > 0 and cfg.discriminator is None:
        raise MagvitError("loss.gan_weight > 0 needs a `discriminator` section (e.g. discriminator.name=patchgan3d)")


@dataclass
class Parts:
    """What a tokenizer run trains and with what: built by `build_parts`, prepared in place by
    `prepare_parts` (`tokenizer` / `disc` become the wrapped modules, `raw` / `raw_disc` the plain ones)."""

    tokenizer: torch.nn.Module
    ema: Tokenizer | None  # a copy of the tokenizer (common.make_ema)
    perceptual: Perceptual | None
    disc: torch.nn.Module | None
    lecam: LeCAM | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None
    train_set: Dataset
    val_set: Dataset
    loader: DataLoader
    raw: Tokenizer | None = None
    raw_disc: torch.nn.Module | None = None

    def modules(self) -> dict[str, torch.nn.Module]:
        """The modules under their checkpoint names, unwrapped (no DDP wrapper, no compile prefix) once
        `prepare_parts` has set `raw` / `raw_disc`."""
        disc = self.raw_disc if self.raw_disc is not None else self.disc
        optional = {"ema": self.ema, "disc": disc, "lecam": self.lecam}
        tokenizer = self.raw if self.raw is not None else self.tokenizer
        return {"tokenizer": tokenizer, **{k: m for k, m in optional.items() if m is not None}}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_g": self.opt_g, **({"opt_d": self.opt_d} if self.opt_d is not None else {})}


def build_parts(cfg: TokenizerTrainConfig) -> Parts:
    """The tokenizer (inflated from a 2D one if asked), its EMA, losses, discriminator, optimizers, data."""
    loop, losses = cfg.loop, cfg.loss
    tokenizer = TOKENIZERS[cfg.tokenizer.name].build(cfg.tokenizer)
    if cfg.inflate_from:
        tokenizer.inflate_from(Tokenizer.from_pretrained(cfg.inflate_from), mode=cfg.inflate_mode)
    train_set, val_set = build_dataset(cfg.data), build_dataset(cfg.val_data or held_out_version(cfg.data))
    sample = train_set[0]["video"]
    tokenizer.token_shape(*sample.shape[1:])  # a shape that cannot tile fails here, with one line
    ema = make_ema(tokenizer) if loop.ema_decay else None
    perceptual = (
        Perceptual(net=losses.perceptual_net, pretrained_backbone=losses.perceptual_pretrained)
        if losses.perceptual_weight > 0 else None
    )
    disc = build_discriminator(cfg.discriminator) if cfg.discriminator is not None and losses.gan_weight > 0 else None
    lecam = LeCAM(decay=losses.lecam_decay) if disc is not None and losses.lecam_weight > 0 else None

    opt_g = build_optimizer(tokenizer.parameters(), cfg.optim)
    opt_d = build_optimizer(disc.parameters(), cfg.disc_optim) if disc is not None else None
    loader = build_dataloader(train_set, loop.batch_size, shuffle=True, seed=loop.seed, num_workers=loop.num_workers)
    if len(loader) == 0:
        raise MagvitError(f"the training set has {len(train_set)} samples, fewer than one batch of {loop.batch_size}")
    return Parts(tokenizer, ema, perceptual, disc, lecam, opt_g, opt_d, train_set, val_set, loader)


def prepare_parts(parts: Parts, cfg: TokenizerTrainConfig, accelerator: Accelerator, sharding: Sharding | None,
                  previous: Path | None) -> None:
    """Wrap the models, optimizers and loader for this process (DDP, FSDP2 or DeepSpeed) and move the rest."""
    loop = cfg.loop
    if sharding:  # one model per prepare call; under DeepSpeed each is its own engine
        parts.tokenizer, parts.opt_g = sharding.prepare("opt_g", parts.tokenizer, parts.opt_g, loop.batch_size,
                                                        cfg.optim.grad_clip)
        if parts.disc is not None:
            parts.disc, parts.opt_d = sharding.prepare("opt_d", parts.disc, parts.opt_d, loop.batch_size,
                                                       cfg.disc_optim.grad_clip)
        if previous is not None:
            sharding.load_optimizers(previous)
    else:
        parts.tokenizer, parts.opt_g = accelerator.prepare(parts.tokenizer, parts.opt_g)
    parts.loader = prepare_loader(accelerator, parts.loader)
    if parts.disc is not None and not sharding:
        parts.disc, parts.opt_d = accelerator.prepare(parts.disc, parts.opt_d)
    for module in (parts.perceptual, parts.ema, parts.lecam):
        if module is not None:
            module.to(accelerator.device)
    parts.raw = accelerator.unwrap_model(parts.tokenizer)
    parts.raw_disc = accelerator.unwrap_model(parts.disc) if parts.disc is not None else None
    if sharding and parts.ema is not None:
        sharding.shard_ema(parts.ema, parts.raw)


class TokenizerStep:
    """One optimizer step of the recipe (`TrainingLoop.run`'s step): per micro-batch, the generator
    (tokenizer) step on reconstruction, quantizer, perceptual and GAN losses, then the discriminator
    step (GAN loss, LeCAM, lazy R1); `log_row` turns its terms into the logs' row."""

    def __init__(self, cfg: TokenizerTrainConfig, parts: Parts, accelerator: Accelerator, sharding: Sharding | None):
        self.cfg, self.parts, self.accelerator, self.sharding = cfg, parts, accelerator, sharding
        losses, disc = cfg.loss, parts.disc
        self.engine_g, self.engine_d = deepspeed_engine(parts.tokenizer), deepspeed_engine(disc)
        self.gan_g, self.gan_d = (GAN_LOSSES[losses.gan_loss] if disc is not None else (None, None))
        # every loss column from the first row on (a CSV's columns are fixed by its header): the GAN
        # terms stay empty until the discriminator warm-up ends
        self.columns = ["rec", "quant", *(["grad_diff"] if losses.gradient_weight > 0 else []),
                        *(["lpips"] if parts.perceptual is not None else []),
                        *(["gan_g", "gan_w", "gan_d"] if disc is not None else []),
                        *(["lecam"] if parts.lecam is not None else []),
                        *(["r1"] if disc is not None and losses.r1_weight > 0 else []),
                        *(["grad_norm"] if cfg.optim.grad_clip else [])]
        self.guard, self.d_guard = NonFiniteGuard(), NonFiniteGuard()
        # FSDP2 keeps the requires_grad a parameter had at its first all-gather, so D cannot be frozen for the
        # generator step: the gradients that step leaves in D are set aside instead
        self.d_grads_aside = disc is not None and sharding is not None and sharding.kind == "fsdp2"
        self.zero3 = self.engine_g is not None and accelerator.state.deepspeed_plugin.zero_stage == 3

    def __call__(self, step: int, next_batch: Callable[[], Batch]) -> Terms:
        losses, parts = self.cfg.loss, self.parts
        gan_scale = losses.gan_weight * gan_warmup_weight(step, losses.gan_start_step, losses.gan_warmup_steps)
        parts.raw.quantizer.set_step(step)  # LFQ's annealed entropy weight (logged as q_entropy_weight)
        terms: dict[str, Any] = {}
        for _ in range(self.cfg.loop.grad_accum):
            real = next_batch()["video"]  # (B, 3, T, H, W)
            # one micro-batch: the generator (tokenizer) step, then the discriminator step
            models = [m for m in (parts.tokenizer, parts.disc) if m is not None]
            with self.accelerator.accumulate(*models), self.accelerator.autocast():
                out, total, terms = self.generator_loss(real, gan_scale)
                if not self.guard.ok(self.accelerator, total, step):
                    parts.opt_g.zero_grad(set_to_none=True)
                    continue
                aside = self.sharding.gradients_set_aside(parts.raw_disc) if self.d_grads_aside else nullcontext()
                with aside:
                    norm = apply_gradients(self.accelerator, parts.opt_g, total, parts.tokenizer.parameters(),
                                           self.cfg.optim.grad_clip, engine=self.engine_g)
                if norm is not None:
                    terms["grad_norm"] = norm
                if parts.disc is not None and gan_scale > 0:
                    self.discriminator_step(real, out, step, terms)
        return terms

    def generator_loss(self, real: torch.Tensor,
                       gan_scale: float) -> tuple[TokenizerOutput, torch.Tensor, dict[str, Any]]:
        """The tokenizer's output, its total loss and the loss terms on clips `real` (B, 3, T, H, W)."""
        losses, parts = self.cfg.loss, self.parts
        out = parts.tokenizer(real)
        rec = reconstruction_loss(out.recon.float(), real.float(), losses.reconstruction)
        nll = losses.reconstruction_weight * rec  # VQGAN's "nll": the reconstruction terms
        terms = {"rec": rec, "quant": out.quant.loss}
        if losses.gradient_weight > 0:
            terms["grad_diff"] = gradient_difference_loss(out.recon.float(), real.float())
            nll = nll + losses.gradient_weight * terms["grad_diff"]
        if parts.perceptual is not None:
            terms["lpips"] = parts.perceptual(out.recon.float(), real.float())
            nll = nll + losses.perceptual_weight * terms["lpips"]
        total = nll + out.quant.loss
        if parts.disc is not None and gan_scale > 0:
            parts.raw_disc.requires_grad_(self.d_grads_aside)  # the generator step must not train D (FSDP2: above)
            def gan_of_recon() -> torch.Tensor:
                return self.gan_g(parts.raw_disc(out.recon).float())

            weight = torch.ones((), device=out.recon.device)
            if losses.adaptive_gan_weight and self.zero3:
                # ZeRO-3 gathers a module's weights for one backward per forward, and a second forward before
                # that backward upsets its count: the weight's autograd.grad through D gets a forward of its
                # own, differentiated before the step's forward of D
                weight = adaptive_generator_weight(nll, gan_of_recon(), parts.raw.last_layer_weight())
            g_loss = gan_of_recon()
            if losses.adaptive_gan_weight and not self.zero3:
                weight = adaptive_generator_weight(nll, g_loss, parts.raw.last_layer_weight())
            parts.raw_disc.requires_grad_(True)
            terms["gan_g"], terms["gan_w"] = g_loss, weight
            total = total + gan_scale * weight * g_loss
        terms.update({f"q_{k}": v for k, v in out.quant.metrics.items()})
        return out, total, terms

    def discriminator_step(self, real: torch.Tensor, out: TokenizerOutput, step: int, terms: dict[str, Any]) -> None:
        """D on real and reconstructed clips: the GAN loss, LeCAM and the lazy R1 penalty; its terms into `terms`."""
        losses, parts = self.cfg.loss, self.parts
        lazy_r1 = losses.r1_weight > 0 and step % losses.r1_every == 0
        # under DeepSpeed, R1 differentiates its own forward of the plain module: an engine opens its backward
        # the first time a gradient reaches its output (once per forward), and R1's autograd.grad through
        # the engine's logits would use that up before the optimizer's backward (one more D forward on the
        # real clips every r1_every steps)
        r1_apart = lazy_r1 and self.engine_d is not None
        real_in = real.detach().requires_grad_(lazy_r1 and not r1_apart)
        # one forward for real and fake: a DDP module runs once per backward
        logits = parts.disc(torch.cat([real_in, out.recon.detach().to(real_in.dtype)])).float()
        real_logits, fake_logits = logits.chunk(2)
        d_loss = self.gan_d(real_logits, fake_logits)
        terms["gan_d"] = d_loss
        if parts.lecam is not None:
            terms["lecam"] = parts.lecam(real_logits, fake_logits)
            d_loss = d_loss + losses.lecam_weight * terms["lecam"]
        if lazy_r1:
            r1_in, r1_logits = real_in, real_logits
            if r1_apart:
                r1_in = real.detach().requires_grad_(True)
                r1_logits = parts.raw_disc(r1_in).float()
            terms["r1"] = r1_penalty(r1_logits, r1_in)
            d_loss = d_loss + losses.r1_weight * losses.r1_every * terms["r1"]
            if self.sharding:  # R1's autograd.grad let FSDP2 free D's gathered weights; the backward needs them
                self.sharding.regather(parts.raw_disc)
        if self.d_guard.ok(self.accelerator, d_loss, step):  # R1 / LeCAM can overflow where G's loss did not
            apply_gradients(self.accelerator, parts.opt_d, d_loss, parts.disc.parameters(),
                            self.cfg.disc_optim.grad_clip, engine=self.engine_d)
        else:
            parts.opt_d.zero_grad(set_to_none=True)

    def log_row(self, terms: Terms) -> tuple[dict[str, Any], dict[str, str]]:
        metrics = {k: float(v.detach().float().mean()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}
        quantizer = {k: v for k, v in metrics.items() if k.startswith("q_")}
        shown = {k: f"{metrics[k]:.4f}" for k in ("rec", "lpips", "gan_g", "gan_d") if k in metrics}
        return {**{k: metrics.get(k, "") for k in self.columns}, **quantizer}, shown


def speed_options(tokenizer: Tokenizer, loop: LoopConfig, channels_last: bool = False) -> None:
    """`loop.checkpointing`, `channels_last` and `loop.compile` on the training tokenizer (after the EMA
    copy was made: the EMA stays a plain module)."""
    tokenizer.checkpoint_activations(loop.checkpointing)
    if channels_last:
        runtime.channels_last(tokenizer)
    if loop.compile:
        runtime.compile_tokenizer(tokenizer)


@torch.no_grad()
def validate(model: Tokenizer, dataset: Dataset, loop: LoopConfig, gif_path: Path,
             fps: float) -> tuple[dict[str, float], torch.Tensor]:
    """PSNR, SSIM, codebook usage and perplexity on the first `val_batches` batches; a GIF of
    real clips (top row) over their reconstructions (bottom row), also returned (3, T, H', W')."""
    from magvit.media import make_grid, write_video
    from magvit.metrics import codebook_usage, perplexity, psnr, ssim

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loader = build_dataloader(dataset, loop.batch_size, shuffle=False, drop_last=False)
    scores: dict[str, list[torch.Tensor]] = {"psnr": [], "ssim": []}
    ids, shown = [], None
    for i, batch in zip(range(loop.val_batches), loader):
        real = batch["video"].to(device)
        out = model(real)
        recon = out.recon.float().clamp(-1, 1)
        scores["psnr"].append(psnr(recon, real))
        scores["ssim"].append(ssim(recon, real))
        ids.append(out.ids.flatten().cpu())
        if i == 0:
            n = min(4, len(real))
            shown = make_grid(torch.cat([real[:n], recon[:n]]).cpu(), nrow=n)
    model.train(was_training)
    write_video(gif_path, shown, fps=fps)
    all_ids = torch.cat(ids)
    return {
        "psnr": float(torch.cat(scores["psnr"]).mean()),
        "ssim": float(torch.cat(scores["ssim"]).mean()),
        "usage": float(codebook_usage(all_ids, model.codebook_size)),
        "perplexity": float(perplexity(all_ids, model.codebook_size)),
    }, shown
