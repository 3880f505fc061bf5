"""`magvit quickstart` / `magvit run configs/quickstart.yaml`: the whole stack on a CPU in minutes.

One recipe, four stages, each the project's own code path:
1. train a tiny causal3d-LFQ tokenizer on moving digits (`train_tokenizer`);
2. train a tiny multi-task masked transformer on its tokens (`train_transformer`, COMMIT);
3. sample with the one decode loop: class-conditional clips (a row per class), frame prediction and
   interpolation on held-out clips (condition | prediction | ground truth), central inpainting;
4. score: tokenizer PSNR on held-out clips, the class accuracy of the samples under the project's
   digit classifier (magvit.bench.digits), frame-prediction PSNR against copy-last-frame.
Everything lands in `out/`: the two run folders, the GIFs, `summary.json`, and a printed table.

The recipe is the shipped `configs/quickstart.yaml` (found in the checkout or the installed package,
see magvit.shipped), with `key=value` overrides. Why its values: digits start at the canvas centre and
drift slowly, so the first frame of a class looks alike and the tiny transformer learns class ->
shape in CPU minutes; the tokenizer takes many small steps at a high rate with a light entropy
penalty; the task mix is cg-heavy so the samples follow their class (BENCHMARKS.md section 4 has the
measurements). Scores come from the quality bench's `Evaluator` (magvit.bench.quality): the same
held-out clips, conditions and decoding as `magvit bench quality`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from magvit import shipped
from magvit.bench.digits import Recipe
from magvit.config import load_as, save_config
from magvit.decode import DecodeConfig
from magvit.errors import MagvitError
from magvit.fileio import atomic_write_text
from magvit.training.tokenizer import TokenizerTrainConfig
from magvit.training.transformer import TransformerTrainConfig


@dataclass(frozen=True)
class ReportConfig:
    """What stage 3 and 4 sample and score."""

    samples_per_class: int = 10  # class accuracy over 100 samples (40 moved it by +-7 points between seeds' evals)
    eval_clips: int = 32  # held-out moving-digit clips for the tokenizer, frame prediction and interpolation
    shown_clips: int = 4  # of those, shown in the GIFs
    decode: DecodeConfig = DecodeConfig(steps=12, temperature=0.7, choice_temperature=4.5)
    guidance: float = 2.0  # classifier-free guidance for the class-conditional samples
    seed: int = 0
    fps: float = 6.0
    classifier: Recipe = Recipe()  # the digit classifier that scores the samples (trained once, cached)
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"  # precision of sampling and the tokenizer (the classifier: fp32)


@dataclass(frozen=True, kw_only=True)
class QuickstartConfig:
    """`kind: quickstart`: a tokenizer recipe, a transformer recipe, and what to report."""

    kind: str = "quickstart"
    out: str = "runs/quickstart"
    tokenizer: TokenizerTrainConfig
    transformer: TransformerTrainConfig
    report: ReportConfig = ReportConfig()


def quickstart_config(out: str | None = None, overrides: dict[str, Any] | None = None) -> QuickstartConfig:
    """The shipped recipe (configs/quickstart.yaml), with `out` and dotted `key=value` overrides applied
    (strictly checked)."""
    path = shipped.find("configs", "quickstart.yaml")
    if path is None:
        raise MagvitError("configs/quickstart.yaml is missing from this installation of magvit; reinstall it")
    return load_as(QuickstartConfig, path, {**(overrides or {}), **({"out": out} if out else {})})


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
    from magvit.pipeline import MagvitPipeline

    pipe = MagvitPipeline.from_pretrained(model_dir, dtype=cfg.dtype)
    # outside no_grad: the classifier is trained here on first use (then cached)
    classifier = digit_classifier(recipe=cfg.classifier, quiet=quiet)[0] if "cg" in pipe.info.tasks else None
    return _sample_and_score(pipe, classifier, cfg, out, model_dir)


@torch.no_grad()
def _sample_and_score(pipe: Any, classifier: Any, cfg: ReportConfig, out: Path, model_dir: Path) -> dict[str, Any]:
    from magvit.bench.quality import Evaluator, class_accuracy, frame_prediction_scores
    from magvit.media import make_grid, write_video
    from magvit.metrics import psnr

    info = pipe.info
    frames, height, width = pipe.clip
    by_class = torch.arange(info.num_classes).repeat_interleave(cfg.samples_per_class)
    # one decode call per task (a batch as large as the largest set), seeded by cfg.seed
    ev = Evaluator(pipe, classifier, cfg.eval_clips, max(cfg.eval_clips, len(by_class)), cfg.seed)
    real, labels, shown = ev.real, ev.labels, cfg.shown_clips
    summary: dict[str, Any] = {"model": str(model_dir), "clip": [frames, height, width], "tasks": list(info.tasks)}
    files = []

    # the tokenizer's round trip bounds every score below
    summary["tokenizer_psnr"] = psnr(ev.reconstruct(), real).mean().item()
    summary["black_canvas_psnr"] = psnr(torch.full_like(real, -1.0), real).mean().item()  # the trivial floor

    # class-conditional samples: one row per class
    if classifier is not None:
        samples, accuracy = ev.class_samples(by_class, dataclasses.replace(cfg.decode, guidance=cfg.guidance))
        files.append(write_video(out / "samples_by_class.gif", make_grid(samples, nrow=cfg.samples_per_class),
                                 fps=cfg.fps))
        summary["class_accuracy"] = accuracy
        summary["class_accuracy_real_clips"] = class_accuracy(classifier, real, labels)
        summary["class_accuracy_chance"] = 1 / info.num_classes

    # frame prediction and interpolation on held-out clips: condition | prediction | ground truth
    for task in ("fp", "fi"):
        if task not in info.tasks:
            continue
        given, mask, pred = ev.predict(task, cfg.decode)
        if task == "fp":
            cond_frames = int(mask[0, 0, :, 0, 0].sum())  # frames given
            scores = frame_prediction_scores(pred, real, cond_frames)
            summary.update(fp_cond_frames=cond_frames, fp_psnr=scores["psnr"], fp_ssim=scores["ssim"],
                           fp_copy_last_psnr=scores["copy_psnr"], fp_copy_last_ssim=scores["copy_ssim"])
        else:
            made = ~mask[0, 0, :, 0, 0]  # (T,) the frames between the given ones
            summary["fi_psnr"] = psnr(pred[:, :, made], real[:, :, made]).mean().item()
        rows = torch.cat([given[:shown], pred[:shown], real[:shown]])
        files.append(write_video(out / f"{task}.gif", make_grid(rows, nrow=shown), fps=cfg.fps))

    # central inpainting: the clip with its centre blanked | inpainted | ground truth
    if "ipc" in info.tasks:
        given, _, filled = ev.predict("ipc", cfg.decode, clips=real[:shown])
        rows = torch.cat([given, filled, real[:shown]])
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
