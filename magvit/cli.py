"""The `magvit` command line.

Each subcommand is a function `(args) -> None` registered in `COMMANDS` together with a function
that adds its arguments. Names a flag accepts and their help come from the registries (datasets,
tokenizers, tasks, mask schedules, presets, studies), imported only when that command's arguments
are built, so `magvit --help` stays fast. A `MagvitError` (bad config key, corrupt video, ...), an
unwritable path or a bad flag is printed as one line `magvit: error: ...` with exit code 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence

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


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line too (with where to look), not the usage block, and no flag
    is taken as an abbreviation of a longer one (`--guidance 2` is never `--guidance-schedule 2`). Every
    subcommand's parser is a Parser too (argparse builds subparsers with their parent's class)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _names(names) -> str:
    return ", ".join(names)


DTYPE_NAMES = ("fp32", "bf16", "fp16")  # magvit.runtime.DTYPES, spelled here so that --help imports no torch


def _dtype_arg(p: argparse.ArgumentParser, default: str | None = "fp32", what: str = "the forward passes") -> None:
    shown = default or "fp32"
    p.add_argument("--dtype", default=default, choices=DTYPE_NAMES,
                   help=f"precision of {what}: bf16 / fp16 autocast (weights stay fp32; quantizers, losses and "
                   f"logits stay fp32), fp32 uses TF32 on CUDA (default {shown})")


def _overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides (dotted keys for nested sections)"
    )


def _overwrite_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace outputs that exist (a file the command reads is never written over)")


# ---------------------------------------------------------------------------------------------
# magvit config show


def _config_show_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a YAML config file")
    _overrides(p)


@command("show", "print a config with its defaults and overrides resolved", group="config")
@arguments(_config_show_args)
def config_show(args: argparse.Namespace) -> None:
    from magvit.config import to_yaml
    from magvit.kinds import load_config

    print(to_yaml(load_config(args.config, args.overrides)), end="")


# ---------------------------------------------------------------------------------------------
# magvit data preview


def _data_preview_args(p: argparse.ArgumentParser) -> None:
    from magvit.data import DATASETS

    p.add_argument("name", help=f"a dataset name ({_names(DATASETS.names())}) or a `kind: data` YAML")
    p.add_argument("--out", required=True, help="output file: .gif, .mp4, .avi, .webm or .mkv (clips), .png or .jpg "
                   "(first frames)")
    _overwrite_arg(p)
    p.add_argument("--num", type=int, default=16, help="number of samples shown (default 16)")
    p.add_argument("--nrow", type=int, default=None, help="samples per row (default: a square grid)")
    p.add_argument("--fps", type=float, default=8.0)
    _overrides(p)


@command("preview", "write a grid of a dataset's samples as a GIF, MP4 or PNG", group="data")
@arguments(_data_preview_args)
def data_preview(args: argparse.Namespace) -> None:
    import torch

    from magvit.config import apply_overrides, from_dict, parse_overrides
    from magvit.data import DATASETS, DataConfig, build_dataset
    from magvit.fileio import check_outputs
    from magvit.kinds import load_config
    from magvit.media import check_grid_suffix, write_grid

    out = check_grid_suffix(args.out)  # before any work: a bad or taken --out is one line
    check_outputs([out], overwrite=args.overwrite)
    if args.name.endswith((".yaml", ".yml")):
        cfg = load_config(args.name, args.overrides, expect="data")
    else:
        DATASETS[args.name]  # one clear line for an unknown name
        overrides = parse_overrides(args.overrides)
        raw = apply_overrides({"kind": "data", "dataset": {"name": args.name}}, overrides, "command line")
        cfg = from_dict(DataConfig, raw, source="command line", overrides=list(overrides))
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


# ---------------------------------------------------------------------------------------------
# magvit train-tokenizer


def _train_tokenizer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a `kind: train_tokenizer` YAML (see configs/tokenizer/)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run folder")
    _training_speed_args(p)
    _overrides(p)


def _training_speed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default=None, choices=DTYPE_NAMES,
                   help="mixed precision (sets loop.mixed_precision: fp32 = no; default: the config's)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (sets loop.compile=true)")


def _mixed_precision(dtype: str | None, *sections: str) -> list[str]:
    """`key=value` overrides that set `loop.mixed_precision` (of each config section given) to --dtype's
    accelerate name; quoted, as YAML reads a bare `no` as false."""
    from magvit.runtime import MIXED_PRECISION

    return [f"{s}loop.mixed_precision='{MIXED_PRECISION[dtype]}'" for s in sections or ("",)] if dtype else []


def _training_overrides(args: argparse.Namespace) -> list[str]:
    """The config overrides of --dtype and --compile, before the user's own key=value ones."""
    return [*_mixed_precision(args.dtype), *(["loop.compile=true"] if args.compile else []), *args.overrides]


