"""The sampling commands `magvit generate | predict | interpolate | inpaint | outpaint | edit`:
their settings and their output files. The sampling itself is `MagvitPipeline.sample`
(magvit.pipeline), the one code path Python users call too.

Settings are a `kind: sample` config (YAML, `key=value` overrides, command-line flags on top); the
resolved settings are written next to the outputs, so `magvit generate <out>/settings.yaml`
reproduces a result. The checkpoint is a model folder, a run folder, a shipped name (`digits-video`)
or a Hugging Face Hub id (see magvit.release).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from magvit.config import apply_overrides, from_dict, read_yaml, save_config
from magvit.decode import DecodeConfig, check_decode_config
from magvit.errors import MagvitError
from magvit.fileio import ensure_folder
from magvit.pipeline import FAMILIES, MagvitPipeline, save_videos
from magvit.tasks import TASKS

OUTPUT_SUFFIXES = (".mp4", ".gif", ".png")


@dataclass(frozen=True, kw_only=True)
class SampleConfig:
    """`kind: sample`: everything that decides a sampling result."""

    kind: str = "sample"
    checkpoint: str  # a model folder, a run folder, a shipped name (digits-video) or a Hub id (owner/name)
    task: str | None = None  # default: the command's first task the model was trained on
    prompt: str | None = None  # the task prompt the model runs with (default: the task's, see pipeline.PROMPTS)
    classes: tuple[int, ...] = ()  # class of each sample, cycled; default 0, 1, 2, ... (class tasks)
    num: int = 16  # samples (for a conditional task: samples of the one input)
    batch_size: int = 16
    decode: DecodeConfig = DecodeConfig()
    seed: int = 0
    input: str | None = None  # the video or image a conditional task starts from (or bundled:bikes, ...)
    cond_frames: int | None = None  # predict: frames given (default: as trained)
    condition_rule: Literal["any", "all"] | None = None  # magvit.tasks; default: the rule the model was trained with
    box: tuple[int, int, int, int] | None = None  # top, left, height, width in the model's pixels
    mask: str | None = None  # a PNG, white = the region to generate (resized and cropped like the input)
    out: str = "samples"  # a folder, or one file (.mp4 / .gif / .png)
    fps: float | None = None  # default: the model's
    device: str = "auto"  # auto: cuda if available
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast precision of the forward passes (magvit.runtime)
    compile: bool = False  # torch.compile the tokenizer and the decode step (sets decode.compile)


def sample_settings(command: str, config: str | None = None, overrides: Mapping[str, Any] | None = None,
                    flags: Mapping[str, Any] | None = None) -> SampleConfig:
    """YAML (optional) < `key=value` overrides < command-line flags (dotted keys; None = not given)."""
    raw = read_yaml(config) if config else {"kind": "sample"}
    source = str(config) if config else "command line"
    if raw.get("kind", "sample") != "sample":
        raise MagvitError(f"{source}: key 'kind': this command takes a 'sample' config, got '{raw.get('kind')}'")
    given = {**(overrides or {}), **{k: v for k, v in (flags or {}).items() if v is not None}}
    raw = apply_overrides({"kind": "sample", **raw}, given, source)
    if "checkpoint" not in raw:
        raise MagvitError(f"{source}: no checkpoint: pass --checkpoint DIR (or checkpoint=DIR)")
    cfg = from_dict(SampleConfig, raw, source, overrides=list(given))
    task = cfg.task
    if task is not None and task not in FAMILIES[command]:
        TASKS[task]  # an unknown name: one line listing the tasks
        runs = next((c for c, tasks in FAMILIES.items() if task in tasks), None)
        raise MagvitError(f"{source}: task '{task}' runs with `magvit {runs}`, not `magvit {command}`")
    return cfg


@torch.no_grad()
def run_sampling(command: str, cfg: SampleConfig, quiet: bool = False) -> list[Path]:
    """Sample `cfg.num` results for the command's task with the pipeline; write the grids and the
    settings; return the files."""
    if cfg.num < 1 or cfg.batch_size < 1:
        raise MagvitError(f"--num and --batch-size must be >= 1, got {cfg.num} and {cfg.batch_size}")
    check_decode_config(cfg.decode)  # before any work: a bad schedule or temperature is one line
    out = Path(cfg.out)
    ensure_folder(out.parent if out.suffix.lower() in OUTPUT_SUFFIXES else out)  # a bad --out: now, not at the end
    pipe = MagvitPipeline.from_pretrained(cfg.checkpoint, device=cfg.device, dtype=cfg.dtype, compile=cfg.compile)
    decode = dataclasses.replace(cfg.decode, compile=True) if cfg.compile else cfg.decode
    samples = pipe.sample(command, input=cfg.input, task=cfg.task, prompt=cfg.prompt, classes=cfg.classes,
                          num=cfg.num, batch_size=cfg.batch_size, cond_frames=cfg.cond_frames, box=cfg.box,
                          mask=cfg.mask, condition_rule=cfg.condition_rule, seed=cfg.seed, decode=decode,
                          progress=not quiet)
    cfg = dataclasses.replace(cfg, task=samples.task, prompt=samples.prompt)
    shown = samples.videos
    paired = samples.condition is not None
    if paired:  # condition | result, one pair per row
        given = samples.condition.repeat_interleave(samples.num, 0)
        shown = torch.stack([given, shown], 1).flatten(0, 1)
    return write_outputs(cfg, shown, nrow=2 if paired else None, fps=cfg.fps or pipe.info.fps, quiet=quiet)


def write_outputs(cfg: SampleConfig, videos: Tensor, nrow: int | None, fps: float, quiet: bool) -> list[Path]:
    """Into a folder: samples.mp4 + samples.gif (clips) and samples.png (first frames), settings.yaml.
    Or one file (.mp4, .gif or .png) and `<stem>.settings.yaml` next to it. videos (N, 3, T, H, W)."""
    out = Path(cfg.out)
    if out.suffix.lower() in OUTPUT_SUFFIXES:
        files, settings = [out], out.with_name(f"{out.stem}.settings.yaml")
    else:
        names = ("samples.mp4", "samples.gif", "samples.png") if videos.shape[2] > 1 else ("samples.png",)
        files, settings = [out / name for name in names], out / "settings.yaml"
    for path in files:
        save_videos(videos, path, fps=fps, nrow=nrow)
    save_config(cfg, settings.parent, settings.name)
    if not quiet:
        print(f"wrote {', '.join(str(p) for p in [*files, settings])}")
    return [*files, settings]
