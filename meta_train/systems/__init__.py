"""Unrolled systems: every problem an estimator can differentiate through.

* ``base``: the contract (``UnrolledSystem``, ``MetaTrainableSystem``);
* ``inner_training``: one step of training a task with an optimizer (shared
  with the held-out evaluation);
* ``learned_optimizer``: a task trained by a learned optimizer, theta = its weights;
* ``lr_schedule``: a task trained by SGD under a learning-rate schedule, theta = the schedule;
* ``toy``: small systems with known answers (linear-quadratic, influence
  balancing, the PES paper's toy regression).
"""

from meta_train.systems.base import MetaTrainableSystem, UnrolledSystem
from meta_train.systems.inner_training import InnerState
from meta_train.systems.learned_optimizer import LearnedOptimizerSystem
from meta_train.systems.lr_schedule import LRScheduleSystem
from meta_train.systems.toy import InfluenceBalancing, LinearQuadratic, ToyRegression

__all__ = [
    "UnrolledSystem",
    "MetaTrainableSystem",
    "InnerState",
    "LearnedOptimizerSystem",
    "LRScheduleSystem",
    "InfluenceBalancing",
    "LinearQuadratic",
    "ToyRegression",
]