@command("train-tokenizer", "train a tokenizer (VQGAN, 3D-VQ, causal LFQ) with accelerate")
@arguments(_train_tokenizer_args)
def train_tokenizer(args: argparse.Namespace) -> None:
    from magvit.kinds import load_config
    from magvit.training.tokenizer import train_tokenizer

    train_tokenizer(load_config(args.config, _training_overrides(args), expect="train_tokenizer"), resume=args.resume)


# ---------------------------------------------------------------------------------------------
# magvit plot


def _plot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run folder of train-tokenizer or train (its train.csv and val.csv)")
    p.add_argument("--out", default=None, help="the PNG to write (default RUN_DIR/curves.png, redrawn each time; "
                   "an --out that exists is replaced only with --overwrite)")
    _overwrite_arg(p)


@command("plot", "draw a training run's loss and metric curves (train.csv, val.csv) as one PNG")
@arguments(_plot_args)
def plot(args: argparse.Namespace) -> None:
    from magvit.plots import plot_run

    print(f"wrote {plot_run(args.run_dir, args.out, overwrite=args.overwrite)}")


# ---------------------------------------------------------------------------------------------
# magvit bench tokenizers | decode | quality


def _bench_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    _dtype_arg(p)
    p.add_argument("--out", default=None, help="folder for the JSON, CSV and Markdown tables")
    _overwrite_arg(p)
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before timing (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls; the median is reported (default 3)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is steadier on a busy machine)")


def _bench_setup(threads: int | None, out: str | None, tables: tuple[str, ...] = (), overwrite: bool = False) -> None:
    """Before a benchmark runs: its thread count, and an --out folder it can write into where none of
    its `tables` (<name>.json / .csv / .md / .png) exists yet, unless --overwrite."""
    from pathlib import Path

    import torch

    from magvit.fileio import check_outputs, ensure_folder

    if out is not None:
        check_outputs([Path(out) / f"{name}.{ext}" for name in tables for ext in ("json", "csv", "md", "png")],
                      overwrite=overwrite)
        ensure_folder(out)
    if threads is not None:
        if threads < 1:
            raise MagvitError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def _bench_tokenizers_args(p: argparse.ArgumentParser) -> None:
    from magvit.tokenizers import TOKENIZERS

    presets = {name: _names(TOKENIZERS[name].config.PRESETS) for name in TOKENIZERS.names()}
    p.add_argument("--tokenizers", nargs="+", required=True, metavar="A",
                   help="saved tokenizer folders, or name:preset with random weights; names and presets: "
                   + "; ".join(f"{name} ({p})" for name, p in presets.items()))
    p.add_argument("--data", default="moving_digits",
                   help="moving_digits, bundled_clips, or a folder of videos or images (default moving_digits)")
    p.add_argument("--frames", type=int, default=None,
                   help="frames per clip, the same clips for all; each tokenizer reconstructs the longest prefix "
                   "it tiles (e.g. vq3d 4k frames, causal3d 1 + 4k, vqgan2d any) and every row is also scored on the "
                   "frames all share (default: the shortest clip from which every tokenizer reconstructs at "
                   "least 16 frames: 16, or 17 with causal3d)")
    p.add_argument("--size", type=int, default=64, help="clip height and width (default 64)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per encode/decode call (default 8)")
    p.add_argument("--num-clips", type=int, default=32, help="clips the quality metrics average over (default 32)")
    p.add_argument("--i3d", default=None, help="local I3D (TorchScript or .safetensors) for reconstruction FVD")
    p.add_argument("--inception", default=None, help="local Inception (TorchScript or .safetensors) for rFID")
    p.add_argument("--compile", action="store_true",
                   help="also time each tokenizer compiled (torch.compile), next to the eager figures")
    p.add_argument("--channels-last", action="store_true",
                   help="conv weights channels-last (3D: channels_last_3d); slower on CPU, see BENCHMARKS.md")
    _bench_common_args(p)


