"""Image classification with a small convolutional network.

Two 3x3 convolutions (the second with stride 2), ReLU, global average pooling
and a linear read-out: a task whose parameter shapes (4-D kernels) and
curvature differ from the MLPs the learned optimizers are meta-trained on.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from tasks.datasets import Dataset, load_dataset


@functools.partial(
    jax.tree_util.register_dataclass, data_fields=["data"], meta_fields=["channels", "batch_size"]
)
@dataclasses.dataclass(frozen=True)
class ConvNetTask:
    data: Dataset
    channels: tuple[int, int] = (8, 16)
    batch_size: int = 64

    @property
    def name(self) -> str:
        c1, c2 = self.channels
        return f"conv{c1}x{c2}_{self.data.name}{self.data.image_shape[0]}_b{self.batch_size}"

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def init(self, key: jax.Array) -> dict:
        k1, k2, k3 = jax.random.split(key, 3)
        c_in = self.data.image_shape[-1]
        c1, c2 = self.channels

        def he(k, shape, fan_in):
            return jax.random.normal(k, shape) * jnp.sqrt(2.0 / fan_in)

        return {
            "conv1": {"w": he(k1, (3, 3, c_in, c1), 9 * c_in), "b": jnp.zeros((c1,))},
            "conv2": {"w": he(k2, (3, 3, c1, c2), 9 * c1), "b": jnp.zeros((c2,))},
            "out": {
                "w": he(k3, (c2, self.num_classes), c2) * 0.5,
                "b": jnp.zeros((self.num_classes,)),
            },
        }

    def apply(self, params: dict, images: jax.Array) -> jax.Array:
        def conv(h, layer, stride):
            return jax.nn.relu(conv_same(h, layer["w"], stride) + layer["b"])

        h = conv(conv(images, params["conv1"], 1), params["conv2"], 2)
        return jnp.mean(h, axis=(1, 2)) @ params["out"]["w"] + params["out"]["b"]

    def loss(self, params: dict, batch) -> jax.Array:
        images, labels = batch
        logp = jax.nn.log_softmax(self.apply(params, images))
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

    def accuracy(self, params: dict, batch) -> jax.Array:
        images, labels = batch
        return jnp.mean(jnp.argmax(self.apply(params, images), -1) == labels)

    def batch(self, key: jax.Array, split: str):
        x, y = self.data.split(split)
        idx = jax.random.randint(key, (self.batch_size,), 0, x.shape[0])
        return x[idx], y[idx]

    def eval_set(self, split: str):
        return self.data.split(split)


def conv_same(h: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """``lax.conv_general_dilated(h, w, (stride, stride), "SAME")`` for NHWC images and
    HWIO kernels, computed as one matmul over k*k shifted slices (im2col).

    Same padding and numbers as XLA's convolution, but inside a ``lax.scan`` (every
    training loop here) XLA:CPU runs XLA's convolution several times slower than
    slices and a dot (``bench/conv_in_scan.py``)."""
    k = w.shape[0]
    height, width = h.shape[1], h.shape[2]
    out_h, out_w = -(-height // stride), -(-width // stride)
    pad_h = max((out_h - 1) * stride + k - height, 0)
    pad_w = max((out_w - 1) * stride + k - width, 0)
    padded = jnp.pad(
        h, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0))
    )
    span_h, span_w = (out_h - 1) * stride + 1, (out_w - 1) * stride + 1
    patches = jnp.stack(
        [padded[:, i : i + span_h : stride, j : j + span_w : stride, :]
         for i in range(k) for j in range(k)],
        axis=3,
    )  # fmt: skip
    return jnp.einsum("bhwkc,kco->bhwo", patches, w.reshape(k * k, *w.shape[2:]))


@dataclasses.dataclass(frozen=True)
class ConvNetSpec:
    dataset: str = "fashion_mnist_embedded"
    image_size: int = 28
    channels: tuple[int, int] = (8, 16)
    batch_size: int = 64

    @property
    def name(self) -> str:
        c1, c2 = self.channels
        return f"conv{c1}x{c2}_{self.dataset}{self.image_size}_b{self.batch_size}"

    def build(self) -> ConvNetTask:
        data = load_dataset(self.dataset, self.image_size)
        return ConvNetTask(data, channels=self.channels, batch_size=self.batch_size)
