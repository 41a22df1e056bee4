"""Tests for sbjax.models image CNNs: shapes, parameter counts, init, BatchNorm semantics, vmap."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from sbjax.models import make_model, scale_params
from sbjax.models.image import IMAGE_MODELS, PAD1, BatchNorm, Opts, torch_conv

X_SHAPE = (2, 64, 32, 3)  # MNIST-CIFAR NHWC


def _img(n=2, seed=0):
    return jax.random.uniform(jax.random.key(seed), (n, 64, 32, 3), jnp.float32)


def _n_params(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


# Known parameter counts of the CIFAR layouts with 10 classes (kuangliu/pytorch-cifar; the
# reference's ResNets add a parameter-free max-pool). 2 classes: minus (10 - 2) * (C_last + 1).
KNOWN_10 = {
    "resnet18": (11_173_962, 512),
    "resnet50": (23_520_842, 2048),
    "mobilenetv2": (2_296_922, 1280),
    "googlenet": (6_166_250, 1024),
    "densenet121": (6_956_298, 1024),
}


@pytest.mark.parametrize("name", sorted(KNOWN_10))
def test_parameter_counts_match_known_cifar_values(name):
    want10, c_last = KNOWN_10[name]
    x = jax.ShapeDtypeStruct(X_SHAPE, jnp.float32)
    for nc, want in ((10, want10), (2, want10 - 8 * (c_last + 1))):
        model = make_model({"name": name, "num_classes": nc})
        v = jax.eval_shape(model.init, jax.random.key(0), x)  # shapes only: no compile
        assert _n_params(v["params"]) == want, (name, nc)
    assert {"resnet18": 11_169_858, "resnet50": 23_504_450}.get(name, want) == want


def test_small_cnn_is_small():
    model = make_model({"name": "small_cnn"})
    v = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(X_SHAPE, jnp.float32))
    assert _n_params(v["params"]) < 100_000


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_shapes_train_and_eval(name):
    # Abstract evaluation checks every layer's shapes, train-mode state threading and dtypes
    # without paying the compile of the big models (real forward passes are in the slow tests).
    model = make_model({"name": name})
    x = jax.ShapeDtypeStruct(X_SHAPE, jnp.float32)
    v = jax.eval_shape(model.init, jax.random.key(0), x)
    assert set(v) == {"params", "batch_stats"}
    logits, updates = jax.eval_shape(lambda v, x: model.apply(v, x, train=True), v, x)
    assert logits.shape == (2, 2) and logits.dtype == jnp.float32
    assert set(updates) == {"batch_stats"}
    assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(v["batch_stats"])
    ev, ev_updates = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), v, x)
    assert ev.shape == (2, 2) and ev_updates == {}


def test_resnet_feature_map_shapes_follow_reference():
    # REFERENCE.md 2.2 (CHW): stem 64x32 -> max-pool 32x16 -> stages 32x16, 16x8, 8x4, 4x2.
    model = make_model({"name": "resnet50"})
    x = jax.ShapeDtypeStruct((1, 64, 32, 3), jnp.float32)
    v = jax.eval_shape(model.init, jax.random.key(0), x)
    _, inter = jax.eval_shape(
        lambda v, x: model.module.apply(
            v, x, capture_intermediates=True, mutable=["intermediates"]
        ),
        v,
        x,
    )
    inter = inter["intermediates"]
    assert inter["stem_conv"]["__call__"][0].shape == (1, 64, 32, 64)
    want = {
        "layer1_2": (32, 16, 256),
        "layer2_3": (16, 8, 512),
        "layer3_5": (8, 4, 1024),
        "layer4_2": (4, 2, 2048),
    }
    for layer, hwc in want.items():
        assert inter[layer]["__call__"][0].shape == (1, *hwc), layer
    # Bottleneck v1.5: the stride sits on the 3x3 conv, the first 1x1 keeps the resolution.
    blk = inter["layer2_0"]
    assert blk["conv1"]["__call__"][0].shape == (1, 32, 16, 128)
    assert blk["conv2"]["__call__"][0].shape == (1, 16, 8, 128)


def test_stride2_conv_uses_symmetric_padding():
    # PyTorch padding=1, stride 2, on a 4x4 input samples windows centred at rows/cols 0 and 2;
    # XLA "SAME" would centre them at 1 and 3.
    class One(nn.Module):
        @nn.compact
        def __call__(self, x):
            return torch_conv(Opts(), x, 1, 3, 2, name="c")

    x = jnp.arange(16, dtype=jnp.float32).reshape(1, 4, 4, 1)
    v = {"params": {"c": {"kernel": jnp.ones((3, 3, 1, 1))}}}
    out = One().apply(v, x)[0, :, :, 0]
    xp = np.pad(np.asarray(x[0, :, :, 0]), 1)
    want = np.array([[xp[r : r + 3, c : c + 3].sum() for c in (0, 2)] for r in (0, 2)])
    np.testing.assert_allclose(out, want)
    pooled = nn.max_pool(x, (3, 3), strides=(2, 2), padding=PAD1)[0, :, :, 0]
    np.testing.assert_allclose(pooled, [[5, 7], [13, 15]])


def test_resnet_conv_init_is_untruncated_kaiming_fan_out():
    class One(nn.Module):
        @nn.compact
        def __call__(self, x):
            return torch_conv(Opts(family="resnet"), x, 256, 3, name="c")

    v = One().init(jax.random.key(0), jnp.zeros((1, 4, 4, 256)))
    k = np.asarray(v["params"]["c"]["kernel"])  # 3x3x256x256
    want = math.sqrt(2.0 / (9 * 256))  # kaiming normal, mode fan_out, ReLU gain
    np.testing.assert_allclose(k.std(), want, rtol=0.02)
    assert np.abs(k).max() > 3.5 * want  # untruncated (Flax's he_normal would stop at 2 std)
    assert "bias" not in v["params"]["c"]


@pytest.mark.slow
def test_resnet_init_matches_reference():
    model = make_model({"name": "resnet18"})
    v = jax.jit(model.init)(jax.random.key(0), _img(1))
    p = v["params"]
    k = np.asarray(p["layer3_0"]["conv2"]["kernel"])  # 3x3x256x256, kaiming fan_out normal
    want = math.sqrt(2.0 / (9 * 256))
    np.testing.assert_allclose(k.std(), want, rtol=0.02)
    assert np.abs(k).max() > 3.5 * want
    assert "bias" not in p["layer3_0"]["conv2"]
    np.testing.assert_array_equal(p["layer3_0"]["bn1"]["scale"], 1.0)
    np.testing.assert_array_equal(p["layer3_0"]["bn1"]["bias"], 0.0)
    bound = 1 / math.sqrt(512)
    for leaf in (p["head"]["kernel"], p["head"]["bias"]):
        assert np.abs(np.asarray(leaf)).max() <= bound
    np.testing.assert_array_equal(v["batch_stats"]["stem_bn"]["mean"], 0.0)
    np.testing.assert_array_equal(v["batch_stats"]["stem_bn"]["var"], 1.0)


# ----------------------------------------------------------------------------------------------
# BatchNorm semantics (on the small CNN and the BatchNorm layer itself)


def test_batchnorm_layer_train_eval_and_running_stats():
    x = jax.random.normal(jax.random.key(0), (4, 3, 2, 5)) * 3 + 1
    bn = BatchNorm(momentum=0.9, epsilon=1e-5)
    v = bn.init(jax.random.key(0), x, train=False)
    y, upd = bn.apply(v, x, train=True, mutable=["batch_stats"])
    xn = np.asarray(x).reshape(-1, 5)
    mean, var = xn.mean(0), xn.var(0)
    np.testing.assert_allclose(
        y, (np.asarray(x) - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(upd["batch_stats"]["mean"], 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(upd["batch_stats"]["var"], 0.9 + 0.1 * var, rtol=1e-5)
    # Eval mode uses the running statistics, not the batch.
    v2 = {"params": v["params"], "batch_stats": upd["batch_stats"]}
    ye = bn.apply(v2, x, train=False)
    rm, rv = np.asarray(upd["batch_stats"]["mean"]), np.asarray(upd["batch_stats"]["var"])
    np.testing.assert_allclose(ye, (np.asarray(x) - rm) / np.sqrt(rv + 1e-5), rtol=1e-4, atol=1e-5)
    # PyTorch's unbiased running variance behind a flag.
    bnu = BatchNorm(momentum=0.0, epsilon=1e-5, unbiased=True)
    _, updu = bnu.apply(v, x, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(updu["batch_stats"]["var"], xn.var(0, ddof=1), rtol=1e-5)


@pytest.fixture(scope="module")
def small():
    # Small images keep compiles cheap; the CNN only needs H, W to survive three stride-2 convs.
    model = make_model({"name": "small_cnn", "filters": 4})
    x = jax.random.uniform(jax.random.key(0), (8, 16, 8, 3), jnp.float32)
    init = jax.jit(model.init)
    train = jax.jit(lambda v, x: model.apply(v, x, train=True))
    return model, init, x, train


def test_small_cnn_init_and_scale_params(small):
    model, init, x, _ = small
    v = init(jax.random.key(0), x)
    p = v["params"]
    bound = 1 / math.sqrt(3 * 9)  # PyTorch default conv init, fan_in = C_in * 3 * 3
    k = np.asarray(p["conv_0"]["kernel"])
    assert np.abs(k).max() <= bound and k.std() > 0.4 * bound
    np.testing.assert_array_equal(p["bn_0"]["scale"], 1.0)
    np.testing.assert_array_equal(v["batch_stats"]["bn_0"]["var"], 1.0)
    # scale_params touches convs and the head, not BN affine parameters or statistics.
    s = jax.jit(scale_params)(v, 2.0)
    np.testing.assert_allclose(s["params"]["head"]["kernel"], 2 * p["head"]["kernel"])
    np.testing.assert_allclose(s["params"]["conv_1"]["kernel"], 2 * p["conv_1"]["kernel"])
    np.testing.assert_array_equal(s["params"]["bn_1"]["scale"], 1.0)
    jax.tree.map(np.testing.assert_array_equal, s["batch_stats"], v["batch_stats"])


def test_small_cnn_forward_and_train_mode_updates_stats(small):
    model, init, x, train = small
    v = init(jax.random.key(0), x)
    logits, upd = train(v, x)
    assert logits.shape == (8, 2) and np.all(np.isfinite(np.asarray(logits)))
    changed = jax.tree.map(
        lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
        upd["batch_stats"],
        v["batch_stats"],
    )
    assert all(jax.tree.leaves(changed))
    # Params are untouched by a forward pass; only the statistics come back.
    assert set(upd) == {"batch_stats"}


def test_eval_mode_uses_running_stats(small):
    model, init, x, train = small
    v = init(jax.random.key(0), x)
    _, upd = train(v, x)
    v_new = {"params": v["params"], "batch_stats": upd["batch_stats"]}
    ev = jax.jit(model.logits)
    # Eval is per-example: an example's logits do not depend on the rest of the batch ...
    np.testing.assert_allclose(ev(v_new, x)[:1], ev(v_new, x[:1]), rtol=1e-5, atol=1e-6)
    # ... while train-mode logits do (batch statistics).
    assert not np.allclose(train(v, x)[0][:1], train(v, x[:1])[0], atol=1e-4)
    # And eval output changes when the running statistics change.
    assert not np.allclose(ev(v_new, x), ev(v, x), atol=1e-4)


def test_vmap_over_stacked_bn_models_gives_per_model_stats(small):
    model, init, x, train = small
    keys = jax.random.split(jax.random.key(1), 2)
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *[init(k, x) for k in keys])
    xs = jnp.stack([x, x[::-1] * 0.5])  # different data per model too
    logits, upd = jax.jit(jax.vmap(lambda v, x: model.apply(v, x, train=True)))(stacked, xs)
    assert logits.shape == (2, 8, 2)
    for i in range(2):
        vi = jax.tree.map(lambda a, i=i: a[i], stacked)
        li, ui = train(vi, xs[i])
        np.testing.assert_allclose(logits[i], li, rtol=1e-4, atol=1e-5)
        jax.tree.map(
            lambda a, b, i=i: np.testing.assert_allclose(a[i], b, rtol=1e-4, atol=1e-6),
            upd["batch_stats"],
            ui["batch_stats"],
        )
    m0 = upd["batch_stats"]["bn_0"]["mean"]
    assert not np.allclose(m0[0], m0[1])


def test_image_models_reject_vector_inputs():
    model = make_model({"name": "small_cnn"})
    with pytest.raises(ValueError, match="x_example.shape"):
        model.init(jax.random.key(0), jnp.zeros((2, 50)))
    with pytest.raises(ValueError, match="bn_momentum"):
        make_model({"name": "resnet18", "bn_momentum": 1.5})
    with pytest.raises(ValueError, match="^dropout="):
        make_model({"name": "resnet18", "dropout": True})


# ----------------------------------------------------------------------------------------------
# Real forward passes of the big models (compile takes tens of seconds each on 2 CPU cores)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in IMAGE_MODELS if n != "small_cnn"])
def test_big_models_forward_train_eval(name):
    model = make_model({"name": name})
    x = _img(2)
    v = jax.jit(model.init)(jax.random.key(0), x)
    logits, upd = jax.jit(lambda v, x: model.apply(v, x, train=True))(v, x)
    assert logits.shape == (2, 2) and np.all(np.isfinite(np.asarray(logits)))
    assert all(
        jax.tree.leaves(
            jax.tree.map(
                lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
                upd["batch_stats"],
                v["batch_stats"],
            )
        )
    )
    ev = jax.jit(model.logits)(v, x)
    assert ev.shape == (2, 2) and np.all(np.isfinite(np.asarray(ev)))
