"""Turn a ``Config`` into the objects it names: task, learned optimizer, system, estimator."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import optax

from learned_opt import SGDM, Adam, MLPLOpt
from meta_train.config import Config, ConfigError, LOptConfig, TaskConfig
from meta_train.estimators import ESTIMATORS
from meta_train.systems import LearnedOptimizerSystem
from tasks.datasets import DatasetError
from tasks.family import ImageMLPSpec
from tasks.image_mlp import ImageMLPTask
from tasks.lr_schedule import LRScheduleSystem
from tasks.toy import NO_RESET, InfluenceBalancing, NoisyQuadratic, ToyRegression

LOPTS = ("mlp", "adam", "sgdm")
SYSTEMS = ("image_mlp", "influence_balancing", "toy_regression", "lr_schedule_quadratic",
           "lr_schedule_mlp")


def build_task(cfg: TaskConfig) -> ImageMLPTask:
    spec = ImageMLPSpec(dataset=cfg.dataset, image_size=cfg.image_size,
                        hidden_sizes=cfg.hidden_sizes, activation=cfg.activation,
                        batch_size=cfg.batch_size, grayscale=cfg.grayscale,
                        data_dir=cfg.data_dir or None)
    try:
        return spec.build()
    except (DatasetError, ValueError) as e:
        raise ConfigError(f"[task]: {e}") from None


def build_lopt(cfg: LOptConfig):
    if cfg.kind == "mlp":
        return MLPLOpt(hidden_sizes=cfg.hidden_sizes, decays=cfg.decays,
                       step_mult=cfg.step_mult, exp_mult=cfg.exp_mult)
    if cfg.kind == "adam":
        return Adam(learning_rate=cfg.learning_rate)
    if cfg.kind == "sgdm":
        return SGDM(learning_rate=cfg.learning_rate)
    raise ConfigError(f"lopt.kind: unknown {cfg.kind!r}; valid: {', '.join(LOPTS)}")


def _theta0(cfg: TaskConfig, default: tuple[float, ...]):
    values = cfg.theta0 or default
    if len(values) != len(default):
        raise ConfigError(f"task.theta0: {cfg.kind} has {len(default)} parameters, "
                          f"got {list(cfg.theta0)}")
    return jnp.asarray(values, jnp.float32)


def build_toy_system(cfg: TaskConfig):
    """The systems whose theta is their own (no learned optimizer)."""
    if cfg.kind == "influence_balancing":
        return InfluenceBalancing(theta0=_theta0(cfg, (0.5,)),
                                  horizon=cfg.horizon if cfg.horizon > 0 else NO_RESET)
    if cfg.horizon < 1:
        raise ConfigError(f"task.horizon must be >= 1 for {cfg.kind}")
    if cfg.kind == "toy_regression":
        return ToyRegression(theta0=_theta0(cfg, (-4.0, -4.0)), horizon=cfg.horizon)
    if cfg.kind == "lr_schedule_quadratic":
        return LRScheduleSystem(NoisyQuadratic.create(dim=16, min_curvature=1e-3),
                                theta0=_theta0(cfg, (-3.0, 0.0)), horizon=cfg.horizon)
    if cfg.kind == "lr_schedule_mlp":
        task = build_task(cfg)
        return LRScheduleSystem(task, theta0=_theta0(cfg, (-3.0, 0.0)), horizon=cfg.horizon,
                                meta_loss_split=cfg.meta_loss_split,
                                loss_cap=cfg.loss_cap or 1.5 * math.log(task.num_classes))
    raise ConfigError(f"task.kind: unknown {cfg.kind!r}; valid: {', '.join(SYSTEMS)}")


def build_system(config: Config):
    if config.task.kind != "image_mlp":
        return build_toy_system(config.task)
    task = build_task(config.task)
    cap = config.task.loss_cap or 1.5 * math.log(task.num_classes)
    if config.task.horizon < 1:
        raise ConfigError("task.horizon must be >= 1")
    try:
        return LearnedOptimizerSystem(task=task, lopt=build_lopt(config.lopt),
                                      horizon=config.task.horizon,
                                      meta_loss_split=config.task.meta_loss_split,
                                      loss_cap=cap)
    except ValueError as e:
        raise ConfigError(f"task: {e}") from None


def build_estimator(config: Config, system):
    cfg = config.estimator
    if cfg.kind not in ESTIMATORS:
        raise ConfigError(f"estimator.kind: unknown {cfg.kind!r}; valid: "
                          + ", ".join(ESTIMATORS))
    cls = ESTIMATORS[cfg.kind]
    # Each estimator takes the keys that apply to it (FullES has no trunc_len...).
    accepted = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in dataclasses.asdict(cfg).items() if k in accepted}
    try:
        return cls(system, **kwargs)
    except ValueError as e:
        raise ConfigError(f"estimator: {e}") from None


def build_outer_optimizer(config: Config) -> optax.GradientTransformation:
    cfg = config.train
    adam = optax.adam(cfg.learning_rate)
    if cfg.clip_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.clip_grad_norm), adam)
    return adam
