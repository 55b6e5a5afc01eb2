"""Build the embedded Fashion-MNIST file shipped in ``tasks/data/``.

Source: Debian's ``dataset-fashion-mnist`` package (``apt-get install
dataset-fashion-mnist``), which installs the original Zalando IDX files under
``/usr/share/datasets/fashion-mnist``. Licence: Expat (MIT), see
``tasks/data/LICENSE.fashion_mnist``.

Output ``tasks/data/fashion_mnist.npz`` (uint8, compressed) holds:

* ``x8_train`` (60000, 8, 8), ``x8_test`` (10000, 8, 8): every image, downsampled
  with an area (box) filter, the resolution learned_optimization's own
  Fashion-MNIST 8x8 tasks use;
* ``x28_train`` (N28_TRAIN, 28, 28), ``x28_test`` (N28_TEST, 28, 28): the first
  images of each split at full resolution;
* ``y_train`` (60000,), ``y_test`` (10000,): labels (the 28x28 subsets use the
  leading entries).

Run: ``python scripts/make_embedded_fashion_mnist.py [SRC_DIR]``. The output is
deterministic for a given source.
"""

from __future__ import annotations

import gzip
import pathlib
import sys

import numpy as np
from PIL import Image

N28_TRAIN = 6000
N28_TEST = 1000
OUT = pathlib.Path(__file__).resolve().parents[1] / "tasks" / "data" / "fashion_mnist.npz"


def read_idx(path: pathlib.Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def downsample(images: np.ndarray, size: int) -> np.ndarray:
    out = np.empty((len(images), size, size), np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BOX))
    return out


def main() -> None:
    src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist")
    x_train = read_idx(src / "train-images-idx3-ubyte.gz")
    y_train = read_idx(src / "train-labels-idx1-ubyte.gz")
    x_test = read_idx(src / "t10k-images-idx3-ubyte.gz")
    y_test = read_idx(src / "t10k-labels-idx1-ubyte.gz")
    np.savez_compressed(
        OUT,
        x8_train=downsample(x_train, 8),
        x8_test=downsample(x_test, 8),
        x28_train=x_train[:N28_TRAIN],
        x28_test=x_test[:N28_TEST],
        y_train=y_train,
        y_test=y_test,
    )
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
