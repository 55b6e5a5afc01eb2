"""Backpropagation estimators: TBPTT (through the current truncation) and FullBPTT.

Same population conventions as the ES estimators (``meta_train.estimators.base``)
with the layout ``[1, N]`` and no perturbation: every particle runs under
theta itself. One ``TBPTT.estimate`` call advances every particle K steps and
returns the exact gradient of the mean per-step loss over those K steps *with
the state at the start of the truncation held fixed* (``stop_gradient``), so
theta's influence through earlier truncations is dropped: cheap in memory and
biased. A new episode begun inside the call is differentiated through
``system.init``. ``FullBPTT`` runs one fresh whole episode per call and
returns the exact gradient of its mean per-step loss (memory grows with T;
meant for small systems).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from meta_train.estimators.base import Estimate, Layout, ParticleState, PersistentPopulation
from meta_train.estimators.episodes import init_particles
from meta_train.estimators.execution import AUTO, check_population, unroll
from meta_train.systems.base import MetaTrainableSystem


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["system"],
    meta_fields=["num_particles", "trunc_len", "stagger", "particle_chunk"],
)
@dataclasses.dataclass(frozen=True)
class TBPTT(PersistentPopulation):
    """Truncated backprop through time over persistent particles (module doc)."""

    system: MetaTrainableSystem
    num_particles: int = 8
    trunc_len: int = 20
    stagger: bool = True
    particle_chunk: int = AUTO

    def __post_init__(self):
        check_population(self.num_particles, False, self.trunc_len, self.particle_chunk)

    @property
    def layout(self) -> Layout:
        return Layout(num_signs=1, num_groups=self.num_particles)

    def init(self, theta: Any, key: jax.Array) -> ParticleState:
        state, remaining = init_particles(
            self.system, theta, self.layout, key, stagger=self.stagger
        )
        return ParticleState(state, (), remaining)

    def estimate(self, theta: Any, state: ParticleState, key: jax.Array) -> Estimate:
        start = self._prepare(state)

        def mean_loss(th):
            thetas = jax.tree.map(
                lambda x: jnp.broadcast_to(x, (1, self.num_particles) + jnp.shape(x)), th
            )
            fixed = start._replace(system_state=jax.lax.stop_gradient(start.system_state))
            u = unroll(
                self.system,
                None,
                thetas,
                fixed,
                key,
                num_steps=self.trunc_len,
                particle_chunk=self.particle_chunk,
            )
            return jnp.mean(u.losses), u

        (loss, u), grad = jax.value_and_grad(mean_loss, has_aux=True)(theta)
        metrics = {
            "meta_loss": loss,
            "episodes_begun": u.episodes_begun,
            "nonfinite_resets": u.nonfinite,
        }
        return Estimate(grad, ParticleState(u.system_state, (), u.remaining), metrics)

    def _prepare(self, state: ParticleState) -> ParticleState:
        return state


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["system"],
    meta_fields=["num_particles", "particle_chunk"],
)
@dataclasses.dataclass(frozen=True)
class FullBPTT(TBPTT):
    """Exact gradient through one fresh whole episode per particle and call (module doc)."""

    num_particles: int = 1
    trunc_len: int = dataclasses.field(default=1, init=False)  # the horizon, set below
    stagger: bool = dataclasses.field(default=False, init=False)

    def __post_init__(self):
        object.__setattr__(self, "trunc_len", self.system.horizon)
        super().__post_init__()

    def _prepare(self, state: ParticleState) -> ParticleState:
        return state._replace(remaining=jnp.zeros_like(state.remaining))  # begin afresh
