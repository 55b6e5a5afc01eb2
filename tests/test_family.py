"""Task families: sampling, shape buckets, compilation, normalisation, augmentation,
and the family gradient against an exact gradient."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from learned_opt import Adam, NormMLPLOpt
from meta_train import config as config_lib
from meta_train.builders import bucket_menus, build_estimator, build_eval_system, build_system
from meta_train.estimators import PES, TruncatedES
from meta_train.estimators.family import FamilyEstimator
from meta_train.systems.family import SystemFamily
from meta_train.systems.sampled_task import SampledTaskSystem
from meta_train.systems.toy import LinearQuadratic
from meta_train.training.outer_step import init_meta_state, make_outer_step
from tasks.augmentation import Augmentation, AugmentedTask, Scales
from tasks.base import SingleTask
from tasks.family import FamilyError, ImageMLPFamily, shape_of
from tasks.image_mlp import ImageMLPTask

SMALL_FAMILY = [
    "task.kind=image_mlp_family",
    "task.horizon=6",
    "lopt.kind=norm_mlp",
    "lopt.hidden_sizes=[8]",
    "family.num_buckets=2",
    "family.heldout_buckets=1",
    "family.depths=[1, 2]",
    "family.width_range=[8, 24]",
    "family.batch_sizes=[16, 32]",
    "family.param_scale=10.0",
    "family.grad_scale=10.0",
    "family.loss_scale=10.0",
    "estimator.num_particles=4",
    "estimator.trunc_len=3",
]


@pytest.fixture(scope="module")
def small_family_config():
    return config_lib.load(None, SMALL_FAMILY)


# -- sampling and buckets ---------------------------------------------------


def test_family_sampling_is_seeded_and_inside_the_family():
    fam = ImageMLPFamily(image_sizes=(8, 28), depths=(1, 3), width_range=(16, 64))
    specs = [fam.sample(s) for s in range(40)]
    assert specs == [fam.sample(s) for s in range(40)]
    assert all(fam.holds(s) for s in specs)
    assert {len(s.hidden_sizes) for s in specs} == {1, 3}
    assert {s.image_size for s in specs} == {8, 28}
    widths = [w for s in specs for w in s.hidden_sizes]
    assert min(widths) >= 16 and max(widths) <= 64


def test_bucket_menu_has_distinct_shapes_and_held_out_shapes_differ(small_family_config):
    train, held_out = bucket_menus(small_family_config)
    assert len(train) == 2 and len(held_out) == 1
    assert len({shape_of(s) for s in train}) == 2
    assert not {shape_of(s) for s in held_out} & {shape_of(s) for s in train}


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"depths": ()}, "depths lists nothing"),
        ({"width_range": (64, 16)}, "min <= max"),
        ({"activations": ("relu", "swoosh")}, "unknown activations"),
        ({"batch_sizes": (0,)}, "at least 1"),
    ],
)
def test_bad_families_fail_with_one_line(kwargs, message):
    with pytest.raises(FamilyError, match=message):
        ImageMLPFamily(**kwargs)


def test_a_menu_larger_than_the_family_fails():
    fam = ImageMLPFamily(depths=(1,), width_range=(16, 17), batch_sizes=(32,))
    with pytest.raises(FamilyError, match="fewer than 5 distinct shapes"):
        fam.bucket_menu(5, seed=0)


def test_a_bucket_outside_the_family_is_refused():
    fam = ImageMLPFamily(depths=(1,), width_range=(16, 32))
    outside = ImageMLPFamily(depths=(2,), width_range=(16, 32)).sample(0)
    with pytest.raises(FamilyError, match="outside the family"):
        fam.build_bucket(outside)


def test_family_config_errors_are_config_errors():
    with pytest.raises(config_lib.ConfigError, match=r"\[family\].*depths lists nothing"):
        build_system(config_lib.load(None, [*SMALL_FAMILY, "family.depths=[]"]))
    with pytest.raises(config_lib.ConfigError, match="multiple of family.num_buckets"):
        build_system(config_lib.load(None, [*SMALL_FAMILY, "family.num_buckets=3"]))


# -- one program however many tasks are drawn -------------------------------


def test_many_tasks_drawn_compile_one_outer_step(small_family_config):
    system = build_system(small_family_config)
    estimator = build_estimator(small_family_config, system)
    assert isinstance(estimator, FamilyEstimator) and len(estimator.members) == 2
    import optax

    outer_opt = optax.adam(1e-3)
    state = init_meta_state(estimator, outer_opt, seed=0)
    step = make_outer_step(outer_opt)
    begun, loss_scales, activations = 0, set(), set()
    sample = jax.jit(jax.vmap(jax.vmap(system.members[0].bucket.sample)))
    for _ in range(12):  # horizon 6, K 3: every particle begins several episodes
        state, metrics = step(estimator, state)
        begun += int(metrics["episodes_begun"])
        member_state = state.estimator_state[0].system_state
        loss_scales |= set(np.asarray(member_state.scales.loss).ravel().tolist())
        tasks = sample(member_state.task_key)
        activations |= set(np.asarray(tasks.activation_index).ravel().tolist())
    assert begun >= 12
    assert step._cache_size() == 1
    # The episodes drew different tasks: activations and scales changed between episodes.
    assert len(loss_scales) >= 4 and len(activations) >= 2


def test_evaluation_runs_the_held_out_buckets(small_family_config):
    system = build_system(small_family_config)
    held_out = build_eval_system(small_family_config, system)
    names = {m.name for m in held_out.members}
    assert names and not names & {m.name for m in system.members}


# -- augmentation and normalisation ----------------------------------------


def test_augmented_task_scales_parameters_gradients_and_loss():
    task = ImageMLPTask(
        __import__("tasks.datasets", fromlist=["x"]).load_dataset("fashion_mnist_embedded", 8),
        hidden_sizes=(8,),
        batch_size=16,
    )
    w = task.init(jax.random.PRNGKey(0))
    batch = task.batch(jax.random.PRNGKey(1), "train")
    a = jax.tree.map(lambda _: jnp.float32(3.0), w)
    a["layer_0"]["w"] = jnp.float32(0.25)
    aug = AugmentedTask(task, Scales(a, jnp.float32(5.0), jnp.float32(7.0)))
    p = jax.tree.map(lambda x, s: x / s, w, a)
    np.testing.assert_allclose(aug.task_loss(p, batch), task.loss(w, batch), rtol=1e-6)
    np.testing.assert_allclose(aug.loss(p, batch), 7.0 * task.loss(w, batch), rtol=1e-6)
    g_task = jax.grad(task.loss)(w, batch)
    g_aug = jax.grad(aug.loss)(p, batch)
    # d/dp [s L(a p)] with the gradient scaled by c: c s a dL/dw
    for ga, gt, s in zip(jax.tree.leaves(g_aug), jax.tree.leaves(g_task), jax.tree.leaves(a)):
        np.testing.assert_allclose(ga, 5.0 * 7.0 * s * gt, rtol=1e-4, atol=1e-7)
    initial = aug.init(jax.random.PRNGKey(0))
    for x, y in zip(jax.tree.leaves(aug.model_params(initial)), jax.tree.leaves(w)):
        np.testing.assert_allclose(x, y, rtol=1e-6)


def test_draws_lie_in_their_ranges():
    scales = jax.vmap(lambda k: Augmentation(4.0, 1.0, 100.0).draw(k, {"a": 0, "b": 0}))(
        jax.random.split(jax.random.PRNGKey(0), 500)
    )
    param = np.asarray(scales.param["a"])
    assert 0.25 <= param.min() < 0.3 and 3.5 < param.max() <= 4.0
    np.testing.assert_array_equal(scales.grad, 1.0)
    assert 0.01 <= scales.loss.min() < 0.02 and 60 < scales.loss.max() <= 100
    # log-uniform: the median of the log is near 0
    assert abs(np.median(np.log(param))) < 0.15


def _curve(system, theta, key, steps=30):
    state = system.init(theta, key)
    losses = []
    for k in jax.random.split(key, steps):
        state, loss = system.step(theta, state, k)
        losses.append(float(loss))
    return np.array(losses), state


@pytest.fixture(scope="module")
def lsq_bucket():
    from examples.least_squares import make_task

    return SingleTask(make_task())


def test_ratio_normalisation_divides_by_the_initial_loss(lsq_bucket):
    frozen = Adam(learning_rate=1e-12)  # parameters effectively fixed
    key = jax.random.PRNGKey(3)
    ratio = SampledTaskSystem(lsq_bucket, frozen, horizon=50, normalise="ratio", loss_cap=10.0)
    raw = SampledTaskSystem(lsq_bucket, frozen, horizon=50, normalise="none", loss_cap=1e6)
    theta = frozen.init_meta(key)
    r, state = _curve(ratio, theta, key)
    n, _ = _curve(raw, theta, key)
    np.testing.assert_allclose(r, n / float(state.initial_loss), rtol=1e-5)
    assert 10 < float(state.initial_loss) < 100  # a loss a cross-entropy cap would flatten
    # Fixed parameters: about the initial loss (L_0 is one batch's loss, so noisy).
    assert 0.7 < r.mean() < 1.4


def test_normalised_rule_and_ratio_meta_loss_do_not_see_the_loss_scale(lsq_bucket):
    """The normalized rule's trajectory, and so the normalised meta-loss, is the same
    whatever the task's loss scale: the augmentation teaches nothing it could exploit."""
    lopt = NormMLPLOpt(hidden_sizes=(8,), adam_1d=False, step_mult=3e-3)
    theta = lopt.init_meta(jax.random.PRNGKey(0))
    plain = SampledTaskSystem(lsq_bucket, lopt, horizon=50)
    scaled = SampledTaskSystem(lsq_bucket, lopt, horizon=50, augmentation=Augmentation(1, 1, 1e3))
    # The first seed whose episode draws a loss factor beyond [1/30, 30].
    key = next(
        k
        for k in jax.random.split(jax.random.PRNGKey(5), 50)
        if abs(math.log(float(scaled.init(theta, k).scales.loss))) > math.log(30)
    )
    a, _ = _curve(plain, theta, key)
    b, _ = _curve(scaled, theta, key)
    assert np.ptp(a) > 0.05  # the (untrained) rule moves the parameters
    np.testing.assert_allclose(a, b, rtol=2e-3)


