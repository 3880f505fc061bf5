"""A study's report: report.md (the tables, the claims, the command and commit) and plot.png."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from magvit.fileio import atomic_write_text

if TYPE_CHECKING:
    from magvit.reproduce.config import StudyConfig


def _fmt(stat: dict[str, Any]) -> str:
    mean, low, high = stat["mean"], stat["low"], stat["high"]
    if math.isnan(mean):
        return "n/a"
    digits = 3 if abs(mean) < 10 else 1
    if math.isnan(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def write_report(study: StudyConfig, report: dict[str, Any], out: Path) -> None:
    atomic_write_text(out / "report.json", json.dumps(report, indent=1, default=float) + "\n")
    plot(study, report, out / "plot.png")
    env = report["environment"]
    lines = [f"# {study.name}: {study.paper}", "", f"**Claim.** {study.claim}", "",
             f"`magvit reproduce {study.name} --budget {report['budget']}` · seeds {report['seeds']} · "
             f"{env['device']}, torch {env['torch']}, {env.get('threads', '-')} thread(s) · {env['date']} · "
             f"commit `{env['commit']}` · {env['minutes']} min", "",
             "Each figure: mean [95% interval]; " + "; ".join(
                 sorted({s['interval'].split(' over')[0] for a in report['arms'].values()
                         for s in a['metrics'].values() if s['interval'] != 'not measured'})) + "; n/a: not "
             "measured by that arm.", "",
             "| arm | settings | " + " | ".join(m.label or m.name for m in study.metrics) + " |",
             "|---|---|" + "---:|" * len(study.metrics)]
    for name, arm in report["arms"].items():
        settings = ", ".join(f"{k}={v}" for k, v in arm["set"].items()) or "(the recipe)"
        lines.append(f"| {name} | {settings} | " + " | ".join(_fmt(arm["metrics"][m.name]) for m in study.metrics)
                     + " |")
    if report["groups"]:
        lines += ["", "| group (all its arms) | " + " | ".join(m.label or m.name for m in study.metrics) + " |",
                  "|---|" + "---:|" * len(study.metrics)]
        for group, stats in sorted(report["groups"].items()):
            lines.append(f"| {group} | " + " | ".join(_fmt(stats[m.name]) for m in study.metrics) + " |")
    paired = {a: d for a, d in report["paired_vs_first"].items() if any(d.values())}
    if paired:
        first = next(iter(report["arms"]))
        lines += ["", f"Paired by seed, each arm minus `{first}` (same seed: same data order and initialisation):",
                  "", "| arm - " + first + " | " + " | ".join(m.label or m.name for m in study.metrics) + " |",
                  "|---|" + "---:|" * len(study.metrics)]
        for name, diffs in paired.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(diffs[m.name]) if diffs[m.name] else "n/a"
                                                      for m in study.metrics) + " |")
    if report["claims"]:
        lines += ["", "| the paper's claim | on | difference [95%] | verdict |", "|---|---|---:|---|"]
        lines += [f"| {c['better']} beats {c['worse']} | {c['metric']} | "
                  f"{_fmt(c['paired']) + ' (paired)' if c['paired'] else 'intervals above'} | {c['verdict']} |"
                  for c in report["claims"]]
    lines += ["", "A claim holds only when the 95% interval of the paired per-seed difference (trained arms) "
              "excludes 0 in the claimed direction, or, without pairs, when the two arms' intervals do not "
              "overlap; contradicted when it is the other way; otherwise not resolved.", "",
              "![plot](plot.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))


def plot(study: StudyConfig, report: dict[str, Any], path: Path) -> Path:
    """The first metric per arm with its interval: lines over `x` for grouped arms, else bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = study.metrics[0]
    arms = report["arms"]
    curves = {name: arm["curve"] for name, arm in arms.items() if arm.get("curve")}
    fig, axes = plt.subplots(1, 2 if curves else 1, figsize=(11 if curves else 7, 4), dpi=110, squeeze=False)
    ax = axes[0, 0]
    grouped = [a for a in study.arms if a.name in arms and a.group is not None and a.x is not None]
    if grouped:
        for group in dict.fromkeys(a.group for a in grouped):
            members = sorted((a for a in grouped if a.group == group), key=lambda a: a.x)
            xs = [a.x for a in members]
            stats = [arms[a.name]["metrics"][metric.name] for a in members]
            ys = np.array([s["mean"] for s in stats])
            err = np.array([[s["mean"] - s["low"], s["high"] - s["mean"]] for s in stats]).T
            ax.errorbar(xs, ys, yerr=np.nan_to_num(err), marker="o", capsize=3, label=group)
        ax.legend(fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({a.x for a in grouped}), [f"{x:g}" for x in sorted({a.x for a in grouped})])
    else:
        names = list(arms)
        stats = [arms[n]["metrics"][metric.name] for n in names]
        ys = np.array([s["mean"] for s in stats])
        err = np.array([[s["mean"] - s["low"], s["high"] - s["mean"]] for s in stats]).T
        ax.bar(range(len(names)), ys, yerr=np.nan_to_num(err), capsize=4, color="#4c72b0")
        ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel((metric.label or metric.name) + (" (higher is better)" if metric.higher_is_better
                                                    else " (lower is better)"))
    ax.set_title(f"{study.name}: {study.paper.split(',')[0]} ({report['budget']} budget, 95% intervals)", fontsize=9)
    if curves:  # validation curves, the mean over seeds
        right = axes[0, 1]
        for name, curve in curves.items():
            right.plot([c[0] for c in curve], [c[1] for c in curve], marker=".", label=name)
        right.set_xlabel("training step")
        right.set_ylabel("validation " + (metric.label or metric.name))
        right.set_title("over training (mean of seeds)", fontsize=9)
        right.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
