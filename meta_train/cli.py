"""The ``lopt`` command line.

    lopt meta-train --config configs/NAME.toml [--set key=value ...] [--out DIR] [--resume]
    lopt list

Errors a user can fix (a bad config key or value, a missing dataset, an unusable
checkpoint) print one line and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from meta_train import config as config_lib
from meta_train.checkpoint import CheckpointError
from meta_train.config import ConfigError
from tasks.datasets import DatasetError

USER_ERRORS = (ConfigError, DatasetError, CheckpointError)
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


def cmd_meta_train(args: argparse.Namespace) -> int:
    from meta_train.trainer import meta_train

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
                raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue "
                                  "it or choose another --out")
    meta_train(config, run_dir, resume=args.resume, progress=not args.no_progress)
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
        print(f"  {name}: " + "; ".join(
            f"mlp {list(s.hidden_sizes)} {s.activation} {s.image_size}x{s.image_size} "
            f"b{s.batch_size}" for s in specs))
    print("learned optimizers: mlp (default); baselines: adam, sgdm")
    print("config keys: " + ", ".join(config_lib.valid_keys()))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lopt", description="PES meta-training of learned optimizers")
    sub = p.add_subparsers(dest="command", required=True)
    mt = sub.add_parser("meta-train", help="meta-train a learned optimizer")
    mt.add_argument("--config", help="a TOML config, e.g. configs/default.toml")
    mt.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key, e.g. estimator.num_particles=16")
    mt.add_argument("--out", help="run directory (default runs/<name>)")
    mt.add_argument("--resume", action="store_true", help="continue the run in --out")
    mt.add_argument("--no-progress", action="store_true", help="no progress bar")
    mt.set_defaults(func=cmd_meta_train)
    ls = sub.add_parser("list", help="configs, datasets, task suites, optimizers")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"lopt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lopt: interrupted; the last saved checkpoint is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
