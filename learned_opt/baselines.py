"""Hand-designed optimizers behind the learned-optimizer interface.

theta holds the hyper-parameters in an unconstrained form (``log_lr``), so
these are also the simplest learned optimizers: every estimator can tune them
and evaluation compares like with like.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp


class AdamState(NamedTuple):
    mu: object
    nu: object
    step: jax.Array


class SGDMState(NamedTuple):
    velocity: object
    step: jax.Array


@dataclasses.dataclass(frozen=True)
class Adam:
    learning_rate: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def init_meta(self, key: jax.Array) -> dict:
        del key
        return {"log_lr": jnp.asarray(math.log(self.learning_rate), jnp.float32)}

    def init(self, theta: dict, params) -> AdamState:
        del theta
        zeros = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)
        return AdamState(mu=zeros, nu=zeros, step=jnp.zeros((), jnp.int32))

    def update(self, theta: dict, opt_state: AdamState, grads, params=None, loss=None):
        del params, loss
        step = opt_state.step + 1
        t = step.astype(jnp.float32)
        lr = jnp.exp(theta["log_lr"])
        mu = jax.tree.map(lambda m, g: self.b1 * m + (1 - self.b1) * g, opt_state.mu, grads)
        nu = jax.tree.map(
            lambda v, g: self.b2 * v + (1 - self.b2) * jnp.square(g), opt_state.nu, grads
        )

        def leaf_update(m, v, g):
            m_hat = m / (1 - self.b1**t)
            v_hat = v / (1 - self.b2**t)
            return (-lr * m_hat / (jnp.sqrt(v_hat) + self.eps)).astype(jnp.result_type(g))

        return jax.tree.map(leaf_update, mu, nu, grads), AdamState(mu, nu, step)


@dataclasses.dataclass(frozen=True)
class SGDM:
    learning_rate: float = 0.1
    momentum: float = 0.9

    def init_meta(self, key: jax.Array) -> dict:
        del key
        return {"log_lr": jnp.asarray(math.log(self.learning_rate), jnp.float32)}

    def init(self, theta: dict, params) -> SGDMState:
        del theta
        return SGDMState(
            jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params),
            jnp.zeros((), jnp.int32),
        )

    def update(self, theta: dict, opt_state: SGDMState, grads, params=None, loss=None):
        del params, loss
        lr = jnp.exp(theta["log_lr"])
        vel = jax.tree.map(lambda v, g: self.momentum * v + g, opt_state.velocity, grads)
        updates = jax.tree.map(lambda v, g: (-lr * v).astype(jnp.result_type(g)), vel, grads)
        return updates, SGDMState(vel, opt_state.step + 1)
