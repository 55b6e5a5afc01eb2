"""A whole meta-training run as one compiled ``lax.scan``, for small systems.

The same outer iteration as ``lopt meta-train`` (``outer_step.outer_iteration``,
same keys, same outer optimizer), without logging or checkpoints, so a toy
experiment of thousands of outer steps runs in seconds. Used by the tests of
the paper's toy experiments and by ``lopt figures``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from meta_train import config as config_lib
from meta_train.builders import build_estimator, build_outer_optimizer, build_system
from meta_train.training.outer_step import init_meta_state, outer_iteration


class Trajectory(NamedTuple):
    thetas: Any  # theta before every outer step and after the last: leading axis steps + 1
    meta_losses: jax.Array  # [steps]: each call's mean per-step loss over its particles
    skipped: jax.Array  # [steps]: 1 where a non-finite estimate was not applied


def run(config: config_lib.Config) -> tuple[Any, Trajectory]:
    """``(system, trajectory)`` of ``config.train.steps`` outer iterations."""
    system = build_system(config)
    estimator = build_estimator(config, system)
    outer_opt = build_outer_optimizer(config)
    state = init_meta_state(estimator, outer_opt, config.train.seed)
    step = outer_iteration(outer_opt)

    @jax.jit
    def scan(estimator, state):
        def body(state, _):
            new, metrics = step(estimator, state)
            return new, (new.theta, metrics["meta_loss"], metrics["skipped"])

        return jax.lax.scan(body, state, None, length=config.train.steps)

    _, (thetas, losses, skipped) = scan(estimator, state)
    thetas = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), state.theta, thetas)
    return system, Trajectory(thetas, losses, skipped)


def run_named(path, overrides: Sequence[str] = ()) -> tuple[Any, Trajectory]:
    return run(config_lib.load(path, list(overrides)))
