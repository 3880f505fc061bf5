"""The `magvit` command line.

Each subcommand is a function `(args) -> None` registered in `COMMANDS` together with a function
that adds its arguments. A `MagvitError` (bad config key, corrupt video, ...) is printed as one
line `magvit: error: ...` with exit code 2; heavy imports happen inside the commands so that
`magvit --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from magvit.errors import MagvitError

# (group, name) -> (add_arguments, run, help); group None for a top-level command
COMMANDS: dict[tuple[str | None, str], tuple[Callable, Callable, str]] = {}


def command(name: str, help: str, group: str | None = None):
    """Register `run(args)` as a subcommand; the decorated function's `arguments` adds its flags."""

    def wrap(run: Callable) -> Callable:
        COMMANDS[(group, name)] = (getattr(run, "arguments", lambda p: None), run, help)
        return run

    return wrap


def arguments(add: Callable[[argparse.ArgumentParser], None]):
    """Attach an argument-adding function to a command function (use below @command)."""

    def wrap(run: Callable) -> Callable:
        run.arguments = add
        return run

    return wrap


def _overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides (dotted keys for nested sections)"
    )


# ---------------------------------------------------------------------------------------------
# magvit config show


def _config_show_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a YAML config file")
    _overrides(p)


@command("show", "print a config with its defaults and overrides resolved", group="config")
@arguments(_config_show_args)
def config_show(args: argparse.Namespace) -> None:
    from magvit.config import load_config, to_yaml

    print(to_yaml(load_config(args.config, args.overrides)), end="")


# ---------------------------------------------------------------------------------------------
# magvit data preview


def _data_preview_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "name", help="a dataset name (moving_digits, bundled_clips, video_folder, image_folder) or a `kind: data` YAML"
    )
    p.add_argument("--out", required=True, help="output file: .gif or .mp4 (clips), .png (first frames)")
    p.add_argument("--num", type=int, default=16, help="number of samples shown (default 16)")
    p.add_argument("--nrow", type=int, default=None, help="samples per row (default: a square grid)")
    p.add_argument("--fps", type=float, default=8.0)
    _overrides(p)


@command("preview", "write a grid of a dataset's samples as a GIF, MP4 or PNG", group="data")
@arguments(_data_preview_args)
def data_preview(args: argparse.Namespace) -> None:
    import torch

    import magvit.kinds  # noqa: F401
    from magvit.config import CONFIG_KINDS, apply_overrides, from_dict, load_config, parse_overrides
    from magvit.data import DATASETS, build_dataset
    from magvit.media import make_grid, write_image_grid, write_video

    if args.name.endswith((".yaml", ".yml")):
        cfg = load_config(args.name, args.overrides, expect="data")
    else:
        DATASETS[args.name]  # one clear line for an unknown name
        overrides = parse_overrides(args.overrides)
        raw = apply_overrides({"kind": "data", "dataset": {"name": args.name}}, overrides, "command line")
        cfg = from_dict(CONFIG_KINDS["data"].config, raw, source="command line", overrides=list(overrides))
    if args.num < 1:
        raise MagvitError(f"--num must be at least 1, got {args.num}")
    dataset = build_dataset(cfg.dataset)
    count = min(args.num, len(dataset))
    # evenly spaced samples: a preview should show the variety of the whole set
    indices = torch.linspace(0, len(dataset) - 1, count).round().long().tolist()
    videos = torch.stack([dataset[i]["video"] for i in indices])  # (N, 3, T, H, W)
    out = Path(args.out)
    if out.suffix.lower() == ".png":
        write_image_grid(out, videos[:, :, :1], nrow=args.nrow)
    else:
        write_video(out, make_grid(videos, nrow=args.nrow), fps=args.fps)
    t, h, w = videos.shape[2:]
    print(f"wrote {out}: {count} samples of {len(dataset)}, {t} frames of {h}x{w}")


# ---------------------------------------------------------------------------------------------
# magvit train-tokenizer


def _train_tokenizer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a `kind: train_tokenizer` YAML (see configs/tokenizer/)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run folder")
    _overrides(p)


