"""Standalone optimizer artifacts: theta + architecture + card, written with Orbax.

An artifact is a directory with two Orbax items: ``theta`` (the arrays) and
``meta`` (JSON: format name and version, the architecture config, and a card
saying what the optimizer was meta-trained on). Loading needs nothing else:
the architecture rebuilds the optimizer, whose ``init_meta`` gives the expected
structure, shapes and dtypes of theta, checked on load. Nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import hashlib
import logging
import os
import pathlib
import re
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from learned_opt import shipped
from learned_opt.base import LearnedOptimizer
from learned_opt.optax_export import as_optax
from learned_opt.registry import LEARNED_OPTIMIZERS, kind_of

FORMAT = "lopt-pes-optimizer"
FORMAT_VERSION = 1


def _ocp():
    import orbax.checkpoint as ocp  # on first use: Orbax is slow to import

    return ocp


def tree_digest(tree: Any) -> str:
    """SHA-256 over every leaf of ``tree`` (tree-flatten order): its shape, dtype and
    bytes. What checkpoints and artifacts store to detect damage Orbax cannot see."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(jax.device_get(tree)):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def quiet_closed_event_loops() -> None:
    """Keep Orbax's storage noise after a failed read out of the user's terminal.

    Its storage threads call back into asyncio loops it has closed; each raises
    "Event loop is closed" as an unraisable exception, which Python's default hook
    prints as a traceback. Its un-awaited reads and writes log "... exception was
    never retrieved" with a traceback each, and a missing metadata file is logged as an
    absl warning per lookup. Hundreds of lines would bury the one warning that
    matters; those alone are dropped (the caller reports the failure itself)."""
    previous = sys.unraisablehook
    if getattr(previous, "_lopt_quiet", False):
        return

    def hook(unraisable):
        exc = unraisable.exc_value
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        previous(unraisable)

    hook._lopt_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(  # a Task's, Future's, _GatheringFuture's
        lambda r: "exception was never retrieved" not in str(r.msg)
    )
    logging.getLogger("absl").addFilter(_not_orbax_noise)


def _not_orbax_noise(record: logging.LogRecord) -> bool:
    """False for Orbax's log lines that the caller reports itself in one line: a
    missing metadata file, and a failed write's traceback from its writer thread."""
    if str(record.msg).startswith("Metadata file does not exist"):
        return False
    return not ("orbax" in record.pathname and record.levelno >= logging.ERROR)


