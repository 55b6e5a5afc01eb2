"""Experiment configuration: frozen dataclasses loaded from ``configs/*.toml``.

A config file has the sections ``[task]``, ``[lopt]``, ``[family]``,
``[estimator]`` and ``[train]`` plus an optional top-level ``name``; every key is optional and
defaults to the values below. Overrides use dotted keys,
``--set estimator.num_particles=16``, with TOML values (``[64, 32]``, ``true``,
``"relu"``; a bare word is taken as a string). An unknown key or a value of the
wrong type raises ``ConfigError`` naming the key and the valid ones.
"""

from __future__ import annotations

import dataclasses
import pathlib
import tomllib
import typing
from collections.abc import Sequence
from typing import Any


class ConfigError(ValueError):
    """A config key or value that does not fit; the message says which."""


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    # A learned optimizer trains: "image_mlp" (one image MLP), "image_mlp_family"
    # (shape buckets of a task family, [family]), "python" (a user's task, `entry`);
    # or a system whose theta is its own: "influence_balancing", "toy_regression",
    # "lr_schedule_quadratic", "lr_schedule_mlp", "char_rnn", "control" (the registry:
    # meta_train.builders.SYSTEMS)
    kind: str = "image_mlp"
    # kind "python": "package.module:make_task" or "path/to/file.py:make_task", a
    # function returning a task (tasks.base.Task) or a bucket (tasks.base.TaskBucket)
    entry: str = ""
    theta0: tuple[float, ...] = ()  # initial theta of a toy system; () = its default
    # fashion_mnist_embedded (ships with the package), or through tensorflow-datasets:
    # mnist, fashion_mnist, cifar10, svhn (`lopt list` shows which are prepared)
    dataset: str = "fashion_mnist_embedded"
    image_size: int = 8
    grayscale: bool = False
    data_dir: str = ""  # tfds data directory; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
    hidden_sizes: tuple[int, ...] = (32,)
    activation: str = "relu"
    batch_size: int = 128
    horizon: int = 200  # T: steps per episode; 0 = never reset (influence_balancing)
    # shorter horizons meta-trained at first, curriculum_steps outer steps each, before
    # `horizon` (meta_train.training.curriculum); [] = none
    horizon_curriculum: tuple[int, ...] = ()
    curriculum_steps: int = 0
    meta_loss_split: str = "train"  # where L_t is measured: "train" or "validation"
    # image_mlp_family and python: L_t is "ratio" (to the episode's initial loss) or "none"
    meta_loss_norm: str = "ratio"
    # L_t is clipped to this; 0 derives it: 1.5 with "ratio", else 1.5 * ln(num_classes)
    loss_cap: float = 0.0
    # lr_schedule_*: "inverse_time" (theta0 = [log lr0, decay exponent]) or
    # "piecewise_linear" (theta0 = log lr at evenly spaced knots over the horizon)
    schedule: str = "inverse_time"
    # lr_schedule_mlp: L_t is the "loss" or the error rate 1 - "accuracy" on a fresh batch
    meta_objective: str = "loss"
    # char_rnn: the text (tasks.text: tiny_shakespeare_embedded ships with the package;
    # tfds's tiny_shakespeare once prepared, read from data_dir)
    corpus: str = "tiny_shakespeare_embedded"
    # control: a gymnax environment with continuous actions (tasks.control; the optional
    # extra `pip install 'lopt-pes[control]'`); hidden_sizes is the policy's, batch_size
    # the environments per particle, horizon the episode (one past the environment's own
    # limit raises it)
    env: str = "Pendulum-v1"


