"""The evolution-strategies gradient of one truncation, written as in the PES paper.

Vicol, Metz & Sohl-Dickstein (ICML 2021), Algorithm 1 / eq. (5): with N
particles ``theta + s_i eps_i`` (s_i = +1, or -1 for the second member of an
antithetic pair), each particle's accumulated perturbation
``xi_i = sum of the eps_i its episode has run under``, and the K losses of
this truncation ``L_{i,1..K}``, PES estimates

    g = 1 / (N sigma^2 K) * sum_i s_i * xi_i * sum_t L_{i,t}.

``sigma`` is the standard deviation of each perturbation coordinate. When an
episode ends inside the truncation and a new one begins (under this call's
eps, with xi restarted at eps), the two parts of a particle's losses carry
different weights, so the sum over t is split at the boundary:

    g = 1 / (N sigma^2 K) * sum_i s_i * (w_running_i * L_running_i + eps_i * L_new_i)

where ``L_running`` sums the steps of the episode that was running at the
start of the call and ``L_new`` those of the episode begun in it. The
estimators differ only in ``w_running`` (``meta_train.estimators.es``):

* PES: ``xi + eps``, the running episode's perturbations so far, this call's included;
* truncated ES: ``eps``, as if the running episode had begun with this call (biased);
* NRES: the one perturbation the running episode has used throughout.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class ESWeights(NamedTuple):
    """Per-group perturbations that weight each part of a particle's losses."""

    running: Any  # w_running: [group, ...] like theta, for the episode running at the call's start
    new: Any  # eps: [group, ...], for an episode begun in this call


def es_gradient(
    losses: jax.Array,
    in_new_episode: jax.Array,
    signs: jax.Array,
    weights: ESWeights,
    *,
    sigma: float,
) -> Any:
    """The estimate above, shaped like theta.

    ``losses``: ``[K, sign, group]``; ``in_new_episode``: bool ``[K, group]``
    (the step belongs to an episode begun in this call); ``signs``: ``[sign]``.
    N = sign x group particles.
    """
    num_steps, num_signs, num_groups = losses.shape
    new = in_new_episode.astype(losses.dtype)[:, None, :]  # [K, 1, group]
    signed = signs[:, None] * losses  # s_i L_{i,t}: [K, sign, group]
    l_running = jnp.sum(signed * (1.0 - new), axis=(0, 1))  # [group], summed over the pair
    l_new = jnp.sum(signed * new, axis=(0, 1))  # [group]
    scale = 1.0 / (num_steps * (num_signs * num_groups) * sigma**2)

    def leaf(w_running, eps):
        return (
            jnp.tensordot(l_running.astype(eps.dtype), w_running, axes=1)
            + jnp.tensordot(l_new.astype(eps.dtype), eps, axes=1)
        ) * scale

    return jax.tree.map(leaf, weights.running, weights.new)
