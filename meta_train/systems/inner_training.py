"""One step of inner training with a (learned) optimizer: shared by meta-training and evaluation.

``LearnedOptimizerSystem.step`` (meta-training) and the held-out evaluation
(``meta_train.evaluation.held_out``) both train a task's parameters through
``inner_step``, so an optimizer is evaluated on exactly the update it was
meta-trained with.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax

from learned_opt.base import LearnedOptimizer, init_for_run
from tasks.base import Task


class InnerState(NamedTuple):
    params: Any
    opt_state: Any


def init_inner(
    task: Task, lopt: LearnedOptimizer, theta: Any, key: jax.Array, num_steps: int
) -> InnerState:
    """Fresh parameters of ``task`` and the optimizer's state for a run of
    ``num_steps`` updates (the episode's horizon; read by horizon-aware rules)."""
    params = task.init(key)
    return InnerState(params, init_for_run(lopt, theta, params, num_steps))


def inner_step(
    task: Task, lopt: LearnedOptimizer, theta: Any, state: InnerState, batch: Any
) -> tuple[InnerState, jax.Array]:
    """Gradient of the training loss on ``batch``, the optimizer's update, applied.

    Returns the new state and the training loss *before* the update. The named
    scopes label the compiled program's parts (``bench/w1_profile.py``).
    """
    with jax.named_scope("inner_gradient"):
        loss, grads = jax.value_and_grad(task.loss)(state.params, batch)
    with jax.named_scope("learned_optimizer"):
        updates, opt_state = lopt.update(theta, state.opt_state, grads, state.params, loss=loss)
        params = optax.apply_updates(state.params, updates)
    return InnerState(params, opt_state), loss
