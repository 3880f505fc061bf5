"""ImageNet (ILSVRC-2012) in class folders, as one-frame clips (3, 1, size, size).

Layout (the train archive's per-class tars unpacked, and the validation images sorted into class
folders as the usual preparation scripts do):

    root/train/n01440764/n01440764_10026.JPEG
    root/val/n01440764/ILSVRC2012_val_00000293.JPEG
    root/LOC_synset_mapping.txt     "n01440764 tench, Tinca tinca"   (optional: class names)

or the validation images flat, as the archive unpacks them, labelled by the devkit of the official
release (its archive unpacked next to them) or by the Kaggle release's CSV:

    root/val/ILSVRC2012_val_00000001.JPEG
    root/ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt   "490" (line i: image i's class id)
    root/ILSVRC2012_devkit_t12/data/meta.mat                                 class id -> wnid ("synsets")
    root/LOC_val_solution.csv       "ImageId,PredictionString" / "ILSVRC2012_val_00000001,n01751748 ..."

The class index is the position of a wnid among the train folder's wnids in sorted order, the
standard order (n01440764 -> 0 ... n15075141 -> 999). Without a train folder the order comes from
LOC_synset_mapping.txt, which lists the same wnids sorted.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from magvit.data.base import DATASETS
from magvit.data.files import Entry, ImageClips, ImageFilesConfig, dataset_folder
from magvit.data.folders import IMAGE_EXTENSIONS
from magvit.errors import MagvitError

SYNSET_MAPPING = "LOC_synset_mapping.txt"
VAL_SOLUTION = "LOC_val_solution.csv"  # a flat val folder's labels: the first wnid of each PredictionString
DEVKIT = Path("ILSVRC2012_devkit_t12") / "data"  # or the devkit's: its ground truth and meta.mat
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"


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


def read_val_solution(path: Path) -> dict[str, str]:
    """Image id -> wnid from LOC_val_solution.csv (the first wnid of the box list: every box of an
    ImageNet validation image has the image's class)."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise MagvitError(f"{path}: cannot read ImageNet's validation labels ({e})") from None
    if not rows or not {"ImageId", "PredictionString"} <= set(rows[0]):
        raise MagvitError(f"{path}: expected the columns ImageId,PredictionString")
    return {row["ImageId"]: (row["PredictionString"] or "").split(" ", 1)[0] for row in rows}


def read_devkit_val_labels(folder: Path) -> dict[str, str]:
    """Image id -> wnid from the devkit's `data` folder: line i of the ground truth is the ILSVRC2012_ID of
    ILSVRC2012_val_<i, 8 digits>, and meta.mat's `synsets` map each ILSVRC2012_ID to its wnid (ids 1-1000
    are the classes, in an order of their own: the label is still the wnid's sorted position)."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        synsets = loadmat(str(folder / "meta.mat"), squeeze_me=True)["synsets"]
        wnids = {int(i): str(w) for i, w in zip(synsets["ILSVRC2012_ID"], synsets["WNID"])}
        ids = [int(word) for word in (folder / GROUND_TRUTH).read_text().split()]
    except (OSError, UnicodeDecodeError, MatReadError, KeyError, ValueError, TypeError, IndexError) as e:
        raise MagvitError(f"{folder}: cannot read the ImageNet devkit's validation labels ({e!r})") from None
    unknown = sorted(set(ids) - wnids.keys())
    if unknown:
        raise MagvitError(f"{folder / GROUND_TRUTH}: class id {unknown[0]} is not in meta.mat's synsets")
    return {f"ILSVRC2012_val_{n:08d}": wnids[i] for n, i in enumerate(ids, start=1)}


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
        self.label_file: Path | None = None  # a flat val folder's labels (_flat_entries)
        super().__init__(images, self._entries(images, base), size, random_crop, flip, seed, probe)

    def _entries(self, images: Path, base: Path) -> list[Entry]:
        index = {wnid: i for i, wnid in enumerate(self.classes)}
        folders = _subfolders(images)
        if not folders:
            return self._flat_entries(images, base, index)
        entries = []
        for wnid in folders:
            if wnid not in index:
                raise MagvitError(f"{images / wnid}: class folder {wnid!r} is not a class of the train folder")
            with os.scandir(images / wnid) as files:
                names = sorted(f.name for f in files if os.path.splitext(f.name)[1].lower() in IMAGE_EXTENSIONS)
            entries += [(images / wnid / name, index[wnid]) for name in names]
        if not entries:
            raise MagvitError(f"{images}: no image in class folders (<wnid>/*.JPEG) under this folder")
        return entries

    def _flat_entries(self, images: Path, base: Path, index: dict[str, int]) -> list[Entry]:
        """Images directly in the split folder, labelled by the devkit's ground truth or else by
        LOC_val_solution.csv; an image the labels do not list gets no label and is skipped (`_rejected`:
        counted in the dataset's one warning), a wnid outside the classes is one error."""
        with os.scandir(images) as files:
            names = sorted(f.name for f in files if os.path.splitext(f.name)[1].lower() in IMAGE_EXTENSIONS)
        if not names:
            raise MagvitError(f"{images}: no image, neither in class folders (<wnid>/*.JPEG) nor directly in it")
        if (base / DEVKIT / GROUND_TRUTH).is_file():
            self.label_file, labels = base / DEVKIT / GROUND_TRUTH, read_devkit_val_labels(base / DEVKIT)
        elif (base / VAL_SOLUTION).is_file():
            self.label_file, labels = base / VAL_SOLUTION, read_val_solution(base / VAL_SOLUTION)
        else:
            raise MagvitError(f"{images}: images directly in the folder need their labels in "
                              f"{base / DEVKIT / GROUND_TRUTH} (the devkit) or {base / VAL_SOLUTION}")
        entries: list[Entry] = []
        for name in names:
            wnid = labels.get(os.path.splitext(name)[0])
            if wnid is not None and wnid not in index:
                raise MagvitError(f"{self.label_file}: {name} is labelled {wnid!r}, not a class of the train folder")
            entries.append((images / name, None if wnid is None else index[wnid]))
        if all(label is None for _, label in entries):
            raise MagvitError(f"{images}: none of its images is listed in {self.label_file}")
        return entries

    def _rejected(self, path: Path, label: int | None) -> str | None:
        return f"not in {self.label_file.name}" if label is None else None  # every ImageNet image has a class
