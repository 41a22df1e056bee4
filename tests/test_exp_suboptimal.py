"""Tests of `python -m experiments.suboptimal_generalization` (Sec. 5, Table 2, App. D.1).

Default suite: the smoke preset with the reference configuration and the grid end to end. Slow:
the quick preset.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from experiments import suboptimal_generalization as S

HEADLINE = ("train_acc", "test_acc", "s_rand_acc", "sc_rand_acc", "test_auc", "s_rand_auc",
            "sc_rand_auc")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("subopt") / "run"
    summary = S.main(["--preset", "smoke", "--grid", "--out", str(out), "--no-progress"])
    return out, summary


def test_smoke_files_and_schema(smoke):
    out, summary = smoke
    for name in ("config.json", "env.json", "summary.json", "metrics.csv", "grid.csv",
                 "table2_accuracies.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "params" / "ref_noisy_lms7_fcn_100x1.npz").is_file()
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["experiment"] == "suboptimal_generalization" and on_disk["preset"] == "smoke"
    modes = [r["mode"] for r in summary["results"]]
    assert modes == ["reference", "grid"]
    for r in summary["results"]:
        assert r["dataset"] == "noisy_lms7" and r["model"] == "fcn_100x1"
        for k in HEADLINE:
            assert len(r["metrics"][k]["per_seed"]) == 2
        for k in ("lr", "batch_size", "weight_decay", "momentum"):
            assert k in r
    ref = summary["results"][0]
    assert (ref["lr"], ref["momentum"], ref["weight_decay"], ref["batch_size"]) == (
        0.1, 0.9, 5e-4, 256)


def test_smoke_grid_selects_on_validation(smoke):
    out, summary = smoke
    g = S.PRESETS["smoke"]["grid"]
    n_points = len(g["lr"]) * len(g["batch_size"]) * len(g["weight_decay"]) * len(g["momentum"])
    with open(out / "grid.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n_points * 2
    (grid,) = [r for r in summary["results"] if r["mode"] == "grid"]
    assert grid["select"] == "val" and grid["grid_size"] == n_points
    for c in grid["selected_per_seed"]:
        vals = [float(r["val_acc"]) for r in rows if int(r["seed"]) == c["seed"]]
        assert c["val_acc"] == pytest.approx(max(vals), abs=1e-6)
        assert c["lr"] in g["lr"] and c["momentum"] in g["momentum"]
    np.testing.assert_allclose(grid["metrics"]["val_acc"]["per_seed"],
                               [c["val_acc"] for c in grid["selected_per_seed"]], atol=1e-6)
    assert summary["table10"][0]["model"] == "fcn_100x1"


def test_smoke_effect(smoke):
    _, summary = smoke
    for r in summary["results"]:
        m = {k: np.asarray(v["per_seed"]) for k, v in r["metrics"].items()}
        # Even at 2k points the FCN uses only the noisy linear coordinate: test accuracy near its
        # Bayes accuracy 0.95 (1000 test points), chance after S-randomization, unchanged after
        # S^c-randomization.
        assert np.all((m["test_acc"] > 0.9) & (m["test_acc"] < 0.98))
        assert np.all(np.abs(m["s_rand_acc"] - 0.5) < 0.08)
        assert np.all(np.abs(m["sc_rand_acc"] - m["test_acc"]) < 0.03)


@pytest.mark.slow
def test_quick_preset(tmp_path):
    summary = S.main(["--preset", "quick", "--out", str(tmp_path / "run"), "--no-progress"])
    ref = [r for r in summary["results"] if r["mode"] == "reference"]
    assert len(ref) == 6
    for r in ref:
        assert abs(r["metrics"]["test_acc"]["mean"] - 0.95) < 0.02
        assert abs(r["metrics"]["s_rand_acc"]["mean"] - 0.5) < 0.03
    (ctrl,) = [r for r in summary["results"] if r["mode"] == "control"]
    assert ctrl["dataset"] == "ms7" and max(ctrl["metrics"]["test_acc"]["per_seed"]) > 0.99
