"""`magvit bench tokenizers | decode | train | quality`: each from its config kind (magvit.bench.configs)
or flags made from that config's fields; the resolved settings land next to the tables."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from magvit.cli.base import arguments, command
from magvit.cli.flags import add_config_flags, command_settings, config_arg, overrides_arg, overwrite_arg
from magvit.errors import MagvitError

if TYPE_CHECKING:
    import torch

    from magvit.bench.configs import (
        BenchCommon,
        BenchDecodeConfig,
        BenchQualityConfig,
        BenchTokenizersConfig,
        BenchTrainConfig,
    )
    from magvit.bench.report import Table


def _bench_args(kind: str) -> Callable[[argparse.ArgumentParser], None]:
    def add(p: argparse.ArgumentParser) -> None:
        from magvit.kinds import CONFIG_KINDS

        config_arg(p, kind, "its keys are the flags' names")
        # --grid is read as T,H,W text and parsed when the command runs (a bad one: one line, exit 2)
        p.set_defaults(dests=add_config_flags(p, CONFIG_KINDS[kind].config, types_={"grid": str}))
        overwrite_arg(p)
        overrides_arg(p)

    return add


def _settings(args: argparse.Namespace, kind: str) -> tuple[BenchCommon, str | None]:
    """The benchmark's config (its YAML < key=value < flags; --grid given as T,H,W text) and the YAML read."""
    from magvit.bench.decode import parse_grid
    from magvit.kinds import CONFIG_KINDS

    cfg, source, _, _ = command_settings(CONFIG_KINDS[kind].config, args, parse={"grid": parse_grid})
    return cfg, source


def _setup(cfg: BenchCommon, tables: tuple[str, ...], overwrite: bool, source: str | None) -> None:
    """Before a benchmark runs: its thread count, and the files it will write into --out (none if no
    --out): its `tables` (<name>.json / .csv / .md / .png) and <first table>.settings.yaml, refused
    where one exists (unless --overwrite) or is the YAML read (`source`, never written over)."""
    import torch

    from magvit.fileio import check_outputs

    if cfg.threads is not None:
        if cfg.threads < 1:
            raise MagvitError(f"--threads must be at least 1, got {cfg.threads}")
        torch.set_num_threads(cfg.threads)
    if cfg.out is None:
        return
    out = Path(cfg.out)
    files = [out / f"{name}.{ext}" for name in tables for ext in ("json", "csv", "md", "png")]
    files.append(out / f"{tables[0]}.settings.yaml")
    check_outputs(files, [source], overwrite=overwrite)


def _bench(name: str, help: str, tables: tuple[str, ...] | None = None) -> Callable[[Callable], Callable]:
    """Register `magvit bench NAME` (config kind `bench_NAME`) from a function (its settings, the device
    they name) -> its tables: flags from the config's fields, the settings resolved and checked by
    `_setup`, then the tables printed and written (`tables`: their names, default NAME)."""
    kind = f"bench_{name}"

    def wrap(measure: Callable[..., list[Table]]) -> Callable[[argparse.Namespace], None]:
        @command(name, help, group="bench")
        @arguments(_bench_args(kind))
        def run(args: argparse.Namespace) -> None:
            from magvit.bench import write_table
            from magvit.bench.measure import resolve_device
            from magvit.config import to_yaml
            from magvit.fileio import atomic_write_text, output_folder

            cfg, source = _settings(args, kind)
            names = tables or (name,)
            _setup(cfg, names, args.overwrite, source)
            # the tables (printed; with --out also written), then the resolved settings (`magvit bench
            # NAME <that file>` re-makes them); a run that fails leaves neither, nor the --out folder it made
            with output_folder(cfg.out) if cfg.out is not None else contextlib.nullcontext() as out:
                for table in measure(cfg, resolve_device(cfg.device)):
                    write_table(table, out)
                if out is not None:
                    atomic_write_text(out / f"{names[0]}.settings.yaml", to_yaml(cfg))

        return run

    return wrap


@_bench("tokenizers", "compare tokenizers on the same clips: quality, compression, speed, memory")
def bench_tokenizers(cfg: BenchTokenizersConfig, device: torch.device) -> list[Table]:
    from magvit.bench.tokenizers import bench_tokenizers

    return [bench_tokenizers(
        list(cfg.tokenizers), cfg.data, frames=cfg.frames, size=cfg.size, device=device, dtype=cfg.dtype,
        batch_size=cfg.batch_size, num_clips=cfg.num_clips, i3d=cfg.i3d, inception=cfg.inception, warmup=cfg.warmup,
        repeats=cfg.repeats, compile=cfg.compile, layout=cfg.channels_last,
    )]


@_bench("decode", "MaskGIT decoding latency and throughput (eager, compiled, CUDA graph) against an "
        "autoregressive KV-cache baseline")
def bench_decode(cfg: BenchDecodeConfig, device: torch.device) -> list[Table]:
    from magvit.bench.decode import bench_decode

    return [bench_decode(
        cfg.preset, cfg.grid, steps=cfg.steps, batches=cfg.batch, device=device, dtype=cfg.dtype,
        codebook_size=cfg.codebook_size, schedule=cfg.schedule, warmup=cfg.warmup, repeats=cfg.repeats,
        fast_paths=cfg.fast_paths,
    )]


@_bench("train", "training throughput, peak memory and MFU of tokenizer and transformer presets")
def bench_train(cfg: BenchTrainConfig, device: torch.device) -> list[Table]:
    from magvit.bench.train import bench_train

    return [bench_train(
        list(cfg.tokenizers), list(cfg.transformers), batch=cfg.batch, frames=cfg.frames, size=cfg.size,
        grid=cfg.grid, codebook_size=cfg.codebook_size, device=device, dtypes=cfg.dtype, compile=cfg.compile,
        checkpointing=cfg.checkpointing, warmup=cfg.warmup, repeats=cfg.repeats, peak_tflops=cfg.peak_tflops,
    )]


@_bench("quality", "generation quality on moving digits: class accuracy, Frechet distance, frame prediction, "
        "schedule x steps sweep", tables=("quality", "quality_fp_latent_frames", "quality_sweep"))
def bench_quality(cfg: BenchQualityConfig, device: torch.device) -> list[Table]:
    from magvit.bench.quality import bench_quality

    return bench_quality(
        cfg.checkpoint, cache_dir=cfg.cache_dir, num=cfg.num, steps=cfg.steps, schedule=cfg.schedule,
        sweep_schedules=cfg.sweep_schedules, sweep_steps=cfg.sweep_steps, device=device, batch_size=cfg.batch_size,
        seed=cfg.seed, temperature=cfg.temperature, guidance=cfg.guidance, dtype=cfg.dtype, compile=cfg.compile,
    )
