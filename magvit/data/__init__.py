"""Data: datasets yielding `{"video": (3, T, H, W) in [-1, 1], "label": int}` and their loaders."""

from dataclasses import dataclass

from magvit.config import CONFIG_KINDS, registry_field
from magvit.data.base import DATASETS, ClipDataset, build_dataset, resize_crop
from magvit.data.bundled import BundledClips, BundledClipsConfig
from magvit.data.folders import ImageFolder, ImageFolderConfig, VideoFolder, VideoFolderConfig
from magvit.data.loader import EpochSampler, build_dataloader, set_epoch
from magvit.data.moving_digits import MovingDigits, MovingDigitsConfig


@dataclass(frozen=True)
class LoaderConfig:
    batch_size: int = 8
    num_workers: int = 0
    shuffle: bool = True
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """`kind: data`: a dataset and how to load it (used by `magvit data preview`)."""

    kind: str = "data"
    dataset: object = registry_field(DATASETS)
    loader: LoaderConfig = LoaderConfig()


CONFIG_KINDS.register("data", DataConfig, help="a dataset and its loader")(DataConfig)

__all__ = [
    "DATASETS", "BundledClips", "BundledClipsConfig", "ClipDataset", "DataConfig", "EpochSampler", "ImageFolder",
    "ImageFolderConfig", "LoaderConfig", "MovingDigits", "MovingDigitsConfig", "VideoFolder", "VideoFolderConfig",
    "build_dataloader", "build_dataset", "resize_crop", "set_epoch",
]
