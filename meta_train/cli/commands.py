"""What each ``lopt`` command does (``meta_train.cli.parser`` defines their arguments).

Each ``cmd_*`` takes the parsed arguments and returns an exit status; errors a
user can fix raise one of ``USER_ERRORS``, which ``meta_train.cli.main``
prints as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shlex
import sys

from learned_opt.export import OptimizerFileError
from meta_train import config as config_lib
from meta_train import resources
from meta_train.config import ConfigError
from meta_train.evaluation.report import ReportError
from meta_train.training.checkpoint import CheckpointError
from meta_train.training.health import RunHealthError
from meta_train.training.run_dir import RunExistsError, RunInUseError, holds_run
from tasks.datasets import DatasetError

USER_ERRORS = (
    ConfigError,
    DatasetError,
    CheckpointError,
    OptimizerFileError,
    ReportError,
    FileExistsError,
    RunInUseError,
    RunExistsError,
    RunHealthError,
)
RESUME_OVERRIDABLE = "train."


def _config_file(name_or_path: str) -> pathlib.Path:
    if pathlib.Path(name_or_path).is_dir():
        raise ConfigError(f"--config {name_or_path}: is a directory, not a config file")
    path = resources.find_config(name_or_path)
    if path is None:
        raise ConfigError(
            f"--config {name_or_path!r}: no such file and no shipped config of that name; "
            f"shipped: {', '.join(resources.config_names()) or 'none'}"
        )
    return path


def _fresh_run_dir(name: str) -> pathlib.Path:
    base = pathlib.Path("runs") / name
    candidate, n = base, 1
    while holds_run(candidate):
        candidate = base.with_name(f"{name}-{n}")
        n += 1
    return candidate


def apply_cpu_devices(count: int) -> None:
    from meta_train.runtime.sharding import use_cpu_devices

    try:
        use_cpu_devices(count)  # before anything starts JAX's backend
    except ValueError as e:  # main() called in a process that already uses JAX
        raise ConfigError(f"--cpu-devices: {e}") from None


def cmd_meta_train(args: argparse.Namespace) -> int:
    from meta_train.training.loop import meta_train

    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs --out DIR, the run to continue")
        run_dir = pathlib.Path(args.out)
        saved = run_dir / "config.toml"
        if not saved.exists():
            raise CheckpointError(f"{run_dir} holds no run to resume (no config.toml)")
        if args.config is not None:
            raise ConfigError(
                f"--resume continues {run_dir} with its own config.toml; drop --config "
                f"{args.config} (only --set train.* may change)"
            )
        bad = [s for s in args.set if not s.strip().startswith(RESUME_OVERRIDABLE)]
        if bad:
            raise ConfigError(f"on --resume only train.* keys may be changed, not {bad[0]!r}")
        config = config_lib.load(saved, args.set)
    else:
        config = config_lib.load(_config_file(args.config or "default"), args.set)
        if args.out is None:
            run_dir = _fresh_run_dir(config.name)
        else:
            run_dir = pathlib.Path(args.out)
            if holds_run(run_dir):
                raise ConfigError(
                    f"{run_dir} already holds a run; pass --resume to continue "
                    "it or choose another --out"
                )
    meta_train(
        config,
        run_dir,
        resume=args.resume,
        progress=not args.no_progress,
        profile_steps=args.profile,
        command=shlex.join(["lopt", *args.argv]),
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from meta_train.training.export_run import export_run

    path = export_run(args.run, args.out, args.step)
    print(f"wrote {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from meta_train.evaluation import held_out
    from tasks.suites import HELD_OUT_SUITES, LONG_RUNS

    if args.tasks not in HELD_OUT_SUITES:
        raise ConfigError(f"unknown task suite {args.tasks!r}; valid: {', '.join(HELD_OUT_SUITES)}")
    from meta_train.training.export_run import resolve_optimizer

    sources = _named_optimizers(args.optimizer, reserved=held_out.BASELINE_GRIDS)
    optimizers = {name: resolve_optimizer(path) for name, path in sources.items()}
    specs = {s.name: s for s in HELD_OUT_SUITES[args.tasks]}
    earlier = _earlier_eval(args.baselines) if args.baselines else None
    total = len(specs) * (len(optimizers) + len(held_out.BASELINE_GRIDS))
    with tqdm(total=total, desc="eval", file=sys.stderr, disable=args.no_progress) as bar:

        def progress(msg):
            bar.set_postfix_str(msg)
            bar.update(1)

        long_runs = LONG_RUNS.get(args.tasks, ()) if args.long_steps else ()
        results = held_out.evaluate_suite(
            specs,
            optimizers,
            steps=args.steps,
            seeds=args.seeds,
            long_steps={name: args.long_steps for name in long_runs},
            progress=progress,
            reuse=earlier,
            tune_learned=args.tune_learned,
        )
    results["optimizers"] = sources
    results["suite"] = args.tasks
    out = pathlib.Path(args.out or pathlib.Path("runs") / "eval")
    pngs = held_out.write_outputs(results, out)
    print(held_out.table(results))
    if earlier is not None:
        runs = len(specs) * len(held_out.BASELINE_GRIDS)
        print(f"reused {results['reused']} of {runs} tuned baseline runs from {args.baselines}")
    print(f"wrote {out / 'eval.json'} and {len(pngs)} plots")
    return 0


def _earlier_eval(path: str) -> dict:
    """An earlier evaluation's results (``--baselines``), read as JSON, never pickle."""
    try:
        earlier = json.loads(pathlib.Path(path).read_text())
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"--baselines {path}: not an eval.json of `lopt eval` ({e})") from None
    if not isinstance(earlier, dict) or "tasks" not in earlier:
        raise ConfigError(f"--baselines {path}: not an eval.json of `lopt eval` (no tasks)")
    return earlier


