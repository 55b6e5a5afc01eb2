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

import jax.numpy as jnp
import optax

from learned_opt import LEARNED_OPTIMIZERS
from meta_train.config import Config, ConfigError, LOptConfig, TaskConfig
from meta_train.estimators import ESTIMATORS, Estimator
from meta_train.systems import (
    InfluenceBalancing,
    LearnedOptimizerSystem,
    LRScheduleSystem,
    MetaTrainableSystem,
    ToyRegression,
)
from meta_train.systems.toy import NO_RESET
from tasks.base import ClassificationTask
from tasks.datasets import DatasetError
from tasks.family import ImageMLPSpec
from tasks.image_mlp import ImageMLPTask
from tasks.quadratic import NoisyQuadratic


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
    return cls(**_fields_of(cls, cfg))


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


def _lr_schedule_quadratic(config: Config) -> LRScheduleSystem:
    cfg = config.task
    return LRScheduleSystem(
        NoisyQuadratic.create(dim=16, min_curvature=1e-3),
        theta0=_theta0(cfg, (-3.0, 0.0)),
        horizon=_horizon(cfg),
    )


def _lr_schedule_mlp(config: Config) -> LRScheduleSystem:
    cfg = config.task
    horizon = _horizon(cfg)
    task = build_task(cfg)
    return LRScheduleSystem(
        task,
        theta0=_theta0(cfg, (-3.0, 0.0)),
        horizon=horizon,
        meta_loss_split=cfg.meta_loss_split,
        loss_cap=_loss_cap(cfg, task),
    )


# task.kind -> the function that builds its system from the whole config.
SYSTEMS: dict[str, Callable[[Config], MetaTrainableSystem]] = {
    "image_mlp": _image_mlp,
    "influence_balancing": _influence_balancing,
    "toy_regression": _toy_regression,
    "lr_schedule_quadratic": _lr_schedule_quadratic,
    "lr_schedule_mlp": _lr_schedule_mlp,
}


def build_system(config: Config) -> MetaTrainableSystem:
    kind = config.task.kind
    if kind not in SYSTEMS:
        raise ConfigError(f"task.kind: unknown {kind!r}; valid: {', '.join(SYSTEMS)}")
    return SYSTEMS[kind](config)


def build_estimator(config: Config, system: MetaTrainableSystem) -> Estimator:
    cfg = config.estimator
    if cfg.kind not in ESTIMATORS:
        raise ConfigError(f"estimator.kind: unknown {cfg.kind!r}; valid: " + ", ".join(ESTIMATORS))
    cls = ESTIMATORS[cfg.kind]
    try:
        return cls(system, **_fields_of(cls, cfg))
    except ValueError as e:
        raise ConfigError(f"estimator: {e}") from None


def build_outer_optimizer(config: Config) -> optax.GradientTransformation:
    cfg = config.train
    adam = optax.adam(cfg.learning_rate)
    if cfg.clip_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.clip_grad_norm), adam)
    return adam
