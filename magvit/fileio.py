"""Atomic file writes: a crash or Ctrl-C never leaves a half-written config, checkpoint or video."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeAlias

from magvit.errors import MagvitError

# a value as JSON holds it: what `read_json` returns, narrowed by the caller before use
JSON: TypeAlias = dict[str, "JSON"] | list["JSON"] | str | int | float | bool | None


def ensure_folder(folder: str | os.PathLike) -> Path:
    """Create `folder` (and its parents) if needed; a place that cannot hold it (read-only, a file in
    the way, a full disk) is one MagvitError line. Commands call it before their work, so a bad --out
    fails in a second, not after the run."""
    folder = Path(folder)
    fd, probe = _temporary(folder / "write-test")
    os.close(fd)
    os.unlink(probe)
    return folder


@contextlib.contextmanager
def output_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """`ensure_folder(folder)` for a command's run: if the run fails, the folders this call made are
    removed again where they are still empty, so a refused or failed run leaves nothing behind (and
    no empty folder that looks like a result)."""
    folder = Path(folder)
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    ensure_folder(folder)
    try:
        yield folder
    except BaseException:
        for p in made:
            with contextlib.suppress(OSError):  # not empty (a file written before the failure): kept
                p.rmdir()
        raise


def check_outputs(paths: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike | None] = (),
                  overwrite: bool = False) -> None:
    """Before a command writes `paths`: one MagvitError line if one of them is also an input (the same
    file, by any name or link: never written over, even with `overwrite`) or already exists (unless
    `overwrite`). Commands call it before their work, so a refusal comes in a second."""
    given = [Path(p).expanduser() for p in inputs if p is not None]
    for path in map(Path, paths):
        if not path.expanduser().exists():
            continue
        same = next((p for p in given if p.exists() and os.path.samefile(p, path.expanduser())), None)
        if same is not None:
            raise MagvitError(f"{path} is also an input ({same}): it is never written over, even with --overwrite "
                              "(overwrite=True); write the result to another path")
        if not overwrite:
            raise MagvitError(f"{path} exists: pass --overwrite (overwrite=True) to replace it, or write to another "
                              "path")


def _temporary(path: Path) -> tuple[int, str]:
    """mkstemp next to `path` (its folder created if needed); OSError -> one MagvitError line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as e:  # a read-only place, a file where a folder should be, a full disk
        raise MagvitError(f"cannot write into {path.parent}: {e.strerror or e} ({e.filename or path.parent})") from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success rename it over `path` (same filesystem).

    The temporary name keeps the final suffix so that writers choosing a format by extension
    (imageio, PIL, safetensors) behave as for the real name.
    """
    path = Path(path)
    fd, tmp = _temporary(path)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    tmp = Path(tmp)
    try:
        yield tmp
        # mkstemp makes 0600 (and some writers, safetensors among them, replace the file): the result
        # gets the permissions open() would give
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike) -> JSON:
    """Parse a JSON file; malformed JSON is one MagvitError line naming the file and the place."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MagvitError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