@dataclasses.dataclass(frozen=True)
class FamilyConfig:
    # task.kind = "image_mlp_family": the tasks (tasks.family.ImageMLPFamily) ...
    datasets: tuple[str, ...] = ("fashion_mnist_embedded",)
    image_sizes: tuple[int, ...] = (8,)
    depths: tuple[int, ...] = (1, 2, 3)
    width_range: tuple[int, ...] = (16, 128)  # [min, max], log-uniform
    activations: tuple[str, ...] = ("relu", "tanh", "gelu", "elu")  # drawn per episode
    batch_sizes: tuple[int, ...] = (64, 128, 256)
    # ... and the shapes meta-trained on: a menu of num_buckets shapes drawn with
    # seed, each with num_particles / num_buckets particles; evaluation uses
    # heldout_buckets other shapes drawn with seed + 1
    num_buckets: int = 4
    heldout_buckets: int = 4
    seed: int = 0
    # Augmentation (families and python tasks): per episode, factors log-uniform in
    # [1/r, r] on each parameter tensor, the gradient and the loss; 1 = off
    param_scale: float = 1.0
    grad_scale: float = 1.0
    loss_scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class LOptConfig:
    # learned_opt.LEARNED_OPTIMIZERS: "mlp", "norm_mlp" (normalized, factored second
    # moments), or a baseline with theta = log learning rate: "adam", "sgdm"
    kind: str = "mlp"
    hidden_sizes: tuple[int, ...] = (32, 32)
    decays: tuple[float, ...] = (0.5, 0.9, 0.99, 0.999)  # mlp
    step_mult: float = 0.001  # mlp: update scale; norm_mlp: per-tensor update RMS
    exp_mult: float = 0.001  # mlp
    momentum_decays: tuple[float, ...] = (0.9, 0.99)  # norm_mlp
    rms_decay: float = 0.999  # norm_mlp: of the factored second moments
    adam_1d: bool = True  # norm_mlp: leaves with < 2 dimensions are updated by Adam
    # norm_mlp: the step size also sees per-tensor statistics (gradient-momentum
    # cosines, fan-in), not only the step count
    adaptive_step: bool = False
    # norm_mlp: the rule's clock is the fraction of the run done (step / its length,
    # which init, the optax export and lopt eval are then given), not the step count
    horizon_aware: bool = False
    # norm_mlp: each tensor's step times (64 / fan_in) ** fan_in_exponent, a fixed
    # width prior (1: muP's scaling of Adam-like steps; 0: none)
    fan_in_exponent: float = 0.0
    # baselines' initial learning rate; norm_mlp: Adam's, for the 1-D leaves
    learning_rate: float = 1e-3


@dataclasses.dataclass(frozen=True)
class EstimatorConfig:
    # meta_train.estimators.ESTIMATORS: pes, truncated_es, nres, full_es, tbptt,
    # full_bptt; keys that do not apply to
    # the chosen kind (sigma for BPTT, trunc_len for the full-episode ones) are unused
    kind: str = "pes"
    num_particles: int = 8  # particles, not pairs
    trunc_len: int = 20  # K
    sigma: float = 0.01  # standard deviation of each perturbation coordinate
    antithetic: bool = True
    stagger: bool = True
    # particles stepped together (vmap) per device: -1 auto (by system size and
    # backend), 0 all, 1 one group (pair) at a time, or a multiple of 2 with
    # antithetic pairs (meta_train.estimators.execution)
    particle_chunk: int = -1


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    steps: int = 200  # outer iterations
    learning_rate: float = 1e-3  # outer Adam
    clip_grad_norm: float = 1.0  # 0 disables clipping
    seed: int = 0
    log_every: int = 1
    eval_every: int = 100  # 0: only at the start and the end
    eval_seeds: int = 8
    checkpoint_every: int = 100
    max_to_keep: int = 3
    # stop (exit 2) when this many outer steps in a row were skipped or had an
    # exactly zero meta-gradient: the run cannot make progress; 0 never stops
    health_window: int = 50


@dataclasses.dataclass(frozen=True)
class Config:
    name: str = "default"
    task: TaskConfig = TaskConfig()
    lopt: LOptConfig = LOptConfig()
    family: FamilyConfig = FamilyConfig()
    estimator: EstimatorConfig = EstimatorConfig()
    train: TrainConfig = TrainConfig()


_SECTION_TYPES = {
    "task": TaskConfig,
    "lopt": LOptConfig,
    "family": FamilyConfig,
    "estimator": EstimatorConfig,
    "train": TrainConfig,
}


def valid_keys() -> list[str]:
    keys = ["name"]
    for section, cls in _SECTION_TYPES.items():
        keys += [f"{section}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check ``value`` against a field's annotation; return the canonical value."""
    origin = typing.get_origin(annotation)
    if origin is tuple:
        elem = typing.get_args(annotation)[0]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(key, v, elem) for v in value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation!r}")  # a bug in this module


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def from_dict(data: dict[str, Any]) -> Config:
    sections: dict[str, Any] = {}
    name = Config.name
    for key, value in data.items():
        if key == "name":
            name = _coerce("name", value, str)
            continue
        if key not in _SECTION_TYPES or not isinstance(value, dict):
            raise ConfigError(
                f"unknown config key {key!r}; valid keys: "
                + ", ".join(["name", *(f"[{s}]" for s in _SECTION_TYPES)])
            )
        cls = _SECTION_TYPES[key]
        types_ = _field_types(cls)
        kwargs = {}
        for sub, v in value.items():
            if sub not in types_:
                raise ConfigError(
                    f"unknown config key '{key}.{sub}'; valid keys in [{key}]: " + ", ".join(types_)
                )
            kwargs[sub] = _coerce(f"{key}.{sub}", v, types_[sub])
        sections[key] = cls(**kwargs)
    config = Config(name=name, **sections)
    check_values(config)
    return config


