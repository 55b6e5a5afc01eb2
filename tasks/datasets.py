"""Image-classification datasets held as device arrays.

Conventions: images are float32 in ``[0, 1]`` with shape ``(n, h, w, c)``;
labels are int32. Every dataset has ``train``, ``validation`` and ``test``
splits; where the source has no validation split, the *last* 10,000 training
examples are carved off (``VALIDATION_SIZE``), identically every time.

The embedded dataset ``fashion_mnist`` ships inside this package
(``tasks/data/fashion_mnist.npz``, Expat licence, built by
``scripts/make_embedded_fashion_mnist.py``): all 70,000 images at 8x8 and a
subset at 28x28 (6,000 train, 1,000 test). It is what the tests and the default
run use, so they work offline on a fresh machine.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
EMBEDDED_FILE = DATA_DIR / "fashion_mnist.npz"
VALIDATION_SIZE = 10_000
EMBEDDED = {"fashion_mnist": (8, 28)}  # name -> image sizes shipped


class DatasetError(ValueError):
    """A dataset that cannot be had; the message says which and what to do."""


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["x_train", "y_train", "x_validation", "y_validation",
                                "x_test", "y_test"],
                   meta_fields=["name", "num_classes"])
@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    num_classes: int
    x_train: jax.Array
    y_train: jax.Array
    x_validation: jax.Array
    y_validation: jax.Array
    x_test: jax.Array
    y_test: jax.Array

    def split(self, split: str) -> tuple[jax.Array, jax.Array]:
        if split not in ("train", "validation", "test"):
            raise ValueError(f"unknown split {split!r}; use train, validation or test")
        return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def available_datasets() -> dict[str, str]:
    """Names a task can use, with where each comes from."""
    return {f"{name}": f"embedded (image_size {' or '.join(map(str, sizes))})"
            for name, sizes in EMBEDDED.items()}


def _carve_validation(x: np.ndarray, y: np.ndarray, size: int):
    size = min(size, len(x) // 6)
    return x[:-size], y[:-size], x[-size:], y[-size:]


@functools.lru_cache(maxsize=8)
def _load_embedded(name: str, image_size: int) -> Dataset:
    sizes = EMBEDDED[name]
    if image_size not in sizes:
        raise DatasetError(
            f"embedded dataset {name!r} ships at image_size {sizes}, not {image_size}")
    with np.load(EMBEDDED_FILE) as f:
        x_tr, x_te = f[f"x{image_size}_train"], f[f"x{image_size}_test"]
        y_tr, y_te = f["y_train"][: len(x_tr)], f["y_test"][: len(x_te)]
    # 28x28 subset is 6,000 images: a 10,000 validation carve would leave nothing.
    x_tr, y_tr, x_va, y_va = _carve_validation(x_tr, y_tr, VALIDATION_SIZE)

    def images(x):
        return jnp.asarray(x[..., None], jnp.float32) / 255.0

    def labels(y):
        return jnp.asarray(y, jnp.int32)

    return Dataset(name=name, num_classes=10,
                   x_train=images(x_tr), y_train=labels(y_tr),
                   x_validation=images(x_va), y_validation=labels(y_va),
                   x_test=images(x_te), y_test=labels(y_te))


def load_dataset(name: str, image_size: int | None = None) -> Dataset:
    """Return dataset ``name`` as device arrays (cached per process)."""
    if name in EMBEDDED:
        return _load_embedded(name, image_size or EMBEDDED[name][0])
    raise DatasetError(
        f"unknown dataset {name!r}; available: {', '.join(sorted(EMBEDDED))}")
