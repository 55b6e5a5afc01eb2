"""Image-classification datasets held as device arrays.

Conventions: images are float32 in ``[0, 1]`` with shape ``(n, h, w, c)``;
labels are int32. Every dataset has ``train``, ``validation`` and ``test``
splits; where the source has no validation split, the *last* 10,000 training
examples are carved off (``VALIDATION_SIZE``; a sixth of a training set
smaller than 40,000), identically every time.

Two kinds of source:

* ``fashion_mnist_embedded`` ships inside this package
  (``tasks/data/fashion_mnist.npz``, Expat licence, built by
  ``scripts/make_embedded_fashion_mnist.py``): all 70,000 Fashion-MNIST images
  at 8x8 and a subset at 28x28 (6,000 train, 1,000 test). The tests and the
  default run use it, so they work offline on a fresh machine.
* ``mnist``, ``fashion_mnist``, ``cifar10``, ``svhn``: the full datasets read
  through tensorflow-datasets (``tasks.tfds_data``) from a local preparation,
  at any ``image_size`` (area-averaging resize) and optionally ``grayscale``.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from tasks import tfds_data
from tasks.tfds_data import DatasetError

DATA_DIR = pathlib.Path(__file__).resolve().parent / "data"
EMBEDDED_FILE = DATA_DIR / "fashion_mnist.npz"
VALIDATION_SIZE = 10_000
EMBEDDED = {"fashion_mnist_embedded": (8, 28)}  # name -> image sizes shipped
SPLITS = ("train", "validation", "test")
LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601, for grayscale=True


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["x_train", "y_train", "x_validation", "y_validation", "x_test", "y_test"],
    meta_fields=["name", "num_classes"],
)
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


def available_datasets(data_dir: str | None = None) -> dict[str, str]:
    """Names a task can use, with where each comes from and whether it is ready."""
    out = {
        name: f"embedded, ready (image_size {' or '.join(map(str, sizes))})"
        for name, sizes in EMBEDDED.items()
    }
    root = tfds_data.data_dir_of(data_dir)
    for name in tfds_data.SOURCES:
        out[name] = tfds_data.preparation_status(name, root)
    return out


def _carve_validation(x: np.ndarray, y: np.ndarray, size: int):
    # Small training sets (the 6,000-image embedded 28x28 subset) give a sixth.
    size = size if len(x) >= 4 * size else len(x) // 6
    return x[:-size], y[:-size], x[-size:], y[-size:]


@functools.lru_cache(maxsize=8)
def _load_embedded(name: str, image_size: int) -> Dataset:
    sizes = EMBEDDED[name]
    if image_size not in sizes:
        raise DatasetError(
            f"embedded dataset {name!r} ships at image_size {sizes}, not {image_size}"
        )
    with np.load(EMBEDDED_FILE) as f:
        x_tr, x_te = f[f"x{image_size}_train"], f[f"x{image_size}_test"]
        y_tr, y_te = f["y_train"][: len(x_tr)], f["y_test"][: len(x_te)]
    # 28x28 subset is 6,000 images: a 10,000 validation carve would leave nothing.
    x_tr, y_tr, x_va, y_va = _carve_validation(x_tr, y_tr, VALIDATION_SIZE)

    def images(x):
        return jnp.asarray(x[..., None], jnp.float32) / 255.0

    def labels(y):
        return jnp.asarray(y, jnp.int32)

    return Dataset(
        name=name,
        num_classes=10,
        x_train=images(x_tr),
        y_train=labels(y_tr),
        x_validation=images(x_va),
        y_validation=labels(y_va),
        x_test=images(x_te),
        y_test=labels(y_te),
    )


def _to_float(
    images: np.ndarray, image_size: int | None, grayscale: bool, chunk: int = 8192
) -> jax.Array:
    """uint8 ``(n, h, w, c)`` -> float32 in [0, 1], resized and/or grayscale, on device."""
    if image_size is not None and image_size < 1:
        raise DatasetError(f"image_size must be >= 1, got {image_size}")
    n, h, w, c = images.shape
    size = image_size or h

    @jax.jit
    def convert(x):
        x = x.astype(jnp.float32) / 255.0
        if grayscale and c == 3:
            x = jnp.tensordot(x, jnp.asarray(LUMINANCE, jnp.float32), axes=1)[..., None]
        if h == w and h % size == 0:  # an integer factor: the exact area average
            f = h // size
            x = x.reshape(x.shape[0], size, f, size, f, x.shape[-1]).mean(axis=(2, 4))
        elif (size, size) != (h, w):  # antialiased: a downsample still averages its area
            x = jax.image.resize(x, (x.shape[0], size, size, x.shape[-1]), "linear", antialias=True)
        return x

    # In chunks: the float32 copy at full size is 4x the uint8 one.
    return jnp.concatenate([convert(images[i : i + chunk]) for i in range(0, n, chunk)])


def load(
    name: str,
    split: str,
    *,
    image_size: int | None = None,
    grayscale: bool = False,
    data_dir: str | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Normalised images ``(n, s, s, c)`` float32 and int32 labels of one split, on device."""
    data = load_dataset(name, image_size, grayscale, data_dir)
    return data.split(split)


def load_dataset(
    name: str, image_size: int | None = None, grayscale: bool = False, data_dir: str | None = None
) -> Dataset:
    """Return dataset ``name`` with all three splits as device arrays (cached per process)."""
    if name in EMBEDDED:
        return _load_embedded(name, image_size or EMBEDDED[name][0])
    if name in tfds_data.SOURCES:
        root = str(tfds_data.data_dir_of(data_dir))
        return _load_tfds(name, image_size or None, grayscale, root)
    raise DatasetError(
        f"unknown dataset {name!r}; available: " + ", ".join([*EMBEDDED, *tfds_data.SOURCES])
    )


@functools.lru_cache(maxsize=8)
def _load_tfds(name: str, image_size: int | None, grayscale: bool, data_dir: str) -> Dataset:
    x_tr, y_tr = tfds_data.read_split(name, "train", data_dir)
    x_te, y_te = tfds_data.read_split(name, "test", data_dir)
    x_tr, y_tr, x_va, y_va = _carve_validation(x_tr, y_tr, VALIDATION_SIZE)
    num_classes = int(max(y_tr.max(), y_te.max())) + 1

    def images(x):
        return _to_float(x, image_size, grayscale)

    return Dataset(
        name=name,
        num_classes=max(num_classes, 10),
        x_train=images(x_tr),
        y_train=jnp.asarray(y_tr),
        x_validation=images(x_va),
        y_validation=jnp.asarray(y_va),
        x_test=images(x_te),
        y_test=jnp.asarray(y_te),
    )
