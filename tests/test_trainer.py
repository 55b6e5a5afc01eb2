import json

import jax
import numpy as np
import pytest
from conftest import ROOT, TINY

from meta_train import config as config_lib
from meta_train.training.checkpoint import Checkpointer, CheckpointError
from meta_train.training.loop import meta_train


def _quiet(_msg):
    pass


def test_run_writes_metrics_config_and_checkpoints(full_run, tiny_config):
    run_dir = full_run.run_dir
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "meta_loss" in r]
    assert steps == list(range(1, tiny_config.train.steps + 1))
    assert all(np.isfinite(r["meta_loss"]) for r in records if "meta_loss" in r)
    assert [r for r in records if "meta_loss" in r][-1]["particle_steps_per_s"] > 0
    assert "eval_loss" in records[0] and "eval_loss" in records[-1]
    assert config_lib.load(run_dir / "config.toml") == tiny_config
    assert Checkpointer(run_dir / "checkpoints").steps() == [3, 6]


def test_resume_matches_uninterrupted_run(full_run, tiny_config, tmp_path):
    half = config_lib.load(ROOT / "configs" / "default.toml", TINY + ["train.steps=3"])
    meta_train(half, tmp_path, progress=False, log=_quiet)
    resumed = meta_train(tiny_config, tmp_path, resume=True, progress=False, log=_quiet)
    for a, b in zip(jax.tree.leaves(resumed.theta), jax.tree.leaves(full_run.theta)):
        np.testing.assert_array_equal(a, b)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    full_lines = (full_run.run_dir / "metrics.jsonl").read_text().splitlines()

    def losses(ls):
        return [json.loads(x)["meta_loss"] for x in ls if "meta_loss" in x]

    assert losses(lines) == losses(full_lines)
    # Time counts from step 0 through the resume (test_run_log checks the carry-over).
    for key in ("seconds", "cpu_seconds"):
        spent = [json.loads(x)[key] for x in lines if "meta_loss" in x]
        assert spent == sorted(spent) and spent[0] > 0, key


def test_damaged_latest_checkpoint_falls_back_to_previous(full_run, tmp_path, capsys):
    import shutil

    ckpt_dir = tmp_path / "checkpoints"
    shutil.copytree(full_run.run_dir / "checkpoints", ckpt_dir)
    # Damage every data file of the newest checkpoint.
    for f in (ckpt_dir / "6").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "state" in f.parts:
            f.write_bytes(b"\0garbage")
    from meta_train.builders import build_estimator, build_outer_optimizer, build_system
    from meta_train.training.outer_step import init_meta_state

    cfg = config_lib.load(full_run.run_dir / "config.toml")
    est = build_estimator(cfg, build_system(cfg))
    like = init_meta_state(est, build_outer_optimizer(cfg), cfg.train.seed)
    step, state, config = Checkpointer(ckpt_dir).restore(like)
    assert step == 3 and int(state.step) == 3
    assert config["name"] == cfg.name
    assert "checkpoint step 6" in capsys.readouterr().err


def test_no_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        Checkpointer(tmp_path / "empty").restore({"x": np.zeros(2)})


def test_short_meta_training_lowers_the_eval_loss(tmp_path):
    cfg = config_lib.load(
        ROOT / "configs" / "default.toml",
        TINY
        + [
            "estimator.num_particles=8",
            "train.steps=100",
            "train.learning_rate=0.01",
            "train.checkpoint_every=1000",
            "train.eval_seeds=4",
        ],
    )
    result = meta_train(cfg, tmp_path, progress=False, log=_quiet)
    before, after = result.eval_before["eval_loss"], result.eval_after["eval_loss"]
    assert after < before - 0.2, (before, after)
