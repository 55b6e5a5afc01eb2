"""Inner problems: datasets, models, losses, task families and toy unrolled systems.

This package imports nothing else of the project. A *task* (``tasks.base.Task``)
is an inner training problem; a *system* (``tasks.toy``) is an unrolled
computation graph with ``horizon``, ``init(theta, key)`` and
``step(theta, state, key)`` that gradient estimators consume directly.
"""

from tasks.base import Task
from tasks.datasets import Dataset, available_datasets, load_dataset
from tasks.family import HELD_OUT_SUITES, ImageMLPFamily
from tasks.image_mlp import ImageMLPTask

__all__ = [
    "Task",
    "Dataset",
    "available_datasets",
    "load_dataset",
    "ImageMLPTask",
    "ImageMLPFamily",
    "HELD_OUT_SUITES",
]
