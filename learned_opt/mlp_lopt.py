"""The per-parameter MLP learned optimizer.

For every scalar parameter the optimizer builds a feature row and a small MLP
(shared by all parameters) maps it to ``(direction, magnitude)``; the update is

    update = -direction * exp(exp_mult * magnitude) * step_mult

Per-row features, each normalised per tensor by its root-mean-square
(``x / sqrt(mean(x^2) + 1e-5)``), so the optimizer sees the same scale whatever
the layer: the parameter, the gradient, momenta at each of ``decays``, second
moments at the same decays, ``momentum * rsqrt(second_moment)`` and
``rsqrt(second_moment)``. A tanh embedding of the step count,
``tanh(step / timescale - 1)``, is the same for every row, so it enters as a
bias of the first layer (one small matmul per step, not one per parameter).

Cost: the MLP, applied to every parameter, is almost all of the work. It runs
once per tensor on that tensor's ``(size, num_features)`` feature matrix; the
per-tensor normalisation is folded into the first layer (``(x * s) @ W ==
x @ (s[:, None] * W)``), so the normalised features are never written out and
the matrix feeds the first matmul directly. Work is in float32; updates are
cast to each leaf's dtype.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp

TIMESCALES = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1e3, 3e3, 1e4, 3e4, 1e5)


# The first layer's weights start like Haiku's VarianceScaling(1, "fan_in",
# "truncated_normal"): a normal cut at 2 standard deviations has standard
# deviation 0.8796, so its scale is divided by that to give variance 1/fan_in.
# The other layers are hk.Linear with its default, TruncatedNormal(1/sqrt(fan_in)).
_TRUNCATED_STD = 0.87962566103423978
_FIRST_LAYER = ("w_in", "w_time")
_first_layer_init = hk.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal")


class MLPLOptState(NamedTuple):
    momentum: object  # params-shaped tree, each leaf with a trailing (len(decays),) axis
    second_moment: object  # same
    step: jax.Array  # int32 scalar: updates applied so far


def _inverse_rms(*columns: jax.Array) -> jax.Array:
    """Per feature column of ``concatenate(columns, axis=1)``: 1 / sqrt(mean(x^2) + 1e-5).

    Reduced block by block so the concatenated matrix is not written out twice.
    """
    mean_sq = [jnp.mean(jnp.square(c), axis=0) for c in columns]
    return jax.lax.rsqrt(jnp.concatenate(mean_sq) + 1e-5)


@dataclasses.dataclass(frozen=True)
class MLPLOpt:
    hidden_sizes: tuple[int, ...] = (32, 32)
    decays: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)
    step_mult: float = 0.001
    exp_mult: float = 0.001

    @property
    def num_features(self) -> int:
        return 2 + 4 * len(self.decays)

    # -- the network --------------------------------------------------------
    def _forward(
        self, rows: jax.Array, time_features: jax.Array, row_scale: jax.Array | None = None
    ) -> jax.Array:
        """The MLP on ``rows * row_scale`` (row_scale: one factor per feature column)."""
        f_in = rows.shape[-1]
        h0 = self.hidden_sizes[0]
        w_in = hk.get_parameter("w_in", (f_in, h0), rows.dtype, _first_layer_init)
        w_time = hk.get_parameter(
            "w_time", (time_features.shape[-1], h0), rows.dtype, _first_layer_init
        )
        b_in = hk.get_parameter("b_in", (h0,), rows.dtype, jnp.zeros)
        if row_scale is not None:
            w_in = row_scale[:, None] * w_in
        h = jax.nn.relu(rows @ w_in + (time_features @ w_time + b_in))
        for size in self.hidden_sizes[1:]:
            h = jax.nn.relu(hk.Linear(size)(h))
        return hk.Linear(2, name="out")(h)

    @property
    def _net(self) -> hk.Transformed:
        return hk.without_apply_rng(hk.transform(self._forward))

    # -- the contract -------------------------------------------------------
    def init_meta(self, key: jax.Array) -> dict:
        """The network's initial weights, distributed as its Haiku ``init`` would draw
        them (see ``_TRUNCATED_STD``), biases 0.

        Drawn as one vector cut into the weight matrices: Haiku's ``init`` draws
        each matrix on its own, and XLA compiles one random draw per shape slowly.
        """
        rows = jnp.zeros((1, self.num_features), jnp.float32)
        shapes = jax.eval_shape(
            self._net.init, key, rows, jnp.zeros((len(TIMESCALES),), jnp.float32)
        )
        leaves, treedef = jax.tree_util.tree_flatten_with_path(shapes)
        sizes = [x.size if x.ndim == 2 else 0 for _, x in leaves]  # weights: the 2-D leaves
        z = jax.random.truncated_normal(key, -2.0, 2.0, (sum(sizes),), jnp.float32)
        out, start = [], 0
        for (path, x), size in zip(leaves, sizes):
            if size:
                scale = 1.0 / jnp.sqrt(x.shape[0])
                if path[-1].key in _FIRST_LAYER:
                    scale = scale / _TRUNCATED_STD
                out.append(z[start : start + size].reshape(x.shape) * scale)
            else:
                out.append(jnp.zeros(x.shape, x.dtype))
            start += size
        return jax.tree_util.tree_unflatten(treedef, out)

    def init(self, theta: dict, params) -> MLPLOptState:
        del theta
        d = len(self.decays)

        def zeros(p):
            return jnp.zeros((*jnp.shape(p), d), jnp.float32)

        return MLPLOptState(
            momentum=jax.tree.map(zeros, params),
            second_moment=jax.tree.map(zeros, params),
            step=jnp.zeros((), jnp.int32),
        )

    def update(
        self, theta: dict, opt_state: MLPLOptState, grads, params, loss: jax.Array | None = None
    ):
        del loss  # this architecture has no loss feature
        if params is None:
            raise ValueError("MLPLOpt.update needs params (it uses them as a feature)")
        decays = jnp.asarray(self.decays, jnp.float32)
        leaves_p, treedef = jax.tree.flatten(params)
        leaves_g = treedef.flatten_up_to(grads)
        leaves_m = treedef.flatten_up_to(opt_state.momentum)
        leaves_v = treedef.flatten_up_to(opt_state.second_moment)

        step_f = opt_state.step.astype(jnp.float32)
        time_features = jnp.tanh(step_f / jnp.asarray(TIMESCALES, jnp.float32) - 1.0)
        new_m, new_v, updates = [], [], []
        for p, g, m, v in zip(leaves_p, leaves_g, leaves_m, leaves_v):
            p32 = jnp.asarray(p, jnp.float32).reshape(-1, 1)
            g32 = jnp.asarray(g, jnp.float32).reshape(-1, 1)
            m = decays * m.reshape(-1, len(self.decays)) + (1 - decays) * g32
            v = decays * v.reshape(-1, len(self.decays)) + (1 - decays) * jnp.square(g32)
            rsqrt = jax.lax.rsqrt(v + 1e-8)
            columns = (p32, g32, m, v, m * rsqrt, rsqrt)
            rows, row_scale = jnp.concatenate(columns, axis=1), _inverse_rms(*columns)
            with jax.named_scope("mlp"):
                out = self._net.apply(theta, rows, time_features, row_scale)
            delta = -out[:, 0] * jnp.exp(self.exp_mult * out[:, 1]) * self.step_mult
            updates.append(delta.reshape(jnp.shape(p)).astype(jnp.result_type(p)))
            new_m.append(m.reshape(*jnp.shape(p), -1))
            new_v.append(v.reshape(*jnp.shape(p), -1))

        new_state = MLPLOptState(
            momentum=treedef.unflatten(new_m),
            second_moment=treedef.unflatten(new_v),
            step=opt_state.step + 1,
        )
        return treedef.unflatten(updates), new_state

    def num_theta(self) -> int:
        sizes = (self.num_features, *self.hidden_sizes, 2)
        body = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
        return body + len(TIMESCALES) * self.hidden_sizes[0]

    def flops_per_param(self) -> int:
        """Multiply-adds x 2 of the MLP for one parameter row (for FLOP budgets)."""
        sizes = (self.num_features, *self.hidden_sizes, 2)
        return 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
