"""The tensorflow-datasets path on data prepared locally in the real tfds format.

``tfds_data.write_prepared`` writes fabricated images as a genuine tfds
preparation (array_record shards, dataset_info.json, the registered builder's
features), so the reader under test is tfds's own ``data_source`` and pillow
decoding, exactly what a downloaded copy goes through.
"""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT

from tasks import tfds_data
from tasks.datasets import LUMINANCE, DatasetError, load, load_dataset
from tasks.family import ImageMLPSpec

N_TRAIN, N_TEST = 120, 30


def _fabricate(rng, n, shape):
    return rng.integers(0, 256, (n,) + shape, dtype=np.uint8), rng.integers(0, 10, n)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    rng = np.random.default_rng(0)
    data = {
        "cifar10": {
            "train": _fabricate(rng, N_TRAIN, (32, 32, 3)),
            "test": _fabricate(rng, N_TEST, (32, 32, 3)),
        },
        "mnist": {
            "train": _fabricate(rng, N_TRAIN, (28, 28, 1)),
            "test": _fabricate(rng, N_TEST, (28, 28, 1)),
        },
    }
    for name, splits in data.items():
        tfds_data.write_prepared(name, splits, root)
    return root, data


def _by_content(images, labels):
    return {img.tobytes(): int(lab) for img, lab in zip(images, labels)}


def test_prepared_data_reads_back_exactly(prepared):
    root, data = prepared
    for name in ("cifar10", "mnist"):
        assert tfds_data.prepared_version_dir(name, root) is not None
        for split in ("train", "test"):
            x, y = tfds_data.read_split(name, split, root)
            src_x, src_y = data[name][split]
            assert x.dtype == np.uint8 and x.shape == src_x.shape
            assert y.dtype == np.int32
            # tfds shuffles on write: compare image -> label pairs, not order
            assert _by_content(x, y) == _by_content(src_x, src_y)


def test_load_normalises_and_carves_validation(prepared):
    root, _ = prepared
    raw, raw_y = tfds_data.read_split("cifar10", "train", root)
    x_tr, y_tr = load("cifar10", "train", data_dir=root)
    x_va, y_va = load("cifar10", "validation", data_dir=root)
    x_te, _ = load("cifar10", "test", data_dir=root)
    n_val = N_TRAIN // 6  # fewer than 40,000 examples: a sixth, not 10,000
    assert x_tr.shape == (N_TRAIN - n_val, 32, 32, 3) and x_va.shape == (n_val, 32, 32, 3)
    assert x_te.shape == (N_TEST, 32, 32, 3)
    assert str(x_tr.dtype) == "float32" and str(y_tr.dtype) == "int32"
    assert 0.0 <= float(x_tr.min()) and float(x_tr.max()) <= 1.0
    np.testing.assert_allclose(np.asarray(x_va), raw[-n_val:] / 255.0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(y_va), raw_y[-n_val:])
    assert load_dataset("cifar10", data_dir=str(root)).num_classes == 10


