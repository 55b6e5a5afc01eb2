"""Turn a ``Config`` into the objects it names, through one registry per extension point.

* ``task.kind`` -> ``SYSTEMS`` (here): a function building the unrolled system;
* ``lopt.kind`` -> ``learned_opt.LEARNED_OPTIMIZERS``;
* ``estimator.kind`` -> ``meta_train.estimators.ESTIMATORS``.

Each class takes the config keys of its section that are its own fields, so a
new optimizer or estimator needs only its registry entry.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from learned_opt import LEARNED_OPTIMIZERS
from meta_train.config import Config, ConfigError, LOptConfig, TaskConfig, TrainConfig
from meta_train.estimators import ESTIMATORS, Estimator
from meta_train.estimators.family import FamilyEstimator
from meta_train.systems import (
    InfluenceBalancing,
    LearnedOptimizerSystem,
    LRScheduleSystem,
    MetaTrainableSystem,
    ToyRegression,
)
from meta_train.systems.char_rnn import CharRNNSystem
from meta_train.systems.control import ControlSystem
from meta_train.systems.family import SystemFamily
from meta_train.systems.lr_schedule import META_OBJECTIVES, SCHEDULES
from meta_train.systems.sampled_task import SampledTaskSystem
from meta_train.systems.toy import NO_RESET
from tasks.augmentation import Augmentation
from tasks.base import ClassificationTask
from tasks.control import EnvironmentUnavailable, load_environment
from tasks.datasets import DatasetError
from tasks.entry import EntryError, load_entry
from tasks.family import FamilyError, ImageMLPFamily, ImageMLPSpec, shape_of
from tasks.image_mlp import ImageMLPTask
from tasks.quadratic import NoisyQuadratic
from tasks.text import load_corpus


def _fields_of(cls: type, section: Any) -> dict[str, Any]:
    """The keys of a config section that are fields of ``cls``."""
    accepted = {f.name for f in dataclasses.fields(cls) if f.init}
    return {k: v for k, v in dataclasses.asdict(section).items() if k in accepted}


def build_task(cfg: TaskConfig) -> ImageMLPTask:
    spec = ImageMLPSpec(
        dataset=cfg.dataset,
        image_size=cfg.image_size,
        hidden_sizes=cfg.hidden_sizes,
        activation=cfg.activation,
        batch_size=cfg.batch_size,
        grayscale=cfg.grayscale,
        data_dir=cfg.data_dir or None,
    )
    try:
        return spec.build()
    except (DatasetError, ValueError) as e:
        raise ConfigError(f"[task]: {e}") from None


def build_lopt(cfg: LOptConfig):
    if cfg.kind not in LEARNED_OPTIMIZERS:
        raise ConfigError(
            f"lopt.kind: unknown {cfg.kind!r}; valid: {', '.join(LEARNED_OPTIMIZERS)}"
        )
    cls = LEARNED_OPTIMIZERS[cfg.kind]
    try:
        return cls(**_fields_of(cls, cfg))
    except ValueError as e:
        raise ConfigError(f"[lopt]: {e}") from None


def _theta0(cfg: TaskConfig, default: tuple[float, ...]):
    values = cfg.theta0 or default
    if len(values) != len(default):
        raise ConfigError(
            f"task.theta0: {cfg.kind} has {len(default)} parameters, got {list(cfg.theta0)}"
        )
    return jnp.asarray(values, jnp.float32)


def _horizon(cfg: TaskConfig) -> int:
    if cfg.horizon < 1:
        raise ConfigError(f"task.horizon must be >= 1 for {cfg.kind}")
    return cfg.horizon


def _loss_cap(cfg: TaskConfig, task: ClassificationTask) -> float:
    return cfg.loss_cap or 1.5 * math.log(task.num_classes)


def _normalised_loss_cap(cfg: TaskConfig, bucket) -> float:
    """The cap of a sampled task's meta-loss: given, or 1.5 (initial losses) with
    "ratio"; without normalisation only a classification task has a known scale."""
    if cfg.loss_cap:
        return cfg.loss_cap
    if cfg.meta_loss_norm == "ratio":
        return 1.5
    task = bucket.sample(jax.random.PRNGKey(0))
    if isinstance(task, ClassificationTask):
        return _loss_cap(cfg, task)
    raise ConfigError(
        'task.loss_cap: a task without classes and task.meta_loss_norm = "none" needs an '
        'explicit cap above its losses (or use meta_loss_norm = "ratio")'
    )


def build_family(config: Config) -> ImageMLPFamily:
    f = config.family
    if len(f.width_range) != 2:
        raise ConfigError(f"family.width_range must be [min, max], got {list(f.width_range)}")
    try:
        return ImageMLPFamily(
            datasets=f.datasets,
            image_sizes=f.image_sizes,
            depths=f.depths,
            width_range=(f.width_range[0], f.width_range[1]),
            activations=f.activations,
            batch_sizes=f.batch_sizes,
            data_dir=config.task.data_dir or None,
        )
    except FamilyError as e:
        raise ConfigError(f"[family]: {e}") from None


def _augmentation(config: Config) -> Augmentation:
    f = config.family
    return Augmentation(f.param_scale, f.grad_scale, f.loss_scale)


def _sampled_task_system(config: Config, bucket) -> SampledTaskSystem:
    cfg = config.task
    try:
        return SampledTaskSystem(
            bucket,
            build_lopt(config.lopt),
            horizon=_horizon(cfg),
            meta_loss_split=cfg.meta_loss_split,
            augmentation=_augmentation(config),
            normalise=cfg.meta_loss_norm,
            loss_cap=_normalised_loss_cap(cfg, bucket),
        )
    except ValueError as e:
        raise ConfigError(f"task: {e}") from None


def _family_of_buckets(config: Config, specs) -> SystemFamily:
    family = build_family(config)
    try:
        buckets = [family.build_bucket(spec) for spec in specs]
    except (DatasetError, FamilyError) as e:
        raise ConfigError(f"[family]: {e}") from None
    return SystemFamily.uniform(_sampled_task_system(config, b) for b in buckets)


def bucket_menus(config: Config) -> tuple[tuple, tuple]:
    """The family's training menu and its held-out menu (shapes not in training)."""
    f = config.family
    family = build_family(config)
    try:
        train = family.bucket_menu(f.num_buckets, f.seed)
        candidates = family.bucket_menu(f.num_buckets + f.heldout_buckets, f.seed + 1)
    except FamilyError as e:
        raise ConfigError(f"[family]: {e}") from None
    shapes = {shape_of(spec) for spec in train}
    held_out = [spec for spec in candidates if shape_of(spec) not in shapes]
    return train, tuple(held_out[: f.heldout_buckets])


