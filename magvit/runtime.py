"""How models run: precision, torch.compile, TF32, channels-last and activation checkpointing.

Every command that runs a model takes these the same way (`--dtype`, `--compile`, and the config keys
`dtype`, `compile`, `loop.checkpointing`), and all of them come from here.

Precision. `--dtype bf16 | fp16` runs the forward passes under autocast: the weights stay fp32, the
matmuls and convolutions run in the low precision. Three places leave autocast and compute in fp32,
because a rounding there changes a discrete choice or a loss's value, not just a pixel:
- the quantizers (magvit.tokenizers.quantizers): VQ's nearest-code search, LFQ's signs and its
  entropy terms (MAGVIT-v2 section 3.1; they overflow to NaN in fp16), FSQ's rounding. A bf16 encoder
  still moves some latents across a decision boundary: on the shipped digits-video tokenizer 99.7% of
  the ids equal the fp32 ones (tests/test_runtime.py measures it);
- the tokenizer losses: the reconstruction and GAN terms take `.float()` inputs, and the LPIPS network
  runs in fp32 (magvit.tokenizers.losses.Perceptual: it compares unit-normalised features, whose
  differences are below bf16's resolution once reconstructions are good);
- the transformer's logits (`head` returns float32), so the cross-entropy, the sampling and the
  confidences of the decode loop see fp32 numbers.
Training takes its precision from `loop.mixed_precision` (accelerate's autocast and gradient scaler);
`--dtype` on the training commands sets that key.

TF32. On CUDA, fp32 matmuls and convolutions use TensorFloat-32 tensor cores (10-bit mantissa inputs,
fp32 accumulation) unless the user chose otherwise: `default_tf32` runs at every command's start and in
`MagvitPipeline.from_pretrained`; `use_tf32(False)` turns it off for good.

torch.compile. `compile_forward(module)` routes a module's forward through torch.compile in place:
the module, its parameter names and its state_dict stay as they are (no `_orig_mod.` prefix in any
checkpoint). Where the backend is unavailable (no C++ compiler, no Triton) or compilation fails, one
warning line says so and the module runs eagerly from then on.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, Literal, ParamSpec, TypedDict, TypeVar

import torch
from torch import Tensor, nn

from magvit.errors import MagvitError

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing's own from Python 3.11

Dtype = Literal["fp32", "bf16", "fp16"]
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# `loop.mixed_precision` (accelerate's names) of each --dtype
MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """'auto' (CUDA when there is one, else the CPU), 'cpu', 'cuda' or 'cuda:N' -> torch.device; a name
    torch does not know, or CUDA asked for where there is none, is one line."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise MagvitError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MagvitError(f"--device {name}: CUDA is not available on this machine; use --device cpu (or auto)")
    return device


def torch_dtype(name: str) -> torch.dtype:
    """'fp32' | 'bf16' | 'fp16' -> the torch dtype; one line for anything else."""
    if name not in DTYPES:
        raise MagvitError(f"--dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def autocast(device: torch.device | str, dtype: str | torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to bf16 / fp16 on `device` (weights stay fp32), or nothing for fp32 / None."""
    dtype = torch_dtype(dtype) if isinstance(dtype, str) else dtype
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# TF32

_tf32_chosen = False  # True once the user called use_tf32: default_tf32 leaves their choice alone


def _set_tf32(enabled: bool) -> None:
    precision = "tf32" if enabled else "ieee"
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):  # torch >= 2.9: the legacy flags must not be mixed in
        torch.backends.cuda.matmul.fp32_precision = precision
        torch.backends.cudnn.conv.fp32_precision = precision
    else:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


def use_tf32(enabled: bool = True) -> None:
    """TF32 for fp32 matmuls and convolutions on CUDA, on or off, for the rest of the process."""
    global _tf32_chosen
    _tf32_chosen = True
    _set_tf32(enabled)


def quiet_deepspeed_detection() -> None:
    """Without CUDA, name the CPU as DeepSpeed's accelerator (`DS_ACCELERATOR`, unless the user set it):
    DeepSpeed, which accelerate imports whenever it is installed, would pick the CPU anyway, but its
    detection logs a warning in every command. A CUDA machine is left to DeepSpeed's own detection."""
    if "DS_ACCELERATOR" not in os.environ and not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"


def default_tf32() -> None:
    """TF32 on where CUDA is (the fp32 paths then run on tensor cores), unless `use_tf32` chose."""
    if not _tf32_chosen and torch.cuda.is_available():
        _set_tf32(True)


# ---------------------------------------------------------------------------------------------
# torch.compile

P = ParamSpec("P")
R = TypeVar("R")


class CompileOptions(TypedDict, total=False):
    """The keyword arguments of `torch.compile` that `compile_forward` passes on."""

    fullgraph: bool
    dynamic: bool | None
    backend: str | Callable[..., object]
    mode: str | None
    options: dict[str, str | int | bool | Callable[..., object]]
    disable: bool


