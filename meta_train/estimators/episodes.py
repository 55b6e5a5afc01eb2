"""What one truncation computes: the episode semantics every estimator shares.

A *truncation* advances one group (an antithetic pair, or one particle) K
steps. Per step:

1. If the running episode is over (``remaining == 0``), a fresh one begins:
   ``system.init`` under the theta that step uses, and ``remaining = T``.
2. ``system.step`` under ``theta_new`` once an episode has begun in this call,
   else under ``theta_running`` (the perturbation of the episode that was
   already running: NRES keeps one per episode; the others pass ``None``,
   meaning the same as ``theta_new``).
3. If any member's state is no longer finite, the episode ends now (both
   members of a pair together), else ``remaining`` counts down.

Episode boundaries are therefore handled lazily: an episode that ends sets
``remaining`` to 0 and the *next* step starts the new one, so a new episode is
always initialised under the perturbation its first step uses, and with
``K = T`` and lockstep starts every call is exactly one fresh episode.

``unroll_vectorised`` runs every group of a population this way under one
``vmap``: the reference that every execution strategy
(``meta_train.estimators.execution``) is tested equal to.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from meta_train.estimators.base import Layout
from meta_train.pytree import all_finite
from meta_train.systems.base import UnrolledSystem


class TruncationInputs(NamedTuple):
    """A population's (or one group's) inputs to a truncation."""

    theta_running: Any  # [sign, group, ...]; None: the same as theta_new
    theta_new: Any  # [sign, group, ...]: the perturbation drawn for this call
    system_state: Any  # [sign, group, ...]
    remaining: jax.Array  # int32 [group]
    step_keys: jax.Array  # [K, group, 2]: data keys of each step
    init_keys: jax.Array  # [K, group, 2]: keys of an episode begun at each step


class StepRecord(NamedTuple):
    """What happened at each step of a truncation (leading axis K)."""

    loss: jax.Array  # L_t of each member: [K, sign, group]
    in_new_episode: jax.Array  # bool [K, group]: the step belongs to an episode begun in this call
    restarted: jax.Array  # bool [K, group]: an episode began at this step
    nonfinite: jax.Array  # bool [K, group]: the state stopped being finite at this step


class Truncation(NamedTuple):
    """A truncation's result: the population after K steps and what happened."""

    system_state: Any  # [sign, group, ...]
    remaining: jax.Array  # int32 [group]
    records: StepRecord


# Where the group axis is in each field (the shapes noted above).
# (Trees of ints shaped like the named tuples: axis specs for vmap and slicing.)
INPUT_GROUP_AXES = TruncationInputs._make((1, 1, 1, 0, 1, 1))
OUTPUT_GROUP_AXES = Truncation._make((1, 0, StepRecord._make((2, 1, 1, 1))))


def truncation(
    system: UnrolledSystem,
    inputs: TruncationInputs,
    *,
    batched: bool = True,
    forced: jax.Array | None = None,
) -> Truncation:
    """K steps of one group, a ``lax.scan`` (module doc for the semantics).

    ``inputs`` holds one group without its group axis: with ``batched`` the
    members are on the leading (sign) axis and step together; otherwise
    ``inputs`` is a single particle (no sign axis). For one group the restart
    is a real branch; once groups are ``vmap``-ed it becomes a select.
    ``forced`` (bool [K]) marks steps after which the episode ends even if the
    state is finite: how a member stepped alone learns of its partner's
    restarts (``execution``); ``nonfinite`` records only the member's own.
    """
    init = jax.vmap(system.init, (0, None)) if batched else system.init
    step = jax.vmap(system.step, (0, 0, None)) if batched else system.step

    def body(carry, xs):
        state, remaining, in_new = carry
        step_key, init_key, force = xs
        restart = remaining <= 0
        in_new = in_new | restart
        theta = _theta_for(in_new, inputs.theta_running, inputs.theta_new)
        state = jax.lax.cond(restart, lambda: init(theta, init_key), lambda: state)
        remaining = jnp.where(restart, jnp.int32(system.horizon), remaining)
        state, loss = step(theta, state, step_key)
        nonfinite = ~all_finite(state)  # over both members: a pair restarts together
        ends = nonfinite if force is None else nonfinite | force
        remaining = jnp.where(ends, 0, remaining - 1)
        return (state, remaining, in_new), StepRecord(loss, in_new, restart, nonfinite)

    carry = (inputs.system_state, inputs.remaining, jnp.zeros((), bool))
    xs = (inputs.step_keys, inputs.init_keys, forced)
    (state, remaining, _), records = jax.lax.scan(body, carry, xs)
    return Truncation(state, remaining, records)


def _theta_for(in_new_episode: jax.Array, theta_running: Any, theta_new: Any) -> Any:
    if theta_running is None:
        return theta_new
    return jax.tree.map(lambda n, o: jnp.where(in_new_episode, n, o), theta_new, theta_running)


def init_particles(
    system: UnrolledSystem, theta: Any, layout: Layout, key: jax.Array, *, stagger: bool
) -> tuple[Any, jax.Array]:
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
        theta, jnp.broadcast_to(init_keys, (num_signs,) + init_keys.shape)
    )
    if stagger:
        remaining = jax.random.randint(k_stagger, (groups,), 1, system.horizon + 1)
    else:
        remaining = jnp.zeros((groups,), jnp.int32)
    return state, remaining.astype(jnp.int32)


def unroll_vectorised(system: UnrolledSystem, inputs: TruncationInputs) -> Truncation:
    """Every group of ``inputs`` through one truncation under a single ``vmap``."""
    return jax.vmap(lambda x: truncation(system, x), (INPUT_GROUP_AXES,), OUTPUT_GROUP_AXES)(inputs)
