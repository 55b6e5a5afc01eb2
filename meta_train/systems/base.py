"""The unrolled-system contract: all an estimator needs from a problem.

* ``system.horizon``: T, the number of steps after which an episode ends;
* ``system.init(theta, key) -> state``: a fresh episode;
* ``system.step(theta, state, key) -> (state, loss)``: one step; ``loss`` is L_t.

To be meta-trained by ``lopt meta-train`` (``MetaTrainableSystem``) a system
also says where theta starts, ``system.init_theta(key) -> theta``, and may set
``eval_horizon`` (steps of the evaluation episodes, default ``horizon``) and
``loss_name`` (what the mean of ``L_t`` is called in the run's log, default
"mean inner loss").

Systems are registered pytrees (arrays as leaves, configuration static) so an
estimator holding one can be passed into ``jit`` as an argument. See
docs/ARCHITECTURE.md.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax
import jax.numpy as jnp


@runtime_checkable
class UnrolledSystem(Protocol):
    @property
    def horizon(self) -> int: ...

    def init(self, theta: Any, key: jax.Array) -> Any: ...

    def step(self, theta: Any, state: Any, key: jax.Array) -> tuple[Any, jax.Array]: ...


@runtime_checkable
class MetaTrainableSystem(UnrolledSystem, Protocol):
    def init_theta(self, key: jax.Array) -> Any: ...


def cap_loss(loss: jax.Array, cap: float) -> jax.Array:
    """``loss`` clipped to ``cap``, and ``cap`` where it is not finite: one diverging
    particle cannot swamp an estimate."""
    return jnp.where(jnp.isfinite(loss), jnp.minimum(loss, cap), cap)