@command("tokenizers", "compare tokenizers on the same clips: quality, compression, speed, memory", group="bench")
@arguments(_bench_tokenizers_args)
def bench_tokenizers(args: argparse.Namespace) -> None:
    from magvit.bench import write_table
    from magvit.bench.measure import resolve_device
    from magvit.bench.tokenizers import bench_tokenizers

    _bench_setup(args.threads, args.out, ("tokenizers",), args.overwrite)
    table = bench_tokenizers(
        args.tokenizers, args.data, frames=args.frames, size=args.size, device=resolve_device(args.device),
        dtype=args.dtype, batch_size=args.batch_size, num_clips=args.num_clips, i3d=args.i3d,
        inception=args.inception, warmup=args.warmup, repeats=args.repeats, compile=args.compile,
        layout=args.channels_last,
    )
    write_table(table, args.out)


def _bench_decode_args(p: argparse.ArgumentParser) -> None:
    from magvit.schedules import MASK_SCHEDULES
    from magvit.transformer import TransformerConfig

    p.add_argument("--preset", default="tiny", choices=list(TransformerConfig.PRESETS), metavar="PRESET",
                   help=f"transformer preset: {_names(TransformerConfig.PRESETS)} (default tiny)")
    p.add_argument("--grid", required=True, help="token grid T,H,W, e.g. 4,16,16 (MAGVIT) or 1,16,16 (MaskGIT)")
    p.add_argument("--steps", type=int, default=12, help="MaskGIT decoding steps (default 12)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32], metavar="B",
                   help="batch for latency, then batch for throughput (default 1 32)")
    p.add_argument("--codebook-size", type=int, default=1024, help="codes per token (default 1024)")
    p.add_argument("--schedule", default="cosine", help=f"mask schedule: {_names(MASK_SCHEDULES.names())} "
                   "(default cosine)")
    p.add_argument("--fast-paths", nargs="*", default=None, metavar="PATH",
                   choices=["compiled", "cuda-graph", "compiled+cuda-graph"],
                   help="decode-loop paths timed beside eager: compiled, cuda-graph, compiled+cuda-graph "
                   "(default: compiled, and on CUDA all three; give none for eager only)")
    _bench_common_args(p)


@command("decode", "MaskGIT decoding latency and throughput (eager, compiled, CUDA graph) against an "
         "autoregressive KV-cache baseline", group="bench")
@arguments(_bench_decode_args)
def bench_decode(args: argparse.Namespace) -> None:
    from magvit.bench import write_table
    from magvit.bench.decode import bench_decode, parse_grid
    from magvit.bench.measure import resolve_device

    _bench_setup(args.threads, args.out, ("decode",), args.overwrite)
    table = bench_decode(
        args.preset, parse_grid(args.grid), steps=args.steps, batches=tuple(args.batch),
        device=resolve_device(args.device), dtype=args.dtype, codebook_size=args.codebook_size,
        schedule=args.schedule, warmup=args.warmup, repeats=args.repeats,
        fast_paths=None if args.fast_paths is None else tuple(args.fast_paths),
    )
    write_table(table, args.out)


