"""A study's statistics: 95% intervals per arm (t over seeds, bootstrap over samples, Wilson for
rates), paired per-seed differences, and the verdict on each of the paper's claims (`summarise`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from magvit.config import to_dict
from magvit.runtime import environment

if TYPE_CHECKING:
    from magvit.reproduce.config import Arm, StudyConfig


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
    arms: dict[str, dict[str, Any]] = {}
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
    budget_set = to_dict(study.budgets[budget].set) if budget in study.budgets else {}
    return {"study": study.name, "paper": study.paper, "claim": study.claim, "budget": budget, "seeds": list(seeds),
            "recipe": to_dict(study.recipe), "budget_set": budget_set,
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


def _as_number(value: float | list[float] | dict[str, float | str]) -> float:
    """One run's figure of a metric in any of its forms (a number, per-sample values, an interval)."""
    if isinstance(value, list):
        return float(np.mean(value))
    return float(value["value"]) if isinstance(value, dict) else float(value)
