"""Data: datasets yielding `{"video": (3, T, H, W) in [-1, 1], "label": int}` and their loaders."""

from magvit.data.bair import BAIR, BAIRConfig
from magvit.data.base import DATASETS, ClipDataset, DataConfig, build_dataset, resize_crop
from magvit.data.bundled import BundledClips, BundledClipsConfig
from magvit.data.files import FileDataset, ImageClips, VideoClips
from magvit.data.folders import ImageFolder, ImageFolderConfig, VideoFolder, VideoFolderConfig
from magvit.data.imagenet import ImageNet, ImageNetConfig
from magvit.data.kinetics import Kinetics600, Kinetics600Config
from magvit.data.loader import EpochSampler, build_dataloader, set_epoch
from magvit.data.moving_digits import MovingDigits, MovingDigitsConfig
from magvit.data.shards import ShardsConfig, ShardStream, write_shards
from magvit.data.ssv2 import SSv2, SSv2Config
from magvit.data.ucf101 import UCF101, UCF101Config

__all__ = [
    "BAIR", "BAIRConfig", "BundledClips", "BundledClipsConfig", "ClipDataset", "DATASETS", "DataConfig", "EpochSampler",
    "FileDataset", "ImageClips", "ImageFolder", "ImageFolderConfig", "ImageNet", "ImageNetConfig", "Kinetics600",
    "Kinetics600Config", "MovingDigits", "MovingDigitsConfig", "SSv2", "SSv2Config", "UCF101", "UCF101Config",
    "VideoClips", "VideoFolder", "VideoFolderConfig", "build_dataloader", "build_dataset", "resize_crop", "set_epoch",
    "ShardStream", "ShardsConfig", "write_shards",
]
