"""Build step: copy the shipped configs and optimizers into the package.

The repository keeps ``configs/`` and ``checkpoints/`` at its top; a wheel
carries them as ``meta_train/_shipped/`` (``meta_train.resources`` finds
either). Everything else is declared in ``pyproject.toml``.
"""

import pathlib
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("configs", "checkpoints")


class BuildWithShipped(build_py):
    def run(self):
        super().run()
        root = pathlib.Path(__file__).resolve().parent
        for name in SHIPPED:
            target = pathlib.Path(self.build_lib) / "meta_train" / "_shipped" / name
            shutil.copytree(root / name, target, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithShipped})
