"""Datasets yield (3, T, H, W) clips in [-1, 1]; bad files are skipped and counted; seeds reproduce."""

import dataclasses
import shutil
import warnings

import pytest
import torch

from magvit.data import (
    BundledClips,
    ImageFolder,
    MovingDigits,
    VideoFolder,
    build_dataloader,
    resize_crop,
    set_epoch,
)
from magvit.errors import MagvitError
from magvit.media import write_video


def _check_clip(sample, frames, size):
    video = sample["video"]
    assert video.shape == (3, frames, size, size) and video.dtype == torch.float32
    assert video.min() >= -1 and video.max() <= 1


# ---------------------------------------------------------------------------------------------- MovingDigits


def test_moving_digits_clips_move_and_are_deterministic():
    ds = MovingDigits(frames=8, size=32, num_samples=20, seed=3)
    sample = ds[4]
    _check_clip(sample, 8, 32)
    assert 0 <= sample["label"] < 10
    assert torch.equal(sample["video"], MovingDigits(frames=8, size=32, num_samples=20, seed=3)[4]["video"])
    assert not torch.equal(sample["video"], MovingDigits(frames=8, size=32, num_samples=20, seed=4)[4]["video"])
    v = sample["video"][0]  # (T, H, W)
    assert (v > 0).any(dim=(1, 2)).all(), "a digit is visible in every frame"
    assert not torch.equal(v[0], v[-1]), "the digit moves"


def test_moving_digits_image_mode_and_held_out_splits():
    images = MovingDigits(image=True, size=32, num_samples=50)
    _check_clip(images[0], 1, 32)
    labels = {images[i]["label"] for i in range(50)}
    assert len(labels) >= 8, "labels cover the classes"
    # the split pools hold different handwriting: no val digit image is a train digit image
    train, val = MovingDigits(split="train").digits, MovingDigits(split="val").digits
    assert len(train) > 5 * len(val) > 0
    same = (train[:, None] - val[None]).abs().flatten(2).amax(-1) < 1e-6
    assert not same.any()


