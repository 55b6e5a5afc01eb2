"""Backpropagation estimators: TBPTT (through the current truncation) and FullBPTT.

Same population conventions as the ES estimators (``meta_train.estimators.es``)
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

import jax
import jax.numpy as jnp

from meta_train.estimators.unroll import (AUTO, ParticleState, check_population,
                                          init_particles, unroll)


def _bptt_estimate(system, num_particles, trunc_len, particle_chunk, theta,
                   state: ParticleState, key):
    def mean_loss(th):
        thetas = jax.tree.map(lambda x: jnp.broadcast_to(x, (1, num_particles) + jnp.shape(x)),
                              th)
        u = unroll(system, thetas, thetas, jax.lax.stop_gradient(state.system_state),
                   state.remaining, key, trunc_len, particle_chunk)
        return jnp.mean(u.losses), u

    (loss, u), grad = jax.value_and_grad(mean_loss, has_aux=True)(theta)
    metrics = {"meta_loss": loss, "episodes_begun": u.episodes_begun,
               "nonfinite_resets": u.nonfinite}
    return grad, ParticleState(u.system_state, (), u.remaining), metrics


@functools.partial(jax.tree_util.register_dataclass, data_fields=["system"],
                   meta_fields=["num_particles", "trunc_len", "stagger", "particle_chunk"])
@dataclasses.dataclass(frozen=True)
class TBPTT:
    """Truncated backprop through time over persistent particles (module doc)."""

    system: object
    num_particles: int = 8
    trunc_len: int = 20
    stagger: bool = True
    particle_chunk: int = AUTO

    def __post_init__(self):
        check_population(self.num_particles, False, self.trunc_len, self.particle_chunk)

    @property
    def layout(self) -> tuple[int, int]:
        return (1, self.num_particles)

    def init(self, theta, key: jax.Array) -> ParticleState:
        state, remaining = init_particles(self.system, theta, self.layout, key, self.stagger)
        return ParticleState(state, (), remaining)

    def estimate(self, theta, state: ParticleState, key: jax.Array):
        return _bptt_estimate(self.system, self.num_particles, self.trunc_len,
                              self.particle_chunk, theta, state, key)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["system"],
                   meta_fields=["num_particles", "particle_chunk"])
@dataclasses.dataclass(frozen=True)
class FullBPTT:
    """Exact gradient through one fresh whole episode per particle and call (module doc)."""

    system: object
    num_particles: int = 1
    particle_chunk: int = AUTO

    def __post_init__(self):
        check_population(self.num_particles, False, 1, self.particle_chunk)

    @property
    def trunc_len(self) -> int:
        return self.system.horizon

    @property
    def layout(self) -> tuple[int, int]:
        return (1, self.num_particles)

    def init(self, theta, key: jax.Array) -> ParticleState:
        state, remaining = init_particles(self.system, theta, self.layout, key, False)
        return ParticleState(state, (), remaining)

    def estimate(self, theta, state: ParticleState, key: jax.Array):
        state = state._replace(remaining=jnp.zeros_like(state.remaining))  # begin afresh
        return _bptt_estimate(self.system, self.num_particles, self.trunc_len,
                              self.particle_chunk, theta, state, key)
