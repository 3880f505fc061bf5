"""The papers' evaluation protocols as configs: `magvit eval configs/eval/bair_fp.yaml --i3d PATH`.

A `kind: eval` config (`EvalConfig`, one per protocol in configs/eval/) names a model folder, the task(s)
it is scored on, the held-out split of a paper dataset, the clip (frames, size), how many clips, the
metrics and the paper's number for each. `evaluate` reads that many clips, evenly spaced over the split;
for each task it makes every clip's condition with the model's condition rule and trained task options
(`magvit.evaluation.scores.task_conditions`, as the Evaluator does), decodes one sample per clip through
the pipeline's one decode path (`MagvitPipeline.decode_batches`; the class of a class-conditional sample
is its clip's label) and scores the generated clips against the real ones:

- fvd: Frechet distance between I3D features of the real and the generated clips (the I3D's input:
  frames resized to 224x224, magvit.evaluation.features);
- fid: Frechet distance between Inception pool features of their frames (resized to 299x299);
- is: Inception score of the generated frames (the Inception's class probabilities, 10 splits);
- psnr / ssim: on the pixels a conditional task generates (SSIM on the frames holding them).

The clips are read and decoded a batch at a time (batch k decoded with its own generator, seeded from
`seed` and k), so only features stay in memory. Several tasks (MAGVIT's multi-task benchmarks) give a
row each and their mean, the figure a multi-task benchmark reports. The report (report.json, report.md
and the resolved settings.yaml, which reruns it) puts each score beside the paper's, with the command,
the commit and the date. Nothing downloads: the I3D and Inception weights are local files.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from einops import rearrange
from torch import Tensor
from torch.utils.data import Dataset

from magvit.config import option, registry_field, to_dict, to_yaml
from magvit.data import DATASETS, build_dataset
from magvit.decode import DecodeConfig, check_decode_config
from magvit.errors import MagvitError
from magvit.fileio import atomic_write_text, check_outputs, output_folder
from magvit.metrics import feature_statistics, frechet_distance, inception_score, region_psnr, ssim
from magvit.pipeline import MagvitPipeline
from magvit.runtime import Dtype
from magvit.tasks import TASKS, TaskOptions

Metric = Literal["fvd", "fid", "is", "psnr", "ssim"]
NAMES = {"fvd": "FVD", "fid": "FID", "is": "IS", "psnr": "PSNR dB", "ssim": "SSIM"}
NEEDS = {"fvd": "i3d", "fid": "inception", "is": "inception"}  # metric -> the weight file's flag
REPORT_FILES = ("report.json", "report.md", "settings.yaml")


@dataclass(frozen=True, kw_only=True)
class Paper:
    """Where a protocol comes from, and the paper's number for each metric (null: the paper states none)."""

    name: str = option("", "the paper", cli=False)
    section: str = option("", "the section that states the protocol", cli=False)
    values: Mapping[str, float | None] | None = option(None, "metric -> the paper's number (null: not stated)",
                                                       cli=False)


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """`kind: eval`: a paper's evaluation protocol (`magvit eval`)."""

    kind: str = option("eval", cli=False)
    checkpoint: str = option(help="the model scored: a model folder (<run_dir>/model), a run folder or a shipped "
                             "name")
    tasks: tuple[str, ...] = option(help="the task(s) scored, trained ones; several: a row each and their mean",
                                    metavar="TASK", names="magvit.tasks:TASKS")
    data: object = registry_field(DATASETS)  # the held-out split; its frames and size are set from the two below
    cond_frames: int | None = option(None, "frames given to frame prediction (fp, cfp) (default: as the model was "
                                     "trained)", metavar="K")
    frames: int | None = option(None, "frames per clip, as the paper scores them (default: the model's)")
    size: int | None = option(None, "clip height and width, as the paper scores them (default: the model's)")
    num_samples: int | None = option(None, "clips scored, evenly spaced over the split, one sample each per task "
                                     "(default: every clip of the split)")
    metrics: tuple[Metric, ...] = option(("fvd",), "fvd (needs --i3d), fid and is (need --inception), psnr, ssim",
                                         metavar="METRIC")
    i3d: str | None = option(None, "local I3D weights for FVD (TorchScript or .safetensors; nothing downloads)",
                             metavar="PATH")
    inception: str | None = option(None, "local Inception weights for FID and IS (TorchScript or .safetensors)",
                                   metavar="PATH")
    decode: DecodeConfig = DecodeConfig()
    batch_size: int = option(16, "samples per decode call, clips per feature pass")
    workers: int = option(0, "processes reading the clips (0: the main one)")
    seed: int = option(0, "random seed of the samples")
    device: str = option("auto", "auto (cuda if available, else cpu), cpu, cuda or cuda:N")
    dtype: Dtype = option("fp32", "autocast precision of the model (the feature "
                                                    "extractors stay fp32)")
    out: str = option("runs/eval", "folder for report.json, report.md and settings.yaml")
    paper: Paper = Paper()


