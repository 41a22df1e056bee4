"""Fidelity to the reference's training loop (REFERENCE.md Sec. 3.1, 3.2, 12).

* The padded last batch of an epoch must not enter BatchNorm batch statistics: the reference's
  last batch is simply smaller.
* `bn_unbiased=True` updates running variances with PyTorch's unbiased batch variance.
* Best-model selection never picks the evaluation made after the patience window (the reference's
  "final patience evaluation" is never considered).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sbjax.models import make_model
from sbjax.models.image import BatchNorm
from sbjax.train import TrainConfig, make_train
from sbjax.train.config import hparam_arrays
from sbjax.train.engine import make_trainer, prepare_data
from sbjax.train.objective import per_example_loss
from sbjax.train.optim import make_optimizer

# ------------------------------------------------------------------------------------------------
# BatchNorm on the padded last batch


def _images(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 8, 4, 3)).astype(np.float32)
    return x, (rng.uniform(size=n) < 0.5).astype(np.int32)


def _hp(cfg):
    return {k: jnp.asarray(v[0]) for k, v in hparam_arrays(cfg, [{}], 1).items()}


def test_padded_rows_do_not_enter_batchnorm_statistics():
    model = make_model({"name": "small_cnn", "filters": 2})
    # n = 10, batch 8: the second batch of each epoch has 2 valid rows and 6 copies of the row at
    # epoch position n-1.
    cfg = TrainConfig(
        lr=0.1, momentum=0.9, batch_size=8, max_steps=4, eval_every=2, stop_rule="none"
    )
    x, y = _images(10)
    data = jax.tree_util.tree_map(jnp.asarray, prepare_data(cfg, (x, y)))
    trainer = make_trainer(cfg, model, data)
    hp = _hp(cfg)
    s0 = trainer.init(jax.random.key(0), hp, data)
    s1 = jax.jit(trainer.update)(s0, hp, data)  # step 0: a full batch
    s2 = jax.jit(trainer.update)(s1, hp, data)  # step 1: the padded batch

    idx, w = trainer._batch_indices(s1.key, s1.step)
    idx, w = np.asarray(idx), np.asarray(w)
    assert w.sum() == 2 and np.all(idx[w == 0] == idx[-1])
    xv, yv = x[idx[w > 0]], y[idx[w > 0]]

    # The same step on the valid rows only (what the reference's smaller last batch does).
    v = s1.variables

    def loss_fn(params):
        logits, mutated = model.apply({**v, "params": params}, jnp.asarray(xv), train=True)
        return jnp.mean(per_example_loss(cfg, logits, jnp.asarray(yv))), mutated

    grads, mutated = jax.jit(jax.grad(loss_fn, has_aux=True))(v["params"])
    tx = make_optimizer(cfg, hp, trainer.steps_per_epoch)
    updates, _ = tx.update(grads, s1.opt_state, v["params"])
    want_params = optax.apply_updates(v["params"], updates)

    chex.assert_trees_all_close(
        s2.variables["batch_stats"], mutated["batch_stats"], rtol=1e-5, atol=1e-6
    )
    chex.assert_trees_all_close(s2.variables["params"], want_params, rtol=1e-4, atol=1e-5)

    # The check has teeth: statistics of the padded batch without the mask are far off.
    xb = jnp.asarray(x[idx])
    _, unmasked = jax.jit(lambda v, xb: model.apply(v, xb, train=True))(v, xb)
    diff = jax.tree_util.tree_map(
        lambda a, b: float(jnp.max(jnp.abs(a - b))), unmasked["batch_stats"], mutated["batch_stats"]
    )
    assert max(jax.tree_util.tree_leaves(diff)) > 1e-2


def test_full_batches_keep_the_unmasked_program():
    """Without a partial batch no mask is passed: results are those of the plain BN path."""
    model = make_model({"name": "small_cnn", "filters": 2})
    cfg = TrainConfig(batch_size=5, max_steps=2, eval_every=1, stop_rule="none")
    x, y = _images(10)
    data = prepare_data(cfg, (x, y))
    trainer = make_trainer(cfg, model, data)
    assert not trainer.pads_last_batch
    assert trainer._bn_mask({"batch_stats": {}}, jnp.ones(5)) == {}


def test_all_ones_mask_equals_no_mask():
    model = make_model({"name": "small_cnn", "filters": 2, "bn_unbiased": True})
    x, _ = _images(6)
    v = model.init(jax.random.key(1), x)
    apply = jax.jit(lambda v, x, m: model.apply(v, x, train=True, mask=m))
    la, ua = jax.jit(lambda v, x: model.apply(v, x, train=True))(v, x)
    lb, ub = apply(v, x, jnp.ones(6))
    chex.assert_trees_all_close((la, ua), (lb, ub), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# PyTorch's unbiased running variance


@pytest.mark.parametrize("masked", [False, True])
def test_bn_unbiased_running_var_is_torch_correction(masked):
    rng = np.random.default_rng(0)
    n, h, w_, c = 6, 3, 2, 4
    x = rng.normal(2.0, 3.0, size=(n, h, w_, c)).astype(np.float32)
    mask = np.array([1, 1, 0, 1, 0, 1], np.float32) if masked else None
    rows = x[mask > 0] if masked else x
    flat = rows.reshape(-1, c).astype(np.float64)  # torch: n = numel / C values per channel
    m = flat.shape[0]
    biased = flat.var(axis=0)
    want_var = 0.9 * 1.0 + 0.1 * biased * m / (m - 1)  # running_var init 1, momentum 0.1
    want_mean = 0.1 * flat.mean(axis=0)

    for unbiased, var in ((True, want_var), (False, 0.9 + 0.1 * biased)):
        bn = BatchNorm(momentum=0.9, epsilon=1e-5, unbiased=unbiased)
        v = bn.init(jax.random.key(0), x, False)
        y, upd = bn.apply(v, x, True, mask, mutable=["batch_stats"])
        np.testing.assert_allclose(upd["batch_stats"]["var"], var, rtol=1e-5)
        np.testing.assert_allclose(upd["batch_stats"]["mean"], want_mean, rtol=1e-5, atol=1e-6)
        # Normalisation itself uses the biased variance of the counted rows (as PyTorch).
        got = np.asarray(y)[mask > 0] if masked else np.asarray(y)
        z = (rows - flat.mean(0)) / np.sqrt(biased + 1e-5)
        np.testing.assert_allclose(got, z, rtol=1e-4, atol=1e-4)


def test_model_config_bn_unbiased_reaches_every_batchnorm():
    """Through `make_model`: the first BN's running var is the torch-corrected variance of the
    first conv's output."""
    x, _ = _images(4)
    for flag in (False, True):
        model = make_model({"name": "small_cnn", "filters": 2, "bn_unbiased": flag})
        v = model.init(jax.random.key(0), x)
        _, state = model.module.apply(
            v, x, train=True, mutable=["batch_stats", "intermediates"], capture_intermediates=True
        )
        conv = np.asarray(state["intermediates"]["conv_0"]["__call__"][0], np.float64)
        flat = conv.reshape(-1, conv.shape[-1])
        m = flat.shape[0]
        batch_var = flat.var(axis=0) * (m / (m - 1) if flag else 1.0)
        np.testing.assert_allclose(
            state["batch_stats"]["bn_0"]["var"], 0.9 + 0.1 * batch_var, rtol=1e-5
        )


