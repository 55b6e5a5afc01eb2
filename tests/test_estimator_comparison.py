"""The PES paper's comparisons judged over whole horizons (``lopt figures
--experiments lopt_pes_vs_tes,lr_schedule_mlp``), on small versions: the
learned-optimizer comparison over initialisations, and the piecewise-linear
learning-rate schedule of an MLP on the validation loss and on the validation
error, whose gradient is zero."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from meta_train import config as config_lib
from meta_train.builders import build_estimator, build_system
from meta_train.config import ConfigError
from meta_train.evaluation import estimator_comparison, figures
from meta_train.evaluation.fixed_seeds import evaluate
from meta_train.resources import configs_dir
from meta_train.training import scan_loop

SMALL_LOPT = ["train.steps=6", "task.horizon=40", "estimator.num_particles=4",
              "task.hidden_sizes=[8]", "lopt.hidden_sizes=[8]"]  # fmt: skip
LOPT = estimator_comparison.Comparison("lopt_pes_vs_tes", seeds=2, eval_every=4, eval_seeds=2)
SMALL_SCHEDULE = ["train.steps=4", "task.horizon=60", "estimator.num_particles=8"]


@pytest.fixture(scope="module")
def lopt_result():
    return estimator_comparison.run(LOPT, configs_dir(), lambda _: None, SMALL_LOPT)


def test_every_estimator_from_every_initialisation(lopt_result):
    runs = lopt_result["runs"][""]
    assert set(runs) == {"pes", "truncated_es"} and all(len(r) == 2 for r in runs.values())
    for seeds in runs.values():
        for r in seeds:
            assert r["steps"] == [0, 4, 6] and len(r["train_meta_loss"]) == 6
            assert np.isfinite(r["meta_objective"]).all() and r["trunc_len"] == 20
            assert "final_theta" not in r  # a learned optimizer's theta is not kept
    # Both estimators start from the same theta for an initialisation; the two differ.
    assert runs["pes"][0]["meta_objective"][0] == runs["truncated_es"][0]["meta_objective"][0]
    assert runs["pes"][0]["meta_objective"][0] != runs["pes"][1]["meta_objective"][0]


def test_the_meta_loss_is_the_fixed_seed_evaluation_over_the_whole_horizon(lopt_result):
    config = config_lib.load(
        configs_dir() / "lopt_pes_vs_tes.toml",
        [*SMALL_LOPT, "estimator.kind=truncated_es", "train.seed=1"],
    )
    system, traj = scan_loop.run(config)
    final = jax.tree.map(lambda a: a[-1], traj.thetas)
    expected = evaluate(system, final, num_seeds=2, num_steps=40)["eval_loss"]
    got = lopt_result["runs"][""]["truncated_es"][1]["meta_objective"][-1]
    assert got == pytest.approx(expected, rel=1e-5)


def test_summary_and_plot(lopt_result, tmp_path):
    summary = estimator_comparison.summary(lopt_result)
    finals = [r["meta_objective"][-1] for r in lopt_result["runs"][""]["pes"]]
    assert summary["pes"]["final_meta_objective"] == finals
    assert summary["pes"]["mean"] == pytest.approx(np.mean(finals))
    assert summary["pes"]["loss"] == "mean inner loss over T = 40"
    path = estimator_comparison.plot("lopt_pes_vs_tes", lopt_result, tmp_path, figures.NAMES)
    assert path.stat().st_size > 10_000


def test_drawing_one_experiment_keeps_the_others_in_the_summary(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"toy_regression": {"pes": {}}}))
    figures.draw(["influence_balancing"], tmp_path, configs_dir(), lambda _: None,
                 ["train.steps=5"])  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"toy_regression", "influence_balancing"}


def _schedule_system(*overrides):
    config = config_lib.load(configs_dir() / "lr_schedule_mlp.toml", [*SMALL_SCHEDULE, *overrides])
    return config, build_system(config)


def test_piecewise_linear_schedule_interpolates_log_learning_rates_between_knots():
    _, system = _schedule_system("task.theta0=[0.0, -2.0, -1.0]", "task.horizon=100")
    theta = jnp.asarray([0.0, -2.0, -1.0])  # knots at t = 0, 50, 100
    lr = system.learning_rate(theta, jnp.asarray([0.0, 25.0, 50.0, 75.0, 100.0, 150.0]))
    np.testing.assert_allclose(lr, np.exp([0.0, -1.0, -2.0, -1.5, -1.0, -1.0]), rtol=1e-6)


def _estimate(system, kind, key):
    config = config_lib.load(
        configs_dir() / "lr_schedule_mlp.toml",
        [*SMALL_SCHEDULE, "task.meta_objective=accuracy", f"estimator.kind={kind}",
         "estimator.num_particles=64", "estimator.trunc_len=20"],
    )  # fmt: skip
    estimator = build_estimator(config, system)
    theta = system.init_theta(key)
    state = estimator.init(theta, key)
    grad, *_ = estimator.estimate(theta, state, jax.random.PRNGKey(1))
    return np.asarray(grad)


def test_the_accuracy_objective_has_no_gradient_but_es_estimates_one():
    _, system = _schedule_system("task.meta_objective=accuracy")
    assert system.meta_objective == "accuracy"
    key = jax.random.PRNGKey(0)
    tbptt = _estimate(system, "tbptt", key)
    pes = _estimate(system, "pes", key)
    assert np.all(tbptt == 0.0)  # argmax accuracy is piecewise constant in theta
    assert np.abs(pes).max() > 0 and np.isfinite(pes).all()
    # The loss objective's gradient is not zero: the zero is the accuracy's.
    _, loss_system = _schedule_system()
    assert np.abs(_estimate(loss_system, "tbptt", key)).max() > 0


def test_schedule_comparison_runs_every_estimator_that_applies(tmp_path):
    shipped = figures.COMPARISONS["lr_schedule_mlp"]
    assert [v.label for v in shipped.variants] == [
        "loss K=10", "loss K=100", "accuracy K=10", "accuracy K=100"
    ]  # fmt: skip
    # One variant per objective (the truncation is a config value like any other).
    exp = dataclasses.replace(shipped, variants=shipped.variants[::3])
    result = estimator_comparison.run(exp, configs_dir(), lambda _: None, SMALL_SCHEDULE)
    assert set(result["runs"]["loss K=10"]) == {"pes", "truncated_es", "tbptt"}
    assert set(result["runs"]["accuracy K=100"]) == {"pes", "truncated_es"}
    for variant in result["runs"].values():
        for (run,) in variant.values():
            assert len(run["final_theta"]) == 6 and run["steps"] == [0, 4]
    error = result["runs"]["accuracy K=100"]["pes"][0]["meta_objective"]
    assert all(0.0 <= e <= 1.0 for e in error)
    summary = estimator_comparison.summary(result)
    assert summary["accuracy K=100: pes"]["loss"].startswith("mean validation error")
    assert estimator_comparison.plot("s", result, tmp_path, figures.NAMES).stat().st_size > 10_000


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["task.schedule=cosine"], "task.schedule: unknown 'cosine'"),
        (["task.meta_objective=f1"], "task.meta_objective: unknown 'f1'"),
        (["task.theta0=[-3.0]"], "needs >= 2 knots"),
        (["task.kind=image_mlp", "task.meta_objective=accuracy"],
         'task.meta_objective is only for task.kind = "lr_schedule_mlp"'),
    ],
)  # fmt: skip
def test_bad_schedule_settings_are_refused_by_name(overrides, message):
    with pytest.raises(ConfigError, match=message):
        _schedule_system(*overrides)
