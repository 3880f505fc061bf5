"""Command-line flags made from config dataclasses, and the few flags every command shares.

A config field declared with `magvit.config.option(default, help)` is a YAML key and a flag at once:
`add_config_flags` adds `--the-field-name` (or the field's own `flags`), typed from the annotation
(int, float, str, bool as --x / --no-x, a Literal as choices, `X | None`, tuples as several values,
nested config dataclasses as their own fields), its help ending in the field's default. Every flag
defaults to None (not given), so a command resolves YAML < key=value < flags with
`magvit.config.resolve` and the dataclass keeps the one default. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar, Union

T = TypeVar("T")

DTYPE_NAMES = ("fp32", "bf16", "fp16")  # magvit.runtime.DTYPES, spelled here so that --help imports no torch


def add_config_flags(parser: argparse.ArgumentParser, cls: type, *, only: Sequence[str] | None = None,
                     skip: Sequence[str] = (), types_: Mapping[str, Callable[[str], Any]] | None = None,
                     helps: Mapping[str, str] | None = None, prefix: str = "") -> dict[str, str]:
    """A flag for each `option` field of dataclass `cls` (of `only`, in that order, when given; dotted
    names reach into nested dataclasses); `types_` parses a key's value from its text, `helps` replaces
    a key's help where the command knows more (the tasks of that command). Returns
    {argparse dest: dotted config key}; the dest is the key itself."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    added: dict[str, str] = {}
    keys = list(only) if only is not None else [f.name for f in dataclasses.fields(cls)]
    for name in keys:
        head, _, rest = name.partition(".")
        field, key = fields[head], f"{prefix}{head}"
        if head in skip or key in skip:
            continue
        if dataclasses.is_dataclass(hints[head]):  # a nested section: its own fields, under `key.`
            added |= add_config_flags(parser, hints[head], only=[rest] if rest else None, skip=skip, types_=types_,
                                      helps=helps, prefix=f"{key}.")
            continue
        if not field.metadata.get("cli", False):  # a plain field, or an option kept YAML-only
            continue
        added[key] = key
        _add_flag(parser, field, hints[head], key, (types_ or {}).get(key), (helps or {}).get(key))
    return added


