"""The command registry and the parser class every command line of magvit uses."""

from __future__ import annotations

import argparse
from collections.abc import Callable

# (group, name) -> (add_arguments, run, help); group None for a top-level command
COMMANDS: dict[tuple[str | None, str], tuple[Callable, Callable, str]] = {}


def command(name: str, help: str, group: str | None = None):
    """Register `run(args)` as a subcommand; the decorated function's `arguments` adds its flags."""

    def wrap(run: Callable) -> Callable:
        COMMANDS[(group, name)] = (getattr(run, "arguments", lambda p: None), run, help)
        return run

    return wrap


def arguments(add: Callable[[argparse.ArgumentParser], None]):
    """Attach an argument-adding function to a command function (use below @command)."""

    def wrap(run: Callable) -> Callable:
        run.arguments = add
        return run

    return wrap


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line too (with where to look), not the usage block, and no flag
    is taken as an abbreviation of a longer one (`--guidance 2` is never `--guidance-schedule 2`). Every
    subcommand's parser is a Parser too (argparse builds subparsers with their parent's class)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
