"""UCF-101 as downloaded: 13,320 `.avi` clips in 101 class folders, three official train/test folds.

Layout (the two archives unpacked side by side under `root`):

    root/UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi
    root/ucfTrainTestlist/classInd.txt       "1 ApplyEyeMakeup"
    root/ucfTrainTestlist/trainlist01.txt    "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1"
    root/ucfTrainTestlist/testlist01.txt     "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"

`root` may also be the class folders themselves (then the split folder is looked for there too,
or given as `splits_dir`). Labels are classInd's 1-based numbers minus one. A test-list line has
no number: its class folder names the class, matched without case, because the official lists
write the folder `HandstandPushups` and the file `v_HandStandPushups_...`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from magvit.data.base import DATASETS
from magvit.data.files import Entry, VideoClips, VideoFilesConfig, dataset_folder, official_file, usual_dir
from magvit.errors import MagvitError

VIDEO_DIRS = ("UCF-101", "UCF101")  # what UCF101.rar unpacks to
SPLIT_DIRS = ("ucfTrainTestlist", "UCF-101/ucfTrainTestlist")  # what UCF101TrainTestSplits-RecognitionTask.zip does


@dataclass(frozen=True)
class UCF101Config(VideoFilesConfig):
    """Clips as MAGVIT (section 4.1) generates them: 16 frames at 128x128 (MAGVIT-v2's causal tokenizer:
    frames=17)."""

    name: str = "ucf101"
    root: str = "data/ucf101"
    size: int = 128
    split: Literal["train", "test"] = "train"
    fold: int = 1  # the official fold, 1-3 (trainlist0N.txt / testlist0N.txt)
    splits_dir: str = ""  # default: the first of SPLIT_DIRS under root, else root
    probe: bool = True  # open all 13k clips once when built (magvit.data.files); about a minute


def read_class_index(path: Path) -> list[str]:
    """classInd.txt -> class names in label order ("1 ApplyEyeMakeup" is label 0)."""
    numbered = {}
    for n, line in enumerate(official_file(path, "UCF-101 class index").read_text().splitlines(), 1):
        if line.strip():
            number, _, name = line.strip().partition(" ")
            if not number.isdigit() or not name.strip():
                raise MagvitError(f"{path}:{n}: expected '<number> <class>', got {line.strip()!r}")
            numbered[int(number)] = name.strip()
    if sorted(numbered) != list(range(1, len(numbered) + 1)):
        raise MagvitError(f"{path}: class numbers must run 1..{len(numbered)}")
    return [numbered[i] for i in range(1, len(numbered) + 1)]


def read_split_list(path: Path, classes: list[str]) -> list[tuple[str, int]]:
    """trainlist0N.txt / testlist0N.txt -> (relative clip path, 0-based label) per line."""
    by_name = {name.lower(): i for i, name in enumerate(classes)}
    clips = []
    for n, line in enumerate(official_file(path, "UCF-101 split list").read_text().splitlines(), 1):
        if not line.strip():
            continue
        relative, *number = line.split()
        folder = relative.replace("\\", "/").split("/")[0].lower()
        label = int(number[0]) - 1 if number and number[0].isdigit() else by_name.get(folder)
        if label is None or not 0 <= label < len(classes):
            raise MagvitError(f"{path}:{n}: {line.strip()!r} names no class of classInd.txt")
        clips.append((relative, label))
    return clips


@DATASETS.register("ucf101", UCF101Config)
class UCF101(VideoClips):
    """UCF-101 (official folds, classInd labels): 16-frame 128x128 clips by default."""

    def __init__(
        self, root: str = UCF101Config.root, split: str = UCF101Config.split, fold: int = UCF101Config.fold,
        splits_dir: str = UCF101Config.splits_dir, frames: int = UCF101Config.frames,
        stride: int = UCF101Config.stride, size: int = UCF101Config.size,
        random_clip: bool = UCF101Config.random_clip, random_crop: bool = UCF101Config.random_crop,
        flip: bool = UCF101Config.flip, seed: int = UCF101Config.seed, probe: bool = UCF101Config.probe,
    ):
        if fold not in (1, 2, 3):
            raise MagvitError(f"UCF-101 has folds 1, 2 and 3, got fold {fold}")
        base = dataset_folder(root, "UCF-101", split, ("train", "test"))
        videos, lists = usual_dir(base, "", VIDEO_DIRS), usual_dir(base, splits_dir, SPLIT_DIRS)
        self.classes = read_class_index(lists / "classInd.txt")
        self.split, self.fold = split, fold
        clips = read_split_list(lists / f"{split}list0{fold}.txt", self.classes)
        entries: list[Entry] = [(videos / relative, label) for relative, label in clips]
        super().__init__(videos, entries, frames, size, stride, random_clip, random_crop, flip, seed, probe)
