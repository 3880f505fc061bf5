"""Streaming shards: written from a dataset or a token cache, read back as the source; two gloo
processes read disjoint shards that cover every sample once per epoch; the batches do not depend on the
number of workers; a resume continues the epoch without reading the skipped samples; damage is skipped."""

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file

from magvit.cli.data import shard_command
from magvit.data import DataConfig, ShardStream, build_dataloader, build_dataset, set_epoch
from magvit.data.moving_digits import MovingDigitsConfig
from magvit.data.shards import write_shards
from magvit.errors import MagvitError
from magvit.media import to_uint8
from magvit.training.common import infinite_batches

ROOT = Path(__file__).parents[1]
DIGITS = MovingDigitsConfig(frames=4, size=16, num_samples=24)


def _digest(video: torch.Tensor) -> str:
    return hashlib.sha1(to_uint8(video).tobytes()).hexdigest()


def _digests(batches) -> list[str]:
    return [_digest(v) for batch in batches for v in batch["video"]]


@pytest.fixture(scope="module")
def frames_shards(tmp_path_factory) -> Path:
    """24 clips of 4 frames at 16x16 in 4 shards of 6, as exact uint8 frames."""
    out = tmp_path_factory.mktemp("shards") / "digits"
    return write_shards(DataConfig(dataset=DIGITS), out, samples_per_shard=6, encode="frames")


def test_frames_shards_hold_the_source_exactly_in_webdataset_layout(tmp_path):
    config = tmp_path / "digits.yaml"
    config.write_text(yaml.safe_dump({"kind": "data", "dataset": {"name": "moving_digits", "frames": 4, "size": 16}}))
    out = shard_command(str(config), str(tmp_path / "out"), 6, "frames", False, ["dataset.num_samples=10"])
    index = json.loads((out / "index.json").read_text())
    assert index["total"] == 10 and [s["count"] for s in index["shards"]] == [6, 4] and index["clip"] == [4, 16, 16]
    assert index["source"]["num_samples"] == 10 and index["num_classes"] == 10
    with tarfile.open(out / "shard-000001.tar") as tar:
        assert tar.getnames()[:3] == ["000000006.npy", "000000006.cls", "000000006.json"]
        meta = json.loads(tar.extractfile("000000006.json").read())
    assert meta == {"index": 6, "source": "MovingDigits[6]", "frames": 4, "size": [16, 16]}
    source, shards = build_dataset(dataclasses.replace(DIGITS, num_samples=10)), ShardStream(out)
    for i in range(10):
        assert (to_uint8(shards[i]["video"]) == to_uint8(source[i]["video"])).all()
        assert shards[i]["label"] == source[i]["label"]
    unshuffled = build_dataloader(shards, 4, shuffle=False, drop_last=False)  # the written order, the last batch short
    assert _digests(unshuffled) == [_digest(source[i]["video"]) for i in range(10)]
    resized = ShardStream(out, frames=2, size=8)[3]["video"]
    assert resized.shape == (3, 2, 8, 8) and resized.min() >= -1 and resized.max() <= 1


def test_mp4_shards_are_within_codec_tolerance(tmp_path):
    pytest.importorskip("av")
    digits = dataclasses.replace(DIGITS, num_samples=4, size=32, frames=8)
    out = write_shards(digits, tmp_path / "mp4", samples_per_shard=3)
    source, shards = build_dataset(digits), ShardStream(out)
    with tarfile.open(out / "shard-000000.tar") as tar:
        assert tar.getnames()[0] == "000000000.mp4"
    for i in range(4):
        error = np.abs(to_uint8(shards[i]["video"]).astype(int) - to_uint8(source[i]["video"]).astype(int))
        assert error.mean() < 0.5 and error.max() <= 8, (error.mean(), error.max())
        assert shards[i]["label"] == source[i]["label"]


def _token_cache(folder: Path) -> Path:
    """A tiny token cache as extract-tokens writes it: 5 samples in two files, labels with a -1."""
    from magvit.training.token_cache import TokenIndex

    folder.mkdir()
    gen = torch.Generator().manual_seed(0)
    for j, n in enumerate((3, 2)):
        save_file({"tokens": torch.randint(0, 16, (n, 1, 2, 2), generator=gen, dtype=torch.int32),
                   "label": torch.tensor([3, -1, 7][:n], dtype=torch.int64),
                   "cond.cg": torch.randint(0, 16, (n, 1, 2, 2), generator=gen, dtype=torch.int32),
                   "mask.cg": torch.randint(0, 2, (n, 1, 2, 2), generator=gen, dtype=torch.uint8)},
                  str(folder / f"train-0000{j}.safetensors"))
    index = TokenIndex(grid=(1, 2, 2), clip=(1, 8, 8), codebook_size=16, num_classes=10,
                       tasks={"cg": {"use_class": True, "refine": True}},
                       splits={"train": {"count": 5, "shards": ["train-00000.safetensors", "train-00001.safetensors"]}})
    (folder / "index.json").write_text(json.dumps(index.to_json()))
    return folder