def _image_mlp_family(config: Config) -> SystemFamily:
    if config.estimator.num_particles % config.family.num_buckets:
        raise ConfigError(
            f"estimator.num_particles ({config.estimator.num_particles}) must be a multiple of "
            f"family.num_buckets ({config.family.num_buckets}): each bucket has its own particles"
        )
    return _family_of_buckets(config, bucket_menus(config)[0])


def _python_task(config: Config) -> SampledTaskSystem:
    if not config.task.entry:
        raise ConfigError('task.kind = "python" needs task.entry = "package.module:make_task"')
    try:
        bucket = load_entry(config.task.entry, split=config.task.meta_loss_split)
    except EntryError as e:
        raise ConfigError(str(e)) from None
    return _sampled_task_system(config, bucket)


def _image_mlp(config: Config) -> LearnedOptimizerSystem:
    cfg = config.task
    task = build_task(cfg)
    try:
        return LearnedOptimizerSystem(
            task=task,
            lopt=build_lopt(config.lopt),
            horizon=_horizon(cfg),
            meta_loss_split=cfg.meta_loss_split,
            loss_cap=_loss_cap(cfg, task),
        )
    except ValueError as e:
        raise ConfigError(f"task: {e}") from None


def _influence_balancing(config: Config) -> InfluenceBalancing:
    cfg = config.task
    return InfluenceBalancing(
        theta0=_theta0(cfg, (0.5,)), horizon=cfg.horizon if cfg.horizon > 0 else NO_RESET
    )


