"""Pieces both training recipes share: optimizer + lr schedule, EMA, metric logs, accelerate."""

from __future__ import annotations

import copy
import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from magvit.errors import MagvitError


@dataclass(frozen=True)
class OptimConfig:
    """Adam(W) with linear warm-up then cosine decay to `min_lr_ratio * lr`."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float | None = 1.0


@dataclass(frozen=True)
class LoopConfig:
    """How long and how often: shared by `train-tokenizer` and `train`."""

    steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"  # accelerate's autocast (`--dtype` sets it)
    compile: bool = False  # torch.compile the model's forward (magvit.runtime; eager with one warning if it fails)
    checkpointing: bool = False  # activation checkpointing per block: less memory, about one more forward
    ema_decay: float | None = 0.999
    num_workers: int = 0
    seed: int = 0
    log_every: int = 10
    val_every: int = 200
    val_batches: int = 2
    save_every: int = 500
    keep_last: int = 2
    # accelerate trackers (tensorboard, wandb, trackio, mlflow, ...) that get the scalars of train.csv /
    # val.csv and the validation previews, besides the CSVs; tensorboard writes into <run_dir>/logs
    log_with: tuple[str, ...] = ()


def lr_at(step: int, total: int, cfg: OptimConfig) -> float:
    """Learning rate at optimizer step `step` (0-based) of `total`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def build_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW; torch's fused kernel (one pass over all parameters, 5-7x faster than the per-tensor loop
    on a 2-core CPU, measured) where every parameter is a plain CPU or CUDA float tensor."""
    params = list(params)
    fused = all(type(p.data) is torch.Tensor and p.device.type in ("cpu", "cuda") and p.is_floating_point()
                for p in params)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
                             fused=fused or None)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def make_ema(model: nn.Module) -> nn.Module:
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model; buffers are copied. Every process does the same
    update on the same (synchronised) weights, so the EMA stays identical across processes."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach().to(e.dtype), 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers()):
        e.copy_(b)


class CsvLog:
    """Appends rows of metrics to a CSV file; the columns are fixed by the first row written. With an
    `accelerator` whose trackers are started, each row's numbers also go to them as `<prefix>/<key>`."""

    def __init__(self, path: Path, accelerator=None, prefix: str = ""):
        self.path, self.accelerator, self.prefix = path, accelerator, prefix
        self.columns: list[str] | None = None
        if path.is_file() and path.stat().st_size > 0:
            with path.open() as f:
                self.columns = next(csv.reader(f))

    def write(self, row: dict[str, float | int | str]) -> None:
        if self.columns is None:
            self.columns = list(row)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(self.columns)
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(c, "")) for c in self.columns])
        if self.accelerator is not None and self.accelerator.trackers:
            numbers = {f"{self.prefix}/{k}": float(v) for k, v in row.items()
                       if k != "step" and (torch.is_tensor(v) or type(v) in (int, float))}  # not task names, not ""
            self.accelerator.log(numbers, step=int(row["step"]))


def _fmt(value) -> str:
    if torch.is_tensor(value):
        value = value.item()
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def truncate_log(path: Path, step: int) -> None:
    """On resume: drop rows logged after the checkpoint's step (they will be logged again)."""
    if not path.is_file():
        return
    with path.open() as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) <= step]
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(kept)


# tracker name -> the module it needs (accelerate's own names; see accelerate.tracking)
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow",
            "comet_ml": "comet_ml", "aim": "aim", "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab"}


