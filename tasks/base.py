"""The Task contract (docs/ARCHITECTURE.md).

A task is an inner training problem, pure and jittable:

* ``task.init(key) -> params``: a fresh parameter pytree;
* ``task.loss(params, batch) -> scalar``: the training objective on a batch;
* ``task.batch(key, split) -> batch``: a batch drawn *on device* from arrays
  already resident in device memory (``split`` is ``"train"``, ``"validation"``
  or ``"test"``, a Python string, so it is static under ``jit``).

A *bucket* (``TaskBucket``) is a distribution over tasks whose parameters all
have one shape: ``bucket.sample(key) -> Task`` runs inside ``jit``, so a
meta-training particle draws a new task at every episode without compiling
anything new (``tasks.family``). A single task is a bucket through ``SingleTask``.

Concrete tasks are registered pytrees: their arrays (the dataset) are leaves and
their configuration is static, so passing a task into a jitted function passes
the data as an argument instead of baking it into the compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Protocol, runtime_checkable

import jax

Params = Any
Batch = Any
SPLITS = ("train", "validation", "test")


@runtime_checkable
class Task(Protocol):
    @property
    def name(self) -> str:
        """A short unique spelling of the task, for cards and reports."""
        ...

    def init(self, key: jax.Array) -> Params: ...

    def loss(self, params: Params, batch: Batch) -> jax.Array: ...

    def batch(self, key: jax.Array, split: str) -> Batch: ...


@runtime_checkable
class ClassificationTask(Task, Protocol):
    """A task whose loss is cross-entropy over ``num_classes`` classes."""

    @property
    def num_classes(self) -> int: ...

    def accuracy(self, params: Params, batch: Batch) -> jax.Array: ...


@runtime_checkable
class EvaluableTask(Task, Protocol):
    """A task with fixed evaluation examples: ``eval_set(split)`` is the whole split
    as one batch (``lopt eval`` measures validation and test losses on a prefix)."""

    def eval_set(self, split: str) -> Batch: ...


@runtime_checkable
class TaskSpec(Protocol):
    """A hashable description of a task: its ``name`` and how to ``build`` it (loading
    its data). Held-out suites (``tasks.suites``) are tuples of specs."""

    @property
    def name(self) -> str: ...

    def build(self) -> EvaluableTask: ...


@runtime_checkable
class TaskBucket(Protocol):
    """Tasks of one parameter shape; ``sample`` is pure and jittable."""

    @property
    def name(self) -> str: ...

    def sample(self, key: jax.Array) -> Task: ...


@functools.partial(jax.tree_util.register_dataclass, data_fields=["task"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class SingleTask:
    """The bucket holding one task."""

    task: Task

    @property
    def name(self) -> str:
        return self.task.name

    def sample(self, key: jax.Array) -> Task:
        del key
        return self.task
