"""Sharding the particle axis over devices with ``jax.sharding``.

The population is split along its group axis (pairs with antithetic sampling,
particles without) over a 1-D mesh named ``"particles"``; theta, the outer
optimizer state and the task's data are replicated, each placed once
(``trainer.distribute``; the data enters ``shard_map`` as an argument, so no
outer iteration copies it between devices). ``make_outer_step`` traces
the outer iteration with that mesh set (``jax.set_mesh``), and the unroll runs
each device's groups through ``jax.shard_map`` (``meta_train.estimators.unroll``),
so a device steps only its own particles, in whatever ``particle_chunk`` asks;
the estimator's sum over particles becomes one all-reduce. Random numbers do
not depend on the sharding (keys are drawn for the whole population first),
so a sharded run computes what a single-device run computes, up to rounding.

Several hosts: call ``jax.distributed.initialize()`` (with the coordinator
address, process count and id, or from the cluster environment) in every
process before anything else touches JAX; ``jax.devices()`` then lists every
host's devices and the same mesh spans them. Test on one machine with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``.

One CPU: ``use_cpu_devices(n)`` (``lopt meta-train --cpu-devices``) presents it
as ``n`` devices, so its cores step different particles at once; each device
holds its own copy of the data.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "particles"


def particle_mesh(num_groups: int, devices=None) -> Mesh | None:
    """A mesh over ``devices`` (default all), or None when there is only one.

    Uses the largest device count that divides ``num_groups``.
    """
    devices = list(devices if devices is not None else jax.devices())
    count = max(d for d in range(1, len(devices) + 1) if num_groups % d == 0)
    if count == 1:
        return None
    return Mesh(np.array(devices[:count]), (AXIS,))


def meta_state_shardings(state, mesh: Mesh):
    """NamedShardings for a ``MetaState`` whose estimator state is a ``PESState``."""
    est = state.estimator_state
    replicated = NamedSharding(mesh, P())
    by_group = NamedSharding(mesh, P(AXIS))
    by_sign_group = NamedSharding(mesh, P(None, AXIS))
    est_shardings = type(est)(
        system_state=jax.tree.map(lambda _: by_sign_group, est.system_state),
        accumulator=jax.tree.map(lambda _: by_group, est.accumulator),
        remaining=by_group)
    return state._replace(
        step=replicated, theta=jax.tree.map(lambda _: replicated, state.theta),
        outer_opt_state=jax.tree.map(lambda _: replicated, state.outer_opt_state),
        estimator_state=est_shardings, key=replicated)


def replicate(tree, mesh: Mesh):
    """``tree``'s arrays with a copy on every device of ``mesh`` (placed once)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def cpu_cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def use_cpu_devices(count: int) -> None:
    """Present this machine's CPU to JAX as ``count`` devices (``count >= 1``).

    The particle axis is then sharded over them like over several accelerators:
    each device steps its own particles, so the cores work on different
    particles at once rather than sharing every operation. Each extra device
    holds its own copy of the task's data. Must run before JAX starts its
    backend (before any array is made); raises ``ValueError`` otherwise.
    """
    if count < 1:
        raise ValueError(f"cpu devices must be at least 1, got {count}")
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError as e:  # the backend is already up
        raise ValueError(f"cannot split the CPU into {count} devices now: {e}") from None
