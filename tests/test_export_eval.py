import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_cli import _lopt

import learned_opt
from learned_opt import MLPLOpt, OptimizerFileError
from meta_train import resources
from meta_train.evaluation import held_out
from meta_train.evaluation.report import read_metrics
from meta_train.training.export_run import export_run
from tasks.datasets import load_dataset
from tasks.image_mlp import ImageMLPTask
from tasks.suites import HELD_OUT_SUITES


@pytest.fixture(scope="module")
def artifact(full_run, tmp_path_factory):
    return export_run(full_run.run_dir, tmp_path_factory.mktemp("art") / "opt")


def test_export_round_trip_and_card(artifact, full_run):
    lopt, theta, card = learned_opt.load(artifact)
    assert isinstance(lopt, MLPLOpt) and lopt.hidden_sizes == (16, 16)
    for a, b in zip(jax.tree.leaves(theta), jax.tree.leaves(full_run.theta)):
        np.testing.assert_array_equal(a, b)
    assert card["outer_steps"] == 6
    assert card["meta_trained_on"]["hidden_sizes"] == [16]
    assert "exported" in card and "eval_at_export" in card
    assert card["outer_training"]["steps"] == 6 and card["estimator"]["kind"] == "pes"
    last = [r for r in read_metrics(full_run.run_dir) if "meta_loss" in r][-1]
    assert card["meta_training_time"] == {k: last[k] for k in ("seconds", "cpu_seconds")}


def test_exported_optimizer_in_a_plain_optax_loop(artifact):
    """Written the way users write optax loops, on a nested tree of mixed shapes."""
    opt = optax.chain(learned_opt.load_optax(artifact))
    lopt, theta, _ = learned_opt.load(artifact)
    params = {
        "encoder": {"w": jnp.full((4, 3), 0.1), "b": jnp.zeros(3)},
        "heads": [jnp.ones((3,)), (jnp.asarray(0.5), jnp.ones((2, 1, 3)))],
    }
    x = jax.random.normal(jax.random.PRNGKey(0), (16, 4))

    def loss_fn(p):
        h = jnp.tanh(x @ p["encoder"]["w"] + p["encoder"]["b"])
        y = h @ p["heads"][0] * p["heads"][1][0] + jnp.sum(p["heads"][1][1])
        return jnp.mean((y - 1.0) ** 2)

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    exported_update = jax.jit(opt.update)
    internal_update = jax.jit(lopt.update)
    opt_state = opt.init(params)
    losses = []
    for _ in range(20):
        grads = jax.grad(loss_fn)(params)
        u_exported, _ = exported_update(grads, opt_state, params)
        u_internal, _ = internal_update(theta, opt_state[0], grads, params)
        for a, b in zip(jax.tree.leaves(u_exported), jax.tree.leaves(u_internal)):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert int(opt_state[0].step) == 20
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("name", resources.optimizer_names())
def test_each_shipped_optimizer_trains_a_task_it_never_saw(name):
    """Loaded by name into a plain optax loop, as a user would: two tanh layers of 48
    units, batch 64 (no shipped optimizer was meta-trained on this shape), 1000 steps.
    Chance is ln 10 = 2.30 and 10%; tuned Adam reaches about 0.47 and 82% here."""
    task = ImageMLPTask(
        load_dataset("fashion_mnist_embedded", 8), (48, 48), activation="tanh", batch_size=64
    )
    opt = learned_opt.load_optax(name)

    @jax.jit
    def train(params, keys):
        def step(carry, key):
            params, opt_state = carry
            grads = jax.grad(task.loss)(params, task.batch(key, "train"))
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        return jax.lax.scan(step, (params, opt.init(params)), keys)[0][0]

    params = train(task.init(jax.random.PRNGKey(0)), jax.random.split(jax.random.PRNGKey(1), 1000))
    val = [task.batch(k, "validation") for k in jax.random.split(jax.random.PRNGKey(2), 16)]
    loss = np.mean([float(task.loss(params, b)) for b in val])
    accuracy = np.mean([float(task.accuracy(params, b)) for b in val])
    assert loss < 0.65 and accuracy > 0.75, (loss, accuracy)


