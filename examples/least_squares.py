"""A user's task: least-squares regression, ``min_W mean ||x W - y||^2``.

Meta-train a learned optimizer on it from the repository root:

    lopt meta-train --config examples/least_squares.toml

The data are drawn once from a fixed seed: inputs ``x ~ N(0, I_d)`` scaled
per feature (condition number ``cond``), targets ``y = x W* + noise`` with
``|W*|`` large enough that the initial loss is about 30, the scale at which a
fixed cross-entropy cap used to flatten a regression's loss into a constant.
The meta-loss is normalised by each episode's initial loss (``task.meta_loss_norm
= "ratio"``), so the scale does not matter.

The task (``tasks/regression.py``, 70 lines, a template for your own) follows
``tasks.base.Task``: ``name``, ``init(key)``, ``loss(params, batch)``,
``batch(key, split)``; it is a registered pytree (``register_dataclass``) so
its arrays are arguments of the compiled programs, not constants baked into
them.
"""

from __future__ import annotations

from tasks.regression import LeastSquaresTask, least_squares


def make_task(
    dim: int = 16, outputs: int = 4, cond: float = 10.0, noise: float = 0.5, seed: int = 0
) -> LeastSquaresTask:
    return least_squares(dim, outputs, cond, noise, seed)
