"""loop="auto": the host loop for convolutional families on CPU, the scanned program otherwise."""

import jax
import numpy as np
import pytest

from sbjax.models import make_model
from sbjax.train import TrainConfig, train_sweep
from sbjax.train.sweep import resolve_loop


@pytest.mark.parametrize(
    "config, want",
    [
        ({"name": "cnn1d", "filters": 4, "kernel": 3, "depth": 1}, "host"),
        ({"name": "small_cnn", "filters": 4}, "host"),
        ({"name": "fcn", "width": 4, "depth": 1}, "scan"),
        ({"name": "gru", "hidden": 4, "chunk": 2, "depth": 1}, "scan"),
    ],
)
def test_auto_picks_the_host_loop_for_convolutions_on_cpu(config, want):
    assert jax.default_backend() == "cpu"
    model = make_model(config)
    assert resolve_loop("auto", model) == want
    assert resolve_loop("scan", model) == "scan" and resolve_loop("host", model) == "host"


def test_auto_sweep_is_the_host_sweep_for_a_cnn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    cfg = TrainConfig(lr=0.1, batch_size=16, max_steps=8, eval_every=4)
    model = {"name": "cnn1d", "filters": 4, "kernel": 3, "depth": 1}
    a = train_sweep(cfg, model, (x, y), n_seeds=2, loop="auto", progress=False)
    b = train_sweep(cfg, model, (x, y), n_seeds=2, loop="host", progress=False)
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(u, v)
