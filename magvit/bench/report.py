"""Benchmark tables: one row per method, printed on the terminal and written as JSON, CSV, Markdown.

A `Table` holds plain values (numbers, strings, None = "n/a") under column keys, the notes that
explain every "n/a" and every caveat (random weights, which memory is measured), and the
environment a figure needs to be reproduced: the exact command, the device, the torch version,
the date and the git commit.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from magvit.config import to_dict
from magvit.fileio import atomic_write_text
from magvit.runtime import environment  # noqa: F401  (re-exported: the bench modules take it from here)


@dataclass(frozen=True)
class Column:
    key: str
    header: str  # with its unit, e.g. "encode clips/s"
    digits: int = 3  # significant digits shown (JSON and CSV keep full precision)


@dataclass
class Table:
    name: str  # file stem: tokenizers -> tokenizers.json / .csv / .md
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def _cpu_details(env: dict[str, str]) -> str:
    threads = f", torch threads: {env['threads']}" if "threads" in env else ""
    return threads + (f", load average {env['load']}" if "load" in env else "")


def format_value(value: object, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        if value == 0 or 1e-3 <= abs(value) < 1e6:
            whole = len(str(int(abs(value)))) if abs(value) >= 1 else 0
            return f"{value:.{max(digits - whole, 0)}f}" if abs(value) >= 1 else f"{value:.{digits}g}"
        return f"{value:.{digits}g}"
    return str(value)


def _cells(table: Table) -> list[list[str]]:
    return [[format_value(row.get(c.key), c.digits) for c in table.columns] for row in table.rows]


def render_text(table: Table) -> str:
    """An aligned plain-text table with its title, notes and environment, for the terminal."""
    headers = [c.header for c in table.columns]
    cells = _cells(table)
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda parts: "  ".join(p.rjust(w) if i else p.ljust(w) for i, (p, w) in enumerate(zip(parts, widths)))
    out = [table.title, line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)]
    out += [f"note: {n}" for n in table.notes]
    env = table.environment
    if env:
        load = _cpu_details(env)
        out.append(f"{env['device']}{load}, torch {env['torch']}, {env['date']}, commit {env['commit']}")
    return "\n".join(out) + "\n"


def render_markdown(table: Table) -> str:
    escape = lambda s: s.replace("|", "\\|")
    out = [f"### {table.title}", ""]
    env = table.environment
    if env:
        load = _cpu_details(env)
        out += [f"`{env['command']}`", "", f"{env['device']}{load}, torch {env['torch']}, {env['date']}, "
                f"commit `{env['commit']}`", ""]
    out.append("| " + " | ".join(escape(c.header) for c in table.columns) + " |")
    numeric = lambda c: any(isinstance(r.get(c.key), (int, float)) for r in table.rows)
    out.append("|" + "|".join("---:" if numeric(c) else "---" for c in table.columns) + "|")
    out += ["| " + " | ".join(escape(v) for v in row) + " |" for row in _cells(table)]
    if table.notes:
        out += [""] + [f"- {escape(n)}" for n in table.notes]
    return "\n".join(out) + "\n"


def render_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([c.key for c in table.columns])
    for row in table.rows:
        writer.writerow(["" if row.get(c.key) is None else row.get(c.key) for c in table.columns])
    return buffer.getvalue()


def to_json(table: Table) -> dict[str, Any]:
    """Rows keep every key they hold (also those not shown as columns); None is "n/a"."""
    return {
        "name": table.name,
        "title": table.title,
        "columns": [{"key": c.key, "header": c.header} for c in table.columns],
        "rows": table.rows,
        "notes": table.notes,
        "environment": table.environment,
    }


def chart_series(table: Table) -> tuple[list[str], list[tuple[str, list[float | None]]]]:
    """The bars of a table: a label per row (its first columns, as many as tell the rows apart) and,
    for every other column holding numbers, (header, a value or None per row)."""
    columns, rows = table.columns, table.rows
    keys: list[tuple[str, ...]] = []
    for count in range(1, len(columns) + 1):
        keys = [tuple(format_value(r.get(c.key), c.digits) for c in columns[:count]) for r in rows]
        if len(set(keys)) == len(rows):
            break
    number = lambda v: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    series = [(c.header, [number(r.get(c.key)) for r in rows]) for c in columns[len(keys[0]) if keys else 0 :]]
    return [", ".join(k) for k in keys], [(h, values) for h, values in series if any(v is not None for v in values)]


def write_table(table: Table, out: str | Path | None) -> list[Path]:
    """Print the table; with `out`, also write <name>.json, .csv and .md there (atomically), and
    <name>.png: a bar chart per numeric column."""
    from magvit.plots import bar_chart

    print(render_text(table), end="", flush=True)
    if out is None:
        return []
    out = Path(out)
    paths = [out / f"{table.name}.{ext}" for ext in ("json", "csv", "md")]
    text = json.dumps(to_dict(to_json(table), leaf=_json_value), indent=2, allow_nan=False)
    atomic_write_text(paths[0], text + "\n")
    atomic_write_text(paths[1], render_csv(table))
    atomic_write_text(paths[2], render_markdown(table))
    labels, series = chart_series(table)
    if labels and series:
        paths.append(bar_chart(table.title, labels, series, out / f"{table.name}.png"))
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return paths


def _json_value(value: object) -> object:
    """A cell as JSON holds it: a one-element tensor or a NumPy scalar as its Python number, and NaN and
    infinities as None (JSON has no spelling for them); anything else json.dumps cannot write fails there."""
    if isinstance(value, np.generic) or isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
