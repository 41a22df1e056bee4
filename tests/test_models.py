"""Tests for sbjax.models: vector models (linear, FCN, 1-D CNN, GRU, LSTM), inits, dropout."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbjax.models import INIT_SCHEMES, ModelConfig, make_model, scale_params

D = 50
F32_EPS = float(np.finfo(np.float32).eps)


def assert_f32_close(a, b, n_ops, ulps=4.0):
    """`a` equals `b` up to float32 rounding: two compiled programs (jit vs eager, vmap vs single)
    may fuse and order the ``n_ops`` operations behind each value differently, which on some
    CPUs changes the last bits (3.7e-8 was seen). ``ulps`` roundings per operation, accumulated
    like a random walk; absolute part relative to the largest |b| (a sum's rounding is relative to
    its terms, not to its possibly small result)."""
    tol = ulps * F32_EPS * math.sqrt(n_ops)
    b = np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * float(np.max(np.abs(b), initial=0.0)))


VECTOR_CONFIGS = [
    {"name": "linear"},
    {"name": "fcn", "width": 100, "depth": 1},
    {"name": "fcn", "width": 32, "depth": 3, "activation": "prelu"},
    {"name": "fcn", "width": 32, "depth": 2, "activation": "leaky_relu"},
    {"name": "fcn", "width": 32, "depth": 2, "activation": "tanh"},
    {"name": "cnn1d", "filters": 8, "kernel": 7, "depth": 2},
    {"name": "cnn1d", "filters": 8, "kernel": 5, "depth": 1, "pool": True},
    {"name": "gru", "hidden": 16, "chunk": 10, "depth": 2},
    {"name": "lstm", "hidden": 16, "chunk": 5, "depth": 1},
]


def _x(n=8, d=D, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, d), jnp.float32)


@functools.cache
def _cached(items, d, seed):
    model = make_model(dict(items))
    return model, jax.jit(model.init)(jax.random.key(seed), _x(2, d))


def _build(cfg, d=D, seed=0):
    """(model, variables) for `cfg`, initialised once per (cfg, d, seed): init compiles dominate."""
    return _cached(tuple(sorted(cfg.items())), d, seed)


def _leaves_with_path(tree):
    return [
        ("/".join(str(getattr(k, "key", k)) for k in path), leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


@pytest.mark.parametrize("cfg", VECTOR_CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_shapes_dtype_and_logits_convenience(cfg):
    model, variables = _build(cfg)
    x = _x()  # the example's batch size (2) does not matter
    assert set(variables) == {"params"}
    logits, updates = model.apply(variables, x)
    assert logits.shape == (8, 2) and logits.dtype == jnp.float32
    assert updates == {}
    # logits() is apply(train=False): the same eager ops on the same inputs, so bit-identical
    np.testing.assert_array_equal(model.logits(variables, x), logits)
    assert np.all(np.isfinite(np.asarray(logits)))


def test_config_object_and_dict_agree():
    a = make_model(ModelConfig(name="fcn", width=20, depth=2))
    b = make_model({"name": "fcn", "width": 20, "depth": 2})
    x = _x()
    va, vb = a.init(jax.random.key(3), x), b.init(jax.random.key(3), x)
    # the same model (same eager ops, same key): bit-identical
    np.testing.assert_array_equal(a.logits(va, x), b.logits(vb, x))


def test_fcn_structure_matches_reference():
    model, v = _build({"name": "fcn", "width": 100, "depth": 2})
    shapes = {p: leaf.shape for p, leaf in _leaves_with_path(v["params"])}
    assert shapes == {
        "hidden_0/bias": (100,),
        "hidden_0/kernel": (D, 100),
        "hidden_1/bias": (100,),
        "hidden_1/kernel": (100, 100),
        "head/bias": (2,),
        "head/kernel": (100, 2),
    }
    # Hand-written forward pass: Dense -> ReLU -> Dense -> ReLU -> Dense.
    p, x = v["params"], _x()
    h = jax.nn.relu(x @ p["hidden_0"]["kernel"] + p["hidden_0"]["bias"])
    h = jax.nn.relu(h @ p["hidden_1"]["kernel"] + p["hidden_1"]["bias"])
    want = h @ p["head"]["kernel"] + p["head"]["bias"]
    np.testing.assert_allclose(model.logits(v, x), want, rtol=1e-5, atol=1e-5)


def test_prelu_slope_is_learnable_and_initialised_to_quarter():
    model, v = _build(VECTOR_CONFIGS[2])
    assert float(v["params"]["prelu_0"]) == 0.25 and float(v["params"]["prelu_1"]) == 0.25
    x = _x()
    grads = jax.grad(lambda p: model.logits({"params": p}, x).sum())(v["params"])
    assert float(jnp.abs(grads["prelu_0"])) > 0


# ----------------------------------------------------------------------------------------------
# Initialisation


def _fan_in(path, leaf, hidden=None):
    if "kernel_hh" in path or "bias_hh" in path or "kernel_ih" in path or "bias_ih" in path:
        return hidden  # PyTorch RNNs use 1/sqrt(hidden) for everything
    return None


@pytest.mark.parametrize(
    "cfg",
    [
        {"name": "fcn", "width": 300, "depth": 2},
        {"name": "cnn1d", "filters": 32, "kernel": 7, "depth": 2},
        {"name": "gru", "hidden": 100, "chunk": 10},
        {"name": "lstm", "hidden": 64, "chunk": 10},
    ],
    ids=lambda c: c["name"],
)
def test_torch_init_bounds_and_uniform_std(cfg):
    _, v = _build(cfg)
    params = v["params"]
    kernels = {
        p[: -len("/kernel")]: leaf for p, leaf in _leaves_with_path(params) if p.endswith("/kernel")
    }
    for path, leaf in _leaves_with_path(params):
        leaf = np.asarray(leaf)
        if cfg["name"] in ("gru", "lstm") and not path.startswith("head"):
            bound = 1.0 / math.sqrt(cfg["hidden"])
        else:
            layer = path.rsplit("/", 1)[0]
            k = kernels[layer]
            bound = 1.0 / math.sqrt(math.prod(k.shape[:-1]))  # fan_in = prod(kernel) * C_in
        assert np.abs(leaf).max() <= bound + 1e-7, path
        if leaf.size >= 200:
            # U(-b, b) has std b / sqrt(3) and fills its range.
            np.testing.assert_allclose(leaf.std(), bound / math.sqrt(3), rtol=0.1, err_msg=path)
            assert np.abs(leaf).max() > 0.9 * bound, path
            assert abs(leaf.mean()) < 0.1 * bound, path


@pytest.mark.parametrize("init", ["kaiming", "kaiming_uniform", "xavier", "xavier_uniform"])
def test_kaiming_xavier_std_and_zero_bias(init):
    _, v = _build({"name": "fcn", "width": 400, "depth": 2, "init": init}, d=300)
    k = np.asarray(v["params"]["hidden_1"]["kernel"])  # 400 x 400
    fan_in, fan_out = k.shape
    want = (
        math.sqrt(2.0 / fan_in)
        if init.startswith("kaiming")
        else math.sqrt(2.0 / (fan_in + fan_out))
    )
    np.testing.assert_allclose(k.std(), want, rtol=0.03)
    if init.endswith("uniform"):
        assert np.abs(k).max() <= want * math.sqrt(3) + 1e-6
    else:  # untruncated normal: some draws beyond 2 std (a truncated normal has none)
        assert np.abs(k).max() > 2.5 * want
    for layer in ("hidden_0", "hidden_1", "head"):
        np.testing.assert_array_equal(v["params"][layer]["bias"], 0.0)
    k0 = np.asarray(v["params"]["hidden_0"]["kernel"])  # 300 x 400
    want0 = math.sqrt(2.0 / 300) if init.startswith("kaiming") else math.sqrt(2.0 / 700)
    np.testing.assert_allclose(k0.std(), want0, rtol=0.03)


def test_flax_init_is_lecun_with_zero_bias():
    _, v = _build({"name": "fcn", "width": 400, "depth": 2, "init": "flax"}, d=300)
    k = np.asarray(v["params"]["hidden_1"]["kernel"])
    # LeCun truncated normal has variance 1/fan_in (Flax rescales the truncated draw).
    np.testing.assert_allclose(k.std(), math.sqrt(1.0 / 400), rtol=0.03)
    np.testing.assert_array_equal(v["params"]["hidden_1"]["bias"], 0.0)


@pytest.mark.parametrize(
    "name, init",
    [(n, i) for j, i in enumerate(INIT_SCHEMES) for n in [("gru", "lstm", "cnn1d")[(j + 1) % 3]]],
)
def test_every_init_scheme_builds_finite_models(name, init):
    model, v = _build({"name": name, "init": init, "hidden": 16, "filters": 4})
    assert np.all(np.isfinite(np.asarray(model.logits(v, _x()))))
    if name == "gru" and init == "flax":  # Flax cell defaults: orthogonal recurrent kernels
        k = np.asarray(v["params"]["gru_0"]["kernel_hh"])
        for g in range(3):
            blk = k[:, 16 * g : 16 * (g + 1)]
            np.testing.assert_allclose(blk.T @ blk, np.eye(16), atol=1e-5)
        np.testing.assert_array_equal(v["params"]["gru_0"]["bias_ih"], 0.0)


def test_scale_params_scales_kernels_and_biases_only():
    _, v = _build(VECTOR_CONFIGS[2])
    s = scale_params(v, 0.1)
    np.testing.assert_allclose(
        s["params"]["hidden_0"]["kernel"], 0.1 * v["params"]["hidden_0"]["kernel"], rtol=1e-6
    )
    np.testing.assert_allclose(
        s["params"]["head"]["bias"], 0.1 * v["params"]["head"]["bias"], rtol=1e-6
    )
    assert float(s["params"]["prelu_0"]) == 0.25  # the slope is not a random init
    # Works with a traced scale under jit.
    s2 = jax.jit(scale_params)(v, jnp.float32(2.0))
    np.testing.assert_allclose(
        s2["params"]["hidden_1"]["kernel"], 2.0 * v["params"]["hidden_1"]["kernel"], rtol=1e-6
    )


# ----------------------------------------------------------------------------------------------
# Dropout


DROP_CFG = {"name": "fcn", "width": 64, "depth": 2, "dropout": True, "input_dropout": True}


def test_dropout_rate_zero_equals_no_dropout():
    model, v = _build(DROP_CFG)
    x = _x()
    eval_logits = model.logits(v, x)
    # Concrete zero: no key needed; no dropout op is built, so the same eager ops as eval and
    # bit-identical.
    np.testing.assert_array_equal(model.apply(v, x, train=True)[0], eval_logits)
    # Traced zero under jit with a key: the no-dropout output up to float rounding (a compiled
    # program fuses differently from eager ops; D + 2 * 64 + 64 multiply-adds per logit).
    f = jax.jit(lambda v, x, k, r: model.apply(v, x, train=True, key=k, dropout_rate=r)[0])
    out = f(v, x, jax.random.key(5), jnp.float32(0.0))
    assert_f32_close(out, eval_logits, n_ops=D + 3 * 64)
    # ... and far from what any dropout would give
    assert not np.allclose(f(v, x, jax.random.key(5), jnp.float32(0.1)), eval_logits, atol=1e-3)


def test_dropout_traced_rate_changes_train_output_and_eval_ignores_it():
    model, v = _build(DROP_CFG)
    x = _x(n=64)
    f = jax.jit(lambda k, r: model.apply(v, x, train=True, key=k, dropout_rate=r)[0])
    out_a = f(jax.random.key(1), jnp.float32(0.5))
    out_b = f(jax.random.key(2), jnp.float32(0.5))
    assert not np.allclose(out_a, model.logits(v, x))
    assert not np.allclose(out_a, out_b)  # different keys, different masks
    # same program, same key and rate: bit-identical
    np.testing.assert_array_equal(out_a, f(jax.random.key(1), jnp.float32(0.5)))
    # Eval mode ignores both key and rate (the same eager ops as logits(): bit-identical).
    np.testing.assert_array_equal(
        model.apply(v, x, train=False, key=jax.random.key(1), dropout_rate=0.5)[0],
        model.logits(v, x),
    )
    # A grid over rates is a vmap.
    rates = jnp.array([0.0, 0.1, 0.5], jnp.float32)
    outs = jax.vmap(lambda r: f(jax.random.key(1), r))(rates)
    # rate 0 inside a vmapped program vs eager eval: equal to float rounding (3.7e-8 apart on
    # one CPU, identical on another)
    assert_f32_close(outs[0], model.logits(v, x), n_ops=D + 3 * 64)
    assert_f32_close(outs[2], out_a, n_ops=D + 3 * 64)


def test_dropout_keeps_expected_fraction_and_rescales():
    model = make_model({"name": "linear", "input_dropout": True})
    x = jnp.ones((1, 20000), jnp.float32)
    v = model.init(jax.random.key(0), x)
    # With all-ones input and kernel column of ones, logit = sum of kept inputs / keep.
    v = {"params": {"head": {"kernel": jnp.ones((20000, 2)), "bias": jnp.zeros(2)}}}
    out = model.apply(v, x, train=True, key=jax.random.key(3), dropout_rate=0.2)[0]
    np.testing.assert_allclose(float(out[0, 0]) / 20000, 1.0, atol=0.02)


def test_dropout_errors():
    model, v = _build(DROP_CFG)
    x = _x()
    with pytest.raises(ValueError, match="key"):
        model.apply(v, x, train=True, dropout_rate=0.1)
    plain, vp = _build({"name": "fcn", "width": 100, "depth": 1})
    with pytest.raises(ValueError, match="dropout_rate"):
        plain.apply(vp, x, train=True, key=jax.random.key(0), dropout_rate=0.1)


@pytest.mark.parametrize("name", ["cnn1d", "lstm"])
def test_dropout_sites_in_other_models(name):
    model, v = _build({"name": name, "dropout": True, "hidden": 16, "filters": 4, "depth": 2})
    x = _x(n=32)

    @jax.jit
    def f(r):
        train = model.apply(v, x, train=True, key=jax.random.key(1), dropout_rate=r)[0]
        return train, model.logits(v, x)

    # Different compiled programs may round differently; rate 0 is exact up to that.
    np.testing.assert_allclose(*f(jnp.float32(0.0)), rtol=1e-5, atol=1e-6)
    assert not np.allclose(*f(jnp.float32(0.5)))


# ----------------------------------------------------------------------------------------------
# vmap over stacked models


@pytest.mark.parametrize("cfg", [VECTOR_CONFIGS[i] for i in (2, 7)], ids=lambda c: c["name"])
def test_vmap_over_stacked_variables_equals_loop(cfg):
    model = make_model(dict(cfg, dropout=True))
    x = _x(n=16)
    keys = jax.random.split(jax.random.key(0), 3)
    stacked = jax.jit(jax.vmap(model.init, in_axes=(0, None)))(keys, x)
    dkeys = jax.random.split(jax.random.key(1), 3)
    rates = jnp.array([0.0, 0.2, 0.4], jnp.float32)

    def one(v, k, r):
        return model.apply(v, x, train=True, key=k, dropout_rate=r)[0]

    out = jax.jit(jax.vmap(one))(stacked, dkeys, rates)
    one1 = jax.jit(one)
    for i in range(3):
        vi = jax.tree.map(lambda a, i=i: a[i], stacked)
        np.testing.assert_allclose(out[i], one1(vi, dkeys[i], rates[i]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[0], out[1])  # distinct models
    if cfg["name"] == "fcn":  # vmapped init == init per key
        # The same random bits; the few elementwise ops that scale them into U(-b, b) may round
        # differently in the vmapped program (e.g. a fused multiply-add), so a few ulp of b.
        v1 = model.init(keys[1], x)
        jax.tree.map(
            lambda a, b: assert_f32_close(a, b, n_ops=4), v1, jax.tree.map(lambda a: a[1], stacked)
        )
        assert not np.allclose(
            v1["params"]["hidden_0"]["kernel"], stacked["params"]["hidden_0"]["kernel"][0]
        )  # keys differ


# ----------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    "cfg, param",
    [
        ({"name": "mlp"}, "name"),
        ({"name": "fcn", "width": 0}, "width"),
        ({"name": "fcn", "depth": 0}, "depth"),
        ({"name": "fcn", "width": 10.5}, "width"),
        ({"name": "fcn", "activation": "gelu"}, "activation"),
        ({"name": "fcn", "init": "he"}, "init"),
        ({"name": "fcn", "widht": 10}, "widht"),
        ({"name": "cnn1d", "kernel": 0}, "kernel"),
        ({"name": "cnn1d", "kernel": 1, "pool": True}, "kernel"),
        ({"name": "gru", "hidden": 0}, "hidden"),
        ({"name": "lstm", "chunk": 0}, "chunk"),
        ({"name": "fcn", "dropout": 0.1}, "dropout"),
    ],
)
def test_bad_config_raises_value_error_naming_parameter(cfg, param):
    with pytest.raises(ValueError, match=rf"^{param}="):
        make_model(cfg)


@pytest.mark.parametrize("name", ["gru", "lstm"])
def test_rnn_chunk_must_divide_input_dim(name):
    model = make_model({"name": name, "chunk": 7, "hidden": 8})
    with pytest.raises(ValueError, match=r"chunk=7 .*D=50"):
        model.init(jax.random.key(0), _x())
    with pytest.raises(ValueError, match=r"chunk=7 .*D=50"):
        model.apply({"params": {}}, _x())
    model = make_model({"name": name, "chunk": 5, "hidden": 8})
    jax.eval_shape(model.init, jax.random.key(0), _x())  # 50 % 5 == 0 is fine


def test_rnn_reads_input_as_chunks_in_order():
    # A 1-step GRU with chunk == D sees all of x at once; a model with chunk l must depend on
    # the LAST chunk through the last time step: changing only the last chunk changes the output.
    model, v = _build(VECTOR_CONFIGS[7])
    x = _x(n=4)
    x2 = x.at[:, -10:].add(1.0)
    assert not np.allclose(model.logits(v, x), model.logits(v, x2))


def test_gru_matches_manual_torch_equations():
    model, v = _build({"name": "gru", "hidden": 6, "chunk": 5}, d=10)
    x = _x(n=3, d=10)

    @jax.jit
    def manual(params, x):
        p = params["gru_0"]
        h = jnp.zeros((3, 6))
        sig = jax.nn.sigmoid
        for t in range(2):
            xt = x[:, 5 * t : 5 * t + 5]
            gi = xt @ p["kernel_ih"] + p["bias_ih"]
            gh = h @ p["kernel_hh"] + p["bias_hh"]
            r = sig(gi[:, :6] + gh[:, :6])
            z = sig(gi[:, 6:12] + gh[:, 6:12])
            n = jnp.tanh(gi[:, 12:] + r * gh[:, 12:])
            h = (1 - z) * n + z * h
        return h @ params["head"]["kernel"] + params["head"]["bias"]

    np.testing.assert_allclose(model.logits(v, x), manual(v["params"], x), rtol=1e-5, atol=1e-6)


def test_cnn1d_padding_and_fc_sizes():
    _, v = _build({"name": "cnn1d", "filters": 8, "kernel": 7, "depth": 2})
    assert v["params"]["fc"]["kernel"].shape == (D * 8, D)  # length preserved by (k-1)/2 padding
    pooled = make_model({"name": "cnn1d", "filters": 4, "kernel": 7, "pool": True})
    vp = jax.eval_shape(pooled.init, jax.random.key(0), _x())
    assert vp["params"]["fc"]["kernel"].shape == ((D // 3) * 4, D)  # MaxPool1d(7 // 2)


@pytest.mark.parametrize("kernel,channels", [(7, 1), (5, 3), (4, 2)])
def test_patch_conv1d_is_flax_conv(kernel, channels):
    """PatchConv1D (the cnn1d layer) has nn.Conv's parameters (same values from the same key)
    and computes its cross-correlation with symmetric padding (k-1)//2, to float rounding."""
    from flax import linen as nn

    from sbjax.models.cnn1d import PatchConv1D
    from sbjax.models.initializers import conv

    pad = (kernel - 1) // 2

    class Reference(nn.Module):
        @nn.compact
        def __call__(self, h):
            return conv(8, (kernel,), channels, "torch", padding=((pad, pad),), name="c")(h)

    class Patches(nn.Module):
        @nn.compact
        def __call__(self, h):
            return PatchConv1D(8, kernel, "torch", name="c")(h)

    x = jax.random.normal(jax.random.key(1), (4, 50, channels))
    p_ref = Reference().init(jax.random.key(0), x)
    p_new = Patches().init(jax.random.key(0), x)
    jax.tree.map(np.testing.assert_array_equal, p_ref, p_new)
    y_ref, y_new = Reference().apply(p_ref, x), Patches().apply(p_new, x)
    assert y_ref.shape == y_new.shape
    np.testing.assert_allclose(y_new, y_ref, rtol=1e-5, atol=1e-5)


def test_equal_configs_share_one_model_and_its_compiled_programs():
    """make_model returns one object per config, so a sweep that passes a config dict again
    reuses the programs compiled for it instead of compiling them again."""
    from sbjax.train import TrainConfig, train_sweep
    from sbjax.train import sweep as sweep_module

    config = {"name": "fcn", "width": 8, "depth": 1}
    assert make_model(config) is make_model(dict(config)) is make_model(ModelConfig(**config))
    assert make_model(config) is not make_model({**config, "width": 9})
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    cfg = TrainConfig(batch_size=16, max_steps=4, eval_every=2)
    train_sweep(cfg, config, (x, y), grid={"lr": [0.1]}, progress=False)
    programs = set(sweep_module._PROGRAM_CACHE)
    train_sweep(cfg, dict(config), (x, y), grid={"lr": [0.2]}, progress=False)
    assert set(sweep_module._PROGRAM_CACHE) == programs  # no new program was compiled
