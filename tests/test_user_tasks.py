"""Users' own tasks: entry points, their bad forms, the normalized rule's export, and
the Python training entry resuming bit for bit."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_cli import _lopt

import learned_opt
from learned_opt import NormMLPLOpt, as_optax
from meta_train import config as config_lib
from meta_train.estimators import PES
from meta_train.systems.sampled_task import SampledTaskSystem
from meta_train.training.loop import train
from tasks.base import SingleTask, Task
from tasks.entry import EntryError, load_entry

BAD_MODULES = {
    "raises.py": "def make_task():\n    raise RuntimeError('no data here')\n",
    "not_a_task.py": "def make_task():\n    return {'init': 1}\n",
    "vector_loss.py": (
        "import jax, jax.numpy as jnp\n"
        "class T:\n"
        "    name = 'vector'\n"
        "    def init(self, key): return {'w': jnp.zeros((3, 2))}\n"
        "    def loss(self, p, b): return p['w'].sum(0)\n"
        "    def batch(self, key, split): return jnp.zeros((4,))\n"
        "def make_task():\n    return T()\n"
    ),
    "plain_class.py": (  # not a pytree: accepted, held as a constant
        "import jax, jax.numpy as jnp\n"
        "class T:\n"
        "    name = 'plain'\n"
        "    def init(self, key): return {'w': jax.random.normal(key, (3, 2))}\n"
        "    def loss(self, p, b): return jnp.mean((b @ p['w']) ** 2)\n"
        "    def batch(self, key, split): return jax.random.normal(key, (4, 3))\n"
        "def make_task():\n    return T()\n"
    ),
}


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("entries")
    for name, text in BAD_MODULES.items():
        (d / name).write_text(text)
    return d


def test_examples_load_as_tasks():
    for entry in ("examples.least_squares:make_task", "examples.small_convnet:make_task"):
        bucket = load_entry(entry)
        assert isinstance(bucket, SingleTask) and isinstance(bucket.task, Task)


def test_a_plain_class_is_accepted_and_steps(bad_dir):
    bucket = load_entry(f"{bad_dir}/plain_class.py:make_task")
    lopt = NormMLPLOpt(hidden_sizes=(4,))
    system = SampledTaskSystem(bucket, lopt, horizon=5)
    theta = lopt.init_meta(jax.random.PRNGKey(0))
    state = jax.jit(system.init)(theta, jax.random.PRNGKey(1))
    _, loss = jax.jit(system.step)(theta, state, jax.random.PRNGKey(2))
    assert np.isfinite(float(loss))


@pytest.mark.parametrize(
    "entry,message",
    [
        ("examples.least_squares", "must be 'package.module:function'"),
        ("no_such_module_xyz:make_task", "no module named 'no_such_module_xyz'"),
        ("examples.least_squares:make_tusk", "has no function 'make_tusk'"),
        ("{d}/raises.py:make_task", "make_task() raised RuntimeError: no data here"),
        ("{d}/not_a_task.py:make_task", "without the task contract (missing name, init"),
        ("{d}/vector_loss.py:make_task", "must return a float scalar"),
        ("{d}/missing.py:make_task", "no such file"),
    ],
)
def test_bad_entries_fail_with_one_line(entry, message, bad_dir):
    with pytest.raises(EntryError, match=None) as info:
        load_entry(entry.format(d=bad_dir))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_bad_entry_from_the_cli_is_one_line_exit_2(bad_dir, tmp_path):
    for entry, message in (
        ("no_such_module_xyz:make_task", "no module named"),
        (f"{bad_dir}/raises.py:make_task", "raised RuntimeError"),
    ):
        proc = _lopt(
            "meta-train", "--set", "task.kind=python", "--set", f"task.entry={entry}",
            "--out", str(tmp_path / "x"),
        )  # fmt: skip
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "x").exists()


def test_least_squares_meta_trains_from_the_cli_and_exports(tmp_path):
    out = tmp_path / "lsq"
    proc = _lopt(
        "meta-train", "--config", "examples/least_squares.toml",
        "--set", "train.steps=4", "--set", "train.eval_seeds=2", "--set", "task.horizon=20",
        "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["meta_loss"] for r in records if "meta_loss" in r]
    # Normalised by the initial loss (about 30): not flattened into a constant cap.
    assert 0.3 < min(losses) and max(losses) < 1.5 and len(set(losses)) == len(losses)
    proc = _lopt("export", "--run", str(out), "--out", str(tmp_path / "opt"))
    assert proc.returncode == 0, proc.stderr
    _, _, card = learned_opt.load(tmp_path / "opt")
    assert card["meta_trained_on"]["entry"] == "examples.least_squares:make_task"
    assert "image_size" not in card["meta_trained_on"]  # an image task's key, unused here


def test_normalized_rule_export_round_trip_is_bit_equal(tmp_path):
    lopt = NormMLPLOpt(hidden_sizes=(8, 8), momentum_decays=(0.5, 0.9, 0.99))
    theta = jax.tree.map(
        lambda x: x + 0.1 * jax.random.normal(jax.random.PRNGKey(1), x.shape),
        lopt.init_meta(jax.random.PRNGKey(0)),
    )
    learned_opt.save(tmp_path / "norm", lopt, theta, {"note": "test"})
    loaded_lopt, loaded_theta, card = learned_opt.load(tmp_path / "norm")
    assert loaded_lopt == lopt and card["note"] == "test"
    for a, b in zip(jax.tree.leaves(theta), jax.tree.leaves(loaded_theta)):
        np.testing.assert_array_equal(a, b)
    params = {"w": jnp.ones((5, 3)), "b": jnp.zeros((3,)), "k": jnp.ones((2, 2, 1, 3))}
    grads = jax.tree.map(lambda p: jax.random.normal(jax.random.PRNGKey(2), p.shape), params)

    def run(opt):
        update = jax.jit(opt.update)  # one program, not op-by-op dispatch
        state, p = opt.init(params), params
        for _ in range(3):
            updates, state = update(grads, state, p)
            p = optax.apply_updates(p, updates)
        return p

    for a, b in zip(
        jax.tree.leaves(run(as_optax(lopt, theta))),
        jax.tree.leaves(run(learned_opt.load_optax(tmp_path / "norm"))),
    ):
        np.testing.assert_array_equal(a, b)


def test_normalized_rule_update_sizes():
    lopt = NormMLPLOpt(hidden_sizes=(8,), step_mult=2e-3, learning_rate=1e-2)
    theta = lopt.init_meta(jax.random.PRNGKey(0))
    params = {"w": jnp.ones((6, 4)), "b": jnp.zeros((4,))}
    grads = {"w": jnp.arange(24.0).reshape(6, 4) - 12, "b": jnp.array([1.0, -2.0, 0.0, 3.0])}
    updates, state = lopt.update(theta, lopt.init(theta, params), grads, params)
    # Matrices: per-tensor RMS is step_mult (the learned schedule starts at exp(0) = 1).
    np.testing.assert_allclose(jnp.sqrt(jnp.mean(updates["w"] ** 2)), 2e-3, rtol=1e-5)
    # Vectors: Adam's first step, -lr * sign(g) (0 where g is 0).
    np.testing.assert_allclose(updates["b"], -1e-2 * jnp.sign(grads["b"]), atol=1e-7)
    assert int(state.step) == 1


@pytest.fixture(scope="module")
def lsq_estimator():
    from examples.least_squares import make_task

    lopt = NormMLPLOpt(hidden_sizes=(8,))
    system = SampledTaskSystem(SingleTask(make_task()), lopt, horizon=12)
    return PES(system, num_particles=4, trunc_len=4, sigma=0.01)


def test_python_train_entry_resumes_bit_exactly(lsq_estimator, tmp_path):
    settings = config_lib.TrainConfig(steps=6, eval_seeds=1, eval_every=0, checkpoint_every=3)
    # Steps 1-3 at horizon 4, then 12: the cut falls on the curriculum's stage boundary.
    quiet = {"progress": False, "log": lambda _: None, "horizon_curriculum": (4,),
             "curriculum_steps": 3}  # fmt: skip
    whole = train(lsq_estimator, tmp_path / "whole", settings, **quiet)
    first = dataclasses.replace(settings, steps=3)
    train(lsq_estimator, tmp_path / "cut", first, **quiet)
    resumed = train(lsq_estimator, tmp_path / "cut", settings, resume=True, **quiet)
    for a, b in zip(jax.tree.leaves(whole.theta), jax.tree.leaves(resumed.theta)):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "cut" / "report.png").exists()
    records = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "meta_loss" in r] == list(range(1, 7))


def test_horizon_curriculum_stages():
    from meta_train.training.curriculum import horizon_at, with_horizon

    stages = [horizon_at(s, 3, (100, 500), 1000) for s in range(1, 12)]
    assert stages == [100] * 3 + [500] * 3 + [1000] * 5
    assert [horizon_at(s, 5, (), 7) for s in range(1, 6)] == [7] * 5
    est = PES(
        SampledTaskSystem(SingleTask(load_entry("examples.least_squares:make_task").task),
                          NormMLPLOpt(hidden_sizes=(4,)), horizon=50),
        num_particles=2, trunc_len=5,
    )  # fmt: skip
    shorter = with_horizon(est, 10)
    assert shorter.system.horizon == 10 and shorter.trunc_len == 5 and est.system.horizon == 50
