"""Training-set size as a traced axis (`sbjax.train.sample_size`, `pack_data(n_rows=...)`): a model
given the first n rows of a larger draw trains exactly as one given those n rows alone."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbjax.data import make_dataset
from sbjax.models import make_model
from sbjax.train import TrainConfig
from sbjax.train.data import pack_data
from sbjax.train.engine import make_train, make_trainer
from sbjax.train.sample_size import STREAM_MODEL, STREAM_TRAIN, STREAM_VAL, sample_size_sweep
from sbjax.train.shuffle import epoch_round_keys, permute_positions

FCN = {"name": "fcn", "width": 32, "depth": 1}
CFG = TrainConfig(lr=0.1, batch_size=100, max_steps=300, eval_every=100, stop_rule="none")
DS = make_dataset("ms", k=5, d=10)


@pytest.mark.parametrize("n", [1, 7, 250, 1000])
def test_a_traced_size_gives_the_static_permutation(n):
    keys = epoch_round_keys(jax.random.key(3), jnp.int32(2))
    pos = jnp.arange(n, dtype=jnp.int32)
    static = permute_positions(pos, keys, n)
    traced = jax.jit(lambda m: permute_positions(pos, keys, m))(jnp.int32(n))
    np.testing.assert_array_equal(static, traced)
    assert sorted(np.asarray(traced).tolist()) == list(range(n))  # a bijection of [0, n)


def test_n_rows_counts_only_the_first_rows_in_train_metrics():
    x, y = DS.sample(jax.random.key(0), 500)
    data = pack_data(CFG, x, y, n_rows=jnp.int32(120))
    assert float(data.m_train_eval.sum()) == 120.0
    assert np.all(np.asarray(data.m_train_eval).reshape(-1)[120:] == 0)


def test_first_n_rows_train_exactly_as_the_sliced_set():
    """The defining property: model (n, seed s, member k) of the sweep equals `make_train` on the
    first n rows of seed s's draw with that member's key (same batches, same updates)."""
    m = make_model(FCN)
    r = sample_size_sweep(CFG, m, DS, n_train=[300, 700], n_seeds=2, n_members=2, n_val=200, seed=4)
    assert r.shape == (2, 1, 2, 2)
    for i, n in enumerate((300, 700)):
        s, k = 1, 1
        key_s = jax.random.fold_in(jax.random.key(4), s)
        x, y = DS.sample(jax.random.fold_in(key_s, STREAM_TRAIN), 700)
        xv, yv = DS.sample(jax.random.fold_in(key_s, STREAM_VAL), 200)
        train = make_train(CFG, m, (np.asarray(x)[:n], np.asarray(y)[:n]), (xv, yv))
        hp = {name: jnp.float32(v) for name, v in CFG.default_hparams().items()}
        state, hist = jax.jit(train)(
            jax.random.fold_in(jax.random.fold_in(key_s, STREAM_MODEL), k), hp
        )
        idx = ((i * 1 + 0) * 2 + s) * 2 + k
        got = jax.tree_util.tree_map(lambda a, idx=idx: np.asarray(a)[idx], r.variables)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(state.variables), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-6)  # vmapped vs single-model rounding
        assert r.train_acc[i, 0, s, k] == pytest.approx(float(hist["train_acc"][-1]), abs=1e-6)
    # different sizes really train on different sets
    a = jax.tree.leaves(jax.tree_util.tree_map(lambda v: np.asarray(v)[3], r.variables))[0]
    b = jax.tree.leaves(jax.tree_util.tree_map(lambda v: np.asarray(v)[7], r.variables))[0]
    assert not np.allclose(a, b)


def test_grid_values_reach_their_models():
    r = sample_size_sweep(
        dataclasses.replace(CFG, max_steps=100),
        FCN,
        DS,
        n_train=[200],
        grid={"lr": [0.0001, 0.5]},
        n_seeds=1,
    )
    w0, w1 = (
        jax.tree.leaves(jax.tree_util.tree_map(lambda v, i=i: np.asarray(v)[i], r.variables))
        for i in range(2)
    )
    # same init (common random numbers across the grid), different learning rates
    assert r.grid_points == [{"lr": 0.0001}, {"lr": 0.5}]
    assert any(not np.allclose(a, b) for a, b in zip(w0, w1, strict=True))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n_train=[50]), "n_train"),
        (dict(n_train=[]), "n_train"),
        (dict(n_train=[300], n_seeds=0), "n_seeds"),
        (dict(n_train=[300], grid={"lr": [-1.0]}), "lr"),
        (dict(n_train=[300], strategy="fast"), "strategy"),
    ],
)
def test_bad_arguments_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        sample_size_sweep(CFG, FCN, DS, **kw)


def test_epoch_schedules_and_unlabeled_pools_are_refused_with_a_traced_size():
    cfg = dataclasses.replace(CFG, lr_boundaries=(2,))
    with pytest.raises(ValueError, match="lr_boundaries"):
        sample_size_sweep(cfg, FCN, DS, n_train=[300])
    x, y = DS.sample(jax.random.key(0), 300)
    data = dataclasses.replace(pack_data(CFG, x, y, n_rows=jnp.int32(200)), x_u=x)
    with pytest.raises(ValueError, match="n_rows"):
        make_trainer(CFG, make_model(FCN), data)


def test_models_per_call_gives_the_results_of_one_call():
    """Calls of a few models of the same compiled program (for memory) equal one call."""
    cfg = dataclasses.replace(CFG, max_steps=200)
    kw = dict(n_train=[200, 400], grid={"lr": [0.05, 0.1]}, n_seeds=2, seed=2)
    a = sample_size_sweep(cfg, FCN, DS, **kw)
    b = sample_size_sweep(cfg, FCN, DS, models_per_call=3, **kw)  # 3 -> 4 (2 devices): 2 calls
    for u, v in zip(jax.tree.leaves(a.variables), jax.tree.leaves(b.variables), strict=True):
        np.testing.assert_allclose(u, v, atol=1e-6)
    np.testing.assert_array_equal(a.stop_reason, b.stop_reason)
    with pytest.raises(ValueError, match="models_per_call"):
        sample_size_sweep(cfg, FCN, DS, models_per_call=0, **kw)
