"""The configs and checkpoints that ship with magvit, found the same way from a source checkout and
from an installed wheel.

Lookup order for a shipped name (`digits-video`, `quickstart.yaml`):
1. the repository's own folders (`<repo>/checkpoints`, `<repo>/configs`) when magvit runs from a
   source checkout (an editable install or `python -m magvit` in the repository);
2. the copies inside the installed package (`magvit/_shipped/checkpoints`, `magvit/_shipped/configs`),
   which the wheel build puts there (see setup.py).
A path the user gives always wins over both (the callers check it first), and a Hugging Face Hub id
comes after both (`magvit.release.find_model_folder`).
"""

from __future__ import annotations

from pathlib import Path

KINDS = ("checkpoints", "configs")
PACKAGE = Path(__file__).resolve().parent
PACKAGED = PACKAGE / "_shipped"


def source_checkout() -> Path | None:
    """The repository root when this package runs from a source checkout, else None."""
    root = PACKAGE.parent
    return root if (root / "pyproject.toml").is_file() and (root / "checkpoints").is_dir() else None


def roots(kind: str) -> list[Path]:
    """The folders holding shipped `kind` (checkpoints | configs), in lookup order; only existing ones."""
    if kind not in KINDS:
        raise ValueError(f"shipped kind must be one of {KINDS}, got {kind!r}")
    repo = source_checkout()
    found = [repo / kind] if repo is not None else []
    return [p for p in [*found, PACKAGED / kind] if p.is_dir()]


def find(kind: str, name: str) -> Path | None:
    """The shipped file or folder `name` (a relative path such as `quickstart.yaml` or
    `generate/fp.yaml`) in the first root that has it."""
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        return None
    return next((root / name for root in roots(kind) if (root / name).exists()), None)


def names(kind: str) -> list[str]:
    """The top-level names shipped under `kind`, sorted, without repeats; for checkpoints the model
    folders only (a `magvit.json` inside: not the digit classifier that judges the digits models)."""
    return sorted({p.name for root in roots(kind) for p in root.iterdir() if not p.name.startswith(".")
                   and (kind != "checkpoints" or (p / "magvit.json").is_file())})
