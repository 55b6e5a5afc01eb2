"""Optimizers out of runs: theta from a run's checkpoint, as a standalone artifact,
and the one lookup (artifact path, run directory or shipped name) that ``lopt eval`` uses."""

from __future__ import annotations

import contextlib
import math
import pathlib
from typing import Any

import jax

import learned_opt
from learned_opt import shipped
from learned_opt.export import OptimizerFileError, check_new_path
from meta_train import config as config_lib
from meta_train.builders import build_estimator, build_outer_optimizer, build_system
from meta_train.evaluation.report import read_metrics
from meta_train.systems import LearnedOptimizerSystem
from meta_train.systems.family import SystemFamily
from meta_train.systems.sampled_task import SampledTaskSystem
from meta_train.training.checkpoint import Checkpointer, CheckpointError
from meta_train.training.outer_step import fresh_meta_state
from meta_train.training.run_dir import COMMANDS_FILE, RunLock


def theta_from_run(run_dir: str | pathlib.Path, step: int | str | None = None):
    """``(lopt, theta, card)`` from a checkpoint of ``run_dir``: the newest usable
    one, or the kept checkpoint of outer step ``step``, or with ``step="best"`` the
    kept one whose fixed-seed evaluation (``eval_loss`` in ``metrics.jsonl``, lower
    is better) was lowest: long-horizon meta-training can degrade late, and the
    checkpoints it kept (``train.max_to_keep``) are the choice."""
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / "config.toml").exists():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.toml)")
    config = config_lib.load(run_dir / "config.toml")
    if config.task.kind not in OPTIMIZER_KINDS:
        raise config_lib.ConfigError(
            f"{run_dir} meta-trained task.kind = {config.task.kind!r}, whose theta is not an "
            f"optimizer; only {', '.join(OPTIMIZER_KINDS)} runs can be exported"
        )
    system = build_system(config)
    lopt, trained_on = _optimizer_and_tasks(system)
    estimator = build_estimator(config, system)
    # Only the structure is needed as the restore target: no particle is built.
    like = jax.eval_shape(
        lambda: fresh_meta_state(
            estimator, build_outer_optimizer(config), jax.random.PRNGKey(config.train.seed)
        )
    )
    with _reading_lock(run_dir):  # not while a meta-training process writes the run
        checkpointer = Checkpointer(run_dir / "checkpoints")
        chosen = _chosen_step(run_dir, checkpointer.steps(), step)
        step, state, _ = checkpointer.restore(like, chosen)
    settings = config_lib.to_dict(config)
    used = (*_RUN_TASK_KEYS, *_TASK_KEYS[config.task.kind])
    card = {
        "meta_trained_on": {"task": trained_on, **{k: settings["task"][k] for k in used}},
        "estimator": settings["estimator"],
        "outer_training": settings["train"],
        "config_name": config.name,
        "outer_steps": int(step),
        "run_dir": str(run_dir),
    }
    if (run_dir / "metrics.jsonl").exists():
        records = [r for r in read_metrics(run_dir) if r["step"] <= step]
        evals = [r for r in records if "eval_loss" in r]
        if evals:
            card["eval_at_init"] = evals[0]
            card["eval_at_export"] = evals[-1]
        timed = [r for r in records if "seconds" in r]
        if timed:  # what meta-training to this step cost, resumes included
            card["meta_training_time"] = {
                k: timed[-1][k] for k in ("seconds", "cpu_seconds") if k in timed[-1]
            }
    if (run_dir / COMMANDS_FILE).exists():  # how it was made: the start, then each resume
        card["commands"] = (run_dir / COMMANDS_FILE).read_text().splitlines()
    if config.task.kind == "image_mlp_family":
        card["family"] = settings["family"]
    return lopt, state.theta, card


def _chosen_step(run_dir: pathlib.Path, kept: list[int], step: int | str | None) -> int | None:
    """The checkpoint step ``theta_from_run`` restores (None: the newest usable)."""
    if step is None:
        return None
    if step == "best":
        evals = (
            {r["step"]: r["eval_loss"] for r in read_metrics(run_dir) if "eval_loss" in r}
            if (run_dir / "metrics.jsonl").exists()
            else {}
        )
        evaluated = [s for s in kept if s in evals and math.isfinite(evals[s])]
        if not evaluated:
            raise CheckpointError(
                f"{run_dir}: no kept checkpoint ({_listed(kept)}) has a fixed-seed evaluation "
                "(eval_every steps); give --step a number"
            )
        return min(evaluated, key=lambda s: (evals[s], -s))
    if not isinstance(step, int) or step not in kept:
        raise CheckpointError(
            f"{run_dir}: no checkpoint of outer step {step!r}; kept: {_listed(kept)}"
        )
    return step


def _listed(steps: list[int]) -> str:
    return ", ".join(map(str, steps)) or "none"


@contextlib.contextmanager
def _reading_lock(run_dir: pathlib.Path):
    lock = RunLock(run_dir)
    try:
        lock.acquire()
    except PermissionError:  # a read-only run: no process can be writing it through us
        yield
        return
    try:
        yield
    finally:
        lock.release()


# The [task] keys every optimizer-training kind reads, and those each kind (one whose
# theta is a learned optimizer's) reads besides: a card names only these, so a family's
# card does not describe the one default image task it never trained on.
_RUN_TASK_KEYS = (
    "kind", "horizon", "horizon_curriculum", "curriculum_steps", "meta_loss_split", "loss_cap",
)  # fmt: skip
_TASK_KEYS = {
    "image_mlp": (
        "dataset", "image_size", "grayscale", "data_dir", "hidden_sizes", "activation",
        "batch_size",
    ),
    "image_mlp_family": ("data_dir", "meta_loss_norm"),  # the shapes: the card's "family"
    "python": ("entry", "meta_loss_norm"),
}  # fmt: skip
OPTIMIZER_KINDS = tuple(_TASK_KEYS)


def _optimizer_and_tasks(system) -> tuple[Any, str | list[str]]:
    """The learned optimizer a system trains with, and the name(s) of its tasks."""
    if isinstance(system, SystemFamily):
        members: list[Any] = list(system.members)  # SampledTaskSystems
        return members[0].lopt, [m.name for m in members]
    if isinstance(system, SampledTaskSystem):
        return system.lopt, system.name
    assert isinstance(system, LearnedOptimizerSystem)
    return system.lopt, system.task.name


def export_run(
    run_dir: str | pathlib.Path, out: str | pathlib.Path, step: int | str | None = None
) -> pathlib.Path:
    """Write ``run_dir``'s optimizer (at ``step``: see ``theta_from_run``) to ``out``."""
    check_new_path(out)  # before the run is locked or read
    lopt, theta, card = theta_from_run(run_dir, step)
    return learned_opt.save(out, lopt, theta, card)


def resolve_optimizer(name: str) -> tuple[Any, Any]:
    """An artifact path, a run directory, or the name of a shipped optimizer."""
    path = pathlib.Path(name)
    if (path / "config.toml").exists() and (path / "checkpoints").exists():
        lopt, theta, _ = theta_from_run(path)
        return lopt, theta
    path = shipped.find(name)
    if not path.exists():
        raise OptimizerFileError(
            f"{name}: no such artifact, run directory or shipped optimizer "
            f"(shipped: {', '.join(shipped.optimizer_names()) or 'none'})"
        )
    lopt, theta, _ = learned_opt.load(path)
    return lopt, theta