def _bench_train_args(p: argparse.ArgumentParser) -> None:
    from magvit.tokenizers import TOKENIZERS
    from magvit.transformer import TransformerConfig

    presets = {name: _names(TOKENIZERS[name].config.PRESETS) for name in TOKENIZERS.names()}
    p.add_argument("--tokenizers", nargs="*", default=[], metavar="NAME:PRESET",
                   help="tokenizers to train (random weights): "
                   + "; ".join(f"{n} ({ps})" for n, ps in presets.items()))
    p.add_argument("--transformers", nargs="*", default=[], metavar="PRESET",
                   help=f"transformer presets to train: {_names(TransformerConfig.PRESETS)}")
    p.add_argument("--batch", type=int, default=8, help="clips (token grids) per step (default 8)")
    p.add_argument("--frames", type=int, default=17,
                   help="tokenizer clip frames; each trains on the longest clip up to this it tiles (default 17)")
    p.add_argument("--size", type=int, default=128, help="tokenizer clip height and width (default 128)")
    p.add_argument("--grid", default="5,16,16", help="transformer token grid T,H,W (default 5,16,16)")
    p.add_argument("--codebook-size", type=int, default=1024, help="transformer codes per token (default 1024)")
    p.add_argument("--dtype", nargs="+", default=["fp32"], choices=DTYPE_NAMES, metavar="DTYPE",
                   help="precisions, a row each: fp32 (TF32 on CUDA), bf16, fp16 (CUDA) (default fp32)")
    p.add_argument("--compile", default="off", choices=("off", "on", "both"),
                   help="torch.compile the model: off, on, or both rows (default off)")
    p.add_argument("--checkpointing", default="off", choices=("off", "on", "both"),
                   help="activation checkpointing per block: off, on, or both rows (default off)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's peak TFLOP/s for MFU (default: known GPUs' dense peak; n/a on a CPU)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--out", default=None, help="folder for the JSON, CSV and Markdown tables")
    _overwrite_arg(p)
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before timing, the first compiles (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed steps; the median is reported (default 3)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is steadier on a busy machine)")


@command("train", "training throughput, peak memory and MFU of tokenizer and transformer presets", group="bench")
@arguments(_bench_train_args)
def bench_train(args: argparse.Namespace) -> None:
    from magvit.bench import write_table
    from magvit.bench.decode import parse_grid
    from magvit.bench.measure import resolve_device
    from magvit.bench.train import bench_train

    _bench_setup(args.threads, args.out, ("train",), args.overwrite)
    table = bench_train(
        args.tokenizers, args.transformers, batch=args.batch, frames=args.frames, size=args.size,
        grid=parse_grid(args.grid), codebook_size=args.codebook_size, device=resolve_device(args.device),
        dtypes=tuple(args.dtype), compile=args.compile, checkpointing=args.checkpointing, warmup=args.warmup,
        repeats=args.repeats, peak_tflops=args.peak_tflops,
    )
    write_table(table, args.out)


