"""What one run of a study does (`PROCEDURES`): each takes its typed recipe, a seed and a `Context`,
and returns its metrics (see `magvit.reproduce.study` for the three forms a metric can take).

    decode_sweep       MaskGIT's mask-schedule x steps ablation (section 4.4): decode a trained
                       class-conditional model with one schedule and step count; class accuracy
                       (per sample) and Frechet distance (bootstrap) in the digit classifier's space
    tokenizer_init     MAGVIT's 3D-VQ initialisation ablation (section 3.1): train a 2D VQGAN once
                       (shared), then a 3D-VQ from it (central / average inflation) or from scratch
    tokenizer_then_transformer
                       a tokenizer, then one transformer recipe on its tokens, scored for
                       reconstruction and (class-conditional digits) generation: MAGVIT-v2's
                       vocabulary-size figure (LFQ vs VQ at growing codebooks, section 3.1) and its
                       tokenizer comparison (one family per arm)
    transformer        one transformer recipe on a tokenizer trained once: class accuracy of cg
                       samples, frame prediction against copy-last-frame, interpolation against
                       linear blending (COMMIT's loss normalisation; MAGVIT's conditioning ablation)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from magvit.config import registry_field
from magvit.decode import DecodeConfig
from magvit.reproduce.study import PROCEDURES, Context, bootstrap_interval
from magvit.tokenizers.quantizers import QUANTIZERS
from magvit.training.tokenizer import TokenizerTrainConfig
from magvit.training.transformer import TransformerTrainConfig

# ---------------------------------------------------------------------------------------------
# Shared pieces: train, score generation


def train_tokenizer_in(folder: Path, cfg: TokenizerTrainConfig, seed: int | None = None) -> Path:
    """Train `cfg` into `folder` (its own run folder); returns the tokenizer release folder."""
    from magvit.training.tokenizer import train_tokenizer

    loop = cfg.loop if seed is None else dataclasses.replace(cfg.loop, seed=seed)
    train_tokenizer(dataclasses.replace(cfg, run_dir=str(folder), loop=loop), quiet=True)
    return folder / "tokenizer"


def train_transformer_in(folder: Path, cfg: TransformerTrainConfig, tokenizer: Path, seed: int) -> Path:
    """Train `cfg` on `tokenizer`'s tokens into `folder`; returns the model folder."""
    from magvit.training.transformer import train_transformer

    cfg = dataclasses.replace(cfg, run_dir=str(folder), tokenizer=str(tokenizer), tokens=None,
                              loop=dataclasses.replace(cfg.loop, seed=seed))
    train_transformer(cfg, quiet=True)
    return folder / "model"


def last_validation(run_dir: Path) -> dict[str, float]:
    """The last row of a run's val.csv as numbers."""
    import csv

    with (run_dir / "val.csv").open() as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for k, v in rows[-1].items() if v not in ("", None)}


def validation_curve(run_dir: Path, key: str) -> list[list[float]]:
    import csv

    with (run_dir / "val.csv").open() as f:
        return [[float(r["step"]), float(r[key])] for r in csv.DictReader(f)]


_REFERENCES: dict[tuple, Any] = {}  # real-clip feature statistics per (clip, count, seed, motion)


def digit_scores(release: Any, seed: int, samples: int, batch_size: int, decode: DecodeConfig,
                 guidance: float) -> dict[str, Any]:
    """Class-conditional samples of a digits model, scored by the project classifier: per-sample
    correctness (%) and the Frechet distance to held-out clips with a bootstrap interval."""
    from magvit.bench.digits import digit_classifier
    from magvit.bench.quality import digits_options, real_clips, sample
    from magvit.metrics import feature_statistics, frechet_distance

    classifier, _ = digit_classifier(quiet=True)
    frames, height, _ = release.clip
    classes = torch.arange(samples) % int(release.meta["num_classes"])
    cfg = dataclasses.replace(decode, guidance=guidance)
    fake = sample(release, "cg", cfg, seed, batch_size, samples, classes=classes)
    logits, f_fake = classifier.clips(fake)
    key = (frames, height, samples, seed, json.dumps(digits_options(release.meta), sort_keys=True))
    if key not in _REFERENCES:  # the same held-out clips for every arm of a sweep: computed once
        real, _ = real_clips(frames, height, samples, 10_000 + seed, **digits_options(release.meta))
        _REFERENCES[key] = feature_statistics(classifier.clips(real)[1])
    ref = _REFERENCES[key]
    fake_np = f_fake.numpy()
    frechet = bootstrap_interval(np.arange(len(fake_np)), reps=200, seed=seed, statistic=lambda idx: frechet_distance(
        *feature_statistics(fake_np[idx.astype(int)]), *ref))
    correct = (logits.argmax(1) == classes).float().mul(100).tolist()
    return {"class_accuracy": correct,
            "frechet": {"value": frechet[0], "low": frechet[1], "high": frechet[2],
                        "how": f"bootstrap over {samples} samples"}}