# -- the family gradient is unbiased ---------------------------------------

RUNS = 3000
Z_TOL = 5.0


def test_family_gradient_is_unbiased_against_the_exact_gradient():
    """A family of two linear-quadratic systems of different state sizes, weights 1/4
    and 3/4: the mean family PES estimate over whole episodes is within Z_TOL
    standard errors of the exact gradient of the weighted objective; truncated ES
    (biased) on the same family misses."""
    with jax.enable_x64(True):
        horizon, k = 12, 4
        members = (
            LinearQuadratic.create(jax.random.PRNGKey(0), state_dim=3, horizon=horizon),
            LinearQuadratic.create(jax.random.PRNGKey(1), state_dim=5, horizon=horizon),
        )
        weights = (0.25, 0.75)
        theta = jnp.array([0.3, -0.2])

        def objective(t):
            return sum(w * m.full_horizon_loss(t) for w, m in zip(weights, members))

        exact = np.asarray(jax.grad(objective)(theta))

        def means(cls):
            est = FamilyEstimator(
                tuple(
                    cls(m, num_particles=2, trunc_len=k, sigma=0.1, stagger=False) for m in members
                ),
                weights,
            )

            def run(key):
                k0, k1 = jax.random.split(key)

                def body(state, kk):
                    g, state, _ = est.estimate(theta, state, kk)
                    return state, g

                _, gs = jax.lax.scan(body, est.init(theta, k0), jax.random.split(k1, horizon // k))
                return gs.mean(0)

            return np.asarray(jax.jit(jax.vmap(run))(jax.random.split(jax.random.PRNGKey(7), RUNS)))

        samples = means(PES)
        se = samples.std(0, ddof=1) / math.sqrt(RUNS)
        z = (samples.mean(0) - exact) / se
        assert np.all(np.abs(z) < Z_TOL), (z, samples.mean(0), exact)
        assert np.all(se < 0.05 * np.abs(exact))  # the check has power
        biased = means(TruncatedES)
        z_biased = (biased.mean(0) - exact) / (biased.std(0, ddof=1) / math.sqrt(RUNS))
        assert np.max(np.abs(z_biased)) > 3 * Z_TOL


def test_family_weights_must_sum_to_one():
    m = LinearQuadratic.create(jax.random.PRNGKey(0), horizon=4, dtype=jnp.float32)
    with pytest.raises(ValueError, match="sum to 1"):
        SystemFamily((m, m), (0.5, 0.6))


def test_horizon_aware_rule_is_told_each_episode_length(lsq_bucket):
    """An episode's optimizer state carries the system's horizon, and an episode
    begun after a curriculum stage changes it carries the new one."""
    import dataclasses

    lopt = NormMLPLOpt(hidden_sizes=(4,), horizon_aware=True)
    system = SampledTaskSystem(lsq_bucket, lopt, horizon=50)
    theta = system.init_theta(jax.random.PRNGKey(0))
    state = system.init(theta, jax.random.PRNGKey(1))
    assert float(state.inner.opt_state.num_steps) == 50.0
    state, _ = system.step(theta, state, jax.random.PRNGKey(2))
    assert int(state.inner.opt_state.step) == 1 and float(state.inner.opt_state.num_steps) == 50
    longer = dataclasses.replace(system, horizon=400)
    assert float(longer.init(theta, jax.random.PRNGKey(1)).inner.opt_state.num_steps) == 400.0
