"""DataLoader construction: the same seed gives the same batches, whatever the worker count.

The order of samples comes from `EpochSampler`, a permutation seeded by (seed, epoch) (a stream of
shards orders itself from them too: magvit.data.shards); each sample's own randomness comes from the
dataset (see `magvit.data.base`). Workers additionally seed Python's and NumPy's global RNGs from
torch's per-worker seed, for third-party code that uses them.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler


class EpochSampler(Sampler[int]):
    """Indices of one epoch: a permutation seeded by (seed, epoch), or 0..n-1 unshuffled."""

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0):
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.size))
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=gen).tolist())

    def __len__(self) -> int:
        return self.size


def seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def build_dataloader(
    dataset: Dataset, batch_size: int, shuffle: bool = True, seed: int = 0, num_workers: int = 0,
    drop_last: bool = True,
) -> DataLoader:
    """A DataLoader whose batches depend only on `seed` and the epoch (`set_epoch(loader, e)`).

    An IterableDataset (the `shards` stream, magvit.data.shards) orders itself: it gets the batch size,
    shuffle, seed and drop_last (`for_loader`) and the loader has no sampler."""
    if isinstance(dataset, IterableDataset):
        if not hasattr(dataset, "for_loader"):
            raise TypeError(f"{type(dataset).__name__}: an IterableDataset needs for_loader (see magvit.data.shards)")
        return DataLoader(
            dataset.for_loader(batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last), batch_size=batch_size,
            num_workers=num_workers, drop_last=drop_last, worker_init_fn=seed_worker, persistent_workers=False,
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), shuffle=shuffle, seed=seed),
        num_workers=num_workers,
        drop_last=drop_last,
        worker_init_fn=seed_worker,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,  # workers re-fork each epoch and so see the dataset's new epoch
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Move a loader built by `build_dataloader` (and its dataset) to `epoch`."""
    for part in (loader.sampler, loader.dataset):
        if hasattr(part, "set_epoch"):
            part.set_epoch(epoch)
