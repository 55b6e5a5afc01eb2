"""Estimators compared on one meta-training problem, judged over whole horizons.

An experiment (``Comparison``) is a shipped config and a few *variants* of it
(``--set`` overrides: another truncation length, another meta-objective);
each variant is meta-trained by each of its estimators
(``estimator.kind``) from ``seeds`` random initialisations
(``train.seed`` = 0, 1, ...; it also seeds the particles), each run one
compiled scan (``training.scan_loop``). Every ``eval_every`` outer steps the
run's theta is judged by its **meta-objective**: the mean of the system's
per-step loss L_t over whole episodes of the full horizon T on
``eval_seeds`` fixed seeds (``evaluation.fixed_seeds``: the same seeds for
every run and theta), whatever truncation the estimator trained with.

With a ``budget`` every run gets the same number of **system steps** (for a
control system, environment steps): ``train.steps`` is set per run to the budget
over what one outer step costs, particles x K x the system's ``batch_size``
(K = T for full-episode ES), and the curves are drawn against system steps.

Used by ``lopt figures`` for the PES paper's learned-optimizer experiment, its
learning-rate schedule on an MLP and its continuous control
(``figures.COMPARISONS``).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from meta_train import config as config_lib
from meta_train.builders import build_estimator, build_system
from meta_train.evaluation.fixed_seeds import evaluate
from meta_train.training import scan_loop

SMALL_THETA = 64  # a final theta this small (a schedule's knots) is kept in the results


@dataclasses.dataclass(frozen=True)
class Variant:
    label: str  # "" for an experiment of one variant
    overrides: tuple[str, ...] = ()
    estimators: tuple[str, ...] = ("pes", "truncated_es")
    objective: str = ""  # what L_t is, for labels; "" = the comparison's


@dataclasses.dataclass(frozen=True)
class Comparison:
    config: str  # a shipped config's name
    variants: tuple[Variant, ...] = (Variant(""),)
    seeds: int = 1
    eval_every: int = 25  # outer steps between evaluations
    eval_seeds: int = 4
    objective: str = "mean inner loss"  # what L_t is, for labels
    # > 0: every run takes this many system steps (module doc); eval_every then
    # counts evaluations per run instead of outer steps between them
    budget: int = 0
    # the outer learning rates tried for every variant and estimator (run's doc);
    # () = the config's
    learning_rates: tuple[float, ...] = ()
    # "return": draw -T x the meta-objective (the mean return of a control system),
    # and every run in one panel; "" draws the meta-objective, a panel per variant
    y_axis: str = ""
    # with y_axis "return": the return whose first crossing the summary reports
    # (system steps spent until the evaluated return is at least this); None = none
    target_return: float | None = None


def meta_objective_curve(
    system, thetas, every: int, num_seeds: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)``: the whole-horizon meta-objective of the thetas at outer
    steps 0, every, 2 every, ... and the last (``thetas``: leading axis outer steps + 1),
    each ``fixed_seeds.evaluate``'s ``eval_loss`` over episodes of the full horizon."""
    n = jax.tree.leaves(thetas)[0].shape[0]
    steps = np.unique(np.r_[np.arange(0, n, every), n - 1])
    picked = jax.tree.map(lambda a: a[steps], thetas)
    # One theta at a time: a whole-horizon episode per seed is the memory unit.
    values = [
        evaluate(system, jax.tree.map(itemgetter(i), picked), num_seeds, system.horizon)[
            "eval_loss"
        ]
        for i in range(len(steps))
    ]
    return steps, np.asarray(values)


def label(variant: Variant, kind: str) -> str:
    return f"{variant.label}: {kind}" if variant.label else kind


def steps_per_outer_step(config: config_lib.Config) -> int:
    """System steps one outer step of ``config``'s estimator takes: particles x K
    x the system's ``batch_size`` (1 for a system without one)."""
    system = build_system(config)
    estimator = build_estimator(config, system)
    return estimator.steps_per_call * getattr(system, "batch_size", 1)


class RunPlan(NamedTuple):
    config: config_lib.Config
    eval_every: int  # outer steps between evaluations
    system_steps: int  # per outer step (steps_per_outer_step)


