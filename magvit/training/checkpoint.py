"""Training checkpoints as plain data: safetensors for tensors, JSON for everything else.

A checkpoint is a folder `<run>/checkpoints/step-00001000/` holding
- `<name>.safetensors` for each model (unwrapped, uncompiled weights) and its EMA,
- `<name>.optim.safetensors` + `<name>.optim.json` for each optimizer (tensor state / hyper-params),
- `rng.safetensors` (torch CPU and CUDA generator states) and `state.json` (step, epoch, batch
  position, Python and NumPy RNG states, the fp16 grad scaler's scale and growth counter).
It is written into `step-….tmp` and renamed when complete, so a crash never leaves a half
checkpoint that `latest_checkpoint` would pick; only the newest `keep` are kept. Nothing is
pickled, and everything loads with the safe loaders (`weights_only` semantics).
"""

from __future__ import annotations

import json
import random
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from magvit.errors import MagvitError
from magvit.weights import load_weights

_STEP_DIR = re.compile(r"^step-(\d+)$")


class StateSource(Protocol):
    """What a checkpoint reads a model or an optimizer through: the module or optimizer itself, or under a
    sharded engine its gathered full state (`sharding.Gathered`)."""

    def state_dict(self) -> dict[str, Any]: ...


def save_state_dict(state: Mapping[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path))


def load_state_dict_into(module: nn.Module, path: Path) -> None:
    """Load safetensors weights with strict key and shape checks; one clear line on mismatch."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise MagvitError(f"{path}: cannot read safetensors ({e})") from None
    load_weights(module, state, str(path))


def _optimizer_to_plain(optimizer: StateSource) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, slots in sd["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_plain(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for flat, value in [*tensors.items(), *meta["scalars"].items()]:
        idx, key = flat.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    plain = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss]}
    return tensors, plain


def _set_rng_state(tensors: dict[str, torch.Tensor], plain: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    version, state, gauss = plain["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(
    directory: Path, step: int, modules: Mapping[str, StateSource], optimizers: Mapping[str, StateSource],
    state: dict, keep: int, scaler: torch.amp.GradScaler | None = None,
) -> Path:
    """Write `directory/step-XXXXXXXX` atomically and delete all but the newest `keep`. `scaler`: the
    run's GradScaler (fp16), whose loss scale and growth counter a resume must continue from. Modules and
    optimizers are read through their `state_dict()` (under a sharded engine: `sharding.Gathered`)."""
    final = directory / f"step-{step:08d}"
    tmp = directory / f"step-{step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, module in modules.items():
        save_state_dict(module.state_dict(), tmp / f"{name}.safetensors")
    for name, optimizer in optimizers.items():
        tensors, meta = _optimizer_to_plain(optimizer)
        save_state_dict(tensors, tmp / f"{name}.optim.safetensors")
        (tmp / f"{name}.optim.json").write_text(json.dumps(meta))
    rng_tensors, rng_plain = _rng_state()
    save_state_dict(rng_tensors, tmp / "rng.safetensors")
    if scaler is not None and scaler.is_enabled():
        state = {**state, "grad_scaler": scaler.state_dict()}  # plain floats and ints
    (tmp / "state.json").write_text(json.dumps({**state, "step": step, "rng": rng_plain}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints under `directory`, oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def read_optimizer_state(path: Path, name: str) -> dict:
    """The optimizer `name`'s saved state in torch's layout (`optimizer.state_dict()`): its tensors
    keyed by parameter index, its param groups. A checkpoint without it is one MagvitError line."""
    if not (path / f"{name}.optim.json").is_file():
        raise MagvitError(f"{path}: checkpoint has no optimizer state {name}; it was written by another kind of run")
    meta = json.loads((path / f"{name}.optim.json").read_text())
    return _optimizer_from_plain(load_file(str(path / f"{name}.optim.safetensors")), meta)


def load_checkpoint(
    path: Path, modules: Mapping[str, nn.Module], optimizers: Mapping[str, torch.optim.Optimizer],
    scaler: torch.amp.GradScaler | None = None,
) -> dict:
    """Restore modules, optimizers, RNG states and the fp16 grad scaler (when the run has one and the
    checkpoint holds its state) in place; return the saved `state.json` dict."""
    if not (path / "state.json").is_file():
        raise MagvitError(f"{path}: not a magvit training checkpoint (no state.json)")
    for name, module in modules.items():
        file = path / f"{name}.safetensors"
        if not file.is_file():
            raise MagvitError(f"{path}: checkpoint has no {file.name}; it was written by another kind of run")
        load_state_dict_into(module, file)
    for name, optimizer in optimizers.items():
        try:
            optimizer.load_state_dict(read_optimizer_state(path, name))
        except (ValueError, KeyError) as e:
            raise MagvitError(f"{path}: optimizer state {name} does not match this run ({e})") from None
    state = json.loads((path / "state.json").read_text())
    _set_rng_state(load_file(str(path / "rng.safetensors")), state.pop("rng"))
    saved_scaler = state.pop("grad_scaler", None)
    if scaler is not None and scaler.is_enabled() and saved_scaler:
        scaler.load_state_dict(saved_scaler)
    return state
