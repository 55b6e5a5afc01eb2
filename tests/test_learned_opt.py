import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from learned_opt import SGDM, Adam, MLPLOpt, NormMLPLOpt, as_optax, mlp_lopt


@pytest.fixture(scope="module")
def lopt_and_theta():
    lopt = MLPLOpt(hidden_sizes=(16, 16))
    return lopt, lopt.init_meta(jax.random.PRNGKey(0))


def _mixed_params():
    return {
        "dense": {"w": jnp.ones((3, 4)), "b": jnp.zeros((4,))},
        "scale": jnp.asarray(2.0),
        "blocks": [jnp.full((2,), 0.5), (jnp.ones((1, 2, 2), jnp.bfloat16),)],
    }


def test_theta_size_and_features(lopt_and_theta):
    lopt, theta = lopt_and_theta
    n = sum(x.size for x in jax.tree.leaves(theta))
    assert n == lopt.num_theta()
    assert theta["~"]["w_in"].shape == (lopt.num_features, 16)


def test_update_shapes_dtypes_and_step(lopt_and_theta):
    lopt, theta = lopt_and_theta
    params = _mixed_params()
    grads = jax.tree.map(lambda p: jnp.ones_like(p) * 0.1, params)
    state = lopt.init(theta, params)
    updates, state = jax.jit(lopt.update)(theta, state, grads, params)
    assert jax.tree.structure(updates) == jax.tree.structure(params)
    for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params)):
        assert u.shape == p.shape and u.dtype == p.dtype
        assert np.all(np.isfinite(np.asarray(u, np.float32)))
    assert int(state.step) == 1
    # updates are small at initialisation: step_mult scales them
    assert (
        max(float(jnp.max(jnp.abs(u.astype(jnp.float32)))) for u in jax.tree.leaves(updates)) < 0.05
    )


def test_time_feature_changes_updates(lopt_and_theta):
    lopt, theta = lopt_and_theta
    params = _mixed_params()
    grads = jax.tree.map(jnp.ones_like, params)
    state = lopt.init(theta, params)
    u0, _ = lopt.update(theta, state, grads, params)
    u1, _ = lopt.update(theta, state._replace(step=jnp.asarray(1000, jnp.int32)), grads, params)
    assert not np.allclose(u0["dense"]["w"], u1["dense"]["w"])


def test_as_optax_in_a_plain_loop_matches_internal_update(lopt_and_theta):
    lopt, theta = lopt_and_theta
    opt = optax.chain(as_optax(lopt, theta))
    params = {"w": jnp.ones((5, 3)), "b": [jnp.zeros(3), jnp.asarray(1.0)]}
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 5))

    def loss_fn(p):
        return jnp.mean((x @ p["w"] + p["b"][0] + p["b"][1]) ** 2)

    @jax.jit
    def train_step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params, loss=loss)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = opt.init(params)
    p_ref, s_ref = params, lopt.init(theta, params)
    for _ in range(3):
        grads = jax.grad(loss_fn)(p_ref)
        u_ref, s_ref = lopt.update(theta, s_ref, grads, p_ref)
        p_ref = optax.apply_updates(p_ref, u_ref)
        params, opt_state, _ = train_step(params, opt_state)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(p_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "ours,ref",
    [
        (Adam(learning_rate=0.01), optax.adam(0.01)),
        (SGDM(learning_rate=0.1, momentum=0.9), optax.sgd(0.1, momentum=0.9)),
    ],
)
def test_baselines_match_optax(ours, ref):
    params = {"w": jnp.linspace(-1, 1, 6).reshape(2, 3)}
    theta = ours.init_meta(None)
    s_ours, s_ref = ours.init(theta, params), ref.init(params)
    for i in range(4):
        grads = {"w": jnp.sin(params["w"] * (i + 1))}
        u_ours, s_ours = ours.update(theta, s_ours, grads, params)
        u_ref, s_ref = ref.update(grads, s_ref, params)
        np.testing.assert_allclose(u_ours["w"], u_ref["w"], rtol=1e-5)


