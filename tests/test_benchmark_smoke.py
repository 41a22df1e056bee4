"""Smoke tests of the training-throughput benchmark harness (tiny sizes; never timed tests)."""

from __future__ import annotations

import importlib.util
import json
import resource

import numpy as np
import pytest

from benchmarks import train_throughput as tt

HAS_TORCH = importlib.util.find_spec("torch") is not None
KEYS = {
    "impl",
    "seeds",
    "epochs",
    "wall_s",
    "compile_s",
    "model_samples_per_s",
    "gflops",
    "peak_rss_mb",
}


def test_param_count_matches_fcn():
    assert tt.N_PARAMS == 5302


def test_lms5_geometry():
    x, y = tt.make_lms5(4000, d=6, seed=1)
    assert x.shape == (4000, 6) and x.dtype == np.float32 and y.dtype == np.int32
    assert 0.45 < y.mean() < 0.55
    # Canonical points lie in [-1, 1]^d and the rotation is orthogonal: ||x|| <= sqrt(d).
    assert np.linalg.norm(x, axis=1).max() <= np.sqrt(6) + 1e-5
    # Norms are rotation invariant and the linear coordinate has |z_0| >= 0.1 (the margin).
    assert np.linalg.norm(x, axis=1).min() >= 0.1 - 1e-6


def test_lms5_is_linearly_separable_with_margin():
    # The linear coordinate alone separates the classes with margin 0.1 in the canonical basis;
    # after the rotation some unit direction must still separate them (least squares finds one).
    x, y = tt.make_lms5(3000, d=5, seed=2)
    s = 2.0 * y - 1.0
    w, *_ = np.linalg.lstsq(x, s, rcond=None)
    assert np.mean(np.sign(x @ w) == s) > 0.99


def _check_row(row, impl, k, epochs, n, in_process=True):
    assert KEYS <= set(row)
    assert row["impl"] == impl and row["seeds"] == k and row["epochs"] == epochs
    # peak RSS is the worker process's ru_maxrss (KiB / 1024): a process that has imported
    # numpy and a framework uses tens of MB; in this process it cannot exceed today's maximum
    assert row["peak_rss_mb"] > 30
    if in_process:
        assert row["peak_rss_mb"] <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.testing.assert_allclose(row["model_samples_per_s"], k * epochs * n / row["wall_s"])
    np.testing.assert_allclose(row["gflops"], 6 * 5302 * row["model_samples_per_s"] / 1e9)
    # 16 SGD steps on LMS-5 already move every impl well above chance (0.5).
    assert row["train_acc_mean"] > 0.65


@pytest.mark.parametrize("impl", ["sbjax", "sbjax_shared", "sbjax_loop"])
def test_jax_workers_train(impl):
    row = tt.worker(impl, 2, 4, 1024, warm=False)
    _check_row(row, impl, 2, 4, 1024)


@pytest.mark.skipif(not HAS_TORCH, reason="torch (the bench extra) is not installed")
@pytest.mark.parametrize("impl", ["torch_reference", "torch_best"])
def test_torch_workers_train(impl):
    row = tt.worker(impl, 2, 4, 1024)
    _check_row(row, impl, 2, 4, 1024)


@pytest.mark.skipif(not HAS_TORCH, reason="torch (the bench extra) is not installed")
def test_cli_writes_json_with_schema(tmp_path):
    out = tmp_path / "bench.json"
    report = tt.main(
        [
            "--impl",
            "torch_best",
            "--seeds",
            "2",
            "--epochs",
            "1",
            "--n-train",
            "512",
            "--no-peak",
            "--json",
            str(out),
        ]
    )
    on_disk = json.loads(out.read_text())
    assert on_disk["results"] == json.loads(json.dumps(report["results"]))
    assert {"matmul_peak_gflops", "machine", "versions", "command", "results"} <= set(on_disk)
    assert [r["seeds"] for r in on_disk["results"]] == [2]
    for r in on_disk["results"]:
        _check_row(
            {**r, "train_acc_mean": 1.0}, "torch_best", r["seeds"], 1, 512, in_process=False
        )  # each pair runs in its own subprocess


def test_bad_impl_raises():
    with pytest.raises(ValueError, match="impl"):
        tt.main(["--impl", "nope", "--no-peak"])


def test_grid_d1_harness_counts_the_whole_grid(tmp_path):
    """benchmarks.grid_d1 at toy size: 180 points, the per-point sum extrapolated from the timed
    points, and the rows written to --out (a harness check, not a timing)."""
    from benchmarks import grid_d1

    out = tmp_path / "grid.json"
    rows = grid_d1.main(
        [
            "--updates",
            "4",
            "--n-train",
            "300",
            "--models",
            "8x1",
            "--sample",
            "4",
            "--out",
            str(out),
        ]
    )
    (row,) = rows
    assert row["grid_points"] == 180 and row["model"] == "fcn_8x1"
    per = row["per_point_s"]
    assert set(per) == {"4", "16", "64", "256"}
    np.testing.assert_allclose(row["per_point_sum_s"], sum(per.values()) * 45, rtol=0.01, atol=0.1)
    assert json.loads(out.read_text()) == rows
    with pytest.raises(SystemExit):
        grid_d1.main(["--sample", "2"])
