import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tasks import HELD_OUT_SUITES, ImageMLPFamily, ImageMLPTask, load_dataset
from tasks.datasets import DatasetError


def test_embedded_fashion_mnist_splits_shapes_ranges():
    ds = load_dataset("fashion_mnist_embedded", 8)
    assert ds.x_train.shape == (50_000, 8, 8, 1)
    assert ds.x_validation.shape == (10_000, 8, 8, 1)
    assert ds.x_test.shape == (10_000, 8, 8, 1)
    assert ds.x_train.dtype == jnp.float32 and ds.y_train.dtype == jnp.int32
    assert 0.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1.0
    assert float(ds.x_train.max()) > 0.9  # real images, not blank
    counts = np.bincount(np.asarray(ds.y_train), minlength=10)
    assert np.all(counts > 4000)  # Fashion-MNIST is balanced


def test_embedded_full_resolution_subset():
    ds = load_dataset("fashion_mnist_embedded", 28)
    assert ds.x_train.shape[1:] == (28, 28, 1)
    assert len(ds.x_train) + len(ds.x_validation) == 6000
    assert len(ds.x_test) == 1000


def test_unknown_dataset_and_size_errors():
    with pytest.raises(DatasetError, match="unknown dataset 'nope'"):
        load_dataset("nope")
    with pytest.raises(DatasetError, match="image_size"):
        load_dataset("fashion_mnist_embedded", 16)


def test_image_mlp_learns_with_sgd():
    task = ImageMLPTask(
        load_dataset("fashion_mnist_embedded", 8), hidden_sizes=(32,), batch_size=128
    )
    params = task.init(jax.random.PRNGKey(0))
    assert params["layer_0"]["w"].shape == (64, 32)

    @jax.jit
    def step(params, key):
        grads = jax.grad(task.loss)(params, task.batch(key, "train"))
        return jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)

    val = task.batch(jax.random.PRNGKey(99), "validation")
    before = float(task.loss(params, val))
    for k in jax.random.split(jax.random.PRNGKey(1), 300):
        params = step(params, k)
    after = float(task.loss(params, val))
    assert after < 0.8 < before
    assert float(task.accuracy(params, val)) > 0.7


def test_batches_are_drawn_from_the_named_split():
    task = ImageMLPTask(load_dataset("fashion_mnist_embedded", 8), batch_size=16)
    x, y = task.batch(jax.random.PRNGKey(0), "test")
    assert x.shape == (16, 8, 8, 1) and y.shape == (16,)
    test_rows = np.asarray(task.data.x_test).reshape(len(task.data.x_test), -1)
    first = np.asarray(x[0]).reshape(-1)
    assert np.any(np.all(test_rows == first, axis=1))


def test_family_samples_differ_and_are_reproducible():
    fam = ImageMLPFamily()
    specs = [fam.sample(s) for s in range(8)]
    assert specs == [fam.sample(s) for s in range(8)]
    assert len({(s.hidden_sizes, s.activation) for s in specs}) > 4
    for s in specs:
        assert 1 <= len(s.hidden_sizes) <= 3
        assert all(16 <= w <= 128 for w in s.hidden_sizes)


def test_held_out_suites_exclude_the_default_task():
    from tasks.family import ImageMLPSpec

    for specs in HELD_OUT_SUITES.values():
        for s in specs:
            if not isinstance(s, ImageMLPSpec):
                continue  # another kind of task
            assert (s.hidden_sizes, s.activation, s.image_size, s.batch_size) != (
                (32,),
                "relu",
                8,
                128,
            )


@pytest.mark.parametrize(
    "name",
    [s.name for s in HELD_OUT_SUITES["generalization"] if s not in HELD_OUT_SUITES["default"]],
)
def test_each_new_task_kind_trains_under_tuned_adam(name):
    """Every task the generalization suite adds (a convnet, here on 8x8 images, least
    squares, a 5-layer, a 512x512 and a batch-8 MLP) is learnable: Adam at the best
    of three learning rates lowers the validation loss to at most 70% of its
    initial value in 60 steps (2 seeds), with finite losses throughout."""

    import dataclasses

    from learned_opt import Adam
    from meta_train.evaluation.held_out import _eval_examples, run_optimizer
    from tasks.convnet import ConvNetSpec

    spec = {s.name: s for s in HELD_OUT_SUITES["generalization"]}[name]
    if isinstance(spec, ConvNetSpec):  # the same network on 8x8 images: 10x cheaper here
        spec = dataclasses.replace(spec, image_size=8)
    task = spec.build()
    initial = float(task.loss(task.init(jax.random.PRNGKey(0)), _eval_examples(task, "validation")))
    thetas = {"log_lr": jnp.log(jnp.asarray([3e-4, 3e-3, 3e-2]))}
    out, _, _ = run_optimizer(task, Adam(), thetas, num_seeds=2, num_steps=60, val_points=3)
    final = out["val_loss"][:, :, -1].mean(1)
    assert np.all(np.isfinite(out["train_loss"]))
    assert final.min() < 0.7 * initial, (initial, final)


@pytest.mark.parametrize(
    "shape, kernel, stride",
    [((4, 28, 28, 1), (3, 3, 1, 8), 1), ((4, 28, 28, 8), (3, 3, 8, 16), 2),
     ((2, 7, 9, 3), (3, 3, 3, 5), 2), ((2, 8, 8, 2), (5, 5, 2, 3), 3)],
)  # fmt: skip
def test_the_convnets_im2col_convolution_is_xlas(shape, kernel, stride):
    """Same padding and values as lax.conv_general_dilated "SAME" (odd sizes, strides
    that do not divide, a 5x5 kernel), and the same gradient."""
    from tasks.convnet import conv_same

    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    w = jax.random.normal(jax.random.PRNGKey(1), kernel)

    def xla(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    np.testing.assert_allclose(conv_same(x, w, stride), xla(x, w), rtol=1e-4, atol=1e-4)
    g_ours = jax.grad(lambda x, w: jnp.sum(jnp.sin(conv_same(x, w, stride))), (0, 1))(x, w)
    g_xla = jax.grad(lambda x, w: jnp.sum(jnp.sin(xla(x, w))), (0, 1))(x, w)
    for a, b in zip(g_ours, g_xla):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
