"""Streaming shards: a dataset (or a token cache) as WebDataset tar files, each process reading its own.

`write_shards` (`magvit data shard CONFIG --out DIR`; a token cache: magvit.training.token_shards'
`shard_token_cache`, through `write_samples`) writes into `DIR.tmp`, renamed when complete,
`DIR/shard-000000.tar ...` (shard j: samples [j S, (j + 1) S) of the source), per sample `<key>.mp4`
(H.264 4:4:4, crf 10, PyAV: visually lossless), `<key>.npy` ((T, H, W, 3) uint8, exact: `encode:
frames`) or `<key>.safetensors` (a token cache's tokens, cond.<task>, mask.<task>), plus `<key>.cls`
(the label, if any) and `<key>.json` (index, source, frames, size); and `DIR/index.json` {"format":
"magvit-shards", "version", "kind", "encode", "shards": [{"name", "count"}], "total", "clip", ...}.

Reading (`name: shards`, `ShardStream`):
- Process r of W reads shards r, r + W, ... (always the same: a node needs only its own); fewer
  shards than processes is an error. Each process yields N samples per epoch, N = the smallest
  process's count (DDP needs the same steps everywhere): one with more leaves out its excess, a
  different subset each epoch (none with W equal shards each). One process: every sample once per
  epoch. The loader's drop_last then drops the last N mod B.
- Order: per epoch, a process's shards in an order seeded by (seed, loader seed, epoch, rank), read
  in turn through a shuffle buffer of `shuffle_buffer` samples seeded alike. The buffer moves
  positions, not data: the epoch's order follows from index.json before a byte is read.
- Worker j of J yields batches j, j + J, ... of that order, which the DataLoader takes round robin:
  the batches do not depend on J. It reads the process's shards front to back, only its own samples'
  members (it seeks past the others), holding about a buffer of them.
- Resume: `set_start(k)` (the loop's next_batch) starts the epoch at batch k; the first k B positions
  are no worker's: never read nor decoded (a shard left with none of a worker's is not opened).
- Damage: an unreadable shard or sample is skipped with a warning that counts them, each lost sample
  replaced by a repeat of the previous readable one: every process still yields N (no DDP hang).

Why tarfile, not the `webdataset` library (1.0): it splits shards between workers (batches then
depend on their number), cannot skip to a sample on resume (its maintainers advise resampling over
exact epochs) and has no equal-count rule across nodes; an exact resume needs an order that is a
pure function of (seed, epoch, rank). Reading a tar is a few lines of `tarfile`; the shards stay
plain WebDataset. `root` is a path (local disk or mounted file system).
"""

from __future__ import annotations

import bisect
import copy
import itertools
import json
import os
import shutil
import tarfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from magvit.data.base import DATASETS
from magvit.data.shard_io import Members, decode_sample, read_tar, video_samples, write_tar
from magvit.errors import MagvitError
from magvit.fileio import atomic_write_text, check_outputs, ensure_folder, read_json

if TYPE_CHECKING:
    from magvit.config import RegisteredConfig
    from magvit.data.base import DataConfig

FORMAT, VERSION = "magvit-shards", 1
ENCODINGS = ("mp4", "frames")


# ---------------------------------------------------------------------------------------------
# Writing