class CompiledCall(Generic[P, R]):
    """`fn` through torch.compile; on a backend failure, one warning line and `fn` itself from then on.

    Inside a region that is itself being compiled (a compiled decode step calling a compiled model)
    `fn` is called directly, so the outer compilation traces through it."""

    def __init__(self, fn: Callable[P, R], what: str, **options: Unpack[CompileOptions]):
        self.eager, self.what = fn, what
        self.compiled: Callable[P, R] | None = None
        try:
            self.compiled = torch.compile(fn, **options)
        except RuntimeError as e:  # torch.compile refuses at once (e.g. an unsupported Python)
            self._give_up(e)

    def _give_up(self, error: BaseException) -> None:
        cause = getattr(error, "inner_exception", None) or error  # BackendCompilerFailed wraps the backend's error
        reason = (str(cause).strip().splitlines() or [""])[0][:200]
        reason = f"{type(cause).__name__}: {reason}" if reason else type(cause).__name__
        warnings.warn(f"--compile: {self.what} runs eagerly: torch.compile is unavailable here ({reason})",
                      stacklevel=3)
        self.compiled = None

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        if self.compiled is None or torch.compiler.is_compiling():
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except torch._dynamo.exc.TorchDynamoException as e:  # the backend failed: no C++ compiler, no Triton, ...
            self._give_up(e)
        return self.eager(*args, **kwargs)


def compile_forward(module: nn.Module, what: str, **options: Unpack[CompileOptions]) -> nn.Module:
    """Compile `module`'s forward in place (an instance attribute shadows the class's forward), keeping
    its parameters and state_dict keys; `what` names it in the fallback warning. Static shapes by
    default (`dynamic=False`): a new input shape compiles again, up to torch's recompile limit."""
    if is_compiled(module):
        return module
    options.setdefault("dynamic", False)
    module.forward = CompiledCall(module.forward, what, **options)
    return module


def is_compiled(module: nn.Module) -> bool:
    return isinstance(module.__dict__.get("forward"), CompiledCall)


def eager(module: nn.Module) -> nn.Module:
    """Undo `compile_forward`."""
    module.__dict__.pop("forward", None)
    return module


def compile_tokenizer(tokenizer: nn.Module) -> nn.Module:
    """Compile a tokenizer's encoder and decoder (the conv stacks, where the time goes); its quantizer
    stays eager and fp32 (bincounts, data-dependent code restarts, autocast turned off)."""
    compile_forward(tokenizer.encoder, f"the {tokenizer.config.name} encoder")
    compile_forward(tokenizer.decoder, f"the {tokenizer.config.name} decoder")
    return tokenizer


# ---------------------------------------------------------------------------------------------
# Memory layout and activation checkpointing


def channels_last(module: nn.Module) -> nn.Module:
    """3D conv weights in channels-last-3d layout (N, T, H, W, C in memory), for cuDNN's NDHWC kernels;
    2D convs get channels-last. Inputs keep their layout: the first conv converts. An option, not a
    default: on CPU it was slower (BENCHMARKS.md section 8)."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            m.to(memory_format=torch.channels_last_3d)
        elif isinstance(m, nn.Conv2d):
            m.to(memory_format=torch.channels_last)
    return module


def run_block(block: nn.Module, *args: object, checkpointing: bool = False) -> Tensor:
    """block(*args); with `checkpointing` while gradients are recorded, the block's activations are
    not kept but recomputed in the backward pass (torch.utils.checkpoint, non-reentrant: RNG state
    is restored, so dropout draws the same mask twice and gradients equal the plain ones)."""
    if checkpointing and torch.is_grad_enabled():
        from torch.utils.checkpoint import checkpoint

        return checkpoint(block, *args, use_reentrant=False)
    return block(*args)


# ---------------------------------------------------------------------------------------------
# Where a figure was measured


def describe_device(device: torch.device | str) -> str:
    """'NVIDIA H100 80GB HBM3' or '2-core CPU (x86_64)': what a reader needs to compare figures."""
    import os
    import platform

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores}-core CPU ({platform.machine()})"


def git_commit() -> str:
    """Short hash of HEAD of the checkout this package runs from ('+changes' when tracked files differ
    from it), or 'unknown' outside git."""
    import subprocess
    from pathlib import Path

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        if out.returncode != 0:
            raise OSError(out.stderr)
        return out.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device: torch.device | str = "auto", argv: list[str] | None = None) -> dict[str, str]:
    """The facts every published figure carries (bench tables, study reports): the command, the
    device ("auto": CUDA when there is one), torch, the date (UTC), the commit; on the CPU the torch
    threads and the load average (other processes on the same cores slow CPU timings)."""
    import os
    import shlex
    import sys
    import time

    argv = sys.argv[1:] if argv is None else argv
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    env = {"command": "magvit " + shlex.join(argv), "device": describe_device(device), "torch": torch.__version__,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "commit": git_commit()}
    if torch.device(device).type == "cpu":
        env["threads"] = str(torch.get_num_threads())
        if hasattr(os, "getloadavg"):
            env["load"] = f"{os.getloadavg()[0]:.1f}"
    return env