# ---------------------------------------------------------------------------------------------
# decode_sweep: MaskGIT's schedules x steps


@dataclass(frozen=True)
class DecodeSweepRecipe:
    name: str = "decode_sweep"
    checkpoint: str = "digits-video"  # a model folder trained for cg on the 10 digit classes
    samples: int = 500
    batch_size: int = 250
    decode: DecodeConfig = DecodeConfig(steps=12, temperature=0.7, choice_temperature=4.5)
    guidance: float = 2.0


_RELEASES: dict[str, Any] = {}


@PROCEDURES.register("decode_sweep", DecodeSweepRecipe, help="decode a trained cg model with one schedule / steps")
def decode_sweep(recipe: DecodeSweepRecipe, seed: int, ctx: Context) -> dict[str, Any]:
    from magvit.sampling import load_release

    if recipe.checkpoint not in _RELEASES:  # one load for the whole sweep
        _RELEASES.clear()
        _RELEASES[recipe.checkpoint] = load_release(recipe.checkpoint)
    release = _RELEASES[recipe.checkpoint]
    return digit_scores(release, seed, recipe.samples, recipe.batch_size, recipe.decode, recipe.guidance)


# ---------------------------------------------------------------------------------------------
# tokenizer_init: MAGVIT's inflation


@dataclass(frozen=True, kw_only=True)
class TokenizerInitRecipe:
    name: str = "tokenizer_init"
    image_tokenizer: TokenizerTrainConfig  # the 2D VQGAN, trained once and shared by every arm and seed
    video_tokenizer: TokenizerTrainConfig  # the 3D-VQ each run trains
    init: Literal["central", "average", "scratch"] = "central"


@PROCEDURES.register("tokenizer_init", TokenizerInitRecipe, help="a 3D-VQ inflated from a 2D VQGAN or from scratch")
def tokenizer_init(recipe: TokenizerInitRecipe, seed: int, ctx: Context) -> dict[str, Any]:
    cfg = recipe.video_tokenizer
    if recipe.init != "scratch":
        image = ctx.shared("vqgan2d", recipe.image_tokenizer, lambda d: train_tokenizer_in(d, recipe.image_tokenizer))
        cfg = dataclasses.replace(cfg, inflate_from=str(image / "tokenizer"), inflate_mode=recipe.init)
    train_tokenizer_in(ctx.run_dir / "run", cfg, seed)
    last = last_validation(ctx.run_dir / "run")
    return {"psnr": last["psnr"], "ssim": last["ssim"], "usage": 100 * last["usage"],
            "curve": validation_curve(ctx.run_dir / "run", "psnr")}


# ---------------------------------------------------------------------------------------------
# quantizer_sweep / tokenizer_families: a tokenizer, then one transformer recipe on its tokens


@dataclass(frozen=True, kw_only=True)
class TokenizerThenTransformerRecipe:
    name: str = "tokenizer_then_transformer"
    tokenizer: TokenizerTrainConfig
    transformer: TransformerTrainConfig  # tasks must include cg (generation is scored class-conditionally)
    quantizer: Any = registry_field(QUANTIZERS, default=None)  # replaces tokenizer.tokenizer.quantizer when set
    samples: int = 200
    decode: DecodeConfig = DecodeConfig(steps=12, temperature=0.7, choice_temperature=4.5)
    guidance: float = 2.0


def tokenizer_then_transformer(recipe: TokenizerThenTransformerRecipe, seed: int, ctx: Context) -> dict[str, Any]:
    from magvit.sampling import load_release

    tok_cfg = recipe.tokenizer
    if recipe.quantizer is not None:
        tok_cfg = dataclasses.replace(tok_cfg, tokenizer=dataclasses.replace(tok_cfg.tokenizer,
                                                                             quantizer=recipe.quantizer))
    tokenizer = train_tokenizer_in(ctx.run_dir / "tokenizer", tok_cfg, seed)
    last = last_validation(ctx.run_dir / "tokenizer")
    metrics: dict[str, Any] = {"psnr": last["psnr"], "ssim": last["ssim"], "usage": 100 * last["usage"]}
    if recipe.transformer.loop.steps > 0:
        model = train_transformer_in(ctx.run_dir / "transformer", recipe.transformer, tokenizer, seed)
        scores = digit_scores(load_release(model), seed, recipe.samples, min(recipe.samples, 250), recipe.decode,
                              recipe.guidance)
        metrics["class_accuracy"] = float(np.mean(scores["class_accuracy"]))
        metrics["frechet"] = scores["frechet"]["value"]
    return metrics


