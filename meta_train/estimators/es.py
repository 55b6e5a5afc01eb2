"""Evolution-strategies estimators over any unrolled system: PES, TruncatedES, NRES, FullES.

Conventions (``meta_train.estimators.base``; tested in ``tests/test_estimators.py``):
``sigma`` is the standard deviation of each perturbation coordinate; N counts
particles; antithetic pairs ``(theta + eps, theta - eps)`` share data keys,
reset keys and episode boundaries. One ``estimate`` call advances every
particle ``trunc_len`` (K) steps and targets the gradient of the mean per-step
loss over those K steps, counting theta's influence through every earlier
truncation of each particle's episode. With fixed theta and ``stagger=False``
the mean of the calls over whole episodes targets the gradient of the mean
per-step loss over the horizon: PES, NRES and FullES estimate it without bias;
TruncatedES ignores the influence of earlier truncations and is biased.

The gradient itself is ``es_gradient.es_gradient``; each estimator says only
how it weights the losses of the episode running at the call's start and what
it accumulates (the hooks of ``_PersistentES``):

* ``PES``: every call draws a fresh eps; the accumulator xi sums the episode's
  perturbations; the running episode's weight is ``xi + eps``; xi restarts at
  eps when an episode begins.
* ``TruncatedES``: weight ``eps``; no memory of earlier truncations.
* ``NRES`` (noise-reuse ES): one perturbation per particle for its whole
  episode, drawn when the episode begins; its variance does not grow with the
  number of truncations, PES's does.
* ``FullES``: each call runs one fresh whole episode (K = T, no stagger).

A new episode's ``system.init`` runs under the perturbation its first step
uses. With ``stagger=True`` the first episode of each group starts from a
state initialised under the unperturbed theta and is cut to a uniform length
in [1, T]; ``init`` dependence on theta in that first episode is not counted.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from meta_train.estimators.base import (
    Estimate,
    Layout,
    ParticleState,
    PersistentPopulation,
    population_layout,
)
from meta_train.estimators.episodes import init_particles
from meta_train.estimators.es_gradient import ESWeights, es_gradient
from meta_train.estimators.execution import AUTO, check_population, unroll
from meta_train.estimators.noise import gaussian_like, perturb, signs_for
from meta_train.pytree import where_tree
from meta_train.systems.base import MetaTrainableSystem


@dataclasses.dataclass(frozen=True)
class _PersistentES(PersistentPopulation):
    """Persistent particles, K steps per call; subclasses override the hooks below."""

    system: MetaTrainableSystem
    num_particles: int = 8
    trunc_len: int = 20
    sigma: float = 0.01
    antithetic: bool = True
    stagger: bool = True
    particle_chunk: int = AUTO  # how the population is executed (estimators.execution)

    def __post_init__(self):
        check_population(self.num_particles, self.antithetic, self.trunc_len, self.particle_chunk)
        if not self.sigma > 0:
            raise ValueError("sigma must be > 0")

    # -- the contract (estimators.base.Estimator) --

    @property
    def layout(self) -> Layout:
        return population_layout(self.num_particles, self.antithetic)

    def init(self, theta: Any, key: jax.Array) -> ParticleState:
        k_particles, k_noise = jax.random.split(key)
        system_state, remaining = init_particles(
            self.system, theta, self.layout, k_particles, stagger=self.stagger
        )
        return ParticleState(system_state, self._initial_accumulator(theta, k_noise), remaining)

    def perturbations(self, theta: Any, key: jax.Array) -> Any:
        """The eps ``[group, ...]`` that ``estimate(theta, state, key)`` draws."""
        return self._draw_eps(theta, jax.random.split(key)[0])

    def _draw_eps(self, theta: Any, k_eps: jax.Array) -> Any:
        return gaussian_like(k_eps, theta, self.sigma, (self.num_groups,))

    def estimate(self, theta: Any, state: ParticleState, key: jax.Array) -> Estimate:
        num_signs = self.layout.num_signs
        k_eps, k_unroll = jax.random.split(key)
        eps = self._draw_eps(theta, k_eps)
        signs = signs_for(num_signs, jnp.result_type(jax.tree.leaves(theta)[0]))
        theta_new = perturb(theta, eps, signs)
        running = self._running_perturbation(state, eps)
        theta_running = None if running is None else perturb(theta, running, signs)
        u = unroll(
            self.system,
            theta_running,
            theta_new,
            self._prepare(state),
            k_unroll,
            num_steps=self.trunc_len,
            particle_chunk=self.particle_chunk,
        )
        weights = ESWeights(running=self._running_weight(state, eps), new=eps)
        grad = es_gradient(u.losses, u.in_new_episode, signs, weights, sigma=self.sigma)
        began = u.in_new_episode[-1]  # an episode began in this call
        accumulator = self._next_accumulator(state, weights, began)
        metrics = {
            "meta_loss": jnp.mean(u.losses),
            "episodes_begun": u.episodes_begun,
            "nonfinite_resets": u.nonfinite,
        }
        return Estimate(grad, ParticleState(u.system_state, accumulator, u.remaining), metrics)

    # -- what distinguishes the estimators --

    def _prepare(self, state: ParticleState) -> ParticleState:
        return state

    def _initial_accumulator(self, theta: Any, key: jax.Array) -> Any:
        del theta, key
        return ()

    def _running_perturbation(self, state: ParticleState, eps: Any) -> Any:
        """The running episodes' perturbation; None: this call's eps."""
        del state, eps
        return None

    def _running_weight(self, state: ParticleState, eps: Any) -> Any:
        del state
        return eps

    def _next_accumulator(self, state: ParticleState, weights: ESWeights, began: jax.Array) -> Any:
        del state, weights, began
        return ()


_register_es = functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["system"],
    meta_fields=[
        "num_particles",
        "trunc_len",
        "sigma",
        "antithetic",
        "stagger",
        "particle_chunk",
    ],
)


@_register_es
@dataclasses.dataclass(frozen=True)
class PES(_PersistentES):
    """Persistent ES: unbiased, accumulates each episode's perturbations xi (module doc)."""

    def _initial_accumulator(self, theta: Any, key: jax.Array) -> Any:
        del key
        return jax.tree.map(
            lambda x: jnp.zeros((self.num_groups,) + jnp.shape(x), jnp.result_type(x)), theta
        )

    def _running_weight(self, state: ParticleState, eps: Any) -> Any:
        return jax.tree.map(jnp.add, state.accumulator, eps)  # xi + eps

    def _next_accumulator(self, state: ParticleState, weights: ESWeights, began: jax.Array) -> Any:
        return where_tree(began, weights.new, weights.running)  # xi restarts at eps


