"""PES against truncated ES on meta-training a learned optimizer (``lopt figures
--experiments lopt_pes_vs_tes``), on a small version: the meta-loss curve is the
fixed-seed whole-horizon evaluation of each run's theta."""

import json

import jax
import numpy as np
import pytest

from meta_train import config as config_lib
from meta_train.evaluation import figures, lopt_comparison
from meta_train.evaluation.fixed_seeds import evaluate
from meta_train.resources import configs_dir
from meta_train.training import scan_loop

SMALL = ["train.steps=6", "task.horizon=40", "estimator.num_particles=4",
         "task.hidden_sizes=[8]", "lopt.hidden_sizes=[8]"]  # fmt: skip
EXP = lopt_comparison.LOptComparison("lopt_pes_vs_tes", seeds=2, eval_every=4, eval_seeds=2)


@pytest.fixture(scope="module")
def result():
    return lopt_comparison.run(EXP, configs_dir(), progress=lambda _: None, overrides=SMALL)


def test_every_estimator_from_every_initialisation(result):
    runs = result["runs"]
    assert set(runs) == {"pes", "truncated_es"} and all(len(r) == 2 for r in runs.values())
    for seeds in runs.values():
        for r in seeds:
            assert r["steps"] == [0, 4, 6] and len(r["train_meta_loss"]) == 6
            assert np.isfinite(r["meta_loss"]).all()
    # Both estimators start from the same theta for an initialisation; the two differ.
    assert runs["pes"][0]["meta_loss"][0] == runs["truncated_es"][0]["meta_loss"][0]
    assert runs["pes"][0]["meta_loss"][0] != runs["pes"][1]["meta_loss"][0]
    assert result["horizon"] == 40 and result["trunc_len"] == 20


def test_the_meta_loss_is_the_fixed_seed_evaluation_over_the_whole_horizon(result):
    config = config_lib.load(
        configs_dir() / "lopt_pes_vs_tes.toml", [*SMALL, "estimator.kind=truncated_es",
                                                  "train.seed=1"]
    )  # fmt: skip
    system, traj = scan_loop.run(config)
    final = jax.tree.map(lambda a: a[-1], traj.thetas)
    expected = evaluate(system, final, num_seeds=2, num_steps=40)["eval_loss"]
    assert result["runs"]["truncated_es"][1]["meta_loss"][-1] == pytest.approx(expected, rel=1e-5)


def test_summary_and_plot(result, tmp_path):
    summary = lopt_comparison.summary(result)
    finals = [r["meta_loss"][-1] for r in result["runs"]["pes"]]
    assert summary["pes"]["final_meta_loss"] == finals
    assert summary["pes"]["mean"] == pytest.approx(np.mean(finals))
    path = lopt_comparison.plot("lopt_pes_vs_tes", result, tmp_path, figures.NAMES)
    assert path.stat().st_size > 10_000


def test_drawing_one_experiment_keeps_the_others_in_the_summary(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"toy_regression": {"pes": {}}}))
    figures.draw(["influence_balancing"], tmp_path, configs_dir(), lambda _: None,
                 ["train.steps=5"])  # fmt: skip
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"toy_regression", "influence_balancing"}