def short_reason(e: BaseException, limit: int = 200) -> str:
    """One short line saying why ``e`` happened: its first line, without
    TensorStore's repr of its spec, at most ``limit`` characters."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    line = line.split(" See full TensorStore details")[0]
    os_error = re.search(r"os_error_code='(\d+)'", line)  # TensorStore's failed system call
    if os_error:
        line = f"{os.strerror(int(os_error.group(1)))}: {line}"
    return line if len(line) <= limit else line[: limit - 3] + "..."


class OptimizerFileError(ValueError):
    """An optimizer artifact that cannot be used; the message names the file and why."""


def architecture(lopt: LearnedOptimizer) -> dict:
    """``{"kind": ..., **fields}``: a registered optimizer (a frozen dataclass) as JSON."""
    kind = kind_of(lopt)
    if not dataclasses.is_dataclass(lopt) or isinstance(lopt, type):
        raise TypeError(f"{type(lopt).__name__} is not a dataclass instance")
    fields = {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(lopt).items()
    }
    return {"kind": kind, **fields}


def from_architecture(arch: dict):
    arch = dict(arch)
    cls = LEARNED_OPTIMIZERS.get(arch.pop("kind", None))
    if cls is None:
        raise ValueError(f"unknown optimizer kind; known: {sorted(LEARNED_OPTIMIZERS)}")
    names = {f.name for f in dataclasses.fields(cls)}
    if set(arch) - names:
        raise ValueError(f"unknown architecture fields {sorted(set(arch) - names)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in arch.items()})


def _shapes(tree: Any) -> Any:
    return jax.tree.map(lambda x: (tuple(jnp.shape(x)), jnp.dtype(jnp.result_type(x)).name), tree)


def check_new_path(path: str | pathlib.Path) -> pathlib.Path:
    """``path`` made absolute, if an artifact can be written there: it does not exist,
    and its nearest existing parent is a directory this process may write to;
    otherwise the ``OSError`` naming the path that is in the way."""
    path = pathlib.Path(path).absolute()
    if path.exists():
        raise FileExistsError(f"{path} already exists; choose another path")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a directory to write in", str(parent))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(parent))
    return path


def save(
    path: str | pathlib.Path, lopt: LearnedOptimizer, theta: Any, card: dict | None = None
) -> pathlib.Path:
    """Write an artifact to directory ``path`` (which must not exist)."""
    path = check_new_path(path)
    want = jax.eval_shape(lopt.init_meta, jax.random.PRNGKey(0))
    if _shapes(theta) != _shapes(want):
        raise ValueError(
            f"theta does not match {type(lopt).__name__}'s architecture: expected "
            f"{_shapes(want)}, got {_shapes(theta)}"
        )
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": architecture(lopt),
        "theta_sha256": tree_digest(theta),
        "card": {
            "exported": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            **(card or {}),
        },
    }
    ocp = _ocp()
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        ckptr.save(
            path,
            args=ocp.args.Composite(
                theta=ocp.args.StandardSave(theta), meta=ocp.args.JsonSave(meta)
            ),
        )
    return path


def _stored_shapes(ocp, item: pathlib.Path):
    """``(shape, dtype)`` per leaf as Orbax recorded them, or None where unreadable
    (the restore that follows then reports the damage)."""
    try:
        tree = ocp.StandardCheckpointHandler().metadata(item).tree
        return jax.tree.map(lambda x: (tuple(x.shape), jnp.dtype(x.dtype)), tree)
    except Exception:  # noqa: BLE001
        return None


def load(path: str | pathlib.Path) -> tuple[Any, Any, dict]:
    """Return ``(lopt, theta, card)`` from an artifact directory or the name of a
    shipped optimizer (``learned_opt.shipped``: ``"generalist"``), or raise
    OptimizerFileError."""
    path = shipped.find(path).absolute()
    quiet_closed_event_loops()

    def fail(why: str):
        raise OptimizerFileError(f"{path}: {why}")

    if not path.is_dir():
        names = ", ".join(shipped.optimizer_names()) or "none"
        fail(
            "no such optimizer artifact (expected a directory written by `lopt export`, "
            f"or a shipped optimizer's name: {names})"
        )
    ocp = _ocp()
    with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
        try:
            meta = ckptr.restore(path, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        except Exception as e:  # noqa: BLE001
            fail(f"not a readable optimizer artifact (metadata: {short_reason(e)})")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            fail(f"not a {FORMAT} artifact")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            fail(
                f"format version {meta['format_version']} is newer than this library "
                f"reads ({FORMAT_VERSION}); upgrade lopt-pes"
            )
        try:
            lopt = from_architecture(meta["architecture"])
        except (KeyError, TypeError, ValueError) as e:
            fail(f"bad architecture config ({e})")
        expected = jax.eval_shape(lopt.init_meta, jax.random.PRNGKey(0))
        want = jax.tree.map(lambda x: (tuple(x.shape), jnp.dtype(x.dtype)), expected)
        # Shapes are checked from the stored metadata first: a restore into the
        # wrong shapes fails inside Orbax and leaves its reads un-awaited.
        if _stored_shapes(ocp, path / "theta") not in (None, want):
            fail("theta does not match the architecture's shapes")
        try:
            theta = ckptr.restore(
                path, args=ocp.args.Composite(theta=ocp.args.StandardRestore(expected))
            ).theta
        except Exception as e:  # noqa: BLE001
            fail(f"theta is damaged or does not match the architecture ({short_reason(e)})")
    if jax.tree.map(lambda x: (tuple(x.shape), jnp.dtype(x.dtype)), theta) != want:
        fail("theta does not match the architecture's shapes")
    if "theta_sha256" in meta and meta["theta_sha256"] != tree_digest(theta):
        fail("theta is damaged (its checksum does not match the one written with it)")
    return lopt, theta, meta.get("card", {})


def load_optax(
    path: str | pathlib.Path, num_steps: int | None = None
) -> optax.GradientTransformationExtraArgs:
    """An exported optimizer (an artifact directory, or a shipped optimizer's name)
    as an optax transformation (see ``as_optax``; ``num_steps``, the run's length,
    is needed by a horizon-aware one)."""
    lopt, theta, _ = load(path)
    return as_optax(lopt, theta, num_steps)
