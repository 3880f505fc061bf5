"""A non-editable install works outside the source tree: the wheel carries the shipped configs and
checkpoints (magvit/_shipped), and a fresh virtual environment with only the wheel installed runs
`magvit generate --checkpoint digits-video` and `magvit quickstart` from another folder.

To stay fast and offline, the fresh environment (`python -m venv --without-pip`) gets its third-party
dependencies (torch, ...) from this environment's site-packages through a .pth file, which adds that
folder to sys.path without running its .pth files (so the editable install of this checkout stays
invisible); magvit itself comes only from the wheel (`pip install --no-deps --no-index`)."""

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _run(args, cwd, **env):
    out = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1", **env})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel built from a copy of this checkout's files (tracked and untracked, not ignored)."""
    src, dist = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("dist")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            (src / name).write_bytes((ROOT / name).read_bytes())
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, src], cwd=src)
    return next(dist.glob("magvit-*.whl"))


def test_the_wheel_carries_the_shipped_configs_and_checkpoints(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("magvit/_shipped/configs/quickstart.yaml", "magvit/_shipped/configs/generate/fp.yaml",
                 "magvit/_shipped/checkpoints/digits-video/magvit.json",
                 "magvit/_shipped/checkpoints/digits-video/tokenizer/model.safetensors", "magvit/pipeline.py",
                 "magvit/_shipped/checkpoints/digit-classifier/model.safetensors"):  # the judge of the digits scores
        assert name in names, name
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    assert {f"magvit/_shipped/{n}" for n in shipped} <= names


@pytest.mark.slow
def test_a_fresh_venv_runs_the_installed_package_from_another_folder(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    python = venv / "bin" / "python"
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path).stdout
    (Path(site.strip()) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], cwd=tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run([python, "-c", "import magvit.shipped as s; print(s.roots('checkpoints')[0])"], cwd=work).stdout
    assert where.strip().startswith(str(venv)), where  # the packaged copy, not this checkout

    magvit = venv / "bin" / "magvit"
    _run([magvit, "generate", "--checkpoint", "digits-video", "--num", "2", "--steps", "2", "--device", "cpu",
          "--out", "g.png"], cwd=work)
    assert (work / "g.png").is_file() and (work / "g.settings.yaml").is_file()
    shown = _run([magvit, "config", "show", "configs/train/digits_tiny.yaml"], cwd=work).stdout  # the README's paths
    assert "kind: train_transformer" in shown
    tiny = ["tokenizer.loop.steps=2", "tokenizer.loop.val_every=2", "tokenizer.loop.save_every=2",
            "tokenizer.loop.val_batches=1", "tokenizer.data.num_samples=8", "transformer.data.num_samples=32",
            "transformer.loop.steps=2", "transformer.loop.val_every=2", "transformer.loop.save_every=2",
            "report.samples_per_class=1", "report.eval_clips=2", "report.shown_clips=2", "report.decode.steps=2",
            "report.score_decode.steps=2", "report.classifier={clips: 20, epochs: 1}"]
    _run([magvit, "quickstart", "--out", "q", *tiny], cwd=work, MAGVIT_CACHE=str(tmp_path / "cache"))
    assert (work / "q" / "summary.json").is_file() and (work / "q" / "transformer" / "model" / "magvit.json").is_file()
