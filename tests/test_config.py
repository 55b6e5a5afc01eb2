import pytest
from conftest import ROOT

from meta_train import config as config_lib
from meta_train.config import ConfigError


def test_shipped_configs_load():
    for path in (ROOT / "configs").glob("*.toml"):
        cfg = config_lib.load(path)
        assert cfg.name == path.stem


def test_overrides_are_typed():
    cfg = config_lib.load(
        ROOT / "configs" / "default.toml",
        [
            "estimator.num_particles=4",
            "task.hidden_sizes=[8, 8]",
            "task.activation=tanh",
            "estimator.sigma=1",
            "estimator.stagger=false",
        ],
    )
    assert cfg.estimator.num_particles == 4
    assert cfg.task.hidden_sizes == (8, 8)
    assert cfg.task.activation == "tanh"
    assert cfg.estimator.sigma == 1.0 and isinstance(cfg.estimator.sigma, float)
    assert cfg.estimator.stagger is False


@pytest.mark.parametrize(
    "override,message",
    [
        ("estimator.num_particle=4", "unknown config key 'estimator.num_particle'.*num_particles"),
        ("bogus.x=1", "unknown config key 'bogus.x'"),
        ("estimator.num_particles=4.5", "estimator.num_particles: expected an integer"),
        ("estimator.num_particles=true", "estimator.num_particles: expected an integer"),
        ("task.hidden_sizes=3", "task.hidden_sizes: expected a list"),
        ("estimator.stagger=1", "estimator.stagger: expected true or false"),
        ("nonsense", "--set expects key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        config_lib.load(ROOT / "configs" / "default.toml", [override])


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train]\nstep = 3\n")
    with pytest.raises(ConfigError, match=r"'train.step'.*valid keys in \[train\]: steps"):
        config_lib.load(path)


def test_dump_round_trip(tmp_path):
    cfg = config_lib.load(ROOT / "configs" / "default.toml", ["task.hidden_sizes=[8, 4]"])
    path = tmp_path / "x.toml"
    path.write_text(config_lib.dumps(cfg))
    assert config_lib.load(path) == cfg
