"""The sampling commands `magvit generate | predict | interpolate | inpaint | outpaint | edit`:
their settings and their output files. The sampling itself is `MagvitPipeline.sample`
(magvit.pipeline), the one code path Python users call too.

Settings are a `kind: sample` config (YAML, `key=value` overrides, command-line flags on top); the
resolved settings are written next to the outputs, so `magvit generate <out>/settings.yaml --out
<another>` reproduces a result. The checkpoint is a model folder, a run folder, a shipped name (`digits-video`)
or a Hugging Face Hub id (see magvit.release).

`out` is a folder or one file whose suffix names its format (magvit.media.OUTPUT_SUFFIXES). An
existing output is replaced only with `overwrite`, and a file the run reads (the input video or image,
the mask, the settings YAML) never is; every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from magvit.config import find_config, option, resolve, save_config
from magvit.decode import DecodeConfig, check_decode_config
from magvit.errors import MagvitError
from magvit.fileio import check_outputs, output_folder
from magvit.inputs import TaskInputs, describe_frames
from magvit.media import OUTPUT_SUFFIXES
from magvit.pipeline import MagvitPipeline, Samples, check_family, sample_count, save_videos
from magvit.runtime import Dtype

FOLDER_FILES = ("samples.mp4", "samples.gif", "samples.png")  # clips; images: samples.png alone


@dataclass(frozen=True, kw_only=True)
class SampleConfig(TaskInputs):
    """`kind: sample`: everything that decides a sampling result: the task and its inputs (`TaskInputs`:
    task, prompt, classes, input, start, stride, cond_frames, condition_rule, box, mask), then these."""

    kind: str = "sample"
    checkpoint: str = option(help="a model folder (<run_dir>/model), a run folder, a shipped name (digits-video, "
                             "real-clips) or a Hugging Face Hub id owner/name")
    num: int | None = option(None, "samples per input (default: one per class given, else 1)")
    batch_size: int = option(16, "samples per decode call")
    decode: DecodeConfig = DecodeConfig()
    seed: int = option(0, "random seed")
    out: str = option("samples", "output folder, or one .mp4 / .gif / .avi / .webm / .mkv / .png / .jpg file")
    fps: float | None = option(None, "frames per second of the MP4/GIF (default: the model's)")
    device: str = option("auto", "auto (cuda if available, else cpu, as MagvitPipeline.from_pretrained), cpu, "
                         "cuda or cuda:N")
    dtype: Dtype = option("fp32", "autocast precision of the forward passes (magvit.runtime)")
    compile: bool = option(False, "torch.compile the tokenizer and the decode step (eager, with one warning, "
                           "where compiling fails; sets decode.compile)")


def sample_settings(command: str, config: str | None = None, overrides: Mapping[str, Any] | None = None,
                    flags: Mapping[str, Any] | None = None) -> SampleConfig:
    """YAML (optional) < `key=value` overrides < command-line flags (dotted keys; None = not given)."""
    source = str(config) if config else "command line"
    cfg = resolve(SampleConfig, config, overrides, flags, how={"checkpoint": "--checkpoint DIR (or checkpoint=DIR)"})
    if cfg.task is not None:
        check_family(command, cfg.task, f"{source}: ")
    return cfg


def output_files(out: str, frames: int | None = None) -> tuple[list[Path], Path]:
    """(grid files, settings file) that --out `out` stands for: one file, its settings
    `<stem>.settings.yaml` next to it; or a folder (given as one, existing, or a name without a
    suffix) holding FOLDER_FILES (samples.png alone for one-frame results; all three when `frames` is
    None) and settings.yaml. Any other suffix is one line listing the formats."""
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix in OUTPUT_SUFFIXES:
        return [path], path.with_name(f"{path.stem}.settings.yaml")
    if suffix and not str(out).endswith(("/", os.sep)) and not path.is_dir():
        raise MagvitError(f"--out {out}: cannot write {suffix!r} files; give a folder (a name ending in /) or a file "
                          f"ending in {', '.join(OUTPUT_SUFFIXES)}")
    names = FOLDER_FILES if frames is None or frames > 1 else FOLDER_FILES[2:]
    return [path / name for name in names], path / "settings.yaml"


@torch.no_grad()
def run_sampling(command: str, cfg: SampleConfig, quiet: bool = False, overwrite: bool = False,
                 source: str | Path | None = None) -> list[Path]:
    """Sample `cfg.num` results for the command's task with the pipeline; write the grids and the
    settings; return the files. Existing outputs are replaced only with `overwrite`; the input, the
    mask and `source` (the settings YAML) never are."""
    sample_count(cfg.num, cfg.batch_size, cfg.classes)  # the pipeline's own check, before any work
    # a shipped config's own input (configs/generate/digit.png) is found from any folder, as the config is
    cfg = dataclasses.replace(cfg, **{key: str(find_config(path)) for key in ("input", "mask")
                                      if isinstance(path := getattr(cfg, key), str) and path.startswith("configs/")})
    check_decode_config(cfg.decode)  # before any work: a bad schedule or temperature is one line
    files, settings = output_files(cfg.out)  # a bad or taken --out: now, not at the end
    check_outputs([*files, settings], [*cfg.files(), *([source] if source is not None else [])], overwrite)
    with output_folder(settings.parent):  # a failed run leaves no empty --out folder behind
        pipe = MagvitPipeline.from_pretrained(cfg.checkpoint, device=cfg.device, dtype=cfg.dtype, compile=cfg.compile)
        cfg, samples = sample_with(pipe, command, cfg, progress=not quiet)
        if samples.frames is not None and not quiet:
            print(f"read {describe_frames(samples.frames)} of {cfg.input}")
        videos, nrow = grid(samples)
        return write_outputs(cfg, videos, nrow=nrow, fps=cfg.fps or pipe.info.fps, quiet=quiet)


def sample_with(pipe: MagvitPipeline, command: str, cfg: SampleConfig, progress: bool = False,
                on_step: Callable[[int, int], None] | None = None) -> tuple[SampleConfig, Samples]:
    """Sample as `cfg` says with `pipe` (loaded from `cfg.checkpoint`, on `cfg.device`, in `cfg.dtype`:
    `run_sampling` and `magvit demo`, which keeps its models loaded) -> (`cfg` as resolved: the task,
    prompt and num that ran; the samples). `on_step` is `MagvitPipeline.sample`'s."""
    decode = dataclasses.replace(cfg.decode, compile=True) if cfg.compile else cfg.decode
    samples = pipe.sample(command, cfg, num=cfg.num, batch_size=cfg.batch_size, seed=cfg.seed, decode=decode,
                          progress=progress, on_step=on_step)
    return dataclasses.replace(cfg, task=samples.task, prompt=samples.prompt, num=samples.num), samples


