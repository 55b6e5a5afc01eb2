"""The continuous-control system (meta_train.systems.control) and its experiment:
a hand-stepped Pendulum episode, early termination, every estimator that applies,
the equal-budget comparison, and the errors for an unknown environment or a
missing control extra."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import ROOT

pytest.importorskip("gymnax", reason="the control extra: pip install 'lopt-pes[control]'")

from meta_train import builders  # noqa: E402
from meta_train import config as config_lib  # noqa: E402
from meta_train.estimators import ESTIMATORS  # noqa: E402
from meta_train.evaluation import estimator_comparison, figures  # noqa: E402
from meta_train.systems.control import ControlSystem  # noqa: E402
from tasks.control import CONTINUOUS_ENVS, load_environment  # noqa: E402


def _episode(system, theta, key):
    """Losses and final state of one episode of ``system`` under ``theta``, as an
    estimator runs it (init, then horizon steps, one key each)."""
    k_init, k_steps = jax.random.split(key)
    state = system.init(theta, k_init)

    def body(state, k):
        return system.step(theta, state, k)

    return jax.lax.scan(body, state, jax.random.split(k_steps, system.horizon))[::-1]


def _numpy_pendulum_episode(theta, th, thdot, steps):
    """Pendulum-v1's dynamics and reward (the gym source), with the policy in numpy."""
    g, m, length, dt, max_speed, max_torque = 10.0, 1.0, 1.0, 0.05, 8.0, 2.0
    w = {k: np.asarray(v, np.float64) for k, v in theta.items()}
    rewards = []
    for _ in range(steps):
        obs = np.stack([np.cos(th), np.sin(th), thdot], axis=1)
        z = np.tanh(np.tanh(obs @ w["w0"] + w["b0"]) @ w["w1"] + w["b1"])
        u = np.clip(-2.0 + 4.0 * (z + 1.0) / 2.0, -max_torque, max_torque)[:, 0]
        angle = (th + np.pi) % (2 * np.pi) - np.pi
        rewards.append(-(angle**2 + 0.1 * thdot**2 + 0.001 * u**2))
        thdot = np.clip(
            thdot + (3 * g / (2 * length) * np.sin(th) + 3.0 / (m * length**2) * u) * dt,
            -max_speed,
            max_speed,
        )
        th = th + thdot * dt
    return np.asarray(rewards), th, thdot


def _random_theta(system, seed):
    theta = system.init_theta(jax.random.PRNGKey(seed))
    keys = iter(jax.random.split(jax.random.PRNGKey(seed + 1), len(theta)))
    return {k: v + 0.5 * jax.random.normal(next(keys), v.shape) for k, v in theta.items()}


