"""The meta-training loop: outer steps, with logging, evaluation and checkpoints around them.

``meta_train(config, run_dir)`` builds the system, estimator and outer
optimizer from the config and calls ``train(estimator, run_dir, settings)``,
the same loop for a system built in Python, which repeats the compiled outer iteration
(``training.outer_step``), writing ``metrics.jsonl`` (``training.run_log``),
evaluating at fixed seeds (``evaluation.fixed_seeds``) and checkpointing
(``training.checkpoint``) as ``[train]`` says. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
from collections.abc import Callable, Sequence
from time import perf_counter as now
from time import process_time as cpu_now
from typing import Any

import jax
import optax

from meta_train import config as config_lib
from meta_train.builders import (
    build_estimator,
    build_eval_system,
    build_outer_optimizer,
    build_system,
    outer_optimizer,
)
from meta_train.estimators.base import Estimator
from meta_train.evaluation.fixed_seeds import evaluate
from meta_train.evaluation.report import ReportError, draw_report
from meta_train.runtime.profiling import StepTrace
from meta_train.systems.base import UnrolledSystem
from meta_train.systems.family import SystemFamily
from meta_train.training.checkpoint import Checkpointer
from meta_train.training.curriculum import horizon_at, with_horizon
from meta_train.training.health import Health
from meta_train.training.outer_step import distribute, init_meta_state, make_outer_step
from meta_train.training.run_dir import COMMANDS_FILE, RunExistsError, RunLock, holds_run
from meta_train.training.run_log import MetricsLog, Progress, StepRate, theta_values

_DEFAULT_SETTINGS = config_lib.TrainConfig()


@dataclasses.dataclass
class RunResult:
    run_dir: pathlib.Path
    theta: Any
    eval_before: dict | None
    eval_after: dict
    particle_steps_per_s: float
    seconds: float


def _refuse_a_held_directory(run_dir: pathlib.Path, resume: bool) -> None:
    if not resume and holds_run(run_dir):
        raise RunExistsError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose "
            "another directory"
        )


def _evaluator(system: UnrolledSystem | SystemFamily, num_seeds: int) -> Callable[[Any], dict]:
    def evaluate_theta(theta) -> dict:
        # Evaluation is one device's work: a theta replicated by sharded outer steps
        # would compile evaluation again and run it on every device, so it gets
        # this process's copy on its first device (every process evaluates alike).
        return evaluate(system, jax.tree.map(lambda x: x.addressable_data(0), theta), num_seeds)

    return evaluate_theta


def meta_train(
    config: config_lib.Config,
    run_dir: str | pathlib.Path,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    profile_steps: int = 0,
    command: str | None = None,
) -> RunResult:
    """Meta-train as ``config`` says: build its system, estimator and evaluation
    system (a family's held-out shapes), then ``train``."""
    # Built first: a config that names a missing dataset leaves no directory behind.
    system = build_system(config)
    estimator = build_estimator(config, system)
    return train(
        estimator,
        run_dir,
        config.train,
        outer_opt=build_outer_optimizer(config),
        eval_system=build_eval_system(config, system),
        config=config,
        resume=resume,
        progress=progress,
        log=log,
        profile_steps=profile_steps,
        command=command,
        horizon_curriculum=config.task.horizon_curriculum,
        curriculum_steps=config.task.curriculum_steps,
    )


def train(
    estimator: Estimator,
    run_dir: str | pathlib.Path,
    settings: config_lib.TrainConfig = _DEFAULT_SETTINGS,
    *,
    outer_opt: optax.GradientTransformation | None = None,
    eval_system: UnrolledSystem | SystemFamily | None = None,
    config: config_lib.Config | None = None,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    profile_steps: int = 0,
    horizon_curriculum: Sequence[int] = (),
    curriculum_steps: int = 0,
    command: str | None = None,
) -> RunResult:
    """Meta-train ``estimator``'s system from Python, with what ``lopt meta-train`` gives:
    metrics (``metrics.jsonl``, ``tb/``), checkpoints, evaluation, ``report.png`` and
    ``resume``, all in ``run_dir``.

    ``settings`` are the ``[train]`` keys (steps, seed, logging, evaluation and
    checkpoint intervals); ``outer_opt`` defaults to the Adam (and clipping)
    they name; ``eval_system`` (default: the estimator's system) is what the
    fixed-seed evaluation runs. ``config``, when given, is written beside the
    run and into its checkpoints; otherwise ``[train]`` alone is. ``resume``
    continues from the latest checkpoint bit for bit. ``profile_steps > 0``
    traces that many outer steps after the first (which compiles) with
    ``jax.profiler`` into ``run_dir/profile``. ``horizon_curriculum`` lists
    shorter horizons to meta-train at first, ``curriculum_steps`` outer steps
    each (``training.curriculum``). ``command``, the command line that started
    this process, is kept in ``run_dir/commands.txt`` (one line per start or
    resume), from which an exported optimizer's card says how it was made.
    """
    t_start, cpu_start = now(), cpu_now()
    run_dir = pathlib.Path(run_dir)
    tc = settings
    if config is not None and config.train != settings:
        raise ValueError("settings must be config.train when a config is given")
    if horizon_curriculum and curriculum_steps < 1:
        raise ValueError("a horizon curriculum needs curriculum_steps >= 1")
    outer_opt = outer_opt or outer_optimizer(settings)
    eval_system = eval_system if eval_system is not None else estimator.system
    _refuse_a_held_directory(run_dir, resume)  # before the lock file is written
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):  # one process per run directory, for the whole run
        _refuse_a_held_directory(run_dir, resume)  # a run started since the first look

        state = init_meta_state(estimator, outer_opt, tc.seed)
        checkpointer = Checkpointer(run_dir / "checkpoints", max_to_keep=tc.max_to_keep)
        if resume and not checkpointer.steps():
            log(f"{run_dir} was stopped before its first checkpoint: starting it over from step 0")
            resume = False
        if resume:
            step, state, _ = checkpointer.restore(state)
            log(f"resumed {run_dir} from outer step {step}")
        if command is not None:  # appended: a resume that starts over keeps the first
            with open(run_dir / COMMANDS_FILE, "a") as f:
                f.write(command + "\n")
        if config is not None:
            (run_dir / "config.toml").write_text(config_lib.dumps(config))
            config_json = config_lib.to_dict(config)
        else:
            config_json = {"train": dataclasses.asdict(settings)}
        # On resume the log is cut back to the restored step (the steps after it are
        # run again), and an evaluation at a final step is dropped (it runs again).
        restored = int(state.step)
        metrics_log = MetricsLog(
            run_dir,
            append=resume,
            log=log,
            keep_through=restored,
            drop_eval_at=restored if restored >= tc.steps else None,
        )
        spent = metrics_log.elapsed  # before this process: a resumed run counts from step 0
        evaluate_theta = _evaluator(eval_system, tc.eval_seeds)
        loss_name = getattr(eval_system, "loss_name", "mean inner loss")

        start_step = int(state.step)
        eval_before = None
        if start_step == 0:
            eval_before = evaluate_theta(state.theta)
            metrics_log.write({"step": 0, **eval_before})
            log(f"eval at step 0: {loss_name} {eval_before['eval_loss']:.4f}")

        step_estimator, state, shardings, num_devices = distribute(estimator, state)
        if num_devices > 1:
            log(f"particles sharded over {num_devices} devices")
        outer_step = make_outer_step(outer_opt, shardings)
        bar = Progress(tc.steps, start_step, progress)
        health = Health(tc.health_window)
        rate = StepRate(estimator.steps_per_call)
        trace = StepTrace(run_dir / "profile", first=start_step + 2, count=profile_steps)
        try:
            for step in range(start_step + 1, tc.steps + 1):
                if horizon_curriculum:
                    horizon = horizon_at(
                        step, curriculum_steps, horizon_curriculum, estimator.system.horizon
                    )
                    step_estimator = with_horizon(step_estimator, horizon)
                trace.before(step)
                t0 = now()
                state, metrics = outer_step(step_estimator, state)
                values: dict[str, float] = {k: v.item() for k, v in jax.device_get(metrics).items()}
                rate.add(now() - t0)
                trace.after(step)
                health.add(step, values)
                if step % tc.log_every == 0 or step == tc.steps:
                    record = {"step": step, **values, "particle_steps_per_s": rate.rate,
                              "seconds": spent.seconds + now() - t_start,
                              "cpu_seconds": spent.cpu_seconds + cpu_now() - cpu_start}  # fmt: skip
                    theta = theta_values(state.theta)  # toy systems: log the trajectory
                    metrics_log.write(record if theta is None else {**record, "theta": theta})
                if tc.eval_every and step % tc.eval_every == 0 and step != tc.steps:
                    metrics_log.write({"step": step, **evaluate_theta(state.theta)})
                stalled = health.stalled
                checkpointer.check()  # a save that failed in the background stops the run
                if step % tc.checkpoint_every == 0 or step == tc.steps or stalled:
                    checkpointer.save(step, state, config_json)
                    metrics_log.flush()  # TensorBoard holds every step a resume keeps
                bar.update(values["meta_loss"], rate.rate, health.summary())
                health.check(step)
            eval_after = evaluate_theta(state.theta)
            metrics_log.write({"step": int(state.step), **eval_after})
        finally:
            trace.close()
            bar.close()
            checkpointer.close()
            metrics_log.close()
            try:
                draw_report(run_dir)  # also for a run that stopped early
            except ReportError:
                pass  # stopped before anything was logged
            except OSError as e:  # a full disk: the run's own error, if any, is the one to see
                if sys.exc_info()[0] is None:
                    log(f"warning: report.png not drawn ({e}); `lopt report {run_dir}` draws it")
        seconds = now() - t_start
        log(
            f"eval at step {int(state.step)}: {loss_name} {eval_after['eval_loss']:.4f}"
            + (f" (was {eval_before['eval_loss']:.4f} at step 0)" if eval_before else "")
        )
        if health.summary():
            log(f"outer steps: {health.summary()} (see metrics.jsonl)")
        log(f"{rate.rate:.0f} particle inner-steps/s; {seconds:.1f} s in all; run in {run_dir} "
            f"(report.png; TensorBoard: tensorboard --logdir {run_dir / 'tb'})")  # fmt: skip
        return RunResult(run_dir, state.theta, eval_before, eval_after, rate.rate, seconds)
