"""`magvit bench`: each command on tiny presets on CPU, its JSON / CSV / Markdown, and its helpers."""

import csv
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from magvit.bench.measure import PeakMemory, time_call
from magvit.bench.report import Column, Table, format_value, write_table
from magvit.cli import main
from magvit.errors import MagvitError
from magvit.evaluation.features import InceptionI3d, _load_into, lpips_per_clip
from magvit.tokenizers import build_tokenizer

FAST = ["--warmup", "0", "--repeats", "1"]


def _table(out, name):
    data = json.loads((out / f"{name}.json").read_text())
    assert set(data) >= {"rows", "columns", "notes", "environment"}
    assert {"command", "device", "torch", "date", "commit"} <= set(data["environment"])
    return data


# ---------------------------------------------------------------------------------------------
# bench tokenizers


class MeanFeatures(nn.Module):
    """A stand-in feature extractor: per-channel mean and std, (N, C, ...) -> (N, 2C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        return torch.cat([flat.mean(-1), flat.std(-1)], 1)


def test_temporal_agreement_counts_ids_and_bits_equal_to_the_previous_latent_frame():
    from magvit.bench.tokenizers import temporal_agreement

    # (1, 3, 1, 2), 3-bit codes. Frame 1 vs 0: 101 = 101, 011 vs 000 (2 bits differ);
    # frame 2 vs 1: 100 vs 101 (1 bit), 011 = 011
    ids = torch.tensor([[[[0b101, 0b000]], [[0b101, 0b011]], [[0b100, 0b011]]]])
    same_id, same_bit = temporal_agreement(ids, 8).tolist()
    assert same_id == 0.5 and same_bit == 1 - 3 / 12
    assert temporal_agreement(ids[:, :1], 8).tolist() == [0.0, 0.0]


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # TorchScript is how I3D files ship
def test_bench_tokenizers_rows_and_files(tmp_path, capsys):
    saved = build_tokenizer("vqgan2d", "tiny").save_pretrained(tmp_path / "mine")
    scripted = torch.jit.script(MeanFeatures())
    scripted.save(str(tmp_path / "features.pt"))
    out = tmp_path / "out"
    argv = ["bench", "tokenizers", "--tokenizers", str(saved), "vq3d:tiny", "--frames", "4", "--size", "16",
            "--num-clips", "3", "--batch-size", "2", "--i3d", str(tmp_path / "features.pt"),
            "--inception", str(tmp_path / "features.pt"), "--out", str(out), *FAST]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "vq3d:tiny" in printed and "PSNR" in printed
    data = _table(out, "tokenizers")
    rows = data["rows"]
    assert [r["tokenizer"] for r in rows] == [str(saved), "vq3d:tiny"]
    assert [r["weights"] for r in rows] == ["trained", "random"]
    assert [r["token_grid"] for r in rows] == ["4x4x4", "1x4x4"]
    for row in rows:
        tokens = row["tokens_per_clip"]
        assert row["bits_per_pixel"] == pytest.approx(tokens * math.log2(row["codebook_size"]) / (4 * 16 * 16))
        assert 0 < row["usage_pct"] <= 100 and 1 <= row["perplexity"] <= row["codebook_size"]
        assert row["perplexity"] <= 3 * tokens  # no more distinct codes than tokens seen
        assert -1 <= row["ssim"] <= 1 and math.isfinite(row["psnr"])
        assert row["fvd"] >= -1e-6 and row["fid"] >= -1e-6
        assert row["encode_clips_per_s"] > 0 and row["decode_clips_per_s"] > 0 and row["peak_mib"] >= 0
        assert row["same_bit_pct"] is None  # VQ tokenizers: an id's bits are not its code
        if row["token_grid"].startswith("1x"):  # one latent frame: nothing to compare with
            assert row["same_id_pct"] is None
        else:
            assert 0 <= row["same_id_pct"] <= 100
        assert row["lpips"] is None  # no AlexNet weights in the test machine's hub cache
    assert any("LPIPS n/a" in n for n in data["notes"]) and any("random" in n for n in data["notes"])
    with open(out / "tokenizers.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == 2 and table[1]["tokenizer"] == "vq3d:tiny"
    assert (out / "tokenizers.md").read_text().count("\n| ") >= 3  # header + 2 rows


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_bench_tokenizers_three_families_on_their_own_and_on_shared_frames(tmp_path):
    from magvit.bench.tokenizers import data_options, load_clips, temporal_agreement
    from magvit.metrics import psnr, ssim
    from magvit.tokenizers import Tokenizer

    folders = {name: build_tokenizer(name, "tiny").save_pretrained(tmp_path / name) for name in ("vqgan2d", "causal3d")}
    torch.jit.script(MeanFeatures()).save(str(tmp_path / "features.pt"))
    out = tmp_path / "out"
    argv = ["bench", "tokenizers", "--tokenizers", str(folders["vqgan2d"]), "vq3d:tiny", str(folders["causal3d"]),
            "--size", "16", "--num-clips", "3", "--batch-size", "2", "--i3d", str(tmp_path / "features.pt"),
            "--inception", str(tmp_path / "features.pt"), "--out", str(out), *FAST]  # no --frames: the default
    assert main(argv) == 0
    data = _table(out, "tokenizers")
    assert "17x16x16" in data["title"]  # 17 = the shortest clip from which each reconstructs >= 16 frames
    vqgan2d, vq3d, causal3d = data["rows"]
    assert [r["frames"] for r in data["rows"]] == ["0-16", "0-15", "0-16"]
    assert [r["token_grid"] for r in data["rows"]] == ["17x4x4", "4x4x4", "5x4x4"]
    assert vq3d["bits_per_pixel"] == pytest.approx(64 * 8 / (16 * 16 * 16))  # on its own 16 frames
    keys = [c["key"] for c in data["columns"]]
    assert {"psnr_shared", "ssim_shared", "lpips_shared", "fvd_shared", "fid_shared"} <= set(keys)
    assert any("(0-15)" in c["header"] for c in data["columns"]) and any("frames 0-15" in n for n in data["notes"])
    # vq3d's frames are the shared frames: both sets of metrics are the same numbers
    for key in ("psnr", "ssim", "fvd", "fid"):
        assert vq3d[f"{key}_shared"] == vq3d[key]
    # the shared columns score every row on the same pixels: frames 0-15 of the same clips
    clips = load_clips(data_options("moving_digits", 17, 16, 3), 3)  # (3, 3, 17, 16, 16)
    for row, name in ((vqgan2d, "vqgan2d"), (causal3d, "causal3d")):
        model = Tokenizer.from_pretrained(folders[name]).eval()
        with torch.no_grad():
            recon = model.decode(model.encode(clips)).clamp(-1, 1)  # (3, 3, 17, 16, 16)
        assert row["psnr"] == pytest.approx(psnr(recon, clips).mean().item(), rel=1e-4)
        assert row["psnr_shared"] == pytest.approx(psnr(recon[:, :, :16], clips[:, :, :16]).mean().item(), rel=1e-4)
        assert row["ssim_shared"] == pytest.approx(ssim(recon[:, :, :16], clips[:, :, :16]).mean().item(), abs=1e-5)
        assert row["psnr_shared"] != row["psnr"]  # frame 16 counts in one, not the other
    # the latent-frame agreement of the LFQ row is temporal_agreement over its clips' ids; bits only for LFQ
    with torch.no_grad():
        ids = Tokenizer.from_pretrained(folders["causal3d"]).eval().encode(clips)
    same_id, same_bit = temporal_agreement(ids, 2**10).tolist()
    assert causal3d["same_id_pct"] == pytest.approx(100 * same_id) and causal3d["same_bit_pct"] == pytest.approx(
        100 * same_bit)
    assert vqgan2d["same_bit_pct"] is None and vqgan2d["same_id_pct"] is not None and vq3d["same_bit_pct"] is None


def test_bench_tokenizers_shared_columns_only_when_frames_differ(tmp_path):
    out = tmp_path / "out"
    argv = ["bench", "tokenizers", "--tokenizers", "vqgan2d:tiny", "vq3d:tiny", "--frames", "9", "--size", "16",
            "--num-clips", "2", "--out", str(out), *FAST]  # vq3d takes 8 of the 9 frames, vqgan2d all 9
    assert main(argv) == 0
    rows = _table(out, "tokenizers")["rows"]
    assert [r["frames"] for r in rows] == ["0-8", "0-7"] and rows[0]["shared_frames"] == "0-7"
    argv[argv.index("9")] = "8"
    assert main([*argv, "--overwrite"]) == 0  # the same --out: its tables are replaced only with --overwrite
    data = _table(out, "tokenizers")
    assert [r["frames"] for r in data["rows"]] == ["0-7", "0-7"]
    assert not any(c["key"].endswith("_shared") for c in data["columns"])  # nothing to repeat
    assert all(r["psnr_shared"] == r["psnr"] for r in data["rows"])  # the JSON keeps them


def test_bench_tokenizers_names_the_tokenizer_and_the_fix(tmp_path, capsys):
    out = tmp_path / "deep" / "out"

    def error(*args):
        assert main(["bench", "tokenizers", "--tokenizers", *args, *FAST, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0
        assert not (tmp_path / "deep").exists(), "a failed run leaves no settings and no folder behind"
        return err

    err = error("vqgan2d:tiny", "vq3d:tiny", "--frames", "3", "--size", "16")  # no prefix of 3 frames is 4k
    assert "vq3d:tiny" in err and "--frames 4" in err and "vqgan2d:tiny" not in err
    err = error("vqgan2d:tiny", "causal3d:tiny", "--size", "18")
    assert "vqgan2d:tiny" in err and "--size 16" in err
    (tmp_path / "images").mkdir()
    Image.new("RGB", (16, 16)).save(tmp_path / "images" / "a.png")
    assert "videos, not images" in error("vq3d:tiny", "--data", str(tmp_path / "images"), "--size", "16")
    assert "at least 1" in error("vq3d:tiny", "--frames", "0")
    assert "name:preset" in error("nonsense")


def test_lpips_is_averaged_over_frames():
    fake = lambda a, b: (a - b).abs().mean((1, 2, 3), keepdim=True)  # (N, 1, 1, 1) like lpips
    x = torch.zeros(2, 3, 3, 4, 4)
    y = x.clone()
    y[1, :, 0] = 1  # one frame of three differs by 1 in clip 1
    assert torch.allclose(lpips_per_clip(fake, x, y), torch.tensor([0.0, 1 / 3]))


def test_i3d_state_dict_layout_round_trips(tmp_path):
    model = InceptionI3d(num_classes=7)
    weights = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    loaded = _load_into(InceptionI3d(num_classes=7), weights, tmp_path / "i3d.safetensors")
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x), atol=1e-5)
        assert loaded(x).shape == (1, 7)
    with pytest.raises(MagvitError, match="mismatching key"):
        _load_into(InceptionI3d(), {"bogus": torch.zeros(1)}, tmp_path / "x.safetensors")


# ---------------------------------------------------------------------------------------------
# shared helpers: timing, memory, tables


def test_peak_memory_sees_a_large_allocation_on_cpu():
    with PeakMemory(torch.device("cpu")) as memory:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB
        block += 1
    assert memory.bytes >= 48 * 2**20 and "CPU" in memory.kind


def test_time_call_runs_warmup_then_repeats():
    calls = []
    assert time_call(lambda: calls.append(1), torch.device("cpu"), warmup=2, repeats=3) >= 0
    assert len(calls) == 5
    with pytest.raises(MagvitError):
        time_call(lambda: None, torch.device("cpu"), repeats=0)


def test_table_files_are_well_formed(tmp_path, capsys):
    table = Table("demo", "Demo", [Column("method", "method"), Column("ms", "ms"), Column("x", "x")])
    table.rows = [{"method": "a|b", "ms": 1234.5678, "x": float("nan")}, {"method": "c", "ms": None, "x": 3}]
    table.note("a note")
    write_table(table, tmp_path)
    data = json.loads((tmp_path / "demo.json").read_text())  # strict JSON: NaN became null
    assert data["rows"][0]["x"] is None and data["rows"][1]["ms"] is None
    assert "a\\|b" in (tmp_path / "demo.md").read_text()
    assert "n/a" in capsys.readouterr().out
    assert format_value(0.000123) == "0.000123" and format_value(12.3456, 4) == "12.35"
    assert format_value(None) == "n/a" and format_value(np.float64(2.0).item()) == "2.00"


# ---------------------------------------------------------------------------------------------
# bench decode


def test_bench_decode_one_row_per_method(tmp_path):
    out = tmp_path / "out"
    # --fast-paths with no path: the eager rows only (the compiled rows: tests/test_decode_fast.py)
    argv = ["bench", "decode", "--preset", "tiny", "--grid", "1,4,4", "--steps", "4", "--batch", "1", "3",
            "--codebook-size", "256", "--fast-paths", "--out", str(out), *FAST]
    assert main(argv) == 0
    rows = _table(out, "decode")["rows"]
    assert [(r["method"], r["path"]) for r in rows] == [("maskgit", "eager"), ("autoregressive (KV cache)", "eager")]
    masked, ar = rows
    assert masked["forwards"] == 4 and ar["forwards"] == 16  # steps vs one forward per token
    assert masked["batch_latency"] == 1 and masked["batch_throughput"] == 3
    assert ar["speedup_latency"] == 1.0 and ar["speedup_throughput"] == 1.0
    for row in rows:
        assert row["latency_ms"] > 0 and row["throughput"] > 0 and row["gflop_per_sample"] > 0
        # achieved TFLOP/s is FLOPs / time: both columns are consistent with the GFLOP count
        assert row["latency_tflops"] == pytest.approx(row["gflop_per_sample"] / row["seconds_first"] / 1e3)
        assert row["throughput_tflops"] == pytest.approx(3 * row["gflop_per_sample"] / row["seconds_last"] / 1e3)
    assert masked["speedup_latency"] == pytest.approx(ar["latency_ms"] / masked["latency_ms"])


def test_bench_decode_runs_from_the_settings_it_wrote(tmp_path):
    """Flags and YAML are one config (kind: bench_decode): the settings written next to the table
    re-make it, and a key=value override or a flag still wins over the file."""
    first = tmp_path / "first"
    argv = ["bench", "decode", "--grid", "1,4,4", "--steps", "2", "--batch", "1", "2", "--codebook-size", "64",
            "--fast-paths", "--out", str(first), *FAST]
    assert main(argv) == 0
    settings = first / "decode.settings.yaml"
    saved = yaml.safe_load(settings.read_text())
    assert saved["kind"] == "bench_decode" and saved["grid"] == [1, 4, 4] and saved["fast_paths"] == []
    again = tmp_path / "again"
    assert main(["bench", "decode", str(settings), "--out", str(again), "steps=3"]) == 0
    redone = yaml.safe_load((again / "decode.settings.yaml").read_text())
    assert redone == {**saved, "out": str(again), "steps": 3}
    assert _table(again, "decode")["rows"][0]["forwards"] == 3
    assert main(["bench", "decode", str(settings), "--out", str(again)]) == 2  # its tables exist: --overwrite


def test_bench_never_writes_over_the_settings_it_reads(tmp_path, capsys):
    """`magvit bench decode first/decode.settings.yaml --overwrite` would re-make the tables into the folder
    the settings name, over the YAML being read: refused in one line, every file kept byte for byte."""
    first = tmp_path / "first"
    argv = ["bench", "decode", "--grid", "1,4,4", "--steps", "2", "--batch", "1", "--codebook-size", "64",
            "--fast-paths", "--out", str(first), *FAST]
    assert main(argv) == 0
    kept = {p: p.read_bytes() for p in first.iterdir()}
    capsys.readouterr()
    assert main(["bench", "decode", str(first / "decode.settings.yaml"), "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "decode.settings.yaml is also an input" in err, err
    assert {p: p.read_bytes() for p in first.iterdir()} == kept
    assert main(["bench", "decode", str(first / "decode.settings.yaml"), "--out", str(tmp_path / "b")]) == 0


def test_bench_decode_rejects_a_bad_grid(capsys):
    assert main(["bench", "decode", "--grid", "4,16"]) == 2
    assert "T,H,W" in capsys.readouterr().err
    assert main(["bench", "decode", "--grid", "1,4,4", "--batch", "1", "2", "3"]) == 2


# ---------------------------------------------------------------------------------------------
# bench quality


def test_frame_prediction_scores_and_copy_baseline():
    from magvit.evaluation.scores import copy_last_frame, frame_prediction_scores

    video = torch.rand(2, 3, 5, 8, 8) * 2 - 1
    copy = copy_last_frame(video, 2)
    assert torch.equal(copy[:, :, :2], video[:, :, :2]) and torch.equal(copy[:, :, 4], video[:, :, 1])
    scores = frame_prediction_scores(video, video, 2)
    assert scores["psnr"] == pytest.approx(100.0) and scores["ssim"] == pytest.approx(1.0, abs=1e-5)
    static = video[:, :, :1].expand(-1, -1, 5, -1, -1)  # a still clip: copying the last frame is perfect
    assert frame_prediction_scores(torch.zeros_like(static), static, 1)["copy_psnr"] == pytest.approx(100.0)
    with pytest.raises(MagvitError, match="cond_frames"):
        frame_prediction_scores(video, video, 5)


def test_digit_classifier_is_cached_and_reloaded(tmp_path, monkeypatch):
    from magvit.evaluation import digits

    recipe = digits.Recipe(clips=30, frames=2, sizes=(16, 32), epochs=1, batch_size=30, test_clips=10)
    model, info = digits.train_classifier(recipe, quiet=True)
    assert 0 <= info["test_clip_accuracy"] <= 1
    folder = digits.save_classifier(model, tmp_path / digits.cache_name(recipe), recipe, info)
    monkeypatch.setattr(digits, "train_classifier", lambda *a, **k: pytest.fail("retrained despite the cache"))
    loaded, meta = digits.digit_classifier(tmp_path, recipe)
    assert meta["recipe"]["clips"] == 30 and folder.name != digits.cache_name(digits.Recipe())
    clips = torch.rand(3, 3, 2, 32, 32) * 2 - 1  # any clip size: frames are resized to 16x16
    logits, feats = loaded.clips(clips)
    assert logits.shape == (3, 10) and feats.shape == (3, 64)
    assert torch.allclose(logits, model.eval().clips(clips)[0], atol=1e-5)


def test_the_default_digit_classifier_is_the_shipped_one(tmp_path, monkeypatch):
    from magvit import shipped
    from magvit.evaluation import digits

    monkeypatch.setattr(digits, "train_classifier", lambda *a, **k: pytest.fail("trained despite the shipped weights"))
    monkeypatch.setenv("MAGVIT_CACHE", str(tmp_path / "empty-cache"))
    model, meta = digits.digit_classifier()
    folder = shipped.find("checkpoints", digits.SHIPPED)
    assert folder is not None and meta == json.loads((folder / "config.json").read_text())
    assert digits.SHIPPED not in shipped.names("checkpoints")  # a judge, not a model the sampling commands offer
    assert meta["recipe"] == json.loads(json.dumps(dataclasses.asdict(digits.Recipe())))  # not a stale recipe
    assert meta["test_clip_accuracy"] >= 0.95  # a judge that misreads real clips caps every class accuracy
    assert not (tmp_path / "empty-cache").exists()
    # it reads real held-out clips of the quickstart's kind
    videos, labels = digits.moving_digit_clips("test", 40, 9, 32, seed=3, speed=(0.75, 1.5), start="center")
    assert (model.clips(videos)[0].argmax(1) == labels).float().mean() >= 0.9
    # a folder trained with another recipe is refused by name, not used
    other = digits.Recipe(epochs=1)
    digits.save_classifier(digits.DigitClassifier().eval(), tmp_path / "c" / digits.cache_name(other), digits.Recipe(),
                           {"test_clip_accuracy": 0.1})
    with pytest.raises(MagvitError, match="another recipe"):
        digits.digit_classifier(tmp_path / "c", other)


def _tiny_release(folder):
    from magvit.release import ModelInfo, write_model_folder
    from magvit.transformer import build_transformer

    tokenizer = build_tokenizer("vq3d", "tiny")
    model = build_transformer("tiny", codebook_size=tokenizer.codebook_size, num_classes=10, grid=(2, 8, 8))
    info = ModelInfo(tasks=("cg", "fp"), num_classes=10, class_names=tuple(str(i) for i in range(10)),
                     grid=(2, 8, 8), frames=8, size=(32, 32), fps=8.0, trained_steps=0, weights="raw")
    return write_model_folder(folder, model, tokenizer, info)


def test_bench_quality_on_an_untrained_checkpoint(tmp_path):
    from magvit.evaluation import digits

    release = _tiny_release(tmp_path / "model")
    # an untrained classifier in the cache: this test checks structure, not digits
    digits.save_classifier(digits.DigitClassifier().eval(), tmp_path / "cache" / digits.cache_name(digits.Recipe()),
                           digits.Recipe(), {"test_clip_accuracy": 0.1})
    out = tmp_path / "out"
    argv = ["bench", "quality", "--checkpoint", str(release), "--cache-dir", str(tmp_path / "cache"), "--num", "4",
            "--batch-size", "4", "--steps", "2", "--sweep-schedules", "cosine", "sqrt", "--sweep-steps", "1",
            "--temperature", "0.7", "--guidance", "1.5", "--out", str(out)]  # guidance: cg only, not fp
    assert main(argv) == 0
    rows = {r["method"]: r for r in _table(out, "quality")["rows"]}
    assert set(rows) == {"model (cosine, 2 steps)", "real test clips", "copy last frame",
                         "tokenizer round trip (ceiling)"}
    model = rows["model (cosine, 2 steps)"]
    assert 0 <= model["class_accuracy"] <= 100 and model["frechet"] >= -1e-6
    assert math.isfinite(model["fp_psnr"]) and -1 <= model["fp_ssim"] <= 1
    assert rows["copy last frame"]["class_accuracy"] is None and math.isfinite(rows["copy last frame"]["fp_psnr"])
    # frame prediction located per latent frame: the blocks tile the clip, the copy-last row's figures
    located = _table(out, "quality_fp_latent_frames")["rows"]
    assert located and located[0]["frames"].startswith("0") and located[0]["condition"]
    assert all(0 <= r["token_accuracy"] <= 1 and 0 <= r["baseline_token_accuracy"] <= 1 for r in located)
    sweep = _table(out, "quality_sweep")["rows"]
    assert [(r["schedule"], r["steps"]) for r in sweep] == [("cosine", 1), ("sqrt", 1)]
    assert all(math.isfinite(r["fp_psnr"]) and r["frechet"] >= -1e-6 for r in sweep)


def test_quality_bench_scores_on_clips_drawn_like_the_training_data():
    from magvit.evaluation.scores import digits_options, real_clips

    meta = {"data": {"name": "moving_digits", "frames": 9, "size": 32, "speed": [1.0, 2.0], "start": "center"}}
    options = digits_options(meta)
    assert options == {"speed": [1.0, 2.0], "start": "center"}
    centred, _ = real_clips(9, 32, 3, 0, **options)
    anywhere, _ = real_clips(9, 32, 3, 0)
    assert not torch.equal(centred, anywhere)
    assert digits_options({}) == {} and digits_options({"data": {"name": "video_folder", "root": "x"}}) == {}
