"""One outer iteration, pure: perturb, unroll, estimate, clip, apply the outer update.

``outer_step(estimator, meta_state) -> (meta_state, metrics)`` is one compiled
program. A non-finite meta-gradient, or an update that would make theta
non-finite, is not applied (theta and the outer optimizer state stay as they
were, ``metrics["skipped"]`` is 1) so one bad truncation cannot destroy theta.
The step key is ``fold_in(key, step)``, so a resumed run draws exactly the keys
an uninterrupted one would. Uses only the
estimator contract (``meta_train.estimators.base.Estimator``); see
docs/ARCHITECTURE.md for the whole iteration.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from meta_train.estimators.base import Estimator
from meta_train.pytree import all_finite
from meta_train.runtime import xla_options
from meta_train.runtime.sharding import named, particle_mesh, replicate


class MetaState(NamedTuple):
    step: jax.Array  # int32: outer iterations done
    theta: Any
    outer_opt_state: Any
    estimator_state: Any
    key: jax.Array  # uint32[2]: the run's base key


OuterStep = Callable[[Estimator, MetaState], tuple[MetaState, dict[str, jax.Array]]]


def fresh_meta_state(
    estimator: Estimator, outer_opt: optax.GradientTransformation, key: jax.Array
) -> MetaState:
    """The state before the first outer iteration (pure; ``init_meta_state`` compiles it)."""
    k_theta, k_est, k_run = jax.random.split(key, 3)
    theta = estimator.system.init_theta(k_theta)
    return MetaState(
        step=jnp.zeros((), jnp.int32),
        theta=theta,
        outer_opt_state=outer_opt.init(theta),
        estimator_state=estimator.init(theta, k_est),
        key=k_run,
    )


def init_meta_state(
    estimator: Estimator, outer_opt: optax.GradientTransformation, seed: int
) -> MetaState:
    """``fresh_meta_state`` as one compiled program (op by op, the initialisers alone
    would compile dozens of small programs: seconds of warm-up)."""
    init = functools.partial(fresh_meta_state, outer_opt=outer_opt)
    return xla_options.jit(init)(estimator, key=jax.random.PRNGKey(seed))


def outer_iteration(outer_opt: optax.GradientTransformation) -> OuterStep:
    """The pure outer iteration ``(estimator, state) -> (state, metrics)`` (unjitted)."""

    def outer_step(estimator: Estimator, state: MetaState):
        key = jax.random.fold_in(state.key, state.step)
        grad, est_state, metrics = estimator.estimate(state.theta, state.estimator_state, key)
        finite = all_finite(grad)
        safe_grad = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grad)
        updates, opt_state = outer_opt.update(safe_grad, state.outer_opt_state, state.theta)
        theta = optax.apply_updates(state.theta, updates)
        finite = finite & all_finite(theta)  # an update can overflow a finite theta
        theta, opt_state = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old),
            (theta, opt_state),
            (state.theta, state.outer_opt_state),
        )
        metrics = dict(
            metrics, grad_norm=optax.tree.norm(grad), skipped=(~finite).astype(jnp.int32)
        )
        return MetaState(state.step + 1, theta, opt_state, est_state, state.key), metrics

    return outer_step


def make_outer_step(
    outer_opt: optax.GradientTransformation, shardings: MetaState | None = None, donate: bool = True
) -> OuterStep:
    """The jitted outer iteration ``(estimator, state) -> (state, metrics)``.

    ``donate=True`` hands the incoming state's buffers to the new state (the
    population is updated in place, not held twice), so the state passed in
    must not be used again; pass ``donate=False`` to keep it. ``shardings``
    (from ``distribute``) keeps the particle axis sharded across iterations,
    and each device runs its own particles (the mesh is set while tracing).
    """
    outer_step = outer_iteration(outer_opt)
    donation = {"donate_argnums": (1,)} if donate else {}
    if shardings is None:
        return xla_options.jit(outer_step, **donation)
    mesh = jax.tree.leaves(shardings)[0].mesh
    jitted = xla_options.jit(outer_step, out_shardings=(shardings, None), **donation)

    def step_on_mesh(estimator: Estimator, state: MetaState):
        with jax.set_mesh(mesh):
            return jitted(estimator, state)

    return step_on_mesh


def meta_state_shardings(estimator: Estimator, state: MetaState, mesh: Mesh) -> MetaState:
    """Where each part of ``state`` lives: the estimator's state as the estimator
    says (``partition_specs``), everything else replicated."""
    replicated = P()
    specs = MetaState._make(  # a tree of specs shaped like the state
        (
            replicated,
            jax.tree.map(lambda _: replicated, state.theta),
            jax.tree.map(lambda _: replicated, state.outer_opt_state),
            estimator.partition_specs(state.estimator_state),
            replicated,
        )
    )
    return named(specs, mesh)


class Distributed(NamedTuple):
    estimator: Any  # its arrays (a task's dataset) replicated on every device
    state: MetaState
    shardings: MetaState | None  # for make_outer_step; None on one device
    num_devices: int


def distribute(estimator: Estimator, state: MetaState, devices=None) -> Distributed:
    """Shard ``state``'s particle axis over the devices (default: all).

    The estimator's arrays are replicated on every device once, so the outer
    step does not copy them from the first device on every call; use it for
    the outer step and the original for single-device work such as
    evaluation. With one device (or a population that does not split)
    everything is returned as given, with ``shardings = None``.
    """
    mesh = particle_mesh(estimator.num_groups, devices)
    if mesh is None:
        return Distributed(estimator, state, None, 1)
    shardings = meta_state_shardings(estimator, state, mesh)
    # Split from host memory: resharding device arrays compiles a program per leaf shape.
    return Distributed(
        replicate(estimator, mesh),
        jax.device_put(jax.device_get(state), shardings),
        shardings,
        mesh.devices.size,
    )
