"""Every estimator against exact gradients, with controls that prove the checks can fail.

On ``LinearQuadratic`` (deterministic, quadratic in theta) a Gaussian-smoothed
objective has exactly the true gradient, so an unbiased ES estimator differs
from ``jax.grad`` only by Monte-Carlo noise. Each independent run goes through
whole episodes with lockstep starts (lcm(T, K) steps) at fixed theta; the mean
over runs must lie within Z_TOL standard errors of ``jax.grad`` of the mean
per-step loss over the horizon, per coordinate. Biased estimators (truncated
ES, TBPTT) must miss by far more than that. All in float64.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meta_train.estimators import NRES, PES, TBPTT, FullBPTT, FullES, TruncatedES
from meta_train.systems.toy import LinearQuadratic

RUNS = 4000
Z_TOL = 5.0
THETA = (0.3, -0.2)


def _run_means(est, theta, key, runs):
    """Per run: the mean of the estimates over lcm(T, K) steps from lockstep starts."""
    calls = math.lcm(est.system.horizon, est.trunc_len) // est.trunc_len

    def run(k):
        k0, k1 = jax.random.split(k)

        def body(state, kk):
            g, state, _ = est.estimate(theta, state, kk)
            return state, g

        _, gs = jax.lax.scan(body, est.init(theta, k0), jax.random.split(k1, calls))
        return gs.mean(0)

    return np.asarray(jax.jit(jax.vmap(run))(jax.random.split(key, runs)))


def _z_scores(samples, exact):
    se = samples.std(0, ddof=1) / math.sqrt(len(samples))
    return (samples.mean(0) - exact) / se


def _lq(horizon, dtype=jnp.float64):
    return LinearQuadratic.create(jax.random.PRNGKey(0), horizon=horizon, dtype=dtype)


UNBIASED = [
    (PES, 12, 4),
    (PES, 10, 4),
    (PES, 3, 7),
    (NRES, 12, 4),
    (NRES, 10, 4),
    (NRES, 3, 7),
    (FullES, 10, None),
]


@pytest.mark.parametrize("cls,horizon,trunc_len", UNBIASED)
def test_es_estimators_are_unbiased_on_linear_quadratic(cls, horizon, trunc_len):
    with jax.enable_x64(True):
        system = _lq(horizon)
        theta = jnp.array(THETA)
        exact = np.asarray(jax.grad(system.full_horizon_loss)(theta))
        kwargs = {} if cls is FullES else {"trunc_len": trunc_len, "stagger": False}
        est = cls(system, num_particles=2, sigma=0.1, **kwargs)
        samples = _run_means(est, theta, jax.random.PRNGKey(1), RUNS)
        z = _z_scores(samples, exact)
        assert np.all(np.abs(z) < Z_TOL), (z, samples.mean(0), exact)
        # The check has power: the standard error is small against the gradient.
        assert np.all(samples.std(0) / math.sqrt(RUNS) < 0.05 * np.abs(exact))


def test_pes_without_antithetic_sampling_is_unbiased():
    with jax.enable_x64(True):
        system = _lq(10)
        theta = jnp.array(THETA)
        exact = np.asarray(jax.grad(system.full_horizon_loss)(theta))
        est = PES(system, num_particles=4, trunc_len=4, sigma=0.1, stagger=False, antithetic=False)
        samples = _run_means(est, theta, jax.random.PRNGKey(2), RUNS)
        assert np.all(np.abs(_z_scores(samples, exact)) < Z_TOL)


def test_truncated_es_is_detected_as_biased():
    with jax.enable_x64(True):
        system = _lq(12)
        theta = jnp.array(THETA)
        exact = np.asarray(jax.grad(system.full_horizon_loss)(theta))
        est = TruncatedES(system, num_particles=2, trunc_len=4, sigma=0.1, stagger=False)
        samples = _run_means(est, theta, jax.random.PRNGKey(1), RUNS)
        assert np.max(np.abs(_z_scores(samples, exact))) > 3 * Z_TOL


def test_bptt_estimators_against_exact_gradients():
    """FullBPTT (and TBPTT with K = T) is exact; TBPTT with K < T is off by far."""
    with jax.enable_x64(True):
        system = _lq(12)
        theta = jnp.array(THETA)
        exact = np.asarray(jax.grad(system.full_horizon_loss)(theta))
        for est in (
            FullBPTT(system, num_particles=2),
            TBPTT(system, num_particles=2, trunc_len=12, stagger=False),
        ):
            g = _run_means(est, theta, jax.random.PRNGKey(0), 2)
            np.testing.assert_allclose(g, np.broadcast_to(exact, g.shape), rtol=1e-10)
        g = _run_means(
            TBPTT(system, num_particles=2, trunc_len=4, stagger=False),
            theta,
            jax.random.PRNGKey(0),
            2,
        )
        np.testing.assert_allclose(g[0], g[1], rtol=1e-12)  # deterministic system
        assert np.max(np.abs(g[0] - exact) / np.abs(exact)) > 0.1


def test_tbptt_matches_grad_of_the_truncation_from_a_fixed_state():
    with jax.enable_x64(True):
        system = _lq(50)
        theta = jnp.array(THETA)
        est = TBPTT(system, num_particles=1, trunc_len=4, stagger=False)
        state = est.init(theta, jax.random.PRNGKey(0))
        _, state, _ = est.estimate(theta, state, jax.random.PRNGKey(1))  # steps 1-4
        s0 = state.system_state[0, 0]
        grad, _, _ = est.estimate(theta, state, jax.random.PRNGKey(2))  # steps 5-8

        def k_step_loss(th):
            s, total = s0, 0.0
            for _ in range(4):
                s, loss = system.step(th, s, None)
                total += loss
            return total / 4

        np.testing.assert_allclose(grad, jax.grad(k_step_loss)(theta), rtol=1e-10)


def test_with_k_equal_t_the_es_estimators_coincide():
    with jax.enable_x64(True):
        system = _lq(6)
        theta = jnp.array(THETA)
        estimators = [
            PES(system, num_particles=4, trunc_len=6, sigma=0.1, stagger=False),
            TruncatedES(system, num_particles=4, trunc_len=6, sigma=0.1, stagger=False),
            NRES(system, num_particles=4, trunc_len=6, sigma=0.1, stagger=False),
            FullES(system, num_particles=4, sigma=0.1),
        ]
        results = []
        for est in estimators:
            state = est.init(theta, jax.random.PRNGKey(0))
            grads = []
            for k in jax.random.split(jax.random.PRNGKey(1), 3):
                g, state, _ = jax.jit(est.estimate)(theta, state, k)
                grads.append(g)
            results.append(np.stack(grads))
        assert np.all(np.abs(results[0]) > 0)
        for r in results[1:]:
            np.testing.assert_allclose(r, results[0], rtol=1e-12)


@functools.partial(jax.tree_util.register_dataclass, data_fields=["a"], meta_fields=["horizon"])
@dataclasses.dataclass(frozen=True)
class _Linear:
    """L_t = a . theta at every step; the state is unused."""

    a: jax.Array
    horizon: int = 1

    def init(self, theta, key):
        return jnp.zeros(())

    def step(self, theta, state, key):
        return state, jnp.dot(self.a, theta)


@pytest.mark.parametrize("pairs", [1, 4])
def test_normalisation_mean_and_covariance_for_a_linear_loss(pairs):
    """One call on L = a.theta: mean a, covariance trace (n+1)|a|^2 / P (P pairs)."""
    with jax.enable_x64(True):
        a = jnp.array([1.0, -2.0, 0.5, 3.0])
        est = PES(_Linear(a), num_particles=2 * pairs, trunc_len=1, sigma=0.3, stagger=False)
        theta = jnp.zeros(4)
        state = est.init(theta, jax.random.PRNGKey(0))
        draws = 20000
        grads = np.asarray(
            jax.jit(jax.vmap(lambda k: est.estimate(theta, state, k)[0]))(
                jax.random.split(jax.random.PRNGKey(1), draws)
            )
        )
        assert np.all(np.abs(_z_scores(grads, np.asarray(a))) < Z_TOL)
        sq = np.sum((grads - np.asarray(a)) ** 2, axis=1)  # its mean is the trace
        expected = (a.size + 1) * float(jnp.sum(a**2)) / pairs
        z = (sq.mean() - expected) / (sq.std(ddof=1) / math.sqrt(draws))
        assert abs(z) < Z_TOL, (sq.mean(), expected)
        # ...and the check has power: a sigma convention off by sqrt(2) would fail it.
        assert abs(sq.mean() - 2 * expected) / (sq.std(ddof=1) / math.sqrt(draws)) > 3 * Z_TOL


@functools.partial(jax.tree_util.register_dataclass, data_fields=["a"], meta_fields=["horizon"])
@dataclasses.dataclass(frozen=True)
class _UncorrelatedSteps:
    """L_t = a_t . theta with a fixed, independent a_t per step: no state influence."""

    a: jax.Array  # [horizon, dim]
    horizon: int

    def init(self, theta, key):
        return jnp.zeros((), jnp.int32)

    def step(self, theta, t, key):
        return t + 1, jnp.dot(self.a[t], theta)


def test_pes_variance_grows_with_unrolls_while_nres_stays_flat():
    with jax.enable_x64(True):
        calls, trunc_len, dim = 16, 1, 3
        a = jax.random.normal(jax.random.PRNGKey(0), (calls * trunc_len, dim))
        a = a / jnp.linalg.norm(a, axis=1, keepdims=True)  # same scale at every call
        system = _UncorrelatedSteps(a, calls * trunc_len)
        theta = jnp.zeros(dim)

        def variances(cls):
            est = cls(system, num_particles=2, trunc_len=trunc_len, sigma=0.1, stagger=False)

            def run(k):
                def body(state, kk):
                    g, state, _ = est.estimate(theta, state, kk)
                    return state, g

                return jax.lax.scan(body, est.init(theta, k), jax.random.split(k, calls))[1]

            g = jax.jit(jax.vmap(run))(jax.random.split(jax.random.PRNGKey(1), RUNS))
            return np.asarray(jnp.sum(jnp.var(g, axis=0), axis=-1))  # [calls]

        pes, nres = variances(PES), variances(NRES)
        # PES's weight xi sums c perturbations at call c: its variance is about
        # (c n + 2) / (n + 1) times NRES's, i.e. grows linearly (x10 by call 16).
        assert pes[-1] / pes[0] > 6, pes
        assert np.all(np.diff(pes[::4]) > 0), pes
        # NRES reuses one perturbation: the variance of a call does not grow (sampling
        # error of each variance is about sqrt(2/RUNS) = 2%).
        assert 0.8 < nres[-1] / nres[0] < 1.25, nres
        assert pes[-1] > 3 * nres[-1]