def _toy_regression(config: Config) -> ToyRegression:
    return ToyRegression(theta0=_theta0(config.task, (-4.0, -4.0)), horizon=_horizon(config.task))


def _schedule_theta0(cfg: TaskConfig):
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"task.schedule: unknown {cfg.schedule!r}; valid: {', '.join(SCHEDULES)}")
    if cfg.schedule == "inverse_time":
        return _theta0(cfg, (-3.0, 0.0))
    if cfg.theta0 and len(cfg.theta0) < 2:
        raise ConfigError(
            f"task.theta0: a piecewise-linear schedule needs >= 2 knots, got {list(cfg.theta0)}"
        )
    return jnp.asarray(cfg.theta0 or (-3.0,) * 5, jnp.float32)


def _lr_schedule_quadratic(config: Config) -> LRScheduleSystem:
    cfg = config.task
    return LRScheduleSystem(
        NoisyQuadratic.create(dim=16, min_curvature=1e-3),
        theta0=_schedule_theta0(cfg),
        horizon=_horizon(cfg),
        schedule=cfg.schedule,
    )


def _lr_schedule_mlp(config: Config) -> LRScheduleSystem:
    cfg = config.task
    horizon = _horizon(cfg)
    task = build_task(cfg)
    if cfg.meta_objective not in META_OBJECTIVES:
        valid = ", ".join(META_OBJECTIVES)
        raise ConfigError(f"task.meta_objective: unknown {cfg.meta_objective!r}; valid: {valid}")
    return LRScheduleSystem(
        task,
        theta0=_schedule_theta0(cfg),
        horizon=horizon,
        meta_loss_split=cfg.meta_loss_split,
        loss_cap=_loss_cap(cfg, task),
        schedule=cfg.schedule,
        meta_objective=cfg.meta_objective,
    )


def _char_rnn(config: Config) -> CharRNNSystem:
    cfg = config.task
    if len(cfg.hidden_sizes) != 1:
        raise ConfigError(
            f"task.hidden_sizes: char_rnn has one hidden layer, got {list(cfg.hidden_sizes)}"
        )
    try:
        corpus = load_corpus(cfg.corpus, cfg.data_dir or None)
    except DatasetError as e:
        raise ConfigError(f"task.corpus: {e}") from e
    return CharRNNSystem(
        corpus,
        hidden_size=cfg.hidden_sizes[0],
        horizon=_horizon(cfg),
        batch_size=cfg.batch_size,
        split=cfg.meta_loss_split,
        loss_cap=cfg.loss_cap or 1.5 * math.log(corpus.vocab_size),
    )


GRADIENT_ESTIMATORS = ("tbptt", "full_bptt")


def _control(config: Config) -> ControlSystem:
    cfg = config.task
    try:
        environment = load_environment(cfg.env)
        if config.estimator.kind in GRADIENT_ESTIMATORS and not environment.differentiable:
            raise ConfigError(
                f"estimator.kind: {config.estimator.kind} needs gradients through the "
                f"environment, and gymnax stops them in {cfg.env}; use an ES estimator "
                "(pes, nres, full_es, truncated_es)"
            )
        return ControlSystem.create(
            environment,
            hidden_sizes=tuple(cfg.hidden_sizes),
            horizon=_horizon(cfg),
            batch_size=cfg.batch_size,
            # Every shipped environment's per-step reward is bounded far below this
            # (actions are squashed onto their box): the cap guards a non-finite one.
            loss_cap=cfg.loss_cap or 1000.0,
        )
    except EnvironmentUnavailable as e:
        raise ConfigError(f"task.env: {e}") from None
    except ValueError as e:
        raise ConfigError(f"[task]: {e}") from None


