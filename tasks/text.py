"""Character-level text corpora held as device arrays.

A corpus is a string of characters coded as int32 indices into its sorted
``vocab``; the first ``1 - VALIDATION_FRACTION`` of the text is the train
split, the rest validation (contiguous: no sentence straddles the two).

``tiny_shakespeare_embedded`` ships inside this package
(``tasks/data/tiny_shakespeare.txt.xz``, public domain, see
``tasks/data/LICENSE.tiny_shakespeare``), so the RNN experiments run offline.
"""

from __future__ import annotations

import dataclasses
import functools
import lzma

import jax
import jax.numpy as jnp
import numpy as np

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
    vocab = "".join(sorted(set(text)))
    lookup = np.zeros(max(map(ord, vocab)) + 1, np.int32)
    lookup[[ord(c) for c in vocab]] = np.arange(len(vocab), dtype=np.int32)
    codes = lookup[np.frombuffer(text.encode("utf-32-le"), np.uint32)]
    cut = int(len(codes) * (1 - VALIDATION_FRACTION))
    return Corpus(name, vocab, jnp.asarray(codes[:cut]), jnp.asarray(codes[cut:]))


@functools.cache
def load_corpus(name: str) -> Corpus:
    """A shipped corpus by name; an unknown name raises ``DatasetError`` naming the valid ones."""
    if name not in EMBEDDED_CORPORA:
        raise DatasetError(f"unknown corpus {name!r}; shipped: {', '.join(EMBEDDED_CORPORA)}")
    path = EMBEDDED_CORPORA[name]
    try:
        text = lzma.decompress(path.read_bytes()).decode("utf-8")
    except (OSError, lzma.LZMAError, UnicodeDecodeError) as e:
        raise DatasetError(f"corpus {name}: cannot read {path} ({e}); reinstall the package") from e
    return corpus_from_text(name, text)
