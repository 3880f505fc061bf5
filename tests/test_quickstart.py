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
        "tokenizer.loop.steps": 250, "tokenizer.loop.val_every": 250, "transformer.loop.steps": 150,
        "report.samples_per_class": 1, "report.eval_clips": 8, "report.decode.steps": 6,
        "report.classifier": {"clips": 300, "epochs": 1},
    }
    return out, run_quickstart(quickstart_config(str(out), overrides), quiet=True)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


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
