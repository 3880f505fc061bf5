"""`magvit bench decode`: MaskGIT's parallel decoding against the autoregressive baseline, and the
decode loop's fast paths side by side.

Both models are randomly initialised at the same preset (decoding speed does not depend on the
weights: every step runs the same shapes whatever the logits say) and fill the same token grid.
The masked transformer runs `steps` forwards over the whole grid (`magvit.decode.decode`); the
autoregressive one runs one forward per token with a KV cache (`ARTransformer.generate`).
Latency is one call at the first batch size (1 by default), throughput one call at the last. FLOPs
are the matmul FLOPs the models count for themselves (`decode_flops`, `generate_flops`: 2 per
multiply-add in projections, MLPs, attention scores and values, and the output head), so the
achieved TFLOP/s says how far from the hardware's peak each decoder runs.

MaskGIT decoding runs once per path: eager, compiled (`DecodeConfig.compile`: torch.compile of the
step), and on CUDA the step replayed as a CUDA graph (`DecodeConfig.cuda_graph`), alone and
compiled; "vs eager" is each row's speed-up over the eager MaskGIT row. Every path returns the same
ids for the same seed (tests/test_decode_fast.py), so the rows differ in speed only.
"""

from __future__ import annotations

import math
import warnings

import torch

from magvit.autoregressive import ARConfig
from magvit.bench.measure import autocast, count_parameters, time_call
from magvit.bench.report import Column, Table, environment
from magvit.decode import DecodeConfig, decode, decode_flops
from magvit.errors import MagvitError
from magvit.transformer import build_transformer

TASK = "uncond"  # no class token to choose; a class-conditional run has the same sequence length

# fast path -> the DecodeConfig fields it sets (the eager row sets cuda_graph=False: on CUDA the
# default would replay graphs)
PATHS = {
    "eager": dict(compile=False, cuda_graph=False),
    "compiled": dict(compile=True, cuda_graph=False),
    "cuda-graph": dict(compile=False, cuda_graph=True),
    "compiled+cuda-graph": dict(compile=True, cuda_graph=True),
}
LABELS = {"eager": "eager", "compiled": "compiled", "cuda-graph": "CUDA graph",
          "compiled+cuda-graph": "compiled + CUDA graph"}

COLUMNS = [
    Column("method", "method"), Column("path", "path"), Column("forwards", "forwards/sample"),
    Column("params_m", "params M"),
    Column("gflop_per_sample", "GFLOP/sample"), Column("latency_ms", "latency ms @b1"),
    Column("latency_tflops", "TFLOP/s @b1"), Column("throughput", "samples/s @bN"),
    Column("throughput_tflops", "TFLOP/s @bN"), Column("speedup_latency", "speed-up @b1"),
    Column("speedup_throughput", "speed-up @bN"), Column("vs_eager_latency", "vs eager @b1"),
    Column("vs_eager_throughput", "vs eager @bN"),
]


def default_fast_paths(device: torch.device) -> tuple[str, ...]:
    """compiled everywhere; CUDA graphs (alone and compiled) on CUDA."""
    return ("compiled", "cuda-graph", "compiled+cuda-graph") if device.type == "cuda" else ("compiled",)


def parse_grid(text: str) -> tuple[int, int, int]:
    """'4,16,16' -> (4, 16, 16)."""
    parts = text.replace("x", ",").split(",")
    try:
        grid = tuple(int(p) for p in parts)
    except ValueError:
        grid = ()
    if len(grid) != 3 or min(grid) < 1:
        raise MagvitError(f"--grid takes the token grid T,H,W (e.g. 4,16,16), got {text!r}")
    return grid  # type: ignore[return-value]


def _time_method(method: tuple, device: torch.device, first: int, last: int, warmup: int,
                 repeats: int) -> tuple[dict, list[str]]:
    """One row: a method's latency at batch `first` and throughput at batch `last`, and the eager
    fallbacks its decode warned about."""
    name, path, model, run, flops, forwards = method
    # a compiled step compiles (and a graph is captured) at its first call of each batch size
    warm = warmup if path == "eager" else max(warmup, 1)
    fallbacks = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        latency = time_call(run(first), device, warm, repeats)
        busy = latency if last == first else time_call(run(last), device, warm, repeats)
    for w in caught:
        if str(w.message).startswith("decode:"):
            fallbacks.append(f"{LABELS[path]}: {w.message}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    row = {
        "method": name, "path": LABELS[path], "forwards": forwards, "params_m": count_parameters(model) / 1e6,
        "gflop_per_sample": flops(1) / 1e9, "latency_ms": 1e3 * latency,
        "latency_tflops": flops(first) / latency / 1e12, "throughput": last / busy,
        "throughput_tflops": flops(last) / busy / 1e12, "seconds_first": latency, "seconds_last": busy,
        "batch_latency": first, "batch_throughput": last,
    }
    return row, fallbacks


