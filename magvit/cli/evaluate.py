"""`magvit eval [CONFIG] [--flags] [key=value]`: a model scored by a paper's evaluation protocol (a `kind:
eval` config, magvit.evaluation.protocols; one per protocol in configs/eval/), its report beside the
paper's number."""

from __future__ import annotations

import argparse

from magvit.cli.base import arguments, command
from magvit.cli.flags import add_config_flags, command_settings, config_arg, overrides_arg, overwrite_arg


def _eval_args(p: argparse.ArgumentParser) -> None:
    from magvit.evaluation.protocols import EvalConfig

    config_arg(p, "eval", "configs/eval/ holds one per paper protocol")
    p.set_defaults(dests=add_config_flags(p, EvalConfig))
    overwrite_arg(p)
    overrides_arg(p)


def _typed(value: object) -> str:
    """A flag's value as the key=value override that sets the same key."""
    return f"[{', '.join(map(str, value))}]" if isinstance(value, (list, tuple)) else str(value)


@command("eval", "score a model by a paper's evaluation protocol (FVD, FID, IS, PSNR, SSIM on the paper's dataset): "
         "report.json and report.md, ours beside the paper's number")
@arguments(_eval_args)
def eval_command(args: argparse.Namespace) -> None:
    from magvit.evaluation.protocols import EvalConfig, evaluate, markdown

    given_elsewhere = "" if args.config else " (or a config file: configs/eval/*.yaml)"
    how = {"checkpoint": f"--checkpoint DIR{given_elsewhere}", "tasks": f"--tasks TASK{given_elsewhere}",
           "data": f"data.name=NAME data.root=DIR data.split=SPLIT{given_elsewhere}"}
    cfg, config, overrides, flags = command_settings(EvalConfig, args, how=how)
    argv = ["eval", *([config] if config else []), *overrides, *(f"{k}={_typed(v)}" for k, v in flags.items())]
    report = evaluate(cfg, overwrite=args.overwrite, source=config, argv=argv)
    print(markdown(report))
    print(f"wrote {cfg.out}/report.json, report.md and settings.yaml")
