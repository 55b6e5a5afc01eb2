"""Paper-style figures of the toy experiments: ``lopt figures [--out DIR]``.

For each experiment (a shipped config) every listed estimator meta-trains from
the same start with the config's settings (``--set estimator.kind=...``), as one
compiled scan (``meta_train.training.scan_loop``). Drawn as PNG:

* ``influence_balancing.png``: theta and the long-run loss against outer iteration;
* ``toy_regression.png``: summed meta-loss against outer iteration, and the
  trajectories of theta over the meta-loss heatmap;
* ``lr_schedule.png``: expected loss against outer iteration, trajectories over
  the heatmap of the exact expected loss, and the learned schedules;
* ``lopt_pes_vs_tes.png``: the meta-loss of a learned optimizer meta-trained by
  PES and by truncated ES from several initialisations, against outer step;
* ``lr_schedule_mlp.png``: a piecewise-linear schedule of SGD on an MLP over
  T = 5000, meta-trained on the validation loss and on the validation error
  (no gradient) at K = 10 and 100: the whole-horizon objective against outer
  step, and the learned schedules (both ``evaluation.estimator_comparison``);
* ``control_pes_vs_es.png``: a policy on Pendulum meta-trained by PES with
  partial unrolls, ES on whole episodes and truncated ES at equal budgets of
  environment steps: mean return against environment steps;
* ``char_rnn_variance.png``: the total variance of PES, NRES and truncated ES
  estimates for a character-level RNN against the number of unrolls
  (``evaluation.variance``).

``summary.json`` holds each estimator's final theta (toys) and loss; drawing
some experiments keeps the others' entries.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from meta_train.evaluation import estimator_comparison, variance
from meta_train.evaluation.estimator_comparison import Comparison, Variant
from meta_train.systems.lr_schedule import noisy_quadratic_expected_loss
from meta_train.training import scan_loop

NAMES = {
    "pes": "PES",
    "nres": "NRES",
    "truncated_es": "Truncated ES",
    "tbptt": "TBPTT",
    "full_es": "Full ES",
}


@dataclasses.dataclass(frozen=True)
class Experiment:
    config: str
    estimators: tuple[str, ...]
    loss_name: str
    loss: Callable  # (system) -> a jittable theta -> scalar, the curve to plot


def _ib_loss(system):
    # The loss at the fixed point s = (I - A)^-1 theta * sign, reached after a few
    # dozen steps: what a never-reset run pays in the long run.
    return lambda th: 0.5 * (th[0] / system.optimum - 1.0) ** 2


EXPERIMENTS = {
    "influence_balancing": Experiment(
        "influence_balancing", ("pes", "nres", "truncated_es", "tbptt"), "long-run loss", _ib_loss
    ),
    "toy_regression": Experiment(
        "toy_regression",
        ("pes", "nres", "full_es", "truncated_es", "tbptt"),
        "summed loss over T = 100",
        lambda s: s.full_horizon_sum,
    ),
    "lr_schedule": Experiment(
        "lr_schedule",
        ("pes", "nres", "truncated_es", "tbptt"),
        "expected mean loss over T",
        lambda s: lambda th: noisy_quadratic_expected_loss(s, th),
    ),
}


def _schedule_variant(objective: str, trunc_len: int, steps: int, learning_rate: float) -> Variant:
    """One meta-objective ("loss" or "accuracy") at one truncation; TBPTT only where
    there is a gradient (the accuracy's is zero)."""
    return Variant(
        f"{objective} K={trunc_len}",
        (
            f"task.meta_objective={objective}",
            f"estimator.trunc_len={trunc_len}",
            f"train.steps={steps}",
            f"train.learning_rate={learning_rate}",
        ),
        ("pes", "truncated_es", "tbptt") if objective == "loss" else ("pes", "truncated_es"),
        "mean validation " + ("loss" if objective == "loss" else "error (1 - accuracy)"),
    )


# Judged over whole horizons at fixed theta; minutes each, not seconds.
COMPARISONS = {
    "lopt_pes_vs_tes": Comparison("lopt_pes_vs_tes", seeds=3, objective="mean inner loss"),
    # Equal budgets at both truncations: 15,000 inner steps per particle (3 horizons),
    # and the same path length for Adam (steps x learning rate = 3).
    "lr_schedule_mlp": Comparison(
        "lr_schedule_mlp",
        variants=tuple(
            _schedule_variant(objective, k, steps, lr)
            for objective in ("loss", "accuracy")
            for k, steps, lr in ((10, 1500, 0.002), (100, 150, 0.02))
        ),
        eval_every=50,
    ),
    # Equal budgets of environment steps, each estimator at its best outer learning
    # rate of a grid (the summary keeps every rate's final return).
    "control_pes_vs_es": Comparison(
        "control",
        variants=(
            Variant("PES, K = 10", ("estimator.trunc_len=10",), ("pes",)),
            Variant("PES, K = 50", ("estimator.trunc_len=50",), ("pes",)),
            Variant("ES, whole episodes (K = T)", (), ("full_es",)),
            Variant("truncated ES, K = 10", ("estimator.trunc_len=10",), ("truncated_es",)),
            Variant("truncated ES, K = 50", ("estimator.trunc_len=50",), ("truncated_es",)),
        ),
        seeds=5,
        eval_every=20,  # evaluations per run (a budget)
        eval_seeds=8,
        budget=7_680_000,  # 300 whole-episode ES steps: 32 particles x 4 environments x 200
        learning_rates=(0.01, 0.03, 0.1, 0.3),
        y_axis="return",
        target_return=-200.0,  # swung up and held: the best policies reach about -140
    ),
}
VARIANCE_STUDIES = {"char_rnn_variance": variance.VarianceStudy("char_rnn")}
ALL = (*EXPERIMENTS, *COMPARISONS, *VARIANCE_STUDIES)
DEFAULT = tuple(EXPERIMENTS)  # `lopt figures` with no --experiments: the toys, about a minute


def _losses(fn, thetas: np.ndarray, chunk: int = 512) -> np.ndarray:
    f = jax.jit(jax.vmap(fn))
    return np.concatenate(
        [np.asarray(f(jnp.asarray(thetas[i : i + chunk]))) for i in range(0, len(thetas), chunk)]
    )


def run_experiment(
    name: str, configs_dir: pathlib.Path, progress=print, overrides: Sequence[str] = ()
) -> dict:
    exp = EXPERIMENTS[name]
    results = {}
    system = None
    for kind in exp.estimators:
        progress(f"{name}: {NAMES[kind]}")
        system, traj = scan_loop.run_named(
            configs_dir / f"{exp.config}.toml", [*overrides, f"estimator.kind={kind}"]
        )
        thetas = np.asarray(traj.thetas)
        results[kind] = {"thetas": thetas, "losses": _losses(exp.loss(system), thetas)}
    return {"system": system, "experiment": exp, "runs": results}


def _heatmap(ax, fn, xs, ys, log=True):
    grid = np.stack(np.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    values = _losses(fn, grid.astype(np.float32)).reshape(len(ys), len(xs))
    shown = np.log10(values) if log else values
    # Diverging corners would flatten the colours of the region that matters.
    mesh = ax.pcolormesh(
        xs,
        ys,
        shown,
        shading="auto",
        cmap="viridis",
        vmin=np.nanmin(shown),
        vmax=np.nanpercentile(shown, 80),
    )
    ax.figure.colorbar(mesh, ax=ax, label="log10 loss" if log else "loss")
    i = np.unravel_index(np.argmin(values), values.shape)
    ax.plot(xs[i[1]], ys[i[0]], "w*", ms=12, label=f"grid optimum {values[i]:.3g}")
    return values[i]


def plot(name: str, result: dict, out_dir: pathlib.Path) -> pathlib.Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exp, system, runs = result["experiment"], result["system"], result["runs"]
    ncols = 3 if name == "lr_schedule" else 2
    fig, axes = plt.subplots(1, ncols, figsize=(5.5 * ncols, 4.2))
    ax = axes[0]
    for kind, r in runs.items():
        ax.plot(r["losses"], label=NAMES[kind], lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("outer iteration")
    ax.set_ylabel(exp.loss_name)
    ax.legend()
    ax = axes[1]
    if name == "influence_balancing":
        for kind, r in runs.items():
            ax.plot(r["thetas"][:, 0], label=NAMES[kind], lw=1.2)
        ax.axhline(system.optimum, color="k", ls="--", lw=0.8, label="optimum -1/6")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_xlabel("outer iteration")
        ax.set_ylabel("theta")
    else:
        if name == "toy_regression":
            xs = ys = np.linspace(-6, 6, 121)
            ax.set_xlabel("theta0 (log lr at the start)")
            ax.set_ylabel("theta1 (log lr at the end)")
        else:
            xs, ys = np.linspace(-4, 0, 81), np.linspace(-0.2, 1.6, 73)
            ax.set_xlabel("theta0 (log initial lr)")
            ax.set_ylabel("theta1 (decay exponent)")
        _heatmap(ax, exp.loss(system), xs, ys)
        for kind, r in runs.items():
            t = r["thetas"]
            ax.plot(t[:, 0], t[:, 1], lw=1.2, label=NAMES[kind])
            ax.plot(t[-1, 0], t[-1, 1], "o", color=ax.lines[-1].get_color())
        ax.plot(*runs[next(iter(runs))]["thetas"][0], "ks", label="start")
    ax.legend(fontsize=8)
    if name == "lr_schedule":
        ax = axes[2]
        steps = np.arange(system.horizon)
        for kind, r in runs.items():
            lr = np.asarray(system.learning_rate(jnp.asarray(r["thetas"][-1]), steps))
            ax.plot(steps, lr, label=NAMES[kind])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("inner step t")
        ax.set_ylabel("learning rate")
        ax.set_title("learned schedules")
        ax.legend(fontsize=8)
    fig.suptitle(name.replace("_", " "))
    fig.tight_layout()
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw(
    names: list[str],
    out_dir: str | pathlib.Path,
    configs_dir: str | pathlib.Path,
    progress=print,
    overrides: Sequence[str] = (),
) -> dict:
    """Run and plot ``names``; returns the summary also written to ``summary.json``."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_path = out_dir / "summary.json"
    summary: dict = {}
    for name in names:
        if name in VARIANCE_STUDIES:
            result = variance.run(
                VARIANCE_STUDIES[name], pathlib.Path(configs_dir), progress, list(overrides)
            )
            path = variance.plot(name, result, out_dir, NAMES)
            summary[name] = variance.summary(result)
        elif name in COMPARISONS:
            result = estimator_comparison.run(
                COMPARISONS[name], pathlib.Path(configs_dir), progress, list(overrides)
            )
            path = estimator_comparison.plot(name, result, out_dir, NAMES)
            summary[name] = estimator_comparison.summary(result)
        else:
            result = run_experiment(name, pathlib.Path(configs_dir), progress, list(overrides))
            path = plot(name, result, out_dir)
            summary[name] = {
                kind: {
                    "final_theta": r["thetas"][-1].tolist(),
                    "final_loss": float(r["losses"][-1]),
                    "loss": result["experiment"].loss_name,
                }
                for kind, r in result["runs"].items()
            }
        progress(f"wrote {path}")
        # Read again as each experiment ends: another process may have drawn others since.
        summary_path.write_text(json.dumps({**_read_summary(summary_path), **summary}, indent=2))
    return summary


def _read_summary(path: pathlib.Path) -> dict:
    """The entries of experiments drawn before, which a new drawing keeps (none from
    a file that is missing or not a JSON object)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return old if isinstance(old, dict) else {}