def grid(samples: Samples) -> tuple[Tensor, int | None]:
    """The videos (N, 3, T, H, W) of a result's grid and its samples per row: condition | sample pairs,
    one pair per row, for a conditional task; the samples alone otherwise."""
    if samples.condition is None:
        return samples.videos, None
    given = samples.condition.repeat_interleave(samples.num, 0)
    return torch.stack([given, samples.videos], 1).flatten(0, 1), 2


def write_outputs(cfg: SampleConfig, videos: Tensor, nrow: int | None, fps: float, quiet: bool,
                  folder: str | Path | None = None) -> list[Path]:
    """The grids of videos (N, 3, T, H, W) and the settings, as `output_files`: into a folder
    samples.mp4 + samples.gif (clips) and samples.png (first frames), settings.yaml; or one file and
    `<stem>.settings.yaml` next to it. Each file atomically. `folder` puts the folder's files there
    instead of `cfg.out`, the settings still naming `cfg.out` (`magvit demo` writes into a folder of
    its own the settings that `magvit COMMAND settings.yaml` reproduces into `cfg.out`)."""
    files, settings = output_files(cfg.out if folder is None else f"{folder}{os.sep}", frames=videos.shape[2])
    for path in files:
        save_videos(videos, path, fps=fps, nrow=nrow)
    save_config(cfg, settings.parent, settings.name)
    if not quiet:
        print(f"wrote {', '.join(str(p) for p in [*files, settings])}")
    return [*files, settings]
