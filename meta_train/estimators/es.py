"""Evolution-strategies estimators over any unrolled system: PES, TruncatedES, NRES, FullES.

Conventions, fixed here and tested (``tests/test_estimators.py``):

* ``sigma`` is the standard deviation of each perturbation coordinate:
  ``eps ~ N(0, sigma^2 I)``.
* ``num_particles`` (N) counts particles. With ``antithetic=True`` they form
  N/2 pairs ``(theta + eps, theta - eps)`` sharing data keys, reset keys and
  episode boundaries; every per-particle array is laid out ``[sign, group]``
  (``meta_train.estimators.unroll``).
* One ``estimate`` call advances every particle ``trunc_len`` (K) steps and
  targets the gradient of the *mean per-step loss over those K steps*,
  counting theta's influence through every earlier truncation of each
  particle's episode. With fixed theta and ``stagger=False``, the mean of the
  calls over whole episodes targets the gradient of the mean per-step loss
  over the horizon: PES, NRES and FullES estimate it without bias;
  TruncatedES ignores the influence of earlier truncations and is biased.

Each particle's K losses are split at an episode that begins inside the call:
``L_old`` (steps of the episode that was running) and ``L_new`` (steps of the
episode begun in this call). With sign s and this call's perturbation eps, the
estimate is ``sum over particles of s * (w_old * L_old + eps * L_new) / (K N sigma^2)``:

* ``PES``: every call draws a fresh eps; ``w_old = xi + eps`` where xi, the
  accumulator, sums the episode's earlier perturbations; xi restarts at eps
  when an episode begins.
* ``TruncatedES``: ``w_old = eps``; no memory of earlier truncations.
* ``NRES`` (noise-reuse ES): one perturbation per particle for its whole
  episode, drawn when the episode begins; ``w_old`` is that perturbation.
  Its variance does not grow with the number of truncations, PES's does.
* ``FullES``: each call runs one fresh whole episode (K = T, no stagger).

A new episode's ``system.init`` runs under the perturbation its first step
uses. With ``stagger=True`` the first episode of each group starts from a
state initialised under the unperturbed theta and is cut to a uniform length
in [1, T]; ``init`` dependence on theta in that first episode is not counted.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from meta_train.estimators.common import gaussian_like, split_particles, where_tree
from meta_train.estimators.unroll import (AUTO, ParticleState, check_population,
                                          init_particles, unroll)

PES_MODE, TRUNCATED_MODE, NOISE_REUSE_MODE = "pes", "truncated", "noise_reuse"


def _check(num_particles: int, antithetic: bool, trunc_len: int, sigma: float,
           particle_chunk: int) -> None:
    check_population(num_particles, antithetic, trunc_len, particle_chunk)
    if not sigma > 0:
        raise ValueError("sigma must be > 0")


def _es_init(system, mode, layout, sigma, theta, key, stagger) -> ParticleState:
    k_particles, k_noise = jax.random.split(key)
    state, remaining = init_particles(system, theta, layout, k_particles, stagger)
    groups = layout[1]
    if mode == PES_MODE:
        accumulator = jax.tree.map(
            lambda x: jnp.zeros((groups,) + jnp.shape(x), jnp.result_type(x)), theta)
    elif mode == NOISE_REUSE_MODE:  # the (staggered) first episodes' perturbation
        accumulator = gaussian_like(k_noise, theta, sigma, (groups,))
    else:
        accumulator = ()
    return ParticleState(state, accumulator, remaining)


def _perturb(theta, noise, signs):
    """theta + sign * noise with leading axes [sign, group]."""
    return jax.tree.map(lambda th, e: th + signs.reshape((-1, 1) + (1,) * jnp.ndim(th))
                        * e[None], theta, noise)


def _es_estimate(system, mode, layout, num_particles, sigma, trunc_len, particle_chunk, theta,
                 state: ParticleState, key):
    num_signs, groups = layout
    k_eps, k_unroll = jax.random.split(key)
    eps = gaussian_like(k_eps, theta, sigma, (groups,))
    dtype = jnp.result_type(jax.tree.leaves(theta)[0])
    signs = jnp.asarray([1.0, -1.0][:num_signs], dtype)
    thetas_new = _perturb(theta, eps, signs)
    if mode == NOISE_REUSE_MODE:
        thetas_old, w_old = _perturb(theta, state.accumulator, signs), state.accumulator
    elif mode == PES_MODE:
        thetas_old, w_old = thetas_new, jax.tree.map(jnp.add, state.accumulator, eps)
    else:
        thetas_old, w_old = thetas_new, eps
    u = unroll(system, thetas_old, thetas_new, state.system_state, state.remaining,
               k_unroll, trunc_len, particle_chunk)

    fresh = u.fresh.astype(u.losses.dtype)[:, None, :]  # [K, 1, group]
    signed = signs[:, None] * u.losses  # [K, sign, group]
    a = jnp.sum(signed * (1.0 - fresh), axis=(0, 1))  # [group]: sum of s * L_old
    b = jnp.sum(signed * fresh, axis=(0, 1))  # [group]: sum of s * L_new
    scale = 1.0 / (trunc_len * num_particles * sigma ** 2)
    grad = jax.tree.map(lambda wo, e: (jnp.tensordot(a.astype(e.dtype), wo, axes=1)
                                       + jnp.tensordot(b.astype(e.dtype), e, axes=1)) * scale,
                        w_old, eps)
    if mode == PES_MODE:
        accumulator = where_tree(u.fresh[-1], eps, w_old)  # an episode began in this call
    elif mode == NOISE_REUSE_MODE:
        accumulator = where_tree(u.fresh[-1], eps, state.accumulator)
    else:
        accumulator = ()
    metrics = {"meta_loss": jnp.mean(u.losses), "episodes_begun": u.episodes_begun,
               "nonfinite_resets": u.nonfinite}
    return grad, ParticleState(u.system_state, accumulator, u.remaining), metrics


@dataclasses.dataclass(frozen=True)
class _PersistentES:
    """Shared by PES, TruncatedES and NRES: persistent particles, K steps per call."""

    system: object
    num_particles: int = 8
    trunc_len: int = 20
    sigma: float = 0.01
    antithetic: bool = True
    stagger: bool = True
    particle_chunk: int = AUTO  # particles vectorised together (meta_train.estimators.unroll)
    _mode = PES_MODE  # a class constant: how the losses are weighted (module doc)

    def __post_init__(self):
        _check(self.num_particles, self.antithetic, self.trunc_len, self.sigma,
               self.particle_chunk)

    @property
    def layout(self) -> tuple[int, int]:
        return split_particles(self.num_particles, self.antithetic)

    def init(self, theta, key: jax.Array) -> ParticleState:
        return _es_init(self.system, self._mode, self.layout, self.sigma, theta, key,
                        self.stagger)

    def estimate(self, theta, state: ParticleState, key: jax.Array):
        return _es_estimate(self.system, self._mode, self.layout, self.num_particles,
                            self.sigma, self.trunc_len, self.particle_chunk, theta, state, key)


_register_es = functools.partial(
    jax.tree_util.register_dataclass, data_fields=["system"],
    meta_fields=["num_particles", "trunc_len", "sigma", "antithetic", "stagger",
                 "particle_chunk"])


@_register_es
@dataclasses.dataclass(frozen=True)
class PES(_PersistentES):
    """Persistent ES: unbiased, accumulates each episode's perturbations (module doc)."""

    _mode = PES_MODE


