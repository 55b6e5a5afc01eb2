"""Learned optimizers (Haiku) and their export as optax transformations.

See ``learned_opt.base`` for the contract and ``LEARNED_OPTIMIZERS``
(``learned_opt.registry``) for every kind by name. ``MLPLOpt`` is the default learned
optimizer; ``NormMLPLOpt`` the normalized rule with factored
second moments (Celo-style); ``Adam`` and ``SGDM`` are hand-designed baselines behind the same
interface; ``as_optax(lopt, theta)`` turns any of them into an optax
``GradientTransformationExtraArgs``; ``save`` writes a standalone artifact
(theta + architecture + card, Orbax) and ``load_optax(path)`` reads it back
(or a shipped optimizer by name, ``load_optax("generalist")``: ``learned_opt.shipped``).
"""

from learned_opt.base import LearnedOptimizer
from learned_opt.baselines import SGDM, Adam
from learned_opt.export import OptimizerFileError, load, load_optax, save
from learned_opt.mlp_lopt import MLPLOpt
from learned_opt.norm_mlp_lopt import NormMLPLOpt
from learned_opt.optax_export import as_optax
from learned_opt.registry import LEARNED_OPTIMIZERS

__all__ = [
    "LearnedOptimizer",
    "MLPLOpt",
    "NormMLPLOpt",
    "Adam",
    "SGDM",
    "as_optax",
    "load_optax",
    "load",
    "save",
    "OptimizerFileError",
    "LEARNED_OPTIMIZERS",
]
