"""Tiny copies of the papers' datasets in their exact on-disk layouts, for tests.

Each `make_*` writes one dataset under a folder and returns what the test needs to check it (the
clips of each split, their classes). Clips are 20 frames at 32x32 (BAIR: 30 frames at 64x64, as
released); every clip has its own colour and a bar that moves, so clips and frames differ.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np


def clip_frames(ident: int, frames: int = 20, size: int = 32) -> np.ndarray:
    """(T, size, size, 3) uint8: a colour of its own and a bright bar moving one column a frame."""
    colour = np.array([(37 * ident) % 200 + 30, (91 * ident) % 200 + 30, (53 * ident) % 200 + 30], np.uint8)
    video = np.broadcast_to(colour, (frames, size, size, 3)).copy()
    for t in range(frames):
        video[t, :, (2 * t) % size] = 255
    return video


def write_clip(path: Path, frames: np.ndarray, fps: int = 12) -> Path:
    """Encode (T, H, W, 3) uint8 in the codec the suffix's official files use: with the project's
    writer (magvit.media: the imageio-ffmpeg binary, in its own process), as PyAV's in-process
    libvpx failed to open once decord's bundled FFmpeg was loaded in the same test process."""
    import torch

    from magvit.media import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    video = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1  # (3, T, H, W) in [-1, 1]
    return write_video(path, video, fps=fps)


def write_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


# ---------------------------------------------------------------------------------------------- UCF-101

UCF_CLASSES = ("ApplyEyeMakeup", "BandMarching", "HandstandPushups")
UCF_GROUPS = (1, 8, 15)  # the official folds test groups 1-7, 8-14 and 15-21: one of each here


def make_ucf101(root: Path) -> dict:
    """root/UCF-101/<class>/v_<class>_gGG_c01.avi and root/ucfTrainTestlist/ with three folds.

    HandstandPushups keeps the official quirk: its files are named v_HandStandPushups_..."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(UCF_CLASSES, 1)))
    clips = {}  # relative path -> label
    for label, name in enumerate(UCF_CLASSES):
        stem = "HandStandPushups" if name == "HandstandPushups" else name
        for group in UCF_GROUPS:
            relative = f"{name}/v_{stem}_g{group:02d}_c01.avi"
            write_clip(root / "UCF-101" / relative, clip_frames(len(clips)))
            clips[relative] = label
    folds = {}
    for fold, test_group in enumerate(UCF_GROUPS, 1):
        test = [r for r in clips if f"_g{test_group:02d}_" in r]
        train = [r for r in clips if r not in test]
        (lists / f"trainlist0{fold}.txt").write_text("".join(f"{r} {clips[r] + 1}\r\n" for r in train))
        (lists / f"testlist0{fold}.txt").write_text("".join(f"{r}\r\n" for r in test))
        folds[fold] = {"train": train, "test": test}
    return {"root": root, "classes": list(UCF_CLASSES), "labels": clips, "folds": folds}


# ---------------------------------------------------------------------------------------------- Kinetics-600

K600_LABELS = ("zumba", "abseiling", "playing guitar")  # class index: sorted -> abseiling 0, playing guitar 1


def make_kinetics600(root: Path) -> dict:
    """root/{train,val,test}/ clips (train in label folders) and root/annotations/{train,validate,test}.csv.

    validate.csv uses the other column order with an extra `is_cc` column; test.csv has no labels;
    one validation row's clip is not on disk."""
    rows = {"train": [], "val": [], "test": []}
    for split, per_label in (("train", 2), ("val", 1), ("test", 1)):
        for label in K600_LABELS:
            for k in range(per_label):
                n = sum(len(r) for r in rows.values())
                row = {"label": label, "youtube_id": f"yt{n:03d}-{split[:2]}_{k}", "time_start": 10 * n,
                       "time_end": 10 * n + 10, "split": {"val": "validate"}.get(split, split), "is_cc": 0}
                rows[split].append(row)
                name = f"{row['youtube_id']}_{row['time_start']:06d}_{row['time_end']:06d}.mp4"
                folder = root / split / label if split == "train" else root / split
                if not (split == "val" and label == "zumba"):  # gone from YouTube
                    write_clip(folder / name, clip_frames(n))
    notes = root / "annotations"
    write_csv(notes / "train.csv", ["label", "youtube_id", "time_start", "time_end", "split"], rows["train"])
    write_csv(notes / "validate.csv", ["youtube_id", "time_start", "time_end", "label", "split", "is_cc"], rows["val"])
    write_csv(notes / "test.csv", ["youtube_id", "time_start", "time_end", "split"], rows["test"])
    classes = sorted(K600_LABELS)
    labels = {split: [classes.index(r["label"]) for r in split_rows] for split, split_rows in rows.items()}
    return {"root": root, "classes": classes, "rows": rows, "labels": labels, "missing": 1}


