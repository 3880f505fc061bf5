"""Data: datasets yielding `{"video": (3, T, H, W) in [-1, 1], "label": int}` and their loaders."""

from dataclasses import dataclass

from magvit.config import registry_field
from magvit.data.base import DATASETS, ClipDataset, build_dataset, resize_crop
from magvit.data.bundled import BundledClips, BundledClipsConfig
from magvit.data.folders import ImageFolder, ImageFolderConfig, VideoFolder, VideoFolderConfig
from magvit.data.loader import EpochSampler, build_dataloader, set_epoch
from magvit.data.moving_digits import MovingDigits, MovingDigitsConfig


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """`kind: data`: a dataset (`magvit data preview`). How a training run loads it (batch size,
    workers, seed) is that run's `loop` section."""

    kind: str = "data"
    dataset: object = registry_field(DATASETS)

__all__ = [
    "DATASETS", "BundledClips", "BundledClipsConfig", "ClipDataset", "DataConfig", "EpochSampler", "ImageFolder",
    "ImageFolderConfig", "MovingDigits", "MovingDigitsConfig", "VideoFolder", "VideoFolderConfig",
    "build_dataloader", "build_dataset", "resize_crop", "set_epoch",
]
