"""The optimizers shipped with the library, by name, in a source checkout and in a wheel.

The repository keeps them at its top, ``checkpoints/`` (one ``lopt export``
artifact directory each). A wheel carries a copy inside this package,
``learned_opt/_shipped/checkpoints/``, made when it is built (``setup.py``'s
``build_py``); a source checkout or an editable install reads the repository's
own. So ``load_optax("generalist")`` works from any working directory, with or
without the repository.
"""

from __future__ import annotations

import pathlib

_PACKAGED = pathlib.Path(__file__).resolve().parent / "_shipped" / "checkpoints"
_REPOSITORY = pathlib.Path(__file__).resolve().parents[1] / "checkpoints"


def checkpoints_dir() -> pathlib.Path:
    """The directory of the shipped optimizers."""
    return _PACKAGED if _PACKAGED.is_dir() else _REPOSITORY


def optimizer_names() -> list[str]:
    """The shipped optimizers' names, sorted."""
    directory = checkpoints_dir()
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.is_dir())


def find(name_or_path: str | pathlib.Path) -> pathlib.Path:
    """``name_or_path`` itself when it exists; else, when it is a bare name (no
    directory part) of a shipped optimizer, that optimizer's directory; else the
    path unchanged (loading it then fails and names the shipped ones)."""
    path = pathlib.Path(name_or_path)
    if path.exists() or path.parent != pathlib.Path("."):
        return path
    shipped = checkpoints_dir() / path.name
    return shipped if shipped.is_dir() else path
