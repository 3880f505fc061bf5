"""The `magvit` command line: one module per command group, each command a function `(args) -> None`
registered in `magvit.cli.base.COMMANDS` with the function that adds its flags.

    data      config show, data preview
    train     train-tokenizer, train, extract-tokens, plot
    bench     bench tokenizers | decode | train | quality (config kinds of magvit.bench.configs)
    sample    generate, predict, interpolate, inpaint, outpaint, edit (`kind: sample`), demo
    recipes   quickstart, run, reproduce
    evaluate  eval (`kind: eval`: the papers' evaluation protocols, magvit.evaluation.protocols)

Names a flag accepts come from the registries and flags from config fields (magvit.cli.flags), built
only for the command asked for, so `magvit --help` imports no torch. A `MagvitError` (bad config key,
corrupt video, ...), an unwritable path or a bad flag is one line `magvit: error: ...`, exit code 2.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Sequence

from magvit.cli import bench, data, evaluate, recipes, sample, train  # noqa: F401  (each registers its commands)
from magvit.cli.base import COMMANDS, Parser
from magvit.errors import MagvitError


def requested(argv: Sequence[str]) -> tuple[str | None, str | None]:
    """(group, name) of the command `argv` names, as far as it names one (before any parsing)."""
    words = [a for a in argv if not a.startswith("-")]
    groups = {group for group, _ in COMMANDS if group is not None}
    if not words:
        return None, None
    if words[0] in groups:
        return words[0], words[1] if len(words) > 1 else None
    return None, words[0]


def build_parser(only: tuple[str | None, str | None] | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `only`, the arguments of that one command alone are built (the
    others are listed with their help), so a command imports only the registries it needs."""
    parser = Parser(
        prog="magvit", description="Masked generative image and video models (MaskGIT, MAGVIT, MAGVIT-v2)."
    )
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for (group, name), (add_args, run, help) in COMMANDS.items():
        listed = help.replace("%", "%%")  # argparse %-formats a subcommand's help ("95% intervals")
        if group is None:
            sub = top.add_parser(name, help=listed, description=help)
        else:
            if group not in groups:
                group_parser = top.add_parser(group, help=f"{group} commands")
                groups[group] = group_parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", required=True)
            sub = groups[group].add_parser(name, help=listed, description=help)
        if only is None or only == (group, name):
            add_args(sub)
        sub.set_defaults(run=run)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings a user can act on (skipped files, ...) print as one line, without a source line."""
    return f"magvit: warning: {message}\n"


def _negative_values(argv: list[str]) -> list[str]:
    """`--box -5,0,8,8` as `--box=-5,0,8,8`: argparse reads a value starting with '-' that is not a plain
    number as the next option; a comma list of numbers after a --flag is that flag's value."""
    out: list[str] = []
    for item in argv:
        if out and out[-1].startswith("--") and "=" not in out[-1] and re.fullmatch(r"-\d+(,-?\d+)+", item):
            out[-1] = f"{out[-1]}={item}"
        else:
            out.append(item)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    argv = _negative_values(sys.argv[1:] if argv is None else list(argv))
    parser = build_parser(only=requested(argv))
    # key=value overrides may come after options (`--out x.gif frames=8`), which argparse's
    # positional matching does not allow: collect them from the leftovers instead.
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra if item.startswith("-") or "=" not in item or not hasattr(args, "overrides")]
    if stray:
        prog = " ".join(["magvit", *filter(None, requested(argv))])
        parser.exit(2, f"magvit: error: unrecognized arguments: {' '.join(stray)} (see {prog} --help)\n")
    if extra:
        args.overrides = [*args.overrides, *extra]
    from magvit.runtime import default_tf32, quiet_deepspeed_detection

    default_tf32()  # on CUDA, fp32 matmuls and convolutions of every command run on TF32 tensor cores
    quiet_deepspeed_detection()
    try:
        args.run(args)
    except MagvitError as e:
        print(f"magvit: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if not e.filename:  # not about a path the user gave: a bug, keep the traceback
            raise
        print(f"magvit: error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("magvit: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
