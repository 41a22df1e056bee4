"""benchmarks/scale.py on CPU with small K and tiny sizes: the output schema, the largest K that
fits (an out-of-memory error stops the doubling) and the Markdown table (never timed tests)."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

import sbjax.train
from benchmarks import scale

ROW_KEYS = {
    "n_train",
    "k",
    "updates",
    "batch",
    "status",
    "wall_s",
    "first_call_s",
    "compile_s",
    "model_samples_per_s",
    "gflops",
    "peak_device_mb",
    "peak_rss_mb",
    "train_acc_mean",
    "load_1m",
}
TINY = ["--n-train", "512", "--updates", "4", "--eval-size", "256", "--d", "10"]


def test_runs_k_1_2_4_on_cpu_and_writes_json_and_markdown(tmp_path):
    report = scale.main([*TINY, "--max-models", "4", "--no-warm", "--out", str(tmp_path)])
    on_disk = json.loads((tmp_path / "scale.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert {"backend", "n_devices", "memory_stats_available", "workload", "versions"} <= set(
        on_disk
    )
    rows = on_disk["results"]
    assert [r["k"] for r in rows] == [1, 2, 4]
    for r in rows:
        assert ROW_KEYS <= set(r) and r["status"] == "ok"
        assert r["n_train"] == 512 and r["compile_s"] > 0 and r["wall_s"] > 0
        np.testing.assert_allclose(r["model_samples_per_s"], 4 * 256 * r["k"] / r["wall_s"])
        n_params = 10 * 100 + 100 + 100 * 2 + 2
        np.testing.assert_allclose(r["gflops"], 6 * n_params * r["model_samples_per_s"] / 1e9)
        if not on_disk["memory_stats_available"]:  # XLA:CPU: no device statistics
            assert r["peak_device_mb"] is None and r["peak_rss_mb"] > 30
    assert on_disk["largest_k"] == {"512": {"k": 4, "limited_by": "max_models"}}
    table = (tmp_path / "scale.md").read_text()
    assert "| 512 | 4 |" in table and "largest K that ran" in table


def _fake_sweep(oom_from: int, message: str):
    calls = []

    def train_sweep(cfg, model, train, *, n_seeds, **kw):
        calls.append(n_seeds)
        if n_seeds >= oom_from:
            raise RuntimeError(message)
        return types.SimpleNamespace(
            wall_s=0.5, compile_s=0.25, history={"train_acc": np.ones((n_seeds, 1))}
        )

    return train_sweep, calls


def test_out_of_memory_stops_doubling_and_names_the_largest_k(monkeypatch, tmp_path):
    fake, calls = _fake_sweep(8, "RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
    monkeypatch.setattr(sbjax.train, "train_sweep", fake)
    report = scale.main(
        [*TINY, "--n-train", "512,1024", "--max-models", "64", "--out", str(tmp_path)]
    )
    statuses = [(r["n_train"], r["k"], r["status"]) for r in report["results"]]
    assert statuses == [
        *[(512, k, "ok") for k in (1, 2, 4)],
        (512, 8, "oom"),
        *[(1024, k, "ok") for k in (1, 2, 4)],
        (1024, 8, "oom"),
    ]
    assert report["largest_k"] == {
        "512": {"k": 4, "limited_by": "oom"},
        "1024": {"k": 4, "limited_by": "oom"},
    }
    assert "RESOURCE_EXHAUSTED" in report["results"][3]["error"]
    assert calls.count(8) == 2  # each N stops at its first failure; 16..64 never tried


def test_other_errors_are_not_taken_for_out_of_memory(monkeypatch):
    fake, _ = _fake_sweep(2, "INVALID_ARGUMENT: something else")
    monkeypatch.setattr(sbjax.train, "train_sweep", fake)
    with pytest.raises(RuntimeError, match="INVALID_ARGUMENT"):
        scale.main([*TINY, "--max-models", "4"])


def test_k_schedule_and_bad_arguments():
    assert scale._powers_of_two(1, 4096)[-3:] == [1024, 2048, 4096]
    assert scale._powers_of_two(3, 48) == [4, 8, 16, 32, 48]
    with pytest.raises(ValueError, match="min-models"):
        scale.parse_args(["--min-models", "8", "--max-models", "4"])
    with pytest.raises(ValueError, match="n-train=100"):
        scale.parse_args(["--n-train", "100"])
    with pytest.raises(ValueError, match="n-train"):
        scale.parse_args(["--n-train", "a,b"])