def test_update_without_params_is_a_clear_error(lopt_and_theta):
    lopt, theta = lopt_and_theta
    params = {"w": jnp.ones(2)}
    opt = as_optax(lopt, theta)
    with pytest.raises(ValueError, match="needs params"):
        opt.update(params, opt.init(params))


def test_update_matches_the_formula_with_explicitly_normalised_features():
    """The first-layer folding of the per-tensor normalisation computes the documented MLP."""
    lopt = MLPLOpt(hidden_sizes=(16, 16))
    theta = lopt.init_meta(jax.random.PRNGKey(3))
    keys = jax.random.split(jax.random.PRNGKey(4), 4)
    params = {"w": jax.random.normal(keys[0], (6, 5)), "b": jax.random.normal(keys[1], (5,))}
    grads = {"w": jax.random.normal(keys[2], (6, 5)), "b": jax.random.normal(keys[3], (5,))}
    state = lopt.init(theta, params)
    for _ in range(2):  # non-zero moments
        updates, state = lopt.update(theta, state, grads, params)

    decays = np.asarray(lopt.decays)
    expected = {}
    for name in params:
        p = np.asarray(params[name]).reshape(-1, 1)
        g = np.asarray(grads[name]).reshape(-1, 1)
        m = np.asarray(state.momentum[name]).reshape(-1, len(decays))  # after this update
        v = np.asarray(state.second_moment[name]).reshape(-1, len(decays))
        r = 1 / np.sqrt(v + 1e-8)
        feats = np.concatenate([p, g, m, v, m * r, r], axis=1)
        feats = feats / np.sqrt(np.mean(feats**2, axis=0, keepdims=True) + 1e-5)
        t = np.tanh(1.0 / np.asarray(mlp_lopt.TIMESCALES) - 1.0)  # step 1: the second update
        out = np.asarray(
            lopt._net.apply(theta, jnp.asarray(feats, jnp.float32), jnp.asarray(t, jnp.float32))
        )
        expected[name] = (-out[:, 0] * np.exp(lopt.exp_mult * out[:, 1]) * lopt.step_mult).reshape(
            params[name].shape
        )
    for name in params:
        np.testing.assert_allclose(updates[name], expected[name], rtol=1e-4, atol=1e-9)


def test_init_meta_draws_weights_as_haiku_would():
    lopt = MLPLOpt()
    theta = lopt.init_meta(jax.random.PRNGKey(7))
    rows = jnp.zeros((1, lopt.num_features))
    haiku_init = lopt._net.init(jax.random.PRNGKey(7), rows, jnp.zeros(11))
    assert jax.tree.structure(theta) == jax.tree.structure(haiku_init)
    assert jax.tree.map(jnp.shape, theta) == jax.tree.map(jnp.shape, haiku_init)
    z = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(theta)[0]:
        if leaf.ndim == 1:
            assert not np.any(np.asarray(leaf)), "biases start at zero"
            continue
        # hk.Linear: TruncatedNormal(1/sqrt(fan_in)); the first layer: VarianceScaling.
        first = path[-1].key in ("w_in", "w_time")
        std = 1 / np.sqrt(leaf.shape[0]) / (0.87962566 if first else 1.0)
        z.append(np.asarray(leaf).ravel() / std)
    z = np.concatenate(z)
    assert np.all(np.abs(z) <= 2.0 + 1e-5)  # truncated at 2 standard deviations
    # std of N(0, 1) cut at +-2 is 0.8796; its standard error here is 0.88 / sqrt(2 n).
    se = 0.88 / np.sqrt(2 * z.size)
    assert abs(z.std() - 0.8796) < 4 * se, (z.std(), se)
    assert abs(z.mean()) < 4 * 0.88 / np.sqrt(z.size)
    # The leaves are cut from one draw, not copies of each other.
    assert len(np.unique(np.round(z, 6))) > 0.99 * z.size


