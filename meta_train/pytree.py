"""Small pytree helpers shared by the estimators and the outer loop."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def all_finite(tree: Any) -> jax.Array:
    """True when every inexact leaf of ``tree`` is finite everywhere (integer leaves pass)."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def where_tree(cond: jax.Array, a: Any, b: Any) -> Any:
    """Leafwise ``where(cond, a, b)``; ``cond`` broadcasts against each leaf's leading axes."""

    def select(x, y):
        c = jnp.reshape(cond, cond.shape + (1,) * (jnp.ndim(x) - cond.ndim))
        return jnp.where(c, x, y)

    return jax.tree.map(select, a, b)
