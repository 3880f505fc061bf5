"""The README's "Use from Python" examples run as written, in a fresh folder, on the shipped model."""

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).parents[1]


def python_examples(section: str) -> list[str]:
    """The ```python blocks of one `## section` of the README."""
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start : end if end > 0 else None], flags=re.S)


def test_use_from_python_runs_as_written(tmp_path, monkeypatch, capsys):
    blocks = python_examples("Use from Python")
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), scope)  # one scope: the second block uses the first's names
    assert capsys.readouterr().out.strip() == "torch.Size([4, 3, 9, 32, 32])"
    for name in ("future", "middle", "filled", "wider"):
        assert scope[name].shape[1:] == (3, 9, 32, 32) and scope[name].abs().max() <= 1, name
    assert scope["future"].shape[0] == 2 and scope["edited"].shape == (1, 3, 1, 32, 32)
    assert scope["ids"].dtype == torch.int64 and scope["ids"].shape[0] == 4
    for path in ("digits.gif", "my-digits/README.md", "my-digits/magvit.json", "my-tokenizer/config.json"):
        assert (tmp_path / path).is_file(), path


def test_gitignore_covers_what_the_readmes_commands_write():
    """Every output the README's commands and examples write in the folder they run from (--out,
    out=, run_dir=, pipe.save / save_pretrained, and the settings file next to a sampled file) is
    ignored by git, so a user's `git status` after trying the README stays clean."""
    import shutil
    import subprocess

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    text = (ROOT / "README.md").read_text()
    found = set(re.findall(r"(?:--out|out=|run_dir=)\s*([\w./-]+)", text))
    found |= set(re.findall(r"\.save(?:_pretrained)?\(\s*(?:\w+,\s*)?\"([^\"]+)\"", text))
    paths = {p for p in found if p not in ("DIR",) and not p.startswith("/")}
    assert {"samples/gen", "digit.png", "digits.gif", "my-digits", "runs/quickstart"} <= paths, paths
    sampled = re.findall(r"magvit (?:generate|predict|interpolate|inpaint|outpaint|edit) [^\n]*--out ([\w./-]+)", text)
    settings = {str(Path(p).with_name(f"{Path(p).stem}.settings.yaml")) for p in sampled if Path(p).suffix}
    assert "pred.settings.yaml" in settings, settings
    names = sorted(paths | settings)
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], input="\n".join(names), cwd=ROOT,
                             capture_output=True, text=True).stdout.split()
    assert sorted(set(names) - set(ignored)) == [], "not in .gitignore"