def write_shards(source: Dataset | RegisteredConfig | DataConfig, out: str | os.PathLike, samples_per_shard: int = 256,
                 encode: str = "mp4", overwrite: bool = False, fps: float | None = None, quiet: bool = True) -> Path:
    """Write `source` as shards of `samples_per_shard` samples into `out` (see the module docstring).

    `source`: a dataset (len and [i]), a registered dataset config or a `kind: data` config (a token
    cache: magvit.training.token_shards.shard_token_cache). `encode`: mp4 | frames. An existing `out` is
    replaced only with `overwrite`, and only when it is a shard folder, once the new one is complete."""
    from magvit.config import to_dict
    from magvit.data.base import build_dataset

    if encode not in ENCODINGS:
        raise MagvitError(f"encode must be one of {', '.join(ENCODINGS)}, got {encode!r}")
    cfg = None if isinstance(source, Dataset) else getattr(source, "dataset", source)  # a `kind: data` config
    dataset = source if cfg is None else build_dataset(cfg)
    inputs = [getattr(cfg or dataset, "root", None)]
    fps = fps or float(getattr(dataset, "fps", 8.0))
    first = dataset[0]["video"]  # (3, T, H, W)
    names = getattr(dataset, "classes", None) or None
    described = {"kind": "video", "encode": encode, "clip": list(first.shape[1:]), "fps": fps,
                 "num_classes": len(names) if names else int(getattr(dataset, "num_classes", 0) or 0),
                 "class_names": [str(n) for n in names] if names else None,
                 "source": to_dict(cfg) if cfg is not None else {"dataset": type(dataset).__name__}}
    return write_samples(lambda: video_samples(dataset, encode, fps), len(dataset), described, out,
                         samples_per_shard, overwrite, inputs, quiet)


def write_samples(samples: Callable[[], Iterator[tuple[str, Members]]], total: int, described: dict[str, Any],
                  out: str | os.PathLike, samples_per_shard: int, overwrite: bool, inputs: list[Any],
                  quiet: bool = True) -> Path:
    """Write `total` samples (`samples()`: (key, tar members) in order) as shards with an index.json
    holding `described`; `out` is checked against `inputs` and `overwrite` before any work."""
    from tqdm.auto import tqdm

    out = Path(out).expanduser()
    if samples_per_shard < 1:
        raise MagvitError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    _check_out(out, overwrite, inputs)
    stream = samples()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shards = []
    with tqdm(total=total, desc="shard", disable=quiet, dynamic_ncols=True) as bar:
        for j in range((total + samples_per_shard - 1) // samples_per_shard):
            name = f"shard-{j:06d}.tar"
            shards.append({"name": name, "count": write_tar(tmp / name, itertools.islice(stream, samples_per_shard))})
            bar.update(shards[-1]["count"])
    index = {"format": FORMAT, "version": VERSION, **described, "shards": shards, "total": total,
             "samples_per_shard": samples_per_shard}
    atomic_write_text(tmp / "index.json", json.dumps(index, indent=1) + "\n")
    old = out.with_name(out.name + ".old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def _check_out(out: Path, overwrite: bool, inputs: list[Any]) -> None:
    """Before any work: `out` may be replaced only with `overwrite`, only if it is a shard folder (never
    a folder of anything else, nor an input); its parent must be writable."""
    check_outputs([out], inputs=inputs, overwrite=overwrite)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "index.json").is_file())):
        raise MagvitError(f"{out} exists and is not a shard folder; it is never replaced, even with --overwrite "
                          "(overwrite=True): choose another folder")
    ensure_folder(out.parent)


# ---------------------------------------------------------------------------------------------
# Reading


def read_shard_index(root: str | os.PathLike) -> dict[str, Any]:
    path = Path(root).expanduser() / "index.json"
    if not path.is_file():
        raise MagvitError(f"{root}: not a shard folder (no index.json); write one with `magvit data shard`")
    index = read_json(path)
    if not isinstance(index, dict) or index.get("format") != FORMAT or index.get("version") != VERSION:
        raise MagvitError(f"{path}: not a magvit shard index of version {VERSION}")
    return index


