"""Pieces shared by the estimators: perturbations, particle layout, finiteness."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def gaussian_like(key: jax.Array, tree, sigma: float, leading: tuple[int, ...] = ()):
    """Independent N(0, sigma^2) noise shaped like ``tree`` with ``leading`` axes.

    One draw per dtype, cut into leaves: a single random-number kernel instead
    of one per leaf keeps the compiled program (and its compile time) small.
    """
    leaves, treedef = jax.tree.flatten(tree)
    dtypes = sorted({jnp.result_type(x).name for x in leaves})
    keys = dict(zip(dtypes, jax.random.split(key, len(dtypes))))
    sizes = [math.prod(jnp.shape(x)) for x in leaves]
    out = [None] * len(leaves)
    for name in dtypes:
        idx = [i for i, x in enumerate(leaves) if jnp.result_type(x).name == name]
        flat = sigma * jax.random.normal(keys[name], leading + (sum(sizes[i] for i in idx),),
                                         jnp.dtype(name))
        start = 0
        for i in idx:
            out[i] = flat[..., start:start + sizes[i]].reshape(leading + jnp.shape(leaves[i]))
            start += sizes[i]
    return treedef.unflatten(out)


def all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def where_tree(cond: jax.Array, a, b):
    """Per-particle select: ``cond`` broadcasts against each leaf's leading axes."""
    def sel(x, y):
        c = jnp.reshape(cond, cond.shape + (1,) * (jnp.ndim(x) - cond.ndim))
        return jnp.where(c, x, y)
    return jax.tree.map(sel, a, b)


def split_particles(num_particles: int, antithetic: bool) -> tuple[int, int]:
    """Return ``(num_signs, num_groups)``: particles are laid out ``[sign, group]``."""
    if num_particles < 1:
        raise ValueError("num_particles must be >= 1")
    if antithetic:
        if num_particles % 2:
            raise ValueError(f"antithetic sampling needs an even num_particles, "
                             f"got {num_particles}")
        return 2, num_particles // 2
    return 1, num_particles
