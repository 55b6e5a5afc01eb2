"""Perturbations of theta for the evolution-strategies estimators.

``sigma`` is the standard deviation of each perturbation coordinate:
``eps ~ N(0, sigma^2 I)``. A population's perturbed thetas have leading axes
``[sign, group]`` with signs ``(+1, -1)`` for antithetic pairs, ``(+1,)`` otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp


def gaussian_like(key: jax.Array, tree: Any, sigma: float, leading: tuple[int, ...] = ()) -> Any:
    """Independent N(0, sigma^2) noise shaped like ``tree`` with ``leading`` axes.

    One draw per dtype, cut into leaves: a single random-number kernel instead
    of one per leaf keeps the compiled program (and its compile time) small.
    """
    leaves, treedef = jax.tree.flatten(tree)
    dtypes = sorted({jnp.result_type(x).name for x in leaves})
    keys = dict(zip(dtypes, jax.random.split(key, len(dtypes))))
    sizes = [math.prod(jnp.shape(x)) for x in leaves]
    out: list[Any] = [None] * len(leaves)
    for name in dtypes:
        idx = [i for i, x in enumerate(leaves) if jnp.result_type(x).name == name]
        flat = sigma * jax.random.normal(
            keys[name], leading + (sum(sizes[i] for i in idx),), jnp.dtype(name)
        )
        start = 0
        for i in idx:
            out[i] = flat[..., start : start + sizes[i]].reshape(leading + jnp.shape(leaves[i]))
            start += sizes[i]
    return treedef.unflatten(out)


def signs_for(num_signs: int, dtype: Any) -> jax.Array:
    """``(+1, -1)`` for antithetic pairs, ``(+1,)`` otherwise."""
    return jnp.asarray([1.0, -1.0][:num_signs], dtype)


def perturb(theta: Any, noise: Any, signs: jax.Array) -> Any:
    """``theta + sign * noise`` per particle: leading axes ``[sign, group]``.

    ``noise`` has a leading ``[group]`` axis (one perturbation per group).
    """

    def one(th, e):
        return th + signs.reshape((-1, 1) + (1,) * jnp.ndim(th)) * e[None]

    return jax.tree.map(one, theta, noise)
