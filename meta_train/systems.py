"""Unrolled systems, and the one that trains a task with a learned optimizer.

The UnrolledSystem contract (DESIGN.md) is all an estimator needs:

* ``system.horizon``: T, the number of steps after which an episode ends;
* ``system.init(theta, key) -> state``: a fresh episode;
* ``system.step(theta, state, key) -> (state, loss)``: one step, ``loss`` = L_t.

To be meta-trained by ``lopt meta-train`` a system also says where theta
starts, ``system.init_theta(key) -> theta``, and may set ``eval_horizon``
(steps of the evaluation episodes, default ``horizon``).

Systems are registered pytrees (arrays as leaves, configuration static) so an
estimator holding one can be passed into ``jit`` as an argument.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import optax

from learned_opt.base import LearnedOptimizer
from tasks.base import Task


@runtime_checkable
class UnrolledSystem(Protocol):
    horizon: int

    def init(self, theta: Any, key: jax.Array) -> Any: ...

    def step(self, theta: Any, state: Any, key: jax.Array) -> tuple[Any, jax.Array]: ...


class InnerState(NamedTuple):
    params: Any
    opt_state: Any


@functools.partial(jax.tree_util.register_dataclass, data_fields=["task"],
                   meta_fields=["lopt", "horizon", "meta_loss_split", "loss_cap"])
@dataclasses.dataclass(frozen=True)
class LearnedOptimizerSystem:
    """Inner training of ``task`` by ``lopt``; theta is the optimizer's weights.

    One step draws a training batch, takes the gradient, applies the learned
    optimizer's update, and reports as L_t the task loss of the *updated*
    parameters on a fresh batch from ``meta_loss_split`` (``"train"`` or
    ``"validation"``). L_t is clipped to ``loss_cap`` and a non-finite value
    becomes ``loss_cap``, so one diverging particle cannot swamp an estimate;
    estimators restart particles whose state is no longer finite.
    """

    task: Task
    lopt: LearnedOptimizer
    horizon: int
    meta_loss_split: str = "train"
    loss_cap: float = 3.5

    def __post_init__(self):
        if self.meta_loss_split not in ("train", "validation"):
            raise ValueError("meta_loss_split must be 'train' or 'validation'")

    def init_theta(self, key: jax.Array):
        return self.lopt.init_meta(key)

    def init(self, theta, key: jax.Array) -> InnerState:
        params = self.task.init(key)
        return InnerState(params, self.lopt.init(theta, params))

    def step(self, theta, state: InnerState, key: jax.Array):
        # The named scopes label the compiled program's parts (bench/w1_profile.py).
        k_train, k_meta = jax.random.split(key)
        with jax.named_scope("inner_gradient"):
            loss, grads = jax.value_and_grad(self.task.loss)(state.params,
                                                             self.task.batch(k_train, "train"))
        with jax.named_scope("learned_optimizer"):
            updates, opt_state = self.lopt.update(theta, state.opt_state, grads, state.params,
                                                  loss=loss)
            params = optax.apply_updates(state.params, updates)
        with jax.named_scope("meta_loss"):
            meta_loss = self.task.loss(params, self.task.batch(k_meta, self.meta_loss_split))
        meta_loss = jnp.where(jnp.isfinite(meta_loss),
                              jnp.minimum(meta_loss, self.loss_cap), self.loss_cap)
        return InnerState(params, opt_state), meta_loss