def test_shipped_optimizers_load_by_name_from_any_directory(artifact, tmp_path, monkeypatch):
    """A bare name that is no path is a shipped optimizer; an existing path, or a name
    with a directory part, is taken as a path; an unknown name lists the shipped ones."""
    monkeypatch.chdir(tmp_path)
    names = resources.optimizer_names()
    assert "default_mlp" in names and "generalist" in names
    _, theta, card = learned_opt.load("default_mlp")
    _, shipped_theta, _ = learned_opt.load(resources.checkpoints_dir() / "default_mlp")
    assert jax.tree.all(jax.tree.map(np.array_equal, theta, shipped_theta))
    shutil.copytree(artifact, tmp_path / "default_mlp")  # a local directory of that name
    _, local_theta, _ = learned_opt.load("default_mlp")
    assert not jax.tree.all(jax.tree.map(np.array_equal, local_theta, shipped_theta))
    with pytest.raises(OptimizerFileError, match="shipped optimizer's name: default_mlp"):
        learned_opt.load("no_such_optimizer")
    with pytest.raises(OptimizerFileError, match="no such optimizer artifact"):
        learned_opt.load_optax("elsewhere/generalist")


def test_damaged_artifacts_raise_clear_errors(artifact, tmp_path):
    with pytest.raises(OptimizerFileError, match="no such optimizer artifact"):
        learned_opt.load(tmp_path / "missing")
    broken = tmp_path / "broken"
    shutil.copytree(artifact, broken)
    for f in (broken / "theta").rglob("*"):
        if f.is_file() and f.stat().st_size > 0:
            f.write_bytes(b"\0garbage")
    with pytest.raises(OptimizerFileError, match=r"broken: theta is damaged"):
        learned_opt.load(broken)
    no_meta = tmp_path / "no_meta"
    shutil.copytree(artifact, no_meta)
    shutil.rmtree(no_meta / "meta")
    with pytest.raises(OptimizerFileError, match="no_meta: not a readable optimizer artifact"):
        learned_opt.load(no_meta)
    wrong = tmp_path / "wrong_arch"
    shutil.copytree(artifact, wrong)
    meta_file = next(p for p in (wrong / "meta").iterdir() if p.name == "metadata")
    meta = json.loads(meta_file.read_text())
    meta["architecture"]["hidden_sizes"] = [64, 64]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(OptimizerFileError, match="wrong_arch: theta"):
        learned_opt.load(wrong)


