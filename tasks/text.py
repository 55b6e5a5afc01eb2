"""Character-level text corpora held as device arrays.

A corpus is a string of characters coded as int32 indices into its sorted
``vocab``; the first ``1 - VALIDATION_FRACTION`` of the text is the train
split, the rest validation (contiguous: no sentence straddles the two).

``tiny_shakespeare_embedded`` ships inside this package
(``tasks/data/tiny_shakespeare.txt.xz``, public domain, see
``tasks/data/LICENSE.tiny_shakespeare``), so the RNN experiments run offline.
Corpora of tensorflow-datasets (``tfds_data.TEXT_SOURCES``: ``tiny_shakespeare``)
are read once prepared (``lopt prepare NAME``), with tfds's own train and
validation splits.
"""

from __future__ import annotations

import dataclasses
import functools
import lzma

import jax
import jax.numpy as jnp
import numpy as np

from tasks import tfds_data
from tasks.datasets import DATA_DIR, DatasetError

VALIDATION_FRACTION = 0.1
EMBEDDED_CORPORA = {"tiny_shakespeare_embedded": DATA_DIR / "tiny_shakespeare.txt.xz"}


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["train", "validation"],
    meta_fields=["name", "vocab"],
)
@dataclasses.dataclass(frozen=True)
class Corpus:
    name: str
    vocab: str  # the distinct characters, sorted: index i codes vocab[i]
    train: jax.Array  # int32 [characters]
    validation: jax.Array

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def split(self, split: str) -> jax.Array:
        if split not in ("train", "validation"):
            raise ValueError(f"unknown split {split!r}; a corpus has train and validation")
        return self.train if split == "train" else self.validation

    def decode(self, codes) -> str:
        return "".join(self.vocab[int(c)] for c in np.asarray(codes))


def corpus_from_text(name: str, text: str) -> Corpus:
    """A corpus of one text, split contiguously (module doc)."""
    cut = int(len(text) * (1 - VALIDATION_FRACTION))
    return corpus_from_splits(name, text[:cut], text[cut:])


def corpus_from_splits(name: str, train: str, validation: str) -> Corpus:
    """A corpus of given train and validation texts, over the characters of both."""
    vocab = "".join(sorted(set(train) | set(validation)))
    lookup = np.zeros(max(map(ord, vocab)) + 1, np.int32)
    lookup[[ord(c) for c in vocab]] = np.arange(len(vocab), dtype=np.int32)

    def codes(text: str) -> jax.Array:
        return jnp.asarray(lookup[np.frombuffer(text.encode("utf-32-le"), np.uint32)])

    return Corpus(name, vocab, codes(train), codes(validation))


@functools.cache
def load_corpus(name: str, data_dir: str | None = None) -> Corpus:
    """A corpus by name: shipped, or a prepared tfds corpus (in ``data_dir``, else
    ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``). An unknown or unprepared one
    raises ``DatasetError`` naming the valid ones or how to prepare it."""
    if name in tfds_data.TEXT_SOURCES:
        return corpus_from_splits(
            name,
            tfds_data.read_text(name, "train", data_dir),
            tfds_data.read_text(name, "validation", data_dir),
        )
    if name not in EMBEDDED_CORPORA:
        valid = ", ".join([*EMBEDDED_CORPORA, *tfds_data.TEXT_SOURCES])
        raise DatasetError(f"unknown corpus {name!r}; available: {valid}")
    path = EMBEDDED_CORPORA[name]
    try:
        text = lzma.decompress(path.read_bytes()).decode("utf-8")
    except (OSError, lzma.LZMAError, UnicodeDecodeError) as e:
        raise DatasetError(f"corpus {name}: cannot read {path} ({e}); reinstall the package") from e
    return corpus_from_text(name, text)