def test_a_token_cache_streams_as_it_reads(tmp_path, capsys):
    from magvit.training.token_cache import TokenCache

    cache = _token_cache(tmp_path / "tokens")
    with pytest.raises(MagvitError, match="only the override split"):
        shard_command(str(cache), str(tmp_path / "out"), 2, "mp4", False, ["dataset.size=3"])
    out = shard_command(str(cache), str(tmp_path / "out"), 2, "mp4", False, [])
    assert capsys.readouterr().out.strip() == f"wrote {out}: 5 samples in 3 shards (tokens)"
    index = json.loads((out / "index.json").read_text())
    assert index["kind"] == "tokens" and index["grid"] == [1, 2, 2] and index["source"]["split"] == "train"
    expected, shards = TokenCache(cache, "train"), ShardStream(out)
    for i in range(5):
        a, b = shards[i], expected[i]
        assert a.keys() == b.keys() and a["label"] == b["label"]
        assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a if k != "label")
    batch = next(iter(build_dataloader(shards, 5, shuffle=False, drop_last=False)))
    assert batch["tokens"].shape == (5, 1, 2, 2) and batch["mask.cg"].dtype == torch.bool


def test_each_epoch_is_every_sample_once_in_its_own_order_whatever_the_workers(frames_shards):
    shards = ShardStream(frames_shards, shuffle_buffer=5)
    everything = sorted(_digest(shards[i]["video"]) for i in range(24))
    loader = build_dataloader(shards, 4, seed=3)
    epochs = []
    for epoch in (0, 1, 0):
        set_epoch(loader, epoch)
        epochs.append(_digests(loader))
    assert sorted(epochs[0]) == sorted(epochs[1]) == everything
    assert epochs[0] != epochs[1] and epochs[0] == epochs[2]  # a new order per epoch, the same one again
    assert _digests(build_dataloader(shards, 4, seed=4)) != epochs[0]  # the loader seed counts too
    two_workers = build_dataloader(shards, 4, seed=3, num_workers=2)
    assert _digests(two_workers) == epochs[0]  # batch j from worker j mod 2: the same batches


def test_resume_continues_the_epoch_without_reading_the_skipped_samples(frames_shards, monkeypatch):
    shards = ShardStream(frames_shards, shuffle_buffer=5)
    full = infinite_batches(build_dataloader(shards, 3, seed=1), 0, 0)
    uninterrupted = [next(full) for _ in range(8 + 8 + 3)]  # all of epoch 0 (8 batches of 3) and some of 1
    decoded, decode = [], ShardStream.decode
    monkeypatch.setattr(ShardStream, "decode", lambda self, members: decoded.append(1) or decode(self, members))
    resumed = infinite_batches(build_dataloader(ShardStream(frames_shards, shuffle_buffer=5), 3, seed=1), 0, 5)
    rest = [next(resumed) for _ in range(3 + 8 + 3)]
    assert [(e, i) for e, i, _ in rest] == [(e, i) for e, i, _ in uninterrupted[5:]]
    assert all(torch.equal(a[2]["video"], b[2]["video"]) for a, b in zip(rest, uninterrupted[5:]))
    assert len(decoded) == (3 + 8 + 3) * 3  # the 5 batches skipped were never decoded