def _load(exp: Comparison, configs_dir: pathlib.Path, overrides: list[str]) -> RunPlan:
    """The run's config, evaluation interval and cost of an outer step; with a
    budget, ``train.steps`` spends it."""
    path = configs_dir / f"{exp.config}.toml"
    config = config_lib.load(path, overrides)
    cost = steps_per_outer_step(config)
    if not exp.budget:
        return RunPlan(config, exp.eval_every, cost)
    if exp.budget < cost:
        raise config_lib.ConfigError(
            f"{exp.config}: a budget of {exp.budget} system steps is less than one outer step "
            f"({cost})"
        )
    steps = exp.budget // cost
    config = config_lib.load(path, [*overrides, f"train.steps={steps}"])
    return RunPlan(config, max(1, steps // exp.eval_every), cost)


def _one_run(exp: Comparison, configs_dir: pathlib.Path, overrides: list[str]):
    """``(system, record)`` of one meta-training run and its curve (``run``'s doc)."""
    plan = _load(exp, configs_dir, overrides)
    system, traj = scan_loop.run(plan.config)
    steps, values = meta_objective_curve(system, traj.thetas, plan.eval_every, exp.eval_seeds)
    record = {
        "steps": steps.tolist(),
        "meta_objective": values.tolist(),
        "train_meta_loss": np.asarray(traj.meta_losses).tolist(),
        "trunc_len": plan.config.estimator.trunc_len,
        "system_steps": plan.system_steps,
        "learning_rate": plan.config.train.learning_rate,
    }
    final = jax.tree.leaves(jax.tree.map(itemgetter(-1), traj.thetas))
    if sum(np.size(x) for x in final) <= SMALL_THETA:
        record["final_theta"] = np.concatenate([np.ravel(x) for x in final]).tolist()
    return system, record


def run(
    exp: Comparison,
    configs_dir: pathlib.Path,
    progress: Callable[[str], None] = print,
    overrides: Sequence[str] = (),
) -> dict:
    """``{"runs": {variant label: {estimator: [per seed {"steps", "meta_objective",
    "train_meta_loss", "trunc_len", "system_steps" (per outer step), "learning_rate",
    "final_theta" (small thetas only)}]}}, "tuning": {variant label: {estimator:
    {learning rate: mean final meta-objective}}}, "systems": {variant label: system}}``.

    With ``exp.learning_rates`` every variant and estimator runs at each rate and
    keeps the runs of the rate whose mean final meta-objective is lowest."""
    runs: dict[str, dict[str, list[dict]]] = {}
    tuning: dict[str, dict[str, dict[float, float]]] = {}
    systems = {}
    rates: tuple[float | None, ...] = exp.learning_rates or (None,)
    for variant in exp.variants:
        runs[variant.label], tuning[variant.label] = {}, {}
        for kind in variant.estimators:
            by_rate = {}
            for rate in rates:
                records = []
                for seed in range(exp.seeds):
                    at = f" at learning rate {rate}" if rate is not None else ""
                    progress(f"{exp.config}: {label(variant, kind)}{at}, initialisation {seed}")
                    rate_override = [f"train.learning_rate={rate}"] if rate is not None else []
                    system, record = _one_run(
                        exp,
                        configs_dir,
                        [*variant.overrides, *overrides, *rate_override,
                         f"estimator.kind={kind}", f"train.seed={seed}"],
                    )  # fmt: skip
                    records.append(record)
                    systems[variant.label] = system
                by_rate[records[0]["learning_rate"]] = records
            finals = {
                rate: float(np.mean([r["meta_objective"][-1] for r in records]))
                for rate, records in by_rate.items()
            }
            tuning[variant.label][kind] = finals
            runs[variant.label][kind] = by_rate[min(finals, key=finals.__getitem__)]
    return {"experiment": exp, "runs": runs, "tuning": tuning, "systems": systems}


def summary(result: dict) -> dict:
    """Per variant and estimator: each initialisation's final whole-horizon
    meta-objective, their mean and spread; the final theta when small, the rate
    kept and every rate's mean when tuned, the system steps spent with a budget,
    and the returns (-T x the meta-objective) when drawn as returns."""
    exp: Comparison = result["experiment"]
    out = {}
    for variant in exp.variants:
        horizon = result["systems"][variant.label].horizon
        for kind, seeds in result["runs"][variant.label].items():
            finals = [s["meta_objective"][-1] for s in seeds]
            entry = {
                "final_meta_objective": finals,
                "mean": float(np.mean(finals)),
                "std": float(np.std(finals)),
                "loss": f"{variant.objective or exp.objective} over T = {horizon}",
            }
            if exp.learning_rates:
                entry["learning_rate"] = seeds[0]["learning_rate"]
                entry["tuning"] = {
                    str(r): v for r, v in result["tuning"][variant.label][kind].items()
                }
            if exp.budget:
                entry["system_steps"] = seeds[0]["system_steps"] * seeds[0]["steps"][-1]
            if exp.y_axis == "return":
                returns = [-horizon * f for f in finals]
                entry |= {"final_return": returns, "mean_return": float(np.mean(returns)),
                          "std_return": float(np.std(returns))}  # fmt: skip
                if exp.target_return is not None:
                    entry["target_return"] = exp.target_return
                    entry["steps_to_target"] = [
                        first_crossing(s, horizon, exp.target_return) for s in seeds
                    ]
            if "final_theta" in seeds[0]:
                entry["final_theta"] = [s["final_theta"] for s in seeds]
            out[label(variant, kind)] = entry
    return out


def plot(name: str, result: dict, out_dir: pathlib.Path, names: dict[str, str]) -> pathlib.Path:
    """A row per meta-objective: a panel per variant (the whole-horizon objective
    against outer step, each run a line) and, for schedule systems
    (``learning_rate(theta, t)``), one of the schedules learned (first seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exp: Comparison = result["experiment"]
    if exp.y_axis == "return":
        return _plot_returns(name, result, out_dir, names)
    rows: dict[str, list[Variant]] = {}
    for variant in exp.variants:
        rows.setdefault(variant.objective or exp.objective, []).append(variant)
    schedules = hasattr(next(iter(result["systems"].values())), "learning_rate")
    ncols = max(len(v) for v in rows.values()) + (1 if schedules else 0)
    fig, axes = plt.subplots(
        len(rows), ncols, figsize=(4.6 * ncols, 3.9 * len(rows)), squeeze=False
    )
    colours = {k: f"C{i}" for i, k in enumerate(names)}
    for row, (objective, variants) in zip(axes, rows.items()):
        for ax in row[len(variants) : ncols - (1 if schedules else 0)]:
            ax.axis("off")
        for ax, variant in zip(row, variants):
            horizon = result["systems"][variant.label].horizon
            for kind, seeds in result["runs"][variant.label].items():
                for i, s in enumerate(seeds):
                    shown = names.get(kind, kind) if i == 0 else None  # one legend entry
                    ax.plot(s["steps"], s["meta_objective"], color=colours.get(kind), lw=1.2,
                            alpha=0.85, label=shown)  # fmt: skip
            ax.set_yscale("log")
            ax.set_xlabel("outer step")
            ax.set_ylabel(f"{objective} over T = {horizon}", fontsize=9)
            k = next(iter(result["runs"][variant.label].values()))[0]["trunc_len"]
            seeds_note = f", {exp.seeds} initialisations each" if exp.seeds > 1 else ""
            title = variant.label or f"{name.replace('_', ' ')} (K = {k})"
            ax.set_title(title + seeds_note, fontsize=9)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        if schedules:
            ax = row[-1]
            for j, variant in enumerate(variants):
                system = result["systems"][variant.label]
                t = np.arange(system.horizon, dtype=np.float32)
                for kind, seeds in result["runs"][variant.label].items():
                    lr = np.asarray(system.learning_rate(jnp.asarray(seeds[0]["final_theta"]), t))
                    ax.plot(t, lr, color=colours.get(kind), ls=("-", "--", ":", "-.")[j % 4],
                            lw=1.2, label=f"{names.get(kind, kind)}, {variant.label}")  # fmt: skip
            ax.set_yscale("log")
            ax.set_xlabel("inner step t")
            ax.set_ylabel("learning rate")
            ax.set_title("learned schedules", fontsize=9)
            ax.legend(fontsize=7)
    return _save(fig, out_dir / f"{name}.png")


def _save(fig, path: pathlib.Path) -> pathlib.Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def first_crossing(record: dict, horizon: int, target: float) -> int | None:
    """System steps spent when a run's evaluated return (-T x the meta-objective)
    first reaches ``target``; None if it never does."""
    returns = -horizon * np.asarray(record["meta_objective"])
    reached = np.flatnonzero(returns >= target)
    if reached.size == 0:
        return None
    return int(record["steps"][reached[0]] * record["system_steps"])


def _plot_returns(
    name: str, result: dict, out_dir: pathlib.Path, names: dict[str, str]
) -> pathlib.Path:
    """One panel: the mean return (-T x the meta-objective) against system steps
    spent, a colour per variant and estimator: each initialisation a thin line,
    their mean a thick one (equal budgets: the same evaluation steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exp: Comparison = result["experiment"]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colour = 0
    for variant in exp.variants:
        horizon = result["systems"][variant.label].horizon
        for kind, seeds in result["runs"][variant.label].items():
            shown = variant.label or names.get(kind, kind)
            if exp.learning_rates:
                shown += f" (learning rate {seeds[0]['learning_rate']:g})"
            x = np.asarray(seeds[0]["steps"]) * seeds[0]["system_steps"]
            ys = -horizon * np.asarray([s["meta_objective"] for s in seeds])
            for y in ys:  # each initialisation thin, their mean thick
                ax.plot(x, y, color=f"C{colour}", lw=0.7, alpha=0.35)
            ax.plot(x, ys.mean(axis=0), color=f"C{colour}", lw=2.0, label=shown)
            colour += 1
    if exp.target_return is not None:
        ax.axhline(exp.target_return, color="k", lw=0.8, ls=":")
    system = next(iter(result["systems"].values()))
    ax.set_xlabel("environment steps" if hasattr(system, "env") else "system steps")
    ax.set_ylabel(f"mean return over T = {system.horizon} (fixed initial states)", fontsize=9)
    seeds_note = f", {exp.seeds} initialisations each" if exp.seeds > 1 else ""
    title = f"{name.replace('_', ' ')}: equal budgets{seeds_note}, thick: their mean"
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir / f"{name}.png")
