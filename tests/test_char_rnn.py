"""The character-level RNN system (the PES paper's first unrolled system), its
shipped corpus, and the variance-against-unrolls study, on small versions."""

import jax
import numpy as np
import pytest
from test_cli import _lopt

from meta_train import config as config_lib
from meta_train.builders import build_system
from meta_train.config import ConfigError
from meta_train.evaluation import variance
from meta_train.resources import configs_dir
from meta_train.training import scan_loop
from tasks.text import load_corpus

SMALL = ["task.horizon=20", "task.hidden_sizes=[8]", "task.batch_size=2", "train.steps=3",
         "estimator.trunc_len=5", "estimator.num_particles=4"]  # fmt: skip


def _config(*overrides):
    return config_lib.load(configs_dir() / "char_rnn.toml", [*SMALL, *overrides])


def test_the_shipped_corpus():
    corpus = load_corpus("tiny_shakespeare_embedded")
    assert corpus.vocab_size == 65 and corpus.vocab == "".join(sorted(corpus.vocab))
    assert corpus.train.shape[0] + corpus.validation.shape[0] == 1_115_394
    assert corpus.decode(corpus.train[:14]) == "First Citizen:"
    assert int(corpus.train.max()) == 64 and int(corpus.train.min()) == 0


def test_the_system_matches_a_hand_stepped_rnn():
    system = build_system(_config())
    theta = system.init_theta(jax.random.PRNGKey(3))
    state = system.init(theta, jax.random.PRNGKey(4))
    text = np.asarray(system.corpus.train)
    w = {k: np.asarray(v, np.float64) for k, v in theta.items()}
    h = np.zeros((2, 8))
    for t in range(6):
        state, loss = system.step(theta, state, jax.random.PRNGKey(t))
        x, y = text[np.asarray(state.start) + t], text[np.asarray(state.start) + t + 1]
        h = np.tanh(w["w_xh"][x] + h @ w["w_hh"] + w["b_h"])
        logits = h @ w["w_hy"] + w["b_y"]
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        np.testing.assert_allclose(loss, -logp[np.arange(2), y].mean(), rtol=1e-5)
        np.testing.assert_allclose(state.h, h, atol=1e-5)
    assert int(state.t) == 6


@pytest.mark.parametrize("kind", ["pes", "truncated_es", "nres", "full_es", "tbptt", "full_bptt"])
def test_every_estimator_trains_the_rnn(kind):
    _, traj = scan_loop.run(_config(f"estimator.kind={kind}"))
    first, last = (jax.tree.map(lambda a, i=i: a[i], traj.thetas) for i in (0, -1))
    leaves = jax.tree.leaves(last)
    assert all(np.isfinite(x).all() for x in leaves)
    assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(first), leaves))
    assert np.isfinite(traj.meta_losses).all() and traj.meta_losses[0] < 1.5 * np.log(65)


def test_variance_study_on_a_short_horizon():
    """At one unroll (K = T) the three estimators are one and the same estimate on the
    same keys; at T unrolls truncated ES's variance is smaller and PES's larger, each
    by more than 3 standard errors of the difference (measured: 4.5 and 6)."""
    study = variance.VarianceStudy("char_rnn", unrolls=(1, 20, 7), replicates=128)
    result = variance.run(study, configs_dir(), lambda _: None, ["task.horizon=20"])
    runs = result["runs"]
    assert runs["pes"]["unrolls"] == [1, 20]  # 7 does not divide T = 20
    assert runs["pes"]["total_variance"][0] == pytest.approx(runs["nres"]["total_variance"][0])
    assert runs["pes"]["total_variance"][0] == pytest.approx(
        runs["truncated_es"]["total_variance"][0]
    )
    one, many = runs["truncated_es"]["total_variance"]
    se = runs["truncated_es"]["stderr"]
    assert one - many > 3 * np.hypot(*se), (one, many, se)
    pes, pes_se = runs["pes"]["total_variance"][1], runs["pes"]["stderr"][1]
    assert pes - one > 3 * np.hypot(pes_se, se[0]), (pes, one)
    summary = variance.summary(result)
    assert summary["nres"]["trunc_len"] == [20, 1]


def test_an_unknown_corpus_is_one_line():
    with pytest.raises(
        ConfigError,
        match="task.corpus: unknown corpus 'ptb'; available: tiny_shakespeare_embedded, tiny_sh",
    ):
        build_system(_config("task.corpus=ptb"))
    proc = _lopt("meta-train", "--config", "char_rnn", "--set", "task.corpus=ptb", "--out", "x")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "unknown corpus 'ptb'" in proc.stderr


def test_a_prepared_tfds_corpus(tmp_path):
    """tfds's tiny_shakespeare, prepared locally from the shipped text (a genuine tfds
    preparation, tfds_data.write_prepared_text): its own splits, readable offline."""
    from tasks import tfds_data

    shipped = load_corpus("tiny_shakespeare_embedded")
    text = shipped.decode(shipped.train[:3000])
    splits = {"train": text[:2000], "validation": text[2000:2600], "test": text[2600:]}
    tfds_data.write_prepared_text("tiny_shakespeare", splits, tmp_path)
    corpus = load_corpus("tiny_shakespeare", str(tmp_path))
    assert corpus.decode(corpus.train) == splits["train"]
    assert corpus.decode(corpus.validation) == splits["validation"]
    assert corpus.vocab == "".join(sorted(set(splits["train"]) | set(splits["validation"])))
    config = _config("task.corpus=tiny_shakespeare", f"task.data_dir={tmp_path}")
    system, traj = scan_loop.run(config)
    assert system.corpus.vocab == corpus.vocab
    assert np.all(np.isfinite(np.asarray(traj.meta_losses)))
    proc = _lopt("list", "--data-dir", str(tmp_path))
    assert "tiny_shakespeare: tfds, prepared in" in proc.stdout
    missing = tmp_path / "elsewhere"
    with pytest.raises(ConfigError, match="lopt prepare tiny_shakespeare"):
        build_system(_config("task.corpus=tiny_shakespeare", f"task.data_dir={missing}"))