def test_adaptive_step_follows_its_tensor_features_and_not_the_gradient_scale():
    """NormMLPLOpt(adaptive_step=True): each tensor's update RMS is
    step_mult * exp(w_tensor . [cos(g, m_1), cos(g, m_2), log(rows) / log(1024)]),
    the same for any scale of the gradient; zero w_tensor is the plain rule."""
    lopt = NormMLPLOpt(hidden_sizes=(8,), adaptive_step=True, adam_1d=False)
    theta = lopt.init_meta(jax.random.PRNGKey(0))
    assert lopt.num_theta() == sum(x.size for x in jax.tree.leaves(theta))
    theta = dict(theta)
    (module,) = [m for m in theta if "w_tensor" in theta[m]]
    w = jnp.array([0.5, 0.25, 2.0])
    theta[module] = {**theta[module], "w_tensor": w}
    params = {"w": jnp.ones((5, 3)), "v": jnp.ones((40, 2))}
    grads = jax.tree.map(lambda p: 0.1 * jax.random.normal(jax.random.PRNGKey(1), p.shape), params)

    def rms_after_one_step(scale):
        state = lopt.init(theta, params)
        g = jax.tree.map(lambda x: scale * x, grads)
        update, _ = lopt.update(theta, state, g, params)
        return {k: float(jnp.sqrt(jnp.mean(jnp.square(u)))) for k, u in update.items()}

    # After one step every momentum is a multiple of the gradient: both cosines are 1.
    for name, rows in (("w", 5), ("v", 40)):
        expected = lopt.step_mult * np.exp(0.5 + 0.25 + 2.0 * np.log(rows) / np.log(1024))
        np.testing.assert_allclose(rms_after_one_step(1.0)[name], expected, rtol=1e-4)
        np.testing.assert_allclose(rms_after_one_step(1e4)[name], expected, rtol=1e-4)


def test_fan_in_exponent_scales_each_tensors_step_by_its_fan_in():
    """NormMLPLOpt(fan_in_exponent=a): a tensor's update is the plain rule's times
    (64 / rows) ** a, rows being the fan-in of its matrix view (a conv kernel's
    kh * kw * in); the direction is unchanged, and a outside [0, 2] is refused."""
    params = {
        "dense": jnp.ones((784, 16)),  # fan-in 784: 64 / 784 of the step at a = 1
        "conv": jnp.ones((3, 3, 8, 4)),  # fan-in 72
        "head": jnp.ones((16, 10)),  # fan-in 16: four times the step
    }
    keys = jax.random.split(jax.random.PRNGKey(1), 3)
    grads = {k: jax.random.normal(key, p.shape) for (k, p), key in zip(params.items(), keys)}
    plain = NormMLPLOpt(hidden_sizes=(8,), adam_1d=False)
    theta = plain.init_meta(jax.random.PRNGKey(0))
    base, _ = plain.update(theta, plain.init(theta, params), grads, params)
    for a in (0.5, 1.0):
        lopt = NormMLPLOpt(hidden_sizes=(8,), adam_1d=False, fan_in_exponent=a)
        scaled, _ = lopt.update(theta, lopt.init(theta, params), grads, params)
        for name, fan_in in (("dense", 784), ("conv", 72), ("head", 16)):
            np.testing.assert_allclose(
                scaled[name], (64 / fan_in) ** a * base[name], rtol=1e-5, atol=1e-12
            )
    with pytest.raises(ValueError, match="fan_in_exponent"):
        NormMLPLOpt(fan_in_exponent=-0.5)


