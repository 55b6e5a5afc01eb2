"""Image datasets and text corpora read through tensorflow-datasets, without TensorFlow.

Reading uses ``tfds.data_source`` (random access to data prepared in the
``array_record`` format; images decoded by pillow), so TensorFlow is not needed
to *use* a prepared dataset. Preparing one (download and convert) runs tfds's
own builder, which needs TensorFlow: ``pip install 'lopt-pes[prepare]'`` then
``lopt prepare NAME``, on any machine with internet; copy the data directory to
machines without.

Where data is looked for: the ``data_dir`` argument, else ``$TFDS_DATA_DIR``,
else ``~/tensorflow_datasets`` (tfds's default). The first read of a split
decodes every image once and caches the uint8 arrays as ``.npy`` files under
``<data_dir>/lopt_cache/`` (plain arrays, loaded with ``allow_pickle=False``);
later reads load those directly.

Nothing here ever waits on the network: a dataset that is not prepared raises
``DatasetError`` at once, and ``prepare`` checks that the download host is
reachable (a few seconds at most) before handing over to tfds, whose own
offline failure takes minutes of retries.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pathlib
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np


class DatasetError(ValueError):
    """A dataset that cannot be had; the message says which and what to do."""


@dataclasses.dataclass(frozen=True)
class TFDSSource:
    tfds_name: str  # the tfds builder name
    splits: tuple[str, ...]  # the tfds splits we use (train first)
    url: str  # where tfds downloads it from: checked for reachability


SOURCES = {
    "mnist": TFDSSource(
        "mnist", ("train", "test"), "https://storage.googleapis.com/cvdf-datasets/mnist/"
    ),
    "fashion_mnist": TFDSSource(
        "fashion_mnist",
        ("train", "test"),
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    "cifar10": TFDSSource(
        "cifar10", ("train", "test"), "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
    ),
    "svhn": TFDSSource(
        "svhn_cropped", ("train", "test"), "http://ufldl.stanford.edu/housenumbers/train_32x32.mat"
    ),
}
# Character-level corpora (tasks.text): one text feature per example.
TEXT_SOURCES = {
    "tiny_shakespeare": TFDSSource(
        "tiny_shakespeare",
        ("train", "validation", "test"),
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    ),
}
REACH_TIMEOUT_S = 3.0


def data_dir_of(data_dir: str | os.PathLike | None) -> pathlib.Path:
    if data_dir:
        return pathlib.Path(data_dir).expanduser()
    env = os.environ.get("TFDS_DATA_DIR")
    return pathlib.Path(env).expanduser() if env else pathlib.Path.home() / "tensorflow_datasets"


def _source(name: str) -> TFDSSource:
    known = SOURCES | TEXT_SOURCES
    if name not in known:
        raise DatasetError(f"unknown tfds dataset {name!r}; available: {', '.join(known)}")
    return known[name]


def prepared_version_dir(
    name: str, data_dir: str | os.PathLike | None = None
) -> pathlib.Path | None:
    """The newest ``<data_dir>/<tfds name>/<version>`` holding array_record data, or None."""
    root = data_dir_of(data_dir) / _source(name).tfds_name
    if not root.is_dir():
        return None
    versions = [
        d
        for d in root.iterdir()
        if (d / "dataset_info.json").exists() and any(d.glob("*.array_record*"))
    ]
    if not versions:
        return None
    return max(versions, key=lambda d: tuple(int(x) for x in d.name.split(".") if x.isdigit()))


def preparation_status(name: str, root: pathlib.Path) -> str:
    """``lopt list``'s line for a tfds dataset or corpus: where it is prepared, or how to."""
    found = prepared_version_dir(name, root)
    return (
        f"tfds, prepared in {found}"
        if found
        else f"tfds, not prepared in {root} (lopt prepare {name})"
    )


def _not_prepared(name: str, data_dir: pathlib.Path) -> DatasetError:
    src = _source(name)
    tfrecord = list((data_dir / src.tfds_name).glob("*/*.tfrecord*"))
    hint = (
        " (found tfrecord files there: prepare it again with file_format=array_record, "
        "as `lopt prepare` does)"
        if tfrecord
        else ""
    )
    return DatasetError(
        f"dataset {name!r} (tfds '{src.tfds_name}') is not prepared in {data_dir}{hint}; "
        f"looked in --data-dir / $TFDS_DATA_DIR / ~/tensorflow_datasets. On a machine with "
        f"internet run: pip install 'lopt-pes[prepare]' && lopt prepare {name} --data-dir DIR, "
        f"then copy DIR here and pass --data-dir DIR (or set TFDS_DATA_DIR=DIR)"
    )