@pytest.mark.parametrize("data", ["map", "shards"])
def test_a_prepared_loader_resumes_in_a_later_epoch_exactly(frames_shards, data):
    """accelerate's loader sets its own pass count (0 after a restart) as the epoch on each pass: the
    epoch the checkpoint names must win, for the map-style loader and the stream alike."""
    from accelerate import Accelerator

    from magvit.data import MovingDigits
    from magvit.training.common import prepare_loader

    accelerator = Accelerator(cpu=True)
    dataset = MovingDigits(frames=2, size=16, num_samples=12) if data == "map" else ShardStream(frames_shards)

    def batches(epoch: int, skip: int):
        return infinite_batches(prepare_loader(accelerator, build_dataloader(dataset, 4)), epoch, skip)

    full = batches(0, 0)
    uninterrupted = [next(full) for _ in range(len(dataset) // 4 * 3)]
    epoch_two = [(e, i, b) for e, i, b in uninterrupted if e == 2]
    for skip in (0, 1):
        resumed = batches(2, skip)
        rest = [next(resumed) for _ in epoch_two[skip:]]
        assert [(e, i) for e, i, _ in rest] == [(e, i) for e, i, _ in epoch_two[skip:]]
        assert all(torch.equal(a[2]["video"], b[2]["video"]) for a, b in zip(rest, epoch_two[skip:]))

def test_processes_read_their_own_shards_and_the_same_number_of_samples(frames_shards, tmp_path):
    parts = [ShardStream(frames_shards, rank=r, world_size=2) for r in range(2)]
    assert [p["name"] for p in parts[0].mine] == ["shard-000000.tar", "shard-000002.tar"] and len(parts[1]) == 12
    seen = [_digests(build_dataloader(p, 4)) for p in parts]
    assert not set(seen[0]) & set(seen[1]) and len(set(seen[0] + seen[1])) == 24
    uneven = tmp_path / "uneven"  # 5 shards on 2 processes: the one with 3 leaves out 1 shard's worth per epoch
    write_shards(dataclasses.replace(DIGITS, num_samples=10), uneven, samples_per_shard=2, encode="frames")
    with pytest.warns(UserWarning, match="2 processes read 4 samples each per epoch, leaving out 2 of 10"):
        parts = [ShardStream(uneven, rank=r, world_size=2) for r in range(2)]
    seen = [_digests(build_dataloader(p, 2)) for p in parts]
    assert [len(s) for s in seen] == [4, 4] and not set(seen[0]) & set(seen[1])
    with pytest.raises(MagvitError, match="4 shards for 5 processes"):
        ShardStream(frames_shards, rank=0, world_size=5)


CHILD = """
import hashlib, json, sys
import torch.distributed as dist
from magvit.data import ShardsConfig, build_dataloader, build_dataset, set_epoch
from magvit.media import to_uint8

dist.init_process_group("gloo")
loader = build_dataloader(build_dataset(ShardsConfig(root=sys.argv[1], shuffle_buffer=4)), 2, seed=0)
epochs = []
for epoch in (0, 1):
    set_epoch(loader, epoch)
    epochs.append([hashlib.sha1(to_uint8(v).tobytes()).hexdigest() for b in loader for v in b["video"]])
json.dump({"rank": dist.get_rank(), "epochs": epochs}, open(sys.argv[2] + f"-{dist.get_rank()}.json", "w"))
dist.destroy_process_group()
"""


def _run_two_processes(command: list[str]) -> None:
    """`command` as rank 0 and 1 of a gloo group (the environment `accelerate launch` gives each process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(2)]
    logs = [run.communicate(timeout=180)[0] for run in runs]
    if any("gloo" in log.lower() and "not available" in log.lower() for log in logs):
        pytest.skip("torch.distributed has no gloo backend on this machine")
    assert [run.returncode for run in runs] == [0, 0], logs


def test_two_gloo_processes_see_every_sample_exactly_once_per_epoch(frames_shards, tmp_path):
    (tmp_path / "child.py").write_text(CHILD)
    _run_two_processes([sys.executable, str(tmp_path / "child.py"), str(frames_shards), str(tmp_path / "seen")])
    seen = [json.loads((tmp_path / f"seen-{r}.json").read_text())["epochs"] for r in range(2)]
    everything = sorted(_digest(ShardStream(frames_shards, rank=0, world_size=1)[i]["video"]) for i in range(24))
    for epoch in (0, 1):
        first, second = seen[0][epoch], seen[1][epoch]
        assert len(first) == len(second) == 12 and not set(first) & set(second)
        assert sorted(first + second) == everything
    assert seen[0][0] != seen[0][1]


def test_an_existing_folder_is_replaced_only_with_overwrite_and_never_another(frames_shards, tmp_path):
    out = tmp_path / "out"
    small = dataclasses.replace(DIGITS, num_samples=3)
    write_shards(small, out, samples_per_shard=2, encode="frames")
    with pytest.raises(MagvitError, match="exists: pass --overwrite"):
        write_shards(small, out, samples_per_shard=3, encode="frames")
    assert len(json.loads((out / "index.json").read_text())["shards"]) == 2  # refused before any work
    write_shards(small, out, samples_per_shard=3, encode="frames", overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "shard-000000.tar"]
    assert not out.with_name("out.tmp").exists() and not out.with_name("out.old").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(MagvitError, match="not a shard folder"):
        write_shards(small, tmp_path / "mine", encode="frames", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    with pytest.raises(MagvitError, match="encode must be one of"):
        write_shards(small, tmp_path / "x", encode="gif")


def test_a_corrupt_shard_is_counted_skipped_and_its_samples_replaced(frames_shards, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(frames_shards, damaged)
    (damaged / "shard-000001.tar").write_bytes(b"not a tar file" * 100)
    lost = {_digest(ShardStream(frames_shards)[i]["video"]) for i in range(6, 12)}
    with pytest.warns(UserWarning, match=r"skipping 6 samples of shard-000001.tar \(ReadError.*1 corrupt shard"):
        seen = _digests(build_dataloader(ShardStream(damaged, shuffle_buffer=5), 4, seed=0))
    assert len(seen) == 24 and not set(seen) & lost and len(set(seen)) == 18  # 6 repeats stand in for the lost


def test_trainers_read_shards_and_resume_exactly(tmp_path):
    from magvit.kinds import load_config
    from magvit.training.tokenizer import train_tokenizer

    images = MovingDigitsConfig(image=True, size=16, num_samples=12)
    root = write_shards(images, tmp_path / "images", samples_per_shard=4, encode="frames")
    config = ROOT / "configs" / "tokenizer" / "vqgan2d_tiny_digits.yaml"
    common = [f"data={{name: shards, root: {root}, shuffle_buffer: 3}}", "loop.steps=10", "loop.num_workers=0",
              "loop.batch_size=2", "loop.save_every=8", "loop.val_every=10", "loop.val_batches=1", "loop.log_every=1"]
    full = tmp_path / "a"
    train_tokenizer(load_config(config, [f"run_dir={full}", *common]), quiet=True)
    shutil.copytree(full, tmp_path / "b")  # killed after the step-8 checkpoint, in the middle of epoch 1
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step-00000010")
    state = json.loads((tmp_path / "b" / "checkpoints" / "step-00000008" / "state.json").read_text())
    assert (state["epoch"], state["next_batch"]) == (1, 2)
    train_tokenizer(load_config(config, [f"run_dir={tmp_path / 'b'}", *common]), resume=True, quiet=True)
    rows = [(tmp_path / run / "train.csv").read_text().splitlines() for run in ("a", "b")]
    strip = lambda lines: [",".join(line.split(",")[:-1]) for line in lines]  # all but clips_per_s
    assert len(rows[0]) == 11 and strip(rows[0]) == strip(rows[1])


def test_two_training_processes_each_read_their_own_shards(tmp_path):
    """DDP over gloo (the environment `accelerate launch` gives): 16 images in 4 shards, batches of 2, so
    4 batches per process per epoch; accelerate must not split the stream again (2) nor leave it whole (8)."""
    root = write_shards(MovingDigitsConfig(image=True, size=16, num_samples=16), tmp_path / "images",
                        samples_per_shard=4, encode="frames")
    config = ROOT / "configs" / "tokenizer" / "vqgan2d_tiny_digits.yaml"
    _run_two_processes([sys.executable, "-m", "magvit", "train-tokenizer", str(config), f"run_dir={tmp_path / 'run'}",
                        f"data={{name: shards, root: {root}}}", "loop.steps=6", "loop.batch_size=2", "loop.val_every=6",
                        "loop.save_every=6", "loop.val_batches=1", "loop.log_every=1"])
    rows = (tmp_path / "run" / "train.csv").read_text().splitlines()[1:]
    assert [row.split(",")[1] for row in rows] == ["0", "0", "0", "0", "1", "1"]


def test_data_shard_command_writes_shards_that_preview_reads(tmp_path, capsys):
    """`magvit data shard` (the CLI over shard_command) then `magvit data preview` of the shards."""
    from magvit.cli import main

    config = tmp_path / "digits.yaml"
    config.write_text("kind: data\ndataset: {name: moving_digits, frames: 4, size: 16, num_samples: 6}\n")
    out = tmp_path / "shards"
    assert main(["data", "shard", str(config), "--out", str(out), "--samples-per-shard", "4", "--encode",
                 "frames"]) == 0
    assert "6 samples in 2 shards" in capsys.readouterr().out
    assert main(["data", "shard", str(config), "--out", str(out)]) == 2  # it exists: --overwrite
    assert "exists" in capsys.readouterr().err
    gif = tmp_path / "check.gif"
    assert main(["data", "preview", "shards", "--out", str(gif), "--num", "4", f"dataset.root={out}"]) == 0
    assert gif.stat().st_size > 0
