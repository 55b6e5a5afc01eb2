"""A normalized per-parameter MLP learned optimizer with factored second moments.

The design follows the normalized rules of learned_optimization's
``AdafacMLPLOpt`` and Celo/Celo2: the rule sees only per-tensor-normalised
inputs and its update's per-tensor size is fixed by a step size, so nothing it
computes depends on the scale of a task's parameters, gradients or loss.

Every leaf is viewed as a matrix ``(rows, cols)``: ``cols`` is its last axis
and ``rows`` the product of the others (a vector of length n is ``(n, 1)``, a
scalar ``(1, 1)``). Per leaf the state keeps

* momenta ``m_k = b_k m_k + (1 - b_k) g`` at each of ``momentum_decays``;
* factored (Adafactor) second moments: ``r = b r + (1 - b) mean_cols(g^2)``
  and ``c = b c + (1 - b) mean_rows(g^2)`` with ``b = rms_decay``, whose
  estimate of the per-entry second moment is ``v = r c^T / mean(r)`` (for a
  vector it is exactly the running mean of ``g^2``).

For each entry the features are ``p, g, m_1..m_k, g/sqrt(v), m_1/sqrt(v)..,
1/sqrt(v)`` (``4 + 2k`` columns), each column divided by its root-mean-square
over the tensor, and the step count as ``tanh(step / timescale - 1)`` entering
the first layer as a bias. The MLP (shared by all entries) gives a direction
``d``; the update is

    update = -step_mult * exp(s(step)) * d / sqrt(mean_tensor(d^2) + 1e-12)

so each tensor moves by RMS ``step_mult * exp(s)``, where ``s`` is a learned
linear function of the time features (zero at initialisation): a learned
step-size schedule. With ``adaptive_step`` ``s`` also takes a learned linear
function of per-tensor statistics that do not depend on the task's scale: the
cosine between the gradient and each momentum (agreement says "go faster",
oscillation "slow down", as hypergradient and sign-agreement rules do) and the
tensor's fan-in as ``log(rows) / log(1024)`` (wider layers want smaller
entrywise steps), so the rule can set its step size per task and per tensor.

With ``horizon_aware`` the rule's clock is the fraction of the run done,
``step / num_steps`` (``num_steps``, the run's length, is given to ``init``,
as VeLO takes it): the time features become a piecewise-linear (hat) basis over
``RUN_FRACTION_KNOTS`` in place of the absolute ``tanh(step / timescale - 1)``,
so the learned schedule (warm-up, decay) stretches with the run instead of being
extrapolated past the horizons it was meta-trained at.

With ``fan_in_exponent`` (``a``) each tensor's step is also multiplied by
``(FAN_IN_REFERENCE / rows) ** a``, a fixed prior on how the step should shrink
with the tensor's fan-in (``rows``: the input width of a dense layer, ``kh * kw *
in`` of a convolution). With ``a = 1`` it is the muP scaling of Adam-like
updates (an entrywise step of RMS ``eta`` moves a unit's pre-activation by
``O(eta * fan_in)`` once the update aligns with its inputs), so a step that
suits an 8x8-image MLP's first layer (fan-in 64) is not twelve times too large
on a 28x28 one (fan-in 784); the adaptive step's fan-in feature learns
corrections on top of it. ``a = 0`` (the default) is the rule without it.

With ``adam_1d`` (the default) leaves with fewer than 2 dimensions (biases,
norm scales) are updated by Adam instead, with ``b1 = momentum_decays[0]``,
``b2 = rms_decay`` and step ``learning_rate``, as Celo2 does; the rule's
state already holds those statistics.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp

from learned_opt.base import check_run_length
from learned_opt.mlp_lopt import TIMESCALES

# Floors far below any real statistic, so the rule stays invariant to a task's scale
# (a larger floor, like MLPLOpt's 1e-5, is felt once gradients are small), but keep
# rsqrt finite for a tensor whose gradient has always been 0.
_EPS = 1e-30


def _inverse_rms(*columns: jax.Array) -> jax.Array:
    """Per feature column of ``concatenate(columns, axis=1)``: 1 / RMS over the tensor."""
    mean_sq = [jnp.mean(jnp.square(c), axis=0) for c in columns]
    return jax.lax.rsqrt(jnp.concatenate(mean_sq) + _EPS)


# The fan-in at which ``fan_in_exponent`` leaves the step unchanged: the input width of
# an MLP on 8x8 images, so ``step_mult`` keeps its meaning on the tasks it was tuned on.
FAN_IN_REFERENCE = 64

# Knots of a horizon-aware rule's time basis, in fractions of the run: dense at the
# start (warm-up, where the momenta are still filling) and even over the rest.
RUN_FRACTION_KNOTS = (0.0, 0.01, 0.03, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 1.0)


def run_fraction_features(step: jax.Array, num_steps: jax.Array) -> jax.Array:
    """Hat functions of ``step / num_steps`` (clipped to [0, 1]) on
    ``RUN_FRACTION_KNOTS``: non-negative, summing to 1, a linear function of them
    is the linear interpolation of its values at the knots."""
    frac = jnp.clip(jnp.asarray(step, jnp.float32) / num_steps, 0.0, 1.0)
    knots = jnp.asarray(RUN_FRACTION_KNOTS, jnp.float32)
    return jax.vmap(lambda y: jnp.interp(frac, knots, y))(jnp.eye(len(knots)))


def _absolute_time_features(step: jax.Array) -> jax.Array:
    return jnp.tanh(jnp.asarray(step, jnp.float32) / jnp.asarray(TIMESCALES, jnp.float32) - 1.0)


_first_layer_init = hk.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal")


class NormLeafState(NamedTuple):
    momentum: jax.Array  # (rows, cols, k)
    row_second_moment: jax.Array  # (rows,)
    col_second_moment: jax.Array  # (cols,)


class NormMLPLOptState(NamedTuple):
    leaves: tuple  # one NormLeafState per leaf of params, in tree-flatten order
    step: jax.Array  # int32 scalar: updates applied so far


class HorizonNormMLPLOptState(NamedTuple):
    """A horizon-aware rule's state (a class of its own, so the plain rule's state,
    and the checkpoints holding it, keep their structure)."""

    leaves: tuple
    step: jax.Array
    num_steps: jax.Array  # float32 scalar: the run's length


def _tensor_features(g: jax.Array, m: jax.Array) -> jax.Array:
    """Per tensor (``g``: (rows, cols), ``m``: (rows, cols, k)): the cosine between
    the gradient and each momentum, and ``log(rows) / log(1024)``; invariant to the
    scale of the task's parameters, gradients and loss."""
    dots = jnp.einsum("rc,rck->k", g, m)
    norms = jnp.sqrt(jnp.sum(jnp.square(g)) * jnp.sum(jnp.square(m), axis=(0, 1)) + _EPS)
    fan_in = jnp.log(jnp.float32(g.shape[0])) / jnp.log(1024.0)
    return jnp.append(dots / norms, fan_in)


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], 1
    return math.prod(shape[:-1]), shape[-1]


