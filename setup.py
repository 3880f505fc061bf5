"""The one build step pyproject.toml cannot say: the wheel carries the shipped configs and checkpoints
inside the package (magvit/_shipped/configs, magvit/_shipped/checkpoints), where `magvit.shipped`
finds them after a non-editable install. An editable install reads them from the checkout instead."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("configs", "checkpoints")


class BuildPyWithShipped(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "magvit" / "_shipped"
        for kind in SHIPPED:
            if (ROOT / kind).is_dir():
                shutil.rmtree(target / kind, ignore_errors=True)
                shutil.copytree(ROOT / kind, target / kind, ignore=shutil.ignore_patterns(".*", "__pycache__"))


setup(cmdclass={"build_py": BuildPyWithShipped})
