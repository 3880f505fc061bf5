"""Model folders: what `magvit train` writes as `<run_dir>/model/` and every sampling path loads.

A model folder holds everything needed to run:

    config.json + model.safetensors   the masked transformer (`MaskedTransformer.from_pretrained`)
    tokenizer/                        its tokenizer (or magvit.json names a tokenizer folder elsewhere)
    magvit.json                       {"format": "magvit-model", "version": 1, **ModelInfo}
    README.md                         the model card (written with the folder, rewritten with its scores)
    summary.json                      optional: scores of the model (the quickstart writes them)

`ModelInfo` is the typed, frozen form of magvit.json. Folders written before a field existed still
read: a missing `condition_rule` means "all" (the strict rule every model was trained with before
MAGVIT's rule became the default), missing optional fields take their defaults, and keys this
version does not know are kept in `extra` and written back unchanged.

A model is named by a path (a model folder, a run folder holding `model/`, or a quickstart / `magvit
run` folder holding `transformer/model/`: `MODEL_PLACES`), a shipped name
(`digits-video`: see `magvit.shipped` for where shipped checkpoints are looked up), or a Hugging
Face Hub id (`owner/name`, downloaded with `huggingface_hub.snapshot_download`), in that order.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from magvit import shipped
from magvit.config import from_dict, to_dict
from magvit.errors import MagvitError
from magvit.fileio import atomic_write_text, read_json
from magvit.tasks import NO_OPTIONS, RULE_BEFORE_V2, TaskOptions, check_rule
from magvit.weights import hub_snapshot, looks_like_hub_id

FORMAT, VERSION = "magvit-model", 1
INFO_FILE = "magvit.json"
# where a folder holds its model folder: a `magvit train` run; a `magvit quickstart` / `magvit run` folder
MODEL_PLACES = ("model", "transformer/model")


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """magvit.json: what sampling needs besides the weights."""

    tasks: tuple[str, ...]  # the tasks the model was trained on, in its prompt order
    frames: int  # (frames, height, width) of the clips it was trained on
    size: tuple[int, int]
    grid: tuple[int, int, int] | None = None  # the token grid (t, h, w) of one clip
    tokenizer: str = "tokenizer"  # the tokenizer folder: relative to the model folder, or absolute
    task_options: Mapping[str, TaskOptions] = field(default_factory=dict)  # as trained, e.g. fp: {cond_frames: 5}
    num_classes: int = 0
    class_names: tuple[str, ...] | None = None
    fps: float = 8.0
    condition_rule: str = RULE_BEFORE_V2  # any | all (magvit.tasks); older folders: all
    trained_steps: int | None = None
    weights: str | None = None  # ema | raw
    loss_normalize: str | None = None  # positions | per_kind (magvit.training.transformer)
    data: Mapping[str, Any] | None = None  # the training data config (what "held-out clips" means for it)
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys of newer versions, kept as they are

    @property
    def clip(self) -> tuple[int, int, int]:
        """(frames, height, width) of the clips the model was trained on."""
        return self.frames, self.size[0], self.size[1]

    def options(self, task: str) -> TaskOptions:
        """The options `task` was trained with (a caller's own go over them: `TaskOptions.over`)."""
        return self.task_options.get(task, NO_OPTIONS)

    @classmethod
    def from_json(cls, raw: object, source: str = INFO_FILE) -> ModelInfo:
        if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("version") != VERSION:
            raise MagvitError(f"{source}: not a magvit model description of version {VERSION}")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        body = {k: v for k, v in raw.items() if k in known}
        extra = {k: v for k, v in raw.items() if k not in known and k not in ("format", "version")}
        info = from_dict(cls, {**body, "extra": extra}, source)
        check_rule(info.condition_rule)
        if info.num_classes < 0 or info.frames < 1 or min(info.size) < 1 or info.fps <= 0 or not info.tasks:
            raise MagvitError(f"{source}: a model has at least one task, num_classes >= 0, frames and size >= 1 and "
                              f"fps > 0; this one says tasks {list(info.tasks)}, num_classes {info.num_classes}, "
                              f"frames {info.frames}, size {list(info.size)}, fps {info.fps}")
        return info

    def to_json(self) -> dict[str, Any]:
        plain = to_dict(self)
        extra = plain.pop("extra")
        plain["task_options"] = {task: to_dict(o.given()) for task, o in self.task_options.items()}  # the set ones
        return {"format": FORMAT, "version": VERSION, **plain, **extra}


def read_info(directory: str | Path) -> ModelInfo:
    path = Path(directory) / INFO_FILE
    return ModelInfo.from_json(read_json(path), str(path))


def write_info(directory: str | Path, info: ModelInfo) -> Path:
    path = Path(directory) / INFO_FILE
    atomic_write_text(path, json.dumps(info.to_json(), indent=1) + "\n")
    return path


def write_model_folder(directory: str | Path, model: nn.Module, tokenizer: nn.Module, info: ModelInfo,
                       tokenizer_dir: str | Path | None = None, copy: bool = True) -> Path:
    """Write a model folder: the transformer, its tokenizer (a copy, or a reference to
    `tokenizer_dir`), magvit.json and the model card (with the folder's summary.json scores, if
    any); each file atomically. The one writer of model folders: training, save_pretrained, the
    quickstart."""
    directory = Path(directory)
    model.save_pretrained(directory)
    if copy or tokenizer_dir is None:
        tokenizer.save_pretrained(directory / "tokenizer")
        reference = "tokenizer"
    else:
        reference = str(Path(tokenizer_dir).resolve())
    info = dataclasses.replace(info, tokenizer=reference)
    write_info(directory, info)
    write_model_card(directory, model, tokenizer, info)
    return directory


def write_model_card(directory: str | Path, model: nn.Module, tokenizer: nn.Module, info: ModelInfo) -> Path:
    """README.md of a model folder from its models, info and summary.json (scores, when present)."""
    directory = Path(directory)
    scores = directory / "summary.json"
    summary = read_json(scores) if scores.is_file() else None
    atomic_write_text(directory / "README.md", model_card(directory.name, model, tokenizer, info, summary))
    return directory / "README.md"


def find_model_folder(name: str | Path, revision: str | None = None) -> Path:
    """The model folder `name` stands for: a path (a model folder, a `magvit train` run folder holding
    `model/`, or a `magvit quickstart` / `magvit run` folder holding `transformer/model/`), then a
    shipped checkpoint name, then a Hugging Face Hub id."""
    given = Path(name).expanduser()
    for folder in (given, *(given / inside for inside in MODEL_PLACES)):
        if (folder / INFO_FILE).is_file():
            return folder
    if given.is_dir():
        places = " or ".join(f"<folder>/{inside}" for inside in MODEL_PLACES)
        raise MagvitError(f"{name}: not a model folder (no {INFO_FILE} in it, nor in {places}); `magvit train` "
                          "writes one as <run_dir>/model, `magvit quickstart --out DIR` as DIR/transformer/model")
    if "/" not in str(name) and (found := shipped.find("checkpoints", str(name))) is not None:
        if (found / INFO_FILE).is_file():
            return found
    if looks_like_hub_id(str(name)):
        folder = hub_snapshot(str(name), revision)
        if not (folder / INFO_FILE).is_file():
            raise MagvitError(f"{name}: the Hub repository holds no {INFO_FILE}; it is not a magvit model folder")
        return folder
    known = ", ".join(shipped.names("checkpoints"))
    raise MagvitError(f"checkpoint '{name}' not found: no such folder, no shipped checkpoint of that name"
                      + (f" (shipped: {known})" if known else "") + ", and not a Hub id (owner/name)")


def load_model_folder(directory: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, nn.Module, ModelInfo]:
    """(transformer, tokenizer, info) of a model folder, both models in eval mode on `device`."""
    from magvit.tokenizers import Tokenizer
    from magvit.transformer import MaskedTransformer

    info = read_info(directory)
    tokenizer_dir = directory / info.tokenizer  # a relative name, or an absolute path
    model = MaskedTransformer.from_pretrained(directory, device=device).eval()
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir, device=device).eval()
    if tokenizer.codebook_size != model.config.codebook_size:
        raise MagvitError(f"{tokenizer_dir}: tokenizer has {tokenizer.codebook_size} codes, the transformer in "
                          f"{directory} {model.config.codebook_size}")
    try:
        grid = tuple(tokenizer.token_shape(*info.clip))
    except MagvitError as e:
        grid = f"none ({e})"
    if info.grid is not None and grid != tuple(info.grid):
        raise MagvitError(f"{tokenizer_dir}: this tokenizer is not the one the transformer in {directory} was trained "
                          f"on: {'x'.join(map(str, info.clip))} clips give token grid {grid}, the transformer's is "
                          f"{tuple(info.grid)}")
    return model, tokenizer, info


