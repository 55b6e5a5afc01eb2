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

Used by ``lopt figures`` for the PES paper's learned-optimizer experiment and
its learning-rate schedule on an MLP (``figures.COMPARISONS``).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Sequence
from operator import itemgetter

import jax
import jax.numpy as jnp
import numpy as np

from meta_train import config as config_lib
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


def run(
    exp: Comparison,
    configs_dir: pathlib.Path,
    progress: Callable[[str], None] = print,
    overrides: Sequence[str] = (),
) -> dict:
    """``{"runs": {variant label: {estimator: [per seed {"steps", "meta_objective",
    "train_meta_loss", "trunc_len", "final_theta" (small thetas only)}]}},
    "systems": {variant label: system}}``."""
    runs: dict[str, dict[str, list[dict]]] = {}
    systems = {}
    for variant in exp.variants:
        runs[variant.label] = {}
        for kind in variant.estimators:
            runs[variant.label][kind] = []
            for seed in range(exp.seeds):
                progress(f"{exp.config}: {label(variant, kind)}, initialisation {seed}")
                config = config_lib.load(
                    configs_dir / f"{exp.config}.toml",
                    [
                        *variant.overrides,
                        *overrides,
                        f"estimator.kind={kind}",
                        f"train.seed={seed}",
                    ],
                )
                system, traj = scan_loop.run(config)
                steps, values = meta_objective_curve(
                    system, traj.thetas, exp.eval_every, exp.eval_seeds
                )
                record = {
                    "steps": steps.tolist(),
                    "meta_objective": values.tolist(),
                    "train_meta_loss": np.asarray(traj.meta_losses).tolist(),
                    "trunc_len": config.estimator.trunc_len,
                }
                final = jax.tree.leaves(jax.tree.map(itemgetter(-1), traj.thetas))
                if sum(np.size(x) for x in final) <= SMALL_THETA:
                    record["final_theta"] = np.concatenate([np.ravel(x) for x in final]).tolist()
                runs[variant.label][kind].append(record)
                systems[variant.label] = system
    return {"experiment": exp, "runs": runs, "systems": systems}


def summary(result: dict) -> dict:
    """Per variant and estimator: each initialisation's final whole-horizon
    meta-objective, their mean and spread (and the final theta, when small)."""
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
    fig.tight_layout()
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
