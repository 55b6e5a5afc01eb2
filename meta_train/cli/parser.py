"""The arguments of every ``lopt`` command (``meta_train.cli.commands`` runs them)."""

from __future__ import annotations

import argparse
from typing import NoReturn

from meta_train.cli import commands


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lopt-pes")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


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


def _export_step(text: str) -> int | str:
    """``lopt export --step``: an outer step (>= 0) or ``best``."""
    if text == "best":
        return text
    try:
        step = int(text)
    except ValueError:
        step = -1
    if step < 0:
        raise argparse.ArgumentTypeError(f"expected an outer step (>= 0) or 'best', got {text!r}")
    return step


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


class _OneLineParser(argparse.ArgumentParser):
    """A usage error is one line naming the command's --help (not argparse's usage
    block): every bad input to lopt reads the same."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    p = _OneLineParser(prog="lopt", description="PES meta-training of learned optimizers")
    p.add_argument("--version", action="version", version=f"lopt {_version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_OneLineParser)
    mt = sub.add_parser("meta-train", help="meta-train a learned optimizer")
    mt.add_argument(
        "--config",
        default=None,
        help="a shipped config's name (`lopt list`) or a TOML file (default: default)",
    )
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
    mt.add_argument(
        "--profile",
        type=_count(0),
        default=0,
        metavar="STEPS",
        help="write a jax.profiler trace of STEPS outer steps (after the first, which "
        "compiles) to RUN/profile/, for TensorBoard / xprof",
    )
    mt.set_defaults(func=commands.cmd_meta_train)
    ex = sub.add_parser("export", help="write a run's optimizer as a standalone artifact")
    ex.add_argument("--run", required=True, help="a run directory (runs/NAME)")
    ex.add_argument("--out", required=True, help="artifact directory to create")
    ex.add_argument(
        "--step",
        type=_export_step,
        default=None,
        help="the kept checkpoint of this outer step, or 'best': the kept one with the "
        "lowest fixed-seed evaluation (default: the newest)",
    )
    ex.set_defaults(func=commands.cmd_export)
    ev = sub.add_parser("eval", help="evaluate an optimizer on held-out tasks vs tuned baselines")
    ev.add_argument(
        "--optimizer",
        required=True,
        action="append",
        metavar="[NAME=]PATH",
        help="artifact path, run directory, or shipped optimizer name; repeat to compare "
        "several (named NAME, else by their path's last part; one alone is 'learned')",
    )
    ev.add_argument("--tasks", default="default", help="held-out suite (see `lopt list`)")
    ev.add_argument("--steps", type=_count(10), default=200)
    ev.add_argument(
        "--long-steps",
        type=_count(10),
        default=None,
        metavar="N",
        help="run the suite's long tasks (`generalization`: 3 of them) to N steps",
    )
    ev.add_argument("--seeds", type=_count(1), default=4)
    ev.add_argument(
        "--baselines",
        metavar="EVAL_JSON",
        help="reuse the tuned Adam and SGD-momentum runs of an earlier `lopt eval` (its "
        "eval.json) for every task run the same way (spec, steps, seeds); the rest are run",
    )
    ev.add_argument(
        "--tune-learned",
        action="store_true",
        help="run each learned optimizer over a 5-point grid of multipliers on its update "
        "(1 included: the rule as trained) and also report the best per task, as Adam's "
        "rate is chosen, as 'NAME (tuned)' (5x the learned optimizers' time)",
    )
    ev.add_argument("--out", help="output directory (default runs/eval)")
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(func=commands.cmd_eval)
    fg = sub.add_parser("figures", help="reproduce the PES paper's experiments as PNG")
    fg.add_argument(
        "--experiments",
        default=None,
        help="comma-separated, or all: influence_balancing, toy_regression, lr_schedule "
        "(the default, about a minute), lopt_pes_vs_tes (minutes)",
    )
    fg.add_argument("--out", default="docs/figures", help="output directory")
    fg.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a key in every experiment's config, e.g. train.steps=500",
    )
    fg.set_defaults(func=commands.cmd_figures)
    pr = sub.add_parser(
        "prepare",
        help="download and prepare a tfds dataset or corpus (needs internet and the [prepare] "
        "extra)",
    )
    pr.add_argument("name", help="mnist, fashion_mnist, cifar10, svhn or tiny_shakespeare")
    pr.set_defaults(func=commands.cmd_prepare)
    ls = sub.add_parser("list", help="configs, datasets, task suites, optimizers")
    ls.set_defaults(func=commands.cmd_list)
    rp = sub.add_parser("report", help="draw RUN/report.png from a run's metrics (also mid-run)")
    rp.add_argument("run", help="a run directory (runs/NAME)")
    rp.set_defaults(func=commands.cmd_report)
    for command in (mt, ev, pr, ls):
        command.add_argument(
            "--data-dir",
            help="tensorflow-datasets data directory (default "
            "$TFDS_DATA_DIR, else ~/tensorflow_datasets)",
        )
    return p
