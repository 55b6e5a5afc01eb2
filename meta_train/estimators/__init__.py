"""Gradient estimators over any unrolled system (``meta_train.systems``).

``est = PES(system, num_particles=N, trunc_len=K, sigma=s)``;
``state = est.init(theta, key)``;
``grad, state, metrics = est.estimate(theta, state, key)``, pure and jittable.
Estimators are registered pytrees, so they can be arguments of ``jit``.
"""

from meta_train.estimators.pes import PES, PESState

ESTIMATORS = {"pes": PES}

__all__ = ["PES", "PESState", "ESTIMATORS"]
