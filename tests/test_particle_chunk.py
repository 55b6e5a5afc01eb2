"""How the population is computed (``particle_chunk``) does not change what is computed."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meta_train.builders import build_system
from meta_train.estimators import NRES, PES, TBPTT
from meta_train.estimators.execution import SEQUENTIAL_BYTES, resolve_particle_chunk
from meta_train.systems.toy import LinearQuadratic

CALLS = 5  # K=10, T=40, staggered: episodes end inside calls


@pytest.fixture(scope="module")
def image_system(tiny_config):
    return build_system(tiny_config)


def _run(cls, system, chunk, **kw):
    est = cls(system, num_particles=4, trunc_len=10, particle_chunk=chunk, **kw)
    theta = system.init_theta(jax.random.PRNGKey(0))
    state = est.init(theta, jax.random.PRNGKey(1))
    estimate = jax.jit(est.estimate)
    grads, losses, begun = [], [], 0
    for k in jax.random.split(jax.random.PRNGKey(2), CALLS):
        grad, state, metrics = estimate(theta, state, k)
        grads.append(grad)
        losses.append(float(metrics["meta_loss"]))
        begun += int(metrics["episodes_begun"])
    return grads, losses, begun, state


# TBPTT 3: one chunk of 3 groups in the loop, then the last group alone.
@pytest.mark.parametrize("cls,chunks", [(PES, (1, 2)), (NRES, (1,)), (TBPTT, (1, 2, 3))])
def test_chunked_and_sequential_match_vectorised(image_system, cls, chunks):
    kw = {} if cls is TBPTT else {"sigma": 0.01}
    ref_grads, ref_losses, ref_begun, ref_state = _run(cls, image_system, 0, **kw)
    assert ref_begun > 0  # the comparison crosses episode restarts
    for chunk in chunks:
        grads, losses, begun, state = _run(cls, image_system, chunk, **kw)
        assert begun == ref_begun
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
        for g, r in zip(grads, ref_grads):
            for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(r)):
                # Batched and one-by-one matmuls round differently, 50 inner steps
                # carry that on and ES divides loss differences by sigma^2: compare
                # against the leaf's largest coordinate (a wrong key or theta is O(1))
                np.testing.assert_allclose(a, b, rtol=0, atol=2e-3 * float(jnp.max(jnp.abs(b))))
        np.testing.assert_array_equal(state.remaining, ref_state.remaining)
        for a, b in zip(
            jax.tree.leaves(state.system_state), jax.tree.leaves(ref_state.system_state)
        ):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_auto_chunk_follows_state_size(image_system):
    lq = LinearQuadratic.create(jax.random.PRNGKey(0), horizon=10, dtype=jnp.float32)
    assert resolve_particle_chunk(-1, lq, jnp.zeros(lq.b.shape[-1])) == 0
    theta = image_system.init_theta(jax.random.PRNGKey(0))
    assert resolve_particle_chunk(-1, image_system, theta) == 0  # tiny: well under 1 MB
    assert resolve_particle_chunk(3, image_system, theta) == 3  # explicit values pass through

    class Big:  # a state over SEQUENTIAL_BYTES per particle
        horizon = 5

        def init(self, theta, key):
            return jnp.zeros((SEQUENTIAL_BYTES // 4 + 1,), jnp.float32)

    assert resolve_particle_chunk(-1, Big(), None) == (1 if jax.default_backend() == "cpu" else 0)


def test_bad_particle_chunk_is_rejected():
    lq = LinearQuadratic.create(jax.random.PRNGKey(0), horizon=10, dtype=jnp.float32)
    with pytest.raises(ValueError, match="particle_chunk"):
        PES(lq, num_particles=4, particle_chunk=3)  # half a pair
    with pytest.raises(ValueError, match="particle_chunk"):
        PES(lq, num_particles=4, particle_chunk=-2)
    TBPTT(lq, num_particles=3, particle_chunk=3)  # no pairs: any positive chunk


@functools.partial(jax.tree_util.register_dataclass, data_fields=[], meta_fields=["horizon"])
@dataclasses.dataclass(frozen=True)
class _Drift:
    """x_t = x_{t-1} + theta + noise, not finite once x > 1: with theta = 0.15 and
    sigma = 0.1 the + member of a pair (0.25 a step) blows up several steps before
    the - member (0.05 a step), inside a truncation."""

    horizon: int

    def init(self, theta, key):
        return jnp.zeros((), theta.dtype)

    def step(self, theta, state, key):
        x = state + theta[0] + 0.02 * jax.random.normal(key, (), theta.dtype)
        return jnp.where(x > 1.0, jnp.nan, x), jnp.minimum(x * x, 3.0)


def test_sequential_pair_restarts_together_when_one_member_blows_up():
    """One member of a pair becomes non-finite mid-truncation: stepped one by one
    (chunk 1), its partner must restart at the same step, as when stepped together."""
    system = _Drift(horizon=50)
    theta = jnp.array([0.15])
    runs = {}
    for chunk in (0, 1):
        est = PES(system, num_particles=4, trunc_len=7, sigma=0.1, particle_chunk=chunk)
        state = est.init(theta, jax.random.PRNGKey(0))
        estimate = jax.jit(est.estimate)
        out = []
        for k in jax.random.split(jax.random.PRNGKey(1), 6):
            grad, state, metrics = estimate(theta, state, k)
            out.append(
                (
                    grad,
                    metrics["meta_loss"],
                    metrics["nonfinite_resets"],
                    state.remaining,
                    state.system_state,
                )
            )
        runs[chunk] = out
    assert sum(int(o[2]) for o in runs[0]) >= 3  # several blow-ups, each of one member
    for (g0, l0, n0, r0, s0), (g1, l1, n1, r1, s1) in zip(runs[0], runs[1]):
        assert int(n1) == int(n0)
        np.testing.assert_array_equal(r1, r0)
        np.testing.assert_allclose(s1, s0, rtol=1e-6)
        np.testing.assert_allclose(l1, l0, rtol=1e-6)
        np.testing.assert_allclose(g1, g0, rtol=1e-5, atol=1e-6)