def _add_flag(parser: argparse.ArgumentParser, field: dataclasses.Field, tp: object, key: str,
              parse: Callable[[str], Any] | None, help: str | None) -> None:
    meta = field.metadata
    flags = meta["flags"] or (f"--{field.name.replace('_', '-')}",)
    kwargs: dict[str, Any] = {"dest": key, "default": None, "help": (help or _help(field)).replace("%", "%%")}
    if meta["metavar"]:
        kwargs["metavar"] = meta["metavar"]
    tp = _optional_arm(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if parse is not None:
        kwargs["type"] = parse
    elif tp is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif origin is Literal:
        kwargs["choices"], kwargs["type"] = args, type(args[0])
    elif origin is tuple:
        kwargs["nargs"] = "*" if len(args) == 2 and args[1] is Ellipsis else len(args)  # "*": none is a value too
        item = args[0]
        if typing.get_origin(item) is Literal:
            kwargs["choices"], item = typing.get_args(item), str
        kwargs["type"] = word(item, flags[0])
    elif tp in (int, float, str):
        kwargs["type"] = tp
    else:
        raise TypeError(f"config field {key!r}: no flag for type {tp!r} (give it a parser, or cli=False)")
    if "choices" not in kwargs and "action" not in kwargs:
        kwargs.setdefault("metavar", field.name.upper())  # not the dotted dest (DECODE.STEPS)
    parser.add_argument(*flags, **kwargs)


def word(tp: type[T], flag: str, what: str | None = None, instead: str = "") -> Callable[[str], T]:
    """A value of a flag that takes every word up to the next flag (`what` it is, default "a number" or
    "a value of FLAG"): a key=value override there is one line saying where it goes (`instead`: another
    way), not "invalid int value"."""
    what = what or ("a number" if tp in (int, float) else f"a value of {flag}")

    def parse(text: str) -> T:
        if "=" in text:  # never a name, path or number these flags take: an override in the wrong place
            raise argparse.ArgumentTypeError(f"{text!r} is not {what} (put key=value overrides before {flag}{instead})")
        try:
            return tp(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None

    parse.__name__ = tp.__name__
    return parse


def _optional_arm(tp: object) -> object:
    """`X | None` -> X; a union that takes a str (`str | Path | Tensor`: a path, or a tensor from Python) -> str,
    what a flag gives."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        arms = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(arms) == 1:
            return arms[0]
        if str in arms:
            return str
    return tp


def _help(field: dataclasses.Field) -> str:
    """The field's help, then its default where the help does not already say it (None and empty
    defaults are described by the help itself: "default: the model's")."""
    help, default = field.metadata["help"], field.default
    if field.metadata["names"]:  # "module:attribute": a registry or mapping, imported now (not at --help)
        module, _, attribute = field.metadata["names"].partition(":")
        found: object = importlib.import_module(module)
        for part in attribute.split("."):
            found = getattr(found, part)
        help = f"{help}: {names(found.names() if hasattr(found, 'names') else found)}"
    if default is dataclasses.MISSING:
        return f"{help} (required)" if help else "(required)"
    if default is None or default == () or "default" in help:
        return help
    shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
    if isinstance(default, bool):
        shown = "on" if default else "off"
    return f"{help} (default {shown})"


def given(args: argparse.Namespace, dests: Mapping[str, str]) -> dict[str, Any]:
    """{dotted key: value} of the flags given on the command line (argparse leaves the rest None)."""
    values = vars(args)
    return {key: values[dest] for dest, key in dests.items() if values.get(dest) is not None}


def command_settings(
    cls: type, args: argparse.Namespace, *, how: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None, parse: Mapping[str, Callable[[str], Any]] | None = None,
) -> tuple[Any, str | None, list[str], dict]:
    """A command's settings: its YAML (`args.config`) < key=value < its flags (`add_config_flags`' dests,
    then `extra`; `parse[key]` turns a flag's text into the value), resolved as `magvit.config.resolve`
    does. Returns (the config, the YAML read or None, the overrides as typed, the flags given)."""
    from magvit.config import parse_overrides, resolve

    config, overrides = split_config(args.config, args.overrides)
    flags = {**given(args, args.dests), **(extra or {})}
    for key, turn in (parse or {}).items():
        if key in flags:
            flags[key] = turn(flags[key])
    return resolve(cls, config, parse_overrides(overrides), flags, how), config, overrides, flags


# ---------------------------------------------------------------------------------------------
# Flags that are not config keys


def config_arg(p: argparse.ArgumentParser, kind: str, where: str, required: bool = False) -> None:
    """The YAML a command runs from: the one it needs (`required`), or one it also runs from (then flags
    and key=value override it)."""
    also = "" if required else "; flags and key=value override it"
    p.add_argument("config", nargs=None if required else "?", help=f"a `kind: {kind}` YAML ({where}){also}")


def split_config(config: str | None, overrides: Sequence[str]) -> tuple[str | None, list[str]]:
    """`magvit generate steps=4 --checkpoint x`: a first key=value word is an override, not a file."""
    if config is not None and "=" in config and not config.endswith((".yaml", ".yml")):
        return None, [config, *overrides]
    return config, list(overrides)


def dtype_arg(p: argparse.ArgumentParser, default: str | None = "fp32", what: str = "the forward passes") -> None:
    p.add_argument("--dtype", default=default, choices=DTYPE_NAMES,
                   help=f"precision of {what}: bf16 / fp16 autocast (weights stay fp32; quantizers, losses and "
                   f"logits stay fp32), fp32 uses TF32 on CUDA (default {default or 'fp32'})")


def overrides_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides (dotted keys for nested sections)"
    )


def overwrite_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace outputs that exist (a file the command reads is never written over)")


def names(items) -> str:
    return ", ".join(items)
