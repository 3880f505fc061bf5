"""`magvit reproduce`: every shipped study loads for every budget, the test budgets run end to end
(report, plot, arms that differ), a finished run is reused and a changed recipe is not, and the
intervals and verdicts are right."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from magvit.cli import main
from magvit.reproduce import list_studies, load_study
from magvit.reproduce.stats import (
    bootstrap_interval,
    paired_difference,
    paired_verdict,
    t_interval,
    verdict,
    wilson_interval,
)
from magvit.reproduce.study import BUDGETS, arm_recipe, arms_of

ROOT = Path(__file__).parents[1]


def test_every_shipped_study_loads_for_every_budget(capsys):
    names = list_studies()
    assert {"schedules", "inflation"} <= set(names)
    for name in names:
        study, _ = load_study(name)  # validates every arm's recipe under every budget
        for budget in BUDGETS:
            recipes = [arm_recipe(study, arm, budget) for arm in arms_of(study, budget)]
            assert len({json.dumps(repr(r)) for r in recipes}) == len(recipes), f"{name}/{budget}: arms repeat"
    assert main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in names)


def test_intervals_and_verdicts():
    values = [1.0, 2.0, 4.0]
    mean, low, high = t_interval(values)
    half = stats.t.ppf(0.975, 2) * np.std(values, ddof=1) / math.sqrt(3)
    assert mean == pytest.approx(7 / 3) and low == pytest.approx(mean - half) and high == pytest.approx(mean + half)
    assert bootstrap_interval([0.5] * 50)[1:] == (0.5, 0.5)
    share, low, high = wilson_interval(200, 200)  # all right: the interval keeps a width
    assert share == 1.0 and high == 1.0 and low == pytest.approx(0.9812, abs=1e-3)
    assert wilson_interval(10, 20)[1:] == pytest.approx((0.2993, 0.7007), abs=1e-3)
    m, lo, hi = bootstrap_interval(np.r_[np.zeros(500), np.ones(500)])
    assert m == 0.5 and 0.45 < lo < 0.5 < hi < 0.55
    a, b = {"mean": 2, "low": 1.5, "high": 2.5}, {"mean": 1, "low": 0.5, "high": 1.4}
    assert verdict(a, b, True) == "holds" and verdict(b, a, True) == "contradicted"
    assert verdict(a, b, False) == "contradicted" and verdict(b, a, False) == "holds"
    assert verdict(a, {"mean": 1.8, "low": 1.0, "high": 2.0}, True) == "not resolved"
    # paired by seed: a consistent gain resolves although the arms' own intervals overlap
    better = [{"m": v} for v in (90.0, 82.5, 95.0)]
    worse = [{"m": v} for v in (78.0, 72.5, 84.0)]
    diff = paired_difference(better, worse, "m")
    assert diff["mean"] == pytest.approx(11.0) and diff["low"] > 0
    assert t_interval([90.0, 82.5, 95.0])[1] < t_interval([78.0, 72.5, 84.0])[2]  # unpaired: they overlap
    assert paired_verdict(diff, True) == "holds" and paired_verdict(diff, False) == "contradicted"
    assert paired_difference(better, worse[:2], "m") is None and paired_difference([{"m": [1.0]}] * 2,
                                                                                 [{"m": [0.0]}] * 2, "m") is None


def test_inflation_runs_resumes_and_reports(tmp_path, capsys):
    out = tmp_path / "inflation"
    assert main(["reproduce", "inflation", "--budget", "test", "--out", str(out)]) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert set(report["arms"]) == {"central", "average", "scratch"} and report["seeds"] == [0, 1]
    assert {json.dumps(a["set"]) for a in report["arms"].values()} == {
        '{"init": "central"}', '{"init": "average"}', '{"init": "scratch"}'}
    for arm in report["arms"].values():
        psnr = arm["metrics"]["psnr"]
        assert psnr["low"] <= psnr["mean"] <= psnr["high"] and "t-interval over 2 seeds" == psnr["interval"]
        assert [step for step, _ in arm["curve"]] == [1.0, 2.0]
    assert [c["verdict"] in ("holds", "contradicted", "not resolved") for c in report["claims"]] == [True] * 3
    text = (out / "report.md").read_text()
    assert "| central | init=central |" in text and "![plot](plot.png)" in text
    assert (out / "plot.png").read_bytes()[:4] == b"\x89PNG"
    results = sorted(out.glob("runs/*/seed-*/result.json"))
    assert len(results) == 6 and len(list((out / "shared").iterdir())) == 1  # one 2D VQGAN for every arm
    stamps = [p.stat().st_mtime_ns for p in results]

    # resumed: nothing re-runs; a changed recipe runs anew in its own folders
    assert main(["reproduce", "inflation", "--budget", "test", "--out", str(out)]) == 0
    assert [p.stat().st_mtime_ns for p in results] == stamps
    assert main(["reproduce", "inflation", "--budget", "test", "--out", str(out), "budgets.test.seeds=[0]",
                 "recipe.video_tokenizer.optim.lr=0.002"]) == 0
    assert len(list(out.glob("runs/*/seed-*/result.json"))) == 9


def test_schedules_on_the_shipped_model(tmp_path):
    out = tmp_path / "schedules"
    assert main(["reproduce", "schedules", "--budget", "test", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["arms"]) == ["cosine-4", "linear-4"]
    accuracy = report["arms"]["cosine-4"]["metrics"]["class_accuracy"]
    assert accuracy["interval"] == "Wilson interval over 4 samples" and 0 <= accuracy["low"] <= accuracy["high"] <= 100
    assert report["claims"] == []  # the test budget runs none of the claimed pairs


@pytest.mark.parametrize("args, message", [
    (["reproduce", "nosuch"], "study 'nosuch' not found"),
    (["reproduce"], "name a study"),
    (["reproduce", "inflation", "recipe.bogus=1"], "key 'bogus': unknown key"),
    (["reproduce", "inflation", "arms=[{name: a}, {name: a}]"], "arms need distinct names"),
    (["reproduce", "inflation", "--budget", "test", "--out", "/dev/null/study"], "cannot write into /dev/null"),
])
def test_bad_input_is_one_line(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err


@pytest.mark.parametrize("name", ["commit", "commit-loss", "lfq-vs-vq", "tokenizers", "lfq-peer", "lfq-collapse"])
def test_each_study_runs_its_test_budget(tmp_path, name):
    if name == "lfq-peer":
        pytest.importorskip("vector_quantize_pytorch")  # the peer: in the [dev] extra, which CI installs
    study, _ = load_study(name)
    out = tmp_path / name
    assert main(["reproduce", name, "--budget", "test", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    ran = [a.name for a in arms_of(study, "test")]
    assert list(report["arms"]) == ran and len({json.dumps(report["arms"][a]["set"]) for a in ran}) == len(ran)
    for arm in report["arms"].values():
        assert set(arm["metrics"]) == {m.name for m in study.metrics}
        measured = [s for s in arm["metrics"].values() if s["interval"] != "not measured"]
        assert measured and all(math.isfinite(s["mean"]) for s in measured)
    assert (out / "report.md").is_file() and (out / "plot.png").is_file()
