"""Learning-rate schedule tuning as an unrolled system.

Inner SGD on any Task (``tasks.base``) under a parameterised schedule, t = 0, 1, ...:

* ``"inverse_time"``: ``lr_t = exp(theta[0]) / (1 + t / tau) ** theta[1]``, theta
  = (log initial learning rate, decay exponent), the paper's kind;
* ``"piecewise_linear"``: ``log lr_t`` linear between knots at steps
  ``k T / (n - 1)``, k = 0..n-1, theta = the n knots' log learning rates.

``L_t`` is measured after the update on a fresh batch from ``meta_loss_split``:
with ``meta_objective = "loss"`` the task loss; with ``"accuracy"`` the error
rate ``1 - accuracy`` (argmax accuracy, for classifiers), piecewise constant in
theta, so its gradient is zero almost everywhere and only ES-type estimators
can optimise it. With a horizon much longer than the truncation, a truncated
estimator sees only the next K steps and prefers a schedule that decays too
fast (the short-horizon bias).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import cast

import jax
import jax.numpy as jnp

from meta_train.systems.base import cap_loss
from tasks.base import ClassificationTask, Task
from tasks.quadratic import NoisyQuadratic

SCHEDULES = ("inverse_time", "piecewise_linear")
META_OBJECTIVES = ("loss", "accuracy")


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["task", "theta0"],
    meta_fields=["horizon", "tau", "meta_loss_split", "loss_cap", "schedule", "meta_objective"],
)
@dataclasses.dataclass(frozen=True)
class LRScheduleSystem:
    task: Task
    theta0: jax.Array
    horizon: int = 1000
    tau: float = 10.0
    meta_loss_split: str = "validation"
    loss_cap: float = 0.0  # > 0: L_t is clipped to it and a non-finite L_t becomes it
    schedule: str = "inverse_time"  # one of SCHEDULES
    meta_objective: str = "loss"  # one of META_OBJECTIVES

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r}: choose from {', '.join(SCHEDULES)}")
        if self.meta_objective not in META_OBJECTIVES:
            raise ValueError(
                f"meta_objective {self.meta_objective!r}: choose from {', '.join(META_OBJECTIVES)}"
            )
        if self.meta_objective == "accuracy" and not hasattr(self.task, "accuracy"):
            raise ValueError("meta_objective 'accuracy' needs a classification task")

    def init_theta(self, key: jax.Array) -> jax.Array:
        del key
        return jnp.asarray(self.theta0)

    def learning_rate(self, theta: jax.Array, t: jax.Array) -> jax.Array:
        if self.schedule == "piecewise_linear":
            knots = jnp.linspace(0.0, self.horizon, theta.shape[0], dtype=theta.dtype)
            return jnp.exp(jnp.interp(t, knots, theta))
        return jnp.exp(theta[0]) / (1.0 + t / self.tau) ** theta[1]

    def init(self, theta: jax.Array, key: jax.Array):
        return self.task.init(key), jnp.zeros((), jnp.int32)

    def step(self, theta: jax.Array, state, key: jax.Array):
        params, t = state
        k_train, k_meta = jax.random.split(key)
        grads = jax.grad(self.task.loss)(params, self.task.batch(k_train, "train"))
        lr = self.learning_rate(theta, t.astype(jnp.result_type(theta)))
        params = jax.tree.map(lambda p, g: p - lr.astype(p.dtype) * g, params, grads)
        batch = self.task.batch(k_meta, self.meta_loss_split)
        if self.meta_objective == "accuracy":
            accuracy = cast(ClassificationTask, self.task).accuracy(params, batch)
            loss = 1.0 - accuracy.astype(jnp.result_type(theta))
        else:
            loss = self.task.loss(params, batch)
        if self.loss_cap > 0:
            loss = cap_loss(loss, self.loss_cap)
        return (params, t + 1), loss


def noisy_quadratic_expected_loss(system: LRScheduleSystem, theta: jax.Array) -> jax.Array:
    """Exact expected mean per-step loss over the horizon of a noisy-quadratic system.

    Coordinate i evolves as ``x <- (1 - lr h_i) x - lr noise_i``, so its second
    moment obeys ``v <- (1 - lr h_i)^2 v + lr^2 noise_scale^2`` from ``v = 1``,
    and ``E[L_t] = 0.5 sum_i h_i v_i`` (the true loss, no noise term). This is
    the objective the estimators target, without Monte-Carlo noise: grids and
    heatmaps use it.
    """
    task = system.task
    if not isinstance(task, NoisyQuadratic):
        raise TypeError(f"the expected loss is known for a NoisyQuadratic task, not {task!r}")
    h = task.curvatures

    def body(v, t):
        lr = system.learning_rate(theta, t.astype(h.dtype))
        v = (1.0 - lr * h) ** 2 * v + lr**2 * task.noise_scale**2
        return v, 0.5 * jnp.sum(h * v)

    _, losses = jax.lax.scan(body, jnp.ones_like(h), jnp.arange(system.horizon))
    return jnp.mean(losses)
