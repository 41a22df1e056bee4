"""Bad inputs fail in milliseconds, before anything is traced or compiled (DESIGN.md, "Errors and
data safety"): a `ValueError` naming the parameter and its value.

Each case below used to pass silently or fail late: an infinite or quoted learning rate, an
infinite weight decay, a negative divergence threshold and unsorted LR boundaries were accepted;
labels {0, 0.5} were truncated to 0 and "converged"; NaN inputs trained for the whole budget and
were reported as diverged; a scalar grid value raised "float has no len()"; `make_dataset(d=100000)`
tried to draw a dense 37 GiB rotation.
"""

from __future__ import annotations

import contextlib
import time

import jax
import numpy as np
import pytest

from sbjax.data import make_dataset, make_rotation
from sbjax.models import make_model
from sbjax.train import TrainConfig, make_train, train_sweep
from sbjax.train.config import expand_grid, hparam_arrays
from sbjax.validate import check_range

MODEL = make_model({"name": "fcn", "width": 4, "depth": 1})
CFG = TrainConfig(batch_size=16, max_steps=20, eval_every=10)
INF, NAN = float("inf"), float("nan")


def _xy(n=64, d=5, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


def _with(x=None, y=None, *, row=3, value=NAN):
    """A copy of the data with one entry changed."""
    x0, y0 = _xy()
    x0 = x0.copy()
    if x == "set":
        x0[row, 1] = value
    y0 = y0.astype(np.float64) if y is not None else y0
    if y is not None:
        y0[row] = y
    return x0, y0


def _sweep(train=None, val=None, grid=None):
    return train_sweep(
        CFG, MODEL, train if train is not None else _xy(), val=val, grid=grid, progress=False
    )


@contextlib.contextmanager
def _no_compile():
    """Fails if XLA compiles anything inside the block."""
    compiles = []

    def listener(event, duration, **kwargs):
        if event.endswith("backend_compile_duration"):
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert not compiles, f"{len(compiles)} compilation(s) before the error"


CASES = {
    # TrainConfig fields.
    "lr_inf": (lambda: TrainConfig(lr=INF), "lr=inf"),
    "weight_decay_inf": (lambda: TrainConfig(weight_decay=INF), "weight_decay=inf"),
    "lr_string": (lambda: TrainConfig(lr="0.1"), "lr='0.1'"),
    "lr_bool": (lambda: TrainConfig(lr=True), "lr=True"),
    "momentum_nan": (lambda: TrainConfig(momentum=NAN), "momentum=nan"),
    "stop_eps_inf": (lambda: TrainConfig(stop_eps=INF), "stop_eps=inf"),
    "diverge_loss_negative": (lambda: TrainConfig(diverge_loss=-1), "diverge_loss=-1"),
    "diverge_loss_nan": (lambda: TrainConfig(diverge_loss=NAN), "diverge_loss=nan"),
    "lr_boundaries_unsorted": (lambda: TrainConfig(lr_boundaries=(30, 10)), "lr_boundaries"),
    "lr_boundaries_repeated": (lambda: TrainConfig(lr_boundaries=(10, 10)), "lr_boundaries"),
    "lr_boundaries_scalar": (lambda: TrainConfig(lr_boundaries=30), "lr_boundaries=30"),
    "drop_last_string": (lambda: TrainConfig(drop_last="no"), "drop_last='no'"),
    # Training / validation data.
    "train_labels_half": (lambda: _sweep(train=_with(y=0.5)), "train labels=[0.5]"),
    "train_labels_nan": (lambda: _sweep(train=_with(y=NAN)), "train labels"),
    "train_x_nan": (lambda: _sweep(train=_with(x="set")), "train x"),
    "train_x_inf": (lambda: _sweep(train=_with(x="set", value=-INF)), "train x"),
    "train_x_float32_overflow": (
        lambda: _sweep(train=(_xy()[0].astype(np.float64) * 1e300, _xy()[1])),
        "train x",
    ),
    "val_x_nan": (lambda: _sweep(val=_with(x="set")), "val x"),
    "val_labels_half": (lambda: _sweep(val=_with(y=0.5)), "val labels=[0.5]"),
    "val_labels_two": (lambda: _sweep(val=_with(y=2)), "val labels=[2.0]"),
    "make_train_x_nan": (lambda: make_train(CFG, MODEL, _with(x="set")), "train x"),
    # Hyperparameter grids.
    "grid_scalar": (lambda: _sweep(grid={"lr": 0.1}), "grid['lr']=0.1"),
    "grid_string_list": (lambda: _sweep(grid={"lr": "0.1"}), "grid['lr']='0.1'"),
    "grid_nan": (lambda: _sweep(grid={"lr": [0.1, NAN]}), "grid['lr']=nan"),
    "grid_inf": (lambda: _sweep(grid={"weight_decay": [0.0, INF]}), "grid['weight_decay']=inf"),
    "grid_quoted_number": (lambda: _sweep(grid={"lr": [0.1, "0.2"]}), "grid['lr']='0.2'"),
    "grid_bool": (lambda: _sweep(grid={"weight_decay": [True]}), "grid['weight_decay']=True"),
    "hparam_arrays_string": (lambda: hparam_arrays(CFG, [{"lr": "0.2"}], 1), "lr='0.2'"),
    # Dataset dimensions with a dense rotation.
    "dataset_d_huge": (lambda: make_dataset("lms", d=100_000), "d=100000"),
    "dataset_d_huge_unrotated": (lambda: make_dataset("lms", d=100_000, rotate=False), "d=100000"),
    "rotation_d_huge": (lambda: make_rotation(100_000), "d=100000"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_raises_named_value_error_fast(case):
    fn, named = CASES[case]
    with _no_compile():
        t0 = time.perf_counter()
        with pytest.raises(ValueError) as err:
            fn()
        elapsed = time.perf_counter() - t0
    msg = str(err.value)
    assert named in msg, msg
    assert "expected" in msg, msg  # says what is allowed
    assert elapsed < 1.0, f"{case} took {elapsed:.2f} s to fail"


def test_dataset_limit_message_names_the_limit():
    with pytest.raises(ValueError, match=r"d=100000.*8192.*GiB"):
        make_dataset("lms", d=100_000)


@pytest.mark.parametrize(
    "make",
    [
        lambda: TrainConfig(diverge_loss=INF),  # inf: only non-finite losses diverge
        lambda: TrainConfig(lr_boundaries=(30, 60), lr=np.float32(0.05)),
        lambda: TrainConfig(lr_boundaries=[np.int64(5)]),
        lambda: expand_grid({"lr": np.array([0.1, 0.2]), "momentum": (0, 0.9)}),
        lambda: check_range("x", np.array(0.5), 0.0, 1.0),
        lambda: check_range("x", -INF, None, 0.0, finite=False),
    ],
)
def test_valid_edge_values_are_still_accepted(make):
    make()


def test_float_and_bool_labels_with_exact_values_are_accepted():
    from sbjax.train.engine import prepare_data

    x, y = _xy()
    for labels in (y.astype(np.float64), y.astype(bool)):
        data = prepare_data(CFG, (x, labels), val=(x, labels))
        np.testing.assert_array_equal(data.y, y)
