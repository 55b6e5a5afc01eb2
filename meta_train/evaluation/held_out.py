"""Evaluate an optimizer on held-out tasks against tuned hand-designed baselines.

For every task of a suite (``tasks.suites.HELD_OUT_SUITES``) the learned
optimizer and each baseline train ``seeds`` fresh models for ``steps`` steps
(``long_steps`` for the suite's ``LONG_RUNS``),
through the same inner step as meta-training (``systems.inner_training``).
Baselines (Adam, SGD with momentum) have their learning rate chosen per task
from a log grid by the final validation loss (mean over seeds); the whole grid
and all seeds run as one vectorised program (theta = log learning rate is just
another batch axis). Reported per task and optimizer, as mean and std over
seeds: train-loss curve (the loss of each step's training batch, subsampled),
validation-loss curve (a fixed validation subset, ``val_points`` times), final
and mean losses, validation and test accuracy, seconds per step (compiled
run time, all seeds together, compilation excluded) and the seeds that
diverged (``diverged_seeds``). Each learned optimizer also gets its speedup
over tuned Adam (``speedup``). With ``tune_learned`` each learned optimizer runs
over ``LEARNED_SCALE_GRID``, multipliers on its update (``learned_opt.step_scaled``):
multiplier 1 is recorded under its name, the best per task, chosen as the
baselines' rates are, as ``"NAME (tuned)"``: the comparison Celo2 makes.

The tuned baselines of an earlier evaluation can be reused (``reuse``: its
``eval.json``) for every task whose spec, steps, seeds, validation points and
learning-rate grid match: they are deterministic given those, and they are
most of an evaluation's time.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from learned_opt import SGDM, Adam, LearnedOptimizer
from learned_opt.step_scaled import StepScaled
from meta_train.systems.inner_training import InnerState, init_inner, inner_step
from tasks.base import EvaluableTask, TaskSpec

BASELINE_GRIDS = {
    "adam": (Adam(), np.logspace(-4, -1, 7)),
    "sgdm": (SGDM(), np.logspace(-3, 0, 7)),
}
# Multipliers on a learned rule's update (``tune_learned``): 5 points over 2 decades
# around its meta-trained step, mostly below it (a smaller step is the early
# stopping an overfitting task wants; a much larger one leaves what it learned).
LEARNED_SCALE_GRID = np.logspace(-1.5, 0.5, 5)  # holds 1: the rule as meta-trained
MAX_EVAL_EXAMPLES = 2000
CURVE_POINTS = 100


def _eval_examples(task: EvaluableTask, split: str):
    return jax.tree.map(lambda a: a[:MAX_EVAL_EXAMPLES], task.eval_set(split))


def _validation_steps(num_steps: int, val_points: int) -> list[int]:
    """The steps after which the validation loss is measured: every ``block`` steps
    and after the last step."""
    block = max(1, num_steps // val_points)
    steps = list(range(block, num_steps + 1, block))
    return steps if steps[-1] == num_steps else [*steps, num_steps]


def _curves_fn(
    task: EvaluableTask, lopt: LearnedOptimizer, num_seeds: int, num_steps: int, val_points: int
):
    """A jittable fn(thetas [L, ...], key) -> dict of [L, seeds, ...] arrays."""
    block = max(1, num_steps // val_points)
    blocks = num_steps // block
    val_set, test_set = _eval_examples(task, "validation"), _eval_examples(task, "test")
    accuracy = getattr(task, "accuracy", None)  # classification tasks only

    def one(theta, key):
        k_init, k_steps = jax.random.split(key)

        def step(state: InnerState, k):
            return inner_step(task, lopt, theta, state, task.batch(k, "train"))

        def run_block(state: InnerState, keys):
            state, losses = jax.lax.scan(step, state, keys)
            return state, (losses, task.loss(state.params, val_set))

        keys = jax.random.split(k_steps, num_steps)
        state = init_inner(task, lopt, theta, k_init, num_steps)
        state, (train, val) = jax.lax.scan(
            run_block, state, keys[: blocks * block].reshape(blocks, block, -1)
        )
        train, val = train.reshape(-1), val
        if num_steps > blocks * block:  # the steps past the last whole block
            state, (rest, last) = run_block(state, keys[blocks * block :])
            train, val = jnp.concatenate([train, rest]), jnp.append(val, last)
        out = {"train_loss": train, "val_loss": val}
        if accuracy is not None:
            out["val_accuracy"] = accuracy(state.params, val_set)
            out["test_accuracy"] = accuracy(state.params, test_set)
        return out

    seeds = jax.random.split(jax.random.PRNGKey(0), num_seeds)  # same seeds for every optimizer
    curves = jax.vmap(lambda th: jax.vmap(lambda k: one(th, k))(seeds))
    return curves, np.asarray(_validation_steps(num_steps, val_points))


def run_optimizer(
    task, lopt, thetas, num_seeds: int, num_steps: int, val_points: int
) -> tuple[dict, float, np.ndarray]:
    """Train with every theta in ``thetas`` (leading axis L). Returns host arrays,
    seconds per step (of the whole batch of runs, compile excluded), val steps."""
    fn, val_steps = _curves_fn(task, lopt, num_seeds, num_steps, val_points)
    compiled = jax.jit(fn).lower(thetas).compile()
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(thetas))
    seconds = (time.perf_counter() - t0) / num_steps
    return jax.device_get(out), seconds, val_steps


def _finite_or_none(x):
    x = float(x)
    return x if math.isfinite(x) else None


def _summarise(
    out: dict, index: int, val_steps: np.ndarray, num_steps: int, seconds: float
) -> dict:
    """Per-optimizer record for the runs at grid ``index``: mean/std over seeds."""
    train = out["train_loss"][index]  # [seeds, steps]
    val = out["val_loss"][index]  # [seeds, val_points]
    stride = max(1, num_steps // CURVE_POINTS)
    idx = np.arange(stride - 1, num_steps, stride)
    tail = max(1, num_steps // 10)

    def ms(a):
        return {"mean": _finite_or_none(np.mean(a)), "std": _finite_or_none(np.std(a))}

    return {
        "curve_steps": (idx + 1).tolist(),
        "train_loss_mean": [_finite_or_none(v) for v in train[:, idx].mean(0)],
        "train_loss_std": [_finite_or_none(v) for v in train[:, idx].std(0)],
        "val_steps": val_steps.tolist(),
        "val_loss_mean": [_finite_or_none(v) for v in val.mean(0)],
        "val_loss_std": [_finite_or_none(v) for v in val.std(0)],
        "final_train_loss": ms(train[:, -tail:].mean(1)),
        "mean_train_loss": ms(train.mean(1)),
        "final_val_loss": ms(val[:, -1]),
        "mean_val_loss": ms(val.mean(1)),
        "val_accuracy": ms(out["val_accuracy"][index]) if "val_accuracy" in out else None,
        "test_accuracy": ms(out["test_accuracy"][index]) if "test_accuracy" in out else None,
        "seconds_per_step": seconds,
        "steps": num_steps,
        "diverged_seeds": diverged_seeds(train, val),
    }


def tuned_name(name: str) -> str:
    """The record of learned optimizer ``name`` with its tuned multiplier."""
    return f"{name} (tuned)"


def _repeat_for_grid(x: Any) -> jax.Array:
    return jnp.stack([jnp.asarray(x)] * len(LEARNED_SCALE_GRID))


def _best_of_grid(
    out: dict, grid: np.ndarray, val_steps: np.ndarray, num_steps: int, seconds: float
) -> tuple[dict, int]:
    """The record of the grid point with the lowest mean final validation loss (a
    non-finite one never wins), with every point's in ``sweep`` and the worst."""
    final_val = np.nan_to_num(out["val_loss"][:, :, -1].mean(1), nan=np.inf)
    best = int(np.argmin(final_val))
    summary = _summarise(out, best, val_steps, num_steps, seconds / len(grid))
    summary["sweep"] = {f"{v:.3g}": _finite_or_none(x) for v, x in zip(grid, final_val)}
    summary["worst_grid_final_val_loss"] = _finite_or_none(np.max(final_val))
    return summary, best


