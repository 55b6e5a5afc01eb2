"""Turn a ``Config`` into the objects it names: task, learned optimizer, system, estimator."""

from __future__ import annotations

import math

import optax

from learned_opt import SGDM, Adam, MLPLOpt
from meta_train.config import Config, ConfigError, LOptConfig, TaskConfig
from meta_train.estimators import ESTIMATORS
from meta_train.systems import LearnedOptimizerSystem
from tasks.datasets import DatasetError
from tasks.family import ImageMLPSpec
from tasks.image_mlp import ImageMLPTask

LOPTS = ("mlp", "adam", "sgdm")


def build_task(cfg: TaskConfig) -> ImageMLPTask:
    spec = ImageMLPSpec(dataset=cfg.dataset, image_size=cfg.image_size,
                        hidden_sizes=cfg.hidden_sizes, activation=cfg.activation,
                        batch_size=cfg.batch_size)
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


def build_system(config: Config) -> LearnedOptimizerSystem:
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
    try:
        return ESTIMATORS[cfg.kind](system, num_particles=cfg.num_particles,
                                    trunc_len=cfg.trunc_len, sigma=cfg.sigma,
                                    antithetic=cfg.antithetic, stagger=cfg.stagger)
    except ValueError as e:
        raise ConfigError(f"estimator: {e}") from None


def build_outer_optimizer(config: Config) -> optax.GradientTransformation:
    cfg = config.train
    adam = optax.adam(cfg.learning_rate)
    if cfg.clip_grad_norm > 0:
        return optax.chain(optax.clip_by_global_norm(cfg.clip_grad_norm), adam)
    return adam
