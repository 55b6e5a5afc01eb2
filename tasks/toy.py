"""Small unrolled systems with known gradients, for testing estimators.

Each follows the system contract of DESIGN.md: ``horizon``,
``init(theta, key) -> state`` and ``step(theta, state, key) -> (state, loss)``.
They are registered pytrees so they can be passed into jitted functions.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["a", "b", "target"], meta_fields=["horizon"])
@dataclasses.dataclass(frozen=True)
class LinearQuadratic:
    """``s_{t+1} = A s_t + B theta``, ``L_t = 0.5 |s_{t+1} - target|^2``, ``s_0 = 0``.

    Deterministic (the key is ignored) and quadratic in theta, so a
    Gaussian-smoothed objective has exactly the gradient of the unsmoothed one:
    an unbiased ES estimator's mean equals ``jax.grad`` of the mean per-step
    loss over the horizon (``full_horizon_loss``), with no smoothing bias.
    """

    a: jax.Array
    b: jax.Array
    target: jax.Array
    horizon: int

    @classmethod
    def create(cls, key: jax.Array, state_dim: int = 3, theta_dim: int = 2,
               horizon: int = 10, dtype=jnp.float64) -> "LinearQuadratic":
        ka, kb, kt = jax.random.split(key, 3)
        # Spectral radius < 1 so the losses stay bounded over long horizons.
        a = jax.random.normal(ka, (state_dim, state_dim), dtype)
        a = 0.9 * a / jnp.max(jnp.abs(jnp.linalg.eigvals(a)))
        return cls(a=a.astype(dtype), b=jax.random.normal(kb, (state_dim, theta_dim), dtype),
                   target=jax.random.normal(kt, (state_dim,), dtype), horizon=horizon)

    def init(self, theta: jax.Array, key: jax.Array) -> jax.Array:
        del theta, key
        return jnp.zeros_like(self.target)

    def step(self, theta: jax.Array, state: jax.Array, key: jax.Array):
        del key
        state = self.a @ state + self.b @ theta
        return state, 0.5 * jnp.sum((state - self.target) ** 2)

    def full_horizon_loss(self, theta: jax.Array) -> jax.Array:
        """Mean per-step loss over one whole episode (the ES/PES target)."""
        def body(s, _):
            s, loss = self.step(theta, s, None)
            return s, loss
        _, losses = jax.lax.scan(body, self.init(theta, None), None, length=self.horizon)
        return jnp.mean(losses)