def test_pendulum_matches_a_hand_stepped_episode():
    system = ControlSystem.create(
        load_environment("Pendulum-v1"), hidden_sizes=(8,), horizon=60, batch_size=3
    )
    theta = _random_theta(system, 0)
    losses, final = _episode(system, theta, jax.random.PRNGKey(7))
    start = system.init(theta, jax.random.split(jax.random.PRNGKey(7))[0])
    rewards, th, thdot = _numpy_pendulum_episode(
        theta, np.asarray(start.env_state.theta, np.float64),
        np.asarray(start.env_state.theta_dot, np.float64), 60,
    )  # fmt: skip
    # L_t is the mean negative reward over the environments; float32 against float64.
    np.testing.assert_allclose(losses, -rewards.mean(axis=1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(final.env_state.theta, th, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(final.env_state.theta_dot, thdot, rtol=1e-4, atol=1e-4)
    assert int(final.t) == 60 and not bool(final.done.any())
    assert np.all(losses > 0)  # Pendulum's reward is a cost: never positive


class _CountdownEnv:
    """A gymnax-style environment: the state counts down from its reset value and the
    episode terminates at 0; the reward is the action."""

    def reset_env(self, key, params):
        del params
        n = jax.random.randint(key, (), 2, 5)
        return jnp.stack([n.astype(jnp.float32)]), n

    def step_env(self, key, state, action, params):
        del key, params
        n = state - 1
        return jnp.stack([n.astype(jnp.float32)]), n, action[0], n <= 0, {}


def test_an_ended_episode_stays_ended_and_adds_nothing():
    system = ControlSystem(
        _CountdownEnv(), None, jnp.array([0.5]), jnp.array([1.5]),
        obs_dim=1, hidden_sizes=(2,), horizon=6, batch_size=4,
    )  # fmt: skip
    theta = system.init_theta(jax.random.PRNGKey(0))  # zero output layer: action 1.0
    key = jax.random.PRNGKey(3)
    losses, final = _episode(system, theta, key)
    start = np.asarray(system.init(theta, jax.random.split(key)[0]).env_state)
    # Each environment pays -1 per step until it terminates after `start` steps.
    expected = [-np.mean(t < start) for t in range(6)]
    np.testing.assert_allclose(losses, expected, atol=1e-6)
    assert np.all(np.asarray(final.env_state) == 0) and bool(final.done.all())


@pytest.mark.parametrize("name", CONTINUOUS_ENVS)
def test_every_continuous_environment_runs_an_episode(name):
    environment = load_environment(name)
    system = ControlSystem.create(environment, hidden_sizes=(4,), horizon=12, batch_size=2)
    losses, final = jax.jit(_episode)(system, _random_theta(system, 1),
                                                       jax.random.PRNGKey(0))  # fmt: skip
    assert losses.shape == (12,) and np.all(np.isfinite(losses))
    actions = system.act(_random_theta(system, 1), final.obs)
    assert np.all(actions >= environment.action_low) and np.all(actions <= environment.action_high)


def _small(kind: str, *extra: str) -> config_lib.Config:
    return config_lib.load(
        ROOT / "configs" / "control.toml",
        [f"estimator.kind={kind}", "task.horizon=20", "task.batch_size=2",
         "estimator.num_particles=4", "estimator.trunc_len=5", *extra],
    )  # fmt: skip


@pytest.mark.parametrize("kind", list(ESTIMATORS))
def test_every_estimator_runs_on_pendulum(kind):
    """Pendulum's transitions are differentiable, so the BPTT estimators apply too."""
    config = _small(kind)
    system = builders.build_system(config)
    estimator = builders.build_estimator(config, system)
    theta = system.init_theta(jax.random.PRNGKey(0))
    state = estimator.init(theta, jax.random.PRNGKey(1))
    estimate = jax.jit(type(estimator).estimate)(estimator, theta, state, jax.random.PRNGKey(2))
    grads = jax.tree.leaves(estimate.grad)
    assert all(np.all(np.isfinite(g)) for g in grads)
    assert sum(float(jnp.sum(jnp.abs(g))) for g in grads) > 0
    assert 0 < float(estimate.metrics["meta_loss"]) < 17  # a cost per step: Pendulum's is < 16.3


def test_bptt_through_an_environment_without_gradients_is_refused(monkeypatch):
    # Every environment shipped today is differentiable: stand in for one that is not.
    rigid = load_environment("Swimmer-misc")._replace(differentiable=False)
    monkeypatch.setattr(builders, "load_environment", lambda name: rigid)
    with pytest.raises(config_lib.ConfigError, match="gymnax stops them in Swimmer-misc"):
        builders.build_system(_small("tbptt", "task.env=Swimmer-misc", "task.horizon=20"))
    builders.build_system(_small("pes", "task.env=Swimmer-misc"))  # ES applies


def test_a_horizon_past_the_environments_limit_raises_it():
    system = builders.build_system(_small("pes", "task.horizon=300"))
    assert system.horizon == 300 and system.env_params.max_steps_in_episode == 300
    losses, final = jax.jit(_episode)(system, system.init_theta(jax.random.PRNGKey(0)),
                                      jax.random.PRNGKey(1))  # fmt: skip
    assert losses.shape == (300,) and np.all(losses > 0) and int(final.t) == 300
    with pytest.raises(config_lib.ConfigError, match="task.horizon must be >= 1"):
        builders.build_system(_small("pes", "task.horizon=0"))


def test_equal_budgets_and_the_return_figure(tmp_path):
    exp = estimator_comparison.Comparison(
        "control",
        variants=(
            estimator_comparison.Variant("PES, K = 5", ("estimator.trunc_len=5",), ("pes",)),
            estimator_comparison.Variant("ES, whole episodes", (), ("full_es",)),
        ),
        budget=4 * 2 * 20 * 6,  # 6 whole episodes of 4 particles x 2 environments
        eval_every=3,
        eval_seeds=2,
        y_axis="return",
        target_return=-1e9,  # every return reaches it: at the first evaluation
    )
    small = ["task.horizon=20", "task.batch_size=2", "estimator.num_particles=4"]
    result = estimator_comparison.run(exp, ROOT / "configs", lambda _: None, small)
    pes = result["runs"]["PES, K = 5"]["pes"][0]
    es = result["runs"]["ES, whole episodes"]["full_es"][0]
    assert pes["system_steps"] == 4 * 5 * 2 and es["system_steps"] == 4 * 20 * 2
    assert pes["steps"][-1] == 24 and es["steps"][-1] == 6  # the same 960 environment steps
    summary = estimator_comparison.summary(result)
    for entry in summary.values():
        assert entry["system_steps"] == 960 and entry["steps_to_target"] == [0]
        np.testing.assert_allclose(
            entry["final_return"], -20 * np.asarray(entry["final_meta_objective"])
        )
    path = estimator_comparison.plot("control_pes_vs_es", result, tmp_path, figures.NAMES)
    assert path.stat().st_size > 10_000
    tiny = dataclasses.replace(exp, budget=100)  # less than one whole-episode ES step
    with pytest.raises(config_lib.ConfigError, match="less than one outer step"):
        estimator_comparison._load(tiny, ROOT / "configs", [*small, "estimator.kind=full_es"])


def test_first_crossing_of_a_constructed_curve():
    record = {"steps": [0, 10, 20, 30], "meta_objective": [6.0, 3.0, 0.9, 1.2], "system_steps": 7}
    assert estimator_comparison.first_crossing(record, 100, -300.0) == 10 * 7
    assert estimator_comparison.first_crossing(record, 100, -90.0) == 20 * 7
    assert estimator_comparison.first_crossing(record, 100, -50.0) is None


def test_the_shipped_comparison_spends_equal_budgets():
    exp = figures.COMPARISONS["control_pes_vs_es"]
    spent = set()
    for variant in exp.variants:
        for kind in variant.estimators:
            plan = estimator_comparison._load(
                exp, ROOT / "configs", [*variant.overrides, f"estimator.kind={kind}"]
            )
            assert plan.system_steps == estimator_comparison.steps_per_outer_step(plan.config)
            spent.add(plan.config.train.steps * plan.system_steps)
    assert spent == {exp.budget}


def test_a_missing_control_extra_is_one_line_exit_2(tmp_path):
    fake = tmp_path / "gymnax"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named gymnax')\n")
    proc = subprocess.run(
        [sys.executable, "-m", "meta_train.cli", "meta-train", "--config", "control",
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])},
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert "pip install 'lopt-pes[control]'" in lines[0] and "Pendulum-v1" in lines[0]
    assert not pathlib.Path(tmp_path / "run").exists()
