"""Held-out task suites for ``lopt eval``: tasks an optimizer was not meta-trained on.

A suite is a tuple of task specs (``tasks.base.TaskSpec``: a hashable value with
``name`` and ``build() -> Task``); every task built from one also has
``eval_set(split)`` (the fixed examples its validation and test losses are
measured on). None is the default meta-training task (MLP 32 relu, 8x8,
batch 128).
"""

from __future__ import annotations

from tasks.base import TaskSpec
from tasks.convnet import ConvNetSpec
from tasks.family import ImageMLPSpec
from tasks.regression import LeastSquaresSpec

_DEFAULT = (
    ImageMLPSpec(hidden_sizes=(64,), activation="tanh"),
    ImageMLPSpec(hidden_sizes=(48, 48), activation="relu", batch_size=64),
    ImageMLPSpec(hidden_sizes=(128, 64, 32), activation="gelu"),
    ImageMLPSpec(hidden_sizes=(16,), activation="elu", batch_size=256),
    ImageMLPSpec(image_size=28, hidden_sizes=(128,), activation="relu"),
)

HELD_OUT_SUITES: dict[str, tuple[TaskSpec, ...]] = {
    # Not the default task (MLP 32 relu, 8x8, batch 128) nor any sampled at width 32.
    "tiny": (  # for tests: compiles and runs in seconds
        ImageMLPSpec(hidden_sizes=(8,), activation="tanh", batch_size=32),
    ),
    "small": (
        ImageMLPSpec(hidden_sizes=(64,), activation="tanh"),
        ImageMLPSpec(hidden_sizes=(48, 48), activation="relu", batch_size=64),
    ),
    "default": _DEFAULT,
    # Need the datasets prepared through tensorflow-datasets (`lopt prepare NAME`).
    "tfds": (
        ImageMLPSpec(dataset="mnist", image_size=14, hidden_sizes=(64,), activation="tanh"),
        ImageMLPSpec(dataset="fashion_mnist", image_size=28, hidden_sizes=(128,)),
        ImageMLPSpec(dataset="cifar10", image_size=8, hidden_sizes=(64,), grayscale=True),
        ImageMLPSpec(dataset="cifar10", image_size=32, hidden_sizes=(128, 128)),
        ImageMLPSpec(dataset="svhn", image_size=16, hidden_sizes=(64, 64), activation="gelu"),
    ),
    # Outside the meta-training family in kind, depth, width, resolution, batch size:
    # ``lopt eval --tasks generalization --steps 2000 --long-steps 5000``.
    "generalization": (
        *_DEFAULT,
        ConvNetSpec(image_size=28),
        LeastSquaresSpec(),
        ImageMLPSpec(hidden_sizes=(64,) * 5, activation="relu"),
        ImageMLPSpec(image_size=28, hidden_sizes=(512, 512), activation="relu"),
        ImageMLPSpec(hidden_sizes=(64,), activation="relu", batch_size=8),
    ),
}

# The tasks of a suite run to ``lopt eval --long-steps`` (10x or more a typical
# meta-training horizon): one per kind of risk (a new kind of parameters, an
# ill-conditioned loss of another scale, tiny noisy batches). The 512x512 MLP
# is not among them: its 5000 steps under every baseline's grid would double
# the suite's time on 2 cores.
LONG_RUNS: dict[str, tuple[str, ...]] = {
    "generalization": (
        ConvNetSpec(image_size=28).name,
        LeastSquaresSpec().name,
        ImageMLPSpec(hidden_sizes=(64,), activation="relu", batch_size=8).name,
    ),
}
