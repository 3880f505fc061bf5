"""The one training loop both recipes run (`train-tokenizer`, `train`): resume, the learning-rate
schedule of each optimizer, EMA, the CSV logs and trackers, validation and checkpoints at their
cadence, the progress bar. Each recipe brings what differs: its step (`step_fn`: the micro-batches of
one optimizer step, its losses and their gradients), its log row and its validation.

    start = restore(run_dir, previous, modules, optimizers, accelerator, quiet)   # before accelerator.prepare
    loop = TrainingLoop(cfg.loop, accelerator, run_dir, start, desc="train", quiet=quiet)
    val = loop.run(loader, schedules, step_fn, log_row, validate, saved_modules, ema=ema, raw=raw)

Under a sharded engine (`sharding`: FSDP2, DeepSpeed) every process takes part in gathering the weights
before a validation and a checkpoint, which the main process then runs and writes.

Resuming is exact: a checkpoint holds the step, the epoch and the next batch, and the logs are cut back
to its step (the rows after it are written again).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from magvit.training.checkpoint import StateSource, load_checkpoint, save_checkpoint
from magvit.training.common import (
    CsvLog,
    LoopConfig,
    OptimConfig,
    infinite_batches,
    lr_at,
    set_lr,
    truncate_log,
    update_ema,
)

if TYPE_CHECKING:
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from magvit.training.sharding import Sharding

Terms = dict[str, "torch.Tensor | float | str"]  # one step's losses, scalars and task, as the recipe names them
Batch = dict[str, "torch.Tensor"]  # one collated batch: the dataset's keys -> (B, ...) tensors


@dataclass(frozen=True)
class Start:
    """Where a run starts: step 0, or a checkpoint's step and its place in the data."""

    step: int = 0
    epoch: int = 0
    next_batch: int = 0


def restore(run_dir: Path, previous: Path | None, modules: Mapping[str, nn.Module],
            optimizers: Mapping[str, torch.optim.Optimizer], accelerator: Accelerator, quiet: bool = False) -> Start:
    """Load `previous` (a checkpoint folder, or None: a fresh run) into the unwrapped modules and the
    optimizers, before `accelerator.prepare`; cut the logs back to its step."""
    if previous is None:
        return Start()
    state = load_checkpoint(previous, modules, optimizers, accelerator.scaler)
    if accelerator.is_main_process:
        for name in ("train.csv", "val.csv"):
            truncate_log(run_dir / name, state["step"])
        if not quiet:
            print(f"resumed from {previous} at step {state['step']}")
    return Start(state["step"], state["epoch"], state["next_batch"])


class TrainingLoop:
    """Steps `start.step` .. `loop.steps`: per step, the learning rates, `step_fn`, EMA, then logging,
    validation and checkpoints at their cadence (the last step always validates and saves)."""

    def __init__(self, loop: LoopConfig, accelerator: Accelerator, run_dir: Path, start: Start, desc: str,
                 quiet: bool = False):
        self.loop, self.accelerator, self.run_dir, self.quiet = loop, accelerator, run_dir, quiet
        self.main = accelerator.is_main_process
        self.step, self.epoch, self.batch_index = start.step, start.epoch, start.next_batch
        self.desc = desc
        self.train_log = CsvLog(run_dir / "train.csv", accelerator, "train")
        self.val_log = CsvLog(run_dir / "val.csv", accelerator, "val")

    def next_batch(self, batches: Iterator[tuple[int, int, Batch]]) -> Batch:
        """The next per-process batch; the loop keeps its place (epoch, index) for the checkpoint."""
        self.epoch, self.batch_index, batch = next(batches)
        return batch

    def run(self, loader: DataLoader, schedules: Mapping[str, tuple[torch.optim.Optimizer, OptimConfig]],
            step_fn: Callable[[int, Callable[[], Batch]], Terms],
            log_row: Callable[[Terms], tuple[dict[str, Any], dict[str, str]]],
            validate: Callable[[int], dict[str, float]],
            saved_modules: Callable[[], Mapping[str, nn.Module]],
            ema: nn.Module | None = None, raw: nn.Module | None = None,
            sharding: Sharding | None = None) -> dict[str, float]:
        """Run to `loop.steps`; returns the last validation metrics.

        `schedules`: optimizer name -> (optimizer, its OptimConfig): the lr of each is set before every
        step and the optimizers are checkpointed under those names. `step_fn(step, next_batch)` runs one
        optimizer step (its micro-batches drawn with `next_batch()`) and returns its terms.
        `log_row(terms)` -> (the recipe's columns of train.csv, the progress bar's postfix).
        `validate(step)` runs on the main process; `saved_modules()` are the modules a checkpoint holds.
        `sharding`: the sharded engine's gathers (None: one process or DDP)."""
        loop, accelerator = self.loop, self.accelerator
        optimizers = {name: opt for name, (opt, _) in schedules.items()}
        first_lr = next(iter(optimizers.values()))
        val_metrics: dict[str, float] = {}
        bar = tqdm(total=loop.steps, initial=self.step, disable=not self.main or self.quiet, desc=self.desc,
                   dynamic_ncols=True)
        batches = infinite_batches(loader, self.epoch, self.batch_index)  # per-process, as the loader yields them
        started, first_step = time.time(), self.step
        while self.step < loop.steps:
            for opt, optim_cfg in schedules.values():
                set_lr(opt, lr_at(self.step, loop.steps, optim_cfg))
            terms = step_fn(self.step, lambda: self.next_batch(batches))
            self.step += 1
            step = self.step
            if ema is not None:
                (sharding.update_ema if sharding else update_ema)(ema, raw, loop.ema_decay)
            if self.main and (step % loop.log_every == 0 or step == loop.steps):
                # read back from the device only when logged: float() waits for the step to finish
                columns, postfix = log_row(terms)
                clips = (step - first_step) * loop.batch_size * loop.grad_accum * accelerator.num_processes
                self.train_log.write({"step": step, "epoch": self.epoch, "lr": first_lr.param_groups[0]["lr"],
                                      **columns, "clips_per_s": round(clips / max(time.time() - started, 1e-9), 3)})
                bar.set_postfix(postfix)
            bar.update(1)
            if step % loop.val_every == 0 or step == loop.steps:
                if sharding:
                    sharding.refresh_eval_copy(ema if ema is not None else raw)
                if self.main:
                    val_metrics = validate(step)
                    self.val_log.write({"step": step, **val_metrics})
                    if not self.quiet:
                        tqdm.write(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in val_metrics.items()))
                accelerator.wait_for_everyone()
            if step % loop.save_every == 0 or step == loop.steps:
                modules: Mapping[str, StateSource]
                saved: Mapping[str, StateSource]
                modules, saved = sharding.gathered(saved_modules()) if sharding else (saved_modules(), optimizers)
                if self.main:
                    save_checkpoint(self.run_dir / "checkpoints", step, modules, saved,
                                    {"epoch": self.epoch, "next_batch": self.batch_index + 1}, keep=loop.keep_last,
                                    scaler=accelerator.scaler)
                accelerator.wait_for_everyone()
        bar.close()
        return val_metrics
