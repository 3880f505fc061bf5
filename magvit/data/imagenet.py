"""ImageNet (ILSVRC-2012) in class folders, as one-frame clips (3, 1, size, size).

Layout (the train archive's per-class tars unpacked, and the validation images sorted into class
folders as the usual preparation scripts do):

    root/train/n01440764/n01440764_10026.JPEG
    root/val/n01440764/ILSVRC2012_val_00000293.JPEG
    root/LOC_synset_mapping.txt     "n01440764 tench, Tinca tinca"   (optional: class names)

The class index is the position of a wnid among the train folder's wnids in sorted order, the
standard order (n01440764 -> 0 ... n15075141 -> 999). Without a train folder the order comes from
LOC_synset_mapping.txt, which lists the same wnids sorted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from magvit.data.base import DATASETS
from magvit.data.files import Entry, ImageClips, ImageFilesConfig, dataset_folder
from magvit.data.folders import IMAGE_EXTENSIONS
from magvit.errors import MagvitError

SYNSET_MAPPING = "LOC_synset_mapping.txt"


@dataclass(frozen=True)
class ImageNetConfig(ImageFilesConfig):
    """Images as MaskGIT (section 4.1) takes them: 256x256, the short side resized and the centre cropped."""

    name: str = "imagenet"
    root: str = "data/imagenet"
    size: int = 256
    split: Literal["train", "val"] = "train"
    probe: bool = False  # 1.28M images: a bad one is skipped when read (magvit.data.files)


def _subfolders(folder: Path) -> list[str]:
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir())


def read_synsets(root: Path) -> dict[str, str]:
    """wnid -> human name from LOC_synset_mapping.txt ("n01440764 tench, Tinca tinca"), in file order;
    empty when the file is absent."""
    path = root / SYNSET_MAPPING
    if not path.is_file():
        return {}
    pairs = (line.strip().partition(" ") for line in path.read_text().splitlines() if line.strip())
    return {wnid: name.strip() for wnid, _, name in pairs}


@DATASETS.register("imagenet", ImageNetConfig)
class ImageNet(ImageClips):
    """ImageNet class folders (standard sorted-wnid labels): 256x256 centre crops by default."""

    def __init__(
        self, root: str = ImageNetConfig.root, split: str = ImageNetConfig.split, size: int = ImageNetConfig.size,
        random_crop: bool = ImageNetConfig.random_crop, flip: bool = ImageNetConfig.flip,
        seed: int = ImageNetConfig.seed, probe: bool = ImageNetConfig.probe,
    ):
        base = dataset_folder(root, "ImageNet", split, ("train", "val"))
        images = base / split
        if not images.is_dir():
            raise MagvitError(f"{images}: ImageNet {split} folder not found")
        synsets = read_synsets(base)
        if (base / "train").is_dir():
            self.classes = _subfolders(base / "train")  # wnids; the label is the index
        elif synsets:
            self.classes = sorted(synsets)
        else:
            raise MagvitError(f"{base / 'train'}: ImageNet train folder not found (its class folders give the "
                              f"class order; {SYNSET_MAPPING} may stand in for it)")
        self.class_names = [synsets.get(wnid, wnid) for wnid in self.classes]
        self.split = split
        super().__init__(images, self._entries(images), size, random_crop, flip, seed, probe)

    def _entries(self, images: Path) -> list[Entry]:
        index = {wnid: i for i, wnid in enumerate(self.classes)}
        entries = []
        for wnid in _subfolders(images):
            if wnid not in index:
                raise MagvitError(f"{images / wnid}: class folder {wnid!r} is not a class of the train folder")
            with os.scandir(images / wnid) as files:
                names = sorted(f.name for f in files if os.path.splitext(f.name)[1].lower() in IMAGE_EXTENSIONS)
            entries += [(images / wnid / name, index[wnid]) for name in names]
        if not entries:
            raise MagvitError(f"{images}: no image in class folders (<wnid>/*.JPEG) under this folder")
        return entries
