"""Build step: copy the shipped configs and optimizers into the package.

The repository keeps ``configs/`` and ``checkpoints/`` at its top; a wheel
carries them as ``meta_train/_shipped/configs`` and
``learned_opt/_shipped/checkpoints`` (``meta_train.resources`` and
``learned_opt.shipped`` find either). Everything else is declared in ``pyproject.toml``.
"""

import pathlib
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

# repository directory -> its place in the wheel
SHIPPED = {
    "configs": ("meta_train", "_shipped", "configs"),
    "checkpoints": ("learned_opt", "_shipped", "checkpoints"),
}


class BuildWithShipped(build_py):
    def run(self):
        super().run()
        root = pathlib.Path(__file__).resolve().parent
        for name, place in SHIPPED.items():
            target = pathlib.Path(self.build_lib).joinpath(*place)
            shutil.copytree(root / name, target, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithShipped})
