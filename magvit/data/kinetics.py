"""Kinetics-600 as downloaded: 10-second YouTube clips, labels and splits from the annotation CSVs.

Layout (the download scripts' layout: clips per split, optionally in label folders):

    root/train/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4   (or root/train/<label>/...)
    root/val/...   root/test/...
    root/annotations/train.csv      label,youtube_id,time_start,time_end,split
    root/annotations/validate.csv   (or val.csv; test.csv may lack the label column)

The CSVs are read by their header, so the column order and extra columns (`is_cc`, ...) do not
matter; a CSV holding several splits is filtered by its `split` column. The class index is the
position of a label in the sorted unique labels of train.csv. About a tenth of the clips are gone
from YouTube in any copy: a CSV row whose clip is not on disk is counted "missing" and skipped,
in the one warning of magvit.data.files.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from magvit.data.base import DATASETS
from magvit.data.files import Entry, VideoClips, VideoFilesConfig, dataset_folder, official_file, usual_dir
from magvit.data.folders import VIDEO_EXTENSIONS
from magvit.errors import MagvitError

# split -> the annotation files that hold it (first found wins) and the values of its `split` column
ANNOTATIONS = {"train": ("train.csv",), "val": ("validate.csv", "val.csv"), "test": ("test.csv",)}
SPLIT_VALUES = {"train": ("train",), "val": ("validate", "val", "valid"), "test": ("test",)}
REQUIRED_COLUMNS = ("youtube_id", "time_start", "time_end")


@dataclass(frozen=True)
class Kinetics600Config(VideoFilesConfig):
    """Clips as MAGVIT (section 4.1) predicts them: 16 frames at 64x64, 5 given and 11 predicted."""

    name: str = "kinetics600"
    root: str = "data/kinetics600"
    split: Literal["train", "val", "test"] = "train"
    annotations: str = ""  # the CSVs' folder; default: root/annotations if it exists, else root
    probe: bool = False  # ~400k clips: a bad one is skipped when read (magvit.data.files)


def clip_name(youtube_id: str, time_start: str, time_end: str) -> str:
    """The file stem the download scripts give a clip: `{youtube_id}_{start:06d}_{end:06d}`."""
    return f"{youtube_id}_{int(float(time_start)):06d}_{int(float(time_end)):06d}"


def read_annotations(path: Path, split: str) -> list[dict[str, str]]:
    """The rows of one annotation CSV that belong to `split` (all rows if it has no split column)."""
    with official_file(path, "Kinetics-600 annotation file").open(newline="") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise MagvitError(f"{path}: no {', '.join(missing)} column (the header is {','.join(columns)})")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    if "split" in columns:
        rows = [row for row in rows if row["split"].lower() in SPLIT_VALUES[split]]
    return rows


def _annotation_file(folder: Path, split: str) -> Path:
    names = ANNOTATIONS[split]
    found = next((folder / name for name in names if (folder / name).is_file()), None)
    if found is None:
        others = f" (nor {', '.join(names[1:])})" if len(names) > 1 else ""
        raise MagvitError(f"{folder / names[0]}: Kinetics-600 annotation file not found{others}")
    return found


def _clips_on_disk(folder: Path) -> dict[str, Path]:
    """Clip stem -> path for every video under `folder`, in label folders or not."""
    return {p.stem: p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()}


@DATASETS.register("kinetics600", Kinetics600Config)
class Kinetics600(VideoClips):
    """Kinetics-600 (annotation CSVs, labels sorted by name): 16-frame 64x64 clips by default."""

    def __init__(
        self, root: str = Kinetics600Config.root, split: str = Kinetics600Config.split,
        annotations: str = Kinetics600Config.annotations, frames: int = Kinetics600Config.frames,
        stride: int = Kinetics600Config.stride, size: int = Kinetics600Config.size,
        random_clip: bool = Kinetics600Config.random_clip, random_crop: bool = Kinetics600Config.random_crop,
        flip: bool = Kinetics600Config.flip, seed: int = Kinetics600Config.seed, probe: bool = Kinetics600Config.probe,
    ):
        base = dataset_folder(root, "Kinetics-600", split, tuple(ANNOTATIONS))
        folder = usual_dir(base, annotations, ("annotations",))
        train_file, split_file = _annotation_file(folder, "train"), _annotation_file(folder, split)
        train_rows = read_annotations(train_file, "train")
        labels = {row.get("label", "") for row in train_rows} - {""}
        if not labels:
            raise MagvitError(f"{train_file}: no labelled rows (the class list comes from its label column)")
        self.classes, self.split = sorted(labels), split
        rows = train_rows if split == "train" else read_annotations(split_file, split)
        clips = base / split
        if not clips.is_dir():
            raise MagvitError(f"{clips}: Kinetics-600 {split} clip folder not found")
        super().__init__(clips, self._entries(rows, clips, split_file), frames, size, stride, random_clip,
                         random_crop, flip, seed, probe)

    def _entries(self, rows: list[dict[str, str]], clips: Path, source: Path) -> list[Entry]:
        """Each row's clip (where it is on disk, else where it would be: counted "missing") and label."""
        on_disk = _clips_on_disk(clips)
        index = {name: i for i, name in enumerate(self.classes)}
        entries = []
        for row in rows:
            try:
                name = clip_name(row["youtube_id"], row["time_start"], row["time_end"])
            except ValueError:
                raise MagvitError(f"{source}: {row['youtube_id']}: time_start and time_end must be numbers") from None
            label = row.get("label") or None  # the test CSV may carry no labels
            if label is not None and label not in index:
                raise MagvitError(f"{source}: label {label!r} is not a label of train.csv")
            entries.append((on_disk.get(name, clips / f"{name}.mp4"), None if label is None else index[label]))
        return entries
