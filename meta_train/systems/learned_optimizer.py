"""The system that trains a task with a learned optimizer; theta is the optimizer's weights."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax

from learned_opt.base import LearnedOptimizer
from meta_train.systems.base import cap_loss
from meta_train.systems.inner_training import InnerState, init_inner, inner_step
from tasks.base import Task

META_LOSS_SPLITS = ("train", "validation")


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["task"],
    meta_fields=["lopt", "horizon", "meta_loss_split", "loss_cap"],
)
@dataclasses.dataclass(frozen=True)
class LearnedOptimizerSystem:
    """Inner training of ``task`` by ``lopt`` as an unrolled system.

    One step draws a training batch, takes the gradient, applies the learned
    optimizer's update (``inner_training.inner_step``), and reports as L_t the
    task loss of the *updated* parameters on a fresh batch from
    ``meta_loss_split`` (``"train"`` or ``"validation"``), capped at
    ``loss_cap`` (``systems.base.cap_loss``). Estimators restart particles
    whose state is no longer finite.
    """

    task: Task
    lopt: LearnedOptimizer
    horizon: int
    meta_loss_split: str = "train"
    loss_cap: float = 3.5

    def __post_init__(self):
        if self.meta_loss_split not in META_LOSS_SPLITS:
            raise ValueError("meta_loss_split must be 'train' or 'validation'")

    def init_theta(self, key: jax.Array) -> Any:
        return self.lopt.init_meta(key)

    def init(self, theta: Any, key: jax.Array) -> InnerState:
        return init_inner(self.task, self.lopt, theta, key, self.horizon)

    def step(self, theta: Any, state: InnerState, key: jax.Array) -> tuple[InnerState, jax.Array]:
        k_train, k_meta = jax.random.split(key)
        state, _ = inner_step(self.task, self.lopt, theta, state, self.task.batch(k_train, "train"))
        with jax.named_scope("meta_loss"):
            meta_loss = self.task.loss(state.params, self.task.batch(k_meta, self.meta_loss_split))
        return state, cap_loss(meta_loss, self.loss_cap)
