"""The learned-optimizer contract (docs/ARCHITECTURE.md).

* ``lopt.init_meta(key) -> theta``: the meta-parameters (a pytree of arrays);
* ``lopt.init(theta, params) -> opt_state``: per-run state (momenta, step...);
  a rule whose ``uses_horizon`` is true also reads the run's length,
  ``init(theta, params, num_steps=T)`` (``HorizonAwareOptimizer``); callers that
  know it go through ``init_for_run``, which passes it only to those;
* ``lopt.update(theta, opt_state, grads, params, loss=None) -> (updates, opt_state)``:
  ``updates`` are *added* to ``params`` (optax convention: descent is negative).

Implementations are frozen dataclasses of static configuration, so they are
hashable and can be closed over or passed as static arguments to ``jit``.
Hand-designed baselines implement the same interface, with their
hyper-parameters as theta, so every estimator and evaluation treats them alike.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax

Theta = Any
Params = Any
OptState = Any


@runtime_checkable
class LearnedOptimizer(Protocol):
    def init_meta(self, key: jax.Array) -> Theta: ...

    def init(self, theta: Theta, params: Params) -> OptState: ...

    def update(
        self,
        theta: Theta,
        opt_state: OptState,
        grads: Params,
        params: Params,
        loss: jax.Array | None = None,
    ) -> tuple[Params, OptState]: ...


@runtime_checkable
class HorizonAwareOptimizer(LearnedOptimizer, Protocol):
    """A rule whose state depends on how many updates the run will make."""

    @property
    def uses_horizon(self) -> bool: ...

    def init(self, theta: Theta, params: Params, num_steps: int | None = None) -> OptState: ...


def check_run_length(num_steps: int | None) -> None:
    """``ValueError`` unless ``num_steps`` (the updates a run will make, which a
    horizon-aware rule needs) is a count >= 1."""
    if num_steps is None or int(num_steps) < 1:
        raise ValueError(
            "this optimizer is horizon-aware: give it num_steps, the number of updates "
            f"the run will make (>= 1), got {num_steps!r}"
        )


def init_for_run(
    lopt: LearnedOptimizer, theta: Theta, params: Params, num_steps: int | None
) -> OptState:
    """``lopt``'s state for a run of ``num_steps`` updates: the length is passed to
    rules that read it (``uses_horizon``) and not to the others."""
    if getattr(lopt, "uses_horizon", False):
        return lopt.init(theta, params, num_steps=num_steps)  # type: ignore[call-arg]
    return lopt.init(theta, params)
