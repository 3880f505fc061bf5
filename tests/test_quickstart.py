"""The quickstart: the shipped YAML equals the built-in recipe, and a reduced run writes every
output with finite scores that beat their baselines."""

import json
import math
from pathlib import Path

import pytest

from magvit.config import to_dict
from magvit.kinds import load_config
from magvit.quickstart import quickstart_config, run_quickstart

ROOT = Path(__file__).parents[1]


def test_the_recipe_is_the_shipped_yaml_wherever_it_is_installed(tmp_path, monkeypatch):
    import shutil

    from magvit import shipped

    assert to_dict(load_config(ROOT / "configs" / "quickstart.yaml")) == to_dict(quickstart_config())
    changed = quickstart_config("elsewhere", {"transformer.loop.steps": 5})
    assert changed.out == "elsewhere" and changed.transformer.loop.steps == 5
    # an installed package: no checkout, the packaged copy
    shutil.copytree(ROOT / "configs", tmp_path / "_shipped" / "configs")
    (tmp_path / "_shipped" / "configs" / "quickstart.yaml").write_text(
        (ROOT / "configs" / "quickstart.yaml").read_text().replace("out: runs/quickstart", "out: runs/packaged"))
    monkeypatch.setattr(shipped, "source_checkout", lambda: None)
    monkeypatch.setattr(shipped, "PACKAGED", tmp_path / "_shipped")
    assert quickstart_config().out == "runs/packaged"


def test_bad_override_is_one_line():
    from magvit.cli import main

    assert main(["quickstart", "--out", "/nonexistent/never", "transformer.loop.stepz=3"]) == 2