def test_moving_digits_centre_start_keeps_the_rest_of_the_clip():
    """`start: center`: every clip's first frame is its digit at the canvas centre (as in image mode),
    and the digit, direction and speed are those the same index draws with random starts."""
    centred = MovingDigits(frames=8, size=32, num_samples=20, start="center")
    anywhere = MovingDigits(frames=8, size=32, num_samples=20)
    image = MovingDigits(image=True, size=32, num_samples=20)
    for i in range(6):
        c, r = centred[i], anywhere[i]
        assert c["label"] == r["label"]
        first = c["video"][0, 0]  # (H, W)
        digit = image.digits[torch.randint(0, len(image.digits), (1,), generator=centred.generator(i))[0]]
        d, room = centred.digit_size, 32 - centred.digit_size
        expected = torch.full((32, 32), -1.0)
        expected[room // 2 : room // 2 + d, room // 2 : room // 2 + d] = digit * 2 - 1
        assert torch.allclose(first, expected)
        assert not torch.equal(c["video"][0, 0], c["video"][0, -1]), "it still moves"


def test_moving_digits_bad_arguments():
    with pytest.raises(MagvitError):
        MovingDigits(num_digits=3)
    with pytest.raises(MagvitError, match="start"):
        MovingDigits(start="middle")
    with pytest.raises(MagvitError):
        MovingDigits(frames=0)


# ---------------------------------------------------------------------------------------------- BundledClips


def test_bundled_clips_are_real_and_split_in_time():
    train, val = BundledClips(frames=8, size=32), BundledClips(frames=8, size=32, split="val")
    assert len(train) > len(val) > 0
    _check_clip(train[0], 8, 32)
    assert {train[i]["label"] for i in range(len(train))} == {0, 1, 2}
    assert train[0]["video"].std() > 0.1, "a real clip, not a blank"
    assert {(s, f) for s, f in train.windows}.isdisjoint(val.windows)
    with pytest.raises(MagvitError, match="no val clip"):
        BundledClips(frames=200, split="val")


def test_moving_held_out_windows_are_the_top_quantile_of_frame_change():
    from types import SimpleNamespace

    from magvit.evaluation.scores import frame_change, held_out_clips

    info = SimpleNamespace(data={"name": "bundled_clips", "frames": 5, "size": 16, "hop": 1})
    everything = BundledClips(frames=5, size=16, split="val", hop=1)
    change = torch.stack([frame_change(everything[i]["video"]) for i in range(len(everything))])
    moving, _ = held_out_clips(info, 1000, seed=0, motion_quantile=0.75)
    assert len(moving) == int((change >= change.quantile(0.75)).sum()) < len(everything)
    assert min(frame_change(c) for c in moving) >= change.quantile(0.75)
    plain, _ = held_out_clips(info, 1000, seed=0)
    assert len(plain) == len(everything)


def test_bundled_clips_train_and_val_share_no_frame():
    span = lambda ds, s, f: set(range(f, f + (ds.frames - 1) * ds.stride + 1))  # source frames a window reads
    for kwargs in (dict(frames=9, stride=1, hop=1), dict(frames=5, stride=3)):
        train, val = BundledClips(size=16, **kwargs), BundledClips(size=16, split="val", **kwargs)
        for source in {s for s, _ in train.windows}:
            seen = set().union(*(span(train, s, f) for s, f in train.windows if s == source))
            held = set().union(*(span(val, s, f) for s, f in val.windows if s == source))
            assert held and seen.isdisjoint(held), source


def test_bundled_clips_random_crops_in_train_centre_crop_in_val():
    train = BundledClips(frames=4, size=16, crop_from=24, hop=4)
    val = BundledClips(frames=4, size=16, crop_from=24, split="val", hop=4)
    whole = BundledClips(frames=4, size=24, hop=4)  # the same windows, uncropped
    assert train.windows == whole.windows
    _check_clip(train[0], 4, 16)
    clips = [train[i]["video"] for i in range(3)]
    train.set_epoch(1)
    assert not torch.equal(clips[0], train[0]["video"]), "a new crop each epoch"
    # every train crop is a 16x16 window of the 24x24 frame; which one is random
    offsets = set()
    for i, clip in enumerate(clips):
        full = whole[i]["video"]
        found = [(y, x) for y in range(9) for x in range(9) if torch.equal(full[..., y:y + 16, x:x + 16], clip)]
        assert found, "a crop of the decoded frame"
        offsets.add(found[0])
    assert len(offsets) > 1
    full = BundledClips(frames=4, size=24, split="val", hop=4)[0]["video"]
    assert torch.equal(val[0]["video"], full[..., 4:20, 4:20])
    with pytest.raises(MagvitError, match="crop_from"):
        BundledClips(size=32, crop_from=16)


def test_variants_repeat_the_random_draws_every_k_epochs():
    """`variants: K`: epoch e draws as epoch e mod K, and a sample's key names (variant, index), so the
    transformer's token memo keeps K augmented copies; without it the keys are None (nothing kept)."""
    from magvit.data import build_dataset
    from magvit.data.bundled import BundledClipsConfig
    from magvit.training.tokens import Indexed, repeats

    cfg = BundledClipsConfig(frames=4, size=16, crop_from=24, hop=4, flip=True)
    plain, two = build_dataset(cfg), build_dataset(dataclasses.replace(cfg, variants=2))
    assert not repeats(plain) and plain.sample_key(0) is None
    assert repeats(two) and two.sample_key(3) == 3
    seen = {}
    for epoch in range(5):
        two.set_epoch(epoch)
        plain.set_epoch(epoch)
        seen[epoch] = (two[0]["video"], Indexed(two)[0]["index"], plain[0]["video"])
    assert torch.equal(seen[0][0], seen[2][0]) and torch.equal(seen[1][0], seen[3][0])
    assert torch.equal(seen[0][0], seen[0][2]), "variant 0 draws as epoch 0 of the plain set"
    assert any(not torch.equal(seen[0][0], seen[e][0]) for e in (1, 3)), "the other variant is another draw"
    assert [seen[e][1] for e in range(5)] == [0, len(two), 0, len(two), 0]
    moving = MovingDigits(frames=4, size=16, num_samples=4)
    assert repeats(moving) and moving.sample_key(2) == 2  # a fixed set: the index is the key
    with pytest.raises(MagvitError, match="variants must be >= 1"):
        build_dataset(dataclasses.replace(cfg, variants=0))


# ---------------------------------------------------------------------------------------------- folders


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    """Two good clips in class folders plus four bad files: empty, text, truncated, too short."""
    root = tmp_path_factory.mktemp("videos")
    # decord 0.6 misreads some tiny widths (16, 24, 48)
    digits = MovingDigits(frames=12, size=64, num_samples=3, seed=5)
    write_video(root / "cats" / "good1.mp4", digits[0]["video"])
    write_video(root / "dogs" / "good2.mp4", digits[1]["video"])
    write_video(root / "dogs" / "short.mp4", digits[2]["video"][:, :3])
    (root / "cats" / "empty.mp4").write_bytes(b"")
    (root / "cats" / "notes.mp4").write_text("this is not a video\n" * 20)
    data = (root / "cats" / "good1.mp4").read_bytes()
    (root / "dogs" / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (root / "dogs" / "readme.txt").write_text("ignored: not a video extension")
    return root


def test_video_folder_skips_bad_files_and_counts_them(video_dir):
    with pytest.warns(UserWarning, match="skipped 4 of 6 files"):
        ds = VideoFolder(video_dir, frames=8, size=32, stride=1)
    assert len(ds) == 2 and len(ds.skipped) == 4
    reasons = {p.name: r for p, r in ds.skipped}
    assert reasons == {
        "empty.mp4": "empty", "notes.mp4": "unreadable", "truncated.mp4": "unreadable", "short.mp4": "too short"
    }
    assert ds.classes == ["cats", "dogs"]
    for i in range(len(ds)):
        _check_clip(ds[i], 8, 32)
    assert [ds[i]["label"] for i in range(2)] == [0, 1]


def test_video_folder_reads_the_same_clips_with_either_reader(video_dir, monkeypatch):
    """decord where it installs, PyAV elsewhere (aarch64 Linux, Apple silicon): the same files are
    usable, skipped for the same reasons, and give the same clips."""
    pytest.importorskip("decord")
    pytest.importorskip("av")
    seen = {}
    for reader in ("decord", "pyav"):
        monkeypatch.setenv("MAGVIT_VIDEO_READER", reader)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = VideoFolder(video_dir, frames=5, size=32, stride=2, seed=3)
        seen[reader] = (sorted((p.name, r) for p, r in ds.skipped), torch.stack([ds[i]["video"] for i in range(2)]))
    assert seen["decord"][0] == seen["pyav"][0]
    assert (seen["decord"][1] - seen["pyav"][1]).abs().max() <= 4 / 127.5


def test_video_folder_random_clips_depend_on_seed_and_epoch(video_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = VideoFolder(video_dir, frames=4, size=32, stride=2, random_crop=True, flip=True, seed=1)
        b = VideoFolder(video_dir, frames=4, size=32, stride=2, random_crop=True, flip=True, seed=1)
    assert torch.equal(a[0]["video"], b[0]["video"])
    clips = set()
    for epoch in range(8):
        a.set_epoch(epoch)
        clips.add(a[0]["video"].sum().item())
    assert len(clips) > 1, "a new epoch draws other clips"


def test_video_folder_errors(tmp_path, video_dir):
    with pytest.raises(MagvitError, match="not found"):
        VideoFolder(tmp_path / "nope", frames=4, size=32)
    with pytest.raises(MagvitError, match="no video files"):
        VideoFolder(tmp_path, frames=4, size=32)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.mp4").write_bytes(b"")
    with pytest.warns(UserWarning), pytest.raises(MagvitError, match="none of the 1 video files is usable"):
        VideoFolder(bad, frames=4, size=32)


def test_video_folder_survives_a_file_damaged_after_the_scan(video_dir, tmp_path):
    root = tmp_path / "v"
    shutil.copytree(video_dir / "cats", root / "cats")
    with pytest.warns(UserWarning):
        ds = VideoFolder(root, frames=4, size=32)
    (root / "cats" / "good1.mp4").write_bytes(b"gone")
    with pytest.warns(UserWarning, match="skipping"), pytest.raises(MagvitError, match="no file could be read"):
        ds[0]


def test_image_folder(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 30), (i * 100, 50, 200)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "b" / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(UserWarning, match="skipped 1 of 5"):
        ds = ImageFolder(tmp_path, size=16)
    assert len(ds) == 4 and ds.classes == ["a", "b"]
    _check_clip(ds[3], 1, 16)
    assert ds[3]["label"] == 1


def test_resize_crop_keeps_a_constant_image_constant():
    frames = torch.full((2, 30, 50, 3), 255, dtype=torch.uint8)
    out = resize_crop(frames, 16, torch.Generator().manual_seed(0), flip=True)
    assert out.shape == (3, 2, 16, 16) and torch.allclose(out, torch.ones_like(out))


# ---------------------------------------------------------------------------------------------- loaders


def _batches(loader, epochs=2):
    out = []
    for epoch in range(epochs):
        set_epoch(loader, epoch)
        out += [(b["video"].clone(), b["label"].clone()) for b in loader]
    return out


def test_loader_same_seed_same_batches_any_worker_count():
    ds = MovingDigits(frames=4, size=16, num_samples=12, seed=0)
    a = _batches(build_dataloader(ds, batch_size=4, seed=7))
    b = _batches(build_dataloader(ds, batch_size=4, seed=7, num_workers=2))
    c = _batches(build_dataloader(ds, batch_size=4, seed=8))
    assert len(a) == 6
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(torch.equal(x[1], y[1]) for x, y in zip(a, c))
    assert not torch.equal(a[0][1], a[3][1]), "each epoch has its own order"