def test_eval_suite_schema_and_plots(artifact, tmp_path):
    lopt, theta, _ = learned_opt.load(artifact)
    from tasks.regression import LeastSquaresSpec

    regression = LeastSquaresSpec(dim=4, outputs=2)
    specs = {s.name: s for s in (*HELD_OUT_SUITES["tiny"], regression)}
    results = held_out.evaluate_suite(
        specs, {"learned": (lopt, theta)}, steps=20, seeds=2, val_points=4,
        long_steps={regression.name: 40},
    )  # fmt: skip
    pngs = held_out.write_outputs(results, tmp_path)
    data = json.loads((tmp_path / "eval.json").read_text())
    assert data["steps"] == 20 and data["seeds"] == 2
    ls = data["tasks"].pop(regression.name)
    assert ls["steps"] == 40 and ls["spec"]["kind"] == "LeastSquaresSpec"
    for r in ls["optimizers"].values():  # no classes: no accuracy
        assert r["val_steps"][-1] == 40 and r["test_accuracy"] is None
    (task,) = data["tasks"].values()
    assert task["steps"] == 20
    assert set(task["optimizers"]) == {"learned", "adam", "sgdm"}
    sp = task["optimizers"]["learned"]["speedup_over_adam"]
    assert sp["value"] > 0 and isinstance(sp["censored"], bool)
    adam = task["optimizers"]["adam"]
    assert adam["worst_grid_final_val_loss"] >= adam["final_val_loss"]["mean"]
    for r in task["optimizers"].values():
        assert len(r["train_loss_mean"]) == len(r["curve_steps"]) == 20
        assert r["val_steps"] == [5, 10, 15, 20] and len(r["val_loss_mean"]) == 4
        for key in (
            "final_train_loss",
            "mean_train_loss",
            "final_val_loss",
            "mean_val_loss",
            "val_accuracy",
            "test_accuracy",
        ):
            assert set(r[key]) == {"mean", "std"}
        assert 0.0 <= r["test_accuracy"]["mean"] <= 1.0
        assert r["seconds_per_step"] > 0 and r["diverged_seeds"] == 0
    adam = task["optimizers"]["adam"]
    assert adam["learning_rate"] in [
        float(f"{lr:.3g}") for lr in held_out.BASELINE_GRIDS["adam"][1]
    ] or any(abs(adam["learning_rate"] - lr) < 1e-9 for lr in held_out.BASELINE_GRIDS["adam"][1])
    best = min(v for v in adam["sweep"].values() if v is not None)
    assert adam["final_val_loss"]["mean"] == pytest.approx(best, rel=1e-6)
    assert len(pngs) == 3 and all(p.stat().st_size > 1000 for p in pngs)
    text = held_out.table(results)
    assert "learned speedup" in text and "tuned Adam on" in text and "| 40 |" in text
    assert "diverged on 0;" in text and "median speedup" in text

    # The baselines again from eval.json: all four reused where nothing changed, and
    # least squares run afresh when its steps change. This time the learned
    # optimizer is also tuned: its multiplier 1 is the rule as trained (the same
    # losses as the run without the grid, to float noise), and the one kept has
    # the lowest final validation loss of the sweep.
    earlier = json.loads((tmp_path / "eval.json").read_text())
    again = held_out.evaluate_suite(
        specs, {"learned": (lopt, theta)}, steps=20, seeds=2, val_points=4,
        long_steps={regression.name: 40}, reuse=earlier, tune_learned=True,
    )  # fmt: skip
    assert again["reused"] == 4
    for name, rec in again["tasks"].items():
        tuned, plain = rec["optimizers"]["learned (tuned)"], rec["optimizers"]["learned"]
        assert len(tuned["sweep"]) == len(held_out.LEARNED_SCALE_GRID)
        assert tuned["sweep"]["1"] == plain["final_val_loss"]["mean"]
        before = results["tasks"][name]["optimizers"]["learned"]["final_val_loss"]["mean"]
        assert plain["final_val_loss"]["mean"] == pytest.approx(before, rel=1e-4)
        assert tuned["final_val_loss"]["mean"] == pytest.approx(min(tuned["sweep"].values()))
        assert tuned["step_scale"] in held_out.LEARNED_SCALE_GRID
        assert "speedup_over_adam" in tuned
    assert " x" in held_out.table(again) and "learned (tuned) speedup" in held_out.table(again)
    for name, rec in again["tasks"].items():
        assert rec["optimizers"]["adam"] == earlier["tasks"][name]["optimizers"]["adam"]
        assert rec["optimizers"]["learned"]["speedup_over_adam"] == pytest.approx(
            earlier["tasks"][name]["optimizers"]["learned"]["speedup_over_adam"]
        )
    changed = held_out.evaluate_suite(
        {regression.name: regression}, {"learned": (lopt, theta)}, steps=20, seeds=2,
        val_points=4, long_steps={regression.name: 30}, reuse=earlier,
    )  # fmt: skip
    assert changed["reused"] == 0
    # 30 steps are 4 validation blocks of 7 and 2 more: all 30 run, the last measured.
    rec = changed["tasks"][regression.name]["optimizers"]["adam"]
    assert rec["val_steps"] == [7, 14, 21, 28, 30] and rec["curve_steps"][-1] == 30
    assert held_out.reusable_baseline(earlier, regression.name, ls, "adam", 3, 4) is None


