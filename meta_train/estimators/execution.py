"""How a population's truncation is executed: one door, ``unroll``, and its strategies.

What a truncation computes is defined in ``meta_train.estimators.episodes``;
this module only decides how the groups are laid onto the machine. Every
strategy computes the same thing as ``episodes.unroll_vectorised`` (tested in
``tests/test_particle_chunk.py``; bit for bit where the same operations are
batched alike, else up to the rounding of batched against unbatched matmuls):

* ``particle_chunk = 0``: every group under one ``vmap`` (the reference).
  Best for small systems and on accelerators.
* ``particle_chunk = c > 0``: groups of ``c`` particles (rounded to whole
  pairs) are vectorised together, the chunks one after another in a
  ``fori_loop`` that reads each chunk's states from, and writes them back
  into, the population's own buffers (no transposed or stacked copy of the
  population).
* ``particle_chunk = 1`` (or one pair): one group at a time, and each member
  of a pair through all K steps alone (its state is the scan's carry, and a
  restart is a real branch rather than a select): on a CPU, a particle whose
  state and learned-optimizer activations fill the caches runs faster alone
  than batched with others (``bench/unroll_strategies.py`` measures it;
  docs/PERFORMANCE.md). The members of a pair must still restart together,
  which ``_members_one_by_one`` keeps exact.
* ``AUTO`` (-1): ``1`` on CPU for systems whose state is over
  ``SEQUENTIAL_BYTES`` per particle, else ``0``.
* With a mesh that has a ``PARTICLE_AXIS`` axis set (``jax.set_mesh``;
  ``meta_train.runtime.sharding``), each device runs its own groups, in the
  chunks asked for, through ``jax.shard_map``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from meta_train.estimators.base import ParticleState, population_layout
from meta_train.estimators.episodes import (
    INPUT_GROUP_AXES,
    OUTPUT_GROUP_AXES,
    StepRecord,
    Truncation,
    TruncationInputs,
    truncation,
    unroll_vectorised,
)
from meta_train.runtime.sharding import PARTICLE_AXIS
from meta_train.systems.base import UnrolledSystem

AUTO = -1
SEQUENTIAL_BYTES = 1 << 20  # a system state this large per particle is stepped alone on CPU


class Unrolled(NamedTuple):
    """A population after one truncation, with its losses and episode bookkeeping."""

    system_state: Any  # [sign, group, ...]
    remaining: jax.Array  # int32 [group]
    losses: jax.Array  # [K, sign, group]
    in_new_episode: jax.Array  # bool [K, group]: the step belongs to an episode begun in this call
    episodes_begun: jax.Array  # int32: new episodes started in this call
    nonfinite: jax.Array  # int32: groups whose state stopped being finite


def check_population(
    num_particles: int, antithetic: bool, trunc_len: int, particle_chunk: int
) -> None:
    """``ValueError`` naming the first unusable setting of an estimator's population."""
    num_signs = population_layout(num_particles, antithetic).num_signs
    if trunc_len < 1:
        raise ValueError("trunc_len must be >= 1")
    if particle_chunk == AUTO:
        return
    if particle_chunk < 0 or (particle_chunk > 1 and particle_chunk % num_signs):
        raise ValueError(
            f"particle_chunk must be -1 (auto), 0 (all), 1, or a positive "
            f"multiple of {num_signs} (whole pairs), got {particle_chunk}"
        )


def resolve_particle_chunk(particle_chunk: int, system: UnrolledSystem, theta: Any) -> int:
    """The chunk ``AUTO`` stands for (module doc); other values are returned as given."""
    if particle_chunk != AUTO:
        return particle_chunk
    if jax.default_backend() != "cpu":
        return 0
    shapes = jax.eval_shape(system.init, theta, jax.random.PRNGKey(0))
    size = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(shapes))
    return 1 if size > SEQUENTIAL_BYTES else 0


