"""The ``lopt`` command line.

    lopt meta-train [--config NAME|PATH] [--set key=value ...] [--out DIR] [--resume]
                    [--no-progress] [--cpu-devices N|auto] [--profile STEPS]
    lopt export --run DIR --out PATH [--step N|best]
    lopt eval --optimizer [NAME=]PATH_OR_NAME ... [--tasks SUITE] [--steps N] [--long-steps N]
              [--seeds S] [--baselines EVAL_JSON] [--tune-learned] [--out DIR]
    lopt report RUN
    lopt figures [--experiments NAME,...] [--out DIR] [--set key=value ...]
    lopt prepare NAME [--data-dir DIR]
    lopt list [--data-dir DIR]
    lopt --version

``parser`` defines the arguments, ``commands`` what each command does. Errors
a user can fix (a bad config key or value, a missing dataset, an unusable
checkpoint, an unknown config name) print one line and exit with status 2,
without a traceback. Compiled programs are cached in ``~/.cache/lopt/xla``
(``$LOPT_COMPILATION_CACHE`` names another directory, ``0`` turns the cache off).
"""

from __future__ import annotations

import os
import sys

from meta_train.cli import commands
from meta_train.cli.parser import parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded by meta-train's run
    from meta_train.runtime.host_memory import limit_malloc_arenas

    limit_malloc_arenas()  # before JAX's thread pools start
    if getattr(args, "data_dir", None):
        os.environ["TFDS_DATA_DIR"] = args.data_dir  # read by every tfds dataset load
    from meta_train.runtime.xla_options import enable_compilation_cache

    enable_compilation_cache()  # a rerun with the same shapes skips compilation
    try:
        if getattr(args, "cpu_devices", 1) > 1:
            commands.apply_cpu_devices(args.cpu_devices)
        return args.func(args)
    except commands.USER_ERRORS as e:
        print(f"lopt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lopt: interrupted; the last saved checkpoint is kept", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `lopt list | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # permissions, not a directory, disk full: the path says where
        where = f"{e.filename}: " if e.filename else ""
        print(f"lopt: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
