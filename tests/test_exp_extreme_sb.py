"""End-to-end tests of `python -m experiments.extreme_sb` (smoke preset by default, quick = slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import extreme_sb as E

HEADLINE = ("train_acc", "test_acc", "test_auc", "s_rand_acc", "s_rand_auc", "sc_rand_acc",
            "sc_rand_auc")


def _records(summary, part):
    return [r for r in summary["results"] if r["part"] == part]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("extreme_sb") / "run"
    summary = E.main(["--preset", "smoke", "--out", str(out), "--no-progress"])
    return out, summary


def test_smoke_files(smoke):
    out, summary = smoke
    for name in ("config.json", "env.json", "summary.json", "metrics.csv", "fig3a_logits.png",
                 "fig3b_sc_sweep.png", "fig3c_boundary_lms5.png", "coord_rand_acc.png"):
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0
    assert (out / "params" / "table4_lms5_fcn_100x1.npz").is_file()
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["experiment"] == "extreme_sb" and on_disk["preset"] == "smoke"
    assert len(on_disk["results"]) == len(summary["results"])


def test_smoke_schema_and_effect(smoke):
    _, summary = smoke
    (rec,) = _records(summary, "table4")
    assert rec["dataset"] == "lms5" and rec["model"] == "fcn_100x1" and rec["n_seeds"] == 2
    for key in HEADLINE + ("coord0_rand_acc", "min_sc_coord_rand_acc", "stop_step"):
        m = rec["metrics"][key]
        assert set(m) == {"mean", "std", "per_seed"} and len(m["per_seed"]) == 2
    m = {k: np.asarray(v["per_seed"]) for k, v in rec["metrics"].items()}
    # Even at 2k points / 400 updates LMS-5 is learned from the linear coordinate alone:
    # randomizing S^c leaves the AUC where it was, randomizing S sends it to chance.
    assert np.all(m["test_auc"] > 0.99)
    assert np.all(np.abs(m["sc_rand_auc"] - m["test_auc"]) < 0.02)
    assert np.all(np.abs(m["s_rand_auc"] - 0.5) < 0.1)
    assert np.all(m["coord0_rand_acc"] < 0.65) and np.all(m["min_sc_coord_rand_acc"] > 0.95)
    assert len(summary["coord_rand_acc"]["lms5/fcn_100x1"][0]) == 50


def test_smoke_sc_sweep_and_control(smoke):
    _, summary = smoke
    (sw,) = _records(summary, "sc_sweep")
    assert sw["n_complex"] == 9 and sw["d"] == 10 and sw["model"] == "fcn_50x1"
    (ctrl,) = _records(summary, "s_removed")
    m = {k: np.asarray(v["per_seed"]) for k, v in ctrl["metrics"].items()}
    # With S carrying no information the (tiny) model must use S^c: it is above chance, and
    # randomizing S^c hurts it while randomizing S does not.
    assert np.all(m["test_acc"] > 0.55)
    assert np.all(m["sc_rand_acc"] < m["test_acc"])
    assert np.all(np.abs(m["s_rand_acc"] - m["test_acc"]) < 0.05)


def test_bad_parts():
    with pytest.raises(ValueError, match="parts"):
        E.parse_parts("table4,nope")


@pytest.mark.slow
def test_quick_preset(tmp_path):
    out = tmp_path / "quick"
    summary = E.main(["--preset", "quick", "--out", str(out), "--no-progress"])
    for rec in _records(summary, "table4"):
        m = {k: v["mean"] for k, v in rec["metrics"].items()}
        assert m["test_auc"] > 0.99, rec["model"]
        assert abs(m["sc_rand_auc"] - m["test_auc"]) < 0.01, rec["model"]
        assert abs(m["s_rand_auc"] - 0.5) < 0.05, rec["model"]
    for rec in _records(summary, "s_removed"):
        assert rec["metrics"]["test_acc"]["mean"] > 0.95
