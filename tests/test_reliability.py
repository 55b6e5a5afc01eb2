"""Nothing lost, nothing stuck, nothing silent: real processes, real files.

Kills (``kill -9``) before the first checkpoint and mid-run, each resumed to the
end and compared bit for bit with an uninterrupted run, with one log line per
step; a damaged newest checkpoint detected by its checksum, replaced and saved
again; a second process refused by the run directory's lock and a stale lock
ignored; damaged artifacts; bad paths as one line and exit 2.
"""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import TINY
from test_cli import _lopt

SETS = [
    a
    for s in [*TINY, "train.steps=9", "train.checkpoint_every=3", "train.log_every=1"]
    for a in ("--set", s)
]


def _start(out: pathlib.Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "meta_train.cli", "meta-train", *SETS, *extra, "--out", str(out),
           "--no-progress"]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _steps(run: pathlib.Path) -> list[int]:
    """The outer steps logged in ``run``'s metrics.jsonl (a torn last line skipped)."""
    from meta_train.evaluation.report import read_metrics

    if not (run / "metrics.jsonl").exists():
        return []
    return [r["step"] for r in read_metrics(run) if "meta_loss" in r]


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < end, "the run never reached the point to kill it"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _theta(run: pathlib.Path):
    from meta_train.training.export_run import theta_from_run

    return theta_from_run(run)[1]


def _assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = _start(out)
    assert proc.wait() == 0, proc.stderr.read()
    return out