def unroll(
    system: UnrolledSystem,
    theta_running: Any,
    theta_new: Any,
    state: ParticleState,
    key: jax.Array,
    *,
    num_steps: int,
    particle_chunk: int = AUTO,
) -> Unrolled:
    """Advance every particle of ``state`` ``num_steps`` steps (K).

    ``theta_new`` / ``theta_running`` have leading axes ``[sign, group]``
    (``episodes.TruncationInputs``; ``theta_running=None`` when the running
    episodes use ``theta_new`` too). ``key`` gives every step's data and
    restart keys, drawn for the whole population first, so results do not
    depend on the strategy or the sharding.
    """
    groups = state.remaining.shape[0]
    step_keys, init_keys = jax.random.split(key, (2, num_steps, groups))  # [step, group]
    inputs = TruncationInputs(
        theta_running, theta_new, state.system_state, state.remaining, step_keys, init_keys
    )
    one_theta = jax.tree.map(lambda x: x[0, 0], theta_new)
    chunk = resolve_particle_chunk(particle_chunk, system, one_theta)
    num_signs = jax.tree.leaves(state.system_state)[0].shape[0]
    size = groups if chunk == 0 else max(1, chunk // num_signs)  # groups per chunk

    local = functools.partial(_in_chunks, size=size)
    out = _on_particle_mesh(local, groups)(system, inputs)
    return Unrolled(
        out.system_state,
        out.remaining,
        out.records.loss,
        out.records.in_new_episode,
        jnp.sum(out.records.restarted, dtype=jnp.int32),
        jnp.sum(out.records.nonfinite, dtype=jnp.int32),
    )


def _map_group_axis(f: Callable, axes: Any, *trees: Any) -> Any:
    """``f(*leaves, axis)`` over matching leaves; ``axes`` is a prefix of ``trees``."""
    return jax.tree.map(lambda a, *subs: jax.tree.map(lambda *xs: f(*xs, a), *subs), axes, *trees)


def _in_chunks(system: UnrolledSystem, inputs: TruncationInputs, size: int) -> Truncation:
    """The local groups, ``size`` at a time (module doc); the population keeps its layout."""
    groups = inputs.remaining.shape[0]
    if size >= groups:
        return unroll_vectorised(system, inputs)

    def run(start, n, system_state, remaining) -> Truncation:
        """Groups [start, start + n), from the population's current states: chunks
        not yet run are unchanged there, so the loop reads its carry, not the original."""
        current = inputs._replace(system_state=system_state, remaining=remaining)
        part = _map_group_axis(
            lambda x, a: jax.lax.dynamic_slice_in_dim(x, start, n, a), INPUT_GROUP_AXES, current
        )
        if size > 1:
            return unroll_vectorised(system, part)
        one = _map_group_axis(jnp.squeeze, INPUT_GROUP_AXES, part)
        return _map_group_axis(jnp.expand_dims, OUTPUT_GROUP_AXES, _members_one_by_one(system, one))

    def advance(start, n, population: Truncation) -> Truncation:
        return _map_group_axis(
            lambda b, v, a: jax.lax.dynamic_update_slice_in_dim(b, v, start, a),
            OUTPUT_GROUP_AXES,
            population,
            run(start, n, population.system_state, population.remaining),
        )

    records_shape = jax.eval_shape(
        lambda: run(0, size, inputs.system_state, inputs.remaining)
    ).records
    records = _map_group_axis(
        lambda r, a: jnp.zeros(r.shape[:a] + (groups,) + r.shape[a + 1 :], r.dtype),
        OUTPUT_GROUP_AXES.records,
        records_shape,
    )
    population = Truncation(inputs.system_state, inputs.remaining, records)
    population = jax.lax.fori_loop(
        0, groups // size, lambda i, p: advance(i * size, size, p), population
    )
    if groups % size:  # a last, smaller chunk
        population = advance(groups - groups % size, groups % size, population)
    return population


class _Attempt(NamedTuple):
    forced: jax.Array  # bool [K]: the restarts the members ran under
    result: Truncation  # the members' runs (leading axis: sign)
    settled: jax.Array  # bool: every member's restarts were exactly ``forced``


def _members_one_by_one(system: UnrolledSystem, group: TruncationInputs) -> Truncation:
    """One group (no group axis), each member through all K steps alone.

    A step after which *either* member's state is not finite ends the episode
    of both, but members run one by one cannot see each other's steps. So each
    runs under a set of ``forced`` restart steps, and the group is rerun, with
    ``forced`` set to the steps where any member went bad, until every
    member's restarts are exactly those steps. That is the coupled recursion,
    so the result is the same as stepping the members together. With no
    non-finite state (the usual case) the first run is the only one; each
    rerun fixes at least one more restart, so there are at most K + 1 runs. A
    group of one particle runs once, without the loop, so it can be
    differentiated (TBPTT).
    """
    members = (group.theta_running, group.theta_new, group.system_state)

    def run(forced: jax.Array | None) -> Truncation:  # leading axis: sign
        def member(m):
            theta_running, theta_new, state = m
            alone = group._replace(
                theta_running=theta_running, theta_new=theta_new, system_state=state
            )
            return truncation(system, alone, batched=False, forced=forced)

        return jax.lax.map(member, members)

    def attempt(previous: _Attempt) -> _Attempt:
        result = run(previous.forced)
        union = jnp.any(result.records.nonfinite, axis=0)  # [K]
        settled = jnp.all((result.records.nonfinite | previous.forced) == union)
        return _Attempt(union, result, settled)

    if jax.tree.leaves(group.system_state)[0].shape[0] == 1:
        result = run(None)  # nothing to couple, and no while_loop: backprop goes through
    else:
        no_restarts = jnp.zeros(group.step_keys.shape[:1], bool)
        shapes = jax.eval_shape(run, no_restarts)
        empty = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
        initial = _Attempt(no_restarts, empty, jnp.zeros((), bool))
        result = jax.lax.while_loop(lambda a: ~a.settled, attempt, initial).result
    # Settled: every member has the same restarts, so its flags are the group's.
    r = result.records
    records = StepRecord(
        loss=r.loss.T,
        in_new_episode=r.in_new_episode[0],
        restarted=r.restarted[0],
        nonfinite=jnp.any(r.nonfinite, axis=0),
    )
    return Truncation(result.system_state, result.remaining[0], records)


def _particle_mesh_size() -> int:
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or PARTICLE_AXIS not in mesh.axis_names:
        return 1
    return mesh.shape[PARTICLE_AXIS]


def _on_particle_mesh(local: Callable, groups: int) -> Callable:
    """``local`` as it is, or run by each device on its own groups when a particle mesh is set.

    The system (a task's dataset, say) enters replicated as an argument, not as
    a closure: every device reads its own copy, placed there once
    (``runtime.sharding.distribute``), instead of one copied from device 0 per call.
    """
    shards = _particle_mesh_size()
    if shards == 1:
        return local
    if groups % shards:
        raise ValueError(f"{groups} groups cannot be split over {shards} devices")

    def spec(axis: int) -> P:
        return P(*([None] * axis), PARTICLE_AXIS)

    return jax.shard_map(
        local,
        in_specs=(P(), jax.tree.map(spec, INPUT_GROUP_AXES)),
        out_specs=jax.tree.map(spec, OUTPUT_GROUP_AXES),
        check_vma=False,
    )
