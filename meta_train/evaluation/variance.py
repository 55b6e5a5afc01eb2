"""The variance of ES gradient estimates against the number of unrolls (the PES paper's study).

At a fixed theta, one *estimate* is what a single antithetic pair gives for the
gradient of the mean per-step loss over a whole episode of T steps cut into
T / K truncations: the mean of its T / K per-call estimates (``stagger=False``,
so the pair's episode begins with the first call and ends with the last;
``estimators.es``). Its **total variance** is the trace of the covariance of
that estimate, measured over ``replicates`` independent pairs (each with its
own noise and episode). Varying K at fixed T varies the number of unrolls.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from meta_train import config as config_lib
from meta_train.builders import build_estimator, build_system


@dataclasses.dataclass(frozen=True)
class VarianceStudy:
    config: str  # a shipped config's name
    estimators: tuple[str, ...] = ("pes", "nres", "truncated_es")
    unrolls: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)  # T / K; each divides T
    replicates: int = 256  # independent antithetic pairs per point
    seed: int = 0


def total_variance(estimator, theta, replicates: int, key: jax.Array) -> tuple[float, float]:
    """``(total variance, its standard error)`` of whole-episode estimates of
    ``estimator`` (one antithetic pair, no stagger) at ``theta``. The standard
    error is the delta-method one of the trace, from the per-replicate squared
    deviations."""
    system = estimator.system
    calls = system.horizon // estimator.trunc_len

    def one(k):
        k_init, k_calls = jax.random.split(k)

        def body(carry, kk):
            state, total = carry
            grad, state, _ = estimator.estimate(theta, state, kk)
            return (state, jax.tree.map(jnp.add, total, grad)), None

        zeros = jax.tree.map(jnp.zeros_like, theta)
        start = (estimator.init(theta, k_init), zeros)
        (_, total), _ = jax.lax.scan(body, start, jax.random.split(k_calls, calls))
        return jax.tree.map(lambda x: x / calls, total)

    grads = jax.jit(jax.vmap(one))(jax.random.split(key, replicates))
    flat = np.concatenate(
        [np.asarray(g, np.float64).reshape(replicates, -1) for g in jax.tree.leaves(grads)], 1
    )
    squared = ((flat - flat.mean(0)) ** 2).sum(1) * replicates / (replicates - 1)
    return float(squared.mean()), float(squared.std(ddof=1) / np.sqrt(replicates))


def run(
    study: VarianceStudy,
    configs_dir: pathlib.Path,
    progress: Callable[[str], None] = print,
    overrides: Sequence[str] = (),
) -> dict:
    """``{"runs": {estimator: {"unrolls", "trunc_len", "total_variance", "stderr"}},
    "horizon"}`` at the config's initial theta (``train.seed``)."""
    runs: dict[str, dict[str, list]] = {}
    horizon = config_lib.load(configs_dir / f"{study.config}.toml", list(overrides)).task.horizon
    unrolls = [n for n in study.unrolls if horizon % n == 0]  # others do not cut T evenly
    if not unrolls:
        raise config_lib.ConfigError(f"none of the unrolls {study.unrolls} divides T = {horizon}")
    for kind in study.estimators:
        runs[kind] = {"unrolls": [], "trunc_len": [], "total_variance": [], "stderr": []}
        for n in unrolls:
            config = config_lib.load(
                configs_dir / f"{study.config}.toml",
                [*overrides, f"estimator.kind={kind}", f"estimator.trunc_len={horizon // n}",
                 "estimator.num_particles=2", "estimator.antithetic=true",
                 "estimator.stagger=false"],
            )  # fmt: skip
            system = build_system(config)
            estimator = build_estimator(config, system)
            theta = system.init_theta(jax.random.PRNGKey(config.train.seed))
            progress(f"{study.config}: {kind}, {n} unrolls of K = {horizon // n}")
            key = jax.random.fold_in(jax.random.PRNGKey(study.seed), n)  # same keys per estimator
            var, se = total_variance(estimator, theta, study.replicates, key)
            for name, value in (("unrolls", n), ("trunc_len", horizon // n),
                                ("total_variance", var), ("stderr", se)):  # fmt: skip
                runs[kind][name].append(value)
    return {"study": study, "runs": runs, "horizon": horizon}


def summary(result: dict) -> dict:
    return {
        kind: {
            **r,
            "loss": f"total variance of the whole-episode estimate, T = {result['horizon']}",
        }
        for kind, r in result["runs"].items()
    }


def plot(name: str, result: dict, out_dir: pathlib.Path, names: dict[str, str]) -> pathlib.Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 4.2))
    colours = {k: f"C{i}" for i, k in enumerate(names)}
    for kind, r in result["runs"].items():
        var, se = np.asarray(r["total_variance"]), np.asarray(r["stderr"])
        ax.errorbar(r["unrolls"], var, yerr=2 * se, marker="o", ms=3, lw=1.2, capsize=2,
                    color=colours.get(kind), label=names.get(kind, kind))  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"number of unrolls T / K (T = {result['horizon']})")
    ax.set_ylabel("total variance of the gradient estimate")
    ax.set_title(
        f"{name.replace('_', ' ')}: {result['study'].replicates} antithetic pairs per point "
        "(bars: 2 standard errors)",
        fontsize=9,
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