@dataclasses.dataclass(frozen=True)
class NormMLPLOpt:
    hidden_sizes: tuple[int, ...] = (16, 16)
    momentum_decays: tuple[float, ...] = (0.9, 0.99)
    rms_decay: float = 0.999
    step_mult: float = 1e-3
    adam_1d: bool = True
    learning_rate: float = 1e-3  # Adam's, for leaves with fewer than 2 dimensions
    adaptive_step: bool = False  # the step size also sees per-tensor statistics
    horizon_aware: bool = False  # the clock is step / num_steps (init needs num_steps)
    fan_in_exponent: float = 0.0  # step *= (FAN_IN_REFERENCE / fan_in) ** fan_in_exponent

    def __post_init__(self):
        if not self.hidden_sizes or any(h < 1 for h in self.hidden_sizes):
            raise ValueError("hidden_sizes: at least one layer, each of width >= 1")
        if not self.momentum_decays:
            raise ValueError("momentum_decays: at least one decay")
        if not all(0 <= b < 1 for b in (*self.momentum_decays, self.rms_decay)):
            raise ValueError("momentum_decays and rms_decay must lie in [0, 1)")
        if not 0 <= self.fan_in_exponent <= 2:
            raise ValueError(f"fan_in_exponent must lie in [0, 2], got {self.fan_in_exponent}")

    @property
    def uses_horizon(self) -> bool:
        """Whether ``init`` needs the run's length (``learned_opt.base.init_for_run``)."""
        return self.horizon_aware

    @property
    def num_time_features(self) -> int:
        return len(RUN_FRACTION_KNOTS if self.horizon_aware else TIMESCALES)

    @property
    def num_features(self) -> int:
        return 4 + 2 * len(self.momentum_decays)

    # -- the network --------------------------------------------------------
    def _forward(self, rows: jax.Array, time_features: jax.Array, row_scale: jax.Array):
        h0 = self.hidden_sizes[0]
        w_in = hk.get_parameter("w_in", (rows.shape[-1], h0), rows.dtype, _first_layer_init)
        w_time = hk.get_parameter(
            "w_time", (time_features.shape[-1], h0), rows.dtype, _first_layer_init
        )
        b_in = hk.get_parameter("b_in", (h0,), rows.dtype, jnp.zeros)
        h = jax.nn.relu(rows @ (row_scale[:, None] * w_in) + (time_features @ w_time + b_in))
        for size in self.hidden_sizes[1:]:
            h = jax.nn.relu(hk.Linear(size)(h))
        return hk.Linear(1, name="out")(h)[:, 0]

    def _log_step_scale(self, time_features: jax.Array, tensor_features: jax.Array) -> jax.Array:
        w = hk.get_parameter("w_schedule", (time_features.shape[-1],), jnp.float32, jnp.zeros)
        log_step = time_features @ w
        if self.adaptive_step:
            shape = (tensor_features.shape[-1],)
            log_step += tensor_features @ hk.get_parameter(
                "w_tensor", shape, jnp.float32, jnp.zeros
            )
        return log_step

    def _both(self, rows, time_features, row_scale, tensor_features):
        direction = self._forward(rows, time_features, row_scale)
        return direction, self._log_step_scale(time_features, tensor_features)

    @property
    def _net(self) -> hk.Transformed:
        return hk.without_apply_rng(hk.transform(self._both))

    # -- the contract -------------------------------------------------------
    def init_meta(self, key: jax.Array) -> dict:
        rows = jnp.zeros((1, self.num_features), jnp.float32)
        return self._net.init(
            key,
            rows,
            jnp.zeros((self.num_time_features,)),
            jnp.ones((self.num_features,)),
            jnp.zeros((len(self.momentum_decays) + 1,)),
        )

    def init(
        self, theta: dict, params, num_steps: int | None = None
    ) -> NormMLPLOptState | HorizonNormMLPLOptState:
        """The state of a run of ``num_steps`` updates; a horizon-aware rule needs
        it (``ValueError`` without it), the others ignore it."""
        del theta
        if self.horizon_aware:
            check_run_length(num_steps)
        k = len(self.momentum_decays)

        def leaf(p):
            rows, cols = _matrix_shape(jnp.shape(p))
            return NormLeafState(
                jnp.zeros((rows, cols, k), jnp.float32),
                jnp.zeros((rows,), jnp.float32),
                jnp.zeros((cols,), jnp.float32),
            )

        leaves = tuple(leaf(p) for p in jax.tree.leaves(params))
        step = jnp.zeros((), jnp.int32)
        if self.horizon_aware:
            return HorizonNormMLPLOptState(leaves, step, jnp.asarray(num_steps, jnp.float32))
        return NormMLPLOptState(leaves, step)

    def update(
        self,
        theta: dict,
        opt_state: NormMLPLOptState | HorizonNormMLPLOptState,
        grads,
        params,
        loss: jax.Array | None = None,
    ):
        del loss  # scale-dependent: this rule does not see it
        if params is None:
            raise ValueError("NormMLPLOpt.update needs params (it uses them as a feature)")
        leaves_p, treedef = jax.tree.flatten(params)
        leaves_g = treedef.flatten_up_to(grads)
        step = opt_state.step + 1
        if isinstance(opt_state, HorizonNormMLPLOptState):
            time_features = run_fraction_features(opt_state.step, opt_state.num_steps)
        else:
            time_features = _absolute_time_features(opt_state.step)
        decays = jnp.asarray(self.momentum_decays, jnp.float32)
        b = self.rms_decay
        updates, new_leaves = [], []
        for p, g, s in zip(leaves_p, leaves_g, opt_state.leaves):
            shape = jnp.shape(p)
            rows, cols = _matrix_shape(shape)
            g32 = jnp.asarray(g, jnp.float32).reshape(rows, cols)
            g2 = jnp.square(g32)
            m = decays * s.momentum + (1 - decays) * g32[..., None]
            r = b * s.row_second_moment + (1 - b) * jnp.mean(g2, axis=1)
            c = b * s.col_second_moment + (1 - b) * jnp.mean(g2, axis=0)
            new_leaves.append(NormLeafState(m, r, c))
            if self.adam_1d and len(shape) < 2:
                delta = self._adam(m[..., 0], r[:, None], step)
            else:
                delta = self._learned(theta, p, g32, m, r, c, time_features)
            updates.append(delta.reshape(shape).astype(jnp.result_type(p)))
        new_state = opt_state._replace(leaves=tuple(new_leaves), step=step)
        return treedef.unflatten(updates), new_state

    def _adam(self, m: jax.Array, v: jax.Array, step: jax.Array) -> jax.Array:
        t = step.astype(jnp.float32)
        m_hat = m / (1 - self.momentum_decays[0] ** t)
        v_hat = v / (1 - self.rms_decay**t)
        return -self.learning_rate * m_hat / (jnp.sqrt(v_hat) + 1e-8)

    def _learned(self, theta, p, g, m, r, c, time_features) -> jax.Array:
        rows, cols = g.shape
        k = m.shape[-1]
        # Adafactor's estimate of the second moment: r c^T / mean(r).
        inv_sqrt_v = jax.lax.rsqrt(r[:, None] * c[None, :] / (jnp.mean(r) + _EPS) + _EPS)
        n = rows * cols
        columns = (
            jnp.asarray(p, jnp.float32).reshape(n, 1),
            g.reshape(n, 1),
            m.reshape(n, k),
            (g * inv_sqrt_v).reshape(n, 1),
            (m * inv_sqrt_v[..., None]).reshape(n, k),
            inv_sqrt_v.reshape(n, 1),
        )
        feats, scale = jnp.concatenate(columns, axis=1), _inverse_rms(*columns)
        with jax.named_scope("mlp"):
            # The plain rule's step does not read them: no per-tensor reductions for it.
            tensor = _tensor_features(g, m) if self.adaptive_step else jnp.zeros((k + 1,))
            d, log_step = self._net.apply(theta, feats, time_features, scale, tensor)
        d = d * jax.lax.rsqrt(jnp.mean(jnp.square(d)) + 1e-12)
        return -self.step_mult * self.fan_in_factor(rows) * jnp.exp(log_step) * d

    def fan_in_factor(self, fan_in: int) -> float:
        """The fixed factor ``(FAN_IN_REFERENCE / fan_in) ** fan_in_exponent`` on the
        step of a tensor whose matrix view has ``fan_in`` rows."""
        return (FAN_IN_REFERENCE / fan_in) ** self.fan_in_exponent

    def num_theta(self) -> int:
        sizes = (self.num_features, *self.hidden_sizes, 1)
        body = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
        adaptive = len(self.momentum_decays) + 1 if self.adaptive_step else 0
        return body + (self.hidden_sizes[0] + 1) * self.num_time_features + adaptive

    def flops_per_param(self) -> int:
        sizes = (self.num_features, *self.hidden_sizes, 1)
        return 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
