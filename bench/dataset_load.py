"""Time to load a CIFAR-10-sized tfds dataset into device memory.

Fabricates a real tfds preparation of ``cifar10`` (array_record, PNG images,
the registered builder's features; ``tasks.tfds_data.write_prepared``) with
``--train`` x 32 x 32 x 3 training images (default 50,000, CIFAR-10's size)
and ``--test`` test images, then times in fresh processes:

* the first load: tfds ``data_source`` reads and pillow decodes every image,
  the uint8 cache is written, the float32 splits go to device memory;
* a cached load: the ``.npy`` cache straight to device memory.

    python bench/dataset_load.py [--train 50000] [--test 10000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_once(data_dir: str) -> dict:
    t0 = time.perf_counter()
    import jax

    from tasks.datasets import load_dataset

    t_import = time.perf_counter() - t0
    t0 = time.perf_counter()
    data = load_dataset("cifar10", data_dir=data_dir)
    jax.block_until_ready(data)
    return {
        "seconds": time.perf_counter() - t0,
        "import_seconds": t_import,
        "train_shape": list(data.x_train.shape),
        "validation": int(data.x_validation.shape[0]),
        "test": int(data.x_test.shape[0]),
        "device": str(data.x_train.devices()),
    }


def in_subprocess(data_dir: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", data_dir],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=50_000)
    p.add_argument("--test", type=int, default=10_000)
    p.add_argument("--dir", help="data directory to use (default: a temporary one)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:
        print(json.dumps(load_once(args.child)))
        return
    import numpy as np

    from tasks import tfds_data

    tmp = None if args.dir else tempfile.TemporaryDirectory()
    data_dir = args.dir if tmp is None else tmp.name
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    tfds_data.write_prepared(
        "cifar10",
        {
            "train": (
                rng.integers(0, 256, (args.train, 32, 32, 3), np.uint8),
                rng.integers(0, 10, args.train),
            ),
            "test": (
                rng.integers(0, 256, (args.test, 32, 32, 3), np.uint8),
                rng.integers(0, 10, args.test),
            ),
        },
        data_dir,
    )
    t_write = time.perf_counter() - t0
    first = in_subprocess(data_dir)
    cached = in_subprocess(data_dir)
    cmd = f"python bench/dataset_load.py --train {args.train} --test {args.test}"
    print(
        f"fabricated tfds cifar10 ({args.train} + {args.test} images, 32x32x3) in {t_write:.1f} s"
    )
    print(
        f"train split on device: {first['train_shape']} float32 (+ {first['validation']} "
        f"validation, {first['test']} test) on {first['device']}"
    )
    print(
        f"first load (tfds read + PNG decode + cache write + to device): {first['seconds']:.1f} s"
    )
    print(f"cached load (npy cache to device): {cached['seconds']:.2f} s")
    print(f"reproduce: {cmd}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