PROCEDURES.register("tokenizer_then_transformer", TokenizerThenTransformerRecipe,
                    help="a tokenizer, then one transformer recipe on its tokens")(tokenizer_then_transformer)



# ---------------------------------------------------------------------------------------------
# transformer: one transformer recipe on a tokenizer trained once


@dataclass(frozen=True, kw_only=True)
class TransformerRecipe:
    name: str = "transformer"
    tokenizer: TokenizerTrainConfig  # trained once (its own seed) and shared by every arm and seed
    transformer: TransformerTrainConfig
    samples: int = 200  # class-conditional samples (when cg is trained)
    eval_clips: int = 64  # held-out clips for frame prediction / interpolation
    decode: DecodeConfig = DecodeConfig(steps=12, temperature=0.7, choice_temperature=4.5)
    guidance: float = 2.0  # class-conditional samples only


@torch.no_grad()
def conditional_scores(release: Any, task: str, real: torch.Tensor, seed: int, decode: DecodeConfig,
                       reference: torch.Tensor) -> dict[str, float]:
    """fp / fi on held-out clips `real`: PSNR / SSIM of the generated frames, the baseline's (fp:
    copy-last-frame; fi: linear blending of the two given frames), and the Frechet distance of the
    whole predicted clips to other real clips `reference` in the digit classifier's space."""
    from magvit.bench.digits import digit_classifier
    from magvit.bench.quality import classifier_frechet
    from magvit.decode import generate_video
    from magvit.metrics import psnr, ssim
    from magvit.tasks import TASKS, rule_of

    options = dict(release.meta.get("task_options", {}).get(task, {}))
    cond = TASKS.build(task).condition(real, release.tokenizer, rule_of(release.meta), **options)
    gen = torch.Generator().manual_seed(seed)
    pred = generate_video(release.model, release.tokenizer, task, dataclasses.replace(decode, guidance=0.0), gen,
                          cond=cond).float().clamp(-1, 1)
    made = ~cond.pixel_mask[0, 0, :, 0, 0]  # (T,) the frames the model made
    if task == "fp":
        k = int((~made).sum())
        baseline = real[:, :, k - 1 : k].expand_as(real)
    else:  # linear blend of the first and the last frame
        w = torch.linspace(0, 1, real.shape[2]).view(1, 1, -1, 1, 1)
        baseline = real[:, :, :1] * (1 - w) + real[:, :, -1:] * w
    pick = lambda v: v[:, :, made]
    classifier, _ = digit_classifier(quiet=True)
    return {f"{task}_psnr": psnr(pick(pred), pick(real)).mean().item(),
            f"{task}_ssim": ssim(pick(pred), pick(real)).mean().item(),
            f"{task}_baseline_psnr": psnr(pick(baseline), pick(real)).mean().item(),
            f"{task}_frechet": classifier_frechet(classifier, pred, reference)}


@PROCEDURES.register("transformer", TransformerRecipe, help="a transformer recipe on a shared tokenizer")
def transformer_run(recipe: TransformerRecipe, seed: int, ctx: Context) -> dict[str, Any]:
    """Class accuracy / Frechet of class-conditional samples (cg), frame prediction against
    copy-last-frame and interpolation against linear blending (fp, fi), on held-out moving digits."""
    from magvit.bench.quality import digits_options, real_clips
    from magvit.sampling import load_release

    shared = ctx.shared("tokenizer", recipe.tokenizer, lambda d: train_tokenizer_in(d, recipe.tokenizer))
    model = train_transformer_in(ctx.run_dir / "transformer", recipe.transformer, shared / "tokenizer", seed)
    release = load_release(model)
    frames, size, _ = release.clip
    metrics: dict[str, Any] = {}
    if "cg" in release.meta["tasks"]:
        scores = digit_scores(release, seed, recipe.samples, min(recipe.samples, 250), recipe.decode, recipe.guidance)
        metrics["class_accuracy"] = float(np.mean(scores["class_accuracy"]))
        metrics["frechet"] = scores["frechet"]["value"]
    real, _ = real_clips(frames, size, recipe.eval_clips, seed, **digits_options(release.meta))
    reference, _ = real_clips(frames, size, recipe.eval_clips, 20_000 + seed, **digits_options(release.meta))
    for task in ("fp", "fi"):
        if task in release.meta["tasks"]:
            metrics.update(conditional_scores(release, task, real, seed, recipe.decode, reference))
    return metrics
