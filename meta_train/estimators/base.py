"""The estimator contract, the population's layout, and the state every estimator keeps.

An estimator (``Estimator``) turns an unrolled system (``meta_train.systems``)
and theta into a meta-gradient estimate. Conventions fixed here and tested:

* ``num_particles`` (N) counts particles, not antithetic pairs.
* Particles are laid out ``[sign, group]``: ``[2, N/2]`` with antithetic
  sampling (both members of a pair share data keys, reset keys and episode
  boundaries), ``[1, N]`` otherwise. A *group* is a pair, or one particle.
  Groups are the unit a population is split over devices by.
* One ``estimate`` call advances every particle ``steps_per_call / N`` steps
  and targets the gradient of the mean per-step loss over those steps (see
  ``meta_train.estimators.es`` for how each estimator counts earlier steps).

See docs/ARCHITECTURE.md for where estimators sit in one outer iteration.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
from jax.sharding import PartitionSpec as P

from meta_train.runtime.sharding import PARTICLE_AXIS
from meta_train.systems.base import MetaTrainableSystem
from meta_train.systems.family import SystemFamily


class ParticleState(NamedTuple):
    """The persistent population: what an estimator carries from call to call."""

    system_state: Any  # every leaf has leading axes [sign, group]
    accumulator: Any  # per group (leading axis [group]); () when the estimator keeps none
    remaining: jax.Array  # int32 [group]: steps left in the episode; 0 = next step restarts


class Estimate(NamedTuple):
    """What one ``estimate`` call returns."""

    grad: Any  # shaped like theta
    state: Any  # the estimator's state for the next call
    metrics: dict[str, jax.Array]  # scalars: meta_loss, episodes_begun, nonfinite_resets


@runtime_checkable
class Estimator(Protocol):
    """A gradient estimator over a system; a registered pytree, so ``jit`` can take it."""

    @property
    def system(self) -> MetaTrainableSystem | SystemFamily:
        """What is unrolled (a family's members, for ``estimators.family``)."""
        ...

    @property
    def num_particles(self) -> int:
        """N: particles, not pairs (all members' together for a family)."""
        ...

    @property
    def steps_per_call(self) -> int:
        """Particle steps one ``estimate`` call runs (N times the steps per particle)."""
        ...

    @property
    def num_groups(self) -> int:
        """Groups in the population: the axis it is split over devices by."""
        ...

    def init(self, theta: Any, key: jax.Array) -> Any: ...

    def estimate(self, theta: Any, state: Any, key: jax.Array) -> Estimate: ...

    def partition_specs(self, state: Any) -> Any:
        """A ``PartitionSpec`` per leaf of ``state`` over the mesh axis ``PARTICLE_AXIS``."""
        ...


class Layout(NamedTuple):
    """A population's leading axes ``[sign, group]``."""

    num_signs: int  # 2 with antithetic pairs, else 1
    num_groups: int  # pairs, or particles


def population_layout(num_particles: int, antithetic: bool) -> Layout:
    """The layout of a population; ``ValueError`` if it cannot be laid out."""
    if num_particles < 1:
        raise ValueError("num_particles must be >= 1")
    if antithetic:
        if num_particles % 2:
            raise ValueError(
                f"antithetic sampling needs an even num_particles, got {num_particles}"
            )
        return Layout(2, num_particles // 2)
    return Layout(1, num_particles)


class PersistentPopulation:
    """What every estimator over a ``ParticleState`` population says the same way;
    it needs ``layout``, ``num_particles`` and ``trunc_len`` (steps per particle per call)."""

    num_particles: int
    trunc_len: int

    @property
    def layout(self) -> Layout:
        raise NotImplementedError

    @property
    def num_groups(self) -> int:
        return self.layout.num_groups

    @property
    def steps_per_call(self) -> int:
        return self.num_particles * self.trunc_len

    def partition_specs(self, state: ParticleState) -> ParticleState:
        return particle_state_specs(state)


def particle_state_specs(state: ParticleState) -> ParticleState:
    """Partition specs of a ``ParticleState`` (a tree of specs shaped like it): every
    leaf split along its group axis."""
    return ParticleState._make(
        (
            jax.tree.map(lambda _: P(None, PARTICLE_AXIS), state.system_state),
            jax.tree.map(lambda _: P(PARTICLE_AXIS), state.accumulator),
            P(PARTICLE_AXIS),
        )
    )
