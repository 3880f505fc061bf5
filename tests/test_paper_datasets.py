"""The papers' datasets read from their exact download layouts: splits and labels from the official
files, missing and corrupt files counted and skipped, the same samples with any worker count, and
`magvit data preview` on each shipped config."""

import shutil
import warnings
from pathlib import Path

import numpy as np
import paper_fixtures
import pytest
import torch

from magvit.data import BAIR, UCF101, ImageNet, Kinetics600, SSv2, build_dataloader, set_epoch
from magvit.errors import MagvitError

ROOT = Path(__file__).parents[1]
SMALL = {"frames": 4, "size": 16}  # every video dataset here; ImageNet takes size only


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """Each dataset written once for the module, read-only for the tests (a test that damages one copies it)."""
    return {name: make(tmp_path_factory.mktemp(name)) for name, make in paper_fixtures.MAKERS.items()}


def _quiet(build, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build(*args, **kwargs)


def _check(sample, frames, size):
    video = sample["video"]
    assert video.shape == (3, frames, size, size) and video.dtype == torch.float32
    assert -1 <= video.min() and video.max() <= 1 and video.std() > 0.05


def _relative(ds, base):
    return [p.relative_to(base).as_posix() for p in ds.items]


def _one_line_error(match):
    return pytest.raises(MagvitError, match=match)


# ---------------------------------------------------------------------------------------------- UCF-101


def test_ucf101_folds_and_labels_come_from_the_split_files(fixtures):
    fx = fixtures["ucf101"]
    videos = fx["root"] / "UCF-101"
    seen = {}
    for fold in (1, 2, 3):
        train = UCF101(fx["root"], split="train", fold=fold, **SMALL)
        test = UCF101(fx["root"], split="test", fold=fold, **SMALL)
        assert train.classes == fx["classes"]
        assert _relative(train, videos) == fx["folds"][fold]["train"]
        assert _relative(test, videos) == fx["folds"][fold]["test"]
        assert set(train.items).isdisjoint(test.items) and len(train) + len(test) == len(fx["labels"])
        # train labels: the list's numbers minus one; test labels: the class folder (any case)
        for ds in (train, test):
            assert ds.labels == [fx["labels"][r] for r in _relative(ds, videos)]
        seen[fold] = set(test.items)
    assert seen[1] != seen[2] != seen[3] and seen[1].isdisjoint(seen[2])
    sample = test[2]
    _check(sample, 4, 16)
    assert sample["label"] == 2, "v_HandStandPushups_g15_c01.avi is HandstandPushups"


def test_ucf101_missing_official_file_is_one_line(fixtures, tmp_path):
    lists = tmp_path / "ucfTrainTestlist"
    shutil.copytree(fixtures["ucf101"]["root"] / "ucfTrainTestlist", lists)
    (tmp_path / "UCF-101").mkdir()
    (lists / "testlist02.txt").unlink()
    with _one_line_error(r"testlist02\.txt: UCF-101 split list not found$"):
        UCF101(tmp_path, split="test", fold=2)
    (lists / "classInd.txt").unlink()
    with _one_line_error(r"ucfTrainTestlist/classInd\.txt: UCF-101 class index not found$"):
        UCF101(tmp_path, split="train")
    with _one_line_error("folds 1, 2 and 3"):
        UCF101(tmp_path, fold=4)


def test_ucf101_corrupt_and_missing_clips_are_counted_and_skipped(fixtures, tmp_path):
    root = tmp_path / "ucf"
    shutil.copytree(fixtures["ucf101"]["root"], root)
    train = fixtures["ucf101"]["folds"][1]["train"]
    (root / "UCF-101" / train[0]).write_text("not a video\n" * 30)
    (root / "UCF-101" / train[1]).unlink()
    with pytest.warns(UserWarning, match=r"UCF101: skipped 2 of 6 files .*\(1 unreadable, 1 missing\)"):
        ds = UCF101(root, **SMALL)
    assert len(ds) == 4 and sorted(r for _, r in ds.skipped) == ["missing", "unreadable"]
    # never probed: the corrupt clip is found when read, skipped with a warning, the next one read instead
    lazy = _quiet(UCF101, root, probe=False, random_clip=False, **SMALL)
    assert len(lazy) == 5
    with pytest.warns(UserWarning, match=f"skipping .*{train[0]}"):
        sample = lazy[0]
    assert torch.equal(sample["video"], lazy[1]["video"]) and sample["label"] == lazy.labels[1]


# ---------------------------------------------------------------------------------------------- Kinetics-600


def test_kinetics600_labels_splits_and_a_missing_clip(fixtures):
    fx = fixtures["kinetics600"]
    train = Kinetics600(fx["root"], **SMALL)
    assert train.classes == ["abseiling", "playing guitar", "zumba"] and train.labels == fx["labels"]["train"]
    assert all(p.parent.name in train.classes for p in train.items), "clips in label folders are found"
    with pytest.warns(UserWarning, match=r"Kinetics600: skipped 1 of 3 files .*\(1 missing\)"):
        val = Kinetics600(fx["root"], split="val", **SMALL)
    assert val.labels == [lab for lab in fx["labels"]["val"] if lab != 2], "the zumba clip is missing"
    gone = fx["rows"]["val"][0]
    name = f"{gone['youtube_id']}_{gone['time_start']:06d}_{gone['time_end']:06d}.mp4"
    assert [(p.name, reason) for p, reason in val.skipped] == [(name, "missing")]
    test = Kinetics600(fx["root"], split="test", **SMALL)
    assert len(test) == 3 and "label" not in test[0], "test.csv has no labels"
    _check(val[1], 4, 16)
    assert val[1]["label"] == val.labels[1]
    assert set(train.items).isdisjoint(val.items) and set(val.items).isdisjoint(test.items)


def test_kinetics600_missing_annotation_file(fixtures, tmp_path):
    shutil.copytree(fixtures["kinetics600"]["root"] / "annotations", tmp_path / "annotations")
    (tmp_path / "annotations" / "validate.csv").unlink()
    with _one_line_error(r"annotations/validate\.csv: Kinetics-600 annotation file not found \(nor val\.csv\)$"):
        Kinetics600(tmp_path, split="val")
    (tmp_path / "annotations" / "train.csv").write_text("label,id\nzumba,x\n")
    with _one_line_error("train.csv: no youtube_id, time_start, time_end column"):
        Kinetics600(tmp_path, split="train")


# ---------------------------------------------------------------------------------------------- BAIR


def test_bair_frame_folders_and_arrays(fixtures, tmp_path):
    fx = fixtures["bair"]
    train, test = BAIR(fx["root"], **SMALL), BAIR(fx["root"], split="test", frames=16, size=64)
    assert [p.name for p in train.items] == fx["train"] and [p.name for p in test.items] == fx["test"]
    assert set(train.lengths.values()) == set(test.lengths.values()) == {30}
    _check(train[2], 4, 16)
    _check(test[0], 16, 64)
    assert "label" not in train[0]
    # a clip of a 64x64 array is exactly its frames: no resize at the papers' size
    clip = BAIR(fx["root"], split="test", frames=30, size=64, random_clip=False)[1]["video"]
    frames = torch.from_numpy(paper_fixtures.clip_frames(101, frames=30, size=64)).permute(3, 0, 1, 2)
    assert torch.allclose(clip, frames.float() / 127.5 - 1)
    short = tmp_path / "test"
    shutil.copytree(fx["root"] / "test", short)
    shutil.copytree(fx["root"] / "train" / "0", short / "0")
    for png in sorted((short / "0").iterdir())[:20]:
        png.unlink()
    (short / "bad.npy").write_bytes(b"not numpy")
    with pytest.warns(UserWarning, match=r"skipped 2 of 4 files .*\(1 too short, 1 unreadable\)"):
        assert len(BAIR(tmp_path, split="test", frames=16)) == 2


# ---------------------------------------------------------------------------------------------- SSv2


def test_ssv2_classes_from_templates(fixtures):
    fx = fixtures["ssv2"]
    for split in ("train", "validation"):
        ds = SSv2(fx["root"], split=split, probe=True, **SMALL)
        assert [(p.stem, lab) for p, lab in zip(ds.items, ds.labels)] == fx["splits"][split]
        assert ds.classes == list(paper_fixtures.SSV2_TEMPLATES)
    _check(ds[2], 4, 16)
    assert ds[2]["label"] == 2


def test_ssv2_missing_labels_file(fixtures, tmp_path):
    shutil.copytree(fixtures["ssv2"]["root"] / "labels", tmp_path / "labels")
    (tmp_path / "labels" / "something-something-v2-validation.json").unlink()
    with _one_line_error(r"something-something-v2-validation\.json: Something-Something v2 validation list not found$"):
        SSv2(tmp_path, split="validation")


# ---------------------------------------------------------------------------------------------- ImageNet


def test_imagenet_labels_follow_the_sorted_wnids(fixtures, tmp_path):
    fx = fixtures["imagenet"]
    train, val = ImageNet(fx["root"], size=16), ImageNet(fx["root"], split="val", size=16, probe=True)
    assert train.classes == fx["classes"] == ["n01440764", "n01443537", "n15075141"]
    assert train.class_names == fx["names"]
    assert train.labels == [0, 0, 1, 1, 2, 2] and val.labels == [0, 1, 2]
    assert [p.parent.name for p in val.items] == fx["classes"]
    _check(val[1], 1, 16)
    assert val[1]["label"] == 1
    # without a train folder the synset mapping gives the same order
    shutil.copytree(fx["root"] / "val", tmp_path / "val")
    shutil.copy(fx["root"] / "LOC_synset_mapping.txt", tmp_path)
    assert ImageNet(tmp_path, split="val", size=16).labels == [0, 1, 2]
    (tmp_path / "LOC_synset_mapping.txt").unlink()
    with _one_line_error("train: ImageNet train folder not found"):
        ImageNet(tmp_path, split="val")


def test_imagenet_flat_val_folder_is_labelled_by_the_solution_csv(fixtures, tmp_path):
    """The validation archive unpacks flat; LOC_val_solution.csv (Kaggle's release) gives each image's
    wnid as the first word of its box list. Unlisted images are counted and skipped, a wnid outside the
    classes and a missing CSV are one line each."""
    fx = fixtures["imagenet"]
    root = tmp_path / "imagenet"
    shutil.copytree(fx["root"] / "train", root / "train")
    shutil.copy(fx["root"] / "LOC_synset_mapping.txt", root)
    (root / "val").mkdir()
    for image in sorted((fx["root"] / "val").glob("*/*.JPEG")):
        shutil.copy(image, root / "val" / image.name)  # ILSVRC2012_val_000000 (class 0), ...010 (1), ...020 (2)
    with _one_line_error("need their labels in .*LOC_val_solution.csv"):
        ImageNet(root, split="val", size=16)
    rows = ["ImageId,PredictionString", "ILSVRC2012_val_000020,n15075141 1 2 30 20 n15075141 4 4 9 9",
            "ILSVRC2012_val_000000,n01440764 0 0 10 10", "ILSVRC2012_val_000010,n01443537 3 3 20 20"]
    (root / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    val = ImageNet(root, split="val", size=16)
    assert [p.name for p in val.items] == ["ILSVRC2012_val_000000.JPEG", "ILSVRC2012_val_000010.JPEG",
                                          "ILSVRC2012_val_000020.JPEG"]
    assert val.labels == [0, 1, 2] and val.skipped == []
    _check(val[2], 1, 16)
    assert val[2]["label"] == 2
    shutil.copy(root / "val" / "ILSVRC2012_val_000000.JPEG", root / "val" / "ILSVRC2012_val_000099.JPEG")
    with pytest.warns(UserWarning, match=r"skipped 1 of 4 files .*\(1 not in LOC_val_solution.csv\)"):
        skipped = ImageNet(root, split="val", size=16).skipped
    assert skipped == [(root / "val" / "ILSVRC2012_val_000099.JPEG", "not in LOC_val_solution.csv")]
    (root / "LOC_val_solution.csv").write_text("\n".join([*rows, "ILSVRC2012_val_000099,n99999999 0 0 1 1"]))
    with _one_line_error("ILSVRC2012_val_000099.JPEG is labelled 'n99999999', not a class"):
        ImageNet(root, split="val", size=16)
    (root / "LOC_val_solution.csv").write_text("id,label\nx,y\n")
    with _one_line_error("expected the columns ImageId,PredictionString"):
        ImageNet(root, split="val", size=16)


def _devkit(root: Path, ids: list[int]) -> None:
    """The devkit archive unpacked under `root`: meta.mat's synsets (ILSVRC2012_ID, WNID, ...; the real
    one has 1,860 with the WordNet ancestors after the 1,000 classes, in an order that is not the wnids')
    and the ground truth, one class id per validation image."""
    from scipy.io import savemat

    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    rows = [(3, "n01440764", "tench", 0), (1, "n15075141", "toilet tissue", 0), (2, "n01443537", "goldfish", 0),
            (1001, "n00001740", "entity", 3)]
    synsets = np.array([(i, w, words, "", children) for i, w, words, children in rows],
                       dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"),
                              ("num_children", "O")])
    savemat(str(data / "meta.mat"), {"synsets": synsets})
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{i}\n" for i in ids))


def test_imagenet_flat_val_folder_is_labelled_by_the_devkit(fixtures, tmp_path):
    """The official release: the flat validation images and the devkit, whose ground truth gives image
    i's ILSVRC2012_ID and meta.mat that id's wnid; the label is the wnid's sorted position, as for the
    class folders. The devkit comes before a Kaggle CSV; an unknown id or a corrupt meta.mat is one line."""
    fx = fixtures["imagenet"]
    root = tmp_path / "imagenet"
    shutil.copytree(fx["root"] / "train", root / "train")
    (root / "val").mkdir()
    for n, image in enumerate(sorted((fx["root"] / "val").glob("*/*.JPEG")), start=1):
        shutil.copy(image, root / "val" / f"ILSVRC2012_val_{n:08d}.JPEG")  # classes 0, 1, 2 in this order
    _devkit(root, [3, 2, 1])  # n01440764, n01443537, n15075141: sorted positions 0, 1, 2
    (root / "LOC_val_solution.csv").write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n15075141 0\n")
    val = ImageNet(root, split="val", size=16)
    assert val.labels == [0, 1, 2] and val.skipped == []
    assert val[1]["label"] == 1
    shutil.copy(root / "val" / "ILSVRC2012_val_00000001.JPEG", root / "val" / "ILSVRC2012_val_00000004.JPEG")
    with pytest.warns(UserWarning, match=r"\(1 not in ILSVRC2012_validation_ground_truth.txt\)"):
        assert len(ImageNet(root, split="val", size=16).skipped) == 1
    truth = root / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt"
    truth.write_text("3\n2\n7\n")
    with _one_line_error("class id 7 is not in meta.mat's synsets"):
        ImageNet(root, split="val", size=16)
    truth.write_text("3\n2\n1001\n")  # an ancestor, not a class
    with _one_line_error("labelled 'n00001740', not a class"):
        ImageNet(root, split="val", size=16)
    (truth.parent / "meta.mat").write_bytes(b"not a MATLAB file")
    with _one_line_error("cannot read the ImageNet devkit's validation labels"):
        ImageNet(root, split="val", size=16)


# ---------------------------------------------------------------------------------------------- loaders, CLI

BUILD = {"ucf101": (UCF101, SMALL), "kinetics600": (Kinetics600, SMALL), "bair": (BAIR, SMALL),
         "ssv2": (SSv2, SMALL), "imagenet": (ImageNet, {"size": 16})}


@pytest.mark.parametrize("name", BUILD)
def test_two_workers_give_the_samples_of_one(fixtures, name):
    build, sizes = BUILD[name]
    ds = _quiet(build, fixtures[name]["root"], split="train", random_crop=True, flip=True, seed=3, **sizes)

    def batches(workers):
        loader = build_dataloader(ds, batch_size=2, seed=5, num_workers=workers)
        out = []
        for epoch in range(2):
            set_epoch(loader, epoch)
            out += [batch["video"] for batch in loader]
        return out

    one, two = batches(0), batches(2)
    assert len(one) == 2 * (len(ds) // 2) and all(torch.equal(a, b) for a, b in zip(one, two))


PAPER = {"ucf101": (16, 128), "kinetics600": (16, 64), "bair": (16, 64), "ssv2": (16, 128), "imagenet": (1, 256)}


@pytest.mark.parametrize("name", PAPER)
def test_shipped_configs_are_the_defaults_at_the_papers_sizes(name):
    from magvit.data import DATASETS
    from magvit.kinds import load_config

    dataset = load_config(ROOT / "configs" / "data" / f"{name}.yaml").dataset
    assert dataset == DATASETS[name].config(), "the YAML and the dataclass defaults agree"
    assert (getattr(dataset, "frames", 1), dataset.size) == PAPER[name]


@pytest.mark.parametrize("name", BUILD)
def test_data_preview_of_each_shipped_config(fixtures, name, tmp_path, capsys):
    from magvit.cli import main

    config = ROOT / "configs" / "data" / f"{name}.yaml"
    out = tmp_path / ("p.png" if name == "imagenet" else "p.gif")
    sizes = [f"dataset.{k}={v}" for k, v in BUILD[name][1].items()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["data", "preview", str(config), "--out", str(out), "--num", "4",
                     f"dataset.root={fixtures[name]['root']}", *sizes]) == 0
    assert out.stat().st_size > 0 and "wrote" in capsys.readouterr().out
