"""The four benchmarks' settings as config kinds: `magvit bench NAME [CONFIG.yaml] [--flags] [key=value]`.

Each field is declared once (magvit.config.option): the YAML key, the flag and its help with the
default come from here; the resolved settings are written next to the tables (`<out>/<table>.settings.yaml`)
so that a table can be re-made with `magvit bench NAME <that file>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from magvit.config import option
from magvit.runtime import Dtype


@dataclass(frozen=True, kw_only=True)
class BenchCommon:
    """What every benchmark shares: where it runs, how it is timed, where its tables go."""

    device: str = option("cpu", "cpu, cuda or cuda:N")
    out: str | None = option(None, "folder for the JSON, CSV, Markdown and PNG tables (default: print only)")
    warmup: int = option(1, "untimed calls before timing")
    repeats: int = option(3, "timed calls; the median is reported")
    threads: int | None = option(None, "CPU threads for torch (default: torch's choice; 1 is steadier on a busy "
                                 "machine)")


@dataclass(frozen=True, kw_only=True)
class BenchTokenizersConfig(BenchCommon):
    """`kind: bench_tokenizers`: tokenizers side by side on the same clips."""

    kind: str = option("bench_tokenizers", cli=False)
    tokenizers: tuple[str, ...] = option(help="saved tokenizer folders, or name:preset with random weights "
                                         "(causal3d:tiny, vq3d:b, vqgan2d:b, ...)", metavar="A")
    data: str = option("moving_digits", "moving_digits, bundled_clips, or a folder of videos or images")
    frames: int | None = option(None, "frames per clip, the same clips for all; each tokenizer reconstructs the "
                                "longest prefix it tiles (vq3d 4k frames, causal3d 1 + 4k, vqgan2d any) and every "
                                "row is also scored on the frames all share (default: the shortest clip from which "
                                "every tokenizer reconstructs at least 16 frames: 16, or 17 with causal3d)")
    size: int = option(64, "clip height and width")
    batch_size: int = option(8, "clips per encode/decode call")
    num_clips: int = option(32, "clips the quality metrics average over")
    i3d: str | None = option(None, "local I3D (TorchScript or .safetensors) for reconstruction FVD")
    inception: str | None = option(None, "local Inception (TorchScript or .safetensors) for rFID")
    compile: bool = option(False, "also time each tokenizer compiled (torch.compile), next to the eager figures")
    channels_last: bool = option(False, "conv weights channels-last (3D: channels_last_3d); slower on CPU, see "
                                 "BENCHMARKS.md")
    dtype: Dtype = option("fp32", "precision of the forward passes: fp32 (TF32 on CUDA), bf16 or fp16 (autocast)")


@dataclass(frozen=True, kw_only=True)
class BenchDecodeConfig(BenchCommon):
    """`kind: bench_decode`: MaskGIT decoding against autoregressive decoding with a KV cache."""

    kind: str = option("bench_decode", cli=False)
    grid: tuple[int, int, int] = option(help="token grid T,H,W, e.g. 4,16,16 (MAGVIT) or 1,16,16 (MaskGIT)",
                                        metavar="T,H,W")
    preset: str = option("tiny", "transformer preset", names="magvit.transformer:TransformerConfig.PRESETS")
    steps: int = option(12, "MaskGIT decoding steps")
    batch: tuple[int, ...] = option((1, 32), "batch for latency, then batch for throughput (default 1 32)",
                                    metavar="B")
    codebook_size: int = option(1024, "codes per token")
    schedule: str = option("cosine", "mask schedule", names="magvit.schedules:MASK_SCHEDULES")
    fast_paths: tuple[Literal["compiled", "cuda-graph", "compiled+cuda-graph"], ...] | None = option(
        None, "decode-loop paths timed beside eager: compiled, cuda-graph, compiled+cuda-graph (default: compiled, "
        "and on CUDA all three; give none for eager only)", metavar="PATH")
    dtype: Dtype = option("fp32", "precision of the forward passes: fp32 (TF32 on CUDA), bf16 or fp16 (autocast)")


@dataclass(frozen=True, kw_only=True)
class BenchTrainConfig(BenchCommon):
    """`kind: bench_train`: training throughput, peak memory and MFU of presets."""

    kind: str = option("bench_train", cli=False)
    tokenizers: tuple[str, ...] = option((), "tokenizers to train, random weights (causal3d:tiny, vq3d:b, ...)",
                                         metavar="NAME:PRESET")
    transformers: tuple[str, ...] = option((), "transformer presets to train", metavar="PRESET",
                                           names="magvit.transformer:TransformerConfig.PRESETS")
    batch: int = option(8, "clips (token grids) per step")
    frames: int = option(17, "tokenizer clip frames; each trains on the longest clip up to this it tiles")
    size: int = option(128, "tokenizer clip height and width")
    grid: tuple[int, int, int] = option((5, 16, 16), "transformer token grid T,H,W (default 5,16,16)", metavar="T,H,W")
    codebook_size: int = option(1024, "transformer codes per token")
    dtype: tuple[Dtype, ...] = option(("fp32",), "precisions, a row each: fp32 (TF32 on CUDA), bf16, fp16 (CUDA) "
                                       "(default fp32)", metavar="DTYPE")
    compile: Literal["off", "on", "both"] = option("off", "torch.compile the model: off, on, or both rows")
    checkpointing: Literal["off", "on", "both"] = option("off", "activation checkpointing per block: off, on, or "
                                                         "both rows")
    peak_tflops: float | None = option(None, "the device's peak TFLOP/s for MFU (default: known GPUs' dense peak; "
                                       "n/a on a CPU)")


@dataclass(frozen=True, kw_only=True)
class BenchQualityConfig(BenchCommon):
    """`kind: bench_quality`: generation quality on moving digits."""

    kind: str = option("bench_quality", cli=False)
    checkpoint: str = option(help="a model folder written by `magvit train` (or its run folder)")
    cache_dir: str | None = option(None, "digit classifiers to use in place of the shipped one (trained if absent)")
    num: int = option(100, "clips per measurement")
    steps: int = option(12, "decoding steps of the main row")
    schedule: str = option("cosine", "mask schedule of the main row", names="magvit.schedules:MASK_SCHEDULES")
    temperature: float = option(1.0, "sampling temperature of every row")
    guidance: float = option(0.0, "classifier-free guidance of the class-conditional samples (0: none)")
    sweep_schedules: tuple[str, ...] = option(("cosine", "square", "linear", "sqrt"), "schedules of the sweep "
                                              "(none: no sweep)", metavar="S")
    sweep_steps: tuple[int, ...] = option((4, 8, 12, 16), "steps of the sweep", metavar="N")
    batch_size: int = option(50, "clips per decode call")
    seed: int = option(0, "random seed of the clips, the conditions and the samples")
    dtype: Dtype = option("fp32", "precision of the model (the digit classifier stays fp32)")
    compile: bool = option(False, "torch.compile the tokenizer and the decode step")
