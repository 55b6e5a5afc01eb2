"""Every bad input is one line: a table of mistakes a user makes, across the CLI and
the Python API.

CLI cases: each must exit with status 2, print exactly one line on stderr (no
``Traceback``), within 10 s, and leave every existing file byte-identical (an
existing run included). They run in one real process (``_drive``), each case
calling ``meta_train.cli.main`` with its own argv and its stderr file
descriptor captured, so a case also fails on noise printed by C++ libraries.

API cases: each must raise one of the errors the CLI reports in one line
(``commands.USER_ERRORS``) or the documented ``ValueError``/``TypeError`` of a
library call, with a one-line message naming what is wrong.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from conftest import ROOT

# (id, argv, a part of the message). Placeholders: {tmp} a directory of prepared
# bad files, {run} a finished run, {artifact} an exported optimizer.
CLI_CASES = [
    ("unknown key", ["meta-train", "--set", "bogus=1"], "unknown config key 'bogus'"),
    ("misspelt key", ["meta-train", "--set", "estimator.num_particle=4"],
     "unknown config key 'estimator.num_particle'"),
    ("not an integer", ["meta-train", "--set", "train.steps=abc"],
     "train.steps: expected an integer"),
    ("negative steps", ["meta-train", "--set", "train.steps=-5"],
     "train.steps must be at least 1, got -5"),
    ("zero steps", ["meta-train", "--set", "train.steps=0"], "train.steps must be at least 1"),
    ("zero eval seeds", ["meta-train", "--set", "train.eval_seeds=0"],
     "train.eval_seeds must be at least 1"),
    ("zero checkpoint interval", ["meta-train", "--set", "train.checkpoint_every=0"],
     "train.checkpoint_every must be at least 1"),
    ("zero log interval", ["meta-train", "--set", "train.log_every=0"],
     "train.log_every must be at least 1"),
    ("negative learning rate", ["meta-train", "--set", "train.learning_rate=-1"],
     "train.learning_rate"),
    ("no optimizer layers", ["meta-train", "--set", "lopt.hidden_sizes=[]"],
     "lopt.hidden_sizes"),
    ("zero sigma", ["meta-train", "--set", "estimator.sigma=0"], "estimator.sigma must be > 0"),
    ("zero particles", ["meta-train", "--set", "estimator.num_particles=0"],
     "estimator.num_particles"),
    ("zero truncation", ["meta-train", "--set", "estimator.trunc_len=0"],
     "estimator.trunc_len"),
    ("zero checkpoints kept", ["meta-train", "--set", "train.max_to_keep=0"],
     "train.max_to_keep"),
    ("particle chunk of half a pair", ["meta-train", "--set", "estimator.particle_chunk=3"],
     "particle_chunk"),
    ("unknown estimator", ["meta-train", "--set", "estimator.kind=sgd"],
     "estimator.kind: unknown 'sgd'"),
    ("unknown task kind", ["meta-train", "--set", "task.kind=pendulum"],
     "task.kind: unknown 'pendulum'"),
    ("unknown environment", ["meta-train", "--config", "control", "--set", "task.env=Hopper-v4"],
     "task.env: unknown environment 'Hopper-v4'; continuous-control environments: Pendulum-v1"),
    ("environment for an image task", ["meta-train", "--set", "task.env=Reacher-misc"],
     'task.env is only for task.kind = "control"'),
    ("unknown dataset", ["meta-train", "--set", "task.dataset=imagenet"],
     "unknown dataset 'imagenet'"),
    ("reversed width range",
     ["meta-train", "--config", "family", "--set", "family.width_range=[64, 16]"],
     "width_range must be [min, max]"),
    ("buckets not dividing particles",
     ["meta-train", "--config", "family", "--set", "family.num_buckets=3"],
     "must be a multiple of family.num_buckets (3)"),
    ("python task without entry", ["meta-train", "--set", "task.kind=python"],
     'task.kind = "python" needs task.entry'),
    ("python entry: no module",
     ["meta-train", "--set", "task.kind=python", "--set", "task.entry=no_such_module:task"],
     "no_such_module"),
    ("python entry: no function",
     ["meta-train", "--set", "task.kind=python",
      "--set", f"task.entry={ROOT}/examples/least_squares.py:no_such_function"],
     "no_such_function"),
    ("--set without =", ["meta-train", "--set", "nonsense"], "--set expects key=value"),
    ("unknown config name", ["meta-train", "--config", "no_such_config"], "no_such_config"),
    ("config is a directory", ["meta-train", "--config", "{tmp}/cfgdir"], "is a directory"),
    ("config is binary", ["meta-train", "--config", "{tmp}/binary.toml"], "not a text file"),
    ("config TOML syntax", ["meta-train", "--config", "{tmp}/syntax.toml"], "syntax.toml"),
    ("config unknown section", ["meta-train", "--config", "{tmp}/section.toml"], "bogus"),
    ("config bad value", ["meta-train", "--config", "{tmp}/value.toml"],
     "train.steps must be at least 1"),
    ("--out below a file", ["meta-train", "--out", "{tmp}/plain/run"], "{tmp}/plain"),
    ("--out holds a run", ["meta-train", "--out", "{run}"], "already holds a run"),
    ("--out holds run files", ["meta-train", "--out", "{tmp}/logonly"], "already holds a run"),
    ("resume with --config", ["meta-train", "--resume", "--out", "{run}", "--config", "family"],
     "drop --config family"),
    ("resume changing the task", ["meta-train", "--resume", "--out", "{run}",
                                  "--set", "task.horizon=80"], "task.horizon"),
    ("resume of a binary config.toml", ["meta-train", "--resume", "--out", "{tmp}/binrun"],
     "not a text file"),
    ("resume of no run", ["meta-train", "--resume", "--out", "{tmp}/missing"], "{tmp}/missing"),
    ("zero CPU devices", ["meta-train", "--cpu-devices", "0"], "--cpu-devices"),
    ("CPU devices not a count", ["meta-train", "--cpu-devices", "many"], "--cpu-devices"),
    ("negative profile", ["meta-train", "--profile", "-1"], "--profile"),
    ("export of no run", ["export", "--run", "{tmp}/missing", "--out", "{tmp}/x"],
     "{tmp}/missing"),
    ("export of a directory without a run", ["export", "--run", "{tmp}/cfgdir", "--out",
                                             "{tmp}/x"], "no config.toml"),
    ("export over a file", ["export", "--run", "{run}", "--out", "{tmp}/plain"], "{tmp}/plain"),
    ("export below a file", ["export", "--run", "{run}", "--out", "{tmp}/plain/opt"],
     "{tmp}/plain"),
    ("eval of no optimizer", ["eval", "--optimizer", "{tmp}/missing"], "{tmp}/missing"),
    ("eval of a damaged optimizer", ["eval", "--optimizer", "{tmp}/damaged_opt"], "damaged"),
    ("eval of two optimizers of one name",
     ["eval", "--optimizer", "{artifact}", "--optimizer", "{tmp}/x/artifact"],
     "two optimizers named 'artifact'"),
    ("eval of an optimizer named like a baseline", ["eval", "--optimizer", "adam={artifact}"],
     "two optimizers named 'adam'"),
    ("eval of an unknown suite", ["eval", "--optimizer", "{artifact}", "--tasks", "nope"],
     "nope"),
    ("eval with zero steps", ["eval", "--optimizer", "{artifact}", "--steps", "0"], "--steps"),
    ("eval with steps not a number", ["eval", "--optimizer", "{artifact}", "--steps", "ten"],
     "--steps"),
    ("eval with baselines from a binary file",
     ["eval", "--optimizer", "{artifact}", "--baselines", "{tmp}/binary.toml"],
     "--baselines {tmp}/binary.toml: not an eval.json"),
    ("eval with baselines from a missing file",
     ["eval", "--optimizer", "{artifact}", "--baselines", "{tmp}/missing/eval.json"],
     "{tmp}/missing/eval.json"),
    ("eval with zero seeds", ["eval", "--optimizer", "{artifact}", "--seeds", "0"], "--seeds"),
    ("report of no run", ["report", "{tmp}/missing"], "{tmp}/missing"),
    ("report of an empty directory", ["report", "{tmp}/cfgdir"], "{tmp}/cfgdir"),
    ("unknown figure", ["figures", "--experiments", "nope", "--out", "{tmp}/figs"], "nope"),
    ("prepare an unknown dataset", ["prepare", "imagenet"], "imagenet"),
    ("unknown command", ["train"], "invalid choice"),
]  # fmt: skip


def _drive(cases: list[tuple[str, list[str]]]) -> dict:
    """Run each case's argv through ``main`` in this process, with file descriptor 2
    captured per case: ``{id: {"rc", "stderr", "seconds"}}`` (rc "uncaught" when
    an exception escaped ``main``)."""
    import tempfile
    import time
    import traceback

    from meta_train.cli import main

    results = {}
    for case_id, argv in cases:
        with tempfile.TemporaryFile("w+") as err:
            sys.stderr.flush()
            saved = os.dup(2)
            os.dup2(err.fileno(), 2)
            t0 = time.monotonic()
            try:
                rc: int | str | None = main(argv)
            except SystemExit as e:  # argparse's usage errors
                rc = e.code
            except BaseException:  # noqa: BLE001 - what the user would see as a traceback
                rc = "uncaught"
                sys.stderr.write(traceback.format_exc())
            seconds = time.monotonic() - t0
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            err.seek(0)
            results[case_id] = {"rc": rc, "stderr": err.read(), "seconds": seconds}
    return results


def _snapshot(*roots: pathlib.Path) -> dict:
    """Every file's bytes and every directory (None) under ``roots``."""
    return {p: p.read_bytes() if p.is_file() else None for r in roots for p in r.rglob("*")}