def _named_optimizers(values: list[str], reserved) -> dict[str, str]:
    """``--optimizer`` values (``[NAME=]PATH``) as name -> path: one unnamed optimizer
    is ``learned``, several are named by their path's last part."""
    named: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or "/" in name or not name:
            name, path = "", value
        name = name or ("learned" if len(values) == 1 else pathlib.Path(path).name)
        if name in named or name in reserved:
            raise ConfigError(
                f"--optimizer: two optimizers named {name!r} (baselines are "
                f"{', '.join(reserved)}); name them NAME=PATH"
            )
        named[name] = path
    return named


def cmd_figures(args: argparse.Namespace) -> int:
    from meta_train.evaluation import figures

    names = [n.strip() for n in (args.experiments or ",".join(figures.DEFAULT)).split(",")]
    names = list(figures.ALL) if names == ["all"] else [n for n in names if n]
    unknown = [n for n in names if n not in figures.ALL]
    if unknown or not names:
        raise ConfigError(
            f"unknown experiment {unknown[0] if unknown else ''!r}; valid: "
            + ", ".join(figures.ALL)
            + " (or all)"
        )
    summary = figures.draw(
        names, args.out, resources.configs_dir(), progress=print, overrides=args.set
    )
    for name, runs in summary.items():
        for kind, r in runs.items():
            if "total_variance" in r:
                points = ", ".join(
                    f"{n}: {v:.3g}" for n, v in zip(r["unrolls"], r["total_variance"], strict=True)
                )
                print(f"{name:20s} {kind:13s} variance by unrolls {{{points}}}")
            elif "final_meta_objective" not in r:  # a toy: its final theta says it all
                theta = ", ".join(f"{x:.4g}" for x in r["final_theta"])
                print(f"{name:20s} {kind:13s} theta = ({theta})  {r['loss']} {r['final_loss']:.4g}")
            else:
                finals = ", ".join(f"{x:.4g}" for x in r["final_meta_objective"])
                print(f"{name:20s} {kind:13s} {r['loss']}: {r['mean']:.4g} ({finals})")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from tasks import tfds_data

    path = tfds_data.prepare(args.name, args.data_dir)
    print(f"{args.name} is prepared in {path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    del args
    from tasks.datasets import available_datasets
    from tasks.suites import HELD_OUT_SUITES

    print("configs (--config NAME): " + (", ".join(resources.config_names()) or "none"))
    print("datasets:")
    for name, where in available_datasets().items():
        print(f"  {name}: {where}")
    print("held-out task suites:")
    for name, specs in HELD_OUT_SUITES.items():
        print(f"  {name}: " + ", ".join(s.name for s in specs))
    from tasks import tfds_data
    from tasks.control import CONTINUOUS_ENVS, INSTALL, control_extra_installed
    from tasks.text import EMBEDDED_CORPORA

    print("corpora (task.corpus):")
    for name in EMBEDDED_CORPORA:
        print(f"  {name}: embedded, ready")
    root = tfds_data.data_dir_of(None)
    for name in tfds_data.TEXT_SOURCES:
        print(f"  {name}: {tfds_data.preparation_status(name, root)}")
    ready = "ready" if control_extra_installed() else f"needs the control extra: {INSTALL}"
    print(f"environments (task.env, {ready}): " + ", ".join(CONTINUOUS_ENVS))
    print("shipped optimizers: " + (", ".join(resources.optimizer_names()) or "none"))
    from learned_opt import LEARNED_OPTIMIZERS
    from meta_train.builders import SYSTEMS
    from meta_train.estimators import ESTIMATORS

    print("learned optimizers (lopt.kind): " + ", ".join(LEARNED_OPTIMIZERS))
    print("systems (task.kind): " + ", ".join(SYSTEMS))
    print("estimators (estimator.kind): " + ", ".join(ESTIMATORS))
    print("config keys: " + ", ".join(config_lib.valid_keys()))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from meta_train.evaluation.report import draw_report

    print(f"wrote {draw_report(args.run)}")
    return 0
