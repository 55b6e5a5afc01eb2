"""Task augmentation: a task whose parameters, gradients and loss are rescaled.

Meta-training over augmented tasks keeps a learned optimizer from depending on
the scale of a task (learned_optimization's task augmentations, Celo's
training distribution). ``Augmentation(param_scale=r_p, grad_scale=r_g,
loss_scale=r_l)`` draws, per episode, factors log-uniform in ``[1/r, r]``
(``r = 1``: that part is off):

* one factor ``a_i`` per parameter tensor: the optimizer trains ``p_i`` while
  the model uses ``w_i = a_i p_i`` (``p_i`` starts at ``w_i0 / a_i``), so the
  optimizer sees parameters ``1/a_i`` and gradients ``a_i`` times the task's;
* one factor ``c`` on the gradient the optimizer sees (the loss is unchanged);
* one factor ``s`` on the loss, and so on its gradient.

``AugmentedTask`` is a Task (``tasks.base``): its ``loss`` is what the
optimizer trains, ``s`` times the task's loss with the gradient multiplied by
``c``; ``task_loss`` is the task's own loss of the same parameters, the one a
meta-loss should measure.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from tasks.base import Task


@jax.custom_vjp
def _scale_gradient(x: jax.Array, scale: jax.Array) -> jax.Array:
    return x


def _scale_gradient_fwd(x, scale):
    return x, scale


def _scale_gradient_bwd(scale, g):
    return (g * scale).astype(g.dtype), None


_scale_gradient.defvjp(_scale_gradient_fwd, _scale_gradient_bwd)


class Scales(NamedTuple):
    param: Any  # one float32 factor per parameter tensor (a tree like the params)
    grad: jax.Array  # float32 scalar
    loss: jax.Array  # float32 scalar


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Ranges of the factors: each is drawn log-uniform in ``[1/r, r]``; 1 is off."""

    param_scale: float = 1.0
    grad_scale: float = 1.0
    loss_scale: float = 1.0

    def __post_init__(self):
        for name in ("param_scale", "grad_scale", "loss_scale"):
            if not getattr(self, name) >= 1.0:
                raise ValueError(f"{name} must be >= 1 (factors are drawn in [1/r, r])")

    @property
    def enabled(self) -> bool:
        return (self.param_scale, self.grad_scale, self.loss_scale) != (1.0, 1.0, 1.0)

    def draw(self, key: jax.Array, params: Any) -> Scales:
        """Factors for one episode of a task with parameters shaped like ``params``."""
        k_param, k_grad, k_loss = jax.random.split(key, 3)
        leaves, treedef = jax.tree.flatten(params)

        def factors(k, r, n):
            u = jax.random.uniform(k, (n,), jnp.float32, -1.0, 1.0)
            return jnp.exp(u * math.log(r))

        param = factors(k_param, self.param_scale, len(leaves))
        return Scales(
            param=treedef.unflatten(list(param)),
            grad=factors(k_grad, self.grad_scale, 1)[0],
            loss=factors(k_loss, self.loss_scale, 1)[0],
        )


@functools.partial(jax.tree_util.register_dataclass, data_fields=["task", "scales"], meta_fields=[])
@dataclasses.dataclass(frozen=True)
class AugmentedTask:
    task: Task
    scales: Scales

    @property
    def name(self) -> str:
        return f"augmented_{self.task.name}"

    def model_params(self, params: Any) -> Any:
        """The task's own parameters ``w = a p``."""
        return jax.tree.map(lambda p, a: p * a.astype(p.dtype), params, self.scales.param)

    def init(self, key: jax.Array) -> Any:
        return jax.tree.map(
            lambda w, a: w / a.astype(w.dtype), self.task.init(key), self.scales.param
        )

    def loss(self, params: Any, batch: Any) -> jax.Array:
        params = jax.tree.map(lambda p: _scale_gradient(p, self.scales.grad), params)
        return self.scales.loss * self.task.loss(self.model_params(params), batch)

    def task_loss(self, params: Any, batch: Any) -> jax.Array:
        return self.task.loss(self.model_params(params), batch)

    def batch(self, key: jax.Array, split: str) -> Any:
        return self.task.batch(key, split)