# ---------------------------------------------------------------------------------------------
# Model card


SCORES = {  # summary.json key -> how the card names it
    "tokenizer_psnr": "tokenizer PSNR on held-out clips (dB)",
    "class_accuracy": "class accuracy of class-conditional samples (project digit classifier)",
    "class_accuracy_chance": "  chance",
    "fp_psnr": "frame prediction PSNR (dB)",
    "fp_copy_last_psnr": "  copy-last-frame baseline (dB)",
    "fi_psnr": "frame interpolation PSNR (dB)",
    "masked_token_ce": "held-out masked-token cross-entropy (nats)",
    "unigram_entropy": "  unigram baseline (nats)",
    "total_s": "training + scoring time (s)",
}


def model_card(name: str, model: nn.Module, tokenizer: nn.Module, info: ModelInfo,
               summary: Mapping[str, Any] | None = None) -> str:
    """README.md of a model folder: what it is, how it was trained, its scores, how to load it."""
    t, h, w = info.clip
    cfg, tok = model.config, tokenizer.config
    quantizer = getattr(getattr(tok, "quantizer", None), "name", "?")
    lines = [
        "---", "library_name: magvit", "tags: [video-generation, masked-generative-transformer, maskgit, magvit]",
        "---",
        "", f"# {name}", "",
        f"A masked generative video transformer (MaskGIT's MVTM with MAGVIT's COMMIT conditioning) and its "
        f"{tok.name} tokenizer ({quantizer} quantizer, {tokenizer.codebook_size} codes), made with "
        f"[magvit](https://pypi.org/project/magvit/). It works on {t} frames of {h}x{w} pixels "
        f"({info.fps:g} fps), {'x'.join(map(str, info.grid or ()))} tokens per clip.",
        "", "## Training", "",
        f"- tasks: {', '.join(info.tasks)}"
        + (f" (options: {info.to_json()['task_options']})" if info.task_options else ""),
        f"- classes: {info.num_classes}" + (f" ({', '.join(info.class_names)})" if info.class_names else ""),
        f"- transformer: {cfg.layers} layers, width {cfg.width}, {cfg.heads} heads, conditioning "
        f"{cfg.conditioning}; {sum(p.numel() for p in model.parameters()):,} parameters",
        f"- condition rule: {info.condition_rule}; steps: {info.trained_steps}; weights: {info.weights}",
    ]
    if info.data:
        data = ", ".join(f"{k}: {v}" for k, v in to_dict(info.data).items())
        lines.append(f"- data: {data}")
    scores = [(label, summary[key]) for key, label in SCORES.items() if summary and summary.get(key) is not None]
    if scores:
        lines += ["", "## Scores (summary.json)", "", "| | |", "|---|---:|"]
        lines += [f"| {label} | {value:.4g} |" if isinstance(value, float) else f"| {label} | {value} |"
                  for label, value in scores]
    lines += [
        "", "## Use", "", "```python", "from magvit import MagvitPipeline", "",
        f'pipe = MagvitPipeline.from_pretrained("{name}")',
        "videos = pipe.generate(classes=[0, 1], steps=12)  # (2, 3, T, H, W) in [-1, 1]"
        if "cg" in info.tasks else "videos = pipe.generate(num=2, steps=12)  # (2, 3, T, H, W) in [-1, 1]",
        'pipe.save(videos, "samples.gif")', "```", "",
        f"or `magvit generate --checkpoint {name} --out samples.gif` on the command line.", "",
    ]
    return "\n".join(lines)