# ---------------------------------------------------------------------------------------------- BAIR


def make_bair(root: Path) -> dict:
    """root/train/<id>/{0..29}.png (three videos, ids 0, 1, 10: natural order) and root/test/<id>.npy (two)."""
    from PIL import Image

    for ident in (0, 1, 10):
        folder = root / "train" / str(ident)
        folder.mkdir(parents=True)
        for t, frame in enumerate(clip_frames(ident, frames=30, size=64)):
            Image.fromarray(frame).save(folder / f"{t}.png")
    (root / "test").mkdir(parents=True)
    for ident in (100, 101):
        np.save(root / "test" / f"{ident}.npy", clip_frames(ident, frames=30, size=64))
    return {"root": root, "train": ["0", "1", "10"], "test": ["100.npy", "101.npy"]}


# ---------------------------------------------------------------------------------------------- SSv2

SSV2_TEMPLATES = ("Holding something next to something", "Pushing something from left to right",
                  "Putting something on a surface")


def make_ssv2(root: Path) -> dict:
    """root/20bn-something-something-v2/<id>.webm and root/labels/{labels.json, something-something-v2-*.json}."""
    labels = root / "labels"
    labels.mkdir(parents=True)
    (labels / "labels.json").write_text(json.dumps({t: str(i) for i, t in enumerate(SSV2_TEMPLATES)}))
    bracketed = ("Holding [something] next to [something]", "Pushing [something] from left to right",
                 "Putting [something] on a surface")
    splits = {"train": [], "validation": []}
    for split, per_class in (("train", 2), ("validation", 1)):
        for template in bracketed:
            for _ in range(per_class):
                ident = str(1000 + sum(len(s) for s in splits.values()))
                splits[split].append({"id": ident, "label": f"a {template.lower()}", "template": template,
                                      "placeholders": ["a cup"] * template.count("[")})
                write_clip(root / "20bn-something-something-v2" / f"{ident}.webm", clip_frames(int(ident)))
        (labels / f"something-something-v2-{split}.json").write_text(json.dumps(splits[split]))
    return {"root": root, "splits": {s: [(c["id"], bracketed.index(c["template"])) for c in v]
                                     for s, v in splits.items()}}


# ---------------------------------------------------------------------------------------------- ImageNet

WNIDS = ("n15075141", "n01440764", "n01443537")  # sorted: n01440764 (tench) 0, n01443537 1, n15075141 2
SYNSETS = {"n01440764": "tench, Tinca tinca", "n01443537": "goldfish, Carassius auratus",
           "n15075141": "toilet tissue, toilet paper, bathroom tissue"}


def make_imagenet(root: Path) -> dict:
    """root/{train,val}/<wnid>/*.JPEG (2 and 1 images a class, 40x30) and root/LOC_synset_mapping.txt."""
    from PIL import Image

    for split, per_class in (("train", 2), ("val", 1)):
        for c, wnid in enumerate(WNIDS):
            (root / split / wnid).mkdir(parents=True)
            for k in range(per_class):
                frame = clip_frames(10 * c + k, frames=1, size=40)[0, :30]  # (30, 40, 3)
                name = f"{wnid}_{k}.JPEG" if split == "train" else f"ILSVRC2012_val_{c:05d}{k}.JPEG"
                Image.fromarray(frame).save(root / split / wnid / name, quality=95)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"{w} {n}\n" for w, n in sorted(SYNSETS.items())))
    return {"root": root, "classes": sorted(WNIDS), "names": [SYNSETS[w] for w in sorted(WNIDS)]}


MAKERS = {"ucf101": make_ucf101, "kinetics600": make_kinetics600, "bair": make_bair, "ssv2": make_ssv2,
          "imagenet": make_imagenet}