# ---------------------------------------------------------------------------------------------
# Checks before any work


def check_config(cfg: EvalConfig) -> None:
    """Everything that can be wrong before a model or a clip is read: one MagvitError line each."""
    if not cfg.tasks or not cfg.metrics:
        raise MagvitError("an evaluation needs at least one task (--tasks) and one metric (--metrics)")
    for task in cfg.tasks:
        TASKS[task]  # an unknown name: one line listing the tasks
    for metric, flag in NEEDS.items():
        path = getattr(cfg, flag)
        if metric in cfg.metrics and path is None:
            raise MagvitError(f"{metric} needs --{flag} PATH: a local weight file (TorchScript or .safetensors; "
                              "nothing downloads; see the README's evaluation protocols)")
        if metric in cfg.metrics and not Path(path).is_file():
            raise MagvitError(f"--{flag} {path}: no such file")
    unknown = sorted(set(cfg.paper.values or {}) - set(NAMES))
    if unknown:
        raise MagvitError(f"paper.values names {', '.join(unknown)}, not a metric (one of: {', '.join(NAMES)})")
    for name, least in (("batch_size", 1), ("num_samples", 1), ("workers", 0), ("cond_frames", 1), ("frames", 1),
                        ("size", 1)):
        value = getattr(cfg, name)
        if value is not None and value < least:
            raise MagvitError(f"{name} must be at least {least}, got {value}")
    check_decode_config(cfg.decode)


def load_pipeline(cfg: EvalConfig) -> MagvitPipeline:
    """The model, checked against the protocol: trained on its tasks, making its clips."""
    try:
        pipe = MagvitPipeline.from_pretrained(cfg.checkpoint, device=cfg.device, dtype=cfg.dtype)
    except MagvitError as e:
        if Path(cfg.checkpoint).exists():
            raise
        raise MagvitError(f"{e} (the shipped configs/eval/*.yaml name a placeholder model: pass --checkpoint "
                          "YOUR_MODEL_FOLDER)") from None
    untrained = [t for t in cfg.tasks if t not in pipe.info.tasks]
    if untrained:
        raise MagvitError(f"{pipe.name} was trained on task(s) {', '.join(pipe.info.tasks)}, not "
                          f"{', '.join(untrained)}")
    t, h, w = pipe.clip
    frames, size = cfg.frames or t, cfg.size or h
    if (frames, size, size) != (t, h, w):
        raise MagvitError(f"{pipe.name} makes {t}x{h}x{w} clips; this protocol scores {frames}x{size}x{size} clips: "
                          "evaluate a model trained at that size (or set frames= and size= to the model's)")
    return pipe


def held_out(cfg: EvalConfig, clip: tuple[int, int, int]) -> tuple[Any, Any, list[int]]:
    """(the data config as read, its dataset, the indices scored: evenly spaced over the whole split)."""
    frames, size, _ = clip
    fields = {f.name for f in dataclasses.fields(cfg.data)}
    if "frames" not in fields and frames != 1:
        raise MagvitError(f"{cfg.data.name} holds images: score it with a one-frame model (this one makes {frames})")
    changes = {k: v for k, v in (("frames", frames), ("size", size)) if k in fields}
    data = dataclasses.replace(cfg.data, **changes)
    dataset = build_dataset(data)
    count = len(dataset) if cfg.num_samples is None else min(cfg.num_samples, len(dataset))
    if count < 2 and {"fvd", "fid"} & set(cfg.metrics):
        raise MagvitError(f"a Frechet distance needs at least 2 clips; {data.name} gives {count} here")
    indices = torch.linspace(0, len(dataset) - 1, count).round().long().unique().tolist()
    return data, dataset, indices


# ---------------------------------------------------------------------------------------------
# Scoring


@dataclass
class Extractors:
    video: Callable[[Tensor], Tensor] | None  # I3D: clips (B, 3, T, H, W) -> (B, D)
    image: Callable[[Tensor], Tensor] | None  # Inception: frames (N, 3, H, W) -> (N, 2048)
    probs: Callable[[Tensor], Tensor] | None  # Inception: frames -> class probabilities (N, classes)


def load_extractors(cfg: EvalConfig, device: torch.device) -> Extractors:
    from magvit.evaluation.features import load_image_extractor, load_image_probabilities, load_video_extractor

    wants = set(cfg.metrics)
    return Extractors(load_video_extractor(cfg.i3d, device) if "fvd" in wants else None,
                      load_image_extractor(cfg.inception, device) if "fid" in wants else None,
                      load_image_probabilities(cfg.inception, device) if "is" in wants else None)


