"""Release weight folders, shared by tokenizers and transformers.

A folder holds `config.json` (`{"format": ..., "version": ..., "config": {...}}`) and
`model.safetensors`: plain data, no pickles, each file written atomically. Loading rebuilds the
model from its registry entry and checks every key and shape; anything that does not match is
one `MagvitError` line naming the file. A folder is named by its path or, when no such path
exists, by a Hugging Face Hub id (`owner/name`), fetched with `huggingface_hub.snapshot_download`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TypeVar, overload

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from magvit.config import build_registered, to_dict
from magvit.errors import MagvitError
from magvit.fileio import atomic_path, atomic_write_text, read_json
from magvit.registry import Registry

M = TypeVar("M", bound=nn.Module)  # the model class a caller asks `load_weights_folder` for


def save_weights_folder(model: nn.Module, directory: str | Path, fmt: str, version: int) -> Path:
    """Write `model.config` as `config.json` and its state dict as `model.safetensors`."""
    directory = Path(directory)
    meta = {"format": fmt, "version": version, "config": to_dict(model.config)}
    atomic_write_text(directory / "config.json", json.dumps(meta, indent=2) + "\n")
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(directory / "model.safetensors") as tmp:
        save_file(weights, str(tmp), metadata={"format": fmt})
    return directory


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(name: str) -> bool:
    """`owner/name` that is not a local path: the form of a Hugging Face Hub model id."""
    return bool(_HUB_ID.match(name)) and not Path(name).expanduser().exists()


def hub_snapshot(repo_id: str, revision: str | None = None) -> Path:
    """The local folder of a Hub repository (downloaded once into the Hugging Face cache)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub comes with accelerate
        raise MagvitError(f"{repo_id}: loading from the Hugging Face Hub needs `pip install huggingface_hub`") from None
    try:
        return Path(snapshot_download(repo_id=repo_id, revision=revision))
    except (HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MagvitError(f"{repo_id}: no such local folder, and the Hugging Face Hub gave no copy ({first})") from None


def resolve_folder(name: str | Path, revision: str | None = None) -> Path:
    """A local folder as given, else the snapshot of the Hub id `name`."""
    if not Path(name).expanduser().exists() and looks_like_hub_id(str(name)):
        return hub_snapshot(str(name), revision)
    return Path(name).expanduser()


@overload
def load_weights_folder(directory: str | Path, registry: Registry, fmt: str, version: int, what: str,
                        map_location: str | torch.device = "cpu", *, kind: type[M]) -> M: ...


@overload
def load_weights_folder(directory: str | Path, registry: Registry, fmt: str, version: int, what: str,
                        map_location: str | torch.device = "cpu", kind: None = None) -> nn.Module: ...


def load_weights_folder(directory: str | Path, registry: Registry, fmt: str, version: int, what: str,
                        map_location: str | torch.device = "cpu", kind: type[nn.Module] | None = None) -> nn.Module:
    """Rebuild the `registry` entry a `save_weights_folder` folder describes, with its weights; with
    `kind`, the folder must hold that class (or a subclass)."""
    directory = Path(directory)
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise MagvitError(f"{path}: not found; a {what} folder holds config.json and model.safetensors")
    meta = read_json(config_path)
    raw = meta.get("config") if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != fmt or not isinstance(raw, dict):
        raise MagvitError(f"{config_path}: not a magvit {what} config (expected format '{fmt}' and a 'config' mapping)")
    if meta.get("version") != version:
        raise MagvitError(f"{config_path}: format version {meta.get('version')!r}, this magvit reads version {version}")
    config = build_registered(registry, raw, source=str(config_path))
    built = registry[config.name].build
    if kind is not None and not (isinstance(built, type) and issubclass(built, kind)):
        raise MagvitError(f"{directory}: holds a {config.name} {what}, not a {kind.__name__}")
    model = built(config)
    try:
        weights = load_file(str(weights_path), device=str(map_location))
    except (SafetensorError, OSError) as e:
        raise MagvitError(f"{weights_path}: cannot read safetensors ({e})") from None
    load_weights(model, weights, str(weights_path))
    return model.to(map_location)


def load_weights(model: nn.Module, weights: dict[str, Tensor], source: str) -> None:
    """`load_state_dict(strict=True)`, but any mismatch is one MagvitError line: how many keys are
    missing, unexpected or of another shape, each with its first example."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    shapes = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{len(missing)} missing (e.g. '{missing[0]}')"] if missing else []
        parts += [f"{len(unexpected)} unexpected (e.g. '{unexpected[0]}')"] if unexpected else []
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of another shape (e.g. '{k}': {tuple(weights[k].shape)}, "
                         f"the model expects {tuple(expected[k].shape)})")
        raise MagvitError(f"{source}: weights do not match the config: {'; '.join(parts)}")
    model.load_state_dict(weights, strict=True)
