"""loop="auto" / vectorize="auto": the fastest program per model family on CPU."""

import jax
import numpy as np
import pytest

from sbjax.models import make_model
from sbjax.train import TrainConfig, train_sweep
from sbjax.train.sweep import resolve_loop, resolve_vectorize


@pytest.mark.parametrize(
    "config, loop, vectorize",
    [
        ({"name": "cnn1d", "filters": 4, "kernel": 3, "depth": 1}, "scan", "map"),
        ({"name": "small_cnn", "filters": 4}, "host", "vmap"),
        ({"name": "fcn", "width": 4, "depth": 1}, "scan", "vmap"),
        ({"name": "gru", "hidden": 4, "chunk": 2, "depth": 1}, "scan", "map"),
        ({"name": "lstm", "hidden": 4, "chunk": 2, "depth": 1}, "scan", "map"),
    ],
)
def test_auto_choices_on_cpu(config, loop, vectorize):
    assert jax.default_backend() == "cpu"
    model = make_model(config)
    assert resolve_loop("auto", model) == loop
    assert resolve_vectorize("auto", model) == vectorize
    assert resolve_loop("scan", model) == "scan" and resolve_loop("host", model) == "host"
    assert resolve_vectorize("vmap", model) == "vmap" and resolve_vectorize("map", model) == "map"


def test_auto_sweep_is_the_explicit_sweep_for_a_cnn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    cfg = TrainConfig(lr=0.1, batch_size=16, max_steps=8, eval_every=4)
    model = {"name": "cnn1d", "filters": 4, "kernel": 3, "depth": 1}
    kw = dict(n_seeds=2, progress=False)
    a = train_sweep(cfg, model, (x, y), loop="auto", vectorize="auto", **kw)
    b = train_sweep(cfg, model, (x, y), loop="scan", vectorize="map", **kw)
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(u, v)
