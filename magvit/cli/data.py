"""`magvit config show` and `magvit data preview`: what a config resolves to, what a dataset holds."""

from __future__ import annotations

import argparse

from magvit.cli.base import arguments, command
from magvit.cli.flags import names, overrides_arg, overwrite_arg
from magvit.errors import MagvitError


def _config_show_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a YAML config file of any kind (magvit.kinds)")
    overrides_arg(p)


@command("show", "print a config with its defaults and overrides resolved", group="config")
@arguments(_config_show_args)
def config_show(args: argparse.Namespace) -> None:
    from magvit.config import to_yaml
    from magvit.kinds import load_config

    print(to_yaml(load_config(args.config, args.overrides)), end="")


def _data_preview_args(p: argparse.ArgumentParser) -> None:
    from magvit.data import DATASETS

    p.add_argument("name", help=f"a dataset name ({names(DATASETS.names())}) or a `kind: data` YAML")
    p.add_argument("--out", required=True, help="output file: .gif, .mp4, .avi, .webm or .mkv (clips), .png or .jpg "
                   "(first frames)")
    overwrite_arg(p)
    p.add_argument("--num", type=int, default=16, help="number of samples shown (default 16)")
    p.add_argument("--nrow", type=int, default=None, help="samples per row (default: a square grid)")
    p.add_argument("--fps", type=float, default=8.0, help="frames per second of a GIF or video (default 8)")
    overrides_arg(p)


def data_config(name: str, overrides: list[str]):
    """A `kind: data` YAML, or a registered dataset's name with key=value overrides of its keys."""
    from magvit.config import apply_overrides, from_dict, parse_overrides
    from magvit.data import DATASETS, DataConfig
    from magvit.kinds import load_config

    if name.endswith((".yaml", ".yml")):
        return load_config(name, overrides, expect="data")
    DATASETS[name]  # one clear line for an unknown name
    parsed = parse_overrides(overrides)
    raw = apply_overrides({"kind": "data", "dataset": {"name": name}}, parsed, "command line")
    return from_dict(DataConfig, raw, source="command line", overrides=list(parsed))


@command("preview", "write a grid of a dataset's samples as a GIF, MP4 or PNG", group="data")
@arguments(_data_preview_args)
def data_preview(args: argparse.Namespace) -> None:
    import torch

    from magvit.data import build_dataset
    from magvit.fileio import check_outputs
    from magvit.media import check_grid_suffix, write_grid

    out = check_grid_suffix(args.out)  # before any work: a bad or taken --out is one line
    check_outputs([out], overwrite=args.overwrite)
    cfg = data_config(args.name, args.overrides)
    if args.num < 1:
        raise MagvitError(f"--num must be at least 1, got {args.num}")
    dataset = build_dataset(cfg.dataset)
    count = min(args.num, len(dataset))
    # evenly spaced samples: a preview should show the variety of the whole set
    indices = torch.linspace(0, len(dataset) - 1, count).round().long().tolist()
    videos = torch.stack([dataset[i]["video"] for i in indices])  # (N, 3, T, H, W)
    write_grid(out, videos, fps=args.fps, nrow=args.nrow)
    t, h, w = videos.shape[2:]
    print(f"wrote {out}: {count} samples of {len(dataset)}, {t} frames of {h}x{w}")


def _data_shard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a `kind: data` YAML (configs/data/), or a token cache folder from "
                   "`magvit extract-tokens` (override split=train|val)")
    p.add_argument("--out", required=True, help="the shard folder: shard-000000.tar, ... and index.json")
    p.add_argument("--samples-per-shard", type=int, default=256, help="samples per tar shard (default 256; write "
                   "at least as many shards as training processes)")
    p.add_argument("--encode", default="mp4", choices=("mp4", "frames"),
                   help="clips as MP4 (H.264 4:4:4, crf 10; needs PyAV) or exact uint8 frames (default mp4)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a shard folder that exists there (a folder that is not one never is)")
    overrides_arg(p)


@command("shard", "write a dataset (or a token cache) as WebDataset tar shards that training streams", group="data")
@arguments(_data_shard_args)
def data_shard(args: argparse.Namespace) -> None:
    shard_command(args.source, args.out, args.samples_per_shard, args.encode, args.overwrite, list(args.overrides))


def shard_command(source: str, out: str, samples_per_shard: int, encode: str, overwrite: bool,
                  overrides: list[str]):
    """SOURCE is a `kind: data` YAML (with key=value overrides) or a token cache folder from extract-tokens
    (override: split=train|val); prints one line."""
    from pathlib import Path

    from magvit.config import parse_overrides
    from magvit.data.shards import read_shard_index, write_shards
    from magvit.training.token_shards import shard_token_cache

    if samples_per_shard < 1:
        raise MagvitError(f"--samples-per-shard must be at least 1, got {samples_per_shard}")
    if Path(source).expanduser().is_dir():
        options = parse_overrides(overrides)
        if set(options) - {"split"}:
            raise MagvitError(f"{source}: a token cache takes only the override split=NAME, got "
                              f"{', '.join(sorted(set(options) - {'split'}))}")
        path = shard_token_cache(source, out, samples_per_shard, overwrite, str(options.get("split", "train")),
                                 quiet=False)
    else:
        path = write_shards(data_config(source, overrides), out, samples_per_shard, encode, overwrite, quiet=False)
    index = read_shard_index(path)
    print(f"wrote {path}: {index['total']} samples in {len(index['shards'])} shards ({index['encode']})")
    return path
