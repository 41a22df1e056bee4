"""Monitor sets of `train_sweep` (the feature timeline): accuracy on fixed evaluation sets at every
period end, computed inside the compiled program.

Known answers: a monitor set equal to the training set gives train_acc at every period (same
chunks, same counts), the same set with its labels flipped gives 1 - train_acc;
the answer holds for vmap / map, scan / host loops, coupled units and 8 sharded devices (the
sharded check runs in a subprocess because the device count is fixed before JAX starts). Resume
refuses other monitor data and continues the same data to the uninterrupted history.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from sbjax.models import make_model
from sbjax.train import TrainConfig, train_sweep
from sbjax.train.engine import HISTORY_KEYS


def _data(n=384, d=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).astype(np.int32)
    return x, y


MODEL = make_model({"name": "fcn", "width": 16, "depth": 1})
CFG = TrainConfig(
    lr=0.1, batch_size=64, max_steps=40, eval_every=10, stop_rule="none", eval_batch_size=100
)


def _monitor(x, y):
    return {"same": (x, y), "flipped": (x, 1 - y), "half": (x[:150], y[:150])}


def _check_known_answers(r, x, y):
    h = r.history
    assert h["monitor_same_acc"].shape == h["train_acc"].shape == (r.n_models, 4)
    # Same counts; the division may round differently in another fusion (1 ulp).
    np.testing.assert_allclose(h["monitor_same_acc"], h["train_acc"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(h["monitor_flipped_acc"], 1.0 - h["train_acc"], atol=1e-6)
    assert np.all((h["monitor_half_acc"] >= 0) & (h["monitor_half_acc"] <= 1))


def test_history_keys_unchanged_without_monitor():
    x, y = _data()
    r = train_sweep(CFG, MODEL, (x, y), n_seeds=2, progress=False)
    assert tuple(r.history) == HISTORY_KEYS


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"vectorize": "map"},
        {"loop": "host"},
        {"n_members": 2, "unit_size": 2},
        {"grid": {"lr": [0.05, 0.2]}},
    ],
    ids=["vmap_scan", "map", "host", "unit2", "grid"],
)
def test_monitor_equal_to_training_set_gives_train_acc(kw):
    x, y = _data()
    r = train_sweep(CFG, MODEL, (x, y), n_seeds=2, progress=False, monitor=_monitor(x, y), **kw)
    _check_known_answers(r, x, y)
    # The accuracy of the half set is that of its own rows, recomputed on the host from the
    # final parameters (last evaluation = the final variables: stop_rule none).
    import jax

    for i in range(r.n_models):
        v = jax.tree_util.tree_map(lambda a, i=i: a[i], r.params)
        pred = np.asarray(MODEL.logits(v, x[:150])).argmax(-1)
        np.testing.assert_allclose(r.history["monitor_half_acc"][i, -1], np.mean(pred == y[:150]))


def test_monitor_does_not_change_the_training():
    x, y = _data()
    a = train_sweep(CFG, MODEL, (x, y), n_seeds=2, progress=False)
    b = train_sweep(CFG, MODEL, (x, y), n_seeds=2, progress=False, monitor=_monitor(x, y))
    for k in HISTORY_KEYS:
        np.testing.assert_array_equal(a.history[k], b.history[k])
    import jax

    leaves = jax.tree_util.tree_leaves
    for la, lb in zip(leaves(a.params), leaves(b.params), strict=True):
        np.testing.assert_array_equal(la, lb)


def test_monitor_rows_in_metrics_jsonl_and_resume(tmp_path):
    x, y = _data()
    mon = _monitor(x, y)
    full = train_sweep(CFG, MODEL, (x, y), n_seeds=2, progress=False, monitor=mon)
    out = tmp_path / "sweep"
    kw = dict(n_seeds=2, progress=False, out_dir=out, periods_per_chunk=1)
    train_sweep(CFG, MODEL, (x, y), monitor=mon, max_chunks=2, **kw)
    # Other monitor data (one label changed) is refused, naming the monitor part.
    y2 = y.copy()
    y2[0] = 1 - y2[0]
    with pytest.raises(ValueError, match="monitor"):
        train_sweep(CFG, MODEL, (x, y), monitor={**mon, "same": (x, y2)}, resume=True, **kw)
    with pytest.raises(ValueError, match="monitor"):
        train_sweep(CFG, MODEL, (x, y), resume=True, **kw)  # no monitor at all
    r = train_sweep(CFG, MODEL, (x, y), monitor=mon, resume=True, **kw)
    for k in full.history:
        np.testing.assert_array_equal(r.history[k], full.history[k])
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 4
    last = [row for row in rows if row["period"] == 3]
    for row in last:
        assert row["monitor_same_acc"] == pytest.approx(row["train_acc"])
        assert row["monitor_flipped_acc"] == pytest.approx(1 - row["train_acc"], abs=1e-6)


@pytest.mark.parametrize(
    "monitor, match",
    [
        ({}, "monitor"),
        ({"bad name": None}, "letters, digits"),
        ({"a": (np.zeros((5, 3), np.float32), np.zeros(5, np.int32))}, "monitor\\['a'\\]"),
        ({"a": (np.zeros((5, 8), np.float32), np.full(5, 2))}, "labels"),
        ({"a": (np.full((5, 8), np.nan, np.float32), np.zeros(5, np.int32))}, "NaN"),
    ],
)
def test_bad_monitor_sets_are_refused(monitor, match):
    x, y = _data()
    with pytest.raises(ValueError, match=match):
        train_sweep(CFG, MODEL, (x, y), progress=False, monitor=monitor)


_SHARDED = textwrap.dedent(
    """
    import os, json
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, numpy as np
    from tests.test_train_monitor import CFG, MODEL, _data, _monitor
    from sbjax.train import train_sweep
    x, y = _data()
    kw = dict(n_seeds=5, progress=False, monitor=_monitor(x, y))
    sh = train_sweep(CFG, MODEL, (x, y), **kw)
    one = train_sweep(CFG, MODEL, (x, y), devices=jax.devices()[:1], **kw)
    h = sh.history
    print("RESULT " + json.dumps({
        "n_devices": len(jax.devices()),
        "same_eq_train": float(np.max(np.abs(h["monitor_same_acc"] - h["train_acc"]))),
        "flipped": float(np.max(np.abs(h["monitor_flipped_acc"] - (1 - h["train_acc"])))),
        "vs_unsharded": float(max(np.max(np.abs(h[k] - one.history[k])) for k in h)),
    }))
    """
)


def test_monitor_on_eight_sharded_devices():
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDED],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT ") :])
    assert res["n_devices"] == 8
    assert res["same_eq_train"] < 1e-6
    assert res["flipped"] < 1e-6
    assert res["vs_unsharded"] < 1e-5  # different programs: equal to float rounding
