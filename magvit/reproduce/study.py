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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from magvit import shipped
from magvit.config import apply_overrides, build_registered, from_dict, read_yaml, to_dict
from magvit.errors import MagvitError
from magvit.fileio import JSON, atomic_write_text, ensure_folder, read_json
from magvit.registry import Registry
from magvit.reproduce.config import BUDGETS, Arm, Budget, StudyConfig
from magvit.reproduce.report import write_report
from magvit.reproduce.stats import summarise

# procedure name -> run(recipe, seed, context) -> {metric: number | [per-sample values] | {value, low, high}}
PROCEDURES: Registry[dict[str, Any]] = Registry("study procedure")


class Recipe(Protocol):
    """What one run of a study does: the frozen dataclass of a `PROCEDURES` entry (magvit.reproduce.procedures)."""

    @property
    def name(self) -> str: ...


@dataclass
class Context:
    """What a run gets besides its recipe: its folder, and a cache for artefacts shared by runs."""

    run_dir: Path
    shared_root: Path
    quiet: bool = True

    def shared(self, name: str, config: object, build: Callable[[Path], object]) -> Path:
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


def plain(config: object) -> JSON:
    """A config (dataclasses, tuples, ...) as JSON data: what a run's result is keyed by."""
    return json.loads(json.dumps(to_dict(config), default=str))


def digest(config: object) -> str:
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


def check_study(study: StudyConfig, source: str | Path) -> None:
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


def arm_recipe(study: StudyConfig, arm: Arm, budget: str, source: str | Path = "study") -> Recipe:
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
        if isinstance(previous, dict) and previous.get("key") == key:
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


def study_summary(name: str) -> str:
    """One line for `--list`."""
    raw = read_yaml(find_study(name))
    arms, seeds = len(raw.get("arms", [])), len(raw.get("seeds", (0, 1, 2)))
    return f"{name:<12} {arms:>2} arms x {seeds} seed(s)  {raw.get('paper', '')}"
