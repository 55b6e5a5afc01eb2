"""PES is unbiased: the mean of many estimates matches the exact gradient.

On ``LinearQuadratic`` (deterministic, quadratic in theta) the ES-smoothed
objective has exactly the true gradient, so the only error is Monte-Carlo
noise. Each independent run goes through whole episodes with lockstep starts
(lcm(T, K) steps), fixed theta; the mean over runs must lie within 5 standard
errors of ``jax.grad`` of the mean per-step loss over the horizon, per
coordinate. A negative control (the accumulator dropped each call, i.e.
truncated ES on persistent states) must fail the same check.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meta_train.estimators import PES
from tasks.toy import LinearQuadratic

RUNS = 4000
Z_TOL = 5.0


def _run_means(est, theta, key, runs, drop_accumulator=False):
    calls = math.lcm(est.system.horizon, est.trunc_len) // est.trunc_len

    def run(k):
        k0, k1 = jax.random.split(k)
        state = est.init(theta, k0)

        def body(state, kk):
            if drop_accumulator:
                state = state._replace(accumulator=jax.tree.map(jnp.zeros_like,
                                                                state.accumulator))
            g, state, _ = est.estimate(theta, state, kk)
            return state, g

        _, gs = jax.lax.scan(body, state, jax.random.split(k1, calls))
        return gs.mean(0)

    return np.asarray(jax.jit(jax.vmap(run))(jax.random.split(key, runs)))


def _z_scores(samples, exact):
    mean = samples.mean(0)
    se = samples.std(0, ddof=1) / math.sqrt(len(samples))
    return (mean - exact) / se


@pytest.mark.parametrize("horizon,trunc_len", [(12, 4), (10, 4), (3, 7)])
def test_pes_unbiased_linear_quadratic(horizon, trunc_len):
    with jax.enable_x64(True):
        system = LinearQuadratic.create(jax.random.PRNGKey(0), horizon=horizon)
        theta = jnp.array([0.3, -0.2])
        exact = np.asarray(jax.grad(system.full_horizon_loss)(theta))
        est = PES(system, num_particles=2, trunc_len=trunc_len, sigma=0.1, stagger=False)
        samples = _run_means(est, theta, jax.random.PRNGKey(1), RUNS)
        z = _z_scores(samples, exact)
        assert np.all(np.abs(z) < Z_TOL), (z, samples.mean(0), exact)
        # The check has power: the standard error is small against the gradient.
        assert np.all(samples.std(0) / math.sqrt(RUNS) < 0.05 * np.abs(exact))


def test_dropping_the_accumulator_is_detected_as_bias():
    with jax.enable_x64(True):
        system = LinearQuadratic.create(jax.random.PRNGKey(0), horizon=12)
        theta = jnp.array([0.3, -0.2])
        exact = np.asarray(jax.grad(system.full_horizon_loss)(theta))
        est = PES(system, num_particles=2, trunc_len=4, sigma=0.1, stagger=False)
        samples = _run_means(est, theta, jax.random.PRNGKey(1), RUNS, drop_accumulator=True)
        assert np.max(np.abs(_z_scores(samples, exact))) > 3 * Z_TOL


def test_without_antithetic_pes_is_unbiased():
    with jax.enable_x64(True):
        system = LinearQuadratic.create(jax.random.PRNGKey(0), horizon=10)
        theta = jnp.array([0.3, -0.2])
        exact = np.asarray(jax.grad(system.full_horizon_loss)(theta))
        est = PES(system, num_particles=4, trunc_len=4, sigma=0.1, stagger=False,
                  antithetic=False)
        samples = _run_means(est, theta, jax.random.PRNGKey(2), RUNS)
        assert np.all(np.abs(_z_scores(samples, exact)) < Z_TOL)


def test_accumulator_restarts_inside_a_truncation():
    """T=5, K=3, lockstep: episodes end after steps 5, 10, 15 of the run."""
    system = LinearQuadratic.create(jax.random.PRNGKey(0), horizon=5, dtype=jnp.float32)
    theta = jnp.array([0.3, -0.2])
    est = PES(system, num_particles=2, trunc_len=3, sigma=0.1, stagger=False)
    state = est.init(theta, jax.random.PRNGKey(0))
    estimate = jax.jit(est.estimate)
    keys = jax.random.split(jax.random.PRNGKey(3), 4)
    eps = []
    for k in keys:
        e = jax.random.split(k, 3)[0]  # the perturbation key PES draws from
        eps.append(0.1 * jax.random.normal(jax.random.split(e, 1)[0], (1, 2)))
        _, state, metrics = estimate(theta, state, k)
        if len(eps) == 1:  # steps 1-3: no reset yet
            np.testing.assert_allclose(state.accumulator, eps[0], rtol=1e-6)
            assert state.remaining.tolist() == [2]
            assert int(metrics["episodes_ended"]) == 0
        elif len(eps) == 2:  # steps 4-6: episode ends after step 5, new one sees eps[1]
            np.testing.assert_allclose(state.accumulator, eps[1], rtol=1e-6)
            assert state.remaining.tolist() == [4]
            assert int(metrics["episodes_ended"]) == 1
        elif len(eps) == 3:  # steps 7-9: same episode continues
            np.testing.assert_allclose(state.accumulator, eps[1] + eps[2], rtol=1e-6)
            assert state.remaining.tolist() == [1]
        else:  # steps 10-12: ends after step 10
            np.testing.assert_allclose(state.accumulator, eps[3], rtol=1e-6)
            assert state.remaining.tolist() == [3]


def test_pes_estimate_matches_hand_computation_across_a_reset():
    """One call, K=3, episode ends after the 2nd step: check the split weighting."""
    system = LinearQuadratic.create(jax.random.PRNGKey(0), horizon=2, dtype=jnp.float32)
    theta = jnp.array([0.3, -0.2])
    sigma = 0.1
    est = PES(system, num_particles=2, trunc_len=3, sigma=sigma, stagger=False)
    state = est.init(theta, jax.random.PRNGKey(0))
    xi = jnp.array([[0.05, -0.02]])
    state = state._replace(accumulator=xi, remaining=jnp.array([2], jnp.int32))
    key = jax.random.PRNGKey(7)
    grad, new_state, _ = jax.jit(est.estimate)(theta, state, key)
    eps = new_state.accumulator[0]  # restarted at eps alone

    def losses(th):
        s = system.init(th, None)
        out = []
        for _ in range(2):
            s, l = system.step(th, s, None)
            out.append(l)
        s = system.init(th, None)  # reset, new episode
        s, l = system.step(th, s, None)
        out.append(l)
        return jnp.array(out)

    lp, lm = losses(theta + eps), losses(theta - eps)
    expected = ((xi[0] + eps) * (lp[:2] - lm[:2]).sum() + eps * (lp[2] - lm[2])) / (3 * 2 * sigma**2)
    np.testing.assert_allclose(grad, expected, rtol=1e-4)


def test_nonfinite_particle_is_restarted_and_estimate_stays_finite():
    class Exploding(LinearQuadratic):
        def step(self, theta, state, key):
            state, loss = super().step(theta, state, key)
            return jnp.where(loss > 0, jnp.nan, state), jnp.where(loss > 0, 3.0, loss)

    base = LinearQuadratic.create(jax.random.PRNGKey(0), horizon=50, dtype=jnp.float32)
    system = Exploding(base.a, base.b, base.target, base.horizon)
    jax.tree_util.register_dataclass(Exploding, data_fields=["a", "b", "target"],
                                     meta_fields=["horizon"])
    est = PES(system, num_particles=4, trunc_len=5, sigma=0.1)
    theta = jnp.array([0.3, -0.2])
    state = est.init(theta, jax.random.PRNGKey(0))
    grad, state, metrics = jax.jit(est.estimate)(theta, state, jax.random.PRNGKey(1))
    assert int(metrics["nonfinite_resets"]) == 2 * 5  # every step, both groups
    assert np.all(np.isfinite(grad))
    assert np.all(np.isfinite(state.system_state))


def test_staggered_starts_cover_the_horizon():
    system = LinearQuadratic.create(jax.random.PRNGKey(0), horizon=100, dtype=jnp.float32)
    est = PES(system, num_particles=64, trunc_len=5, sigma=0.1, stagger=True)
    state = est.init(jnp.zeros(2), jax.random.PRNGKey(0))
    remaining = np.asarray(state.remaining)
    assert remaining.min() >= 1 and remaining.max() <= 100
    assert len(np.unique(remaining)) > 20


def test_bad_arguments_are_rejected():
    system = LinearQuadratic.create(jax.random.PRNGKey(0), dtype=jnp.float32)
    with pytest.raises(ValueError, match="even"):
        PES(system, num_particles=3)
    with pytest.raises(ValueError, match="sigma"):
        PES(system, sigma=0.0)
