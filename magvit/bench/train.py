"""`magvit bench train`: training speed of the tokenizer and transformer presets at a given batch.

One row per model x precision x compile x activation checkpointing, each on a freshly built model
(random weights, seed 0): the median time of one optimizer step after warm-up steps, clips/s and
tokens/s, the peak memory of one step, the model FLOPs of a step and the MFU.

A step is what the training recipes do per batch, on random data of the right shape (speed does not
depend on the values):
- tokenizer: the generator step of `magvit train-tokenizer`: forward, pixel L2 plus the quantizer's
  own loss (for LFQ its commitment and entropy penalty, MAGVIT-v2 section 3.1, on at the presets'
  weight), backward, AdamW. No LPIPS or discriminator: their cost depends on the backbone chosen;
- transformer: the step of `magvit train`: half of the tokens masked, cross-entropy at every position
  (COMMIT, MAGVIT section 3.2), backward, AdamW.

FLOPs: the transformer's own counter (`flops_per_forward`, matmuls, 2 per multiply-add) x 3 for the
forward and the backward; the tokenizer's counted by torch's FlopCounterMode over one eager forward and
backward (convolutions, matmuls). MFU = model FLOPs per step / step time / the device's peak: checkpointing
recomputes the forward, which MFU does not count (model FLOPs only, as PaLM's appendix B defines it).
The peak is `--peak-tflops`, else the dense tensor-core peak of a known GPU (PEAK_TFLOPS: bf16 / fp16,
or TF32 for fp32, which runs on TF32 by default); on a CPU MFU is n/a unless `--peak-tflops` is given.

Peak memory: on CUDA, max_memory_allocated over one step (weights, gradients, AdamW state and
activations); on a CPU the growth of the resident set's high-water mark during one step (weights and
optimizer state allocated before it are not counted; `PeakMemory.kind` says which).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from magvit.bench.measure import PeakMemory, count_parameters, synchronize, time_call
from magvit.bench.report import Column, Table, environment
from magvit.errors import MagvitError
from magvit.runtime import autocast, compile_forward, compile_tokenizer

# device name contains -> (bf16 / fp16, TF32) dense tensor-core TFLOP/s, from the vendors' data sheets;
# first match wins (the PCIe H100 before the SXM one)
PEAK_TFLOPS: dict[str, tuple[float, float]] = {
    "H100 PCIe": (756.0, 378.0),
    "H100": (989.0, 494.0),
    "H200": (989.0, 494.0),
    "A100": (312.0, 156.0),
    "L40S": (362.0, 183.0),
    "L4": (121.0, 60.0),
}

COLUMNS = [
    Column("model", "model"), Column("dtype", "dtype"), Column("compiled", "compiled"),
    Column("checkpointing", "checkpointing"), Column("batch", "batch"), Column("params_m", "params M"),
    Column("step_ms", "step ms"), Column("clips_per_s", "clips/s"), Column("tokens_per_s", "tokens/s"),
    Column("peak_mib", "peak MiB"), Column("gflop_per_step", "GFLOP/step"), Column("tflops", "TFLOP/s"),
    Column("mfu_pct", "MFU %"), Column("first_step_s", "first step s"),
]


def device_peak(device: torch.device, dtype: str, given: float | None) -> float | None:
    """TFLOP/s the MFU is taken against: `given`, else the known GPU's dense peak, else None."""
    if given is not None:
        if given <= 0:
            raise MagvitError(f"--peak-tflops must be > 0, got {given}")
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    low, tf32 = next((peaks for key, peaks in PEAK_TFLOPS.items() if key in name), (None, None))
    return tf32 if dtype == "fp32" else low


@dataclass
class Workload:
    """A model to train and what one step of it needs."""

    label: str
    build: Callable[[], nn.Module]  # a fresh model, random weights (seed 0)
    batch: Callable[[torch.device], tuple]  # the inputs of one step
    loss: Callable[[nn.Module, tuple], Tensor]
    tokens_per_clip: int
    compile: Callable[[nn.Module], nn.Module]
    flops: Callable[[nn.Module, tuple], float]  # model FLOPs of one forward + backward