def clip_batches(dataset: Dataset, indices: list[int], batch_size: int,
                 workers: int) -> Iterator[tuple[Tensor, Tensor | None]]:
    """(clips (n, 3, T, H, W) in [-1, 1], labels (n,) or None) of `indices`, `batch_size` at a time."""
    from torch.utils.data import DataLoader, Subset

    for batch in DataLoader(Subset(dataset, indices), batch_size=batch_size, num_workers=workers):
        yield batch["video"], batch.get("label")


def batch_seed(seed: int, k: int) -> int:
    """The decode seed of batch k: each batch has its own generator, so no run holds all its samples."""
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


def features(ex: Extractors, clips: Tensor, device: torch.device, real: bool) -> dict[str, Tensor]:
    """What the extractors make of clips (n, 3, T, H, W): I3D features, Inception features of every frame,
    and (generated clips only) the frames' class probabilities; on the CPU."""
    clips = clips.to(device).float()
    frames = rearrange(clips, "n c t h w -> (n t) c h w")
    made = {}
    if ex.video is not None:
        made["fvd"] = ex.video(clips)  # (n, D)
    if ex.image is not None:
        made["fid"] = ex.image(frames)  # (n * T, 2048)
    if ex.probs is not None and not real:
        made["is"] = ex.probs(frames)  # (n * T, classes)
    return {k: v.float().cpu() for k, v in made.items()}


