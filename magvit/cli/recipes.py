"""`magvit quickstart`, `magvit run` (a whole recipe from one YAML) and `magvit reproduce` (a paper's
ablation: arms x seeds)."""

from __future__ import annotations

import argparse

from magvit.cli.base import arguments, command
from magvit.cli.flags import DTYPE_NAMES, config_arg, names, overrides_arg
from magvit.cli.train import mixed_precision
from magvit.errors import MagvitError


def _quickstart_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=None, help="output folder (default runs/quickstart)")
    p.add_argument("--dtype", default=None, choices=DTYPE_NAMES,
                   help="precision of both trainings (loop.mixed_precision) and of the report (report.dtype); "
                   "default: the recipe's (fp32)")
    overrides_arg(p)


def quickstart_overrides(args: argparse.Namespace) -> list[str]:
    """--dtype: both trainings' mixed precision and the report's dtype; then the user's key=value ones."""
    report = [f"report.dtype={args.dtype}"] if args.dtype else []
    return [*mixed_precision(args.dtype, "tokenizer.", "transformer."), *report, *args.overrides]


@command("quickstart", "train a tiny tokenizer and transformer on moving digits on this CPU, then sample and score")
@arguments(_quickstart_args)
def quickstart(args: argparse.Namespace) -> None:
    from magvit.config import parse_overrides
    from magvit.quickstart import quickstart_config, run_quickstart

    run_quickstart(quickstart_config(args.out, parse_overrides(quickstart_overrides(args))))


def _run_args(p: argparse.ArgumentParser) -> None:
    config_arg(p, "quickstart", "configs/quickstart.yaml", required=True)
    overrides_arg(p)


@command("run", "run a whole recipe from one YAML: tokenizer, transformer, samples and scores")
@arguments(_run_args)
def run(args: argparse.Namespace) -> None:
    from magvit.kinds import load_config
    from magvit.quickstart import run_quickstart

    run_quickstart(load_config(args.config, args.overrides, expect="quickstart"))


def _reproduce_args(p: argparse.ArgumentParser) -> None:
    from magvit.reproduce import list_studies

    p.add_argument("study", nargs="?", help=f"a shipped study ({names(list_studies())}) or a `kind: study` YAML")
    p.add_argument("--list", action="store_true", help="list the shipped studies and exit")
    p.add_argument("--budget", default="quick", choices=("quick", "full", "test"),
                   help="quick: <= 20 minutes on 2 CPU cores; full: the GPU-sized study; test: seconds (CI)")
    p.add_argument("--out", default=None, help="output folder (default runs/reproduce/STUDY-BUDGET); a killed "
                   "study resumes there, re-running only unfinished arms")
    overrides_arg(p)


@command("reproduce", "re-run a paper's ablation: arms x seeds, 95% intervals, the paper's claims checked")
@arguments(_reproduce_args)
def reproduce(args: argparse.Namespace) -> None:
    from magvit.config import parse_overrides
    from magvit.reproduce import list_studies, load_study, run_study
    from magvit.reproduce.study import study_summary

    if args.list:
        for name in list_studies():
            print(study_summary(name))
        return
    if args.study is None:
        raise MagvitError(f"name a study (one of: {', '.join(list_studies())}) or pass --list")
    study, path = load_study(args.study, parse_overrides(args.overrides))
    out = args.out or f"runs/reproduce/{study.name}-{args.budget}"
    report = run_study(study, args.budget, out, source=str(path))
    for claim in report["claims"]:
        print(f"  {claim['better']} beats {claim['worse']} on {claim['metric']}: {claim['verdict']}")
    print(f"wrote {out}/report.md, report.json, plot.png")
