"""The learned optimizers by kind: the one list the config, export and the CLI read."""

from __future__ import annotations

from learned_opt.base import LearnedOptimizer
from learned_opt.baselines import SGDM, Adam
from learned_opt.mlp_lopt import MLPLOpt
from learned_opt.norm_mlp_lopt import NormMLPLOpt

# kind (config ``lopt.kind``, an artifact's ``architecture.kind``) -> class.
LEARNED_OPTIMIZERS: dict[str, type] = {
    "mlp": MLPLOpt,
    "norm_mlp": NormMLPLOpt,
    "adam": Adam,
    "sgdm": SGDM,
}


def kind_of(lopt: LearnedOptimizer) -> str:
    """The registered kind of ``lopt``; ``TypeError`` for an unregistered class."""
    for kind, cls in LEARNED_OPTIMIZERS.items():
        if type(lopt) is cls:
            return kind
    raise TypeError(f"{type(lopt).__name__} is not registered; known: {sorted(LEARNED_OPTIMIZERS)}")
