"""Inner problems: datasets, models, losses and task families.

This package imports nothing else of the project. A *task* (``tasks.base.Task``)
is an inner training problem; the unrolled systems that estimators consume
(a task trained by an optimizer, the toy systems) live in ``meta_train.systems``.
"""

from tasks.base import Task
from tasks.datasets import Dataset, available_datasets, load_dataset
from tasks.family import ImageMLPFamily
from tasks.image_mlp import ImageMLPTask
from tasks.suites import HELD_OUT_SUITES, LONG_RUNS

__all__ = [
    "Task",
    "Dataset",
    "available_datasets",
    "load_dataset",
    "ImageMLPTask",
    "ImageMLPFamily",
    "HELD_OUT_SUITES",
    "LONG_RUNS",
]