def make_accelerator(mixed_precision: str, grad_accum: int, log_with: tuple[str, ...] = (),
                     run_dir: Path | None = None):
    """An `accelerate.Accelerator`; with `log_with`, its trackers log under `run_dir/logs` (start them
    with `start_trackers`). fp16 without CUDA, an unknown tracker or one that is not installed is one
    clear error."""
    import importlib.util

    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    if mixed_precision == "fp16" and not torch.cuda.is_available():
        raise MagvitError("mixed_precision fp16 needs a CUDA GPU; use bf16 or no on this machine")
    for name in log_with:
        if name not in TRACKERS:
            raise MagvitError(f"loop.log_with: unknown tracker {name!r} (one of: {', '.join(TRACKERS)})")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            extra = " (or pip install 'magvit[tensorboard]')" if name == "tensorboard" else ""
            raise MagvitError(f"loop.log_with: {name} is not installed; pip install {TRACKERS[name]}{extra}")
    tracking = {}
    if log_with:
        config = ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(Path(run_dir) / "logs"))
        tracking = {"log_with": list(log_with), "project_config": config}
    return Accelerator(mixed_precision=mixed_precision, gradient_accumulation_steps=grad_accum, **tracking)


def start_trackers(accelerator, cfg, run_dir: Path, step: int) -> None:
    """Start the accelerator's trackers with the run's config as hyper-parameters (flat, dotted keys).
    A resumed run drops the tensorboard events logged after its checkpoint (they are logged again)."""
    from magvit.config import to_dict

    if not accelerator.log_with:
        return
    flat: dict[str, float | int | str | bool] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value if isinstance(value, (int, float, str, bool)) else str(value)

    walk("", to_dict(cfg))
    kwargs = {"tensorboard": {"purge_step": step}} if step else {}
    accelerator.init_trackers("magvit", config=flat, init_kwargs={**kwargs, "wandb": {"name": Path(run_dir).name}})


def log_preview(accelerator, tag: str, video: torch.Tensor, step: int, fps: float) -> None:
    """A validation preview (3, T, H, W) in [-1, 1] to the trackers: tensorboard gets its frames as
    images, wandb a video; other trackers get the scalars only."""
    from magvit.media import to_uint8

    if not accelerator.trackers:
        return
    frames = to_uint8(video)  # (T, H, W, 3)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({tag: frames}, step=step, dataformats="NHWC")
        elif tracker.name == "wandb":
            import wandb

            tracker.log({tag: wandb.Video(frames.transpose(0, 3, 1, 2), fps=fps, format="gif")}, step=step)


def find_epoch_sampler(loader):
    """The `EpochSampler` inside a (possibly accelerate-prepared) DataLoader."""
    from magvit.data import EpochSampler

    seen, todo = set(), [loader]
    while todo:
        obj = todo.pop()
        if isinstance(obj, EpochSampler):
            return obj
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        todo += [getattr(obj, "batch_sampler", None), getattr(obj, "sampler", None)]
    raise TypeError("the loader was not built by magvit.data.build_dataloader")


def infinite_batches(loader, start_epoch: int, skip: int):
    """Yield (epoch, index_in_epoch, batch) forever; starts at `skip` batches into `start_epoch`.

    Skipping works on indices (the sampler's permutation, or a shard stream's order, is a function of
    seed and epoch), so resuming never loads the skipped data.
    """
    from accelerate import skip_first_batches

    stream = getattr(loader.dataset, "per_process", False)  # magvit.data.shards: it skips by itself
    sampler, epoch = None if stream else find_epoch_sampler(loader), start_epoch
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(epoch)
        if stream:
            loader.dataset.set_start(skip)
        source = skip_first_batches(loader, skip) if skip and not stream else loader
        if hasattr(source, "set_epoch"):  # accelerate's loader sets its own pass count as the epoch on each pass
            source.set_epoch(epoch)
        for i, batch in enumerate(source, start=skip):
            yield epoch, i, batch
        epoch, skip = epoch + 1, 0


def prepare_loader(accelerator, loader):
    """The training loader as this process iterates it: accelerate splits a map-style loader's batches
    between the processes; a stream that already reads only this process's shards (`per_process`: the
    `shards` dataset) just gets its batches moved to the device."""
    if not getattr(loader.dataset, "per_process", False):
        return accelerator.prepare(loader)
    from accelerate.data_loader import prepare_data_loader

    return prepare_data_loader(loader, accelerator.device, num_processes=1, process_index=0, put_on_device=True,
                               dispatch_batches=False)


# ---------------------------------------------------------------------------------------------
# Run folders and resume (both recipes)