def make_bad_files(tmp: pathlib.Path) -> None:
    """The files ``{tmp}`` names in the table (``scripts/bad_input_table.py`` too)."""
    import learned_opt
    from learned_opt import MLPLOpt

    (tmp / "plain").write_text("x")
    (tmp / "cfgdir").mkdir()
    (tmp / "binary.toml").write_bytes(b"\xff\xfe\x00binary")
    (tmp / "syntax.toml").write_text("[train\nsteps = 3\n")
    (tmp / "section.toml").write_text('name = "x"\n[bogus]\nx = 1\n')
    (tmp / "value.toml").write_text("[train]\nsteps = 0\n")
    (tmp / "logonly").mkdir()
    (tmp / "logonly" / "metrics.jsonl").write_text('{"step": 0}\n')
    (tmp / "binrun" / "checkpoints").mkdir(parents=True)
    (tmp / "binrun" / "config.toml").write_bytes(b"\x00\xff binary")
    lopt = MLPLOpt(hidden_sizes=(8,))
    theta = lopt.init_meta(jax.random.PRNGKey(0))
    learned_opt.save(tmp / "artifact", lopt, theta)
    learned_opt.save(tmp / "damaged_opt", lopt, theta)
    for f in (tmp / "damaged_opt").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, full_run):
    tmp = tmp_path_factory.mktemp("bad")
    make_bad_files(tmp)
    return tmp, pathlib.Path(full_run.run_dir)


