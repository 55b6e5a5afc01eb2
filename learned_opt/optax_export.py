"""A learned optimizer with fixed theta as an optax transformation."""

from __future__ import annotations

from typing import Any

import jax
import optax

from learned_opt.base import LearnedOptimizer, Theta, check_run_length, init_for_run


def check_gradient_matches(grads: Any, params: Any) -> None:
    """Raise ``ValueError`` naming the first leaf where ``grads`` and ``params`` differ
    in tree structure or shape (a learned rule would otherwise broadcast or mix
    them silently). Shapes are static: this costs nothing inside ``jit``."""
    g_leaves, g_tree = jax.tree_util.tree_flatten_with_path(grads)
    p_leaves, p_tree = jax.tree_util.tree_flatten_with_path(params)
    if g_tree != p_tree:  # type: ignore[operator]
        g_paths = {jax.tree_util.keystr(k) for k, _ in g_leaves}
        p_paths = {jax.tree_util.keystr(k) for k, _ in p_leaves}
        missing, extra = sorted(p_paths - g_paths), sorted(g_paths - p_paths)
        raise ValueError(
            "the gradient's tree does not match params' "
            f"(missing from the gradient: {missing or 'none'}; not in params: {extra or 'none'})"
        )
    for (path, g), (_, p) in zip(g_leaves, p_leaves, strict=True):
        if jax.numpy.shape(g) != jax.numpy.shape(p):
            raise ValueError(
                f"the gradient at {jax.tree_util.keystr(path)} has shape {jax.numpy.shape(g)}, "
                f"its parameter {jax.numpy.shape(p)}"
            )


def as_optax(
    lopt: LearnedOptimizer, theta: Theta, num_steps: int | None = None
) -> optax.GradientTransformationExtraArgs:
    """Wrap ``lopt`` with meta-parameters ``theta`` as an optax transformation.

    ``num_steps``: how many updates the run will make, as a schedule would be
    told; a horizon-aware rule (``uses_horizon``) needs it (``ValueError`` here
    without it), the others ignore it.

    ``update(grads, state, params, loss=...)`` needs ``params`` (the MLP learned
    optimizer uses them as a feature); ``loss`` is passed through as an extra
    argument to architectures that use it. The state carries the step count.
    A gradient whose tree or shapes differ from ``params`` raises ``ValueError``
    naming the leaf; ``init(None)`` raises ``TypeError``.
    """
    if getattr(lopt, "uses_horizon", False):
        check_run_length(num_steps)  # now, not at init: the user's call is the one to fix

    def init_fn(params):
        if params is None:
            raise TypeError("init needs the params pytree the optimizer will update, got None")
        return init_for_run(lopt, theta, params, num_steps)

    def update_fn(updates, state, params=None, **extra_args):
        if params is not None:
            check_gradient_matches(updates, params)
        return lopt.update(theta, state, updates, params, loss=extra_args.get("loss"))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
