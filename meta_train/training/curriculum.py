"""A horizon curriculum: meta-train at shorter horizons first, ending at the target one.

``horizon_at(step, stage_steps, curriculum, horizon)``: outer steps
``1..stage_steps`` use ``curriculum[0]``, the next ``stage_steps`` use
``curriculum[1]``, and so on; every step after the curriculum uses the target
``horizon``. The stage depends only on the step number (not on the run's
length), so a resumed or extended run uses the horizons an uninterrupted one
would. The
horizon is static in a compiled outer step, so each stage compiles once.
A particle's running episode keeps the length it began with; episodes begun
in a stage last that stage's horizon.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from meta_train.estimators.family import FamilyEstimator


def horizon_at(step: int, stage_steps: int, curriculum: Sequence[int], horizon: int) -> int:
    """The horizon of outer step ``step`` (1-based)."""
    stage = (step - 1) // stage_steps
    return curriculum[stage] if stage < len(curriculum) else horizon


def with_horizon(estimator: Any, horizon: int) -> Any:
    """``estimator`` over the same system(s) with episodes of ``horizon`` steps."""
    if isinstance(estimator, FamilyEstimator):
        members = tuple(with_horizon(m, horizon) for m in estimator.members)
        if all(new is old for new, old in zip(members, estimator.members)):
            return estimator  # most steps: no stage boundary, nothing to rebuild
        return dataclasses.replace(estimator, members=members)
    if estimator.system.horizon == horizon:
        return estimator
    system = dataclasses.replace(estimator.system, horizon=horizon)
    return dataclasses.replace(estimator, system=system)
