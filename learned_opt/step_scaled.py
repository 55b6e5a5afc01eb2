"""A learned optimizer with a learning-rate multiplier on its whole update.

``StepScaled(lopt)`` has theta ``{"rule": lopt's theta, "log_scale": scalar}``
and the update ``exp(log_scale) * lopt's update``: the learned rule gives the
direction and its own step size, the factor is the learning-rate multiplier a
user tunes per task as for Adam (Celo2 is deployed so, chained with
``optax.scale_by_learning_rate``). In an optax loop the same optimizer is
``optax.chain(learned_opt.load_optax(path), optax.scale(factor))``.
``lopt eval --tune-learned`` chooses the factor per task from
``held_out.LEARNED_SCALE_GRID`` as it chooses Adam's learning rate.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from learned_opt.base import LearnedOptimizer, init_for_run


@dataclasses.dataclass(frozen=True)
class StepScaled:
    rule: LearnedOptimizer

    @property
    def uses_horizon(self) -> bool:
        return bool(getattr(self.rule, "uses_horizon", False))

    def init_meta(self, key: jax.Array) -> dict:
        return {"rule": self.rule.init_meta(key), "log_scale": jnp.zeros((), jnp.float32)}

    def init(self, theta: dict, params: Any, num_steps: int | None = None) -> Any:
        return init_for_run(self.rule, theta["rule"], params, num_steps)

    def update(self, theta: dict, opt_state: Any, grads: Any, params: Any, loss=None):
        updates, opt_state = self.rule.update(theta["rule"], opt_state, grads, params, loss=loss)
        scale = jnp.exp(theta["log_scale"])
        return jax.tree.map(lambda u: (scale * u).astype(jnp.result_type(u)), updates), opt_state