def check_run_dir(run_dir: Path, resume: bool, main: bool = True, quiet: bool = False) -> Path | None:
    """The newest checkpoint of `run_dir` to resume from (None: start from step 0).

    A fresh run in a folder that already holds checkpoints is one clear error: silently mixing two
    runs in one folder is worse than stopping. `--resume` on a folder with no checkpoint yet (a job
    preempted before its first save, re-queued with --resume) starts from scratch, says so in one
    line (on the main process, unless `quiet`), and the main process drops the log rows the killed
    run wrote."""
    from magvit.training.checkpoint import latest_checkpoint

    ckpt_dir = run_dir / "checkpoints"
    previous = latest_checkpoint(ckpt_dir)
    if previous is not None and not resume:
        raise MagvitError(
            f"{run_dir} already holds checkpoints; pass --resume to continue it, or set run_dir= to a new folder"
        )
    if resume and previous is None and main:
        if not quiet:
            print(f"--resume: no checkpoint under {ckpt_dir} yet; starting from scratch", flush=True)
        for name in ("train.csv", "val.csv"):
            truncate_log(run_dir / name, 0)
    return previous


def finite_everywhere(accelerator, loss: torch.Tensor) -> bool:
    """True if the loss is finite on every process (all skip together, or none: no DDP hang)."""
    flag = torch.isfinite(loss.detach()).float().reshape(1)
    if accelerator.num_processes > 1:
        flag = accelerator.reduce(flag, reduction="min")
    return bool(flag.item())


class NonFiniteGuard:
    """Skips steps whose loss is NaN/inf on any process (every process skips together: no DDP hang)
    and stops the run with one clear line after `limit` such steps in a row."""

    def __init__(self, limit: int = 10):
        self.limit, self.in_a_row = limit, 0

    def ok(self, accelerator, loss: torch.Tensor, step: int) -> bool:
        if finite_everywhere(accelerator, loss):
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        if self.in_a_row > self.limit:
            raise MagvitError(f"the loss was NaN/inf {self.in_a_row} times in a row at step {step}; "
                              "lower the learning rate or use mixed_precision=no / bf16")
        return False


def apply_gradients(accelerator, optimizer, loss: torch.Tensor, parameters, grad_clip: float | None,
                    engine=None):
    """backward, clip (once gradients are synchronised, when `grad_clip` is set), step, zero the
    gradients; -> the gradient norm before clipping, or None when not clipped.

    `engine`: the DeepSpeed engine of the model (see `deepspeed_engine`), which does all of this itself
    (clipping as its config says); accelerate's `backward` would drive the first engine prepared only."""
    if engine is not None:
        engine.set_gradient_accumulation_boundary(is_boundary=accelerator.sync_gradients)
        engine.backward(loss)
        if not accelerator.sync_gradients:
            return None
        engine.step()
        return engine.get_global_grad_norm() if grad_clip else None
    accelerator.backward(loss)
    norm = None
    if accelerator.sync_gradients and grad_clip:
        norm = accelerator.clip_grad_norm_(parameters, grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def deepspeed_engine(model):
    """`model` if it is a DeepSpeed engine (an `accelerator.prepare`d model under DeepSpeed), else None."""
    return model if type(model).__name__ == "DeepSpeedEngine" else None


def step_generator(seed: int, *keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded by (seed, *keys), e.g. (seed, step, process): randomness that is a pure
    function of the step needs no saved state, so a resumed run draws exactly the same values."""
    import numpy as np

    state = np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 32 | int(state[1]))


def held_out_version(data_cfg):
    """The validation counterpart of a training data config: the held-out split where the data has
    one (else the same files), without random clips, crops and flips, so that every validation sees the
    same clips."""
    from dataclasses import replace

    fixed = {k: False for k in ("random_clip", "random_crop", "flip") if hasattr(data_cfg, k)}
    if hasattr(data_cfg, "split"):
        fixed |= {"split": "val", **({"num_samples": 64} if hasattr(data_cfg, "num_samples") else {})}
    return replace(data_cfg, **fixed)
