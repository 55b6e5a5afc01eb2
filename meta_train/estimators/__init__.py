"""Gradient estimators over any unrolled system (``meta_train.systems``).

``est = PES(system, num_particles=N, trunc_len=K, sigma=s)``;
``state = est.init(theta, key)``;
``grad, state, metrics = est.estimate(theta, state, key)``, pure and jittable.
Estimators are registered pytrees, so they can be arguments of ``jit``.
Conventions (sigma a standard deviation, N counting particles, what one call
targets) are in ``meta_train.estimators.es``.
"""

from meta_train.estimators.bptt import TBPTT, FullBPTT
from meta_train.estimators.es import NRES, PES, FullES, TruncatedES
from meta_train.estimators.unroll import ParticleState

PESState = ParticleState  # the name earlier releases used

ESTIMATORS = {"pes": PES, "truncated_es": TruncatedES, "nres": NRES, "full_es": FullES,
              "tbptt": TBPTT, "full_bptt": FullBPTT}

__all__ = ["PES", "TruncatedES", "NRES", "FullES", "TBPTT", "FullBPTT", "ParticleState",
           "PESState", "ESTIMATORS"]