# task.kind -> the function that builds its system from the whole config.
SYSTEMS: dict[str, Callable[[Config], MetaTrainableSystem | SystemFamily]] = {
    "image_mlp": _image_mlp,
    "image_mlp_family": _image_mlp_family,
    "python": _python_task,
    "influence_balancing": _influence_balancing,
    "toy_regression": _toy_regression,
    "lr_schedule_quadratic": _lr_schedule_quadratic,
    "lr_schedule_mlp": _lr_schedule_mlp,
    "char_rnn": _char_rnn,
    "control": _control,
}


# The systems built without a loss cap, and why none is needed. Every other kind
# caps L_t (a non-finite or huge loss becomes the cap, so one diverging particle
# cannot swamp an estimate); tests/test_reliability.py holds every kind to this.
UNCAPPED: dict[str, str] = {
    "influence_balancing": "linear state with spectral radius 1/2: the loss is a finite "
    "quadratic of theta at every step",
    "toy_regression": "the inner loss has bounded gradients, so SGD's iterates and the "
    "loss grow at most linearly in the learning rate",
    "lr_schedule_quadratic": "the figures compare estimates with the exact, uncapped "
    "expected loss (noisy_quadratic_expected_loss); a cap would change the objective "
    "where it binds. A diverging particle is restarted by the non-finite guard and "
    "counted in the run's health",
}


def build_system(config: Config) -> MetaTrainableSystem | SystemFamily:
    kind = config.task.kind
    if kind not in SYSTEMS:
        raise ConfigError(f"task.kind: unknown {kind!r}; valid: {', '.join(SYSTEMS)}")
    if kind != "python" and config.task.entry:
        raise ConfigError(f'task.entry is only for task.kind = "python", not {kind!r}')
    if config.task.meta_objective != "loss" and kind != "lr_schedule_mlp":
        raise ConfigError(
            f'task.meta_objective is only for task.kind = "lr_schedule_mlp", not {kind!r}'
        )
    if config.task.schedule != "inverse_time" and not kind.startswith("lr_schedule"):
        raise ConfigError(f"task.schedule is only for the lr_schedule kinds, not {kind!r}")
    if config.task.env != "Pendulum-v1" and kind != "control":
        raise ConfigError(f'task.env is only for task.kind = "control", not {kind!r}')
    return SYSTEMS[kind](config)


def build_eval_system(
    config: Config, system: MetaTrainableSystem | SystemFamily
) -> MetaTrainableSystem | SystemFamily:
    """What evaluation during meta-training runs: a family's held-out shapes, else ``system``."""
    if config.task.kind == "image_mlp_family":
        return _family_of_buckets(config, bucket_menus(config)[1])
    return system


def build_estimator(config: Config, system: MetaTrainableSystem | SystemFamily) -> Estimator:
    """The configured estimator; for a family, one per member with an equal share of
    the particles, combined by ``FamilyEstimator``."""
    cfg = config.estimator
    if cfg.kind not in ESTIMATORS:
        raise ConfigError(f"estimator.kind: unknown {cfg.kind!r}; valid: " + ", ".join(ESTIMATORS))
    cls = ESTIMATORS[cfg.kind]
    fields = _fields_of(cls, cfg)
    try:
        if isinstance(system, SystemFamily):
            per_member = cfg.num_particles // len(system.members)
            fields["num_particles"] = per_member
            members = tuple(cls(m, **fields) for m in system.members)
            return FamilyEstimator(members, system.weights)
        return cls(system, **fields)
    except ValueError as e:
        raise ConfigError(f"estimator: {e}") from None


def build_outer_optimizer(config: Config) -> optax.GradientTransformation:
    return outer_optimizer(config.train)


def outer_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """Adam at ``cfg.learning_rate``, after clipping to ``cfg.clip_grad_norm`` (0: none)."""
    adam = optax.adam(cfg.learning_rate)
    if cfg.clip_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.clip_grad_norm), adam)
    return adam