def test_horizon_aware_rule_keeps_its_schedule_in_fractions_of_the_run():
    """NormMLPLOpt(horizon_aware=True): the learned log step is a piecewise-linear
    function of step / num_steps through its values at RUN_FRACTION_KNOTS, so a run
    twice as long has the same schedule stretched twice; init without the run's
    length is refused, and the optax export asks for it."""
    from learned_opt.base import init_for_run
    from learned_opt.norm_mlp_lopt import RUN_FRACTION_KNOTS, run_fraction_features

    basis = run_fraction_features(jnp.int32(30), jnp.float32(200))  # 0.15: between 0.1, 0.2
    np.testing.assert_allclose(float(basis.sum()), 1.0, rtol=1e-6)
    i = RUN_FRACTION_KNOTS.index(0.1)
    np.testing.assert_allclose(basis[i : i + 2], [0.5, 0.5], rtol=1e-5)
    past_end = run_fraction_features(jnp.int32(500), jnp.float32(200))
    assert float(past_end[-1]) == 1.0  # past the run's end it stays at the last knot

    lopt = NormMLPLOpt(hidden_sizes=(8,), horizon_aware=True, adam_1d=False)
    theta = dict(lopt.init_meta(jax.random.PRNGKey(0)))
    assert lopt.num_theta() == sum(x.size for x in jax.tree.leaves(theta))
    (module,) = [m for m in theta if "w_schedule" in theta[m]]
    schedule = jnp.linspace(0.0, -3.0, len(RUN_FRACTION_KNOTS))  # a learned decay
    theta[module] = {**theta[module], "w_schedule": schedule}
    params = {"w": jnp.ones((6, 4))}
    grads = {"w": jax.random.normal(jax.random.PRNGKey(1), (6, 4))}

    def rms_at(step, num_steps):
        state = init_for_run(lopt, theta, params, num_steps)._replace(step=jnp.int32(step))
        update, _ = lopt.update(theta, state, grads, params)
        return float(jnp.sqrt(jnp.mean(jnp.square(update["w"]))))

    for step, num_steps in ((0, 100), (15, 100), (50, 100), (100, 100)):
        expected = lopt.step_mult * np.exp(
            np.interp(step / num_steps, RUN_FRACTION_KNOTS, np.asarray(schedule))
        )
        np.testing.assert_allclose(rms_at(step, num_steps), expected, rtol=1e-4)
        np.testing.assert_allclose(rms_at(2 * step, 2 * num_steps), expected, rtol=1e-4)

    with pytest.raises(ValueError, match="num_steps"):
        lopt.init(theta, params)
    with pytest.raises(ValueError, match="num_steps"):
        as_optax(lopt, theta)
    opt = as_optax(lopt, theta, num_steps=300)
    assert float(opt.init(params).num_steps) == 300.0
    # A rule that does not read the length is built the same with or without it.
    plain = NormMLPLOpt(hidden_sizes=(8,))
    assert not plain.uses_horizon
    plain_theta = plain.init_meta(jax.random.PRNGKey(0))
    assert not hasattr(init_for_run(plain, plain_theta, params, 300), "num_steps")


def test_step_scaled_multiplies_the_whole_update():
    """StepScaled(rule): exp(log_scale) times the rule's update, on every leaf (the
    Adam-updated vectors too), with the rule's state unchanged."""
    from learned_opt.step_scaled import StepScaled

    rule = NormMLPLOpt(hidden_sizes=(4,))
    scaled = StepScaled(rule)
    theta = scaled.init_meta(jax.random.PRNGKey(0))
    theta = {**theta, "log_scale": jnp.log(jnp.float32(0.25))}
    params = {"w": jnp.ones((5, 3)), "b": jnp.zeros((3,))}
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
    want, want_state = rule.update(theta["rule"], rule.init(theta["rule"], params), grads, params)
    got, got_state = scaled.update(theta, scaled.init(theta, params), grads, params)
    for k in params:
        np.testing.assert_allclose(got[k], 0.25 * want[k], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(got_state), jax.tree.leaves(want_state)):
        np.testing.assert_array_equal(a, b)
