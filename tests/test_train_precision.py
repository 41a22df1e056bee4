"""TrainConfig(compute_dtype="bfloat16"): mixed-precision training with float32 master state."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbjax.models import make_model
from sbjax.train import TrainConfig, train_sweep
from sbjax.train.checkpoint import config_for_fingerprint
from sbjax.train.engine import to_compute_dtype

MODELS = [
    {"name": "fcn", "width": 16, "depth": 2},
    {"name": "cnn1d", "filters": 4, "kernel": 3, "depth": 1},
    {"name": "gru", "hidden": 8, "chunk": 4, "depth": 1},
]


def _data(n=256, d=8):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


def test_cast_touches_floating_leaves_only():
    tree = {"w": jnp.ones((2, 2)), "i": jnp.arange(3), "f64": np.ones(2, np.float64)}
    out = to_compute_dtype(tree, "bfloat16")
    assert out["w"].dtype == jnp.bfloat16 and out["f64"].dtype == jnp.bfloat16
    assert out["i"].dtype == tree["i"].dtype
    assert to_compute_dtype(tree, "float32") is tree


@pytest.mark.parametrize("config", MODELS, ids=lambda c: c["name"])
def test_bfloat16_forward_multiplies_bfloat16_and_returns_float32_logits(config):
    """With bf16 parameters and inputs the model's matmuls take bf16 operands (what runs on an
    accelerator's bf16 units) and the logits come back float32 for the loss."""
    model = make_model(config)
    x, _ = _data(8)
    variables = model.init(jax.random.key(0), x)

    def fwd(v, x):
        return model.logits(to_compute_dtype(v, "bfloat16"), to_compute_dtype(x, "bfloat16"))

    jaxpr = str(jax.make_jaxpr(fwd)(variables, x))
    dots = [line for line in jaxpr.splitlines() if "dot_general" in line]
    assert dots and all("bf16" in line for line in dots)
    assert fwd(variables, x).dtype == jnp.float32


def test_bfloat16_sweep_keeps_float32_state_and_learns_the_same_rule():
    x, y = _data()
    base = TrainConfig(lr=0.1, batch_size=32, max_steps=60, eval_every=30, stop_rule="none")
    model = {"name": "fcn", "width": 16, "depth": 1}
    kw = dict(n_seeds=2, progress=False)
    f32 = train_sweep(base, model, (x, y), **kw)
    bf16 = train_sweep(dataclasses.replace(base, compute_dtype="bfloat16"), model, (x, y), **kw)
    for a, b in zip(jax.tree.leaves(f32.params), jax.tree.leaves(bf16.params), strict=True):
        assert b.dtype == jnp.float32  # master weights stay float32
        np.testing.assert_allclose(b, a, atol=0.05)  # close: same init, same batches
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(f32.params), jax.tree.leaves(bf16.params), strict=True)
    )  # ...but the option did change the arithmetic
    acc32, acc16 = f32.history["train_acc"][:, -1], bf16.history["train_acc"][:, -1]
    assert np.all(acc32 > 0.9) and np.all(np.abs(acc16 - acc32) <= 0.02)


def test_compute_dtype_is_checked_and_default_fingerprint_is_unchanged():
    with pytest.raises(ValueError, match="compute_dtype"):
        TrainConfig(compute_dtype="float16")
    assert "compute_dtype" not in config_for_fingerprint(TrainConfig())
    assert config_for_fingerprint(TrainConfig(compute_dtype="bfloat16"))["compute_dtype"] == (
        "bfloat16"
    )
