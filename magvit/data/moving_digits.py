"""MovingDigits: a seeded, deterministic video set made from real handwritten digits.

The digits are scikit-learn's copy of the UCI handwritten digits (1,797 labelled 8x8 images,
shipped inside the package: no download). Each clip shows one or two digits, upscaled with
bicubic interpolation, bouncing off the borders of a black canvas; its label is the class of the
first digit. A digit starts anywhere on the canvas, or (`start: center`) at its centre, so that the
first frame of every clip of a class looks alike: a tiny transformer then learns class -> shape in
minutes on a CPU (the quickstart), where random starts make it learn each shape at every position.
In image mode each sample is one digit, centred, as a one-frame clip, for class-conditional image
generation.

The 1,797 source digits are split once (fixed permutation, 80/10/10) into train / val / test
pools, so held-out clips show handwriting the model never saw. Sample `i` of a split is a pure
function of (seed, split, i): the same seed gives the same clips on every machine.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from magvit.data.base import DATASETS, ClipDataset
from magvit.errors import MagvitError

SPLITS = {"train": (0.0, 0.8), "val": (0.8, 0.9), "test": (0.9, 1.0)}
_SPLIT_SEED = 20260101  # fixed: the pools never depend on the dataset seed


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """(1797, 8, 8) float32 in [0, 1] and (1797,) int64 labels: scikit-learn's bundled digits.csv.gz (rows of
    64 pixel values 0-16, then the label) read directly: importing sklearn.datasets costs ~1 s in every
    process that builds moving digits (each test worker, each launched training process); load_digits
    reads the same file, and is the fallback where a scikit-learn release moves it."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        data = load_digits()
        return (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)
    rows = np.loadtxt(path, delimiter=",", dtype=np.float64)  # (1797, 65)
    return (rows[:, :-1].reshape(-1, 8, 8) / 16.0).astype(np.float32), rows[:, -1].astype(np.int64)


@functools.lru_cache(maxsize=8)
def _pool(split: str, digit_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's digits upscaled to (N, digit_size, digit_size) in [0, 1], and their labels."""
    images, labels = _digits()
    order = np.random.default_rng(_SPLIT_SEED).permutation(len(images))
    lo, hi = SPLITS[split]
    chosen = order[int(lo * len(order)) : int(hi * len(order))]
    small = torch.from_numpy(images[chosen])[:, None]  # (N, 1, 8, 8)
    big = F.interpolate(small, size=(digit_size, digit_size), mode="bicubic", align_corners=False)
    return big[:, 0].clamp(0, 1), torch.from_numpy(labels[chosen])


@dataclass(frozen=True)
class MovingDigitsConfig:
    name: str = "moving_digits"
    frames: int = 16
    size: int = 64
    split: Literal["train", "val", "test"] = "train"
    num_samples: int = 10000
    num_digits: int = 1
    digit_size: int | None = None  # default: 7/16 of the canvas
    speed: tuple[float, float] = (1.0, 3.0)  # pixels per frame at size 64, scaled with the canvas
    image: bool = False
    start: Literal["random", "center"] = "random"  # where a digit is in the first frame
    seed: int = 0


@DATASETS.register("moving_digits", MovingDigitsConfig)
class MovingDigits(ClipDataset):
    """Real handwritten digits bouncing on a black canvas: (3, frames, size, size), label = class."""

    fixed = True  # sample i is the same in every epoch (see `generator`): its tokens may be computed once

    def __init__(
        self, frames: int = 16, size: int = 64, split: str = "train", num_samples: int = 10000,
        num_digits: int = 1, digit_size: int | None = None, speed: tuple[float, float] = (1.0, 3.0),
        image: bool = False, start: str = "random", seed: int = 0,
    ):
        super().__init__(seed)
        if split not in SPLITS:
            raise MagvitError(f"MovingDigits split must be one of {', '.join(SPLITS)}, got {split!r}")
        if frames < 1 or size < 8 or num_samples < 1:
            raise MagvitError(
                f"MovingDigits needs frames >= 1, size >= 8, num_samples >= 1; got {frames}, {size}, {num_samples}"
            )
        if start not in ("random", "center"):
            raise MagvitError(f"MovingDigits start must be 'random' or 'center', got {start!r}")
        if num_digits not in (1, 2):
            raise MagvitError(f"MovingDigits shows 1 or 2 digits, got num_digits={num_digits}")
        self.frames = 1 if image else frames
        self.size, self.split, self.num_samples = size, split, num_samples
        self.num_digits = 1 if image else num_digits
        self.digit_size = digit_size or max(4, round(size * 7 / 16))
        if not 4 <= self.digit_size <= size:
            raise MagvitError(f"MovingDigits digit_size must lie in [4, size={size}], got {self.digit_size}")
        self.speed = (speed[0] * size / 64, speed[1] * size / 64)
        self.image, self.start = image, start
        self.digits, self.labels = _pool(split, self.digit_size)
        self.num_classes = 10

    def __len__(self) -> int:
        return self.num_samples

    def generator(self, index: int) -> torch.Generator:
        # a fixed set: the epoch does not change sample i; the split does
        state = np.random.SeedSequence([self.seed, list(SPLITS).index(self.split), index]).generate_state(2)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        gen = self.generator(index)
        picks = torch.randint(0, len(self.digits), (self.num_digits,), generator=gen)
        canvas = torch.zeros(self.frames, self.size, self.size)
        for pick in picks.tolist():
            for t, (y, x) in enumerate(self._trajectory(gen)):
                d = self.digit_size
                patch = canvas[t, y : y + d, x : x + d]
                torch.maximum(patch, self.digits[pick], out=patch)
        video = (canvas * 2 - 1).unsqueeze(0).expand(3, -1, -1, -1).contiguous()  # (3, T, H, W)
        return {"video": video, "label": int(self.labels[picks[0]])}

    def _trajectory(self, gen: torch.Generator) -> list[tuple[int, int]]:
        """Top-left corners for every frame: a straight line, reflected off the borders."""
        room = self.size - self.digit_size
        if self.image:
            return [(room // 2, room // 2)]
        pos = torch.rand(2, generator=gen) * room  # drawn either way: `start` changes no other draw
        if self.start == "center":
            pos = torch.full((2,), room / 2)
        angle = torch.rand((), generator=gen) * 2 * torch.pi
        lo, hi = self.speed
        speed = lo + (hi - lo) * torch.rand((), generator=gen)
        vel = torch.stack([torch.sin(angle), torch.cos(angle)]) * speed
        corners = []
        for _ in range(self.frames):
            corners.append((int(pos[0].round()), int(pos[1].round())))
            pos = pos + vel
            for axis in range(2):  # reflect: position stays in [0, room]
                if pos[axis] < 0:
                    pos[axis], vel[axis] = -pos[axis], -vel[axis]
                elif pos[axis] > room:
                    pos[axis], vel[axis] = 2 * room - pos[axis], -vel[axis]
        return corners