def test_export_of_a_chosen_or_the_best_kept_checkpoint(full_run, tmp_path):
    """``--step N`` exports the kept checkpoint of outer step N; ``--step best`` the
    kept one with the lowest fixed-seed evaluation in metrics.jsonl; a step not kept
    is one clear line naming the kept ones."""
    run = tmp_path / "run"
    shutil.copytree(full_run.run_dir, run)  # checkpoints at 3 and 6, evaluations at 0 and 6
    _, theta3, card3 = learned_opt.load(export_run(run, tmp_path / "at3", step=3))
    _, theta6, card6 = learned_opt.load(export_run(run, tmp_path / "at6", step="best"))
    assert card3["outer_steps"] == 3 and card6["outer_steps"] == 6
    assert card3["eval_at_export"]["step"] == 0  # the last evaluation at or before it
    assert not jax.tree.all(jax.tree.map(np.array_equal, theta3, theta6))
    for a, b in zip(jax.tree.leaves(theta6), jax.tree.leaves(full_run.theta)):
        np.testing.assert_array_equal(a, b)
    # An evaluation at step 3 lower than step 6's makes 3 the best.
    final = [r for r in read_metrics(run) if "eval_loss" in r][-1]
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({**final, "step": 3, "eval_loss": final["eval_loss"] - 0.1}) + "\n")
    _, best, card = learned_opt.load(export_run(run, tmp_path / "best", step="best"))
    assert card["outer_steps"] == 3
    assert jax.tree.all(jax.tree.map(np.array_equal, best, theta3))
    proc = _lopt("export", "--run", str(run), "--out", str(tmp_path / "x"), "--step", "4")
    assert proc.returncode == 2 and "no checkpoint of outer step 4; kept: 3, 6" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "x").exists()
    proc = _lopt("export", "--run", str(run), "--out", str(tmp_path / "x"), "--step", "last")
    assert proc.returncode == 2 and "'best'" in proc.stderr


