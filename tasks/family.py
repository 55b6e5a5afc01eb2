"""Task families: distributions over image-MLP tasks, and shape buckets.

A family samples *task specs* (hashable ``ImageMLPSpec`` values) on the host;
``spec.build()`` turns one into an ``ImageMLPTask``. Different specs have
different parameter shapes, so each compiles its own program. Meta-training
therefore draws a fixed *menu* of shapes (``ImageMLPFamily.bucket_menu``) and
turns each into an ``ImageMLPBucket`` (a ``tasks.base.TaskBucket``), which
draws what does not change shapes (the activation) inside ``jit`` at every
episode; task augmentation (``tasks.augmentation``) adds the scales.

Held-out suites of specs, for evaluating a meta-trained optimizer on problems
it was not trained on, are in ``tasks.suites``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from tasks.datasets import Dataset, load_dataset
from tasks.image_mlp import ACTIVATIONS, ImageMLPTask, mlp_task_name


@dataclasses.dataclass(frozen=True)
class ImageMLPSpec:
    dataset: str = "fashion_mnist_embedded"
    image_size: int = 8
    hidden_sizes: tuple[int, ...] = (32,)
    activation: str = "relu"
    batch_size: int = 128
    grayscale: bool = False
    data_dir: str | None = None  # tfds datasets: None = $TFDS_DATA_DIR or ~/tensorflow_datasets

    @property
    def name(self) -> str:
        dataset = self.dataset + ("_gray" if self.grayscale else "")
        return mlp_task_name(
            self.hidden_sizes, self.activation, dataset, self.image_size, self.batch_size
        )

    def build(self) -> ImageMLPTask:
        return ImageMLPTask(
            load_dataset(self.dataset, self.image_size, self.grayscale, self.data_dir),
            hidden_sizes=tuple(self.hidden_sizes),
            activation=self.activation,
            batch_size=self.batch_size,
        )


class FamilyError(ValueError):
    """A family or bucket menu that cannot be sampled; the message says why."""


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["data", "activation_index"],
    meta_fields=["hidden_sizes", "activation", "batch_size", "activations"],
)
@dataclasses.dataclass(frozen=True)
class SampledActivationMLP(ImageMLPTask):
    """An image MLP whose activation is ``activations[activation_index]``, an array:
    tasks that differ only in it share one compiled program."""

    activation_index: jax.Array | int = 0
    activations: tuple[str, ...] = ("relu",)

    def _activation_fn(self):
        fns = [ACTIVATIONS[a] for a in self.activations]
        if len(fns) == 1:
            return fns[0]
        return lambda h: jax.lax.switch(self.activation_index, fns, h)

    @property
    def name(self) -> str:
        return mlp_task_name(
            self.hidden_sizes, "|".join(self.activations), self.data.name,
            self.data.image_shape[0], self.batch_size,
        )  # fmt: skip


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["data"],
    meta_fields=["hidden_sizes", "batch_size", "activations"],
)
@dataclasses.dataclass(frozen=True)
class ImageMLPBucket:
    """Image MLPs of one shape (dataset, resolution, widths, batch size); each
    ``sample`` draws the activation uniformly from ``activations`` (a
    ``tasks.base.TaskBucket``)."""

    data: Dataset
    hidden_sizes: tuple[int, ...]
    batch_size: int
    activations: tuple[str, ...]

    @property
    def name(self) -> str:
        return SampledActivationMLP(
            self.data, self.hidden_sizes, self.activations[0], self.batch_size,
            activations=self.activations,
        ).name  # fmt: skip

    def sample(self, key: jax.Array) -> SampledActivationMLP:
        index = jax.random.randint(key, (), 0, len(self.activations))
        return SampledActivationMLP(
            self.data,
            self.hidden_sizes,
            self.activations[0],
            self.batch_size,
            activation_index=index,
            activations=self.activations,
        )


@dataclasses.dataclass(frozen=True)
class ImageMLPFamily:
    """Image-MLP tasks: a dataset and resolution uniformly from ``datasets`` x
    ``image_sizes``, depth uniformly from ``depths``, each width log-uniform in
    ``width_range`` (rounded), activation uniformly from ``activations``, batch
    size uniformly from ``batch_sizes``.

    Shapes differ between tasks, so meta-training draws a *menu* of shape
    buckets once (``bucket_menu``): each bucket is one sampled shape and
    samples the activation per episode, so compilation is bounded by the menu's
    size however many tasks are drawn.
    """

    datasets: tuple[str, ...] = ("fashion_mnist_embedded",)
    image_sizes: tuple[int, ...] = (8,)
    depths: tuple[int, ...] = (1, 2, 3)
    width_range: tuple[int, int] = (16, 128)
    activations: tuple[str, ...] = ("relu", "tanh", "gelu", "elu")
    batch_sizes: tuple[int, ...] = (64, 128, 256)
    data_dir: str | None = None

    def __post_init__(self):
        for name in ("datasets", "image_sizes", "depths", "activations", "batch_sizes"):
            if not getattr(self, name):
                raise FamilyError(f"empty family: {name} lists nothing")
        unknown = set(self.activations) - set(ACTIVATIONS)
        if unknown:
            raise FamilyError(
                f"unknown activations {sorted(unknown)}; choose from {sorted(ACTIVATIONS)}"
            )
        if len(self.width_range) != 2 or not 1 <= self.width_range[0] <= self.width_range[1]:
            raise FamilyError(
                f"width_range must be [min, max] with 1 <= min <= max, got {list(self.width_range)}"
            )
        for name in ("image_sizes", "depths", "batch_sizes"):
            if min(getattr(self, name)) < 1:
                raise FamilyError(f"{name} must all be at least 1, got {list(getattr(self, name))}")

    def sample(self, seed: int) -> ImageMLPSpec:
        rng = np.random.default_rng(seed)
        depth = int(rng.choice(self.depths))
        lo, hi = np.log(self.width_range[0]), np.log(self.width_range[1])
        widths = tuple(int(round(np.exp(rng.uniform(lo, hi)))) for _ in range(depth))
        activation = str(rng.choice(self.activations))
        batch_size = int(rng.choice(self.batch_sizes))
        # Drawn last, so a family of one dataset and resolution samples what it always did.
        dataset = str(rng.choice(self.datasets)) if len(self.datasets) > 1 else self.datasets[0]
        image_size = int(rng.choice(self.image_sizes)) if len(self.image_sizes) > 1 else (
            self.image_sizes[0])  # fmt: skip
        return ImageMLPSpec(
            dataset=dataset,
            image_size=image_size,
            hidden_sizes=widths,
            activation=activation,
            batch_size=batch_size,
            data_dir=self.data_dir,
        )

    def bucket_menu(self, num_buckets: int, seed: int) -> tuple[ImageMLPSpec, ...]:
        """``num_buckets`` distinct shapes drawn from the family, stratified over
        datasets x resolutions (bucket i has the ``i % n``-th pair), so each pair
        has its share of buckets. A spec's activation is unused: a bucket draws
        it per episode."""
        if num_buckets < 1:
            raise FamilyError(f"a bucket menu needs at least 1 bucket, got {num_buckets}")
        pairs = [(d, s) for d in self.datasets for s in self.image_sizes]
        menu: dict[tuple, ImageMLPSpec] = {}
        rng = np.random.default_rng(seed)
        for _ in range(100 * num_buckets):
            dataset, image_size = pairs[len(menu) % len(pairs)]
            spec = dataclasses.replace(
                self.sample(int(rng.integers(2**31))), dataset=dataset, image_size=image_size
            )
            menu.setdefault(shape_of(spec), spec)
            if len(menu) == num_buckets:
                return tuple(menu.values())
        raise FamilyError(
            f"the family has fewer than {num_buckets} distinct shapes (found {len(menu)}); "
            "ask for fewer buckets or widen the family"
        )

    def holds(self, spec: ImageMLPSpec) -> bool:
        """Whether ``spec``'s shape can be sampled from this family."""
        lo, hi = self.width_range
        return (
            spec.dataset in self.datasets
            and spec.image_size in self.image_sizes
            and len(spec.hidden_sizes) in self.depths
            and all(lo <= w <= hi for w in spec.hidden_sizes)
            and spec.batch_size in self.batch_sizes
        )

    def build_bucket(self, spec: ImageMLPSpec) -> ImageMLPBucket:
        if not self.holds(spec):
            raise FamilyError(f"bucket {spec.name} is outside the family {self}")
        return ImageMLPBucket(
            load_dataset(spec.dataset, spec.image_size, spec.grayscale, spec.data_dir),
            spec.hidden_sizes,
            spec.batch_size,
            self.activations,
        )


def shape_of(spec: ImageMLPSpec) -> tuple:
    return (spec.dataset, spec.image_size, spec.hidden_sizes, spec.batch_size)
