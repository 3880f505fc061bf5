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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from magvit.config import registry_field
from magvit.decode import DecodeConfig
from magvit.evaluation.scores import Evaluator, sample
from magvit.reproduce.stats import bootstrap_interval
from magvit.reproduce.study import PROCEDURES, Context
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


def evaluator(model: str | Path, clips: int, batch_size: int, seed: int) -> Evaluator:
    """The quality bench's `Evaluator` of a model folder: `clips` held-out moving-digit clips, the
    project classifier, decode calls of `batch_size`, decode generators seeded by `seed`."""
    from magvit.evaluation.digits import digit_classifier
    from magvit.evaluation.scores import Evaluator
    from magvit.pipeline import MagvitPipeline

    # on the CPU, as the studies' published figures were (a CUDA generator draws other samples for the same seed)
    release = MagvitPipeline.from_pretrained(model, device="cpu")
    return Evaluator(release, digit_classifier(quiet=True)[0], clips, batch_size, seed)


def class_scores(ev: Evaluator, samples: int, decode: DecodeConfig, guidance: float) -> dict[str, float]:
    """Class accuracy (%) of `samples` class-conditional samples and their Frechet distance to the real clips."""
    from magvit.evaluation.scores import classifier_frechet

    classes = torch.arange(samples) % ev.release.info.num_classes
    fake, accuracy = ev.class_samples(classes, dataclasses.replace(decode, guidance=guidance))
    return {"class_accuracy": 100 * accuracy, "frechet": classifier_frechet(ev.classifier, fake, ev.real_statistics)}


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


# (checkpoint, samples, batch size, seed) -> one Evaluator for every arm of a sweep: the model and real clips load once
_SWEEP: dict[tuple[str, int, int, int], Evaluator] = {}


@PROCEDURES.register("decode_sweep", DecodeSweepRecipe, help="decode a trained cg model with one schedule / steps")
def decode_sweep(recipe: DecodeSweepRecipe, seed: int, ctx: Context) -> dict[str, Any]:
    """Per-sample correctness (%) of class-conditional samples and their Frechet distance to held-out
    clips with a bootstrap interval over the samples."""
    from magvit.metrics import feature_statistics, frechet_distance

    key = (recipe.checkpoint, recipe.samples, recipe.batch_size, seed)
    if key not in _SWEEP:
        _SWEEP.clear()
        _SWEEP[key] = evaluator(recipe.checkpoint, recipe.samples, recipe.batch_size, seed)
    ev = _SWEEP[key]
    fake = sample(ev.release, "cg", dataclasses.replace(recipe.decode, guidance=recipe.guidance), seed,
                  recipe.batch_size, recipe.samples, classes=ev.classes)
    logits, features = ev.classifier.clips(fake)
    features = features.numpy()
    frechet = bootstrap_interval(np.arange(len(features)), reps=200, seed=seed, statistic=lambda idx: frechet_distance(
        *feature_statistics(features[idx.astype(int)]), *ev.real_statistics))
    return {"class_accuracy": (logits.argmax(1) == ev.classes).float().mul(100).tolist(),
            "frechet": {"value": frechet[0], "low": frechet[1], "high": frechet[2],
                        "how": f"bootstrap over {recipe.samples} samples"}}


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
    quantizer: object | None = registry_field(QUANTIZERS, default=None)  # set: replaces tokenizer.tokenizer.quantizer
    samples: int = 200
    decode: DecodeConfig = DecodeConfig(steps=12, temperature=0.7, choice_temperature=4.5)
    guidance: float = 2.0


@PROCEDURES.register("tokenizer_then_transformer", TokenizerThenTransformerRecipe,
                    help="a tokenizer, then one transformer recipe on its tokens")
def tokenizer_then_transformer(recipe: TokenizerThenTransformerRecipe, seed: int, ctx: Context) -> dict[str, Any]:
    tok_cfg = recipe.tokenizer
    if recipe.quantizer is not None:
        tok_cfg = dataclasses.replace(tok_cfg, tokenizer=dataclasses.replace(tok_cfg.tokenizer,
                                                                             quantizer=recipe.quantizer))
    tokenizer = train_tokenizer_in(ctx.run_dir / "tokenizer", tok_cfg, seed)
    last = last_validation(ctx.run_dir / "tokenizer")
    metrics: dict[str, Any] = {"psnr": last["psnr"], "ssim": last["ssim"], "usage": 100 * last["usage"],
                               "perplexity": last["perplexity"]}
    if recipe.transformer.loop.steps > 0:
        model = train_transformer_in(ctx.run_dir / "transformer", recipe.transformer, tokenizer, seed)
        ev = evaluator(model, recipe.samples, min(recipe.samples, 250), seed)
        metrics.update(class_scores(ev, recipe.samples, recipe.decode, recipe.guidance))
    return metrics


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
def conditional_scores(ev: Evaluator, task: str, decode: DecodeConfig) -> dict[str, float]:
    """fp / fi on the evaluator's held-out clips: PSNR / SSIM of the generated frames, the baseline's
    (fp: copy-last-frame; fi: linear blending of the two given frames), and the Frechet distance of the
    whole predicted clips to other real clips (`ev.reference`) in the digit classifier's space."""
    from magvit.evaluation.scores import classifier_frechet, frame_prediction_scores
    from magvit.metrics import psnr, ssim

    _, given, pred = ev.predict(task, decode)
    real = ev.real
    made = ~given[0, 0, :, 0, 0]  # (T,) the frames the model made
    frechet = classifier_frechet(ev.classifier, pred, ev.reference)
    if task == "fp":
        scores = frame_prediction_scores(pred, real, int((~made).sum()))
        return {"fp_psnr": scores["psnr"], "fp_ssim": scores["ssim"], "fp_baseline_psnr": scores["copy_psnr"],
                "fp_frechet": frechet}
    w = torch.linspace(0, 1, real.shape[2]).view(1, 1, -1, 1, 1)  # linear blend of the first and the last frame
    blend = real[:, :, :1] * (1 - w) + real[:, :, -1:] * w
    pick = lambda v: v[:, :, made]
    return {"fi_psnr": psnr(pick(pred), pick(real)).mean().item(),
            "fi_ssim": ssim(pick(pred), pick(real)).mean().item(),
            "fi_baseline_psnr": psnr(pick(blend), pick(real)).mean().item(), "fi_frechet": frechet}


@PROCEDURES.register("transformer", TransformerRecipe, help="a transformer recipe on a shared tokenizer")
def transformer_run(recipe: TransformerRecipe, seed: int, ctx: Context) -> dict[str, Any]:
    """Class accuracy / Frechet of class-conditional samples (cg), frame prediction against
    copy-last-frame and interpolation against linear blending (fp, fi), on held-out moving digits."""
    shared = ctx.shared("tokenizer", recipe.tokenizer, lambda d: train_tokenizer_in(d, recipe.tokenizer))
    model = train_transformer_in(ctx.run_dir / "transformer", recipe.transformer, shared / "tokenizer", seed)
    ev = evaluator(model, recipe.eval_clips, max(recipe.eval_clips, recipe.samples), seed)
    tasks = ev.release.info.tasks
    metrics: dict[str, Any] = class_scores(ev, recipe.samples, recipe.decode, recipe.guidance) if "cg" in tasks else {}
    for task in ("fp", "fi"):
        if task in tasks:
            metrics.update(conditional_scores(ev, task, recipe.decode))
    return metrics
