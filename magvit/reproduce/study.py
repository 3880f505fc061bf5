"""`magvit reproduce`: a paper's ablation as a study of arms x seeds, with intervals on every figure.

A study is a YAML file (`kind: study`, `configs/studies/<name>.yaml`) holding

    recipe:   {name: <procedure>, ...}   what one run does, typed by the procedure's dataclass
    arms:     [{name, set: {dotted recipe keys}, group, x}]   what differs between arms
    seeds:    [0, 1, 2]                  one run per arm and seed (trained arms: >= 3 seeds)
    budgets:  {quick: {set, seeds}, full: ..., test: ...}   recipe overrides per budget
    metrics:  [{name, label, higher_is_better}]  what each run returns; the first is plotted
    expect:   [{metric, better, worse}]  the paper's claims, as pairs of arms to compare

Each (arm, seed) runs once into `<out>/runs/<arm>-<hash>/seed-<k>/` and leaves `result.json`; a run
whose folder holds a result of the same resolved recipe is reused, so a killed study re-runs only
what is unfinished and a changed recipe never reuses a stale result. A run returns per metric a
number (one per seed: the arm's interval is the 95% t-interval of the seed values), a list of
per-sample values (pooled over seeds, 95% bootstrap interval of the mean) or an interval it
computed itself ({"value", "low", "high"}: evaluation-only arms with one seed). A claim is called
only when the two arms' intervals do not overlap: `holds`, `contradicted`, or `not resolved`.
The report is `<out>/report.md`, `report.json` and `plot.png`.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from magvit import shipped
from magvit.config import apply_overrides, build_registered, from_dict, read_yaml, to_dict
from magvit.errors import MagvitError
from magvit.fileio import atomic_write_text, ensure_folder, read_json
from magvit.registry import Registry
from magvit.runtime import environment

# procedure name -> run(recipe, seed, context) -> {metric: number | [per-sample values] | {value, low, high}}
PROCEDURES: Registry[Callable[..., dict[str, Any]]] = Registry("study procedure")
BUDGETS = ("quick", "full", "test")


@dataclass(frozen=True)
class Arm:
    name: str
    set: Mapping[str, Any] = field(default_factory=dict)  # dotted recipe keys -> values
    group: str | None = None  # arms of one group are drawn as one line over `x` in the plot
    x: float | None = None


@dataclass(frozen=True)
class Budget:
    set: Mapping[str, Any] = field(default_factory=dict)  # dotted recipe keys, applied before the arm's
    seeds: tuple[int, ...] | None = None  # default: the study's
    arms: tuple[str, ...] | None = None  # default: every arm (a test budget may run a few)


@dataclass(frozen=True)
class Metric:
    name: str
    label: str = ""
    higher_is_better: bool = True


@dataclass(frozen=True)
class Claim:
    """The paper says arm (or group) `better` beats `worse` on `metric`."""

    metric: str
    better: str
    worse: str


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    kind: str = "study"
    name: str
    paper: str  # the paper and the section / table / figure the claim comes from
    claim: str  # the paper's finding, in words
    recipe: Mapping[str, Any]  # {name: <procedure>, ...}: validated by the procedure's dataclass per arm
    arms: tuple[Arm, ...]
    seeds: tuple[int, ...] = (0, 1, 2)
    budgets: Mapping[str, Budget] = field(default_factory=dict)
    metrics: tuple[Metric, ...]
    expect: tuple[Claim, ...] = ()


@dataclass
class Context:
    """What a run gets besides its recipe: its folder, and a cache for artefacts shared by runs."""

    run_dir: Path
    shared_root: Path
    quiet: bool = True

    def shared(self, name: str, config: Any, build: Callable[[Path], Any]) -> Path:
        """A folder `build(folder)` fills once per distinct `config` (e.g. the 2D VQGAN every arm inflates)."""
        folder = self.shared_root / f"{name}-{digest(config)}"
        done = folder / "done.json"
        if not done.is_file():
            if folder.exists():  # an earlier build was killed half way
                import shutil

                shutil.rmtree(folder)
            build(folder)
            atomic_write_text(done, json.dumps({"config": plain(config)}, indent=1) + "\n")
        return folder


def plain(config: Any) -> Any:
    """A config (dataclasses, tuples, ...) as JSON data: what a run's result is keyed by."""
    return json.loads(json.dumps(to_dict(config), default=str))


