"""Where the shipped configs and optimizers are, in a source checkout and in an installed wheel.

The repository keeps them at its top, ``configs/`` and ``checkpoints/``. A
wheel carries copies inside the package, ``meta_train/_shipped/``, made when
it is built (``setup.py``'s ``build_py``); a source checkout or an editable
install reads the repository's own. Either way the CLI resolves
``--config NAME`` and ``--optimizer NAME`` from any working directory.
"""

from __future__ import annotations

import pathlib

_PACKAGED = pathlib.Path(__file__).resolve().parent / "_shipped"
_REPOSITORY = pathlib.Path(__file__).resolve().parents[1]


def _shipped(name: str) -> pathlib.Path:
    packaged = _PACKAGED / name
    return packaged if packaged.is_dir() else _REPOSITORY / name


def configs_dir() -> pathlib.Path:
    """The shipped experiment configs (``*.toml``)."""
    return _shipped("configs")


def checkpoints_dir() -> pathlib.Path:
    """The shipped optimizers (one artifact directory each)."""
    return _shipped("checkpoints")


def config_names() -> list[str]:
    directory = configs_dir()
    return sorted(p.stem for p in directory.glob("*.toml")) if directory.is_dir() else []


def optimizer_names() -> list[str]:
    directory = checkpoints_dir()
    return sorted(p.name for p in directory.iterdir() if p.is_dir()) if directory.is_dir() else []


def find_config(name_or_path: str) -> pathlib.Path | None:
    """A config file: ``name_or_path`` itself when it is a file, else the shipped config
    of that name (``default`` or ``default.toml``); None when neither exists."""
    path = pathlib.Path(name_or_path)
    if path.is_file():
        return path
    if path.parent == pathlib.Path(".") and path.stem in config_names():
        return configs_dir() / f"{path.stem}.toml"
    return None
