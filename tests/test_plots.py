"""`magvit plot`: the smoothed train curve does not lag the raw one, and a validation panel with one
point (a short run's only validation) is a labelled point, not a dot too small to find."""

import math

import numpy as np
import pytest

from magvit.cli import main
from magvit.plots import _figure, draw_curve, smooth


def _one_sided_ema(values, weight=0.9):
    """tensorboard's smoothing: a bias-corrected EMA of the past only (what `smooth` replaced)."""
    out, average = [], 0.0
    for i, v in enumerate(values):
        average = weight * average + (1 - weight) * v
        out.append(average / (1 - weight ** (i + 1)))
    return out


def test_smoothing_keeps_a_line_and_does_not_lag_a_falling_loss():
    line = [100.0 - 0.5 * i for i in range(80)]
    assert np.allclose(smooth(line), line)  # the ends included: nothing trails
    rng = np.random.default_rng(0)
    steps = np.arange(400)
    clean = 5 * np.exp(-steps / 60) + 1  # a loss falling fast, then slowly
    raw = clean + rng.normal(0, 0.2, len(steps))
    smoothed, trailing = np.array(smooth(raw.tolist())), np.array(_one_sided_ema(raw.tolist()))
    early = slice(5, 100)  # where the loss falls fastest
    lag = (trailing - clean)[early].mean()
    assert lag > 0.15  # the one-sided EMA sits above the falling curve: it trails it by ~9 points
    assert abs((smoothed - clean)[early].mean()) < lag / 5  # centred: on it (off only by the curvature)
    assert np.abs(smoothed - clean).mean() < np.abs(raw - clean).mean() / 2  # and it does smooth
    assert smooth([]) == [] and smooth([2.5]) == [2.5]


@pytest.mark.parametrize("values", [[21.5], [20.0, 22.25]])
def test_a_short_validation_curve_is_labelled_points(values):
    fig, (ax,) = _figure(1)
    steps = [500.0 * (i + 1) for i in range(len(values))]
    draw_curve(ax, "val/psnr", steps, values)
    (line,) = ax.lines
    assert line.get_marker() == "o" and line.get_markersize() >= 6
    assert [t.get_text() for t in ax.texts] == [f"{v:.4g}" for v in values]
    left, right = ax.get_xlim()
    assert left < steps[0] and right > steps[-1]  # the point is inside the panel, not on its edge


def test_plot_draws_a_run_with_one_validation(tmp_path, capsys):
    from PIL import Image

    run = tmp_path / "run"
    run.mkdir()
    (run / "train.csv").write_text("step,loss\n" + "".join(f"{i},{math.exp(-i / 20)}\n" for i in range(60)))
    (run / "val.csv").write_text("step,psnr,perplexity\n60,18.25,\n")
    assert main(["plot", str(run)]) == 0
    with Image.open(run / "curves.png") as image:
        assert image.format == "PNG" and image.size[0] > 400


def test_plot_runs_from_a_plot_config_and_flags_win(tmp_path):
    """`kind: plot`: `magvit plot CONFIG.yaml` draws the run its `run_dir` names; --out overrides the file's."""
    from magvit.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "train.csv").write_text("step,loss\n1,2.0\n2,1.5\n3,1.2\n")
    config = tmp_path / "plot.yaml"
    config.write_text(f"kind: plot\nrun_dir: {run}\nout: {tmp_path / 'a.png'}\n")
    assert main(["plot", str(config)]) == 0 and (tmp_path / "a.png").is_file()
    assert main(["plot", str(config), "--out", str(tmp_path / "b.png")]) == 0 and (tmp_path / "b.png").is_file()
    assert main(["plot", str(config)]) == 2  # a.png exists: --overwrite


def test_plot_reads_a_torn_csv_and_refuses_a_binary_one(tmp_path, capsys):
    """A row with more cells than the header (a run appended to by another version) is drawn from the
    cells that have a column; a file that is not text is one line, not a traceback."""
    from magvit.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "train.csv").write_text("step,loss\n1,2.0\n2,1.5,0.3,x\n3,1.2\n")
    assert main(["plot", str(run)]) == 0 and (run / "curves.png").is_file()
    (run / "train.csv").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary")
    capsys.readouterr()
    assert main(["plot", str(run), "--overwrite", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.csv: not a CSV text file" in err, err
    assert not (tmp_path / "x.png").exists()
