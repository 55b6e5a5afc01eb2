"""Estimator mechanics on small systems: episode bookkeeping, the estimate by hand,
non-finite restarts, staggered starts, the contract, argument checks.

(``tests/test_estimators.py`` checks the estimates against exact gradients.)
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meta_train.estimators import NRES, PES, TBPTT, TruncatedES
from meta_train.systems.toy import LinearQuadratic

THETA = (0.3, -0.2)


def _lq(horizon, dtype=jnp.float32):
    return LinearQuadratic.create(jax.random.PRNGKey(0), horizon=horizon, dtype=dtype)


@pytest.mark.parametrize("cls", [PES, NRES])
def test_accumulator_bookkeeping_across_episode_boundaries(cls):
    """T=5, K=3, lockstep: episodes begin at steps 1, 6 and 11 of the run."""
    system = _lq(5, jnp.float32)
    theta = jnp.array(THETA)
    est = cls(system, num_particles=2, trunc_len=3, sigma=0.1, stagger=False)
    state = est.init(theta, jax.random.PRNGKey(0))
    estimate = jax.jit(est.estimate)
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    eps = [est.perturbations(theta, k) for k in keys]  # what each call draws: [group, ...]
    if cls is PES:  # xi: the sum of the perturbations the episode has seen
        expected_acc = [eps[0], eps[1], eps[1] + eps[2], eps[3]]
    else:  # NRES: the perturbation drawn when the episode began
        expected_acc = [eps[0], eps[1], eps[1], eps[3]]
    expected_remaining = [2, 4, 1, 3]
    expected_begun = [1, 1, 0, 1]
    for k, acc, rem, begun in zip(keys, expected_acc, expected_remaining, expected_begun):
        _, state, metrics = estimate(theta, state, k)
        np.testing.assert_allclose(state.accumulator, acc, rtol=1e-6)
        assert state.remaining.tolist() == [rem]
        assert int(metrics["episodes_begun"]) == begun


@pytest.mark.parametrize("cls", [PES, NRES, TruncatedES])
def test_estimate_matches_hand_computation_across_a_reset(cls):
    """One call, K=3, the running episode ends after the 2nd step: split weighting."""
    system = _lq(2, jnp.float32)
    theta = jnp.array(THETA)
    sigma = 0.1
    est = cls(system, num_particles=2, trunc_len=3, sigma=sigma, stagger=False)
    state = est.init(theta, jax.random.PRNGKey(0))
    acc = jnp.array([[0.05, -0.02]])
    state = state._replace(
        accumulator=() if cls is TruncatedES else acc, remaining=jnp.array([2], jnp.int32)
    )
    key = jax.random.PRNGKey(7)
    grad, new_state, _ = jax.jit(est.estimate)(theta, state, key)
    eps = est.perturbations(theta, key)[0]

    def losses(th_old, th_new):
        s = system.init(th_old, None)  # the running episode's state (s_0 = 0, as init)
        out = []
        for _ in range(2):
            s, loss = system.step(th_old, s, None)
            out.append(loss)
        s = system.init(th_new, None)  # a new episode begins under this call's eps
        s, loss = system.step(th_new, s, None)
        out.append(loss)
        return jnp.array(out)

    w_old = {PES: acc[0] + eps, NRES: acc[0], TruncatedES: eps}[cls]
    pert_old = acc[0] if cls is NRES else eps  # NRES's running episode keeps its noise
    lp, lm = losses(theta + pert_old, theta + eps), losses(theta - pert_old, theta - eps)
    expected = (w_old * (lp[:2] - lm[:2]).sum() + eps * (lp[2] - lm[2])) / (3 * 2 * sigma**2)
    np.testing.assert_allclose(grad, expected, rtol=1e-4)
    if cls is not TruncatedES:
        np.testing.assert_allclose(new_state.accumulator[0], eps, rtol=1e-6)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["base"], meta_fields=["horizon"])
@dataclasses.dataclass(frozen=True)
class _Exploding:
    """Becomes NaN on every step that has a positive loss."""

    base: LinearQuadratic
    horizon: int

    def init(self, theta, key):
        return self.base.init(theta, key)

    def step(self, theta, state, key):
        state, loss = self.base.step(theta, state, key)
        return jnp.where(loss > 0, jnp.nan, state), jnp.where(loss > 0, 3.0, loss)


@pytest.mark.parametrize("cls,chunk", [(PES, 0), (TruncatedES, 0), (NRES, 0), (PES, 1)])
def test_nonfinite_particle_is_restarted_and_estimate_stays_finite(cls, chunk):
    system = _Exploding(_lq(50, jnp.float32), 50)
    est = cls(system, num_particles=4, trunc_len=5, sigma=0.1, particle_chunk=chunk)
    theta = jnp.array(THETA)
    state = est.init(theta, jax.random.PRNGKey(0))
    estimate = jax.jit(est.estimate)
    for k in jax.random.split(jax.random.PRNGKey(1), 2):
        grad, state, metrics = estimate(theta, state, k)
        assert int(metrics["nonfinite_resets"]) == 2 * 5  # every step, both groups
        assert np.all(np.isfinite(grad))
    assert state.remaining.tolist() == [0, 0]  # the next step starts fresh episodes


def test_staggered_starts_cover_the_horizon():
    system = _lq(100, jnp.float32)
    est = PES(system, num_particles=64, trunc_len=5, sigma=0.1, stagger=True)
    state = est.init(jnp.zeros(2), jax.random.PRNGKey(0))
    remaining = np.asarray(state.remaining)
    assert remaining.min() >= 1 and remaining.max() <= 100
    assert len(np.unique(remaining)) > 20


def test_every_registered_estimator_meets_the_contract():
    """The trainer and the sharding code use only ``Estimator``: check each one has it."""
    from jax.sharding import PartitionSpec

    from meta_train.estimators import ESTIMATORS, Estimate, Estimator
    from meta_train.runtime.sharding import PARTICLE_AXIS

    system = _lq(6, jnp.float32)
    theta = jnp.array(THETA)
    for name, cls in ESTIMATORS.items():
        est = cls(system, num_particles=2)
        assert isinstance(est, Estimator), name
        out = est.estimate(theta, est.init(theta, jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
        assert isinstance(out, Estimate), name
        assert jax.tree.structure(out.grad) == jax.tree.structure(theta)
        # One call runs steps_per_call particle steps: its meta-loss averages that many losses.
        per_particle = est.steps_per_call // est.num_particles
        assert per_particle == (6 if name in ("full_es", "full_bptt") else est.trunc_len), name
        # How the state is split over devices: every leaf along its group axis.
        leaves = jax.tree.leaves(out.state)
        specs = jax.tree.leaves(
            est.partition_specs(out.state), is_leaf=lambda x: isinstance(x, PartitionSpec)
        )
        assert len(specs) == len(leaves), name
        for leaf, spec in zip(leaves, specs):
            assert leaf.shape[list(spec).index(PARTICLE_AXIS)] == est.num_groups, name


def test_bad_arguments_are_rejected():
    system = _lq(10, jnp.float32)
    with pytest.raises(ValueError, match="even"):
        PES(system, num_particles=3)
    with pytest.raises(ValueError, match="sigma"):
        NRES(system, sigma=0.0)
    with pytest.raises(ValueError, match="trunc_len"):
        TBPTT(system, trunc_len=0)