@command("train-tokenizer", "train a tokenizer (VQGAN, 3D-VQ, causal LFQ) with accelerate")
@arguments(_train_tokenizer_args)
def train_tokenizer(args: argparse.Namespace) -> None:
    from magvit.config import load_config
    from magvit.training.tokenizer import train_tokenizer

    train_tokenizer(load_config(args.config, args.overrides, expect="train_tokenizer"), resume=args.resume)


# ---------------------------------------------------------------------------------------------
# magvit bench tokenizers | decode | quality


def _bench_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="bf16 = autocast (default fp32)")
    p.add_argument("--out", default=None, help="folder for the JSON, CSV and Markdown tables")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls; the median is reported (default 3)")


def _bench_tokenizers_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizers", nargs="+", required=True, metavar="A",
                   help="saved tokenizer folders or name:preset (random weights), e.g. vq3d:tiny causal3d:tiny")
    p.add_argument("--data", default="moving_digits",
                   help="moving_digits, bundled_clips, or a folder of videos or images (default moving_digits)")
    p.add_argument("--frames", type=int, default=None, help="frames per clip, the same for all (default 16)")
    p.add_argument("--size", type=int, default=64, help="clip height and width (default 64)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per encode/decode call (default 8)")
    p.add_argument("--num-clips", type=int, default=32, help="clips the quality metrics average over (default 32)")
    p.add_argument("--i3d", default=None, help="local I3D (TorchScript or .safetensors) for reconstruction FVD")
    p.add_argument("--inception", default=None, help="local Inception (TorchScript or .safetensors) for rFID")
    _bench_common_args(p)


@command("tokenizers", "compare tokenizers on the same clips: quality, compression, speed, memory", group="bench")
@arguments(_bench_tokenizers_args)
def bench_tokenizers(args: argparse.Namespace) -> None:
    from magvit.bench import write_table
    from magvit.bench.measure import resolve_device
    from magvit.bench.tokenizers import bench_tokenizers

    table = bench_tokenizers(
        args.tokenizers, args.data, frames=args.frames, size=args.size, device=resolve_device(args.device),
        dtype=args.dtype, batch_size=args.batch_size, num_clips=args.num_clips, i3d=args.i3d,
        inception=args.inception, warmup=args.warmup, repeats=args.repeats,
    )
    write_table(table, args.out)


def _bench_decode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help="transformer preset: tiny, maskgit, magvit_b, magvit_l")
    p.add_argument("--grid", required=True, help="token grid T,H,W, e.g. 4,16,16 (MAGVIT) or 1,16,16 (MaskGIT)")
    p.add_argument("--steps", type=int, default=12, help="MaskGIT decoding steps (default 12)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32], metavar="B",
                   help="batch for latency, then batch for throughput (default 1 32)")
    p.add_argument("--codebook-size", type=int, default=1024, help="codes per token (default 1024)")
    p.add_argument("--schedule", default="cosine", help="mask schedule (default cosine)")
    _bench_common_args(p)


@command("decode", "MaskGIT decoding latency and throughput against an autoregressive KV-cache baseline",
         group="bench")
@arguments(_bench_decode_args)
def bench_decode(args: argparse.Namespace) -> None:
    from magvit.bench import write_table
    from magvit.bench.decode import bench_decode, parse_grid
    from magvit.bench.measure import resolve_device

    table = bench_decode(
        args.preset, parse_grid(args.grid), steps=args.steps, batches=tuple(args.batch),
        device=resolve_device(args.device), dtype=args.dtype, codebook_size=args.codebook_size,
        schedule=args.schedule, warmup=args.warmup, repeats=args.repeats,
    )
    write_table(table, args.out)


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="magvit", description="Masked generative image and video models (MaskGIT, MAGVIT, MAGVIT-v2)."
    )
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for (group, name), (add_args, run, help) in COMMANDS.items():
        if group is None:
            sub = top.add_parser(name, help=help, description=help)
        else:
            if group not in groups:
                group_parser = top.add_parser(group, help=f"{group} commands")
                groups[group] = group_parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
            sub = groups[group].add_parser(name, help=help, description=help)
        add_args(sub)
        sub.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # key=value overrides may come after options (`--out x.gif frames=8`), which argparse's
    # positional matching does not allow: collect them from the leftovers instead.
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra if item.startswith("-") or "=" not in item or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        args.run(args)
    except MagvitError as e:
        print(f"magvit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("magvit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