@pytest.fixture(scope="module")
def cli_results(bad_files):
    tmp, run = bad_files
    fill = {"tmp": str(tmp), "run": str(run), "artifact": str(tmp / "artifact")}
    cases = [(i, [a.format(**fill) for a in argv]) for i, argv, _ in CLI_CASES]
    before = _snapshot(tmp, run)
    script = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); import test_bad_inputs as t; "
        "print(json.dumps(t._drive(json.loads(sys.argv[2]))))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(pathlib.Path(__file__).parent), json.dumps(cases)],
        capture_output=True, text=True, timeout=600, cwd=tmp,
        env={**os.environ, "LOPT_COMPILATION_CACHE": "0"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return results, fill, before == _snapshot(tmp, run)


def test_the_table_is_large():
    assert len(CLI_CASES) + len(API_CASES) >= 40
    assert len({c[0] for c in CLI_CASES}) == len(CLI_CASES)


@pytest.mark.parametrize("case_id,message", [(c[0], c[2]) for c in CLI_CASES])
def test_cli_bad_input_is_one_line_exit_2(case_id, message, cli_results):
    results, fill, unchanged = cli_results
    r = results[case_id]
    lines = r["stderr"].strip().splitlines()
    assert r["rc"] == 2, r["stderr"][-2000:]
    assert len(lines) == 1 and "Traceback" not in r["stderr"], r["stderr"][-2000:]
    assert message.format(**fill) in lines[0]
    assert r["seconds"] < 10
    assert unchanged, "a bad input changed an existing file"


def _load_missing(tmp):
    import learned_opt

    learned_opt.load(tmp / "missing")


def _load_damaged(tmp):
    import learned_opt

    learned_opt.load_optax(tmp / "damaged_opt")


def _load_a_file(tmp):
    import learned_opt

    learned_opt.load_optax(tmp / "plain")


def _save_mismatched(tmp):
    import learned_opt
    from learned_opt import MLPLOpt

    theta = MLPLOpt(hidden_sizes=(8,)).init_meta(jax.random.PRNGKey(0))
    learned_opt.save(tmp / "new_opt", MLPLOpt(hidden_sizes=(4,)), theta)


def _optax_none_params(tmp):
    import learned_opt

    learned_opt.load_optax(tmp / "artifact").init(None)


def _optax_wrong_gradient(tmp):
    import learned_opt

    opt = learned_opt.load_optax(tmp / "artifact")
    params = {"w": jnp.zeros((3, 4)), "b": jnp.zeros((4,))}
    state = opt.init(params)
    opt.update({"w": jnp.zeros((4, 3)), "b": jnp.zeros((4,))}, state, params)


def _optax_update_none(tmp):
    import learned_opt

    opt = learned_opt.load_optax(tmp / "artifact")
    params = {"w": jnp.zeros((3, 4))}
    opt.update(params, opt.init(params), None)


def _optax_missing_leaf(tmp):
    import learned_opt

    opt = learned_opt.load_optax(tmp / "artifact")
    params = {"w": jnp.zeros((3, 4)), "b": jnp.zeros((4,))}
    opt.update({"w": jnp.zeros((3, 4))}, opt.init(params), params)


def _config_bad_value(tmp):
    from meta_train import config as config_lib

    config_lib.load(ROOT / "configs" / "default.toml", ["train.steps=0"])


def _config_missing(tmp):
    from meta_train import config as config_lib

    config_lib.load(tmp / "missing.toml")


def _train_into_a_run(tmp):
    from meta_train.config import TrainConfig
    from meta_train.estimators import PES
    from meta_train.systems.toy import LinearQuadratic
    from meta_train.training.loop import train

    system = LinearQuadratic.create(jax.random.PRNGKey(0), dtype=jnp.float32)
    train(PES(system, num_particles=2, trunc_len=5), tmp / "logonly",
          TrainConfig(steps=1), progress=False, log=lambda _: None)  # fmt: skip


def _entry_no_module(tmp):
    from tasks.entry import load_entry

    load_entry("no_such_module:task")


def _family_reversed(tmp):
    from tasks.family import ImageMLPFamily

    ImageMLPFamily(width_range=(64, 16))


def _restore_nothing(tmp):
    from meta_train.training.checkpoint import Checkpointer

    Checkpointer(tmp / "empty_checkpoints").restore({"x": jnp.zeros(2)})


def _unknown_dataset(tmp):
    from tasks.datasets import load_dataset

    load_dataset("imagenet")


# (id, call, the error's type name, a part of its message)
API_CASES = [
    ("load: no artifact", _load_missing, "OptimizerFileError", "no such optimizer artifact"),
    ("load_optax: damaged", _load_damaged, "OptimizerFileError", "damaged"),
    ("load_optax: a file", _load_a_file, "OptimizerFileError", "no such optimizer artifact"),
    ("save: theta of another architecture", _save_mismatched, "ValueError",
     "does not match MLPLOpt's architecture"),
    ("optax init: None params", _optax_none_params, "TypeError", "params pytree"),
    ("optax update: None params", _optax_update_none, "ValueError", "needs params"),
    ("optax update: missing leaf", _optax_missing_leaf, "ValueError", "['b']"),
    ("optax update: wrong gradient shape", _optax_wrong_gradient, "ValueError", "['w']"),
    ("config: bad value", _config_bad_value, "ConfigError", "train.steps must be at least 1"),
    ("config: no file", _config_missing, "ConfigError", "missing.toml"),
    ("train: into a run", _train_into_a_run, "RunExistsError", "already holds a run"),
    ("entry: no module", _entry_no_module, "EntryError", "no_such_module"),
    ("family: reversed widths", _family_reversed, "FamilyError", "width_range"),
    ("restore: no checkpoint", _restore_nothing, "CheckpointError", "no checkpoint found"),
    ("dataset: unknown", _unknown_dataset, "DatasetError", "imagenet"),
]  # fmt: skip


@pytest.mark.parametrize("case_id,call,error,message", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input_is_one_clear_error(case_id, call, error, message, bad_files):
    tmp, run = bad_files
    before = _snapshot(tmp, run)
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the type is checked by name
        call(tmp)
    assert type(caught.value).__name__ == error, repr(caught.value)
    text = str(caught.value)
    assert len(text.strip().splitlines()) == 1 and message in text, text
    shutil.rmtree(tmp / "empty_checkpoints", ignore_errors=True)  # what Orbax creates
    assert _snapshot(tmp, run) == before
