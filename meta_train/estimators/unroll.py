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
``particle_chunk`` particles, the chunks one after another (a ``fori_loop``
that reads and writes each chunk's states in the population's own buffers,
in its ``[sign, group]`` layout, so the population is never copied).
``0`` vectorises the whole population: best for small systems and on
accelerators. ``1`` steps one particle at a time (each member of a pair
through all K steps, then the other; ``_sequential_group_unroll`` keeps
their restarts coupled): on a CPU a particle whose state and learned-optimizer
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

from meta_train.estimators.common import all_finite, split_particles

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


def check_population(num_particles: int, antithetic: bool, trunc_len: int,
                     particle_chunk: int) -> None:
    """``ValueError`` naming the first unusable setting of an estimator's population."""
    num_signs = split_particles(num_particles, antithetic)[0]
    if trunc_len < 1:
        raise ValueError("trunc_len must be >= 1")
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


def _take(x, start, size: int, axis: int):
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis)


def _put(x, update, start, axis: int):
    return jax.lax.dynamic_update_slice_in_dim(x, update, start, axis)


def _truncation(system, batched: bool, theta_old, theta_new, state, remaining, step_keys,
                init_keys, forced):
    """K steps of one group (``batched``: its signs on the leading axis, stepped
    together) or of one particle: a ``lax.scan``. ``forced`` [K] marks steps
    after which the episode ends even if the state is finite."""
    init = jax.vmap(system.init, (0, None)) if batched else system.init
    step = jax.vmap(system.step, (0, 0, None)) if batched else system.step

    def body(carry, xs):
        state, remaining, began = carry
        step_key, init_key, force = xs
        begin = remaining <= 0
        began = began | begin
        theta = _select_theta(began, theta_old, theta_new)
        # A real branch for one particle; a select once groups are vmapped.
        state = jax.lax.cond(begin, lambda: init(theta, init_key), lambda: state)
        remaining = jnp.where(begin, jnp.int32(system.horizon), remaining)
        state, loss = step(theta, state, step_key)
        bad = ~all_finite(state)  # batched: a pair restarts together
        remaining = jnp.where(bad | force, 0, remaining - 1)
        return (state, remaining, began), (loss, began, begin, bad)

    carry = (state, remaining, jnp.zeros((), bool))
    (state, remaining, _), outs = jax.lax.scan(body, carry, (step_keys, init_keys, forced))
    return state, remaining, outs


def _group_unroll(system, thetas_old, thetas_new, state, remaining, step_keys, init_keys):
    """One group (its signs on the leading axis) through K steps, vectorised."""
    return _truncation(system, True, thetas_old, thetas_new, state, remaining, step_keys,
                       init_keys, jnp.zeros(step_keys.shape[:1], bool))


def _select_theta(began, theta_old, theta_new):
    if theta_old is None:
        return theta_new
    return jax.tree.map(lambda n, o: jnp.where(began, n, o), theta_new, theta_old)


def _sequential_group_unroll(system, thetas_old, thetas_new, state, remaining, step_keys,
                             init_keys):
    """One group through K steps, its particles one after the other.

    Each member of the group runs all K steps in its own ``lax.scan`` (its
    state is the scan's carry: nothing is sliced out of, or written into, the
    group's buffers per step, and a restart is a real branch). The members of
    a pair must restart together, though: a step after which *either* state
    is not finite ends the episode of both. Members run one by one cannot see
    each other's steps, so each runs under a set of ``forced`` restart steps
    and the group is rerun, with ``forced`` set to the steps where any member
    went bad, until every member's restarts are exactly those steps. That is
    the coupled recursion, so the result is the same as stepping the members
    together. With no non-finite state (the usual case) the first run is the
    only one; each rerun fixes at least one more restart, so there are at
    most K + 1 runs. A group of one particle (no pairs) runs once, without the
    rerun loop, so it can be differentiated (TBPTT).
    """
    def run(forced):
        return jax.lax.map(
            lambda args: _truncation(system, False, *args, remaining, step_keys, init_keys,
                                     forced),
            (thetas_old, thetas_new, state))

    def attempt(carry):  # one run of the group under carry[0] as forced restarts
        forced = carry[0]
        result = run(forced)
        bad = result[2][3]  # [sign, K]
        union = jnp.any(bad, axis=0)
        settled = jnp.all((bad | forced) == union)
        return union, result, settled

    no_restarts = jnp.zeros(step_keys.shape[:1], bool)
    if jax.tree.leaves(state)[0].shape[0] == 1:
        # Nothing to couple, and no while_loop: backprop (TBPTT) goes through this.
        result = run(no_restarts)
    else:
        shapes = jax.eval_shape(run, no_restarts)
        empty = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
        _, result, _ = jax.lax.while_loop(lambda c: ~c[2], attempt,
                                          (no_restarts, empty, jnp.zeros((), bool)))
    state, rem, (losses, began, begin, bad) = result
    # Settled: every member has the same restarts, so its flags are the group's.
    return state, rem[0], (losses.T, began[0], begin[0], jnp.any(bad, axis=0))


