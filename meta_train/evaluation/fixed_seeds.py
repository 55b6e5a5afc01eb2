"""Evaluation during meta-training: episodes of the meta-training system at fixed seeds.

What ``metrics.jsonl``'s ``eval_loss`` / ``eval_final_loss`` are: the system's
own per-step loss L_t over fresh episodes run with a fixed theta, on the same
seeds for every run and every theta. (Held-out tasks against tuned baselines
are ``meta_train.evaluation.held_out``.)
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from meta_train.runtime import xla_options
from meta_train.systems.base import UnrolledSystem
from meta_train.systems.family import SystemFamily

EVAL_KEY = 20211  # fixed, so every run and every theta is judged on the same seeds


def training_curves(
    system: UnrolledSystem, theta: Any, key: jax.Array, num_seeds: int, num_steps: int
) -> jax.Array:
    """Per-step losses ``[num_seeds, num_steps]`` of fresh episodes run with ``theta``."""

    def one(k):
        k_init, k_steps = jax.random.split(k)

        def body(state, step_key):
            return system.step(theta, state, step_key)

        _, losses = jax.lax.scan(
            body, system.init(theta, k_init), jax.random.split(k_steps, num_steps)
        )
        return losses

    return jax.vmap(one)(jax.random.split(key, num_seeds))


@functools.cache
def _compiled_curves():  # built on first use: the options depend on the backend
    return xla_options.jit(training_curves, static_argnames=("num_seeds", "num_steps"))


def evaluate(
    system: UnrolledSystem | SystemFamily,
    theta: Any,
    num_seeds: int = 8,
    num_steps: int | None = None,
) -> dict:
    """Mean and final per-step loss over ``num_seeds`` fixed seeds.

    Episodes last ``num_steps``, else the system's ``eval_horizon``, else its
    horizon. A ``SystemFamily`` is evaluated member by member, and the results
    averaged with the family's weights.
    """
    if isinstance(system, SystemFamily):
        results = [evaluate(m, theta, num_seeds, num_steps) for m in system.members]
        return {key: sum(w * r[key] for w, r in zip(system.weights, results)) for key in results[0]}
    num_steps = num_steps or getattr(system, "eval_horizon", system.horizon)
    curves = _compiled_curves()(system, theta, jax.random.PRNGKey(EVAL_KEY), num_seeds, num_steps)
    return {"eval_loss": float(jnp.mean(curves)), "eval_final_loss": float(jnp.mean(curves[:, -1]))}
