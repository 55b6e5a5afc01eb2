"""Image classification with a multi-layer perceptron.

Parameters are a plain nested dict ``{"layer_i": {"w": (fan_in, fan_out), "b": (fan_out,)}}``
initialised with LeCun-normal weights and zero biases; the loss is mean softmax
cross-entropy. Batches are drawn with replacement, uniformly (to within 1e-5), inside ``jit``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from tasks.datasets import Dataset

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "sigmoid": jax.nn.sigmoid,
    "swish": jax.nn.swish,
}


def mlp_task_name(
    hidden_sizes, activation: str, dataset: str, image_size: int, batch_size: int
) -> str:
    """The one spelling of an image-MLP task's name.

    For example ``mlp32_relu_fashion_mnist_embedded8_b128``.
    """
    hidden = "x".join(map(str, hidden_sizes)) or "linear"
    return f"mlp{hidden}_{activation}_{dataset}{image_size}_b{batch_size}"


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["data"],
    meta_fields=["hidden_sizes", "activation", "batch_size"],
)
@dataclasses.dataclass(frozen=True)
class ImageMLPTask:
    data: Dataset
    hidden_sizes: tuple[int, ...] = (32,)
    activation: str = "relu"
    batch_size: int = 128

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {self.activation!r}; choose from {sorted(ACTIVATIONS)}"
            )
        if self.batch_size < 1 or any(h < 1 for h in self.hidden_sizes):
            raise ValueError("batch_size and hidden sizes must be positive")

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return (math.prod(self.data.image_shape), *self.hidden_sizes, self.num_classes)

    @property
    def name(self) -> str:
        return mlp_task_name(
            self.hidden_sizes,
            self.activation,
            self.data.name,
            self.data.image_shape[0],
            self.batch_size,
        )

    def init(self, key: jax.Array) -> dict:
        sizes = self.layer_sizes
        shapes = list(zip(sizes[:-1], sizes[1:]))
        # One draw cut into the weight matrices: XLA compiles one normal per shape
        # slowly (docs/PERFORMANCE.md, "A program that compiles small").
        z = jax.random.normal(key, (sum(a * b for a, b in shapes),))
        params, start = {}, 0
        for i, (n_in, n_out) in enumerate(shapes):
            w = z[start : start + n_in * n_out].reshape(n_in, n_out) / math.sqrt(n_in)
            params[f"layer_{i}"] = {"w": w, "b": jnp.zeros((n_out,))}
            start += n_in * n_out
        return params

    def _activation_fn(self):
        return ACTIVATIONS[self.activation]

    def apply(self, params: dict, images: jax.Array) -> jax.Array:
        act = self._activation_fn()
        h = images.reshape(images.shape[0], -1)
        n = len(params)
        for i in range(n):
            layer = params[f"layer_{i}"]
            h = h @ layer["w"] + layer["b"]
            if i < n - 1:
                h = act(h)
        return h

    def loss(self, params: dict, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        images, labels = batch
        logits = self.apply(params, images)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

    def accuracy(self, params: dict, batch: tuple[jax.Array, jax.Array]) -> jax.Array:
        images, labels = batch
        return jnp.mean(jnp.argmax(self.apply(params, images), -1) == labels)

    def eval_set(self, split: str) -> tuple[jax.Array, jax.Array]:
        return self.data.split(split)

    def batch(self, key: jax.Array, split: str = "train") -> tuple[jax.Array, jax.Array]:
        x, y = self.data.split(split)
        # Random bits modulo the split's size: one threefry call where randint makes
        # three, and a smaller compiled step. An index's probability is off from
        # uniform by less than size / 2**32 (1e-5 for 50,000 examples).
        bits = jax.random.bits(key, (self.batch_size,), jnp.uint32)
        idx = (bits % jnp.uint32(x.shape[0])).astype(jnp.int32)
        return x[idx], y[idx]