@torch.no_grad()
def score_task(pipe: MagvitPipeline, cfg: EvalConfig, task: str, dataset: Dataset, indices: list[int],
               ex: Extractors, real_stats: dict[str, tuple]) -> dict[str, float | None]:
    """One task on the clips: {metric: score}. `real_stats` (the real clips' feature statistics) is filled
    by the first task and reused by the next ones."""
    from tqdm.auto import tqdm

    from magvit.evaluation.scores import task_conditions

    built, device = TASKS.build(task), pipe.device
    # the protocol's frames given (BAIR 1, Kinetics-600 5)
    options = TaskOptions(cond_frames=cfg.cond_frames if "cond_frames" in built.options else None)
    real_feats, fake_feats, pixels = defaultdict(list), defaultdict(list), defaultdict(list)
    chunks = clip_batches(dataset, indices, cfg.batch_size, cfg.workers)
    for k, (real, labels) in enumerate(tqdm(chunks, total=-(-len(indices) // cfg.batch_size), desc=f"eval {task}",
                                            unit="batch", dynamic_ncols=True)):
        cond = task_conditions(pipe, task, real, len(real), options)[0]
        classes = class_ids(pipe, task, labels, built.use_class)
        fake, _ = pipe.decode_batches(task, cfg.decode, batch_seed(cfg.seed, k), len(real), len(real),
                                      condition=lambda *_, c=cond: c, classes=classes)  # (n, 3, T, H, W)
        for key, value in features(ex, fake, device, real=False).items():
            fake_feats[key].append(value)
        if not real_stats:
            for key, value in features(ex, real, device, real=True).items():
                real_feats[key].append(value)
        made = ~cond.pixel_mask.cpu()  # (n, 1, T, H, W): the generated pixels
        if not made.all():  # a conditional task: PSNR / SSIM where it generates
            frames = made.flatten(3).any(-1)[:, 0].any(0)  # (T,) frames holding a generated pixel
            pixels["psnr"].append(region_psnr(fake, real, made))
            pixels["ssim"].append(ssim(fake[:, :, frames], real[:, :, frames]))
    if not real_stats:
        real_stats.update({key: feature_statistics(torch.cat(v)) for key, v in real_feats.items()})
    scores: dict[str, float | None] = {}
    for metric in cfg.metrics:
        if metric in ("fvd", "fid"):
            scores[metric] = frechet_distance(*feature_statistics(torch.cat(fake_feats[metric])), *real_stats[metric])
        elif metric == "is":
            scores[metric] = inception_score(torch.cat(fake_feats["is"]))
        else:  # psnr, ssim: None for a task given nothing to compare with (cg, uncond)
            scores[metric] = torch.cat(pixels[metric]).mean().item() if pixels[metric] else None
    return scores


def class_ids(pipe: MagvitPipeline, task: str, labels: Tensor | None, use_class: bool) -> Tensor | None:
    """The class of each sample of a class-conditional task: its clip's label (None for the others)."""
    if not use_class:
        return None
    if labels is None:
        raise MagvitError(f"task {task} is class-conditional, but these clips have no labels")
    if int(labels.max()) >= pipe.info.num_classes:
        raise MagvitError(f"label {int(labels.max())} of the data is not a class of {pipe.name} "
                          f"({pipe.info.num_classes} classes)")
    return labels.long()


# ---------------------------------------------------------------------------------------------
# The report


def evaluate(cfg: EvalConfig, overwrite: bool = False, source: str | None = None,
             argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the protocol `cfg` describes; write report.json, report.md and settings.yaml into `cfg.out`
    (existing ones only with `overwrite`; `source`, the config read, never) and return the report.
    `argv`: the command as typed, after `magvit` (recorded in the report)."""
    from magvit.runtime import environment

    check_config(cfg)
    out = Path(cfg.out)
    check_outputs([out / name for name in REPORT_FILES], [source], overwrite)
    with output_folder(out):  # a failed run leaves no empty --out folder behind
        pipe = load_pipeline(cfg)
        data, dataset, indices = held_out(cfg, pipe.clip)
        ex = load_extractors(cfg, pipe.device)
        real_stats: dict[str, tuple] = {}
        rows = [{"task": task, **score_task(pipe, cfg, task, dataset, indices, ex, real_stats)} for task in cfg.tasks]
        report = {
            "protocol": Path(source).stem if source else "eval", "paper": to_dict(cfg.paper),
            "results": results(cfg, rows), "tasks": rows,
            "model": {"checkpoint": cfg.checkpoint, "folder": str(pipe.directory),
                      "trained_tasks": list(pipe.info.tasks), "clip": "x".join(map(str, pipe.clip))},
            "data": to_dict(data), "clips": len(indices), "samples_per_task": len(indices),
            "notes": notes(cfg, rows), "settings": to_dict(dataclasses.replace(cfg, data=data)),
            "environment": environment(pipe.device, list(argv) if argv is not None else None),
        }
        atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
        atomic_write_text(out / "report.md", markdown(report))
        atomic_write_text(out / "settings.yaml", to_yaml(dataclasses.replace(cfg, data=data)))  # the clips as read
        return report


def results(cfg: EvalConfig, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per metric: ours (the mean over the tasks that have it, None where none has) beside the paper's."""
    paper = dict(cfg.paper.values or {})
    out = []
    for metric in cfg.metrics:
        values = [row[metric] for row in rows if row[metric] is not None]
        out.append({"metric": metric, "ours": float(np.mean(values)) if values else None,
                    "paper": paper.get(metric)})
    return out


def notes(cfg: EvalConfig, rows: list[dict[str, Any]]) -> list[str]:
    said = []
    if len(rows) > 1:
        said.append(f"ours: the mean over the {len(rows)} tasks (a multi-task benchmark's figure)")
    if "fvd" in cfg.metrics:
        said.append("FVD: I3D features of the real and generated clips; the I3D sees frames resized to 224x224")
    if {"fid", "is"} & set(cfg.metrics):
        said.append("FID / IS: Inception on every frame, resized to 299x299; IS over 10 splits of the generated "
                    "frames")
    missing = [m for m in cfg.metrics if (cfg.paper.values or {}).get(m) is None]
    if missing:
        said.append(f"paper: not stated for {', '.join(missing)} (the config's paper.values gives no number)")
    if any(row.get(m) is None for row in rows for m in ("psnr", "ssim") if m in cfg.metrics):
        said.append("PSNR / SSIM: n/a for a task given no pixels (cg, uncond)")
    paste = "the given pixels pasted back" if cfg.decode.paste_back else "the raw decode"
    said.append(f"one sample per clip and task, {cfg.decode.steps} steps, {cfg.decode.schedule} schedule; {paste}")
    return said


def _shown(value: float | None) -> str:
    return "not stated" if value is None else f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"


def markdown(report: dict[str, Any]) -> str:
    paper, env = report["paper"], report["environment"]
    where = ", ".join(filter(None, [paper["name"], paper["section"] and f"section {paper['section']}"]))
    lines = [f"# {report['protocol']}" + (f": {where}" if where else ""), "",
             "| metric | ours | paper |", "|---|---|---|"]
    lines += [f"| {NAMES[r['metric']]} | {_shown(r['ours']) if r['ours'] is not None else 'n/a'} | "
              f"{_shown(r['paper'])} |" for r in report["results"]]
    if len(report["tasks"]) > 1:
        metrics = [r["metric"] for r in report["results"]]
        lines += ["", "| task | " + " | ".join(NAMES[m] for m in metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        lines += [f"| {row['task']} | " + " | ".join(_shown(row[m]) if row[m] is not None else "n/a"
                                                    for m in metrics) + " |" for row in report["tasks"]]
    data = report["data"]
    lines += ["", f"- model: {report['model']['checkpoint']} ({report['model']['clip']} clips)",
              f"- data: {data['name']} {data.get('split', '')} split under {data.get('root', '')}, "
              f"{report['clips']} clips", *[f"- {n}" for n in report["notes"]],
              f"- command: `{env['command']}`",
              f"- commit {env['commit']}, {env['date']}, {env['device']}, torch {env['torch']}", ""]
    return "\n".join(lines)
