"""A study's typed config (`kind: study`, configs/studies/NAME.yaml): its arms, budgets, metrics
and the paper's claims. See magvit.reproduce.study for what a study runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