@_register_es
@dataclasses.dataclass(frozen=True)
class TruncatedES(_PersistentES):
    """ES on each K-step truncation alone: cheap, biased by truncation (module doc)."""


@_register_es
@dataclasses.dataclass(frozen=True)
class NRES(_PersistentES):
    """Noise-reuse ES: one perturbation per particle per episode; unbiased (module doc)."""

    def _initial_accumulator(self, theta: Any, key: jax.Array) -> Any:
        # The (staggered) first episodes' perturbation.
        return gaussian_like(key, theta, self.sigma, (self.num_groups,))

    def _running_perturbation(self, state: ParticleState, eps: Any) -> Any:
        return state.accumulator

    def _running_weight(self, state: ParticleState, eps: Any) -> Any:
        return state.accumulator

    def _next_accumulator(self, state: ParticleState, weights: ESWeights, began: jax.Array) -> Any:
        return where_tree(began, weights.new, state.accumulator)


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["system"],
    meta_fields=["num_particles", "sigma", "antithetic", "particle_chunk"],
)
@dataclasses.dataclass(frozen=True)
class FullES(_PersistentES):
    """ES over whole episodes: each call unrolls a fresh episode of T steps per particle.

    Unbiased for the gradient of the mean per-step loss over the horizon; costs
    T steps per call and keeps no memory between calls (the particle states
    are kept only so every estimator has the same state layout).
    """

    trunc_len: int = dataclasses.field(default=1, init=False)  # the horizon, set below
    stagger: bool = dataclasses.field(default=False, init=False)

    def __post_init__(self):
        object.__setattr__(self, "trunc_len", self.system.horizon)
        super().__post_init__()

    def _prepare(self, state: ParticleState) -> ParticleState:
        return state._replace(remaining=jnp.zeros_like(state.remaining))  # begin afresh
