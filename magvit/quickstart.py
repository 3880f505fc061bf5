"""`magvit quickstart` / `magvit run configs/quickstart.yaml`: the whole stack on a CPU in minutes.

One recipe, four stages, each the project's own code path:
1. train a tiny causal3d-LFQ tokenizer on moving digits (`train_tokenizer`);
2. train a tiny multi-task masked transformer on its tokens (`train_transformer`, COMMIT);
3. sample with the one decode loop: class-conditional clips (a row per class), frame prediction and
   interpolation on held-out clips (condition | prediction | ground truth), central inpainting;
4. score: tokenizer PSNR on held-out clips, the class accuracy of the samples under the project's
   digit classifier (magvit.bench.digits), frame-prediction PSNR against copy-last-frame.
Everything lands in `out/`: the two run folders, the GIFs, `summary.json`, and a printed table.

The recipe is `QUICKSTART` below; `configs/quickstart.yaml` holds the same values (a test checks).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from magvit.bench.digits import Recipe
from magvit.config import from_dict, save_config
from magvit.decode import DecodeConfig
from magvit.errors import MagvitError
from magvit.fileio import atomic_write_text
from magvit.training.tokenizer import TokenizerTrainConfig
from magvit.training.transformer import TransformerTrainConfig


@dataclass(frozen=True)
class ReportConfig:
    """What stage 3 and 4 sample and score."""

    samples_per_class: int = 4
    eval_clips: int = 16  # held-out moving-digit clips for the tokenizer, frame prediction and interpolation
    shown_clips: int = 4  # of those, shown in the GIFs
    decode: DecodeConfig = DecodeConfig(steps=12, temperature=0.7, choice_temperature=4.5)
    guidance: float = 2.0  # classifier-free guidance for the class-conditional samples
    seed: int = 0
    fps: float = 6.0
    classifier: Recipe = Recipe()  # the digit classifier that scores the samples (trained once, cached)


@dataclass(frozen=True, kw_only=True)
class QuickstartConfig:
    """`kind: quickstart`: a tokenizer recipe, a transformer recipe, and what to report."""

    kind: str = "quickstart"
    out: str = "runs/quickstart"
    tokenizer: TokenizerTrainConfig
    transformer: TransformerTrainConfig
    report: ReportConfig = ReportConfig()


# digits start at the centre (MovingDigits `start`) and drift at 0.25-0.5 px per frame: the first frame of
# a class then looks alike in every clip, and the later latent frames (4 frames each) stay close to it, so
# the tiny transformer learns class -> shape and keeps the digit whole as it moves, within the CPU budget
# (random starts took it ~4x longer; at 0.5-1 px per frame the digit broke up in the later frames)
_DIGITS = {"name": "moving_digits", "frames": 9, "size": 32, "num_samples": 4000, "speed": [0.5, 1.0],
           "start": "center"}

# the defaults of `magvit quickstart`: tuned to finish in about 5 minutes on 2 CPU cores
QUICKSTART: dict[str, Any] = {
    "kind": "quickstart",
    "out": "runs/quickstart",
    "tokenizer": {
        "tokenizer": {"name": "causal3d", "preset": "tiny", "channels": 8,
                      "quantizer": {"name": "lfq", "bits": 8, "entropy_groups": 1, "entropy_weight": 0.01}},
        "data": _DIGITS,
        # many small steps at a high rate and a light entropy penalty: held-out digits the project's
        # classifier reads back 89% of the time, against 24% for 200 steps of 8 at 0.002 with 0.1
        "optim": {"lr": 0.005, "betas": [0.9, 0.99], "warmup_steps": 20},
        "loop": {"steps": 1000, "batch_size": 2, "ema_decay": None, "val_every": 1000, "save_every": 1000,
                 "val_batches": 4, "keep_last": 1},
    },
    "transformer": {
        "transformer": {"name": "masked", "preset": "tiny", "layers": 3, "width": 128, "heads": 4,
                        "dropout": 0.0},
        "data": _DIGITS,
        # cg-heavy: at 2 : 1 : 1 : 0.5 the samples ignored the class; 4 : 2 : 1 : 0.5 -> 70%, 8 : 1 : 1 : 0.5 -> 95%
        "tasks": {"cg": 8.0, "fp": 1.0, "fi": 1.0, "ipc": 0.5},
        "task_options": {"fp": {"cond_frames": 5}},  # latent frames 0-1 given (the velocity is seen), 2 predicted
        "optim": {"lr": 0.002, "betas": [0.9, 0.96], "weight_decay": 0.01, "warmup_steps": 50},
        "loop": {"steps": 700, "batch_size": 16, "ema_decay": None, "val_every": 700, "save_every": 700,
                 "val_batches": 1, "keep_last": 1},
        "preview": {"num": 0},
    },
}


def quickstart_config(out: str | None = None, overrides: dict[str, Any] | None = None) -> QuickstartConfig:
    """The default recipe, with `out` and dotted `key=value` overrides applied (strictly checked)."""
    from magvit.config import apply_overrides

    raw = apply_overrides(QUICKSTART, {**(overrides or {}), **({"out": out} if out else {})}, "magvit quickstart")
    return from_dict(QuickstartConfig, raw, "magvit quickstart", overrides=list(overrides or {}))


def run_quickstart(cfg: QuickstartConfig, quiet: bool = False) -> dict[str, Any]:
    """Run the four stages; returns the summary (also written as `out/summary.json`)."""
    from magvit.training.tokenizer import train_tokenizer
    from magvit.training.transformer import train_transformer

    out = Path(cfg.out)
    if (out / "tokenizer" / "checkpoints").exists() or (out / "transformer" / "checkpoints").exists():
        raise MagvitError(f"{out} already holds a quickstart run; pass --out to a new folder")
    save_config(cfg, out)
    timings: dict[str, float] = {}
    started = time.time()

    say = (lambda *a: None) if quiet else print
    say(f"[1/4] tokenizer: {cfg.tokenizer.tokenizer.name} ({cfg.tokenizer.loop.steps} steps)")
    tok_cfg = dataclasses.replace(cfg.tokenizer, run_dir=str(out / "tokenizer"))
    train_tokenizer(tok_cfg, quiet=quiet)
    timings["tokenizer_s"] = time.time() - started

    say(f"[2/4] transformer: tasks {', '.join(cfg.transformer.tasks)} ({cfg.transformer.loop.steps} steps)")
    tr_cfg = dataclasses.replace(cfg.transformer, run_dir=str(out / "transformer"),
                                 tokenizer=str(out / "tokenizer" / "tokenizer"))
    val = train_transformer(tr_cfg, quiet=quiet)
    timings["transformer_s"] = time.time() - started - timings["tokenizer_s"]

    say("[3/4] sampling and [4/4] scoring")
    summary = report(out / "transformer" / "model", cfg.report, out, quiet=quiet)
    # held-out masked-token cross-entropy (nats) of the transformer against the unigram baseline
    summary["masked_token_ce"] = sum(v for k, v in val.items() if k.endswith(".mask_ce")) / len(cfg.transformer.tasks)
    summary["unigram_entropy"] = val["unigram_entropy"]
    timings["report_s"] = time.time() - started - timings["tokenizer_s"] - timings["transformer_s"]
    summary["timings"] = {k: round(v, 1) for k, v in timings.items()}
    summary["total_s"] = round(time.time() - started, 1)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    if not quiet:
        print_table(summary)
    return summary


def report(model_dir: Path, cfg: ReportConfig, out: Path, quiet: bool = False) -> dict[str, Any]:
    """Samples and scores of a trained model folder on held-out moving digits; writes the GIFs."""
    from magvit.bench.digits import digit_classifier
    from magvit.sampling import load_release

    release = load_release(model_dir)
    # outside no_grad: the classifier is trained here on first use (then cached)
    classifier = digit_classifier(recipe=cfg.classifier, quiet=quiet)[0] if "cg" in release.meta["tasks"] else None
    return _sample_and_score(release, classifier, cfg, out, model_dir)


@torch.no_grad()
def _sample_and_score(release: Any, classifier: Any, cfg: ReportConfig, out: Path, model_dir: Path) -> dict[str, Any]:
    from magvit.bench.quality import class_accuracy, digits_options, frame_prediction_scores, real_clips
    from magvit.decode import generate_video
    from magvit.media import make_grid, write_video
    from magvit.metrics import psnr
    from magvit.tasks import TASKS, rule_of

    model, tokenizer = release.model, release.tokenizer
    frames, height, width = release.clip
    gen = lambda: torch.Generator().manual_seed(cfg.seed)
    real, labels = real_clips(frames, height, cfg.eval_clips, cfg.seed, **digits_options(release.meta))
    tasks, shown = release.meta["tasks"], cfg.shown_clips
    summary: dict[str, Any] = {"model": str(model_dir), "clip": [frames, height, width], "tasks": tasks}
    files = []

    # the tokenizer's round trip bounds every score below
    recon = tokenizer.decode(tokenizer.encode(real)).clamp(-1, 1)
    summary["tokenizer_psnr"] = psnr(recon, real).mean().item()
    summary["black_canvas_psnr"] = psnr(torch.full_like(real, -1.0), real).mean().item()  # the trivial floor

    # class-conditional samples: one row per class
    if classifier is not None:
        classes = torch.arange(release.meta["num_classes"]).repeat_interleave(cfg.samples_per_class)
        decode_cfg = dataclasses.replace(cfg.decode, guidance=cfg.guidance)
        samples = generate_video(model, tokenizer, "cg", decode_cfg, gen(), classes=classes,
                                 video_shape=(frames, height, width)).clamp(-1, 1)
        files.append(write_video(out / "samples_by_class.gif", make_grid(samples, nrow=cfg.samples_per_class),
                                 fps=cfg.fps))
        summary["class_accuracy"] = class_accuracy(classifier, samples, classes)
        summary["class_accuracy_real_clips"] = class_accuracy(classifier, real, labels)
        summary["class_accuracy_chance"] = 1 / release.meta["num_classes"]

    # frame prediction and interpolation on held-out clips: condition | prediction | ground truth
    for task in ("fp", "fi"):
        if task not in tasks:
            continue
        options = release.meta["task_options"].get(task, {})
        cond = TASKS.build(task).condition(real, tokenizer, rule_of(release.meta), **options)
        pred = generate_video(model, tokenizer, task, cfg.decode, gen(), cond=cond).clamp(-1, 1)
        if task == "fp":
            given = int(cond.pixel_mask[0, 0, :, 0, 0].sum())  # frames given
            scores = frame_prediction_scores(pred, real, given)
            summary.update(fp_cond_frames=given, fp_psnr=scores["psnr"], fp_ssim=scores["ssim"],
                           fp_copy_last_psnr=scores["copy_psnr"], fp_copy_last_ssim=scores["copy_ssim"])
        else:
            made = ~cond.pixel_mask[0, 0, :, 0, 0]  # (T,) the frames between the given ones
            summary["fi_psnr"] = psnr(pred[:, :, made], real[:, :, made]).mean().item()
        rows = torch.cat([cond.pixels[:shown], pred[:shown], real[:shown]])
        files.append(write_video(out / f"{task}.gif", make_grid(rows, nrow=shown), fps=cfg.fps))

    # central inpainting: the clip with its centre blanked | inpainted | ground truth
    if "ipc" in tasks:
        cond = TASKS.build("ipc").condition(real[:shown], tokenizer, rule_of(release.meta))
        filled = generate_video(model, tokenizer, "ipc", cfg.decode, gen(), cond=cond).clamp(-1, 1)
        rows = torch.cat([cond.pixels, filled, real[:shown]])
        files.append(write_video(out / "inpaint.gif", make_grid(rows, nrow=shown), fps=cfg.fps))
    summary["files"] = [str(f) for f in files]
    return summary


def print_table(summary: dict[str, Any]) -> None:
    rows = [
        ("tokenizer PSNR (held-out)", summary.get("tokenizer_psnr"), "dB"),
        ("masked-token cross-entropy", summary.get("masked_token_ce"), "nats"),
        ("  unigram baseline", summary.get("unigram_entropy"), "nats"),
        ("class accuracy of samples", summary.get("class_accuracy"), f"chance {summary.get('class_accuracy_chance')}"),
        ("frame prediction PSNR", summary.get("fp_psnr"), "dB"),
        ("  copy-last-frame baseline", summary.get("fp_copy_last_psnr"), "dB"),
        ("frame interpolation PSNR", summary.get("fi_psnr"), "dB"),
        ("total time", summary.get("total_s"), "s"),
    ]
    print()
    for name, value, unit in rows:
        if value is not None:
            print(f"  {name:<28} {value:>8.3f}  {unit}")
    print(f"\n  outputs: {', '.join(summary['files'])}")
