"""The gradient of a family's objective: one estimator per member, weighted.

For ``SystemFamily(members, weights)`` the objective is ``sum_b w_b F_b``, so

    g = sum_b w_b g_b

is unbiased for its gradient whenever every ``g_b`` is unbiased for
``grad F_b`` (PES, NRES, FullES), whatever the members' shapes; each member
keeps its own particles and draws its own perturbations (independent keys).
All members run in one compiled program: a Python loop over the (few) members
while tracing, since their shapes differ and cannot be stacked. Tested
against the exact gradient of a toy family in ``tests/test_family.py``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax

from meta_train.estimators.base import Estimate, Estimator
from meta_train.systems.family import SystemFamily

# Metrics that count events: summed over members; every other metric is averaged
# with the members' weights.
_COUNTS = ("episodes_begun", "nonfinite_resets")


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["members"], meta_fields=["weights"]
)
@dataclasses.dataclass(frozen=True)
class FamilyEstimator:
    members: tuple[Estimator, ...]
    weights: tuple[float, ...]

    def __post_init__(self):
        if len({m.num_groups for m in self.members}) != 1:
            raise ValueError(
                "every member of a family needs as many particle groups (its population "
                "is split over devices alike)"
            )
        if len({m.steps_per_call // m.num_particles for m in self.members}) != 1:
            raise ValueError("every member of a family needs the same truncation length")

    @property
    def system(self) -> SystemFamily:
        members: list[Any] = [m.system for m in self.members]
        return SystemFamily(tuple(members), self.weights)

    @property
    def num_particles(self) -> int:
        return sum(m.num_particles for m in self.members)

    @property
    def steps_per_call(self) -> int:
        return sum(m.steps_per_call for m in self.members)

    @property
    def num_groups(self) -> int:
        return self.members[0].num_groups

    def init(self, theta: Any, key: jax.Array) -> tuple:
        keys = jax.random.split(key, len(self.members))
        return tuple(m.init(theta, k) for m, k in zip(self.members, keys))

    def estimate(self, theta: Any, state: tuple, key: jax.Array) -> Estimate:
        keys = jax.random.split(key, len(self.members))
        results = [m.estimate(theta, s, k) for m, s, k in zip(self.members, state, keys)]
        grad = jax.tree.map(
            lambda *gs: sum(w * g for w, g in zip(self.weights, gs)), *[r.grad for r in results]
        )
        metrics: dict[str, Any] = {}
        for name in results[0].metrics:
            values = [r.metrics[name] for r in results]
            if name in _COUNTS:
                metrics[name] = sum(values)
            else:
                metrics[name] = sum(w * v for w, v in zip(self.weights, values))
        return Estimate(grad, tuple(r.state for r in results), metrics)

    def partition_specs(self, state: tuple) -> tuple:
        return tuple(m.partition_specs(s) for m, s in zip(self.members, state))