def _bench_quality_args(p: argparse.ArgumentParser) -> None:
    from magvit.schedules import MASK_SCHEDULES

    p.add_argument("--checkpoint", required=True, help="a model folder written by `magvit train` (or its run folder)")
    p.add_argument("--cache-dir", default=None, help="where the digit classifier is cached (default ~/.cache/magvit)")
    p.add_argument("--num", type=int, default=100, help="clips per measurement (default 100)")
    p.add_argument("--steps", type=int, default=12, help="decoding steps of the main row (default 12)")
    p.add_argument("--schedule", default="cosine", help=f"mask schedule of the main row: "
                   f"{_names(MASK_SCHEDULES.names())} (default cosine)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of every row (default 1.0)")
    p.add_argument("--guidance", type=float, default=0.0,
                   help="classifier-free guidance of the class-conditional samples (default 0: none)")
    p.add_argument("--sweep-schedules", nargs="*", default=["cosine", "square", "linear", "sqrt"], metavar="S",
                   help="schedules of the sweep (default cosine square linear sqrt; none: no sweep; any of "
                   f"{_names(MASK_SCHEDULES.names())})")
    p.add_argument("--sweep-steps", nargs="*", type=int, default=[4, 8, 12, 16], metavar="N",
                   help="steps of the sweep (default 4 8 12 16)")
    p.add_argument("--batch-size", type=int, default=50, help="clips per decode call (default 50)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    _dtype_arg(p, what="the model (the digit classifier stays fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the tokenizer and the decode step")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--out", default=None, help="folder for the JSON, CSV and Markdown tables")
    _overwrite_arg(p)


@command("quality", "generation quality on moving digits: class accuracy, Frechet distance, frame prediction, "
         "schedule x steps sweep", group="bench")
@arguments(_bench_quality_args)
def bench_quality(args: argparse.Namespace) -> None:
    from magvit.bench import write_table
    from magvit.bench.measure import resolve_device
    from magvit.bench.quality import bench_quality

    _bench_setup(args.threads, args.out, ("quality", "quality_fp_latent_frames", "quality_sweep"), args.overwrite)
    tables = bench_quality(
        args.checkpoint, cache_dir=args.cache_dir, num=args.num, steps=args.steps, schedule=args.schedule,
        sweep_schedules=tuple(args.sweep_schedules), sweep_steps=tuple(args.sweep_steps),
        device=resolve_device(args.device), batch_size=args.batch_size, seed=args.seed,
        temperature=args.temperature, guidance=args.guidance, dtype=args.dtype, compile=args.compile,
    )
    for table in tables:
        write_table(table, args.out)


# ---------------------------------------------------------------------------------------------
# magvit train | extract-tokens


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a `kind: train_transformer` YAML (see configs/train/)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run folder")
    _training_speed_args(p)
    _overrides(p)


@command("train", "train a masked transformer (MaskGIT MVTM, MAGVIT COMMIT, multi-task) with accelerate")
@arguments(_train_args)
def train(args: argparse.Namespace) -> None:
    from magvit.kinds import load_config
    from magvit.training.transformer import train_transformer

    train_transformer(load_config(args.config, _training_overrides(args), expect="train_transformer"),
                      resume=args.resume)


def _extract_tokens_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a `kind: train_transformer` YAML: its tokenizer, data and tasks are used")
    p.add_argument("--out", default=None, help="the cache folder (default: the config's `tokens`)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a token cache that exists there (a folder that is not a token cache never is)")
    p.add_argument("--batch-size", type=int, default=16, help="clips per tokenizer call (default 16)")
    p.add_argument("--shard-size", type=int, default=1024, help="samples per safetensors shard (default 1024)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N; under "
                   "`accelerate launch` each process takes its own GPU")
    _dtype_arg(p, what="the tokenizer")
    p.add_argument("--compile", action="store_true", help="torch.compile the tokenizer's encoder and decoder")
    _overrides(p)


@command("extract-tokens", "tokenize a dataset once (tokens, labels, every task's condition) for fast training")
@arguments(_extract_tokens_args)
def extract_tokens(args: argparse.Namespace) -> None:
    import torch

    from magvit.kinds import load_config
    from magvit.training.tokens import extract_tokens

    cfg = load_config(args.config, args.overrides, expect="train_transformer")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    path = extract_tokens(cfg, args.out, batch_size=args.batch_size, shard_size=args.shard_size, device=device,
                          overwrite=args.overwrite,
                          dtype=args.dtype, compile=args.compile)
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(f"wrote {path}; train from it with: magvit train {args.config} tokens={path}")


# ---------------------------------------------------------------------------------------------
# magvit generate | predict | interpolate | inpaint | outpaint | edit

# flag (argparse dest) -> key of the `kind: sample` settings it sets
_SAMPLE_FLAGS = {
    "checkpoint": "checkpoint", "task": "task", "prompt": "prompt", "classes": "classes", "num": "num",
    "batch_size": "batch_size", "steps": "decode.steps", "schedule": "decode.schedule",
    "temperature": "decode.temperature", "choice_temperature": "decode.choice_temperature", "top_k": "decode.top_k",
    "top_p": "decode.top_p", "guidance": "decode.guidance", "guidance_schedule": "decode.guidance_schedule",
    "paste_back": "decode.paste_back", "seed": "seed", "video": "input", "image": "input",
    "cond_frames": "cond_frames", "start": "start", "stride": "stride", "box": "box", "mask": "mask", "out": "out",
    "fps": "fps", "device": "device",
    "dtype": "dtype", "compile": "compile", "cuda_graph": "decode.cuda_graph",
}
# command -> (its own flags, help)
_SAMPLE_COMMANDS = {
    "generate": (("class",), "generate samples (class-conditional or unconditional) as MP4/GIF/PNG grids"),
    "predict": (("video", "cond_frames", "class"), "predict the next frames of a video from its first K"),
    "interpolate": (("video",), "generate the frames between the first and the last frame of a clip"),
    "inpaint": (("image", "video", "box", "mask", "class"), "regenerate a box or masked region of an image or video"),
    "outpaint": (("image", "video", "box", "mask", "class"), "keep a box (or all but a mask) and generate the rest"),
    "edit": (("image", "video", "class", "box"), "regenerate a box of an image with a target class"),
}


def _sample_args(command: str, own: tuple[str, ...]) -> Callable[[argparse.ArgumentParser], None]:
    def add(p: argparse.ArgumentParser) -> None:
        from magvit import shipped
        from magvit.decode import GUIDANCE_SCHEDULES
        from magvit.pipeline import FAMILIES
        from magvit.schedules import MASK_SCHEDULES
        from magvit.tasks import TASKS

        p.add_argument("config", nargs="?", default=None,
                       help="a `kind: sample` YAML (see configs/generate/); flags and key=value override it")
        p.add_argument("--checkpoint", help="a model folder (<run_dir>/model), a run folder, a shipped name "
                       f"({_names(shipped.names('checkpoints'))}) or a Hugging Face Hub id owner/name")
        extra = {
            "class": lambda: (
                p.add_argument("--classes", dest="classes", type=_class_id, nargs="+", action="extend", metavar="C",
                               help="classes of the samples, cycled (Python: classes=[...]; default 0, 1, 2, ...)"),
                p.add_argument("--class", dest="classes", type=int, action="append", metavar="C",
                               help="one class; repeat for several (the same as --classes)"),
            ),
            "video": lambda: (
                p.add_argument("--video", help="input video (mp4, gif, webp, a folder of frames, bundled:NAME), "
                               "framed as the model's training clips"),
                p.add_argument("--start", type=int, metavar="FRAME", help="the input's first frame read (default 0)"),
                p.add_argument("--stride", type=int, help="read every STRIDE-th frame (default: the stride the "
                               "model was trained at)"),
            ),
            "image": lambda: p.add_argument("--image", help="input image (png, jpg, ...), resized and centre-cropped"),
            "cond_frames": lambda: p.add_argument("--cond-frames", type=int, metavar="K",
                                                  help="frames given (default: as trained)"),
            "box": lambda: p.add_argument("--box", metavar="T,L,H,W",
                                          help="region top,left,height,width in pixels of the model's frame"),
            "mask": lambda: p.add_argument("--mask", metavar="PNG", help="mask image, white = the region to generate"),
        }
        for name in own:
            extra[name]()
        p.add_argument("--task", help=f"the task to run: {_names(FAMILIES[command])} (default: the first the model "
                       "was trained on that fits the inputs)")
        p.add_argument("--prompt", help=f"the task prompt to run the model with, a trained task among "
                       f"{_names(TASKS.names())} (default: the task's own)")
        p.add_argument("--num", type=int, help="samples per input (default: one per class given, else 1)")
        p.add_argument("--batch-size", type=int, help="samples per decode call (default 16)")
        p.add_argument("--steps", type=int, help="decoding steps (default 12)")
        p.add_argument("--schedule", help=f"mask schedule: {_names(MASK_SCHEDULES.names())} (default cosine)")
        p.add_argument("--temperature", type=float, help="sampling temperature (default 1.0)")
        p.add_argument("--choice-temperature", type=float, help="Gumbel noise on the confidences (default 4.5)")
        p.add_argument("--top-k", type=int)
        p.add_argument("--top-p", type=float)
        p.add_argument("--guidance", "--cfg", dest="guidance", type=float,
                       help="classifier-free guidance weight (default 0: none; --cfg is the same flag)")
        p.add_argument("--guidance-schedule", help=f"ramp of the guidance weight: {_names(GUIDANCE_SCHEDULES)} "
                       "(default constant)")
        p.add_argument("--paste-back", action=argparse.BooleanOptionalAction, default=None,
                       help="keep the pixels you gave (the given frames, the kept region) in the result (default); "
                       "--no-paste-back shows the raw decode")
        p.add_argument("--seed", type=int, help="random seed (default 0)")
        p.add_argument("--out", help="output folder, or one .mp4 / .gif / .avi / .webm / .mkv / .png / .jpg file "
                       "(default samples)")
        _overwrite_arg(p)
        p.add_argument("--fps", type=float, help="frames per second of the MP4/GIF (default: the model's)")
        p.add_argument("--device", help="auto (default: cuda if available), cpu, cuda or cuda:N")
        _dtype_arg(p, default=None)
        p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                       help="torch.compile the tokenizer and the decode step (eager, with one warning, where "
                       "compiling fails)")
        p.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction, default=None,
                       help="replay each decode step as a CUDA graph (default: on CUDA when the shapes allow)")
        _overrides(p)

    return add


