"""A user's own task, named by an entry point: ``"package.module:make_task"``.

``load_entry(entry)`` imports the module (the current directory first on the
path, as ``python -m`` does) or a file (``"path/to/file.py:make_task"``),
calls the function with no arguments, and checks what it returns against
the contracts of ``tasks.base``: a ``Task`` (``name``, ``init``, ``loss``,
``batch``) or a ``TaskBucket`` (``name``, ``sample``). Shapes are checked by
tracing (``jax.eval_shape``), so nothing runs. Every failure is one
``EntryError`` line saying what to fix.

A task that is not a registered pytree is still accepted; it is then held as
a constant of the compiled programs (its arrays baked in), which is fine for
small data. Register it (``jax.tree_util.register_dataclass``) to pass its
data as arguments instead, as ``examples/`` does.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import os
import pathlib
import sys
from typing import Any

import jax
import jax.numpy as jnp

from tasks.base import SingleTask, Task, TaskBucket

TASK_METHODS = ("name", "init", "loss", "batch")


class EntryError(ValueError):
    """A task entry point that cannot be used; the message says why."""


@functools.partial(jax.tree_util.register_dataclass, data_fields=[], meta_fields=["task"])
@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: hashed by identity, as jit needs
class ConstantTask:
    """A task that is not a pytree, held as a static (compile-time) value."""

    task: Any

    @property
    def name(self) -> str:
        return self.task.name

    def init(self, key):
        return self.task.init(key)

    def loss(self, params, batch):
        return self.task.loss(params, batch)

    def batch(self, key, split):
        return self.task.batch(key, split)


def _import(module_name: str, entry: str):
    if module_name.endswith(".py") or "/" in module_name:
        path = pathlib.Path(module_name)
        if not path.is_file():
            raise EntryError(f"task.entry {entry!r}: no such file {path}")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise EntryError(f"task.entry {entry!r}: {path} is not a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = module
        spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise EntryError(
                f"task.entry {entry!r}: no module named {e.name!r} (looked in the current "
                "directory and the Python path)"
            ) from None
        raise EntryError(f"task.entry {entry!r}: importing it failed: {e}") from None


def _line(e: BaseException) -> str:
    """An exception's message as one line (a user's may span many)."""
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else ""


def _missing(obj: Any, names) -> list[str]:
    return [n for n in names if not hasattr(obj, n)]


def load_entry(entry: str, *, split: str = "train") -> TaskBucket:
    """The bucket an entry point gives (a single task as ``SingleTask``); ``split``
    is the batch split the meta-loss will use, checked to exist."""
    module_name, sep, function = entry.rpartition(":")
    if not sep or not module_name or not function:
        raise EntryError(
            f"task.entry must be 'package.module:function' or 'file.py:function', got {entry!r}"
        )
    try:
        module = _import(module_name, entry)
    except EntryError:
        raise
    except Exception as e:  # noqa: BLE001 -- the user's module failed while importing
        raise EntryError(
            f"task.entry {entry!r}: importing it raised {type(e).__name__}: {_line(e)}"
        ) from None
    factory = getattr(module, function, None)
    if not callable(factory):
        raise EntryError(
            f"task.entry {entry!r}: module {module_name!r} has no function {function!r}"
        )
    try:
        obj = factory()
    except Exception as e:  # noqa: BLE001 -- the user's factory failed
        raise EntryError(
            f"task.entry {entry!r}: {function}() raised {type(e).__name__}: {_line(e)}"
        ) from None
    if hasattr(obj, "sample") and hasattr(obj, "name"):
        bucket = obj
    elif not _missing(obj, TASK_METHODS):
        leaves = jax.tree.leaves(obj)
        if len(leaves) == 1 and leaves[0] is obj:  # not a registered pytree
            obj = ConstantTask(obj)
        bucket = SingleTask(obj)
    else:
        raise EntryError(
            f"task.entry {entry!r}: {function}() returned a {type(obj).__name__} without the "
            f"task contract (missing {', '.join(_missing(obj, TASK_METHODS))}; see tasks/base.py)"
        )
    check_bucket(bucket, entry, split)
    return bucket


def check_bucket(bucket: TaskBucket, entry: str, split: str = "train") -> None:
    """Trace one sample, init, batch and loss; ``EntryError`` if any fails or the
    loss is not a float scalar."""
    key = jax.random.PRNGKey(0)
    try:
        task: Task = bucket.sample(key)
        for name in ("init", "loss", "batch"):
            if not callable(getattr(task, name, None)):
                raise EntryError(f"task.entry {entry!r}: the task has no method {name}()")
        params = jax.eval_shape(task.init, key)
        batches = {s: jax.eval_shape(functools.partial(task.batch, split=s), key)
                   for s in ("train", split)}  # fmt: skip
        loss = jax.eval_shape(task.loss, params, batches[split])
    except EntryError:
        raise
    except Exception as e:  # noqa: BLE001 -- the user's code failed while tracing
        raise EntryError(
            f"task.entry {entry!r}: tracing the task failed: {type(e).__name__}: {_line(e)}"
        ) from None
    if not (
        hasattr(loss, "shape") and loss.shape == () and jnp.issubdtype(loss.dtype, jnp.floating)
    ):
        raise EntryError(
            f"task.entry {entry!r}: loss(params, batch) must return a float scalar, got {loss}"
        )
