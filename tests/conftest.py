import pathlib

import pytest

from meta_train import config as config_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# A task small enough that compiling and running it takes seconds.
TINY = [
    "task.hidden_sizes=[16]",
    "task.batch_size=32",
    "task.horizon=40",
    "lopt.hidden_sizes=[16, 16]",
    "estimator.num_particles=4",
    "estimator.trunc_len=10",
    "train.steps=6",
    "train.eval_seeds=2",
    "train.eval_every=0",
    "train.checkpoint_every=3",
]


@pytest.fixture(scope="session")
def tiny_config() -> config_lib.Config:
    return config_lib.load(ROOT / "configs" / "default.toml", TINY)


@pytest.fixture(scope="session")
def full_run(tiny_config, tmp_path_factory):
    """A finished tiny meta-training run (6 outer steps, checkpoints at 3 and 6)."""
    from meta_train.training.loop import meta_train

    run_dir = tmp_path_factory.mktemp("full")
    return meta_train(tiny_config, run_dir, progress=False, log=lambda _: None)