def _class_id(text: str) -> int:
    """A value of --classes, which takes every word up to the next flag: a key=value override there is
    one line saying where it goes, not "invalid int value"."""
    try:
        return int(text)
    except ValueError:
        where = " (put key=value overrides before --classes, or use --class C)" if "=" in text else ""
        raise argparse.ArgumentTypeError(f"{text!r} is not a class number{where}") from None


def _sampling_command(name: str) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        from magvit.config import parse_overrides
        from magvit.inputs import parse_box
        from magvit.sampling import run_sampling, sample_settings

        config, overrides = args.config, list(args.overrides)
        if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
            config, overrides = None, [config, *overrides]  # `magvit generate steps=4 --checkpoint x`
        if getattr(args, "video", None) and getattr(args, "image", None):
            raise MagvitError("give --video or --image, not both")
        values = {**vars(args), "box": parse_box(getattr(args, "box", None))}
        flags = {key: values.get(dest) for dest, key in _SAMPLE_FLAGS.items() if values.get(dest) is not None}
        run_sampling(name, sample_settings(name, config, parse_overrides(overrides), flags), overwrite=args.overwrite,
                     source=config)

    run.__name__ = name.replace("-", "_")
    return run


for _name, (_own, _help) in _SAMPLE_COMMANDS.items():
    command(_name, _help)(arguments(_sample_args(_name, _own))(_sampling_command(_name)))


