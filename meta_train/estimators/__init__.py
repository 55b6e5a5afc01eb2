"""Gradient estimators over any unrolled system (``meta_train.systems``).

``est = PES(system, num_particles=N, trunc_len=K, sigma=s)``;
``state = est.init(theta, key)``;
``grad, state, metrics = est.estimate(theta, state, key)`` (an ``Estimate``),
pure and jittable. Estimators are registered pytrees, so they can be
arguments of ``jit``. The contract and conventions are in
``meta_train.estimators.base``; the modules, in the order a reader meets them:

* ``episodes``: what one truncation computes (restarts, the per-step record);
* ``execution``: how a population's truncation runs (``unroll``: vectorised,
  in chunks, over devices);
* ``es_gradient``: the PES / ES estimate from a truncation's losses;
* ``es``, ``bptt``: the estimators.

``ESTIMATORS`` is the registry the config's ``estimator.kind`` names.
"""

from meta_train.estimators.base import Estimate, Estimator, ParticleState
from meta_train.estimators.bptt import TBPTT, FullBPTT
from meta_train.estimators.es import NRES, PES, FullES, TruncatedES

PESState = ParticleState  # the name earlier releases used

ESTIMATORS: dict[str, type] = {
    "pes": PES,
    "truncated_es": TruncatedES,
    "nres": NRES,
    "full_es": FullES,
    "tbptt": TBPTT,
    "full_bptt": FullBPTT,
}

__all__ = [
    "PES",
    "TruncatedES",
    "NRES",
    "FullES",
    "TBPTT",
    "FullBPTT",
    "ParticleState",
    "PESState",
    "Estimate",
    "Estimator",
    "ESTIMATORS",
]