def _cache_paths(name: str, version_dir: pathlib.Path, split: str):
    cache = (
        version_dir.parent.parent / "lopt_cache" / f"{version_dir.parent.name}-{version_dir.name}"
    )
    return cache / f"{split}-images.npy", cache / f"{split}-labels.npy"


def _read_split(
    name: str, version_dir: pathlib.Path, split: str, data_dir: pathlib.Path, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    source = tfds.data_source(
        _source(name).tfds_name, split=split, data_dir=str(data_dir), download=False
    )
    n = len(source)
    images, labels = None, np.empty((n,), np.int32)
    for start in range(0, n, chunk):
        records = source.__getitems__(list(range(start, min(n, start + chunk))))
        block = np.stack([np.asarray(r["image"]) for r in records])
        if images is None:
            images = np.empty((n,) + block.shape[1:], np.uint8)
        images[start : start + len(records)] = block
        labels[start : start + len(records)] = [int(r["label"]) for r in records]
    if images is None:
        raise DatasetError(f"{name!r} split {split!r} in {version_dir} holds no examples")
    return images, labels


def read_split(
    name: str, split: str, data_dir: str | os.PathLike | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images ``(n, h, w, c)`` and int32 labels of a prepared tfds split (cached)."""
    root = data_dir_of(data_dir)
    version_dir = prepared_version_dir(name, root)
    if version_dir is None:
        raise _not_prepared(name, root)
    x_path, y_path = _cache_paths(name, version_dir, split)
    prepared_at = (version_dir / "dataset_info.json").stat().st_mtime
    if (
        x_path.exists()
        and y_path.exists()
        and min(x_path.stat().st_mtime, y_path.stat().st_mtime) >= prepared_at
    ):
        try:
            return np.load(x_path, allow_pickle=False), np.load(y_path, allow_pickle=False)
        except (ValueError, OSError):
            pass  # a damaged cache is rebuilt from the tfds data below
    try:
        images, labels = _read_split(name, version_dir, split, root)
    except DatasetError:
        raise
    except Exception as e:  # tfds reports a damaged or partial preparation in many ways
        raise DatasetError(
            f"dataset {name!r}: could not read split {split!r} from "
            f"{version_dir}: {type(e).__name__}: {e}"
        ) from None
    if images.ndim == 3:
        images = images[..., None]
    try:
        x_path.parent.mkdir(parents=True, exist_ok=True)
        for path, arr in ((x_path, images), (y_path, labels)):
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, arr, allow_pickle=False)
            tmp.replace(path)  # atomic: a reader never sees half a cache file
    except OSError:
        pass  # a read-only data directory: no cache, the data is still returned
    return images, labels


def read_text(name: str, split: str, data_dir: str | os.PathLike | None = None) -> str:
    """The text of a prepared tfds corpus split (its examples' ``text``, joined)."""
    root = data_dir_of(data_dir)
    version_dir = prepared_version_dir(name, root)
    if version_dir is None:
        raise _not_prepared(name, root)
    try:
        import tensorflow_datasets as tfds

        source = tfds.data_source(
            _source(name).tfds_name, split=split, data_dir=str(root), download=False
        )
        records = source.__getitems__(list(range(len(source))))
        texts = [r["text"] for r in records]
        return "".join(t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts)
    except Exception as e:  # tfds reports a damaged or partial preparation in many ways
        raise DatasetError(
            f"corpus {name!r}: could not read split {split!r} from "
            f"{version_dir}: {type(e).__name__}: {e}"
        ) from None


def reachable(url: str, timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether ``url`` answers an HTTP HEAD request within ``timeout`` seconds in all.

    An HTTP answer, not just an open TCP connection: behind a proxy that accepts
    every connection and forwards nothing, only a response tells online from offline.
    """

    def head() -> bool:
        request = urllib.request.Request(url, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                return True
        except urllib.error.HTTPError as e:  # the server answered
            return e.code < 500
        except (OSError, ValueError):
            return False

    # The socket timeout bounds neither the DNS lookup nor the whole exchange.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        return pool.submit(head).result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        return False
    finally:
        pool.shutdown(wait=False)


def prepare(name: str, data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Download and convert ``name`` with tfds (array_record format); needs TensorFlow."""
    src = _source(name)
    root = data_dir_of(data_dir)
    existing = prepared_version_dir(name, root)
    if existing is not None:
        return existing
    t0 = time.perf_counter()
    if not reachable(src.url):
        raise DatasetError(
            f"dataset {name!r} is not prepared in {root} and cannot be downloaded: "
            f"{urllib.parse.urlparse(src.url).hostname} is unreachable (checked in "
            f"{time.perf_counter() - t0:.1f} s). On a machine with internet run: pip install "
            f"'lopt-pes[prepare]' && lopt prepare {name} --data-dir DIR, then copy DIR here "
            f"and pass --data-dir DIR "
            f"(or set TFDS_DATA_DIR=DIR)"
        )
    try:
        import tensorflow  # noqa: F401  (tfds's builders encode images with it)
    except ImportError:
        raise DatasetError(
            f"preparing {name!r} needs TensorFlow (tfds's builders use it): "
            "pip install 'lopt-pes[prepare]'"
        ) from None
    import tensorflow_datasets as tfds

    builder = tfds.builder(src.tfds_name, data_dir=str(root), file_format="array_record")
    builder.download_and_prepare()
    return _prepared(name, root)


def write_prepared(
    name: str,
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    data_dir: str | os.PathLike | None = None,
) -> pathlib.Path:
    """Write arrays as a real tfds preparation of ``name`` (array_record), without TensorFlow.

    ``splits`` maps a tfds split ("train", "test") to uint8 images ``(n, h, w, c)``
    and integer labels. The files carry the registered builder's name, version
    and features, so ``tfds.data_source(name)`` (and ``read_split``) read them
    exactly as a download prepared by tfds. For an air-gapped mirror of the data,
    and for tests and benchmarks on fabricated data of the real shapes.
    """
    import PIL.Image

    def examples(split, features):
        images, labels = splits[split]
        image_shape = features["image"].shape
        if tuple(images.shape[1:]) != tuple(image_shape) or images.dtype != np.uint8:
            raise ValueError(
                f"{name} {split}: images must be uint8 {image_shape}, "
                f"got {images.dtype} {images.shape[1:]}"
            )
        for i, (img, label) in enumerate(zip(images, labels)):
            example = {
                "image": PIL.Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img),
                "label": int(label),
            }
            if "id" in features:
                example["id"] = f"{split}_{i:05d}"
            yield i, example

    return _write(name, tuple(splits), examples, data_dir, ("image", "label"))


def write_prepared_text(
    name: str, splits: dict[str, str], data_dir: str | os.PathLike | None = None
) -> pathlib.Path:
    """``write_prepared`` for a corpus: each split's text as one example, as tfds has it."""

    def examples(split, features):
        del features
        yield 0, {"text": splits[split]}

    return _write(name, tuple(splits), examples, data_dir, None)


def _write(name, splits, examples, data_dir, supervised_keys) -> pathlib.Path:
    """Prepare ``name`` in tfds's array_record format from ``examples(split, features)``,
    an iterator of ``(key, example)``, under the registered builder's name, version
    and features."""
    import tensorflow_datasets as tfds

    src = _source(name)
    root = data_dir_of(data_dir)
    registered = tfds.builder(src.tfds_name, data_dir=str(root))
    features = registered.info.features

    # tfds's registration keyword is its metaclass's, which mypy cannot see.
    class Writer(tfds.core.GeneratorBasedBuilder, skip_registration=True):  # type: ignore[call-arg]
        VERSION = registered.version

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, features=features, supervised_keys=supervised_keys
            )

        def _split_generators(self, dl_manager):
            del dl_manager
            return {split: self._generate_examples(split) for split in splits}

        def _generate_examples(self, split):
            return examples(split, features)

    Writer.name = src.tfds_name
    writer = Writer(data_dir=str(root), file_format="array_record")
    writer.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(root / "manual"))
    )
    return _prepared(name, root)


def _prepared(name: str, root: pathlib.Path) -> pathlib.Path:
    """The version directory just prepared in ``root``; ``DatasetError`` if tfds left none."""
    version_dir = prepared_version_dir(name, root)
    if version_dir is None:
        raise DatasetError(f"preparing {name!r} in {root} left no array_record data")
    return version_dir
