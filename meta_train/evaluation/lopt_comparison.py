"""Estimators compared on meta-training a learned optimizer, over several initialisations.

The PES paper's learned-optimizer experiment: the same config meta-trained
with each estimator (``estimator.kind``) from ``seeds`` random
initialisations of the learned optimizer (``train.seed`` = 0, 1, ...; it
also seeds the particles), each run one compiled scan
(``training.scan_loop``). Every ``eval_every`` outer steps the run's theta is
judged by the **meta-loss**: the mean inner loss over whole episodes of the
full horizon T, on ``eval_seeds`` fixed seeds (``evaluation.fixed_seeds``,
the same seeds for every run and theta), whatever truncation the estimator
trained with.
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
from meta_train.evaluation.fixed_seeds import EVAL_KEY, training_curves
from meta_train.training import scan_loop


@dataclasses.dataclass(frozen=True)
class LOptComparison:
    config: str  # a shipped config's name
    estimators: tuple[str, ...] = ("pes", "truncated_es")
    seeds: int = 3
    eval_every: int = 25  # outer steps between meta-loss evaluations
    eval_seeds: int = 4


def meta_loss_curve(system, thetas, every: int, num_seeds: int) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, meta-losses)`` of the thetas at outer steps 0, every, 2 every, ...
    and the last (``thetas`` has a leading axis of outer steps + 1)."""
    n = jax.tree.leaves(thetas)[0].shape[0]
    steps = np.unique(np.r_[np.arange(0, n, every), n - 1])
    picked = jax.tree.map(lambda a: a[steps], thetas)
    key = jax.random.PRNGKey(EVAL_KEY)

    @jax.jit
    def losses(theta):
        return jnp.mean(training_curves(system, theta, key, num_seeds, system.horizon))

    # One theta at a time: a whole-horizon episode per seed is the memory unit.
    values = [float(losses(jax.tree.map(itemgetter(i), picked))) for i in range(len(steps))]
    return steps, np.asarray(values)


def run(
    exp: LOptComparison,
    configs_dir: pathlib.Path,
    progress: Callable[[str], None] = print,
    overrides: Sequence[str] = (),
) -> dict:
    """``{"runs": {estimator: [per seed {"steps", "meta_loss", "train_meta_loss"}]}}``."""
    runs: dict[str, list[dict]] = {}
    horizon = trunc_len = None
    for kind in exp.estimators:
        runs[kind] = []
        for seed in range(exp.seeds):
            progress(f"{exp.config}: {kind}, initialisation {seed}")
            config = config_lib.load(
                configs_dir / f"{exp.config}.toml",
                [*overrides, f"estimator.kind={kind}", f"train.seed={seed}"],
            )
            system, traj = scan_loop.run(config)
            steps, losses = meta_loss_curve(system, traj.thetas, exp.eval_every, exp.eval_seeds)
            runs[kind].append(
                {
                    "steps": steps.tolist(),
                    "meta_loss": losses.tolist(),
                    "train_meta_loss": np.asarray(traj.meta_losses).tolist(),
                }
            )
            horizon, trunc_len = system.horizon, config.estimator.trunc_len
    return {"experiment": exp, "runs": runs, "horizon": horizon, "trunc_len": trunc_len}


def summary(result: dict) -> dict:
    """Per estimator: each initialisation's final meta-loss, their mean and spread."""
    out = {}
    for kind, seeds in result["runs"].items():
        finals = [s["meta_loss"][-1] for s in seeds]
        out[kind] = {
            "final_meta_loss": finals,
            "mean": float(np.mean(finals)),
            "std": float(np.std(finals)),
            "loss": f"mean inner loss over T = {result['horizon']}",
        }
    return out


def plot(name: str, result: dict, out_dir: pathlib.Path, labels: dict[str, str]) -> pathlib.Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for j, (kind, seeds) in enumerate(result["runs"].items()):
        for i, s in enumerate(seeds):
            ax.plot(s["steps"], s["meta_loss"], color=f"C{j}", lw=1.2, alpha=0.85,
                    label=labels.get(kind, kind) if i == 0 else None)  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("outer step")
    ax.set_ylabel(f"meta-loss: mean inner loss over T = {result['horizon']}")
    ax.set_title(
        f"{name.replace('_', ' ')}: K = {result['trunc_len']}, "
        f"{len(next(iter(result['runs'].values())))} initialisations each",
        fontsize=10,
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
