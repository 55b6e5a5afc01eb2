"""A family of systems that share theta: the meta-objective is their weighted mean.

``SystemFamily(members, weights)`` stands for the objective
``sum_b w_b F_b(theta)`` where ``F_b`` is member b's objective (the mean
per-step loss of its episodes). Members may have different state shapes
(shape buckets of a task family), so they are not stacked: a family is
estimated by one estimator per member (``meta_train.estimators.family``) and
evaluated member by member (``meta_train.evaluation.fixed_seeds``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax

from meta_train.systems.base import MetaTrainableSystem


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["members"], meta_fields=["weights"]
)
@dataclasses.dataclass(frozen=True)
class SystemFamily:
    members: tuple[MetaTrainableSystem, ...]
    weights: tuple[float, ...]  # w_b >= 0, summing to 1

    def __post_init__(self):
        if not self.members or len(self.members) != len(self.weights):
            raise ValueError("a family needs one weight per member, and at least one member")
        if min(self.weights) < 0 or not math.isclose(sum(self.weights), 1.0, rel_tol=1e-6):
            raise ValueError(f"family weights must be >= 0 and sum to 1, got {self.weights}")
        if len({m.horizon for m in self.members}) != 1:
            raise ValueError("every member of a family needs the same horizon")

    @classmethod
    def uniform(cls, members) -> SystemFamily:
        members = tuple(members)
        return cls(members, tuple(1.0 / len(members) for _ in members))

    @property
    def horizon(self) -> int:
        return self.members[0].horizon

    def init_theta(self, key: jax.Array) -> Any:
        return self.members[0].init_theta(key)
