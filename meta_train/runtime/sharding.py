"""Sharding the particle axis over devices with ``jax.sharding``.

The population is split along its group axis (pairs with antithetic sampling,
particles without) over a 1-D mesh whose axis is ``PARTICLE_AXIS``; each
estimator says how its state is split (``Estimator.partition_specs``). Theta,
the outer optimizer state and the task's data are replicated, each placed once
(``training.outer_step.distribute``; the data enters ``shard_map`` as an
argument, so no outer iteration copies it between devices). ``make_outer_step``
traces the outer iteration with that mesh set (``jax.set_mesh``), and the
unroll runs each device's groups through ``jax.shard_map``
(``meta_train.estimators.execution``),
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
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

PARTICLE_AXIS = "particles"  # the mesh axis the population's groups are split over


def particle_mesh(num_groups: int, devices=None) -> Mesh | None:
    """A mesh over ``devices`` (default all), or None when there is only one.

    Uses the largest device count that divides ``num_groups``.
    """
    devices = list(devices if devices is not None else jax.devices())
    count = max(d for d in range(1, len(devices) + 1) if num_groups % d == 0)
    if count == 1:
        return None
    return Mesh(np.array(devices[:count]), (PARTICLE_AXIS,))


def named(specs, mesh: Mesh):
    """``NamedSharding``s on ``mesh`` for a tree of ``PartitionSpec``s."""
    return jax.tree.map(
        lambda spec: NamedSharding(mesh, spec), specs, is_leaf=lambda x: isinstance(x, P)
    )


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