def bench_decode(
    preset: str, grid: tuple[int, int, int], steps: int = 12, batches: tuple[int, ...] = (1, 32),
    device: torch.device | str = "cpu", dtype: str = "fp32", codebook_size: int = 1024, schedule: str = "cosine",
    warmup: int = 1, repeats: int = 3, fast_paths: tuple[str, ...] | None = None, argv: list[str] | None = None,
) -> Table:
    """One row per MaskGIT path (eager, then `fast_paths`, default `default_fast_paths`) and one for
    the autoregressive baseline with a KV cache."""
    device = torch.device(device)
    fast_paths = default_fast_paths(device) if fast_paths is None else tuple(fast_paths)
    for path in fast_paths:
        if path not in PATHS or path == "eager":
            raise MagvitError(f"--fast-paths takes {', '.join(p for p in PATHS if p != 'eager')}, got {path!r}")
        if "cuda-graph" in path and device.type != "cuda":
            raise MagvitError(f"--fast-paths {path}: cuda-graph needs --device cuda")
    if not 1 <= len(batches) <= 2 or min(batches) < 1:
        raise MagvitError(f"--batch takes one or two sizes >= 1 (latency, throughput), got {list(batches)}")
    first, last = batches[0], batches[-1]
    tokens = math.prod(grid)
    common = dict(codebook_size=codebook_size, grid=grid, dropout=0.0)
    masked = build_transformer(preset, **common).to(device).eval()
    ar = build_transformer(preset, name=ARConfig.name, **common).to(device).eval()
    cfg = DecodeConfig(steps=steps, schedule=schedule)
    gen = torch.Generator(device=device).manual_seed(0)

    def run_masked(path: str):
        path_cfg = DecodeConfig(steps=steps, schedule=schedule, **PATHS[path])
        return lambda batch: lambda: decode(masked, None, TASK, None, grid, batch, path_cfg, gen)

    def run_ar(batch: int):
        return lambda: ar.generate(grid, batch=batch, generator=gen)

    methods = [("maskgit", path, masked, run_masked(path), lambda b: decode_flops(masked, tokens, cfg, b), steps)
               for path in ("eager", *fast_paths)]
    methods.append(("autoregressive (KV cache)", "eager", ar, run_ar, lambda b: b * ar.generate_flops(tokens),
                    tokens))
    with torch.inference_mode(), autocast(device, dtype):
        timed = [_time_method(method, device, first, last, warmup, repeats) for method in methods]
    rows, fallbacks = [row for row, _ in timed], [text for _, texts in timed for text in texts]
    baseline, eager = rows[-1], rows[0]
    for row in rows:
        row["speedup_latency"] = baseline["latency_ms"] / row["latency_ms"]
        row["speedup_throughput"] = row["throughput"] / baseline["throughput"]
        row["vs_eager_latency"] = eager["latency_ms"] / row["latency_ms"]
        row["vs_eager_throughput"] = row["throughput"] / eager["throughput"]
    t, h, w = grid
    table = Table(
        "decode",
        f"Decoding a {t}x{h}x{w} token grid ({tokens} tokens, codebook {codebook_size}) with the {preset} "
        f"transformer, {dtype}",
        COLUMNS, rows, environment=environment(device, argv),
    )
    table.note(f"maskgit: {steps} steps, {schedule} schedule; autoregressive: one token per forward, KV cache")
    table.note(f"@b1 = batch {first} (latency of one call), @bN = batch {last} (samples/s of one call); "
               f"median of {repeats} timed calls after {warmup} warm-up")
    table.note("random weights: decoding speed does not depend on them; speed-up = relative to autoregressive, "
               "vs eager = relative to the eager maskgit row")
    if len(rows) > 2:
        table.note("fast paths: compiled = torch.compile of the decode step; CUDA graph = the step captured at "
                   "the first call of a batch size and replayed every step after; each path gets at least one "
                   "warm-up call per batch size, so compiling and capturing are not timed")
    for text in dict.fromkeys(fallbacks):
        table.note(f"fell back to eager: {text}")
    table.note("FLOPs: matmuls only, 2 per multiply-add, as counted by decode_flops / generate_flops")
    return table