@_register_es
@dataclasses.dataclass(frozen=True)
class TruncatedES(_PersistentES):
    """ES on each K-step truncation alone: cheap, biased by truncation (module doc)."""

    _mode = TRUNCATED_MODE


@_register_es
@dataclasses.dataclass(frozen=True)
class NRES(_PersistentES):
    """Noise-reuse ES: one perturbation per particle per episode; unbiased (module doc)."""

    _mode = NOISE_REUSE_MODE


@functools.partial(jax.tree_util.register_dataclass, data_fields=["system"],
                   meta_fields=["num_particles", "sigma", "antithetic", "particle_chunk"])
@dataclasses.dataclass(frozen=True)
class FullES:
    """ES over whole episodes: each call unrolls a fresh episode of T steps per particle.

    Unbiased for the gradient of the mean per-step loss over the horizon; costs
    T steps per call and keeps no memory between calls (the particle states
    are kept only so every estimator has the same state layout).
    """

    system: object
    num_particles: int = 8
    sigma: float = 0.01
    antithetic: bool = True
    particle_chunk: int = AUTO

    def __post_init__(self):
        _check(self.num_particles, self.antithetic, 1, self.sigma, self.particle_chunk)

    @property
    def trunc_len(self) -> int:
        return self.system.horizon

    @property
    def layout(self) -> tuple[int, int]:
        return split_particles(self.num_particles, self.antithetic)

    def init(self, theta, key: jax.Array) -> ParticleState:
        return _es_init(self.system, TRUNCATED_MODE, self.layout, self.sigma, theta, key,
                        stagger=False)

    def estimate(self, theta, state: ParticleState, key: jax.Array):
        state = state._replace(remaining=jnp.zeros_like(state.remaining))  # begin afresh
        return _es_estimate(self.system, TRUNCATED_MODE, self.layout, self.num_particles,
                            self.sigma, self.trunc_len, self.particle_chunk, theta, state, key)