# Axis of the group in each argument / result of ``_group_unroll`` once batched:
# thetas and states are [sign, group, ...], remaining [group], keys [K, group, 2];
# losses [K, sign, group], the step flags [K, group].
_IN_AXES = (1, 1, 1, 0, 1, 1)
_OUT_AXES = (1, 0, (2, 1, 1, 1))


def _per_axis(f, axes, *trees):
    """``f(*leaves, axis)`` over the matching leaves of ``trees``; ``axes`` gives one
    axis per top-level entry (nested tuples where the trees nest)."""
    if isinstance(axes, tuple):
        return tuple(_per_axis(f, a, *t) for a, *t in zip(axes, *trees))
    return jax.tree.map(lambda *xs: f(*xs, axes), *trees)


def _local_unroll(system, chunk, num_signs, thetas_old, thetas_new, state, remaining,
                  step_keys, init_keys):
    """Every local group; the population keeps its [sign, group] layout throughout.

    Chunks run in a ``fori_loop`` that reads each chunk's states from, and writes
    them back into, the population's own buffers: no transposed or stacked copy
    of the population is made.
    """
    groups = remaining.shape[0]
    batched = jax.vmap(functools.partial(_group_unroll, system), _IN_AXES, _OUT_AXES)
    if chunk == 0 or chunk >= groups * num_signs:
        return batched(thetas_old, thetas_new, state, remaining, step_keys, init_keys)
    size = max(1, chunk // num_signs)  # groups per chunk

    def run(start, n, outs):
        """Groups [start, start + n), from the states in ``outs``: chunks not yet run
        are unchanged there, so the loop reads its carry, not the original."""
        args = (thetas_old, thetas_new, outs[0], outs[1], step_keys, init_keys)
        part = _per_axis(lambda x, a: _take(x, start, n, a), _IN_AXES, args)
        if size > 1:
            return batched(*part)
        # One group, unbatched, so the restart cond stays a real branch.
        one = _per_axis(jnp.squeeze, _IN_AXES, part)
        return _per_axis(jnp.expand_dims, _OUT_AXES, _sequential_group_unroll(system, *one))

    def advance(start, n, outs):
        return _per_axis(lambda b, v, a: _put(b, v, start, a), _OUT_AXES, outs,
                         run(start, n, outs))

    aux_shape = jax.eval_shape(lambda: run(0, size, (state, remaining)))[2]
    aux = _per_axis(lambda o, a: jnp.zeros(o.shape[:a] + (groups,) + o.shape[a + 1:], o.dtype),
                    _OUT_AXES[2], aux_shape)
    outs = jax.lax.fori_loop(0, groups // size, lambda i, o: advance(i * size, size, o),
                             (state, remaining, aux))
    if groups % size:  # a last, smaller chunk (only when chunks are batched)
        outs = advance(groups - groups % size, groups % size, outs)
    return outs


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
    step_keys, init_keys = jax.random.split(key, (2, num_steps, groups))  # [step, group]
    xs = (None if same else thetas_old, thetas_new, system_state, remaining, step_keys,
          init_keys)
    one_theta = jax.tree.map(lambda x: x[0, 0], thetas_new)
    chunk = resolve_particle_chunk(particle_chunk, system, one_theta)

    def local(system, *xs):
        return _local_unroll(system, chunk, num_signs, *xs)

    shards = _particle_mesh_size()
    if shards > 1:
        if groups % shards:
            raise ValueError(f"{groups} groups cannot be split over {shards} devices")
        spec = lambda axis: P(*([None] * axis), PARTICLE_AXIS)
        # The system (a task's dataset, say) enters replicated as an argument, not
        # as a closure: every device reads its own copy, placed there once
        # (``trainer.distribute``), instead of one copied from device 0 per call.
        local = jax.shard_map(local,
                              in_specs=(P(), *_per_axis(lambda _, a: spec(a), _IN_AXES, xs)),
                              out_specs=(spec(1), spec(0), tuple(map(spec, _OUT_AXES[2]))),
                              check_vma=False)
    state, remaining, (losses, fresh, begins, bads) = local(system, *xs)
    return Unrolled(state, remaining, losses, fresh, jnp.sum(begins, dtype=jnp.int32),
                    jnp.sum(bads, dtype=jnp.int32))
