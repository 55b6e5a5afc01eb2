"""A learned optimizer with fixed theta as an optax transformation."""

from __future__ import annotations

import optax

from learned_opt.base import LearnedOptimizer, Theta


def as_optax(lopt: LearnedOptimizer, theta: Theta) -> optax.GradientTransformationExtraArgs:
    """Wrap ``lopt`` with meta-parameters ``theta`` as an optax transformation.

    ``update(grads, state, params, loss=...)`` needs ``params`` (the MLP learned
    optimizer uses them as a feature); ``loss`` is passed through as an extra
    argument to architectures that use it. The state carries the step count.
    """

    def init_fn(params):
        return lopt.init(theta, params)

    def update_fn(updates, state, params=None, **extra_args):
        return lopt.update(theta, state, updates, params, loss=extra_args.get("loss"))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