def digest(config: Any) -> str:
    return hashlib.sha1(json.dumps(plain(config), sort_keys=True).encode()).hexdigest()[:10]


# ---------------------------------------------------------------------------------------------
# Loading


def find_study(name: str) -> Path:
    """A study by path, or by name (`studies/<name>.yaml` of the shipped configs)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    found = shipped.find("configs", f"studies/{name}.yaml")  # the checkout's, else the installed package's
    if found is not None:
        return found
    raise MagvitError(f"study '{name}' not found (the studies: {', '.join(list_studies()) or 'none'})")


def list_studies() -> list[str]:
    return sorted({p.stem for root in shipped.roots("configs") for p in (root / "studies").glob("*.yaml")})


def load_study(name: str, overrides: Mapping[str, Any] | None = None) -> tuple[StudyConfig, Path]:
    path = find_study(name)
    raw = apply_overrides(read_yaml(path), dict(overrides or {}), str(path))
    study = from_dict(StudyConfig, raw, str(path), overrides=list(overrides or {}))
    check_study(study, path)
    return study, path


def check_study(study: StudyConfig, source: Any) -> None:
    """Cross-field checks, one line each; every arm's recipe is validated here, before any run."""
    names = [a.name for a in study.arms]
    if len(set(names)) != len(names) or not names:
        raise MagvitError(f"{source}: arms need distinct names, got {names}")
    metrics = [m.name for m in study.metrics]
    if not metrics:
        raise MagvitError(f"{source}: name at least one metric")
    groups = {a.group for a in study.arms if a.group}
    for claim in study.expect:
        if claim.metric not in metrics:
            raise MagvitError(f"{source}: expect: unknown metric '{claim.metric}' (metrics: {', '.join(metrics)})")
        for side in (claim.better, claim.worse):
            if side not in names and side not in groups:
                raise MagvitError(f"{source}: expect: '{side}' is neither an arm nor a group")
    for budget, spec in study.budgets.items():
        if budget not in BUDGETS:
            raise MagvitError(f"{source}: budgets: unknown budget '{budget}' (one of {', '.join(BUDGETS)})")
        unknown = sorted(set(spec.arms or ()) - set(names))
        if unknown:
            raise MagvitError(f"{source}: budgets.{budget}.arms: no arm named {', '.join(unknown)}")
    for budget in BUDGETS:
        for arm in study.arms:
            arm_recipe(study, arm, budget, source)


def arm_recipe(study: StudyConfig, arm: Arm, budget: str, source: Any = "study") -> Any:
    """The typed recipe of one arm under one budget: recipe <- budget's keys <- arm's keys."""
    sets = {**study.budgets.get(budget, Budget()).set, **arm.set}
    raw = apply_overrides(dict(study.recipe), sets, f"{source} (arm {arm.name}, budget {budget})")
    return build_registered(PROCEDURES, raw, f"{source} recipe (arm {arm.name}, budget {budget})")


def arms_of(study: StudyConfig, budget: str) -> list[Arm]:
    chosen = study.budgets.get(budget, Budget()).arms
    return [a for a in study.arms if chosen is None or a.name in chosen]


def seeds_of(study: StudyConfig, budget: str) -> tuple[int, ...]:
    chosen = study.budgets.get(budget, Budget()).seeds
    return tuple(chosen) if chosen is not None else tuple(study.seeds)


# ---------------------------------------------------------------------------------------------
# Running


