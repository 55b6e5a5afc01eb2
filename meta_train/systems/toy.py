"""Small unrolled systems with known answers: estimator tests and the PES paper's toys.

Each follows the system contract (``meta_train.systems.base``). They are
registered pytrees so they can be passed into jitted functions.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["a", "b", "target"], meta_fields=["horizon"]
)
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
    def create(
        cls,
        key: jax.Array,
        state_dim: int = 3,
        theta_dim: int = 2,
        horizon: int = 10,
        dtype=jnp.float64,
    ) -> LinearQuadratic:
        ka, kb, kt = jax.random.split(key, 3)
        # Spectral radius < 1 so the losses stay bounded over long horizons.
        a = jax.random.normal(ka, (state_dim, state_dim), dtype)
        a = 0.9 * a / jnp.max(jnp.abs(jnp.linalg.eigvals(a)))
        return cls(
            a=a.astype(dtype),
            b=jax.random.normal(kb, (state_dim, theta_dim), dtype),
            target=jax.random.normal(kt, (state_dim,), dtype),
            horizon=horizon,
        )

    def init(self, theta: jax.Array, key: jax.Array | None) -> jax.Array:
        del theta, key
        return jnp.zeros_like(self.target)

    def step(self, theta: jax.Array, state: jax.Array, key: jax.Array | None):
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


NO_RESET = 2**30  # a horizon no run reaches: the episode never ends


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["theta0"],
    meta_fields=["horizon", "state_dim", "num_positive", "eval_horizon"],
)
@dataclasses.dataclass(frozen=True)
class InfluenceBalancing:
    """The influence-balancing system (Tallec & Ollivier 2017; PES paper, sec. 5.1).

    ``s <- A s + theta * sign`` with ``A = 0.5 I + 0.5 (superdiagonal)``, ``sign``
    = ``num_positive`` ones then -1 for the rest, ``L = 0.5 (s[0] - 1)^2``,
    ``s_0 = 1``, no reset. theta has shape (1,). At a fixed point
    ``s[0] = 2 theta sum(sign)`` (-6 theta for 10 of 23), so the long-horizon
    optimum is ``theta* = 1 / (2 sum(sign))`` = -1/6; a short truncation sees
    only the positive influence of theta on s[0] through the first coordinates
    and pushes theta the wrong way.
    """

    theta0: jax.Array = dataclasses.field(default_factory=lambda: jnp.array([0.5]))
    horizon: int = NO_RESET
    state_dim: int = 23
    num_positive: int = 10
    eval_horizon: int = 500

    @property
    def optimum(self) -> float:
        return 1.0 / (2 * (2 * self.num_positive - self.state_dim))

    def init_theta(self, key: jax.Array) -> jax.Array:
        del key
        return jnp.asarray(self.theta0)

    def init(self, theta: jax.Array, key: jax.Array | None) -> jax.Array:
        del key
        return jnp.ones((self.state_dim,), jnp.result_type(theta))

    def step(self, theta: jax.Array, state: jax.Array, key: jax.Array | None):
        del key
        sign = jnp.where(jnp.arange(self.state_dim) < self.num_positive, 1.0, -1.0)
        shifted = jnp.concatenate([state[1:], jnp.zeros((1,), state.dtype)])
        state = 0.5 * state + 0.5 * shifted + theta[0] * sign.astype(state.dtype)
        return state, 0.5 * (state[0] - 1.0) ** 2


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["theta0"], meta_fields=["horizon"]
)
@dataclasses.dataclass(frozen=True)
class ToyRegression:
    """The PES paper's 2-D toy problem: tune a linear learning-rate schedule of SGD.

    Inner loss ``f(x) = sqrt(x0^2 + 5) - sqrt(5) + sin(x1)^2 exp(-5 x0^2)
    + 0.25 |x1 - 100|``, SGD from ``x = (1, 1)`` for ``horizon`` (T = 100) steps
    with learning rate ``(1 - t/T) exp(theta0) + (t/T) exp(theta1)`` at step t
    (t = 0..T-1). ``L_t`` is ``f`` after the t-th update; the paper's meta-loss is
    the *sum* over the horizon (``full_horizon_sum``), T times the mean per-step
    loss that the estimators target. The sin term makes a field of local minima
    that a greedy (short-horizon) schedule falls into.
    """

    theta0: jax.Array = dataclasses.field(default_factory=lambda: jnp.array([-4.0, -4.0]))
    horizon: int = 100

    def init_theta(self, key: jax.Array) -> jax.Array:
        del key
        return jnp.asarray(self.theta0)

    @staticmethod
    def inner_loss(x: jax.Array) -> jax.Array:
        return (
            jnp.sqrt(x[0] ** 2 + 5.0)
            - jnp.sqrt(5.0)
            + jnp.sin(x[1]) ** 2 * jnp.exp(-5.0 * x[0] ** 2)
            + 0.25 * jnp.abs(x[1] - 100.0)
        )

    def init(self, theta: jax.Array, key: jax.Array | None):
        del key
        return jnp.ones((2,), jnp.result_type(theta)), jnp.zeros((), jnp.int32)

    def step(self, theta: jax.Array, state, key: jax.Array | None):
        del key
        x, t = state
        frac = t.astype(x.dtype) / self.horizon
        lr = (1.0 - frac) * jnp.exp(theta[0]) + frac * jnp.exp(theta[1])
        x = x - lr * jax.grad(self.inner_loss)(x)
        return (x, t + 1), self.inner_loss(x)

    def full_horizon_sum(self, theta: jax.Array) -> jax.Array:
        """The paper's meta-loss: the sum of ``L_t`` over one episode."""

        def body(s, _):
            return self.step(theta, s, None)

        _, losses = jax.lax.scan(body, self.init(theta, None), None, length=self.horizon)
        return jnp.sum(losses)
