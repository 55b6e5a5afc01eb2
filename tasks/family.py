"""Task families: distributions over image-MLP tasks, and named held-out suites.

A family samples *task specs* (hashable ``ImageMLPSpec`` values) on the host;
``spec.build()`` turns one into an ``ImageMLPTask``. Different specs have
different parameter shapes, so each compiles its own program: sampling happens
between episodes, never inside a jitted function.

Held-out suites are fixed lists of specs deliberately unlike the default
meta-training task (other widths, depths, activations, batch sizes, resolution),
for evaluating a meta-trained optimizer on problems it was not trained on.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tasks.datasets import load_dataset
from tasks.image_mlp import ACTIVATIONS, ImageMLPTask, mlp_task_name


@dataclasses.dataclass(frozen=True)
class ImageMLPSpec:
    dataset: str = "fashion_mnist_embedded"
    image_size: int = 8
    hidden_sizes: tuple[int, ...] = (32,)
    activation: str = "relu"
    batch_size: int = 128
    grayscale: bool = False
    data_dir: str | None = None  # tfds datasets: None = $TFDS_DATA_DIR or ~/tensorflow_datasets

    @property
    def name(self) -> str:
        dataset = self.dataset + ("_gray" if self.grayscale else "")
        return mlp_task_name(
            self.hidden_sizes, self.activation, dataset, self.image_size, self.batch_size
        )

    def build(self) -> ImageMLPTask:
        return ImageMLPTask(
            load_dataset(self.dataset, self.image_size, self.grayscale, self.data_dir),
            hidden_sizes=tuple(self.hidden_sizes),
            activation=self.activation,
            batch_size=self.batch_size,
        )


@dataclasses.dataclass(frozen=True)
class ImageMLPFamily:
    """Uniform over depth, log-uniform over width, uniform over activations."""

    dataset: str = "fashion_mnist_embedded"
    image_size: int = 8
    depths: tuple[int, ...] = (1, 2, 3)
    width_range: tuple[int, int] = (16, 128)
    activations: tuple[str, ...] = ("relu", "tanh", "gelu", "elu")
    batch_sizes: tuple[int, ...] = (64, 128, 256)

    def __post_init__(self):
        unknown = set(self.activations) - set(ACTIVATIONS)
        if unknown:
            raise ValueError(f"unknown activations {sorted(unknown)}")

    def sample(self, seed: int) -> ImageMLPSpec:
        rng = np.random.default_rng(seed)
        depth = int(rng.choice(self.depths))
        lo, hi = np.log(self.width_range[0]), np.log(self.width_range[1])
        widths = tuple(int(round(np.exp(rng.uniform(lo, hi)))) for _ in range(depth))
        return ImageMLPSpec(
            dataset=self.dataset,
            image_size=self.image_size,
            hidden_sizes=widths,
            activation=str(rng.choice(self.activations)),
            batch_size=int(rng.choice(self.batch_sizes)),
        )


HELD_OUT_SUITES: dict[str, tuple[ImageMLPSpec, ...]] = {
    # Not the default task (MLP 32 relu, 8x8, batch 128) nor any sampled at width 32.
    "tiny": (  # for tests: compiles and runs in seconds
        ImageMLPSpec(hidden_sizes=(8,), activation="tanh", batch_size=32),
    ),
    "small": (
        ImageMLPSpec(hidden_sizes=(64,), activation="tanh"),
        ImageMLPSpec(hidden_sizes=(48, 48), activation="relu", batch_size=64),
    ),
    "default": (
        ImageMLPSpec(hidden_sizes=(64,), activation="tanh"),
        ImageMLPSpec(hidden_sizes=(48, 48), activation="relu", batch_size=64),
        ImageMLPSpec(hidden_sizes=(128, 64, 32), activation="gelu"),
        ImageMLPSpec(hidden_sizes=(16,), activation="elu", batch_size=256),
        ImageMLPSpec(image_size=28, hidden_sizes=(128,), activation="relu"),
    ),
    # Need the datasets prepared through tensorflow-datasets (`lopt prepare NAME`).
    "tfds": (
        ImageMLPSpec(dataset="mnist", image_size=14, hidden_sizes=(64,), activation="tanh"),
        ImageMLPSpec(dataset="fashion_mnist", image_size=28, hidden_sizes=(128,)),
        ImageMLPSpec(dataset="cifar10", image_size=8, hidden_sizes=(64,), grayscale=True),
        ImageMLPSpec(dataset="cifar10", image_size=32, hidden_sizes=(128, 128)),
        ImageMLPSpec(dataset="svhn", image_size=16, hidden_sizes=(64, 64), activation="gelu"),
    ),
}
