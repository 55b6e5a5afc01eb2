"""The particle population and its K-step unroll, shared by every estimator.

A population is laid out ``[sign, group]``: ``[2, N/2]`` for antithetic ES
(both members of a pair share data keys, reset keys and episode boundaries),
``[1, N]`` otherwise. ``ParticleState`` holds, per particle, the system state
and the number of steps left in its episode; ``accumulator`` is the
estimator's per-group record (PES: xi, the perturbations of the current
episode; NRES: the episode's perturbation; others: nothing).

Episode boundaries are handled lazily: an episode that ends (after
``system.horizon`` steps, or at once when a particle's state stops being
finite) sets ``remaining`` to 0, and the *next* step starts a fresh episode
with ``system.init`` under that step's theta. A new episode is therefore
always initialised under the perturbation its first step uses, so with
``K = T`` and lockstep starts every call is exactly one fresh episode.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from meta_train.estimators.common import all_finite, where_tree


class ParticleState(NamedTuple):
    system_state: Any  # every leaf has leading axes [sign, group]
    accumulator: Any  # per group (leading axis [group]); () when the estimator keeps none
    remaining: jax.Array  # int32 [group]: steps left in the episode; 0 = next step restarts


class Unrolled(NamedTuple):
    system_state: Any
    remaining: jax.Array  # [group]
    losses: jax.Array  # [K, sign, group]
    fresh: jax.Array  # bool [K, group]: the step belongs to an episode begun in this call
    episodes_begun: jax.Array  # int32: new episodes started in this call
    nonfinite: jax.Array  # int32: groups whose state stopped being finite


def init_particles(system, theta, layout: tuple[int, int], key: jax.Array,
                   stagger: bool) -> tuple[Any, jax.Array]:
    """System states for a population (initialised under ``theta``) and ``remaining``.

    ``stagger=True`` cuts each group's first episode to a uniform length in
    [1, T] so the population covers all of ``[0, T)`` after one horizon.
    ``stagger=False`` sets ``remaining = 0``: the first step of the first
    call starts every episode, under that call's perturbation (lockstep).
    """
    num_signs, groups = layout
    k_init, k_stagger = jax.random.split(key)
    init_keys = jax.random.split(k_init, groups)
    state = jax.vmap(jax.vmap(system.init, (None, 0)), (None, 0))(
        theta, jnp.broadcast_to(init_keys, (num_signs,) + init_keys.shape))
    if stagger:
        remaining = jax.random.randint(k_stagger, (groups,), 1, system.horizon + 1)
    else:
        remaining = jnp.zeros((groups,), jnp.int32)
    return state, remaining.astype(jnp.int32)


def unroll(system, thetas_old, thetas_new, system_state, remaining: jax.Array,
           key: jax.Array, num_steps: int) -> Unrolled:
    """Advance every particle ``num_steps`` steps (one ``lax.scan``, vmapped particles).

    ``thetas_old`` / ``thetas_new`` have leading axes ``[sign, group]``: a
    particle runs under ``thetas_old`` until an episode begins in this call and
    under ``thetas_new`` from then on (pass the same object twice when they do
    not differ; the selection is then skipped at trace time).
    """
    groups = remaining.shape[0]
    num_signs = jax.tree.leaves(system_state)[0].shape[0]
    horizon = system.horizon
    same = thetas_old is thetas_new
    step_all = jax.vmap(jax.vmap(system.step, (0, 0, 0)), (0, 0, None))
    init_all = jax.vmap(jax.vmap(system.init, (0, 0)), (0, None))
    finite_all = jax.vmap(jax.vmap(all_finite))

    def body(carry, keys):
        state, remaining, began = carry
        step_keys, init_keys = keys
        begin = remaining <= 0
        began = began | begin
        thetas = thetas_new if same else where_tree(
            jnp.broadcast_to(began, (num_signs, groups)), thetas_new, thetas_old)
        state = where_tree(jnp.broadcast_to(begin, (num_signs, groups)),
                           init_all(thetas, init_keys), state)
        remaining = jnp.where(begin, jnp.int32(horizon), remaining)
        state, loss = step_all(thetas, state, step_keys)
        bad = ~jnp.all(finite_all(state), axis=0)  # a pair restarts together
        remaining = jnp.where(bad, 0, remaining - 1)
        return (state, remaining, began), (loss, began, begin, bad)

    k_step, k_init = jax.random.split(key)
    keys = (jax.random.split(k_step, (num_steps, groups)),
            jax.random.split(k_init, (num_steps, groups)))
    carry0 = (system_state, remaining, jnp.zeros((groups,), bool))
    (state, remaining, _), (losses, fresh, begins, bads) = jax.lax.scan(body, carry0, keys)
    return Unrolled(state, remaining, losses, fresh,
                    jnp.sum(begins, dtype=jnp.int32), jnp.sum(bads, dtype=jnp.int32))