# ---------------------------------------------------------------------------------------------
# magvit demo


def _demo_args(p: argparse.ArgumentParser) -> None:
    from magvit import shipped

    p.add_argument("--checkpoint", default="digits-video", help="the model shown first: a model folder, a run "
                   f"folder, a shipped name ({_names(shipped.names('checkpoints'))}; the page can switch between "
                   "these) or a Hugging Face Hub id owner/name (default digits-video)")
    p.add_argument("--port", type=int, default=7860, help="port to serve the page on (default 7860)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                   "only; 0.0.0.0 serves every network the machine is on)")
    p.add_argument("--device", default="auto", help="auto (default: cuda if available), cpu, cuda or cuda:N")


@command("demo", "try a model on a web page (Gradio, the [demo] extra): every sampling command, its settings.yaml")
@arguments(_demo_args)
def demo(args: argparse.Namespace) -> None:
    from magvit.demo import launch

    launch(args.checkpoint, port=args.port, host=args.host, device=args.device)


# ---------------------------------------------------------------------------------------------
# magvit quickstart / magvit run


def _quickstart_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="output folder (default runs/quickstart)")
    p.add_argument("--dtype", default=None, choices=DTYPE_NAMES,
                   help="precision of both trainings (loop.mixed_precision) and of the report (report.dtype); "
                   "default: the recipe's (fp32)")
    _overrides(p)


@command("quickstart", "train a tiny tokenizer and transformer on moving digits on this CPU, then sample and score")
@arguments(_quickstart_args)
def quickstart(args: argparse.Namespace) -> None:
    from magvit.config import parse_overrides
    from magvit.quickstart import quickstart_config, run_quickstart

    run_quickstart(quickstart_config(args.out, parse_overrides(_quickstart_overrides(args))))


def _quickstart_overrides(args: argparse.Namespace) -> list[str]:
    """--dtype: both trainings' mixed precision and the report's dtype; then the user's key=value ones."""
    report = [f"report.dtype={args.dtype}"] if args.dtype else []
    return [*_mixed_precision(args.dtype, "tokenizer.", "transformer."), *report, *args.overrides]


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a `kind: quickstart` YAML (configs/quickstart.yaml)")
    _overrides(p)