# The least value of each count, checked before any directory is made or any
# program compiled (a zero here used to fail only after compilation, or train
# nothing without a word).
AT_LEAST = {
    "task.batch_size": 1,
    "task.image_size": 0,  # 0: the dataset's own size
    "estimator.num_particles": 1,
    "estimator.trunc_len": 1,
    "train.steps": 1,
    "train.log_every": 1,
    "train.eval_every": 0,  # 0: only at the start and the end
    "train.eval_seeds": 1,
    "train.checkpoint_every": 1,
    "train.max_to_keep": 1,
    "train.health_window": 0,
    "family.num_buckets": 1,
    "family.heldout_buckets": 1,
}


def check_values(config: Config) -> None:
    """``ConfigError`` naming the first value outside its range."""
    for key, least in AT_LEAST.items():
        section, field = key.split(".")
        value = getattr(getattr(config, section), field)
        if value < least:
            raise ConfigError(f"{key} must be at least {least}, got {value}")
    if any(h < 1 for h in config.task.horizon_curriculum):
        raise ConfigError(
            f"task.horizon_curriculum: every horizon must be at least 1, "
            f"got {list(config.task.horizon_curriculum)}"
        )
    if config.task.horizon_curriculum and config.task.curriculum_steps < 1:
        raise ConfigError("task.horizon_curriculum needs task.curriculum_steps >= 1")
    if config.task.horizon_curriculum and config.estimator.kind in ("full_es", "full_bptt"):
        raise ConfigError(
            "task.horizon_curriculum needs a truncated estimator; "
            f"{config.estimator.kind} unrolls whole episodes"
        )
    for key, sizes in (("task.hidden_sizes", config.task.hidden_sizes),
                       ("lopt.hidden_sizes", config.lopt.hidden_sizes)):  # fmt: skip
        if any(width < 1 for width in sizes):
            raise ConfigError(f"{key}: every width must be at least 1, got {list(sizes)}")
    if config.lopt.kind in ("mlp", "norm_mlp") and not config.lopt.hidden_sizes:
        raise ConfigError(
            "lopt.hidden_sizes: the MLP learned optimizer needs a hidden layer, got []"
        )
    for key in ("family.param_scale", "family.grad_scale", "family.loss_scale"):
        value = getattr(config.family, key.split(".")[1])
        if not value >= 1:
            raise ConfigError(
                f"{key} must be at least 1 (factors are drawn in [1/r, r]), got {value}"
            )
    if config.task.meta_loss_norm not in ("ratio", "none"):
        raise ConfigError(
            f'task.meta_loss_norm must be "ratio" or "none", got {config.task.meta_loss_norm!r}'
        )
    if config.task.loss_cap < 0:
        raise ConfigError(f"task.loss_cap must be >= 0 (0 derives it), got {config.task.loss_cap}")
    for key, value in (("estimator.sigma", config.estimator.sigma),
                       ("train.learning_rate", config.train.learning_rate)):  # fmt: skip
        if not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value}")


def to_dict(config: Config) -> dict[str, Any]:
    def plain(v):
        return list(v) if isinstance(v, tuple) else v

    out: dict[str, Any] = {"name": config.name}
    for section in _SECTION_TYPES:
        out[section] = {
            k: plain(v) for k, v in dataclasses.asdict(getattr(config, section)).items()
        }
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=value"`` -> ``("a.b", parsed)``; value is TOML, else a bare string."""
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = (s.strip() for s in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for text in overrides:
        key, value = parse_override(text)
        if key == "name":
            data["name"] = value
            continue
        section, _, sub = key.partition(".")
        if section not in _SECTION_TYPES or not sub:
            raise ConfigError(f"unknown config key {key!r}; valid keys: " + ", ".join(valid_keys()))
        data.setdefault(section, {})[sub] = value
    return data


def load(path: str | pathlib.Path | None, overrides: Sequence[str] = ()) -> Config:
    data: dict[str, Any] = {}
    if path is not None:
        path = pathlib.Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except IsADirectoryError:
            raise ConfigError(f"{path} is a directory, not a config file") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file (a TOML config is text)") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read it ({e.strerror or e})") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
        data.setdefault("name", path.stem)
    return from_dict(apply_overrides(data, list(overrides)))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def dumps(config: Config) -> str:
    data = to_dict(config)
    lines = [f"name = {_toml_value(data.pop('name'))}"]
    for section, values in data.items():
        lines += ["", f"[{section}]"] + [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"
