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

How the population is computed (``particle_chunk``; the results do not depend
on it beyond floating-point rounding): each group runs its K steps in one
``lax.scan``; groups are vectorised with ``vmap`` in chunks of
``particle_chunk`` particles, the chunks one after another (``lax.map``).
``0`` vectorises the whole population: best for small systems and on
accelerators. ``1`` steps one particle at a time (the members of a pair one
after the other): on a CPU a particle whose state and learned-optimizer
activations fill the caches runs several times faster alone than batched
with others, because batched it streams every intermediate through main
memory. ``AUTO`` (``-1``) picks ``1`` on CPU for systems whose state is
over ``SEQUENTIAL_BYTES`` per particle, else ``0``. When a mesh with a
``"particles"`` axis is set (``jax.set_mesh``; ``meta_train.sharding``), each
device runs its own groups through ``jax.shard_map``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from meta_train.estimators.common import all_finite

AUTO = -1
SEQUENTIAL_BYTES = 1 << 20  # a system state this large per particle is stepped alone on CPU
PARTICLE_AXIS = "particles"  # the mesh axis the group axis is sharded over


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


def check_particle_chunk(particle_chunk: int, num_signs: int) -> None:
    if particle_chunk == AUTO:
        return
    if particle_chunk < 0 or (particle_chunk > 1 and particle_chunk % num_signs):
        raise ValueError(f"particle_chunk must be -1 (auto), 0 (all), 1, or a positive "
                         f"multiple of {num_signs} (whole pairs), got {particle_chunk}")


def resolve_particle_chunk(particle_chunk: int, system, theta) -> int:
    """The chunk ``AUTO`` stands for (module doc); other values are returned as given."""
    if particle_chunk != AUTO:
        return particle_chunk
    if jax.default_backend() != "cpu":
        return 0
    shapes = jax.eval_shape(system.init, theta, jax.random.PRNGKey(0))
    size = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(shapes))
    return 1 if size > SEQUENTIAL_BYTES else 0


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


def _group_unroll(system, sign_map, thetas_old, thetas_new, state, remaining, step_keys,
                  init_keys):
    """One group (its signs on the leading axis) through K steps: a ``lax.scan``."""
    step_one = sign_map(system.step, (0, 0, None))
    init_one = sign_map(system.init, (0, None))
    finite = sign_map(all_finite, (0,))

    def body(carry, keys):
        state, remaining, began = carry
        step_key, init_key = keys
        begin = remaining <= 0
        began = began | begin
        if thetas_old is None:
            thetas = thetas_new
        else:
            thetas = jax.tree.map(lambda n, o: jnp.where(began, n, o), thetas_new, thetas_old)
        # A real branch when groups run one by one, a select when vectorised.
        state = jax.lax.cond(begin, lambda: init_one(thetas, init_key), lambda: state)
        remaining = jnp.where(begin, jnp.int32(system.horizon), remaining)
        state, loss = step_one(thetas, state, step_key)
        bad = ~jnp.all(finite(state))  # a pair restarts together
        remaining = jnp.where(bad, 0, remaining - 1)
        return (state, remaining, began), (loss, began, begin, bad)

    carry = (state, remaining, jnp.zeros((), bool))
    (state, remaining, _), outs = jax.lax.scan(body, carry, (step_keys, init_keys))
    return state, remaining, outs


def _one_by_one(f, in_axes):
    """Like ``vmap(f, in_axes)`` but one element after another (``lax.map``)."""
    def mapped(*args):
        xs = tuple(a for a, ax in zip(args, in_axes) if ax is not None)
        def one(x):
            it = iter(x)
            return f(*(next(it) if ax is not None else a for a, ax in zip(args, in_axes)))
        return jax.lax.map(one, xs)
    return mapped


def _local_unroll(system, chunk, num_signs, thetas_old, thetas_new, state, remaining,
                  step_keys, init_keys):
    """Every local group; group axis leading everywhere."""
    groups = remaining.shape[0]
    sign_map = _one_by_one if chunk == 1 else jax.vmap
    fn = functools.partial(_group_unroll, system, sign_map)
    xs = (thetas_old, thetas_new, state, remaining, step_keys, init_keys)
    if chunk == 0 or chunk >= groups * num_signs:
        return jax.vmap(fn)(*xs)
    groups_per_chunk = max(1, chunk // num_signs)
    if groups_per_chunk == 1:  # lax.map(batch_size=1) would still vmap: cond -> select
        return jax.lax.map(lambda x: fn(*x), xs)
    return jax.lax.map(lambda x: fn(*x), xs, batch_size=groups_per_chunk)


def _particle_mesh_size() -> int:
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or PARTICLE_AXIS not in mesh.axis_names:
        return 1
    return mesh.shape[PARTICLE_AXIS]


def unroll(system, thetas_old, thetas_new, system_state, remaining: jax.Array,
           key: jax.Array, num_steps: int, particle_chunk: int = AUTO) -> Unrolled:
    """Advance every particle ``num_steps`` steps (module doc for how it is computed).

    ``thetas_old`` / ``thetas_new`` have leading axes ``[sign, group]``: a
    particle runs under ``thetas_old`` until an episode begins in this call and
    under ``thetas_new`` from then on (pass the same object twice when they do
    not differ; the selection is then skipped at trace time).
    """
    groups = remaining.shape[0]
    num_signs = jax.tree.leaves(system_state)[0].shape[0]
    same = thetas_old is thetas_new
    k_step, k_init = jax.random.split(key)
    # Keys are drawn [step, group] whatever the chunking, then laid out group-major.
    step_keys = jnp.swapaxes(jax.random.split(k_step, (num_steps, groups)), 0, 1)
    init_keys = jnp.swapaxes(jax.random.split(k_init, (num_steps, groups)), 0, 1)
    group_major = functools.partial(jax.tree.map, lambda x: jnp.swapaxes(x, 0, 1))
    xs = (None if same else group_major(thetas_old), group_major(thetas_new),
          group_major(system_state), remaining, step_keys, init_keys)
    one_theta = jax.tree.map(lambda x: x[0, 0], thetas_new)
    chunk = resolve_particle_chunk(particle_chunk, system, one_theta)
    local = functools.partial(_local_unroll, system, chunk, num_signs)
    shards = _particle_mesh_size()
    if shards > 1:
        if groups % shards:
            raise ValueError(f"{groups} groups cannot be split over {shards} devices")
        spec = P(PARTICLE_AXIS)
        local = jax.shard_map(local, in_specs=jax.tree.map(lambda _: spec, xs),
                              out_specs=spec, check_vma=False)
    state, remaining, (losses, fresh, begins, bads) = local(*xs)
    return Unrolled(group_major(state), remaining, jnp.transpose(losses, (1, 2, 0)), fresh.T,
                    jnp.sum(begins, dtype=jnp.int32), jnp.sum(bads, dtype=jnp.int32))
