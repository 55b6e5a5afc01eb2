"""A noisy quadratic: the classic task of the short-horizon bias (Wu et al. 2018)."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["curvatures"],
    meta_fields=["noise_scale", "batch_size"],
)
@dataclasses.dataclass(frozen=True)
class NoisyQuadratic:
    """A Task: ``0.5 sum(h_i x_i^2) + noise . x``, the noise a minibatch's gradient error.

    ``batch(key, "train")`` draws ``noise ~ N(0, noise_scale^2 I)``; any other
    split gives zero noise, i.e. the true loss. Parameters start at ones. The
    classic setting of the short-horizon bias (Wu et al. 2018): a lower learning
    rate lowers the noise floor at once but slows progress along low curvature.
    """

    curvatures: jax.Array
    noise_scale: float = 1.0
    batch_size: int = 1  # the Task protocol's field; the noise stands for one batch

    @classmethod
    def create(
        cls,
        dim: int = 16,
        min_curvature: float = 0.01,
        max_curvature: float = 1.0,
        noise_scale: float = 1.0,
    ) -> NoisyQuadratic:
        curv = jnp.geomspace(min_curvature, max_curvature, dim)
        return cls(curvatures=curv, noise_scale=noise_scale)

    @property
    def name(self) -> str:
        return f"noisy_quadratic{self.curvatures.shape[0]}"

    def init(self, key: jax.Array) -> jax.Array:
        del key
        return jnp.ones_like(self.curvatures)

    def batch(self, key: jax.Array, split: str = "train") -> jax.Array:
        if split == "train":
            return self.noise_scale * jax.random.normal(
                key, self.curvatures.shape, self.curvatures.dtype
            )
        return jnp.zeros_like(self.curvatures)

    def loss(self, params: jax.Array, batch: jax.Array) -> jax.Array:
        return 0.5 * jnp.sum(self.curvatures * params**2) + jnp.dot(batch, params)
