"""A user's task: a small convolutional classifier on the embedded Fashion-MNIST.

Meta-train a learned optimizer on it from the repository root:

    lopt meta-train --config examples/small_convnet.toml

``task.entry`` names any function returning an object with the contract of
``tasks.base.Task``. This one builds the package's ``tasks.convnet.ConvNetTask``
(two 3x3 convolutions, global average pooling, a linear read-out) on 8x8
images, or 28x28 with ``make_task(image_size=28)``; ``examples/least_squares.py``
shows a task written from scratch.
"""

from __future__ import annotations

from tasks.convnet import ConvNetTask
from tasks.datasets import load_dataset


def make_task(image_size: int = 8, batch_size: int = 64) -> ConvNetTask:
    return ConvNetTask(load_dataset("fashion_mnist_embedded", image_size), batch_size=batch_size)