# ------------------------------------------------------------------------------------------------
# Best-model selection and the patience window


def _linear_data(n=64, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


@pytest.mark.parametrize(
    "patience, stop_step, best_step",
    [
        (1, 10, 10),  # stops at the converging evaluation
        (5, 14, 10),  # the evaluation at 20 sees the frozen step-14 model: never selected
        (11, 20, 20),  # an evaluation exactly at the end of the window is one the reference makes
        (15, 24, 20),  # inside the window: selectable; the one at 30 (frozen at 24) is not
    ],
)
def test_best_model_ignores_the_evaluation_after_the_patience_window(
    patience, stop_step, best_step
):
    x, y = _linear_data()
    # The loss rule with a huge threshold fires at the first evaluation (step 10); a tiny lr keeps
    # the validation accuracy unchanged, so every evaluation ties and ties go to the later one:
    # only the window rule keeps the post-window evaluation out.
    cfg = TrainConfig(
        lr=1e-5,
        batch_size=16,
        max_steps=40,
        eval_every=10,
        stop_rule="loss",
        stop_eps=100.0,
        patience=patience,
    )
    train = make_train(cfg, make_model({"name": "fcn", "width": 8, "depth": 1}), (x, y), val=(x, y))
    hp = {k: jnp.float32(v) for k, v in cfg.default_hparams().items()}
    state, hist = jax.jit(train)(jax.random.key(0), hp)
    assert int(state.stop_step) == stop_step and int(state.stop_reason) == 1
    va = np.asarray(hist["val_acc"])
    assert np.all(va == va[0]), va  # precondition of the tie argument
    assert int(state.best_step) == best_step
    # The selected parameters are those of that evaluation, not the final ones.
    if best_step < stop_step:
        moved = jax.tree_util.tree_map(
            lambda a, b: float(jnp.max(jnp.abs(a - b))), state.best_variables, state.variables
        )
        assert max(jax.tree_util.tree_leaves(moved)) > 0
