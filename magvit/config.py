"""Experiment configs: YAML loaded into frozen, typed dataclasses, strictly.

A config file names its kind at the top (`kind: data`, `kind: train_tokenizer`, ...); the kind
picks the root dataclass from the table in `magvit.kinds` (this module knows none of them: a
caller that knows its dataclass loads with `load_as`). Every key is checked against the dataclass fields:
an unknown key, a wrong type, a missing required field or a missing file raises `ConfigError`
with ONE line naming the key and the file. `key=value` overrides (dotted for nested keys, values
parsed as YAML) are applied to the raw mapping before validation, so they get the same checks.

A field whose dataclass metadata holds a registry (`field(metadata={"registry": DATASETS})`) is
polymorphic: its `name` key picks the concrete dataclass from that registry, e.g.
`data: {name: moving_digits, frames: 16}` is checked against `MovingDigitsConfig`. If that
dataclass has a `PRESETS` class variable (preset name -> mapping of field values) and the section
sets `preset: tiny`, the preset's values fill every key the section does not set itself.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar, Union

import yaml

from magvit import shipped
from magvit.errors import ConfigError
from magvit.fileio import atomic_write_text
from magvit.registry import Registry

T = TypeVar("T")

# kind name -> root config dataclass (each has a `kind: str` field); magvit.kinds fills it, from one table
CONFIG_KINDS: Registry[Any] = Registry("config kind")


# `option` and `registry_field` return a dataclasses.Field, typed (as dataclasses.field is) as the value
# it stands for, so that `steps: int = option(12, ...)` type-checks; without a default T is left open.
# A default of `dataclasses.MISSING` (a required field) is typed Any: its class is private to dataclasses.


def option(default: T | Any = dataclasses.MISSING, help: str = "", *,
           flags: tuple[str, ...] = (), metavar: str | None = None, names: str | None = None, cli: bool = True) -> T:
    """A config field that is also a command-line flag (magvit.cli.flags): its help, shown with the
    default; `flags` names the flag (default `--the-field-name`) and its aliases; `names` the registry
    (or mapping) whose names the help lists, as "module:attribute", read when the flag is built;
    `cli=False` keeps a field YAML-only. Declared once: the YAML key, the flag, its help, its default."""
    metadata = {"help": help, "flags": flags, "metavar": metavar, "names": names, "cli": cli}
    return dataclasses.field(default=default, metadata=metadata)


def registry_field(registry: Registry, default: T | Any = dataclasses.MISSING) -> T:
    """A dataclass field whose value is the config of one entry of `registry`, picked by `name`."""
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata={"registry": registry})
    return dataclasses.field(default_factory=lambda: default, metadata={"registry": registry})


class RegisteredConfig(Protocol):
    """A registered config: a dataclass with the `name` of its registry entry (the type of a registry
    field, whose entries are open: `quantizer`, `data`, ...)."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @property
    def name(self) -> str: ...


@dataclasses.dataclass(frozen=True)
class PresetConfig:
    """A registered config with named presets: `preset: NAME` in its section fills every key the section
    does not set from `PRESETS[NAME]` (see `_build_registered`). A subclass gives `name` its default, fills
    its own PRESETS below its model and declares its fields after these two."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]]  # preset name -> field values
    name: str
    preset: str = "base"


# ---------------------------------------------------------------------------------------------
# Validation: raw YAML mapping -> frozen dataclass


class _Invalid(Exception):
    """Raised inside validation; carries the dotted key. Turned into one ConfigError line."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message


def _type_name(tp: object) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _shown(value: object, typed: bool = False) -> str:
    """A value as an error line shows it: its repr (after its type's name if `typed`), or for a long one
    (a tensor, an array) its type and shape, so that the line stays one short line."""
    text, kind = repr(value), type(value).__name__
    if len(text) > 80 or "\n" in text:
        shape = getattr(value, "shape", None)
        return f"a {kind}" + (f" of shape {tuple(shape)}" if shape is not None else "")
    return f"{kind} {text}" if typed else text


