"""Something-Something v2 as downloaded: 220,847 `.webm` clips in one folder, labels from the JSON files.

Layout (the video archive and the label package unpacked under `root`):

    root/20bn-something-something-v2/78687.webm
    root/labels/labels.json                              {"Holding something next to something": "102", ...}
    root/labels/something-something-v2-train.json        [{"id": "78687", "label": "holding potato next to
    root/labels/something-something-v2-validation.json     vicks vaporub bottle", "template": "Holding
                                                           [something] next to [something]", "placeholders": [...]}]

A clip's class is its template with the brackets removed, looked up in labels.json, as the
dataset's own loader does. Splits: train (168,913 clips) and validation (24,777); the test
split has no labels and is not read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from magvit.data.base import DATASETS
from magvit.data.files import Entry, VideoClips, VideoFilesConfig, dataset_folder, official_file, usual_dir
from magvit.errors import MagvitError

VIDEO_DIRS = ("20bn-something-something-v2", "videos")
LABEL_DIRS = ("labels",)


@dataclass(frozen=True)
class SSv2Config(VideoFilesConfig):
    """Clips as MAGVIT's multi-task benchmark (section 4.1) takes them: 16 frames at 128x128. Keep `flip`
    off: a flip turns "left to right" classes into their opposites."""

    name: str = "ssv2"
    root: str = "data/ssv2"
    size: int = 128
    split: Literal["train", "validation"] = "train"
    videos_dir: str = ""  # default: the first of VIDEO_DIRS under root, else root
    labels_dir: str = ""  # default: root/labels if it exists, else root
    probe: bool = False  # ~190k clips: a bad one is skipped when read (magvit.data.files)


def _read_json(path: Path, what: str) -> object:
    try:
        return json.loads(official_file(path, what).read_text())
    except json.JSONDecodeError as e:
        raise MagvitError(f"{path}: not valid JSON ({e})") from None


def class_of(template: str) -> str:
    """The labels.json key of a template: "Putting [something] on [something]" -> without brackets."""
    return template.replace("[", "").replace("]", "")


def read_labels(labels: Path, split: str) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names in index order, (clip id, class index) per clip of `split`)."""
    index_file = labels / "labels.json"
    index = _read_json(index_file, "Something-Something v2 labels.json")
    if not isinstance(index, dict) or not all(str(v).isdigit() for v in index.values()):
        raise MagvitError(f"{index_file}: expected a mapping of template -> class index string")
    names = {int(v): k for k, v in index.items()}
    if sorted(names) != list(range(len(names))):
        raise MagvitError(f"{index_file}: class indices must run 0..{len(names) - 1}")
    split_file = labels / f"something-something-v2-{split}.json"
    clips = _read_json(split_file, f"Something-Something v2 {split} list")
    shape = f"{split_file}: expected a list of {{'id', 'label', 'template', 'placeholders'}}"
    if not isinstance(clips, list):
        raise MagvitError(shape)
    out = []
    for clip in clips:
        if not isinstance(clip, dict) or "id" not in clip or "template" not in clip:
            raise MagvitError(shape)
        key = class_of(clip["template"])
        if key not in index:
            raise MagvitError(f"{split_file}: clip {clip['id']}: template {key!r} is not in labels.json")
        out.append((str(clip["id"]), int(index[key])))
    return [names[i] for i in range(len(names))], out


@DATASETS.register("ssv2", SSv2Config)
class SSv2(VideoClips):
    """Something-Something v2 (labels.json classes): 16-frame 128x128 clips by default."""

    def __init__(
        self, root: str = SSv2Config.root, split: str = SSv2Config.split, videos_dir: str = SSv2Config.videos_dir,
        labels_dir: str = SSv2Config.labels_dir, frames: int = SSv2Config.frames, stride: int = SSv2Config.stride,
        size: int = SSv2Config.size, random_clip: bool = SSv2Config.random_clip,
        random_crop: bool = SSv2Config.random_crop, flip: bool = SSv2Config.flip, seed: int = SSv2Config.seed,
        probe: bool = SSv2Config.probe,
    ):
        base = dataset_folder(root, "Something-Something v2", split, ("train", "validation"))
        videos = usual_dir(base, videos_dir, VIDEO_DIRS)
        self.classes, clips = read_labels(usual_dir(base, labels_dir, LABEL_DIRS), split)
        self.split = split
        entries: list[Entry] = [(videos / f"{clip_id}.webm", label) for clip_id, label in clips]
        super().__init__(videos, entries, frames, size, stride, random_clip, random_crop, flip, seed, probe)