def test_resize_and_grayscale(prepared):
    root, _ = prepared
    raw = tfds_data.read_split("cifar10", "test", root)[0] / 255.0
    x16, _ = load("cifar10", "test", image_size=16, data_dir=root)
    block = raw.reshape(N_TEST, 16, 2, 16, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(np.asarray(x16), block, atol=1e-6)  # an exact area average
    gray, _ = load("cifar10", "test", grayscale=True, data_dir=root)
    assert gray.shape == (N_TEST, 32, 32, 1)
    np.testing.assert_allclose(np.asarray(gray)[..., 0], raw @ np.asarray(LUMINANCE), atol=1e-5)
    x7, _ = load("cifar10", "test", image_size=7, data_dir=root)  # not a divisor of 32
    assert x7.shape == (N_TEST, 7, 7, 3)
    assert abs(float(x7.mean()) - float(raw.mean())) < 0.01  # averaging keeps the mean
    m, _ = load("mnist", "test", image_size=14, data_dir=root)
    assert m.shape == (N_TEST, 14, 14, 1)


def test_decoded_arrays_are_cached_and_a_damaged_cache_is_rebuilt(prepared, monkeypatch):
    root, data = prepared
    first = tfds_data.read_split("mnist", "train", root)
    x_path, y_path = tfds_data._cache_paths(
        "mnist", tfds_data.prepared_version_dir("mnist", root), "train"
    )
    assert x_path.exists() and y_path.exists()

    def no_tfds(*args, **kwargs):
        raise AssertionError("read tfds again instead of the cache")

    with monkeypatch.context() as m:
        m.setattr(tfds_data, "_read_split", no_tfds)
        cached = tfds_data.read_split("mnist", "train", root)
    np.testing.assert_array_equal(cached[0], first[0])
    x_path.write_bytes(b"not an npy file")
    rebuilt = tfds_data.read_split("mnist", "train", root)
    np.testing.assert_array_equal(rebuilt[0], first[0])
    assert np.load(x_path, allow_pickle=False).shape == first[0].shape


def test_image_mlp_task_on_a_tfds_dataset(prepared):
    import jax

    root, _ = prepared
    spec = ImageMLPSpec(
        dataset="cifar10",
        image_size=8,
        grayscale=True,
        hidden_sizes=(16,),
        batch_size=8,
        data_dir=str(root),
    )
    task = spec.build()
    assert spec.name == "mlp16_relu_cifar10_gray8_b8"
    params = task.init(jax.random.PRNGKey(0))
    loss = task.loss(params, task.batch(jax.random.PRNGKey(1), "train"))
    assert np.isfinite(float(loss)) and 1.0 < float(loss) < 5.0


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match=r"'svhn'.*not prepared in .*lopt prepare svhn"):
        load("svhn", "train", data_dir=tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'"):
        load("imagenet", "train")


def test_reachability_needs_an_answer_and_is_bounded():
    import http.server
    import socket
    import threading

    silent = socket.socket()  # accepts connections (the kernel does) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        t0 = time.perf_counter()
        assert not tfds_data.reachable(f"http://127.0.0.1:{silent.getsockname()[1]}/", timeout=1.0)
        assert time.perf_counter() - t0 < 2.0
        assert tfds_data.reachable(f"http://127.0.0.1:{server.server_port}/", timeout=5.0)
    finally:
        server.shutdown()
        server.server_close()
        silent.close()


def _lopt(*args, env=None):
    cmd = [sys.executable, "-m", "meta_train.cli", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    return proc, time.perf_counter() - t0


def test_offline_meta_train_fails_fast_with_one_line(tmp_path):
    proc, seconds = _lopt(
        "meta-train",
        "--config",
        "configs/cifar10_mlp.toml",
        "--data-dir",
        str(tmp_path),
        "--out",
        str(tmp_path / "run"),
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "'cifar10'" in lines[0] and str(tmp_path) in lines[0]
    assert "lopt prepare cifar10" in lines[0] and "TFDS_DATA_DIR" in lines[0]
    assert seconds < 20  # measured ~1 s, mostly importing jax


def test_prepare_without_network_fails_fast(tmp_path):
    proc, seconds = _lopt("prepare", "cifar10", "--data-dir", str(tmp_path))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # Offline: the host is unreachable. Online without TensorFlow: the extra is named.
    assert "unreachable" in proc.stderr or "lopt-pes[prepare]" in proc.stderr
    assert seconds < 20  # the reachability check is bounded by 3 s


def test_list_shows_prepared_datasets(prepared):
    root, _ = prepared
    proc, _ = _lopt("list", "--data-dir", str(root))
    assert proc.returncode == 0, proc.stderr
    assert "cifar10: tfds, prepared in" in proc.stdout
    assert "svhn: tfds, not prepared" in proc.stdout