def test_cli_export_and_eval(full_run, tmp_path):
    proc = _lopt("export", "--run", str(full_run.run_dir), "--out", str(tmp_path / "opt"))
    assert proc.returncode == 0, proc.stderr
    proc = _lopt(
        "eval",
        "--optimizer",
        f"pes={tmp_path / 'opt'}",
        "--optimizer",
        "default_mlp",
        "--tasks",
        "tiny",
        "--steps",
        "20",
        "--seeds",
        "2",
        "--out",
        str(tmp_path / "ev"),
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ev" / "eval.json").exists() and (tmp_path / "ev" / "summary.png").exists()
    header = (
        "| task | steps | pes | default_mlp | adam | sgdm | pes speedup | default_mlp speedup |"
    )
    assert header in proc.stdout
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["optimizers"] == {
        "pes": str(tmp_path / "opt"),
        "default_mlp": "default_mlp",
    }
    proc = _lopt("eval", "--optimizer", "default_mlp", "--tasks", "tiny", "--steps", "20",
                 "--seeds", "2", "--baselines", str(tmp_path / "ev" / "eval.json"),
                 "--out", str(tmp_path / "ev2"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert f"reused 2 of 2 tuned baseline runs from {tmp_path / 'ev' / 'eval.json'}" in proc.stdout
    proc = _lopt("eval", "--optimizer", str(tmp_path / "nothing"))
    assert proc.returncode == 2 and "no such artifact" in proc.stderr
    assert "shipped: default_mlp" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_speedup_on_constructed_curves():
    """Adam's validation curve 1/step at steps 100..1000: an optimizer ending at 0.004
    after 1000 steps is matched by Adam at step 300 (speedup 0.3); one ending at
    0.0005 is never matched (censored: more than 1.0); a non-finite point never
    counts as reached; equality counts."""
    from meta_train.evaluation.held_out import Speedup, speedup

    steps = list(range(100, 1001, 100))
    curve = [1.0 / s for s in steps]
    assert speedup(steps, curve, 1 / 300, 1000) == Speedup(0.3, False)
    assert speedup(steps, curve, 0.0005, 1000) == Speedup(1.0, True)
    assert speedup(steps, curve, 0.0005, 500) == Speedup(2.0, True)  # Adam ran 1000 steps
    assert speedup(steps, [None, *curve[1:]], 1.0, 1000) == Speedup(0.2, False)
    assert speedup(steps, curve, 0.01, 1000) == Speedup(0.1, False)


def test_divergence_on_constructed_curves():
    """Seeds whose loss goes non-finite, or rises above twice its start (averaged
    over a hundredth of the run, or at a validation point), diverged; noise on a
    falling curve does not."""
    from meta_train.evaluation.held_out import diverged_seeds

    rng = np.random.default_rng(0)
    train = 2.0 * np.exp(-np.arange(1000) / 300) + 0.3 * rng.random((5, 1000))
    val = np.full((5, 10), 0.8)
    train[0, 10] = 4.0 * train[0, 0]  # one noisy step: a hundredth's mean stays low
    assert diverged_seeds(train, val) == 0
    train[1, 500] = np.nan
    train[2, 900:] = 10.0  # explodes at the end
    val[3, -1] = 5.0  # the validation loss explodes (overfitting far past the start)
    val[4, 2] = np.inf
    assert diverged_seeds(train, val) == 4
    assert diverged_seeds(train[:1], val[:1]) == 0


def test_eval_tells_a_horizon_aware_rule_the_run_length():
    """lopt eval runs a horizon-aware rule with num_steps = the evaluation's steps:
    a learned schedule that stops the rule after half the run freezes the
    validation loss from there on, at any run length."""
    from learned_opt import NormMLPLOpt
    from learned_opt.norm_mlp_lopt import RUN_FRACTION_KNOTS

    lopt = NormMLPLOpt(hidden_sizes=(4,), horizon_aware=True, adam_1d=False, step_mult=0.01)
    theta = dict(lopt.init_meta(jax.random.PRNGKey(0)))
    (module,) = [m for m in theta if "w_schedule" in theta[m]]
    stop = [0.0 if k <= 0.5 else -80.0 for k in RUN_FRACTION_KNOTS]
    theta[module] = {**theta[module], "w_schedule": jnp.asarray(stop)}
    task = HELD_OUT_SUITES["tiny"][0].build()
    thetas = jax.tree.map(lambda x: x[None], theta)
    for steps in (40, 100):
        out, _, val_steps = held_out.run_optimizer(task, lopt, thetas, 1, steps, 10)
        val = np.asarray(out["val_loss"][0, 0])
        late = val[val_steps >= 0.7 * steps]
        early = val[val_steps <= 0.5 * steps]
        np.testing.assert_allclose(late, late[0], rtol=1e-6)
        assert np.all(np.abs(np.diff(early)) > 1e-6), early


def test_merging_evaluations_of_different_optimizers():
    """Two evaluations of one suite, each with its own learned optimizer and the
    same tuned baselines, merge into one with both; differing baselines, steps or
    a name in both are refused."""

    def part(name, loss, adam_sweep=None):
        adam = {"final_val_loss": {"mean": 0.5}, "sweep": adam_sweep or {"0.001": 0.5}}
        rec = {"spec": {"kind": "X"}, "steps": 10, "optimizers": {name: {"v": loss}, "adam": adam}}
        return {"steps": 10, "seeds": 2, "suite": "s", "tasks": {"t": rec}, "reused": 1,
                "optimizers": {name: f"runs/{name}"}}  # fmt: skip

    merged = held_out.merge([part("a", 1.0), part("b", 2.0)])
    assert list(merged["tasks"]["t"]["optimizers"]) == ["a", "b", "adam"]
    assert merged["optimizers"] == {"a": "runs/a", "b": "runs/b"} and merged["reused"] == 2
    with pytest.raises(ValueError, match="two optimizers named 'a'"):
        held_out.merge([part("a", 1.0), part("a", 2.0)])
    with pytest.raises(ValueError, match="tuned adam runs differ"):
        held_out.merge([part("a", 1.0), part("b", 2.0, {"0.001": 0.6})])
    other = part("b", 2.0)
    other["steps"] = 20
    with pytest.raises(ValueError, match="differ in steps"):
        held_out.merge([part("a", 1.0), other])