def run_study(study: StudyConfig, budget: str, out: str | Path, quiet: bool = False,
              source: str = "study") -> dict[str, Any]:
    """Run every unfinished (arm, seed), then write the report; returns report.json's content."""
    if budget not in BUDGETS:
        raise MagvitError(f"--budget must be one of {', '.join(BUDGETS)}, got '{budget}'")
    out = ensure_folder(out)  # an unwritable --out fails here, before any run
    seeds, arms = seeds_of(study, budget), arms_of(study, budget)
    jobs = [(arm, seed) for arm in arms for seed in seeds]
    results: dict[str, list[dict[str, Any]]] = {arm.name: [] for arm in arms}
    started = time.time()
    bar = tqdm(total=len(jobs), desc=f"reproduce {study.name} ({budget})", disable=quiet, dynamic_ncols=True)
    for arm, seed in jobs:
        recipe = arm_recipe(study, arm, budget, source)
        key = plain({"procedure": recipe, "seed": seed})
        run_dir = out / "runs" / f"{arm.name}-{digest(recipe)}" / f"seed-{seed}"
        path = run_dir / "result.json"
        previous = read_json(path) if path.is_file() else None
        if previous is not None and previous.get("key") == key:
            metrics = previous["metrics"]
        else:
            bar.set_postfix(arm=arm.name, seed=seed)
            run_dir.mkdir(parents=True, exist_ok=True)
            t0 = time.time()
            metrics = PROCEDURES[recipe.name].build(recipe, seed, Context(run_dir, out / "shared", quiet=True))
            metrics = {**{m.name: None for m in study.metrics}, **metrics}  # None: not measured by this arm
            atomic_write_text(path, json.dumps({"key": key, "seconds": round(time.time() - t0, 1),
                                                "metrics": metrics}, indent=1, default=float) + "\n")
        results[arm.name].append(metrics)
        bar.update(1)
    bar.close()
    report = summarise(study, budget, seeds, arms, results, time.time() - started)
    write_report(study, report, out)
    return report


# ---------------------------------------------------------------------------------------------
# Intervals


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of per-seed values."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


def bootstrap_interval(values: list[float] | np.ndarray, reps: int = 2000, seed: int = 0,
                       statistic: Callable[[np.ndarray], float] | None = None) -> tuple[float, float, float]:
    """The statistic (default: the mean) of per-sample values and its 95% percentile bootstrap interval."""
    x = np.asarray(values, dtype=np.float64)
    stat = statistic or (lambda v: float(v.mean()))
    rng = np.random.default_rng(seed)
    draws = [stat(x[rng.integers(0, len(x), len(x))]) for _ in range(reps)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return stat(x), float(low), float(high)


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """A share and its 95% Wilson score interval: unlike a bootstrap it does not collapse to a point
    at 0% or 100% (200 of 200 right -> [0.981, 1])."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def aggregate(runs: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """One arm's figure for `metric` from its runs (one per seed)."""
    values = [r.get(metric) for r in runs]
    if not values or any(v is None for v in values):
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "interval": "not measured"}
    if all(isinstance(v, list) for v in values):  # per-sample values: pooled over seeds
        pooled = [x for v in values for x in v]
        scale = max(pooled, default=0.0)
        if scale in (1.0, 100.0) and set(pooled) <= {0.0, scale}:  # right / wrong: Wilson's interval
            mean, low, high = (scale * x for x in wilson_interval(sum(pooled) / scale, len(pooled)))
            how = f"Wilson interval over {len(pooled)} samples"
        else:
            mean, low, high = bootstrap_interval(pooled)
            how = f"bootstrap over {len(pooled)} samples"
    elif all(isinstance(v, dict) for v in values) and len(values) == 1:  # an interval the run computed
        mean, low, high = values[0]["value"], values[0]["low"], values[0]["high"]
        how = values[0].get("how", "computed by the run")
    else:
        numbers = [v["value"] if isinstance(v, dict) else float(v) for v in values]
        mean, low, high = t_interval(numbers)
        how = f"t-interval over {len(numbers)} seeds"
    return {"mean": mean, "low": low, "high": high, "interval": how}


def verdict(better: dict[str, Any], worse: dict[str, Any], higher_is_better: bool) -> str:
    """holds / contradicted / not resolved, from two 95% intervals."""
    if any(math.isnan(v) for v in (better["low"], better["high"], worse["low"], worse["high"])):
        return "not resolved"
    sign = 1 if higher_is_better else -1
    if sign * (better["mean"] - worse["mean"]) > 0 and (better["low"] > worse["high"] if higher_is_better
                                                          else better["high"] < worse["low"]):
        return "holds"
    if sign * (worse["mean"] - better["mean"]) > 0 and (worse["low"] > better["high"] if higher_is_better
                                                         else worse["high"] < better["low"]):
        return "contradicted"
    return "not resolved"


