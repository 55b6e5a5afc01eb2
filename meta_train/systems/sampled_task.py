"""Inner training of a task drawn afresh at every episode, with a per-task meta-loss.

``SampledTaskSystem(bucket, lopt, horizon)`` is the system behind task
families and users' own tasks. At each episode start (``init``) it draws a
task from the bucket (``tasks.base.TaskBucket``; one task is
``tasks.base.SingleTask``) and, if ``augmentation`` is on, the episode's
scales (``tasks.augmentation``); the draw's key and scales are part of the
state, so each step trains the same task, and drawing a new task compiles
nothing new.

The meta-loss L_t is the task's own loss (unscaled by augmentation) of the
updated parameters on a fresh ``meta_loss_split`` batch, normalised as
``normalise`` says:

* ``"ratio"``: ``L_t / L_0``, where ``L_0`` is the same loss of the episode's
  initial parameters on one batch, so tasks whose losses differ in scale count
  alike (``L_0`` does not depend on theta, so the objective is still a mean of
  per-step losses and estimators stay unbiased for it; measured on one batch,
  it carries that batch's noise, a random weight on the episode);
* ``"none"``: the loss itself.

It is then capped at ``loss_cap`` (``systems.base.cap_loss``): with ``ratio``,
1.5 means "half again the initial loss", which only a diverging particle
reaches.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax

from learned_opt.base import LearnedOptimizer
from meta_train.systems.base import cap_loss
from meta_train.systems.inner_training import InnerState, init_inner, inner_step
from meta_train.systems.learned_optimizer import META_LOSS_SPLITS
from tasks.augmentation import Augmentation, AugmentedTask, Scales
from tasks.base import Task, TaskBucket

NORMALISATIONS = ("ratio", "none")


class SampledTaskState(NamedTuple):
    inner: InnerState
    task_key: jax.Array  # draws the episode's task from the bucket
    scales: Scales | None  # the episode's augmentation; None when it is off
    initial_loss: jax.Array  # L_0: the meta-loss of the initial parameters


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["bucket"],
    meta_fields=["lopt", "horizon", "meta_loss_split", "augmentation", "normalise", "loss_cap"],
)
@dataclasses.dataclass(frozen=True)
class SampledTaskSystem:
    bucket: TaskBucket
    lopt: LearnedOptimizer
    horizon: int
    meta_loss_split: str = "train"
    augmentation: Augmentation = Augmentation()
    normalise: str = "ratio"
    loss_cap: float = 1.5

    def __post_init__(self):
        if self.meta_loss_split not in META_LOSS_SPLITS:
            raise ValueError("meta_loss_split must be 'train' or 'validation'")
        if self.normalise not in NORMALISATIONS:
            raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {self.normalise!r}")
        if self.horizon < 1:
            raise ValueError("horizon must be >= 1")
        if not self.loss_cap > 0:
            raise ValueError("loss_cap must be > 0")

    @property
    def name(self) -> str:
        return self.bucket.name

    def init_theta(self, key: jax.Array) -> Any:
        return self.lopt.init_meta(key)

    def _trained_task(self, task: Task, scales: Scales | None) -> Task:
        return task if scales is None else AugmentedTask(task, scales)

    def init(self, theta: Any, key: jax.Array) -> SampledTaskState:
        k_task, k_scales, k_params, k_batch = jax.random.split(key, 4)
        task = self.bucket.sample(k_task)
        scales = None
        if self.augmentation.enabled:
            scales = self.augmentation.draw(k_scales, jax.eval_shape(task.init, k_params))
        trained = self._trained_task(task, scales)
        inner = init_inner(trained, self.lopt, theta, k_params, self.horizon)
        initial = self._task_loss(trained, inner.params, task.batch(k_batch, self.meta_loss_split))
        return SampledTaskState(inner, k_task, scales, initial)

    def _task_loss(self, trained: Task, params: Any, batch: Any) -> jax.Array:
        if isinstance(trained, AugmentedTask):
            return trained.task_loss(params, batch)
        return trained.loss(params, batch)

    def step(
        self, theta: Any, state: SampledTaskState, key: jax.Array
    ) -> tuple[SampledTaskState, jax.Array]:
        trained = self._trained_task(self.bucket.sample(state.task_key), state.scales)
        k_train, k_meta = jax.random.split(key)
        inner, _ = inner_step(
            trained, self.lopt, theta, state.inner, trained.batch(k_train, "train")
        )
        with jax.named_scope("meta_loss"):
            loss = self._task_loss(
                trained, inner.params, trained.batch(k_meta, self.meta_loss_split)
            )
            if self.normalise == "ratio":
                loss = loss / state.initial_loss
        return state._replace(inner=inner), cap_loss(loss, self.loss_cap)
