"""TrainConfig(batch_order="shared"): every model of a sweep sees the same batch at each update."""

import jax
import numpy as np
import pytest

from sbjax.data import make_dataset
from sbjax.train import TrainConfig, train_sweep

MODEL = {"name": "fcn", "width": 8, "depth": 1}


def _data():
    ds = make_dataset("lms", d=6, k=5)
    x, y = map(np.asarray, ds.sample(jax.random.key(0), 300))
    return x, y


def _cfg(order):
    return TrainConfig(
        lr=0.1, batch_size=64, max_steps=30, eval_every=10, stop_rule="none", batch_order=order
    )


def _same_init(n):
    from sbjax.models import make_model

    v = make_model(MODEL).init(jax.random.key(3), np.zeros((1, 6), np.float32))
    return jax.tree.map(lambda a: np.stack([np.asarray(a)] * n), v)


def test_shared_order_gives_equal_models_from_equal_inits():
    x, y = _data()
    init = _same_init(3)
    kw = dict(n_seeds=3, init_variables=init, progress=False)
    shared = train_sweep(_cfg("shared"), MODEL, (x, y), **kw)
    own = train_sweep(_cfg("per_model"), MODEL, (x, y), **kw)
    ks = np.asarray(shared.params["params"]["head"]["kernel"])
    ko = np.asarray(own.params["params"]["head"]["kernel"])
    np.testing.assert_allclose(ks[1], ks[0], rtol=1e-5, atol=1e-6)  # same batches, same model
    np.testing.assert_allclose(ks[2], ks[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(ko[1], ko[0], atol=1e-4)  # own orders differ
    for k in ("train_acc", "step"):
        assert shared.history[k].shape == own.history[k].shape


def test_a_seed_of_a_shared_sweep_equals_it_alone_and_grids_share_the_order():
    x, y = _data()
    full = train_sweep(_cfg("shared"), MODEL, (x, y), n_seeds=3, progress=False)
    alone = train_sweep(_cfg("shared"), MODEL, (x, y), seed_indices=[2], progress=False)
    for a, b in zip(jax.tree.leaves(full.params), jax.tree.leaves(alone.params), strict=True):
        np.testing.assert_allclose(np.asarray(a)[2], np.asarray(b)[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(full.history["step"][2], alone.history["step"][0])


def test_shared_order_needs_the_scanned_vmapped_program():
    x, y = _data()
    with pytest.raises(ValueError, match="batch_order"):
        train_sweep(_cfg("shared"), MODEL, (x, y), loop="host", progress=False)
    with pytest.raises(ValueError, match="batch_order"):
        TrainConfig(batch_order="sometimes")
