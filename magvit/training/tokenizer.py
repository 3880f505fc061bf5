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
from typing import Any, Literal

import torch

from magvit import runtime
from magvit.config import registry_field, save_config
from magvit.data import DATASETS, build_dataloader, build_dataset
from magvit.errors import MagvitError
from magvit.tokenizers import TOKENIZERS, Tokenizer
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
from magvit.training.loop import TrainingLoop, restore
from magvit.training.sharding import Sharding


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

    loop, losses = cfg.loop, cfg.loss
    run_dir = Path(cfg.run_dir)
    accelerator = make_accelerator(loop.mixed_precision, loop.grad_accum, loop.log_with, run_dir)
    main = accelerator.is_main_process
    sharding = Sharding.of(accelerator)  # None: one process or DDP
    previous = check_run_dir(run_dir, resume, main, quiet)
    if losses.gan_weight > 0 and cfg.discriminator is None:
        raise MagvitError("loss.gan_weight > 0 needs a `discriminator` section (e.g. discriminator.name=patchgan3d)")
    if sharding is not None and sharding.kind == "deepspeed" and (
            losses.gan_weight > 0 or accelerator.state.deepspeed_plugin.zero_stage == 3):
        raise MagvitError("train-tokenizer runs under DeepSpeed with ZeRO-2 and no GAN loss only (with the GAN, "
                          "ZeRO-2's gradient hooks break R1's autograd.grad and ZeRO-3 frees D's weights before the "
                          "generator's backward through D; ZeRO-3 also stops in DeepSpeed's backward hooks): use "
                          "configs/accelerate/fsdp2.yaml")
    set_seed(loop.seed)
    if main:
        save_config(cfg, run_dir)

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

    optional = {"ema": ema, "disc": disc, "lecam": lecam}
    modules = {"tokenizer": tokenizer, **{k: m for k, m in optional.items() if m is not None}}
    optimizers = {"opt_g": opt_g, **({"opt_d": opt_d} if opt_d is not None else {})}
    # a sharded engine loads the optimizer states once prepare has shared them out (below)
    start = restore(run_dir, previous, modules, {} if sharding else optimizers, accelerator, quiet)

    if sharding:  # one model per prepare call; under DeepSpeed each is its own engine
        tokenizer, opt_g = sharding.prepare("opt_g", tokenizer, opt_g, loop.batch_size, cfg.optim.grad_clip)
        if disc is not None:
            disc, opt_d = sharding.prepare("opt_d", disc, opt_d, loop.batch_size, cfg.disc_optim.grad_clip)
        if previous is not None:
            sharding.load_optimizers(previous)
    else:
        tokenizer, opt_g = accelerator.prepare(tokenizer, opt_g)
    loader = prepare_loader(accelerator, loader)
    if disc is not None and not sharding:
        disc, opt_d = accelerator.prepare(disc, opt_d)
    if perceptual is not None:
        perceptual.to(accelerator.device)
    if ema is not None:
        ema.to(accelerator.device)
    if lecam is not None:
        lecam.to(accelerator.device)
    raw = accelerator.unwrap_model(tokenizer)
    raw_disc = accelerator.unwrap_model(disc) if disc is not None else None
    if sharding and ema is not None:
        sharding.shard_ema(ema, raw)
    engine_g, engine_d = deepspeed_engine(tokenizer), deepspeed_engine(disc)
    speed_options(raw, loop, cfg.channels_last)
    gan_g, gan_d = (GAN_LOSSES[losses.gan_loss] if disc is not None else (None, None))
    start_trackers(accelerator, cfg, run_dir, start.step)
    # every loss column from the first row on (a CSV's columns are fixed by its header): the GAN
    # terms stay empty until the discriminator warm-up ends
    columns = ["rec", "quant", *(["grad_diff"] if losses.gradient_weight > 0 else []),
               *(["lpips"] if perceptual is not None else []),
               *(["gan_g", "gan_w", "gan_d"] if disc is not None else []), *(["lecam"] if lecam is not None else []),
               *(["r1"] if disc is not None and losses.r1_weight > 0 else []),
               *(["grad_norm"] if cfg.optim.grad_clip else [])]
    guard, d_guard = NonFiniteGuard(), NonFiniteGuard()
    # FSDP2 keeps the requires_grad a parameter had at its first all-gather, so D cannot be frozen for the
    # generator step: the gradients that step leaves in D are set aside instead
    d_grads_aside = disc is not None and sharding is not None and sharding.kind == "fsdp2"

    # ---------------------------------------------------------------- one step (the loop: training.loop)
    def step_fn(step: int, next_batch: Callable[[], dict]) -> dict[str, Any]:
        gan_scale = losses.gan_weight * gan_warmup_weight(step, losses.gan_start_step, losses.gan_warmup_steps)
        raw.quantizer.set_step(step)  # LFQ's annealed entropy weight (logged as q_entropy_weight)
        terms: dict[str, Any] = {}
        for _ in range(loop.grad_accum):
            real = next_batch()["video"]  # (B, 3, T, H, W)

            # one micro-batch: the generator (tokenizer) step, then the discriminator step
            with accelerator.accumulate(*[m for m in (tokenizer, disc) if m is not None]), accelerator.autocast():
                out = tokenizer(real)
                rec = reconstruction_loss(out.recon.float(), real.float(), losses.reconstruction)
                nll = losses.reconstruction_weight * rec  # VQGAN's "nll": the reconstruction terms
                terms = {"rec": rec, "quant": out.quant.loss}
                if losses.gradient_weight > 0:
                    terms["grad_diff"] = gradient_difference_loss(out.recon.float(), real.float())
                    nll = nll + losses.gradient_weight * terms["grad_diff"]
                if perceptual is not None:
                    terms["lpips"] = perceptual(out.recon.float(), real.float())
                    nll = nll + losses.perceptual_weight * terms["lpips"]
                total = nll + out.quant.loss
                if disc is not None and gan_scale > 0:
                    raw_disc.requires_grad_(d_grads_aside)  # the generator step must not train D (FSDP2: see below)
                    g_loss = gan_g(raw_disc(out.recon).float())
                    raw_disc.requires_grad_(True)
                    weight = (
                        adaptive_generator_weight(nll, g_loss, raw.last_layer_weight())
                        if losses.adaptive_gan_weight else torch.ones((), device=g_loss.device)
                    )
                    terms["gan_g"], terms["gan_w"] = g_loss, weight
                    total = total + gan_scale * weight * g_loss
                terms.update({f"q_{k}": v for k, v in out.quant.metrics.items()})
                if not guard.ok(accelerator, total, step):
                    opt_g.zero_grad(set_to_none=True)
                    continue
                with sharding.gradients_set_aside(raw_disc) if d_grads_aside else nullcontext():
                    norm = apply_gradients(accelerator, opt_g, total, tokenizer.parameters(), cfg.optim.grad_clip,
                                           engine=engine_g)
                if norm is not None:
                    terms["grad_norm"] = norm

                if disc is not None and gan_scale > 0:
                    lazy_r1 = losses.r1_weight > 0 and step % losses.r1_every == 0
                    real_in = real.detach().requires_grad_(lazy_r1)
                    # one forward for real and fake: a DDP module runs once per backward
                    logits = disc(torch.cat([real_in, out.recon.detach().to(real_in.dtype)])).float()
                    real_logits, fake_logits = logits.chunk(2)
                    d_loss = gan_d(real_logits, fake_logits)
                    terms["gan_d"] = d_loss
                    if lecam is not None:
                        terms["lecam"] = lecam(real_logits, fake_logits)
                        d_loss = d_loss + losses.lecam_weight * terms["lecam"]
                    if lazy_r1:
                        terms["r1"] = r1_penalty(real_logits, real_in)
                        d_loss = d_loss + losses.r1_weight * losses.r1_every * terms["r1"]
                        if sharding:  # R1's autograd.grad let FSDP2 free D's gathered weights; the backward needs them
                            sharding.regather(raw_disc)
                    if d_guard.ok(accelerator, d_loss, step):  # R1 / LeCAM can overflow where G's loss did not
                        apply_gradients(accelerator, opt_d, d_loss, disc.parameters(), cfg.disc_optim.grad_clip,
                                        engine=engine_d)
                    else:
                        opt_d.zero_grad(set_to_none=True)
        return terms

    def log_row(terms: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        metrics = {k: float(v.detach().float().mean()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}
        quantizer = {k: v for k, v in metrics.items() if k.startswith("q_")}
        shown = {k: f"{metrics[k]:.4f}" for k in ("rec", "lpips", "gan_g", "gan_d") if k in metrics}
        return {**{k: metrics.get(k, "") for k in columns}, **quantizer}, shown

    def shown_model() -> Tokenizer:
        """The weights validation and the release see: the EMA's (else the model's); a plain copy under
        a sharded engine."""
        return sharding.eval_copy if sharding else ema if ema is not None else raw

    def validate_at(step: int) -> dict[str, float]:
        gif = run_dir / "samples" / f"step-{step:08d}.gif"
        metrics, shown = validate(shown_model(), val_set, loop, gif, cfg.fps)
        log_preview(accelerator, "val/reconstruction", shown, step, cfg.fps)
        return metrics

    schedules = {"opt_g": (opt_g, cfg.optim), **({"opt_d": (opt_d, cfg.disc_optim)} if opt_d is not None else {})}
    val_metrics = TrainingLoop(loop, accelerator, run_dir, start, "train-tokenizer", quiet).run(
        loader, schedules, step_fn, log_row, validate_at, lambda: modules_for_save(modules, raw, raw_disc),
        ema=ema, raw=raw, sharding=sharding)

    # ---------------------------------------------------------------- release weights
    if sharding:
        sharding.refresh_eval_copy(ema if ema is not None else raw)
    if main:
        shown_model().save_pretrained(run_dir / "tokenizer")
        if not quiet:
            print(f"saved {run_dir / 'tokenizer'} ({'raw' if ema is None else 'EMA'} weights)")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return val_metrics


def speed_options(tokenizer: Tokenizer, loop: LoopConfig, channels_last: bool = False) -> None:
    """`loop.checkpointing`, `channels_last` and `loop.compile` on the training tokenizer (after the EMA
    copy was made: the EMA stays a plain module)."""
    tokenizer.checkpoint_activations(loop.checkpointing)
    if channels_last:
        runtime.channels_last(tokenizer)
    if loop.compile:
        runtime.compile_tokenizer(tokenizer)


def modules_for_save(modules, raw, raw_disc):
    """The unwrapped modules (no DDP wrapper, no compile prefix) under their checkpoint names."""
    out = dict(modules)
    out["tokenizer"] = raw
    if raw_disc is not None:
        out["disc"] = raw_disc
    return out


@torch.no_grad()
def validate(model: Tokenizer, dataset, loop: LoopConfig, gif_path: Path,
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
