"""Least-squares regression, ``min_W mean ||x W - y||^2``: a task with no classes,
a loss on another scale than cross-entropy, and an ill-conditioned Hessian.

The data are drawn once from a fixed seed: inputs ``x ~ N(0, I_d)`` scaled per
feature (Hessian condition number ``cond``), targets ``y = x W* + noise`` with
``|W*|`` set so the initial loss is about 30, and noise of std ``noise`` (the
loss floor is about ``outputs * noise**2``).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["x", "y"], meta_fields=["batch_size"]
)
@dataclasses.dataclass(frozen=True)
class LeastSquaresTask:
    x: dict  # split -> (n, d)
    y: dict  # split -> (n, k)
    batch_size: int = 32

    @property
    def name(self) -> str:
        d, k = self.x["train"].shape[1], self.y["train"].shape[1]
        return f"least_squares_{d}x{k}_b{self.batch_size}"

    def init(self, key: jax.Array) -> dict:
        d, k = self.x["train"].shape[1], self.y["train"].shape[1]
        return {"w": jax.random.normal(key, (d, k)) * 0.01}

    def loss(self, params: dict, batch) -> jax.Array:
        x, y = batch
        return jnp.mean(jnp.sum(jnp.square(x @ params["w"] - y), axis=-1))

    def batch(self, key: jax.Array, split: str):
        x, y = self.x[split], self.y[split]
        idx = jax.random.randint(key, (self.batch_size,), 0, x.shape[0])
        return x[idx], y[idx]

    def eval_set(self, split: str):
        return self.x[split], self.y[split]


def least_squares(
    dim: int = 16,
    outputs: int = 4,
    cond: float = 10.0,
    noise: float = 0.5,
    seed: int = 0,
    batch_size: int = 32,
) -> LeastSquaresTask:
    rng = np.random.default_rng(seed)
    scales = np.geomspace(1.0, cond**-0.5, dim)  # feature scales: Hessian condition ~ cond
    w_true = rng.normal(size=(dim, outputs)) * np.sqrt(30.0 / outputs / np.sum(scales**2))
    x, y = {}, {}
    for split, n in (("train", 2048), ("validation", 512), ("test", 512)):
        xs = rng.normal(size=(n, dim)) * scales
        x[split] = jnp.asarray(xs, jnp.float32)
        y[split] = jnp.asarray(xs @ w_true + noise * rng.normal(size=(n, outputs)), jnp.float32)
    return LeastSquaresTask(x, y, batch_size)


@dataclasses.dataclass(frozen=True)
class LeastSquaresSpec:
    dim: int = 16
    outputs: int = 4
    cond: float = 10.0
    noise: float = 0.5
    batch_size: int = 32

    @property
    def name(self) -> str:
        return f"least_squares_{self.dim}x{self.outputs}_cond{self.cond:g}_b{self.batch_size}"

    def build(self) -> LeastSquaresTask:
        return least_squares(self.dim, self.outputs, self.cond, self.noise, 0, self.batch_size)
