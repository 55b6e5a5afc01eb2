"""Continuous-control environments written in JAX, through gymnax (the optional
``control`` extra: ``pip install 'lopt-pes[control]'``).

An environment here is a gymnax environment with a continuous (``Box``) action
space, stepped without gymnax's automatic reset: the episode is the unrolled
system's, so an episode that terminates early stays where it ended (see
``meta_train.systems.control``). Where gymnax implements differentiable
transitions (Pendulum) they are switched on, so backpropagation through the
episode (TBPTT) sees the dynamics; elsewhere gymnax stops gradients at every
transition and only ES estimators apply (``Environment.differentiable``).
``load_environment`` names the extra when gymnax is missing and the valid names
when one is unknown, in one line each.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any, NamedTuple

import numpy as np

INSTALL = "pip install 'lopt-pes[control]'"
# Environments gymnax registers with continuous actions (those with discrete
# actions cannot take a policy's continuous output).
CONTINUOUS_ENVS = (
    "Pendulum-v1",
    "MountainCarContinuous-v0",
    "PointRobot-misc",
    "Reacher-misc",
    "Swimmer-misc",
)


class EnvironmentUnavailable(ValueError):
    """An unknown environment, or the control extra not installed."""


class Environment(NamedTuple):
    name: str
    env: Any  # a gymnax Environment: reset_env(key, params), step_env(key, state, action, params)
    params: Any  # its EnvParams (a pytree)
    obs_dim: int
    action_low: np.ndarray  # [action_dim]
    action_high: np.ndarray
    max_steps: int  # the environment's own episode limit
    differentiable: bool  # gradients flow through its transitions

    @property
    def action_dim(self) -> int:
        return int(self.action_low.shape[0])


def control_extra_installed() -> bool:
    return importlib.util.find_spec("gymnax") is not None


@functools.cache
def load_environment(name: str) -> Environment:
    """The gymnax environment ``name`` with its default parameters (cached: one
    instance per name, so systems holding it compare equal and share compilations)."""
    if name not in CONTINUOUS_ENVS:
        raise EnvironmentUnavailable(
            f"unknown environment {name!r}; continuous-control environments: "
            + ", ".join(CONTINUOUS_ENVS)
        )
    try:
        import gymnax
    except ImportError:
        raise EnvironmentUnavailable(
            f"environment {name} needs gymnax, the optional control extra: {INSTALL}"
        ) from None
    env, params = gymnax.make(name)
    if env.supports_transition_gradients:
        env = env.with_transition_gradients()
    space = env.action_space(params)
    shape = env.observation_space(params).shape
    low = np.broadcast_to(np.asarray(space.low, np.float32), space.shape).copy()
    high = np.broadcast_to(np.asarray(space.high, np.float32), space.shape).copy()
    return Environment(
        name,
        env,
        params,
        int(np.prod(shape)),
        low,
        high,
        int(params.max_steps_in_episode),
        bool(env.supports_transition_gradients),
    )
