"""Persistent Evolution Strategies (Vicol, Metz, Sohl-Dickstein, ICML 2021).

Conventions, fixed here and tested:

* ``sigma`` is the standard deviation of each perturbation coordinate:
  ``eps ~ N(0, sigma^2 I)``.
* ``num_particles`` (N) counts particles. With ``antithetic=True`` they form
  N/2 pairs ``(theta + eps, theta - eps)`` that share data keys, reset keys and
  episode boundaries; the layout of every per-particle array is
  ``[sign, group]`` = ``[2, N/2]`` (``[1, N]`` without antithetic sampling).
* One ``estimate`` call advances every particle ``trunc_len`` (K) steps with a
  fresh perturbation and returns an unbiased estimate of the gradient of the
  *mean per-step loss over those K steps*, counting theta's influence through
  every earlier truncation of each particle's episode. With fixed theta and
  ``stagger=False``, the mean of the calls over whole episodes is therefore an
  unbiased estimate of the gradient of the mean per-step loss over the horizon.

The estimate for particle j with sign s_j, accumulated perturbation xi_j
(the sum of its perturbations since its episode began) and this call's
perturbation eps_j is ``(s_j * xi_j^new) L_j / (N sigma^2)`` summed over
particles, where an episode that ends inside the truncation splits L_j: steps
before the reset are weighted by ``xi_j + eps_j``, steps after it by ``eps_j``
alone (the new episode began under this truncation's perturbation, also when
``init`` depends on theta), and the accumulator restarts at ``eps_j``.

Episodes end after ``system.horizon`` (T) steps, or at once when a particle's
state stops being finite (counted in ``metrics["nonfinite_resets"]``); both
members of a pair restart together. With ``stagger=True`` each group's first
episode is cut to a uniform length in [1, T], so the population covers all of
``[0, T)`` after one horizon instead of moving in lockstep.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from meta_train.estimators.common import all_finite, gaussian_like, split_particles, where_tree


class PESState(NamedTuple):
    system_state: Any  # every leaf has leading axes [sign, group]
    accumulator: Any  # theta-shaped, leading axis [group]: xi of the current episode
    remaining: jax.Array  # int32 [group]: steps left in the current episode


@functools.partial(jax.tree_util.register_dataclass, data_fields=["system"],
                   meta_fields=["num_particles", "trunc_len", "sigma", "antithetic", "stagger"])
@dataclasses.dataclass(frozen=True)
class PES:
    system: Any
    num_particles: int = 8
    trunc_len: int = 20
    sigma: float = 0.01
    antithetic: bool = True
    stagger: bool = True

    def __post_init__(self):
        split_particles(self.num_particles, self.antithetic)
        if self.trunc_len < 1:
            raise ValueError("trunc_len must be >= 1")
        if not self.sigma > 0:
            raise ValueError("sigma must be > 0")

    @property
    def layout(self) -> tuple[int, int]:
        return split_particles(self.num_particles, self.antithetic)

    def _signs(self, dtype) -> jax.Array:
        return jnp.asarray([1.0, -1.0] if self.antithetic else [1.0], dtype)

    def _init_particles(self, thetas, keys):
        """thetas: leading [sign, group] (or None axis); keys: [group]."""
        return jax.vmap(jax.vmap(self.system.init, (0, 0)), (0, None))(thetas, keys)

    def init(self, theta, key: jax.Array) -> PESState:
        num_signs, groups = self.layout
        k_init, k_stagger = jax.random.split(key)
        thetas = jax.tree.map(lambda x: jnp.broadcast_to(x, (num_signs, groups) + jnp.shape(x)),
                              theta)
        state = self._init_particles(thetas, jax.random.split(k_init, groups))
        horizon = self.system.horizon
        if self.stagger:
            remaining = jax.random.randint(k_stagger, (groups,), 1, horizon + 1)
        else:
            remaining = jnp.full((groups,), horizon)
        accumulator = jax.tree.map(lambda x: jnp.zeros((groups,) + jnp.shape(x),
                                                       jnp.result_type(x)), theta)
        return PESState(state, accumulator, remaining.astype(jnp.int32))

    def estimate(self, theta, state: PESState, key: jax.Array):
        num_signs, groups = self.layout
        k_eps, k_step, k_reset = jax.random.split(key, 3)
        eps = gaussian_like(k_eps, theta, self.sigma, (groups,))
        thetas = jax.tree.map(lambda th, e: th + self._signs(e.dtype).reshape(
            (num_signs, 1) + (1,) * jnp.ndim(th)) * e[None], theta, eps)
        step_all = jax.vmap(jax.vmap(self.system.step, (0, 0, 0)), (0, 0, None))
        finite_all = jax.vmap(jax.vmap(all_finite))
        horizon = self.system.horizon

        def body(carry, keys):
            sys_state, remaining, reset_seen, nonfinite = carry
            step_keys, reset_keys = keys
            new_state, loss = step_all(thetas, sys_state, step_keys)
            in_new_episode = reset_seen  # this step's loss belongs to an episode begun here
            remaining = remaining - 1
            bad = ~jnp.all(finite_all(new_state), axis=0)
            reset = (remaining <= 0) | bad
            fresh = self._init_particles(thetas, reset_keys)
            sys_state = where_tree(jnp.broadcast_to(reset, (num_signs, groups)), fresh,
                                   new_state)
            remaining = jnp.where(reset, jnp.int32(horizon), remaining)
            carry = (sys_state, remaining, reset_seen | reset, nonfinite + jnp.sum(bad, dtype=jnp.int32))
            return carry, (loss, in_new_episode, reset)

        keys = (jax.random.split(k_step, (self.trunc_len, groups)),
                jax.random.split(k_reset, (self.trunc_len, groups)))
        carry0 = (state.system_state, state.remaining, jnp.zeros((groups,), bool),
                  jnp.zeros((), jnp.int32))
        (sys_state, remaining, reset_seen, nonfinite), (losses, post, resets) = jax.lax.scan(
            body, carry0, keys)

        # losses [K, sign, group]; post [K, group]
        post_w = post.astype(losses.dtype)[:, None, :] / self.trunc_len
        pre_w = 1.0 / self.trunc_len - post_w
        signs = self._signs(losses.dtype)[:, None]
        a = jnp.sum(signs * jnp.sum(losses * pre_w, axis=0), axis=0)  # [group]
        b = jnp.sum(signs * jnp.sum(losses * post_w, axis=0), axis=0)
        scale = 1.0 / (self.num_particles * self.sigma ** 2)

        def leaf_grad(xi, e):
            return (jnp.tensordot(a.astype(e.dtype), xi + e, axes=1)
                    + jnp.tensordot(b.astype(e.dtype), e, axes=1)) * scale

        grad = jax.tree.map(leaf_grad, state.accumulator, eps)
        accumulator = where_tree(reset_seen, eps, jax.tree.map(jnp.add, state.accumulator, eps))
        metrics = {
            "meta_loss": jnp.mean(losses),
            "episodes_ended": jnp.sum(resets),
            "nonfinite_resets": nonfinite,
        }
        return grad, PESState(sys_state, accumulator, remaining), metrics