@command("run", "run a whole recipe from one YAML: tokenizer, transformer, samples and scores")
@arguments(_run_args)
def run(args: argparse.Namespace) -> None:
    from magvit.kinds import load_config
    from magvit.quickstart import run_quickstart

    run_quickstart(load_config(args.config, args.overrides, expect="quickstart"))


# ---------------------------------------------------------------------------------------------
# magvit reproduce


def _reproduce_args(p: argparse.ArgumentParser) -> None:
    from magvit.reproduce import list_studies

    p.add_argument("study", nargs="?", help=f"a shipped study ({_names(list_studies())}) or a study YAML")
    p.add_argument("--list", action="store_true", help="list the shipped studies and exit")
    p.add_argument("--budget", default="quick", choices=("quick", "full", "test"),
                   help="quick: <= 20 minutes on 2 CPU cores; full: the GPU-sized study; test: seconds (CI)")
    p.add_argument("--out", default=None, help="output folder (default runs/reproduce/STUDY-BUDGET); a killed "
                   "study resumes there, re-running only unfinished arms")
    _overrides(p)


@command("reproduce", "re-run a paper's ablation: arms x seeds, 95% intervals, the paper's claims checked")
@arguments(_reproduce_args)
def reproduce(args: argparse.Namespace) -> None:
    from magvit.config import parse_overrides
    from magvit.reproduce import list_studies, load_study, run_study
    from magvit.reproduce.study import study_summary

    if args.list:
        for name in list_studies():
            print(study_summary(name))
        return
    if args.study is None:
        raise MagvitError(f"name a study (one of: {', '.join(list_studies())}) or pass --list")
    study, path = load_study(args.study, parse_overrides(args.overrides))
    out = args.out or f"runs/reproduce/{study.name}-{args.budget}"
    report = run_study(study, args.budget, out, source=str(path))
    for claim in report["claims"]:
        print(f"  {claim['better']} beats {claim['worse']} on {claim['metric']}: {claim['verdict']}")
    print(f"wrote {out}/report.md, report.json, plot.png")


# ---------------------------------------------------------------------------------------------


def requested(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """(group, name) of the command `argv` names, as far as it names one (before any parsing)."""
    words = [a for a in argv if not a.startswith("-")]
    groups = {group for group, _ in COMMANDS if group is not None}
    if not words:
        return None, None
    if words[0] in groups:
        return words[0], words[1] if len(words) > 1 else None
    return None, words[0]


def build_parser(only: tuple[str | None, str | None] | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `only`, the arguments of that one command alone are built (the
    others are listed with their help), so a command imports only the registries it needs."""
    parser = Parser(
        prog="magvit", description="Masked generative image and video models (MaskGIT, MAGVIT, MAGVIT-v2)."
    )
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for (group, name), (add_args, run, help) in COMMANDS.items():
        listed = help.replace("%", "%%")  # argparse %-formats a subcommand's help ("95% intervals")
        if group is None:
            sub = top.add_parser(name, help=listed, description=help)
        else:
            if group not in groups:
                group_parser = top.add_parser(group, help=f"{group} commands")
                groups[group] = group_parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
            sub = groups[group].add_parser(name, help=listed, description=help)
        if only is None or only == (group, name):
            add_args(sub)
        sub.set_defaults(run=run)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings a user can act on (skipped files, ...) print as one line, without a source line."""
    return f"magvit: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=requested(argv))
    # key=value overrides may come after options (`--out x.gif frames=8`), which argparse's
    # positional matching does not allow: collect them from the leftovers instead.
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra if item.startswith("-") or "=" not in item or not hasattr(args, "overrides")]
    if stray:
        prog = " ".join(["magvit", *filter(None, requested(argv))])
        parser.exit(2, f"magvit: error: unrecognized arguments: {' '.join(stray)} (see {prog} --help)\n")
    if extra:
        args.overrides = [*args.overrides, *extra]
    from magvit.runtime import default_tf32

    default_tf32()  # on CUDA, fp32 matmuls and convolutions of every command run on TF32 tensor cores
    try:
        args.run(args)
    except MagvitError as e:
        print(f"magvit: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if not e.filename:  # not about a path the user gave: a bug, keep the traceback
            raise
        print(f"magvit: error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("magvit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