def tokenizer_workload(spec: str, batch: int, frames: int, size: int) -> Workload:
    """A tokenizer `name:preset` on clips of the longest length <= `frames` it tiles, at size x size."""
    from magvit.bench.tokenizers import longest_prefix
    from magvit.tokenizers import build_tokenizer
    from magvit.tokenizers.losses import reconstruction_loss

    name, sep, preset = spec.partition(":")
    if not sep or not name or not preset:
        raise MagvitError(f"--tokenizers {spec!r}: give name:preset, e.g. causal3d:tiny")

    def build() -> nn.Module:
        torch.manual_seed(0)
        return build_tokenizer(name, preset)

    model = build()
    # the longest clip <= `frames` the tokenizer tiles, as `bench tokenizers` does (vq3d 4k, causal3d 1 + 4k)
    frames = longest_prefix(model, frames, size) or frames
    t, h, w = model.token_shape(frames, size, size)  # nothing tiles: one line naming the fix

    def inputs(device: torch.device) -> tuple:
        gen = torch.Generator().manual_seed(0)
        return (torch.rand(batch, 3, frames, size, size, generator=gen).mul(2).sub(1).to(device),)

    def loss(model: nn.Module, x: tuple) -> Tensor:
        out = model(x[0])
        return reconstruction_loss(out.recon.float(), x[0]) + out.quant.loss

    return Workload(f"{spec} {frames}x{size}x{size}", build, inputs, loss, t * h * w, compile_tokenizer,
                    lambda model, x: counted_flops(lambda: loss(model, x).backward()))


def transformer_workload(preset: str, batch: int, grid: tuple[int, int, int], codebook_size: int) -> Workload:
    from magvit.transformer import build_transformer, token_cross_entropy

    def build() -> nn.Module:
        torch.manual_seed(0)
        return build_transformer(preset, codebook_size=codebook_size, grid=grid, num_classes=10)

    def inputs(device: torch.device) -> tuple:
        gen = torch.Generator().manual_seed(0)
        tokens = torch.randint(codebook_size, (batch, *grid), generator=gen)  # (B, t, h, w)
        masked = torch.rand(tokens.shape, generator=gen) < 0.5
        return tuple(v.to(device) for v in (tokens, masked))

    def loss(model: nn.Module, x: tuple) -> Tensor:
        tokens, masked = x
        vocab = model.vocab
        inputs = tokens.masked_fill(masked, vocab.mask)
        task = torch.full((len(tokens),), vocab.task("cg"), device=tokens.device)
        cls = vocab.cls(torch.zeros(len(tokens), dtype=torch.long, device=tokens.device))
        return token_cross_entropy(model(inputs, task, cls), tokens).mean()

    tokens = math.prod(grid)
    return Workload(f"transformer {preset} {'x'.join(map(str, grid))}", build, inputs, loss, tokens,
                    lambda m: compile_forward(m, "the transformer"),
                    lambda model, x: 3.0 * len(x[0]) * model.flops_per_forward(tokens))