def process_rank() -> tuple[int, int]:
    """(rank, world size): torch.distributed's once initialised (accelerate, torchrun), else the
    RANK / WORLD_SIZE a launcher sets, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _buffer_shuffle(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """The output order of positions 0..n-1 streamed through a shuffle buffer of `size`: once the buffer is
    full, each new position takes the place of a uniformly drawn one, which is output; then the rest."""
    out, buffer = np.empty(n, dtype=np.int64), list(range(min(size, n)))
    picks = rng.integers(0, len(buffer), n - len(buffer)) if buffer else []
    for k, position in enumerate(range(len(buffer), n)):
        out[k], buffer[picks[k]] = buffer[picks[k]], position
    out[n - len(buffer):] = rng.permutation(buffer) if buffer else []
    return out


@dataclass(frozen=True)
class ShardsConfig:
    name: str = "shards"
    root: str = ""  # a folder written by `magvit data shard`
    frames: int | None = None  # video shards: the first `frames` frames of each clip (None: all)
    size: int | None = None  # video shards: the centre square resized to size x size (None: as stored)
    shuffle_buffer: int = 1024  # samples
    seed: int = 0


@DATASETS.register("shards", ShardsConfig)
class ShardStream(IterableDataset):
    """Shards written by `write_shards`, streamed: this process's shards, shuffled through a buffer,
    split between workers by batch, resumable at a batch (module docstring). Yields what the source
    yielded: {"video", "label"} or a token cache's {"tokens", "label", "cond.<task>", "mask.<task>"}."""

    per_process = True  # already this process's part: accelerate must not split it again (prepare_loader)

    def __init__(self, root: str, frames: int | None = None, size: int | None = None, shuffle_buffer: int = 1024,
                 seed: int = 0, rank: int | None = None, world_size: int | None = None):
        self.root, self.index = Path(root).expanduser(), read_shard_index(root)
        self.frames, self.size, self.shuffle_buffer, self.seed = frames, size, shuffle_buffer, seed
        if shuffle_buffer < 1 or (frames is not None and frames < 1) or (size is not None and size < 1):
            raise MagvitError(f"shards: shuffle_buffer, frames, size must be >= 1: {shuffle_buffer}, {frames}, {size}")
        if self.index["kind"] == "tokens" and (frames or size):
            raise MagvitError(f"{root}: frames and size apply to video shards; these hold tokens")
        if frames and frames > self.index["clip"][0]:
            raise MagvitError(f"{root}: frames={frames}, but the clips have {self.index['clip'][0]}")
        found = process_rank()
        self.rank, self.world = found[0] if rank is None else rank, found[1] if world_size is None else world_size
        shards = self.index["shards"]
        if len(shards) < self.world:
            raise MagvitError(f"{root}: {len(shards)} shards for {self.world} processes; each process reads whole "
                              "shards: write at least one per process (a smaller --samples-per-shard)")
        self.mine = shards[self.rank :: self.world]  # always the same shards: a node needs only its own
        counts = [sum(s["count"] for s in shards[r :: self.world]) for r in range(self.world)]
        self.length = min(counts)  # the same number of samples, hence of steps, on every process
        left_out = sum(counts) - self.length * self.world
        if left_out >= 0.01 * sum(counts) and self.rank == 0:
            warnings.warn(f"shards: {self.world} processes read {self.length} samples each per epoch, leaving out "
                          f"{left_out} of {sum(counts)}; write a multiple of {self.world} equal shards to use them "
                          "all", stacklevel=2)
        self.classes = self.index.get("class_names") or None
        self.num_classes = int(self.index.get("num_classes") or 0)
        # set by build_dataloader (for_loader), then moved by set_epoch / set_start
        self.batch_size, self.shuffle, self.loader_seed, self.drop_last = 1, True, 0, False
        self.epoch, self.start_batch = 0, 0

    def for_loader(self, batch_size: int, shuffle: bool, seed: int, drop_last: bool) -> ShardStream:
        """A copy that a DataLoader of `batch_size` reads (magvit.data.build_dataloader)."""
        loaded = copy.copy(self)
        loaded.batch_size, loaded.shuffle, loaded.loader_seed, loaded.drop_last = batch_size, shuffle, seed, drop_last
        return loaded

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_start(self, batch: int) -> None:
        """Start the epoch at batch `batch` (resume): the samples before it are neither read nor decoded."""
        self.start_batch = batch

    def __len__(self) -> int:
        return self.length

    def order(self) -> tuple[list[int], np.ndarray]:
        """This process's epoch: its shards in reading order (indices into `self.mine`), and the stream
        positions (the samples of those shards, in that order, numbered) in output order: N of them."""
        if not self.shuffle:
            return list(range(len(self.mine))), np.arange(self.length)
        rng = np.random.default_rng([self.seed % 2**32, self.loader_seed % 2**32, self.epoch, self.rank])
        shard_order = rng.permutation(len(self.mine)).tolist()
        total = sum(s["count"] for s in self.mine)
        return shard_order, _buffer_shuffle(total, self.shuffle_buffer, rng)[: self.length]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        shard_order, order = self.order()
        b = self.batch_size
        end, start = (len(order) // b * b if self.drop_last else len(order)), self.start_batch * b
        mine = [p for p in range(start, end) if (p - start) // b % workers == worker]  # batches j, j + J, ...
        wanted = {int(order[p]): p for p in mine}  # stream position -> output position
        return self._emit(mine, self._stream(shard_order, wanted))

    def _stream(self, shard_order: list[int], wanted: dict[int, int]) -> Iterator[tuple[int, Any]]:
        """(output position, members or None when lost) of the wanted samples, in stream order."""
        self.damaged = 0
        base = 0
        for k in shard_order:
            shard = self.mine[k]
            here = {s - base: wanted[s] for s in range(base, base + shard["count"]) if s in wanted}
            base += shard["count"]
            if not here:
                continue  # none of this worker's samples: never opened
            done: set[int] = set()
            try:
                for number, members in read_tar(self.root / shard["name"], set(here)):
                    done.add(number)
                    yield here[number], members
                problem = None if len(done) == len(here) else "fewer samples than index.json says"
            except (tarfile.TarError, OSError, EOFError, ValueError) as e:
                problem = f"{type(e).__name__}: {e}"
            if problem is not None:
                self.damaged += 1
                warnings.warn(f"shards: skipping {len(here) - len(done)} samples of {shard['name']} ({problem}); "
                              f"{self.damaged} corrupt shard(s) this epoch, their samples replaced by repeats",
                              stacklevel=2)
                for number in sorted(set(here) - done):
                    yield here[number], None

    def _emit(self, mine: list[int], resolved: Iterator[tuple[int, Any]]) -> Iterator[dict[str, Any]]:
        """Decoded samples in output order; a lost one is replaced by the previous readable one (or,
        before the first, by the next)."""
        held: dict[int, Any] = {}
        k, last, owed = 0, None, 0
        for position, members in resolved:
            held[position] = members
            while k < len(mine) and mine[k] in held:
                sample = self._decode_or_none(held.pop(mine[k]), mine[k])
                k += 1
                if sample is None and last is None:
                    owed += 1
                elif sample is None:
                    yield last
                else:
                    for _ in range(owed + 1):
                        yield sample
                    last, owed = sample, 0
        if owed:
            raise MagvitError(f"{self.root}: none of the {owed} samples of this reader could be read")

    def _decode_or_none(self, members: dict[str, bytes] | None, position: int) -> dict[str, Any] | None:
        if members is None:
            return None
        try:
            return self.decode(members)
        except Exception as e:  # decoders raise many types for damaged data: skip it, as for a damaged shard
            warnings.warn(f"shards: sample {position} of epoch {self.epoch} cannot be decoded ({type(e).__name__}: "
                          f"{e}); replaced by a repeat", stacklevel=2)
            return None

    def decode(self, members: dict[str, bytes]) -> dict[str, Any]:
        """One sample's members -> the sample."""
        return decode_sample(members, self.frames, self.size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Sample `index` in the written order (all shards, whatever the process): for previews and shape
        checks; training iterates."""
        shards = self.index["shards"]
        starts = [0, *itertools.accumulate(s["count"] for s in shards)]
        if not 0 <= index < starts[-1]:
            raise IndexError(index)
        s = bisect.bisect_right(starts, index) - 1
        number = index - starts[s]
        path = self.root / shards[s]["name"]
        try:
            return self.decode(dict(read_tar(path, {number}))[number])
        except (tarfile.TarError, OSError, EOFError, KeyError) as e:
            raise MagvitError(f"{path}: cannot read sample {number} ({type(e).__name__}: {e})") from None
