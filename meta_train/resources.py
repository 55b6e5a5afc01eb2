"""Where the shipped configs and optimizers are, in a source checkout and in an installed wheel.

The repository keeps them at its top, ``configs/`` and ``checkpoints/``. A
wheel carries copies inside the packages, ``meta_train/_shipped/configs/`` and
``learned_opt/_shipped/checkpoints/`` (``learned_opt.shipped``: the library
loads shipped optimizers by name without this package), made when it is built
(``setup.py``'s ``build_py``); a source checkout or an editable install reads
the repository's own. Either way the CLI resolves
``--config NAME`` and ``--optimizer NAME`` from any working directory.
"""

from __future__ import annotations

import pathlib

from learned_opt import shipped

_PACKAGED = pathlib.Path(__file__).resolve().parent / "_shipped"
_REPOSITORY = pathlib.Path(__file__).resolve().parents[1]


def _shipped(name: str) -> pathlib.Path:
    packaged = _PACKAGED / name
    return packaged if packaged.is_dir() else _REPOSITORY / name


def configs_dir() -> pathlib.Path:
    """The shipped experiment configs (``*.toml``)."""
    return _shipped("configs")


def checkpoints_dir() -> pathlib.Path:
    """The shipped optimizers (one artifact directory each; ``learned_opt.shipped``,
    which finds them for ``learned_opt.load`` too)."""
    return shipped.checkpoints_dir()


def config_names() -> list[str]:
    directory = configs_dir()
    return sorted(p.stem for p in directory.glob("*.toml")) if directory.is_dir() else []


def optimizer_names() -> list[str]:
    return shipped.optimizer_names()


def find_config(name_or_path: str) -> pathlib.Path | None:
    """A config file: ``name_or_path`` itself when it is a file, else the shipped config
    of that name (``default`` or ``default.toml``); None when neither exists."""
    path = pathlib.Path(name_or_path)
    if path.is_file():
        return path
    if path.parent == pathlib.Path(".") and path.stem in config_names():
        return configs_dir() / f"{path.stem}.toml"
    return None