def summarise(study: StudyConfig, budget: str, seeds: tuple[int, ...], ran: list[Arm],
              results: dict[str, list[dict[str, Any]]], seconds: float) -> dict[str, Any]:
    arms = {}
    for arm in ran:
        arms[arm.name] = {"set": to_dict(arm.set), "group": arm.group, "x": arm.x,
                          "metrics": {m.name: aggregate(results[arm.name], m.name) for m in study.metrics}}
        curves = [r["curve"] for r in results[arm.name] if "curve" in r]
        if curves:  # [[step, value], ...] per seed -> the mean over seeds at each step
            steps = sorted({c[0] for curve in curves for c in curve})
            arms[arm.name]["curve"] = [[x, float(np.mean([v for curve in curves for st, v in curve if st == x]))]
                                       for x in steps]
    by_group: dict[str, dict[str, Any]] = {}
    for metric in study.metrics:  # a group's figure: its arms' per-seed means pooled
        for group in {a.group for a in ran if a.group}:
            runs = [r for a in ran if a.group == group for r in results[a.name] if r.get(metric.name) is not None]
            by_group.setdefault(group, {})[metric.name] = aggregate(
                [{metric.name: _as_number(r[metric.name])} for r in runs], metric.name)
    higher = {m.name: m.higher_is_better for m in study.metrics}
    claims = []
    for c in study.expect:
        if not all(side in arms or side in by_group for side in (c.better, c.worse)):
            continue  # an arm this budget does not run
        a = arms[c.better]["metrics"][c.metric] if c.better in arms else by_group[c.better][c.metric]
        b = arms[c.worse]["metrics"][c.metric] if c.worse in arms else by_group[c.worse][c.metric]
        paired = paired_difference(results.get(c.better), results.get(c.worse), c.metric)
        claims.append({"metric": c.metric, "better": c.better, "worse": c.worse, "paired": paired,
                       "verdict": paired_verdict(paired, higher[c.metric]) if paired else verdict(a, b,
                                                                                                 higher[c.metric])})
    first = ran[0].name
    paired_vs_first = {arm.name: {m.name: paired_difference(results[arm.name], results[first], m.name)
                                  for m in study.metrics} for arm in ran[1:]}
    return {"study": study.name, "paper": study.paper, "claim": study.claim, "budget": budget, "seeds": list(seeds),
            "recipe": to_dict(study.recipe), "budget_set": to_dict(study.budgets.get(budget, Budget()).set),
            "arms": arms, "groups": by_group, "claims": claims, "paired_vs_first": paired_vs_first,
            "environment": {**environment("auto"), "minutes": round(seconds / 60, 1)}}


def paired_difference(runs_a: list[dict[str, Any]] | None, runs_b: list[dict[str, Any]] | None,
                      metric: str) -> dict[str, Any] | None:
    """Mean and 95% t-interval of the per-seed differences a - b, when both arms ran the same >= 2
    seeds with one number each (the same seed: the same data order and initialisation, so the
    difference removes the seed's own luck); else None."""
    if not runs_a or not runs_b or len(runs_a) != len(runs_b) or len(runs_a) < 2:
        return None
    values = [(r.get(metric), q.get(metric)) for r, q in zip(runs_a, runs_b)]
    if any(x is None or y is None or isinstance(x, (list, dict)) or isinstance(y, (list, dict)) for x, y in values):
        return None
    mean, low, high = t_interval([float(x) - float(y) for x, y in values])
    return {"mean": mean, "low": low, "high": high, "interval": f"paired t-interval over {len(values)} seeds"}


def paired_verdict(diff: dict[str, Any], higher_is_better: bool) -> str:
    """holds / contradicted / not resolved from the interval of (claimed better - claimed worse)."""
    low, high = (diff["low"], diff["high"]) if higher_is_better else (-diff["high"], -diff["low"])
    return "holds" if low > 0 else "contradicted" if high < 0 else "not resolved"


def _as_number(value: Any) -> float:
    if isinstance(value, list):
        return float(np.mean(value))
    return float(value["value"]) if isinstance(value, dict) else float(value)


# ---------------------------------------------------------------------------------------------
# Report


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


def study_summary(name: str) -> str:
    """One line for `--list`."""
    raw = read_yaml(find_study(name))
    arms, seeds = len(raw.get("arms", [])), len(raw.get("seeds", (0, 1, 2)))
    return f"{name:<12} {arms:>2} arms x {seeds} seed(s)  {raw.get('paper', '')}"
