"""A character-level RNN as an unrolled system: the PES paper's first example.

theta is the weights of a vanilla RNN, ``h_t = tanh(W_xh[x_t] + h_{t-1} W_hh + b_h)``,
logits ``h_t W_hy + b_y``; the state is the hidden state of ``batch_size``
sequences, each at its own random start in the corpus split, and the step
counter. One step reads each sequence's next character and ``L_t`` is the mean
cross-entropy (nats) of predicting the one after it. An episode is ``horizon``
characters from a fresh start and ``h_0 = 0``. Gradients reach theta through
the whole hidden-state trajectory, so truncation biases the estimate exactly
as in the paper.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from meta_train.systems.base import cap_loss
from tasks.text import Corpus


class RNNState(NamedTuple):
    h: jax.Array  # [batch, hidden]
    start: jax.Array  # int32 [batch]: each sequence's first character
    t: jax.Array  # int32 []: characters read this episode


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["corpus"],
    meta_fields=["hidden_size", "horizon", "batch_size", "split", "loss_cap"],
)
@dataclasses.dataclass(frozen=True)
class CharRNNSystem:
    corpus: Corpus
    hidden_size: int = 32
    horizon: int = 100
    batch_size: int = 16
    split: str = "train"
    loss_cap: float = 0.0  # > 0: L_t is clipped to it and a non-finite L_t becomes it

    def init_theta(self, key: jax.Array) -> dict:
        v, h = self.corpus.vocab_size, self.hidden_size
        k_xh, k_hh, k_hy = jax.random.split(key, 3)
        return {
            "w_xh": jax.random.normal(k_xh, (v, h)),  # one-hot input: unit-scale rows
            "w_hh": jax.random.normal(k_hh, (h, h)) / math.sqrt(h),
            "b_h": jnp.zeros((h,)),
            "w_hy": jax.random.normal(k_hy, (h, v)) / math.sqrt(h),
            "b_y": jnp.zeros((v,)),
        }

    def init(self, theta: dict, key: jax.Array) -> RNNState:
        del theta
        text = self.corpus.split(self.split)
        start = jax.random.randint(key, (self.batch_size,), 0, text.shape[0] - self.horizon - 1)
        h = jnp.zeros((self.batch_size, self.hidden_size))
        return RNNState(h, start, jnp.zeros((), jnp.int32))

    def step(self, theta: dict, state: RNNState, key: jax.Array) -> tuple[RNNState, jax.Array]:
        del key  # the text is the data: a sequence is fixed by its start
        text = self.corpus.split(self.split)
        x = text[state.start + state.t]
        y = text[state.start + state.t + 1]
        h = jnp.tanh(theta["w_xh"][x] + state.h @ theta["w_hh"] + theta["b_h"])
        logp = jax.nn.log_softmax(h @ theta["w_hy"] + theta["b_y"])
        loss = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
        if self.loss_cap > 0:
            loss = cap_loss(loss, self.loss_cap)
        return RNNState(h, state.start, state.t + 1), loss
