"""Timing and peak memory, measured the same way by every benchmark.

Timing: warm-up calls first (allocator, cuDNN autotuning, lazy init), then `repeats` timed calls,
each bracketed by `torch.cuda.synchronize` on a GPU (kernels are asynchronous); the median is
reported, which one slow call (a page fault, another process) does not move.

Peak memory: on a GPU, `torch.cuda.max_memory_allocated` during the call (tensors only, model
weights included). On a CPU, the growth of the process's resident set during the call (weights
already loaded are not counted): Linux's peak-RSS counter is reset first through
/proc/self/clear_refs; where that is not possible, the lifetime maximum RSS is used, which only
shows growth beyond every earlier peak. `PeakMemory.kind` says which of the three was measured.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from magvit import runtime
from magvit.errors import MagvitError
from magvit.runtime import autocast  # noqa: F401  (the benches import it from here)


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda' or 'cuda:1' -> torch.device (magvit.runtime.resolve_device); benchmarks run on those two."""
    device = runtime.resolve_device(name)
    if device.type not in ("cpu", "cuda"):
        raise MagvitError(f"--device {name}: benchmarks run on cpu or cuda")
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, warmup: int = 1, repeats: int = 3) -> float:
    """Median seconds of one `fn()` after `warmup` untimed calls."""
    if warmup < 0 or repeats < 1:
        raise MagvitError(f"timing needs warmup >= 0 and repeats >= 1, got {warmup} and {repeats}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _release_free_memory() -> None:
    """Hand memory freed by earlier work back to the OS (glibc keeps it otherwise), so that the RSS
    growth of the next call does not depend on what ran before it."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the measurement stays a lower bound
        pass


def _reset_peak_rss() -> bool:
    _release_free_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM := VmRSS
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


class PeakMemory:
    """`with PeakMemory(device) as m: ...` then `m.bytes` (peak during the block) and `m.kind`."""

    def __init__(self, device: torch.device):
        self.device = device
        self.bytes = 0
        self.kind = ""

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "CUDA max_memory_allocated (weights included)"
        elif _reset_peak_rss():
            self._base = _status_kib("VmRSS") or 0
            self.kind = "CPU peak RSS growth (weights excluded)"
        else:
            self._base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.kind = "CPU lifetime max RSS growth (weights excluded; a lower bound)"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device)
        elif self.kind.startswith("CPU peak"):
            self.bytes = max(0, (_status_kib("VmHWM") or 0) - self._base) * 1024
        else:
            self.bytes = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._base) * 1024


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Inference: eval mode and no autograd, restoring the training flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)


def batches(x: Tensor, size: int) -> Iterator[Tensor]:
    for start in range(0, len(x), size):
        yield x[start : start + size]
