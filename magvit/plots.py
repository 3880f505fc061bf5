"""Figures as PNG files: the curves of a training run (`magvit plot RUN_DIR`) and bar charts of a
benchmark table (`magvit bench ... --out DIR`).

matplotlib's object API with the Agg canvas: no pyplot, so nothing changes the backend or the
figures of a notebook that imports magvit.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from magvit.config import option
from magvit.errors import MagvitError
from magvit.fileio import atomic_path, check_outputs

SKIP = ("step", "epoch")  # the x axis and the counters, not curves


def read_curves(path: Path) -> dict[str, tuple[list[float], list[float]]]:
    """A run's CSV -> {column: (steps, values)} for every numeric column (empty cells and cells past
    the header's columns skipped); a file that is not CSV text is one MagvitError line."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise MagvitError(f"{path}: not a CSV text file ({type(e).__name__}: {e})") from None
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        try:
            step = float(row["step"])
        except (KeyError, TypeError, ValueError):
            continue
        for key, raw in row.items():
            if key is None or key in SKIP or not isinstance(raw, str) or raw == "":
                continue  # a cell past the header's columns (key None), an empty one
            try:
                value = float(raw)
            except ValueError:
                continue  # a text column (the task of a step)
            steps, values = curves.setdefault(key, ([], []))
            steps.append(step)
            values.append(value)
    return curves


def _figure(panels: int, width: float = 4.0, height: float = 2.8, columns: int = 3):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(columns, panels)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(panels)]
    return fig, axes


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path


def smooth(values: Sequence[float], weight: float = 0.9) -> list[float]:
    """A centred, bias-corrected exponential moving average: point i averages its neighbours j with
    weights weight^|i - j| (a forward EMA and a backward one at once), normalised by the weights used
    (tensorboard's bias correction), within i's distance to the nearer end on both sides. Centred, it
    does not lag (tensorboard's one-sided EMA trails a falling loss by about weight / (1 - weight)
    points); symmetric up to the ends, a straight line comes back unchanged, the last point included."""
    import numpy as np

    y = np.asarray(values, dtype=np.float64)  # (N,)
    n = len(y)
    if n == 0:
        return []
    reach = min(n - 1, math.ceil(math.log(1e-3) / math.log(weight)) if 0 < weight < 1 else 0)  # weights < 1e-3 cut
    offsets = np.arange(-reach, reach + 1)  # (K,)
    index = np.arange(n)[:, None] + offsets  # (N, K) the neighbours of each point
    radius = np.minimum(np.arange(n), n - 1 - np.arange(n))[:, None]  # (N, 1) distance to the nearer end
    kernel = np.where(np.abs(offsets) <= radius, weight ** np.abs(offsets), 0.0)  # (N, K)
    neighbours = y[index.clip(0, n - 1)]  # (N, K); clipped indices carry weight 0
    return ((kernel * neighbours).sum(1) / kernel.sum(1)).tolist()


def draw_curve(ax, key: str, steps: Sequence[float], values: Sequence[float]) -> None:
    """One panel: a long train curve raw (faint) and smoothed; a short one, or validation, as points
    joined by a line; a curve of at most three points as labelled points (one validation at the end of
    a short run would otherwise be a dot too small to find)."""
    color = "C1" if key.startswith("val/") else "C0"
    if key.startswith("train/") and len(values) > 10:
        ax.plot(steps, values, color=color, alpha=0.3, linewidth=0.8)
        ax.plot(steps, smooth(values), color=color, linewidth=1.5)
    elif len(values) <= 3:
        ax.plot(steps, values, color=color, marker="o", markersize=7, linestyle="-" if len(values) > 1 else "none")
        for step, value in zip(steps, values):
            ax.annotate(f"{value:.4g}", (step, value), textcoords="offset points", xytext=(0, 7), ha="center",
                        fontsize=8, color=color)
        ax.margins(x=0.3 if len(values) == 1 else 0.1, y=0.3)
    else:
        ax.plot(steps, values, color=color, marker="o" if len(values) < 30 else None, markersize=3)
    ax.set_title(key, fontsize=10)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)


@dataclass(frozen=True, kw_only=True)
class PlotConfig:
    """`kind: plot`: `magvit plot` (a run folder's curves)."""

    kind: str = "plot"
    run_dir: str = option(help="a run folder of train-tokenizer or train (its train.csv and val.csv)", cli=False)
    out: str | None = option(None, "the PNG to write (default RUN_DIR/curves.png, redrawn each time; an --out that "
                             "exists is replaced only with --overwrite)")


def plot_run(run_dir: str | Path, out: str | Path | None = None, overwrite: bool = False) -> Path:
    """One panel per numeric column of `train.csv` (raw and smoothed) and `val.csv`, against the step
    (`draw_curve`); written to `out` (default `<run_dir>/curves.png`, the run's own figure, redrawn each
    time). An `out` that exists is replaced only with `overwrite`; the CSVs never are."""
    run_dir = Path(run_dir)
    sources = [(name, run_dir / f"{name}.csv") for name in ("train", "val")]
    if out is not None:
        if Path(out).suffix.lower() != ".png":
            raise MagvitError(f"--out {out}: the plot is a PNG; give a path ending in .png")
        check_outputs([out], overwrite=overwrite)
    curves = {f"{name}/{key}": c for name, path in sources if path.is_file() for key, c in read_curves(path).items()}
    if not curves:
        raise MagvitError(f"{run_dir}: no train.csv or val.csv with numbers to plot (is it a run folder?)")
    fig, axes = _figure(len(curves))
    for ax, (key, (steps, values)) in zip(axes, curves.items()):
        draw_curve(ax, key, steps, values)
    fig.suptitle(str(run_dir), fontsize=11)
    return _save(fig, Path(out) if out is not None else run_dir / "curves.png")


def bar_chart(title: str, labels: Sequence[str], series: Sequence[tuple[str, Sequence[float | None]]],
              path: str | Path) -> Path:
    """One horizontal bar panel per (header, values) of `series`, a bar per label; None is left out."""
    fig, axes = _figure(len(series), width=4.5, height=max(2.0, 0.8 + 0.3 * len(labels)))
    short = [label if len(label) <= 28 else "..." + label[-25:] for label in labels]  # the end of a path tells
    for ax, (header, values) in zip(axes, series):
        shown = [(label, v) for label, v in zip(short, values) if v is not None and math.isfinite(v)]
        ax.barh(range(len(shown)), [v for _, v in shown], color="C0")
        ax.set_yticks(range(len(shown)), [label for label, _ in shown], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(header, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=11)
    return _save(fig, Path(path))
