"""A policy acting in a continuous-control environment, as an unrolled system.

theta is the weights of an MLP policy (tanh hidden layers; the output squashed
by tanh onto the action box, ``a = low + (high - low) (tanh(z) + 1) / 2``,
deterministic). The state is ``batch_size`` environments, each in its own
episode from its own initial state, their observations, which have ended, and
the step counter. One step acts in every environment and ``L_t`` is the mean
over the environments of the **negative reward** of that step; an
environment whose episode has ended (a terminal state before the horizon)
stays there and adds 0. An episode of the system is ``horizon`` environment
steps from fresh initial states (a horizon past the environment's own limit
raises it), so ``-horizon x`` (the mean of ``L_t`` over an episode) is the mean
return.

Gradients reach theta through the environment's dynamics over the whole
episode: an ES estimator on K-step truncations (truncated ES) sees only the
reward of the next K steps, the greedy bias the PES paper shows on control.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from meta_train.pytree import where_tree
from meta_train.systems.base import cap_loss


class ControlState(NamedTuple):
    env_state: Any  # the environments' states, leading axis batch_size
    obs: jax.Array  # [batch, obs_dim]
    done: jax.Array  # bool [batch]: the episode reached a terminal state
    t: jax.Array  # int32 []: steps taken this episode


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["env_params", "action_low", "action_high"],
    meta_fields=["env", "obs_dim", "hidden_sizes", "horizon", "batch_size", "loss_cap"],
)
@dataclasses.dataclass(frozen=True)
class ControlSystem:
    env: Any  # a gymnax environment (tasks.control.load_environment): static
    env_params: Any
    action_low: jax.Array  # [action_dim]
    action_high: jax.Array
    obs_dim: int
    hidden_sizes: tuple[int, ...] = (32,)
    horizon: int = 200
    batch_size: int = 1  # environments per particle, each from its own initial state
    loss_cap: float = 1000.0  # L_t (a negative reward) is clipped to it; non-finite -> it

    loss_name = "mean cost per step (-return / T)"  # in the run's log

    @classmethod
    def create(cls, environment, **kwargs) -> ControlSystem:
        """From a ``tasks.control.Environment``; ``horizon`` defaults to its episode
        limit, and a longer one raises the limit (``max_steps_in_episode``)."""
        kwargs.setdefault("horizon", environment.max_steps)
        if kwargs["horizon"] < 1:
            raise ValueError(f"horizon must be >= 1, got {kwargs['horizon']}")
        params = environment.params
        if kwargs["horizon"] > environment.max_steps:  # a longer episode than gymnax's default
            params = params.replace(max_steps_in_episode=kwargs["horizon"])
        return cls(
            environment.env,
            params,
            jnp.asarray(environment.action_low),
            jnp.asarray(environment.action_high),
            environment.obs_dim,
            **kwargs,
        )

    def init_theta(self, key: jax.Array) -> dict:
        """Hidden layers scaled by 1/sqrt(fan-in); the output layer zero, so every
        initialisation starts from the middle of the action box."""
        sizes = (self.obs_dim, *self.hidden_sizes)
        keys = jax.random.split(key, len(self.hidden_sizes))
        theta = {
            f"w{i}": jax.random.normal(k, (m, n)) / math.sqrt(m)
            for i, (k, m, n) in enumerate(zip(keys, sizes[:-1], sizes[1:]))
        }
        theta |= {f"b{i}": jnp.zeros((n,)) for i, n in enumerate(sizes[1:])}
        out = len(self.hidden_sizes)
        theta[f"w{out}"] = jnp.zeros((sizes[-1], self.action_low.shape[0]))
        theta[f"b{out}"] = jnp.zeros(self.action_low.shape)
        return theta

    def act(self, theta: dict, obs: jax.Array) -> jax.Array:
        """The policy's actions for observations ``obs`` [batch, obs_dim]."""
        h = obs.reshape(obs.shape[0], -1)
        for i in range(len(self.hidden_sizes)):
            h = jnp.tanh(h @ theta[f"w{i}"] + theta[f"b{i}"])
        out = len(self.hidden_sizes)
        z = jnp.tanh(h @ theta[f"w{out}"] + theta[f"b{out}"])
        return self.action_low + (self.action_high - self.action_low) * (z + 1.0) / 2.0

    def init(self, theta: dict, key: jax.Array) -> ControlState:
        del theta
        keys = jax.random.split(key, self.batch_size)
        obs, env_state = jax.vmap(self.env.reset_env, (0, None))(keys, self.env_params)
        obs = obs.reshape(self.batch_size, -1)
        done = jnp.zeros((self.batch_size,), bool)
        return ControlState(env_state, obs, done, jnp.zeros((), jnp.int32))

    def step(
        self, theta: dict, state: ControlState, key: jax.Array
    ) -> tuple[ControlState, jax.Array]:
        action = self.act(theta, state.obs)
        keys = jax.random.split(key, self.batch_size)
        obs, env_state, reward, terminal, _ = jax.vmap(self.env.step_env, (0, 0, 0, None))(
            keys, state.env_state, action, self.env_params
        )
        running = ~state.done
        loss = jnp.mean(jnp.where(running, -reward, 0.0))
        # An ended episode keeps its final state (no automatic reset: the system's
        # episode, not the environment's, decides when to begin again).
        env_state = where_tree(running, env_state, state.env_state)
        obs = jnp.where(running[:, None], obs.reshape(self.batch_size, -1), state.obs)
        done = state.done | terminal
        return ControlState(env_state, obs, done, state.t + 1), cap_loss(loss, self.loss_cap)
