"""What every dataset shares: the registry, the sample format, per-sample seeding, resizing.

A sample is a dict `{"video": float (3, T, H, W) in [-1, 1], "label": int}`; "label" is present
only when the dataset has labels. An image is a one-frame clip (T = 1).

Randomness (which clip of a video, where to crop, whether to flip) comes from a generator seeded
by (dataset seed, epoch, sample index), never from a process-global RNG. A sample is therefore
the same whatever the number of DataLoader workers or processes, and a resumed run sees exactly
the data it would have seen. A config with `variants: K` makes the draws repeat every K epochs
(epoch e draws as epoch e mod K): K augmented copies of the set, so a transformer trained on a frozen
tokenizer's tokens computes each copy's tokens once (magvit.training.tokens.TokenSource.memo).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from magvit.config import RegisteredConfig, registry_field
from magvit.errors import MagvitError
from magvit.registry import Registry

DATASETS: Registry[Dataset] = Registry("dataset")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
    """`kind: data`: a dataset (`magvit data preview`). How a training run loads it (batch size,
    workers, seed) is that run's `loop` section."""

    kind: str = "data"
    dataset: RegisteredConfig = registry_field(DATASETS)


def build_dataset(cfg: RegisteredConfig) -> Dataset:
    """Build the dataset a registered config dataclass describes (its `name` picks the entry)."""
    kwargs = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "name"}
    variants = kwargs.pop("variants", None)  # a key of the configs of sets with random draws (ClipDataset)
    if variants is not None and variants < 1:
        raise MagvitError(f"{cfg.name}: variants must be >= 1 (or null: new draws every epoch), got {variants}")
    dataset = DATASETS[cfg.name].build(**kwargs)
    if variants is not None:
        dataset.variants = variants
    return dataset


class ClipDataset(Dataset):
    """Base class: per-(seed, epoch, index) generators and `set_epoch`."""

    fixed = False  # True: sample i is the same in every epoch (no random draws)

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.epoch = 0
        self.variants: int | None = None  # draws repeat every `variants` epochs (build_dataset sets it)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def generator(self, index: int) -> torch.Generator:
        epoch = self.epoch if self.variants is None else self.epoch % self.variants
        state = np.random.SeedSequence([self.seed, epoch, index]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def sample_key(self, index: int) -> int | None:
        """What sample `index` of this epoch is across epochs: equal keys, equal samples. None when the
        samples are drawn anew every epoch."""
        if self.fixed:
            return index
        if self.variants is not None:
            return (self.epoch % self.variants) * len(self) + index
        return None


def resize_crop(
    frames: torch.Tensor, size: int, gen: torch.Generator | None = None, flip: bool = False
) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, T, size, size) float in [-1, 1].

    Takes the largest square (centred, or at a random offset when `gen` is given), then resizes
    it with antialiasing: the same as resizing the short side to `size` and cropping, but the
    crop comes first so a 720p clip is never resized whole. A random horizontal flip with
    probability 1/2 when `flip` and `gen` are given.
    """
    t, h, w, _ = frames.shape
    side = min(h, w)
    if gen is None:
        top, left = (h - side) // 2, (w - side) // 2
    else:
        top = int(torch.randint(0, h - side + 1, (), generator=gen))
        left = int(torch.randint(0, w - side + 1, (), generator=gen))
    square = frames[:, top : top + side, left : left + side].permute(0, 3, 1, 2).float()  # (T, 3, s, s)
    if side != size:
        square = F.interpolate(square, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if flip and gen is not None and bool(torch.rand((), generator=gen) < 0.5):
        square = square.flip(-1)
    return (square.clamp(0, 255) / 127.5 - 1.0).permute(1, 0, 2, 3).contiguous()
