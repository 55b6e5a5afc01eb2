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
from test_cli import _event_scalars, _lopt

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


# Kills at exact moments: the process kills itself from inside. Checkpoints 3 (and
# 6 for a kill at the evaluation) are waited for, so they are on disk; then it dies
# after logging step 5 (steps 4-5 are logged, then lost), right after Orbax starts
# writing checkpoint 6 (its writer thread is mid-write), or inside the final
# evaluation (computed, its line not yet written).
_KILL_FROM_INSIDE = """
import os, signal, sys
from meta_train.training import checkpoint, loop, run_log
when = sys.argv[1]
def die():
    os.kill(os.getpid(), signal.SIGKILL)
save = checkpoint.Checkpointer.save
def save_and_wait(self, step, state, config):
    save(self, step, state, config)
    if when == "during_checkpoint_write" and step == 6:
        die()
    self.wait()
checkpoint.Checkpointer.save = save_and_wait
write = run_log.MetricsLog.write
def write_and_die(self, record):
    write(self, record)
    if when == "mid_run" and record["step"] == 5:
        die()
run_log.MetricsLog.write = write_and_die
make = loop._evaluator
def evaluator(system, seeds):
    evaluate, calls = make(system, seeds), []
    def evaluate_and_die(theta):
        out = evaluate(theta)
        calls.append(out)
        if when == "during_final_evaluation" and len(calls) == 2:
            die()
        return out
    return evaluate_and_die
loop._evaluator = evaluator
from meta_train.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize(
    "when",
    ["before_first_checkpoint", "mid_run", "during_checkpoint_write", "during_final_evaluation"],
)
def test_kill_and_resume_is_bit_exact_with_one_line_per_step(when, reference, tmp_path):
    out = tmp_path / "run"
    if when == "before_first_checkpoint":
        _kill_when(_start(out), lambda: (out / "config.toml").exists())
    else:
        args = ["meta-train", *SETS, "--out", str(out), "--no-progress"]
        killed = subprocess.run([sys.executable, "-c", _KILL_FROM_INSIDE, when, *args],
                                capture_output=True, text=True, timeout=300)  # fmt: skip
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        assert (out / "checkpoints" / "3" / "commit_success.txt").exists()
        if when == "mid_run":
            assert _steps(out) == [1, 2, 3, 4, 5]
        if when == "during_checkpoint_write":
            assert not (out / "checkpoints" / "6" / "commit_success.txt").exists()
        if when == "during_final_evaluation":
            assert not [r for r in _records(out) if r["step"] == 9 and "eval_loss" in r]
    resumed = _lopt("meta-train", "--resume", "--out", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert _steps(out) == list(range(1, 10))  # every step once, in order
    assert [r["step"] for r in _records(out) if "eval_loss" in r] == [0, 9]
    assert [step for step, _ in _event_scalars(out / "tb")["meta_loss"]] == list(range(1, 10))
    _assert_same(_theta(out), _theta(reference))


def _records(run: pathlib.Path) -> list[dict]:
    from meta_train.evaluation.report import read_metrics

    return read_metrics(run) if (run / "metrics.jsonl").exists() else []


def _data_files(directory: pathlib.Path) -> list[pathlib.Path]:
    return [f for f in directory.rglob("*") if f.is_file() and f.parent.name == "d"]


def _flip_bytes(directory: pathlib.Path, every: int = 97) -> None:
    for f in _data_files(directory):
        b = bytearray(f.read_bytes())
        for i in range(64, len(b), every):
            b[i] ^= 0x5A
        f.write_bytes(bytes(b))


def _wrong_checksum(directory: pathlib.Path) -> None:
    """The arrays changed after their checksum was taken (bytes flipped where a
    reader cannot see it, or a checksum from another state)."""
    import re

    for f in [directory / "integrity" / "metadata", directory / "meta" / "metadata"]:
        if f.exists():
            f.write_text(re.sub(r'sha256": "[0-9a-f]{64}"', 'sha256": "' + "0" * 64 + '"',
                                f.read_text()))  # fmt: skip


def _truncate(directory: pathlib.Path) -> None:
    for f in _data_files(directory):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _delete_data(directory: pathlib.Path) -> None:
    for f in _data_files(directory):
        f.unlink()


def _empty_manifests(directory: pathlib.Path) -> None:
    for f in directory.rglob("manifest.ocdbt"):
        f.write_bytes(b"")


def _delete(*names: str):
    def damage(directory: pathlib.Path) -> None:
        import shutil

        for name in names:
            target = directory / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()

    return damage


# What each damage is reported as, in the one warning line ("" where Orbax's reader
# finds it and says so in its own words).
CHECKPOINT_DAMAGE = {
    "flipped_bytes": (_flip_bytes, ""),
    "wrong_checksum": (_wrong_checksum, "do not match their checksum"),
    "truncated_data": (_truncate, ""),
    "deleted_data_files": (_delete_data, ""),
    "emptied_manifest": (_empty_manifests, ""),
    "deleted_checkpoint_metadata": (_delete("_CHECKPOINT_METADATA"), "metadata file is missing"),
    "deleted_tree_metadata": (_delete("state/_METADATA"), ""),
    "deleted_checksum": (_delete("integrity"), "checksum file is missing"),
}


@pytest.mark.parametrize(
    "newest,older",
    [("flipped_bytes", "wrong_checksum"), ("truncated_data", "deleted_data_files"),
     ("emptied_manifest", "deleted_checkpoint_metadata"),
     ("deleted_tree_metadata", "deleted_checksum")],
)  # fmt: skip
def test_damaged_checkpoints_are_caught_replaced_and_saved(newest, older, reference, tmp_path):
    """Checkpoints 9 and 6 damaged in two ways: both are reported in one line each
    and removed, the run resumes from 3, and 6 and 9 are saved again, identical."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    for step, kind in ((9, newest), (6, older)):
        CHECKPOINT_DAMAGE[kind][0](out / "checkpoints" / str(step))
    proc = _lopt("meta-train", "--resume", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    warnings = proc.stderr.strip().splitlines()
    assert len(warnings) == 4, proc.stderr  # two damaged, two removed: no Orbax noise
    for line, (step, kind) in zip(warnings, ((9, newest), (6, older))):
        assert f"checkpoint step {step} " in line and "is damaged" in line
        assert CHECKPOINT_DAMAGE[kind][1] in line and len(line) < 400
    assert "removed damaged checkpoint step 9" in warnings[2]
    assert _steps(out) == list(range(1, 10))
    _assert_same(_theta(out), _theta(reference))  # restored from step 3, saved again
    again = _lopt("export", "--run", str(out), "--out", str(tmp_path / "opt"))
    assert again.returncode == 0 and "damaged" not in again.stderr


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    import learned_opt
    from learned_opt import MLPLOpt

    path = tmp_path_factory.mktemp("artifact") / "opt"
    lopt = MLPLOpt(hidden_sizes=(8,))
    learned_opt.save(path, lopt, lopt.init_meta(jax.random.PRNGKey(0)))
    return path


@pytest.mark.parametrize(
    "damage,message",
    [(_flip_bytes, "theta is damaged"), (_wrong_checksum, "checksum does not match"),
     (_truncate, "theta is damaged"),
     (_delete_data, "theta is damaged"), (_empty_manifests, "theta is damaged"),
     (_delete("theta/_METADATA"), "theta is damaged"), (_delete("meta"), "metadata"),
     (lambda d: (d / "meta" / "metadata").write_text(""), "metadata")],
)  # fmt: skip
def test_damaged_artifacts_are_caught_in_one_line(damage, message, artifact, tmp_path, capfd):
    import shutil

    import learned_opt

    path = tmp_path / "opt"
    shutil.copytree(artifact, path)
    damage(path)
    with pytest.raises(learned_opt.OptimizerFileError, match=message) as caught:
        learned_opt.load(path)
    assert len(str(caught.value).splitlines()) == 1 and len(str(caught.value)) < 400
    assert "Traceback" not in capfd.readouterr().err


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


def _lopt_with(setup: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    """``lopt *args`` in a fresh process that first runs ``setup`` (Python), then execs
    the CLI: limits set without forking this multithreaded (JAX) test process."""
    launch = f"import os, sys; {setup}; os.execv(sys.executable, [sys.executable, '-m', " \
        "'meta_train.cli', *sys.argv[1:]])"  # fmt: skip
    return subprocess.run([sys.executable, "-c", launch, *args], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip


# Root ignores file modes: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH (1, 2) from
# the capability bounding set (prctl PR_CAPBSET_DROP = 24) before exec, so the CLI
# obeys them. A non-root user already does.
_OBEY_FILE_MODES = (
    "import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
    "os.geteuid() == 0 and [libc.prctl(24, c, 0, 0, 0) and sys.exit(99) for c in (1, 2)]"
)


def test_a_full_disk_stops_the_run_in_one_line_and_a_resume_recovers(reference, tmp_path):
    """Files are capped below a checkpoint's size (RLIMIT_FSIZE: a write past it fails
    with EFBIG, as a full disk fails with ENOSPC): the first save fails, the run
    stops at once with one line and exit 2; resumed with room, it is bit-exact."""
    out = tmp_path / "run"
    env = {**os.environ, "LOPT_COMPILATION_CACHE": "0"}  # the cache's files are large too
    # 40 KiB: the config, the log and the event file fit; checkpoint arrays do not
    full = _lopt_with("import resource; resource.setrlimit(resource.RLIMIT_FSIZE, (40960,) * 2)",
                      "meta-train", *SETS, "--out", str(out), "--no-progress", env=env)  # fmt: skip
    assert full.returncode == 2, full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1 and "saving checkpoint step 3" in lines[0], full.stderr
    assert "File too large" in lines[0]
    # stopped when the failure is known: the first outer step after the background
    # write failed, at the latest the next save (tiny steps outrun the writer)
    assert max(_steps(out)) <= 6 and not (out / "checkpoints" / "6").exists()
    resumed = _lopt("meta-train", "--resume", "--out", str(out), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert _steps(out) == list(range(1, 10))
    _assert_same(_theta(out), _theta(reference))


def test_permission_errors_are_one_line_exit_2(reference, tmp_path):
    """A read-only parent for a new run, a read-only run to resume, export into a
    read-only directory and an unreadable config: one line naming the path."""
    import shutil
    import stat

    base = tmp_path
    try:
        (base / "ro").mkdir(mode=0o555)
        (base / "ro").chmod(0o555)
        shutil.copytree(reference, base / "run")
        for p in [base / "run", *(base / "run").rglob("*")]:
            p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        (base / "secret.toml").write_text("[train]\nsteps = 3\n")
        (base / "secret.toml").chmod(0)
        env = {**os.environ, "LOPT_COMPILATION_CACHE": "0"}
        if _lopt_with(_OBEY_FILE_MODES, "--version", env=env).returncode == 99:
            pytest.skip("root's file-permission override cannot be dropped here")
        cases = [
            (["meta-train", *SETS, "--out", f"{base}/ro/run"], f"{base}/ro/run"),
            (["meta-train", "--resume", "--out", f"{base}/run"], f"{base}/run"),
            (["export", "--run", f"{base}/run", "--out", f"{base}/ro/opt"], f"{base}/ro"),
            (["meta-train", "--config", f"{base}/secret.toml"], f"{base}/secret.toml"),
        ]
        before = {p: p.read_bytes() for p in (base / "run").rglob("*") if p.is_file()}
        for args, path in cases:
            proc = _lopt_with(_OBEY_FILE_MODES, *args, env=env)
            lines = proc.stderr.strip().splitlines()
            assert proc.returncode == 2, (args, proc.stderr[-2000:])
            assert len(lines) == 1 and path in lines[0] and "ermission" in lines[0], lines
        assert {p: p.read_bytes() for p in (base / "run").rglob("*") if p.is_file()} == before
    finally:
        for p in [base, *base.rglob("*")]:  # so pytest can remove them
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_every_system_caps_its_loss_or_says_why_not():
    """A system without a loss cap would hand an exploding loss to the estimator."""
    from conftest import ROOT

    from meta_train import builders
    from meta_train import config as config_lib
    from meta_train.systems.family import SystemFamily

    extra = {"python": ["task.entry=" + str(ROOT / "examples" / "least_squares.py:make_task")],
             "image_mlp_family": ["family.num_buckets=2", "estimator.num_particles=4"]}  # fmt: skip
    for kind in builders.SYSTEMS:
        if kind in builders.UNCAPPED:
            assert len(builders.UNCAPPED[kind]) > 40  # a reason, not a placeholder
            continue
        config = config_lib.load(ROOT / "configs" / "default.toml",
                                 [f"task.kind={kind}", *extra.get(kind, [])])  # fmt: skip
        system = builders.build_system(config)
        members = system.members if isinstance(system, SystemFamily) else (system,)
        assert all(m.loss_cap > 0 for m in members), kind
    assert set(builders.UNCAPPED) <= set(builders.SYSTEMS)


def test_shipped_optimizers_carry_a_checksum():
    import json

    from meta_train import resources

    for name in resources.optimizer_names():
        meta = json.loads((resources.checkpoints_dir() / name / "meta" / "metadata").read_text())
        assert len(meta["theta_sha256"]) == 64, name


def test_a_checkpoint_of_another_structure_is_kept_not_removed(tmp_path, capfd):
    """The newest checkpoint holds another state structure (written by another
    version of an optimizer's state): the previous one is restored, and the newer
    one, intact, is kept and named, not removed as damaged."""
    from meta_train.training.checkpoint import Checkpointer

    old = {"theta": jnp.arange(3.0), "opt": {"step": jnp.int32(1)}}
    new = {"theta": jnp.arange(3.0), "opt": {"step": jnp.int32(2), "num_steps": jnp.float32(9)}}
    ck = Checkpointer(tmp_path / "checkpoints")
    ck.save(1, old, {})
    ck.save(2, new, {})
    ck.close()
    ck = Checkpointer(tmp_path / "checkpoints")
    step, state, _ = ck.restore(old)
    assert step == 1 and int(state["opt"]["step"]) == 1
    err = capfd.readouterr().err
    assert "holds another state structure" in err and "removed" not in err
    assert ck.steps() == [1, 2]
    ck.close()