@pytest.fixture(scope="module")
def reduced_run(tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("quickstart")
    monkeypatch_module.setenv("MAGVIT_CACHE", str(out / "cache"))  # the digit classifier is trained here
    overrides = {
        # 60 tokenizer steps, 40 transformer steps of 8 clips (one thread): tokenizer 18.6 dB against the black
        # canvas's 13.7, masked CE 0.51 of the unigram entropy (loop seeds 1 and 2: 19.0 / 18.3 dB, 0.53 / 0.48;
        # 120 / 80 steps of 16 clips: 19.1 dB, 0.29), in 19 s instead of 47 s
        "tokenizer.loop.steps": 60, "tokenizer.loop.val_every": 60,
        "transformer.loop.steps": 40, "transformer.loop.batch_size": 8,
        "report.samples_per_class": 1, "report.eval_clips": 8, "report.decode.steps": 6,
        "report.score_decode.steps": 6, "report.classifier": {"clips": 300, "epochs": 1},
    }
    return out, run_quickstart(quickstart_config(str(out), overrides), quiet=True)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.mark.slow
def test_reduced_quickstart_writes_everything_and_beats_baselines(reduced_run):
    out, summary = reduced_run
    for name in ("samples_by_class.gif", "fp.gif", "fi.gif", "inpaint.gif", "summary.json", "config.yaml"):
        assert (out / name).is_file(), name
    assert (out / "transformer" / "model" / "magvit.json").is_file()
    assert json.loads((out / "summary.json").read_text())["tokenizer_psnr"] == summary["tokenizer_psnr"]
    for key in ("tokenizer_psnr", "class_accuracy", "fp_psnr", "fp_copy_last_psnr", "fi_psnr", "masked_token_ce"):
        assert math.isfinite(summary[key]), key
    # the baselines a few CPU minutes must beat: a black canvas (1 dB) for the tokenizer, the unigram
    # distribution of the tokens for the transformer
    assert summary["tokenizer_psnr"] > summary["black_canvas_psnr"] + 1
    assert summary["masked_token_ce"] < 0.8 * summary["unigram_entropy"]
    assert 0 <= summary["class_accuracy"] <= 1


@pytest.mark.slow
def test_real_video_recipe_scores_every_task_against_its_baseline(tmp_path):
    """configs/real_video.yaml, reduced: no classifier for real clips, so every conditional task is
    scored on the pixels it generates against its own padding (copy-last for fp, the linear blend for
    fi) and the tokenizer's ceiling, with the per-latent-frame diagnosis for the frame tasks."""
    import torch

    from magvit.evaluation.scores import Evaluator, frame_prediction_scores
    from magvit.pipeline import MagvitPipeline

    clips = {"frames": 9, "size": 16, "crop_from": 20, "hop": 8}  # 3x4x4 tokens: what is checked needs no more
    overrides = {
        **{f"tokenizer.data.{k}": v for k, v in clips.items()},
        **{f"tokenizer.val_data.{k}": v for k, v in clips.items() if k != "hop"},
        **{f"transformer.data.{k}": v for k, v in clips.items()},
        "tokenizer.loop.steps": 2, "tokenizer.loop.val_every": 2, "tokenizer.loop.save_every": 2,
        "tokenizer.loop.val_batches": 1,
        "transformer.loop.steps": 2, "transformer.loop.val_every": 2, "transformer.loop.save_every": 2,
        "report.eval_clips": 6, "report.shown_clips": 2, "report.decode.steps": 2, "report.score_decode.steps": 2,
    }
    cfg = load_config(ROOT / "configs" / "real_video.yaml", overrides={**overrides, "out": str(tmp_path)})
    summary = run_quickstart(cfg, quiet=True)
    for name in ("uncond.gif", "fp.gif", "fi.gif", "inpaint.gif", "outpaint.gif", "frames.png"):
        assert (tmp_path / name).is_file(), name
    assert "class_accuracy" not in summary and summary["eval_clips"] == 6
    for task, baseline in (("fp", "copy_last"), ("fi", "linear_blend"), ("ipc", "padding"), ("opc", "padding")):
        for key in (f"{task}_psnr", f"{task}_{baseline}_psnr", f"{task}_tokenizer_psnr", f"{task}_psnr_sampled"):
            assert math.isfinite(summary[key]), key

    # the fp baseline is copy-last-frame, computed here independently on the same held-out clips
    pipe = MagvitPipeline.from_pretrained(tmp_path / "transformer" / "model")
    ev = Evaluator(pipe, None, 6, 6, 0)
    assert ev.cond_frames == 1 and len(ev.real) == 6
    copy = frame_prediction_scores(ev.real, ev.real, 1)["copy_psnr"]
    assert summary["fp_copy_last_psnr"] == pytest.approx(copy, rel=1e-5)

    # per latent frame: the blocks tile the clip; a causal tokenizer's latent frame 0 sees frame 0 only, so
    # the given first frame's tokens are the truth's, and the predicted latent frame is not a condition
    rows = summary["fp_latent_frames"]
    assert [r["frames"] for r in rows] == ["0", "1-4", "5-8"]
    assert rows[0]["condition"] and rows[0]["baseline_token_accuracy"] == 1.0
    assert not any(r["condition"] for r in rows[1:]) and all(0 <= r["token_accuracy"] <= 1 for r in rows)
    assert torch.isfinite(torch.tensor([r["model_psnr"] for r in rows])).all()


def test_region_psnr_is_psnr_over_the_region():
    import torch

    from magvit.errors import MagvitError
    from magvit.metrics import psnr, region_psnr

    gen = torch.Generator().manual_seed(0)
    a, b = (torch.rand(2, 3, 4, 8, 8, generator=gen) * 2 - 1 for _ in range(2))
    everywhere = torch.ones(2, 1, 4, 8, 8, dtype=torch.bool)
    assert torch.allclose(region_psnr(a, b, everywhere), psnr(a, b))
    later = everywhere.clone()
    later[:, :, :2] = False  # the last two frames only
    assert torch.allclose(region_psnr(a, b, later), psnr(a[:, :, 2:], b[:, :, 2:]))
    b2 = b.clone()
    b2[:, :, :2] = a[:, :, :2]  # pixels outside the region do not count
    assert torch.allclose(region_psnr(a, b2, later), region_psnr(a, b, later))
    with pytest.raises(MagvitError, match="no pixel"):
        region_psnr(a, b, torch.zeros_like(everywhere))
