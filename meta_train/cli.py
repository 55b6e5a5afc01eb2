"""The ``lopt`` command line.

    lopt meta-train --config configs/NAME.toml [--set key=value ...] [--out DIR] [--resume]
                    [--cpu-devices N|auto]
    lopt export --run DIR --out PATH
    lopt eval --optimizer PATH_OR_NAME [--tasks SUITE] [--steps N] [--seeds S] [--out DIR]
    lopt figures [--experiments NAME,...] [--out DIR] [--set key=value ...]
    lopt prepare NAME [--data-dir DIR]
    lopt list [--data-dir DIR]

Errors a user can fix (a bad config key or value, a missing dataset, an unusable
checkpoint) print one line and exit with status 2, without a traceback.
Compiled programs are cached in ``~/.cache/lopt/xla`` (``$LOPT_COMPILATION_CACHE``
names another directory, ``0`` turns the cache off).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

from learned_opt.export import OptimizerFileError
from meta_train import config as config_lib
from meta_train.config import ConfigError
from meta_train.training.checkpoint import CheckpointError
from tasks.datasets import DatasetError

USER_ERRORS = (ConfigError, DatasetError, CheckpointError, OptimizerFileError, FileExistsError)
RESUME_OVERRIDABLE = "train."


def _configs_dir() -> pathlib.Path:
    return pathlib.Path.cwd() / "configs"


def _fresh_run_dir(name: str) -> pathlib.Path:
    base = pathlib.Path("runs") / name
    candidate, n = base, 1
    while (candidate / "checkpoints").exists():
        candidate = base.with_name(f"{name}-{n}")
        n += 1
    return candidate


def _cpu_devices(text: str) -> int:
    if text == "auto":
        from meta_train.runtime.sharding import cpu_cores

        return cpu_cores()
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"expected a count of at least 1 or 'auto', got {text!r}")
    return count


def _use_cpu_devices(count: int) -> None:
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
        bad = [s for s in args.set if not s.strip().startswith(RESUME_OVERRIDABLE)]
        if bad:
            raise ConfigError(f"on --resume only train.* keys may be changed, not {bad[0]!r}")
        config = config_lib.load(saved, args.set)
    else:
        if args.config is None:
            raise ConfigError("meta-train needs --config PATH (see `lopt list`)")
        config = config_lib.load(args.config, args.set)
        if args.out is None:
            run_dir = _fresh_run_dir(config.name)
        else:
            run_dir = pathlib.Path(args.out)
            if (run_dir / "checkpoints").exists():
                raise ConfigError(
                    f"{run_dir} already holds a run; pass --resume to continue "
                    "it or choose another --out"
                )
    meta_train(config, run_dir, resume=args.resume, progress=not args.no_progress)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from meta_train.training.export_run import export_run

    path = export_run(args.run, args.out)
    print(f"wrote {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from meta_train.evaluation import held_out
    from tasks.family import HELD_OUT_SUITES

    if args.tasks not in HELD_OUT_SUITES:
        raise ConfigError(f"unknown task suite {args.tasks!r}; valid: {', '.join(HELD_OUT_SUITES)}")
    if args.steps < 10 or args.seeds < 1:
        raise ConfigError("--steps must be >= 10 and --seeds >= 1")
    from meta_train.training.export_run import resolve_optimizer

    lopt, theta = resolve_optimizer(args.optimizer)
    specs = {s.name: s for s in HELD_OUT_SUITES[args.tasks]}
    total = len(specs) * (1 + len(held_out.BASELINE_GRIDS))
    with tqdm(total=total, desc="eval", file=sys.stderr, disable=args.no_progress) as bar:

        def progress(msg):
            bar.set_postfix_str(msg)
            bar.update(1)

        results = held_out.evaluate_suite(
            specs, {"learned": (lopt, theta)}, steps=args.steps, seeds=args.seeds, progress=progress
        )
    results["optimizer"] = str(args.optimizer)
    results["suite"] = args.tasks
    out = pathlib.Path(args.out or pathlib.Path("runs") / "eval")
    pngs = held_out.write_outputs(results, out)
    print(held_out.table(results))
    print(f"wrote {out / 'eval.json'} and {len(pngs)} plots")
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from meta_train.evaluation import figures

    names = [n.strip() for n in args.experiments.split(",") if n.strip()]
    unknown = [n for n in names if n not in figures.EXPERIMENTS]
    if unknown or not names:
        raise ConfigError(
            f"unknown experiment {unknown[0] if unknown else ''!r}; valid: "
            + ", ".join(figures.EXPERIMENTS)
        )
    summary = figures.draw(names, args.out, _configs_dir(), progress=print, overrides=args.set)
    for name, runs in summary.items():
        for kind, r in runs.items():
            theta = ", ".join(f"{x:.4g}" for x in r["final_theta"])
            print(f"{name:20s} {kind:13s} theta = ({theta})  {r['loss']} {r['final_loss']:.4g}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from tasks import tfds_data

    path = tfds_data.prepare(args.name, args.data_dir)
    print(f"{args.name} is prepared in {path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    del args
    from tasks.datasets import available_datasets
    from tasks.family import HELD_OUT_SUITES

    print("configs:")
    for path in sorted(_configs_dir().glob("*.toml")):
        print(f"  {path.relative_to(pathlib.Path.cwd())}")
    print("datasets:")
    for name, where in available_datasets().items():
        print(f"  {name}: {where}")
    print("held-out task suites:")
    for name, specs in HELD_OUT_SUITES.items():
        print(
            f"  {name}: "
            + "; ".join(
                f"mlp {list(s.hidden_sizes)} {s.activation} {s.image_size}x{s.image_size} "
                f"b{s.batch_size}"
                for s in specs
            )
        )
    from meta_train.training.export_run import shipped_names

    print("shipped optimizers: " + (", ".join(shipped_names()) or "none"))
    from learned_opt import LEARNED_OPTIMIZERS
    from meta_train.builders import SYSTEMS
    from meta_train.estimators import ESTIMATORS

    print("learned optimizers (lopt.kind): " + ", ".join(LEARNED_OPTIMIZERS))
    print("systems (task.kind): " + ", ".join(SYSTEMS))
    print("estimators (estimator.kind): " + ", ".join(ESTIMATORS))
    print("config keys: " + ", ".join(config_lib.valid_keys()))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lopt", description="PES meta-training of learned optimizers")
    sub = p.add_subparsers(dest="command", required=True)
    mt = sub.add_parser("meta-train", help="meta-train a learned optimizer")
    mt.add_argument("--config", help="a TOML config, e.g. configs/default.toml")
    mt.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. estimator.num_particles=16",
    )
    mt.add_argument("--out", help="run directory (default runs/<name>)")
    mt.add_argument("--resume", action="store_true", help="continue the run in --out")
    mt.add_argument("--no-progress", action="store_true", help="no progress bar")
    mt.add_argument(
        "--cpu-devices",
        type=_cpu_devices,
        default=1,
        metavar="N|auto",
        help="present the CPU to JAX as N devices and shard the particles over "
        "them (auto: one per core); each holds its own copy of the data "
        "(default 1)",
    )
    mt.set_defaults(func=cmd_meta_train)
    ex = sub.add_parser("export", help="write a run's optimizer as a standalone artifact")
    ex.add_argument("--run", required=True, help="a run directory (runs/NAME)")
    ex.add_argument("--out", required=True, help="artifact directory to create")
    ex.set_defaults(func=cmd_export)
    ev = sub.add_parser("eval", help="evaluate an optimizer on held-out tasks vs tuned baselines")
    ev.add_argument(
        "--optimizer", required=True, help="artifact path, run directory, or shipped optimizer name"
    )
    ev.add_argument("--tasks", default="default", help="held-out suite (see `lopt list`)")
    ev.add_argument("--steps", type=int, default=200)
    ev.add_argument("--seeds", type=int, default=4)
    ev.add_argument("--out", help="output directory (default runs/eval)")
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=cmd_eval)
    fg = sub.add_parser("figures", help="reproduce the PES paper's toy experiments as PNG")
    fg.add_argument(
        "--experiments",
        default="influence_balancing,toy_regression,lr_schedule",
        help="comma-separated: influence_balancing, toy_regression, lr_schedule",
    )
    fg.add_argument("--out", default="docs/figures", help="output directory")
    fg.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key in every experiment's config, e.g. train.steps=500",
    )
    fg.set_defaults(func=cmd_figures)
    pr = sub.add_parser(
        "prepare",
        help="download and prepare a tfds dataset (needs internet and the [prepare] extra)",
    )
    pr.add_argument("name", help="mnist, fashion_mnist, cifar10 or svhn")
    pr.set_defaults(func=cmd_prepare)
    ls = sub.add_parser("list", help="configs, datasets, task suites, optimizers")
    ls.set_defaults(func=cmd_list)
    for command in (mt, ev, pr, ls):
        command.add_argument(
            "--data-dir",
            help="tensorflow-datasets data directory (default "
            "$TFDS_DATA_DIR, else ~/tensorflow_datasets)",
        )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from meta_train.runtime.host_memory import limit_malloc_arenas

    limit_malloc_arenas()  # before JAX's thread pools start
    if getattr(args, "data_dir", None):
        os.environ["TFDS_DATA_DIR"] = args.data_dir  # read by every tfds dataset load
    from meta_train.runtime.xla_options import enable_compilation_cache

    enable_compilation_cache()  # a rerun with the same shapes skips compilation
    try:
        if getattr(args, "cpu_devices", 1) > 1:
            _use_cpu_devices(args.cpu_devices)
        return args.func(args)
    except USER_ERRORS as e:
        print(f"lopt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lopt: interrupted; the last saved checkpoint is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
