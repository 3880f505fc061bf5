"""`magvit train-tokenizer`, `magvit train`, `magvit extract-tokens` and `magvit plot`: training runs
from their YAML (`kind: train_tokenizer` / `kind: train_transformer`) and their curves."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from magvit.cli.base import arguments, command
from magvit.cli.flags import (
    DTYPE_NAMES,
    add_config_flags,
    command_settings,
    config_arg,
    dtype_arg,
    overrides_arg,
    overwrite_arg,
)


def _training_args(kind: str, where: str) -> Callable[[argparse.ArgumentParser], None]:
    """A training command's arguments: its YAML, --resume, --dtype, --compile and key=value overrides."""

    def add(p: argparse.ArgumentParser) -> None:
        config_arg(p, kind, where, required=True)
        p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run folder")
        p.add_argument("--dtype", default=None, choices=DTYPE_NAMES,
                       help="mixed precision (sets loop.mixed_precision: fp32 = no; default: the config's)")
        p.add_argument("--compile", action="store_true", help="torch.compile the model (sets loop.compile=true)")
        overrides_arg(p)

    return add


def mixed_precision(dtype: str | None, *sections: str) -> list[str]:
    """`key=value` overrides that set `loop.mixed_precision` (of each config section given) to --dtype's
    accelerate name; quoted, as YAML reads a bare `no` as false."""
    from magvit.runtime import MIXED_PRECISION

    return [f"{s}loop.mixed_precision='{MIXED_PRECISION[dtype]}'" for s in sections or ("",)] if dtype else []


def training_overrides(args: argparse.Namespace) -> list[str]:
    """The config overrides of --dtype and --compile, before the user's own key=value ones."""
    return [*mixed_precision(args.dtype), *(["loop.compile=true"] if args.compile else []), *args.overrides]


@command("train-tokenizer", "train a tokenizer (VQGAN, 3D-VQ, causal LFQ) with accelerate")
@arguments(_training_args("train_tokenizer", "see configs/tokenizer/"))
def train_tokenizer(args: argparse.Namespace) -> None:
    from magvit.kinds import load_config
    from magvit.training.tokenizer import train_tokenizer

    train_tokenizer(load_config(args.config, training_overrides(args), expect="train_tokenizer"), resume=args.resume)


@command("train", "train a masked transformer (MaskGIT MVTM, MAGVIT COMMIT, multi-task) with accelerate")
@arguments(_training_args("train_transformer", "see configs/train/"))
def train(args: argparse.Namespace) -> None:
    from magvit.kinds import load_config
    from magvit.training.transformer import train_transformer

    train_transformer(load_config(args.config, training_overrides(args), expect="train_transformer"),
                      resume=args.resume)


def _extract_tokens_args(p: argparse.ArgumentParser) -> None:
    config_arg(p, "train_transformer", "its tokenizer, data and tasks are used", required=True)
    p.add_argument("--out", default=None, help="the cache folder (default: the config's `tokens`)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a token cache that exists there (a folder that is not a token cache never is)")
    p.add_argument("--batch-size", type=int, default=16, help="clips per tokenizer call (default 16)")
    p.add_argument("--shard-size", type=int, default=1024, help="samples per safetensors shard (default 1024)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N; under "
                   "`accelerate launch` each process takes its own GPU")
    dtype_arg(p, what="the tokenizer")
    p.add_argument("--compile", action="store_true", help="torch.compile the tokenizer's encoder and decoder")
    overrides_arg(p)


@command("extract-tokens", "tokenize a dataset once (tokens, labels, every task's condition) for fast training")
@arguments(_extract_tokens_args)
def extract_tokens(args: argparse.Namespace) -> None:
    import torch
    from accelerate import PartialState

    from magvit.kinds import load_config
    from magvit.training.tokens import extract_tokens

    cfg = load_config(args.config, args.overrides, expect="train_transformer")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    path = extract_tokens(cfg, args.out, batch_size=args.batch_size, shard_size=args.shard_size, device=device,
                          overwrite=args.overwrite, dtype=args.dtype, compile=args.compile)
    if PartialState().is_main_process:
        print(f"wrote {path}; train from it with: magvit train {args.config} tokens={path}")


def _plot_args(p: argparse.ArgumentParser) -> None:
    from magvit.plots import PlotConfig

    p.add_argument("run_dir", help="a run folder of train-tokenizer or train (its train.csv and val.csv), or a "
                   "`kind: plot` YAML")
    p.set_defaults(dests=add_config_flags(p, PlotConfig))
    overwrite_arg(p)
    overrides_arg(p)


@command("plot", "draw a training run's loss and metric curves (train.csv, val.csv) as one PNG")
@arguments(_plot_args)
def plot(args: argparse.Namespace) -> None:
    from magvit.plots import PlotConfig, plot_run

    args.config = args.run_dir if args.run_dir.endswith((".yaml", ".yml")) else None  # a `kind: plot` YAML
    cfg = command_settings(PlotConfig, args, extra={} if args.config else {"run_dir": args.run_dir})[0]
    print(f"wrote {plot_run(cfg.run_dir, cfg.out, overwrite=args.overwrite)}")