def _validate(value: object, tp: object, key: str) -> object:  # tp: a type or a typing form
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arm in (a for a in args if a is not type(None)):
            try:
                return _validate(value, arm, key)
            except _Invalid as e:
                errors.append(e.message)
        raise _Invalid(key, errors[0] if len(errors) == 1 else f"must be {_type_name(tp)}, got {_shown(value)}")
    if origin is Literal:
        if value not in args:
            raise _Invalid(key, f"must be one of {', '.join(map(repr, args))}, got {_shown(value)}")
        return value
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, key)
    if origin in (tuple, list, Sequence):
        if not isinstance(value, (list, tuple)):
            raise _Invalid(key, f"must be a list, got {_shown(value, typed=True)}")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise _Invalid(key, f"must be a list of {len(args)} items, got {len(value)}")
            return tuple(_validate(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        return tuple(_validate(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            raise _Invalid(key, f"must be a mapping, got {_shown(value, typed=True)}")
        ktp, vtp = args if args else (Any, Any)
        return types.MappingProxyType(
            {_validate(k, ktp, key): _validate(v, vtp, f"{key}.{k}") for k, v in value.items()}
        )
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(key, f"must be a number, got {_shown(value, typed=True)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(key, f"must be an integer, got {_shown(value, typed=True)}")
        return value
    if tp in (bool, str):
        if not isinstance(value, tp):
            raise _Invalid(key, f"must be {tp.__name__}, got {_shown(value, typed=True)}")
        return value
    if tp is type(None):
        if value is not None:
            raise _Invalid(key, f"must be null, got {_shown(value)}")
        return None
    if isinstance(tp, type) and tp.__module__ not in ("builtins", "typing"):  # a Python-only value (a Tensor mask)
        if not isinstance(value, tp):
            raise _Invalid(key, f"must be a {tp.__name__} (given from Python), got {_shown(value, typed=True)}")
        return value
    raise TypeError(f"config field {key!r} has a type the loader does not handle: {tp!r}")


def _build_dataclass(cls: type[T], data: object, key: str) -> T:
    where = f"'{key}'" if key else "the top level"
    if not isinstance(data, dict):
        raise _Invalid(key, f"must be a mapping of keys for {cls.__name__}, got {_shown(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for k in data:
        if k not in fields:
            dotted = f"{key}.{k}" if key else str(k)
            nested = [f"{key}.{n}.{k}".lstrip(".") for n, tp in hints.items()
                      if n in fields and dataclasses.is_dataclass(tp) and k in {f.name for f in dataclasses.fields(tp)}]
            hint = f"; did you mean {' or '.join(repr(n) for n in nested)}?" if nested else ""
            raise _Invalid(dotted, f"unknown key (valid keys under {where}: {', '.join(fields)}){hint}")
    kwargs = {}
    for name, f in fields.items():
        dotted = f"{key}.{name}" if key else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise _Invalid(dotted, "missing required key")
            continue
        registry = f.metadata.get("registry")
        if registry is not None and data[name] is None and f.default_factory is not dataclasses.MISSING \
                and f.default_factory() is None:
            kwargs[name] = None  # an optional section switched off
        elif registry is not None:
            kwargs[name] = _build_registered(registry, data[name], dotted)
        else:
            kwargs[name] = _validate(data[name], hints[name], dotted)
    return cls(**kwargs)


def _build_registered(registry: Registry, data: object, key: str) -> RegisteredConfig:
    if dataclasses.is_dataclass(data):  # a default that is already built
        return data
    if not isinstance(data, dict) or "name" not in data:
        raise _Invalid(f"{key}.name", f"missing required key (one of: {', '.join(registry.names())})")
    name = data["name"]
    if name not in registry:
        raise _Invalid(f"{key}.name", f"unknown {registry.family} {name!r} (one of: {', '.join(registry.names())})")
    cls = registry[name].config
    presets = getattr(cls, "PRESETS", None)
    if presets is not None and "preset" in data:
        preset = data["preset"]
        if preset not in presets:
            raise _Invalid(f"{key}.preset", f"unknown preset {preset!r} for {name} (one of: {', '.join(presets)})")
        data = merge_preset(presets[preset], data)
    return _build_dataclass(cls, data, key)


def merge_preset(preset: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """Keys given in `data` win over the preset's; nested sections merge unless `name` changes."""
    merged = dict(preset)
    for k, v in data.items():
        base = merged.get(k)
        if isinstance(v, dict) and isinstance(base, dict) and v.get("name", base.get("name")) == base.get("name"):
            merged[k] = merge_preset(base, v)
        else:
            merged[k] = v
    return merged


def from_dict(cls: type[T], data: Mapping[str, Any], source: str = "<config>", overrides: Sequence[str] = ()) -> T:
    """Validate a raw mapping against dataclass `cls`; errors name the key and `source`.

    `overrides` are the dotted keys set on the command line: an error inside one names the whole
    key as typed (`bogus.key`, not just the unknown section `bogus`).
    """
    try:
        return _build_dataclass(cls, dict(data), "")
    except _Invalid as e:
        key, note = e.key, ""
        for typed in overrides:
            if typed == key or typed.startswith(key + "."):
                key, note = typed, " (set on the command line)"
                break
        raise ConfigError(f"{source}: key '{key}': {e.message}{note}") from None


def check_values(values: Mapping[str, Any], types: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Named values (a function's keyword arguments) checked against their types as a config's keys
    are, and converted the same way (a list to a tuple, an int to a float): the first wrong one is
    one ConfigError line, `<source>: argument '<name>': <what is wrong>`."""
    try:
        return {name: _validate(value, types[name], name) for name, value in values.items()}
    except _Invalid as e:
        raise ConfigError(f"{source}: argument '{e.key}': {e.message}") from None


def build_registered(registry: Registry, data: Mapping[str, Any], source: str = "<config>") -> RegisteredConfig:
    """Validate `{name: ..., **options}` against the config dataclass of `registry[name]`."""
    try:
        return _build_registered(registry, dict(data), "")
    except _Invalid as e:
        raise ConfigError(f"{source}: key '{e.key.lstrip('.')}': {e.message}") from None


# ---------------------------------------------------------------------------------------------
# Files and overrides


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """`["a.b=1", "c=[1, 2]"]` -> `{"a.b": 1, "c": [1, 2]}`; values are parsed as YAML."""
    parsed = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} is not of the form key=value (dotted.key=value for nested keys)")
        try:
            parsed[key] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            parsed[key] = raw
    return parsed


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Set each dotted key in a copy of the nested mapping `data`."""
    import copy

    data = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                prefix = ".".join(parts[: i + 1])
                raise ConfigError(
                    f"{source}: key '{dotted}': '{prefix}' is a value, not a section (set on the command line)"
                )
            node = child
        node[parts[-1]] = value
    return data


def find_config(path: str | Path) -> Path:
    """`path` as given; else, for `configs/...` (the shipped configs the README names), the shipped
    copy (magvit.shipped: the checkout's, then the installed package's), so the README's commands
    run from any folder after a non-editable install."""
    path = Path(path)
    if path.is_file() or path.is_absolute() or path.parts[:1] != ("configs",):
        return path
    found = shipped.find("configs", Path(*path.parts[1:]).as_posix()) if len(path.parts) > 1 else None
    return found if found is not None and found.is_file() else path


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = find_config(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text (YAML) file") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of keys, got {type(data).__name__}")
    return data


def load_as(cls: type[T], path: str | Path, overrides: Sequence[str] | Mapping[str, Any] = ()) -> T:
    """Read a YAML config of dataclass `cls`, apply `key=value` overrides (strings, or a parsed
    mapping of dotted keys), validate it; a `kind:` other than the dataclass's is one line."""
    source = str(path)
    parsed = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    data = apply_overrides(read_yaml(path), parsed, source)
    expected = next((f.default for f in dataclasses.fields(cls) if f.name == "kind"), None)
    if expected is not None and data.get("kind", expected) != expected:
        raise ConfigError(f"{source}: key 'kind': this command takes a '{expected}' config, got '{data.get('kind')}'")
    return from_dict(cls, data, source, overrides=list(parsed))


# ---------------------------------------------------------------------------------------------
# Back to plain data


def resolve(cls: type[T], path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
            flags: Mapping[str, Any] | None = None, how: Mapping[str, str] | None = None) -> T:
    """A config from a YAML (optional: else the dataclass's defaults) < `key=value` overrides (parsed,
    dotted) < command-line flags (dotted keys; None = not given), validated as `load_as` does. A
    required key given nowhere is one line saying how to give it: `how[key]`, else its flag (an
    `option` field's) or `key=...`."""
    expected = next(f.default for f in dataclasses.fields(cls) if f.name == "kind")
    raw = read_yaml(path) if path is not None else {"kind": expected}
    source = str(path) if path is not None else "command line"
    if raw.get("kind", expected) != expected:
        raise ConfigError(f"{source}: key 'kind': this command takes a '{expected}' config, got '{raw.get('kind')}'")
    given = {**(overrides or {}), **{k: v for k, v in (flags or {}).items() if v is not None}}
    raw = apply_overrides({**raw, "kind": expected}, given, source)
    for field in dataclasses.fields(cls):
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if required and field.name not in raw:
            raise ConfigError(f"{source}: no {field.name}: pass {(how or {}).get(field.name) or _how(field)}")
    return from_dict(cls, raw, source, overrides=list(given))


def _how(field: dataclasses.Field) -> str:
    """How a key is given on the command line: its flag (an `option` field's) or `key=...`."""
    if not field.metadata.get("cli"):
        return f"{field.name}=..."
    flag = (field.metadata["flags"] or (f"--{field.name.replace('_', '-')}",))[0]
    return f"{flag} {field.metadata['metavar'] or field.name.upper()} (or {field.name}=...)"


def to_dict(cfg: object, leaf: Callable[[object], object] = lambda value: value) -> object:
    """A frozen config (or any nest of dataclasses, mappings, lists and tuples) -> plain dicts, lists and
    scalars (YAML- and JSON-safe); `leaf` maps every other value (magvit.bench.report: NaN -> None)."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name), leaf) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {k: to_dict(v, leaf) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v, leaf) for v in cfg]
    return leaf(cfg)


def to_yaml(cfg: object) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=False)


def save_config(cfg: object, run_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config into a run folder (atomically); it reloads with `load_config`."""
    path = Path(run_dir) / name
    atomic_write_text(path, to_yaml(cfg))
    return path