EXPLOSION = 2.0  # a loss this many times the starting one has exploded


def diverged_seeds(train: np.ndarray, val: np.ndarray) -> int:
    """How many seeds (rows of ``train`` [seeds, steps] and ``val`` [seeds, points])
    diverged: a non-finite loss anywhere, or a training loss averaged over a
    hundredth of the run, or a validation loss, above ``EXPLOSION`` times the
    training loss of the first hundredth."""
    block = max(1, train.shape[1] // 100)
    blocks = train[:, : block * (train.shape[1] // block)].reshape(len(train), -1, block).mean(-1)
    with np.errstate(invalid="ignore"):
        start = blocks[:, :1]
        bad = (
            ~np.isfinite(train).all(1)
            | ~np.isfinite(val).all(1)
            | (blocks > EXPLOSION * start).any(1)
            | (val > EXPLOSION * start).any(1)
        )
    return int(bad.sum())


class Speedup(NamedTuple):
    """``value``: Adam's steps to reach the target over the optimizer's steps; with
    ``censored`` Adam never reached it, and the speedup is only known to exceed
    ``value`` (Adam's whole run over the optimizer's steps)."""

    value: float
    censored: bool


def speedup(
    adam_steps: Sequence[int], adam_val_loss: Sequence[float | None], target: float, steps: int
) -> Speedup:
    """The speedup over Adam of an optimizer whose final validation loss after ``steps``
    steps is ``target``, from Adam's validation curve (``adam_val_loss`` at
    ``adam_steps``; None for a non-finite point, which never counts as reached)."""
    for s, v in zip(adam_steps, adam_val_loss, strict=True):
        if v is not None and v <= target:
            return Speedup(s / steps, False)
    return Speedup(max(adam_steps) / steps, True)


def reusable_baseline(
    earlier: dict | None, task_name: str, record: dict, name: str, seeds: int, val_points: int
) -> dict | None:
    """Baseline ``name``'s record for ``task_name`` from an earlier evaluation's
    results, if it was run exactly as it would be now (module doc); else None."""
    if not earlier or earlier.get("seeds") != seeds:
        return None
    old = earlier.get("tasks", {}).get(task_name)
    if not isinstance(old, dict) or old.get("steps") != record["steps"]:
        return None
    if old.get("spec") != json.loads(json.dumps(record["spec"])):
        return None
    found = old.get("optimizers", {}).get(name)
    grid = [f"{lr:.3g}" for lr in BASELINE_GRIDS[name][1]]
    if not isinstance(found, dict) or list(found.get("sweep", {})) != grid:
        return None
    if found.get("val_steps") != _validation_steps(record["steps"], val_points):
        return None
    return found


def evaluate_suite(
    specs: dict[str, TaskSpec],
    optimizers: dict[str, tuple[Any, Any]],
    *,
    steps: int,
    seeds: int,
    val_points: int = 20,
    long_steps: dict[str, int] | None = None,
    progress: Callable[[str], None] | None = None,
    reuse: dict | None = None,
    tune_learned: bool = False,
) -> dict:
    """``optimizers``: name -> (lopt, theta) evaluated as given (and, with
    ``tune_learned``, also as ``"NAME (tuned)"``: the best multiplier of
    ``LEARNED_SCALE_GRID`` on its update); baselines are added tuned (or taken
    from ``reuse``, an earlier evaluation's results, where they match:
    ``results["reused"]`` counts them). ``long_steps`` maps a task's name to its
    own step count."""
    results: dict[str, Any] = {"steps": steps, "seeds": seeds, "tasks": {}, "reused": 0}
    for task_name, spec in specs.items():
        task = spec.build()
        n = (long_steps or {}).get(task_name, steps)
        record: dict[str, Any] = {
            "spec": {"kind": type(spec).__name__, **dataclasses.asdict(spec)},  # type: ignore[call-overload]
            "steps": n,
            "optimizers": {},
        }
        for name, (lopt, theta) in optimizers.items():
            if not tune_learned:
                thetas = jax.tree.map(lambda x: jnp.asarray(x)[None], theta)
                out, sec, vs = run_optimizer(task, lopt, thetas, seeds, n, val_points)
                record["optimizers"][name] = _summarise(out, 0, vs, n, sec)
                if progress:
                    progress(f"{task_name}: {name}")
                continue
            # One program for the whole grid; its multiplier 1 is the rule as trained.
            grid = LEARNED_SCALE_GRID
            thetas = {
                "rule": jax.tree.map(_repeat_for_grid, theta),
                "log_scale": jnp.log(jnp.asarray(grid, jnp.float32)),
            }
            out, sec, vs = run_optimizer(task, StepScaled(lopt), thetas, seeds, n, val_points)
            as_trained = int(np.argmin(np.abs(np.log(grid))))
            record["optimizers"][name] = _summarise(out, as_trained, vs, n, sec / len(grid))
            summary, best = _best_of_grid(out, grid, vs, n, sec)
            summary["step_scale"] = float(grid[best])
            record["optimizers"][tuned_name(name)] = summary
            if progress:
                progress(f"{task_name}: {name} (tuned: x{grid[best]:.3g})")
        for name, (base, grid) in BASELINE_GRIDS.items():
            cached = reusable_baseline(reuse, task_name, record, name, seeds, val_points)
            if cached is not None:
                record["optimizers"][name] = cached
                results["reused"] += 1
                if progress:
                    progress(f"{task_name}: {name} (reused)")
                continue
            thetas = {"log_lr": jnp.log(jnp.asarray(grid, jnp.float32))}
            out, sec, vs = run_optimizer(task, base, thetas, seeds, n, val_points)
            summary, best = _best_of_grid(out, grid, vs, n, sec)
            summary["learning_rate"] = float(grid[best])
            record["optimizers"][name] = summary
            if progress:
                progress(f"{task_name}: {name} (lr {grid[best]:.3g})")
        adam = record["optimizers"]["adam"]
        for name in record["optimizers"]:
            if name in BASELINE_GRIDS:
                continue
            target = record["optimizers"][name]["final_val_loss"]["mean"]
            if target is not None:
                record["optimizers"][name]["speedup_over_adam"] = speedup(
                    adam["val_steps"], adam["val_loss_mean"], target, n
                )._asdict()
        results["tasks"][task_name] = record
    return results


def merge(parts: Sequence[dict]) -> dict:
    """One evaluation from several of the same suite, steps and seeds (e.g. one per
    learned optimizer, run side by side on separate cores or machines): every
    task's optimizers together. The tuned baselines must agree (they are
    deterministic given the task, steps and seeds); a learned optimizer's name
    may appear in one part only. ``ValueError`` says what differs."""
    if not parts:
        raise ValueError("nothing to merge")
    first = parts[0]
    merged = {**first, "tasks": {}, "reused": sum(p.get("reused", 0) for p in parts)}
    merged["optimizers"] = {}
    for part in parts:
        for key in ("steps", "seeds", "suite"):
            if part.get(key) != first.get(key):
                theirs, ours = part.get(key), first.get(key)
                raise ValueError(f"the evaluations differ in {key}: {ours} and {theirs}")
        if list(part["tasks"]) != list(first["tasks"]):
            raise ValueError("the evaluations ran different tasks")
        merged["optimizers"].update(part.get("optimizers", {}))
    for task_name in first["tasks"]:
        record = {**first["tasks"][task_name], "optimizers": {}}
        for part in parts:
            theirs = part["tasks"][task_name]
            if theirs["steps"] != record["steps"] or theirs["spec"] != record["spec"]:
                raise ValueError(f"{task_name} was run differently in the evaluations")
            for name, r in theirs["optimizers"].items():
                mine = record["optimizers"].get(name)
                if name in BASELINE_GRIDS and mine is not None:
                    if mine.get("sweep") != r.get("sweep"):
                        raise ValueError(f"{task_name}: the tuned {name} runs differ")
                    continue
                if mine is not None:
                    raise ValueError(f"{task_name}: two optimizers named {name!r}")
                record["optimizers"][name] = r
        # learned optimizers first, then the baselines, as one evaluation orders them
        order = sorted(record["optimizers"], key=lambda n: n in BASELINE_GRIDS)
        record["optimizers"] = {n: record["optimizers"][n] for n in order}
        merged["tasks"][task_name] = record
    return merged


def write_outputs(results: dict, out_dir: str | pathlib.Path) -> list[pathlib.Path]:
    """``eval.json``, one PNG per task and ``summary.png``; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(results, indent=1))
    pngs = []
    colours: dict[str, str] = {}
    for task_name, record in results["tasks"].items():
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for name, r in record["optimizers"].items():
            c = colours.setdefault(name, f"C{len(colours)}")
            label = name + (f" (lr {r['learning_rate']:.2g})" if "learning_rate" in r else "")
            label += f" x{r['step_scale']:.2g}" if "step_scale" in r else ""
            for ax, xs, key in (
                (axes[0], r["curve_steps"], "train_loss"),
                (axes[1], r["val_steps"], "val_loss"),
            ):
                mean = np.array([np.nan if v is None else v for v in r[f"{key}_mean"]])
                std = np.array([np.nan if v is None else v for v in r[f"{key}_std"]])
                ax.plot(xs, mean, color=c, label=label)
                ax.fill_between(xs, mean - std, mean + std, color=c, alpha=0.2)
        for ax, title in zip(axes, ("train loss", "validation loss")):
            ax.set_xlabel("step")
            ax.set_title(title)
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=8)
        fig.suptitle(task_name)
        fig.tight_layout()
        path = out_dir / f"{task_name}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        pngs.append(path)

    # Tasks' losses differ in scale: each bar is a final validation loss over tuned
    # Adam's on that task (below 1 beats it); a black tick marks Adam's worst grid rate.
    tasks_ = list(results["tasks"])
    names = [n for n in results["tasks"][tasks_[0]]["optimizers"] if n != "adam"]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(tasks_)), 4.5))
    width = 0.8 / len(names)
    x = np.arange(len(tasks_))

    def over_adam(t: str, value: float | None) -> float:
        adam = results["tasks"][t]["optimizers"]["adam"]["final_val_loss"]["mean"]
        return np.nan if value is None or not adam else value / adam

    for j, name in enumerate(names):
        records = [results["tasks"][t]["optimizers"][name]["final_val_loss"] for t in tasks_]
        vals = [over_adam(t, r["mean"]) for t, r in zip(tasks_, records)]
        errs = [
            over_adam(t, r["std"]) if r["mean"] is not None else 0 for t, r in zip(tasks_, records)
        ]
        ax.bar(x + j * width, vals, width, yerr=errs, label=name, color=colours.get(name))
    worst = [
        over_adam(t, results["tasks"][t]["optimizers"]["adam"].get("worst_grid_final_val_loss"))
        for t in tasks_
    ]
    ax.scatter(x + 0.4 - width / 2, worst, marker="_", s=300, color="k",
               label="adam, worst grid lr", zorder=3)  # fmt: skip
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(x + 0.4 - width / 2)
    ax.set_xticklabels(tasks_, rotation=25, ha="right", fontsize=7)
    ax.set_ylabel("final validation loss / tuned Adam's")
    title = f"{results['seeds']} seeds; lower is better; below the dashed line beats tuned Adam"
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.grid(axis="y", alpha=0.3, which="both")
    fig.tight_layout()
    path = out_dir / "summary.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return pngs + [path]


def table(results: dict) -> str:
    """A markdown table: per task its steps, each optimizer's final validation loss
    (mean +- std over seeds, test accuracy where the task classifies, the tuned
    learning rate of baselines) and each evaluated optimizer's speedup over
    tuned Adam; then, per evaluated optimizer, the tasks where it beats tuned
    Adam and those where it is worse than Adam at its worst grid learning rate."""
    tasks_ = list(results["tasks"])
    names = list(results["tasks"][tasks_[0]]["optimizers"])
    learned = [n for n in names if n not in BASELINE_GRIDS]
    header = ["task", "steps", *names, *(f"{n} speedup" for n in learned)]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for t in tasks_:
        record = results["tasks"][t]
        cells = [t, str(record.get("steps", results["steps"]))]
        for n in names:
            r = record["optimizers"][n]
            v, a = r["final_val_loss"], r["test_accuracy"]
            lr = f" @{r['learning_rate']:.2g}" if "learning_rate" in r else ""
            lr += f" x{r['step_scale']:.2g}" if "step_scale" in r else ""
            acc = f" ({100 * a['mean']:.1f}%)" if a and a["mean"] is not None else ""
            cells.append(
                f"{v['mean']:.3f}±{v['std']:.3f}{acc}{lr}" if v["mean"] is not None else "diverged"
            )
        for n in learned:
            sp = record["optimizers"][n].get("speedup_over_adam")
            cells.append(
                "" if sp is None else (">" if sp["censored"] else "") + f"{sp['value']:.2f}"
            )
        lines.append("| " + " | ".join(cells) + " |")
    for n in learned:
        wins, bad, diverged, speedups = [], [], [], []
        for t in tasks_:
            ours = results["tasks"][t]["optimizers"][n]
            adam = results["tasks"][t]["optimizers"]["adam"]
            mine, tuned = ours["final_val_loss"]["mean"], adam["final_val_loss"]["mean"]
            if mine is not None and tuned is not None and mine < tuned:
                wins.append(t)
            worst = adam.get("worst_grid_final_val_loss")
            if mine is None or (worst is not None and mine > worst):
                bad.append(t)
            if ours.get("diverged_seeds"):
                diverged.append(t)
            if ours.get("speedup_over_adam"):
                speedups.append(ours["speedup_over_adam"]["value"])
        median = f"; median speedup {np.median(speedups):.2f}" if speedups else ""
        lines.append(
            f"\n{n}: lower final validation loss than tuned Adam on {len(wins)}/{len(tasks_)} "
            f"tasks; worse than Adam at its worst grid learning rate on {len(bad)}"
            + (f" ({', '.join(bad)})" if bad else "")
            + f"; diverged on {len(diverged)}"
            + (f" ({', '.join(diverged)})" if diverged else "")
            + median
        )
    return "\n".join(lines)