def counted_flops(step: Callable[[], Any]) -> float:
    """FLOPs torch's FlopCounterMode counts over `step()` (convolutions and matmuls, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def train_row(work: Workload, device: torch.device, dtype: str, compile: bool, checkpointing: bool,
              flops: float, warmup: int, repeats: int, peak: float | None) -> tuple[dict[str, Any], str]:
    """Time `repeats` optimizer steps of a fresh model after `warmup` ones (the first also compiles)."""
    model = work.build().to(device).train()
    model.checkpoint_activations(checkpointing)
    if compile:
        work.compile(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "fp16")
    x = work.batch(device)

    def step() -> None:
        with autocast(device, dtype):
            loss = work.loss(model, x)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    start = time.perf_counter()
    step()  # allocates the AdamW state; compiles
    synchronize(device)
    first = time.perf_counter() - start
    seconds = time_call(step, device, max(warmup - 1, 0), repeats)
    with PeakMemory(device) as memory:
        step()
    batch = len(x[0])
    achieved = flops / seconds / 1e12
    row = {
        "model": work.label, "dtype": dtype, "compiled": compile, "checkpointing": checkpointing, "batch": batch,
        "params_m": count_parameters(model) / 1e6, "step_ms": 1e3 * seconds, "clips_per_s": batch / seconds,
        "tokens_per_s": batch * work.tokens_per_clip / seconds, "peak_mib": memory.bytes / 2**20,
        "gflop_per_step": flops / 1e9, "tflops": achieved,
        "mfu_pct": 100 * achieved / peak if peak else None, "first_step_s": first,
    }
    return row, memory.kind


def _choices(option: str, name: str) -> list[bool]:
    table = {"off": [False], "on": [True], "both": [False, True]}
    if option not in table:
        raise MagvitError(f"--{name} must be off, on or both, got {option!r}")
    return table[option]


def bench_train(
    tokenizers: list[str], transformers: list[str], batch: int = 8, frames: int = 17, size: int = 128,
    grid: tuple[int, int, int] = (5, 16, 16), codebook_size: int = 1024, device: torch.device | str = "cpu",
    dtypes: tuple[str, ...] = ("fp32",), compile: str = "off", checkpointing: str = "off", warmup: int = 1,
    repeats: int = 3, peak_tflops: float | None = None, argv: list[str] | None = None,
) -> Table:
    """Rows for every tokenizer (`name:preset`) and transformer preset x dtype x compile x checkpointing."""
    device = torch.device(device)
    if not tokenizers and not transformers:
        raise MagvitError("name at least one model: --tokenizers name:preset ... and/or --transformers PRESET ...")
    if batch < 1 or repeats < 1 or warmup < 1:
        raise MagvitError(f"--batch, --repeats and --warmup must be >= 1, got {batch}, {repeats}, {warmup}")
    if "fp16" in dtypes and device.type != "cuda":
        raise MagvitError("fp16 training needs a CUDA GPU (a gradient scaler); use bf16 or fp32 on this machine")
    compiles, checkpoints = _choices(compile, "compile"), _choices(checkpointing, "checkpointing")
    works = [tokenizer_workload(s, batch, frames, size) for s in tokenizers]
    works += [transformer_workload(p, batch, grid, codebook_size) for p in transformers]
    table = Table("train", f"Training steps at batch {batch}", COLUMNS, environment=environment(device, argv))
    for work in works:
        model = work.build().to(device)
        flops = work.flops(model, work.batch(device))  # eager fp32, counted once per model
        del model
        for dtype in dtypes:
            peak = device_peak(device, dtype, peak_tflops)
            for compiled in compiles:
                for checkpointed in checkpoints:
                    row, kind = train_row(work, device, dtype, compiled, checkpointed, flops, warmup, repeats, peak)
                    table.rows.append(row)
                    table.note(f"peak memory: {kind}, one optimizer step")
    table.note(f"step: median of {repeats} timed optimizer steps after {warmup} warm-up (the first, compiling "
               "when compiled, is the 'first step s' column); random data, random weights")
    table.note("tokenizer step: pixel L2 + the quantizer's loss (LFQ: commitment and entropy penalty on), backward, "
               "AdamW; no LPIPS or discriminator. Transformer step: half the tokens masked, cross-entropy at every "
               "position, backward, AdamW")
    table.note("FLOPs: model FLOPs of the forward and backward (transformer: its own matmul counter x 3; tokenizer: "
               "torch's FlopCounterMode); checkpointing's recomputed forward is not counted")
    if peak_tflops is None and device.type != "cuda":
        table.note("MFU n/a on a CPU: pass --peak-tflops to set the device's peak")
    elif peak_tflops is None and any(device_peak(device, d, None) is None for d in dtypes):
        table.note(f"MFU n/a: {torch.cuda.get_device_name(device)} is not in the table of known peaks; pass "
                   "--peak-tflops")
    else:
        table.note("MFU against " + (f"--peak-tflops {peak_tflops}" if peak_tflops else
                                     "the GPU's dense tensor-core peak (bf16 / fp16, TF32 for fp32)"))
    return table