@pytest.mark.parametrize(
    "when",
    ["before_first_checkpoint", "mid_run"],
)
def test_kill_and_resume_is_bit_exact_with_one_line_per_step(when, reference, tmp_path):
    out = tmp_path / "run"
    proc = _start(out)
    if when == "before_first_checkpoint":
        _kill_when(proc, lambda: (out / "config.toml").exists())
    else:  # between checkpoints 3 and 6: steps 4-5 are logged, then lost
        _kill_when(proc, lambda: max(_steps(out), default=0) >= 5)
    resumed = _lopt("meta-train", "--resume", "--out", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert _steps(out) == list(range(1, 10))  # every step once, in order
    _assert_same(_theta(out), _theta(reference))


def _flip_bytes(directory: pathlib.Path, every: int = 97) -> None:
    for f in directory.rglob("*"):
        if f.is_file() and f.parent.name == "d":  # Orbax's array data files
            b = bytearray(f.read_bytes())
            for i in range(64, len(b), every):
                b[i] ^= 0x5A
            f.write_bytes(bytes(b))


def test_damaged_newest_checkpoint_is_caught_replaced_and_saved(reference, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    _flip_bytes(out / "checkpoints" / "9")
    proc = _lopt("meta-train", "--resume", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "checkpoint step 9" in proc.stderr and "is damaged" in proc.stderr
    assert "removed damaged checkpoint step 9" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3  # no Orbax noise
    assert _steps(out) == list(range(1, 10))
    _assert_same(_theta(out), _theta(reference))  # restored from step 9, saved again
    again = _lopt("export", "--run", str(out), "--out", str(tmp_path / "opt"))
    assert again.returncode == 0 and "damaged" not in again.stderr


def test_a_second_process_is_refused_and_a_stale_lock_does_not_block(tmp_path):
    out = tmp_path / "run"
    first = _start(out, "--set", "train.steps=100000")
    try:
        lock = out / ".lock"
        end = time.monotonic() + 120
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None and time.monotonic() < end
            time.sleep(0.05)
        second = _lopt("meta-train", "--resume", "--out", str(out), "--no-progress")
        assert second.returncode == 2
        assert f"in use by process {first.pid}" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        export = _lopt("export", "--run", str(out), "--out", str(tmp_path / "x"))
        assert export.returncode == 2 and "in use by process" in export.stderr
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    third = _lopt("meta-train", "--resume", "--out", str(out), "--set", "train.steps=3",
                  "--no-progress")  # fmt: skip
    assert third.returncode == 0, third.stderr  # the dead process's lock is gone


@pytest.mark.parametrize(
    "make,args,message",
    [
        (lambda d: (d / "run").mkdir() or (d / "run" / "metrics.jsonl").write_text("{}\n"),
         ["--out", "{d}/run"], "already holds a run"),
        (lambda d: (d / "cfgdir").mkdir(), ["--config", "{d}/cfgdir"], "is a directory"),
        (lambda d: (d / "bin.toml").write_bytes(b"\xff\xfe\x00binary"),
         ["--config", "{d}/bin.toml"], "not a text file"),
        (lambda d: (d / "plain").write_text("x"), ["--out", "{d}/plain/run"], "{d}/plain"),
    ],
)  # fmt: skip
def test_bad_paths_are_one_line_exit_2_and_touch_nothing(make, args, message, tmp_path):
    make(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    proc = _lopt("meta-train", *[a.format(d=tmp_path) for a in args], *SETS[:4], timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert message.format(d=tmp_path) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_damaged_artifact_theta_is_caught(tmp_path):
    import learned_opt
    from learned_opt import MLPLOpt

    lopt = MLPLOpt(hidden_sizes=(8,))
    learned_opt.save(tmp_path / "opt", lopt, lopt.init_meta(jax.random.PRNGKey(0)))
    _flip_bytes(tmp_path / "opt" / "theta")
    with pytest.raises(learned_opt.OptimizerFileError, match="damaged"):
        learned_opt.load(tmp_path / "opt")


def test_an_update_that_overflows_theta_is_not_applied():
    from meta_train.estimators.base import Estimate
    from meta_train.training.outer_step import MetaState, outer_iteration

    class HugeGradient:  # the smallest estimator the outer iteration needs
        def estimate(self, theta, state, key):
            return Estimate(jax.tree.map(lambda t: jnp.full_like(t, 1.0), theta), state, {})

    outer_opt = optax.scale(3e38)  # finite gradient, an update that overflows theta
    theta = {"w": jnp.full((3,), 1e38, jnp.float32)}
    state = MetaState(jnp.int32(0), theta, outer_opt.init(theta), (), jax.random.PRNGKey(0))
    new, metrics = outer_iteration(outer_opt)(HugeGradient(), state)
    assert int(metrics["skipped"]) == 1
    np.testing.assert_array_equal(new.theta["w"], theta["w"])


def test_a_run_whose_gradient_is_zero_stops_with_one_line(tmp_path):
    """Theta that no longer changes the loss (here: a system whose state ignores it)
    gives an exactly zero meta-gradient; after ``health_window`` such steps the run
    stops with RunHealthError, keeping a checkpoint of what was done."""
    import dataclasses
    import functools

    from meta_train.config import TrainConfig
    from meta_train.estimators import PES
    from meta_train.training.checkpoint import Checkpointer
    from meta_train.training.health import RunHealthError
    from meta_train.training.loop import train

    @functools.partial(jax.tree_util.register_dataclass, data_fields=[], meta_fields=["horizon"])
    @dataclasses.dataclass(frozen=True)
    class Blind:  # a loss that theta does not reach
        horizon: int = 8

        def init_theta(self, key):
            return jnp.zeros((2,), jnp.float32)

        def init(self, theta, key):
            return jnp.zeros((), jnp.float32)

        def step(self, theta, state, key):
            return state + 1.0, 0.1 * state

    system = Blind()
    settings = TrainConfig(steps=20, eval_seeds=1, checkpoint_every=100, health_window=3)
    with pytest.raises(RunHealthError, match="exactly zero for outer steps 1-3"):
        train(PES(system, num_particles=2, trunc_len=4), tmp_path / "run", settings,
              progress=False, log=lambda _: None)  # fmt: skip
    assert Checkpointer(tmp_path / "run" / "checkpoints").steps() == [3]


def test_resume_with_another_config_is_refused(reference, tmp_path):
    proc = _lopt("meta-train", "--resume", "--out", str(reference), "--config", "family",
                 timeout=60)  # fmt: skip
    assert proc.returncode == 2 and "drop --config family" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_saving_a_theta_of_another_architecture_is_refused(tmp_path):
    import learned_opt
    from learned_opt import MLPLOpt

    theta = MLPLOpt(hidden_sizes=(8,)).init_meta(jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="does not match MLPLOpt's architecture"):
        learned_opt.save(tmp_path / "opt", MLPLOpt(hidden_sizes=(16,)), theta)
    assert not (tmp_path / "opt").exists()
