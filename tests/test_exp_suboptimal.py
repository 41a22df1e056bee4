"""Tests of `python -m experiments.suboptimal_generalization` (Sec. 5, Table 2, App. D.1).

Default suite: the smoke preset with the reference configuration and the grid end to end. Slow:
the quick preset.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import suboptimal_generalization as S
from tests.helpers import assert_figure

ROOT = Path(__file__).resolve().parent.parent

HEADLINE = (
    "train_acc",
    "test_acc",
    "s_rand_acc",
    "sc_rand_acc",
    "test_auc",
    "s_rand_auc",
    "sc_rand_auc",
)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("subopt") / "run"
    # --set end to end: a 800-point validation split instead of the preset's 1000.
    summary = S.main(
        ["--preset", "smoke", "--grid", "--out", str(out), "--no-progress", "--set", "n_val=800"]
    )
    return out, summary


def test_smoke_files_and_schema(smoke):
    out, summary = smoke
    for name in (
        "config.json",
        "env.json",
        "summary.json",
        "metrics.csv",
        "grid.csv",
        "table2_accuracies.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert_figure(out / "table2_accuracies.png")
    assert (out / "params" / "ref_noisy_lms7_fcn_100x1.npz").is_file()
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["experiment"] == "suboptimal_generalization" and on_disk["preset"] == "smoke"
    g = S.PRESETS["smoke"].grid
    n_points = len(g.lr) * len(g.batch_size) * len(g.weight_decay) * len(g.momentum)
    modes = [r["mode"] for r in summary["results"]]
    assert modes == ["reference"] + ["grid_point"] * n_points + ["grid"]
    for r in summary["results"]:
        assert r["dataset"] == "noisy_lms7" and r["model"] == "fcn_100x1"
        assert r["n_total"] == 2 and len(r["seed_status"]) == 2
        for k in HEADLINE if r["mode"] != "grid_point" else ("val_acc",):
            assert len(r["metrics"][k]["per_seed"]) == 2
            assert {"mean", "std", "n", "per_seed"} <= set(r["metrics"][k])
            # The test (or validation) set's own sampling error; none for train metrics.
            if r["metrics"][k]["mean"] is not None and not k.startswith("train_"):
                assert r["metrics"][k]["sampling_se"] > 0
        for k in ("lr", "batch_size", "weight_decay", "momentum"):
            assert k in r
    for r in (summary["results"][0], summary["results"][-1]):
        # Convergence is not required (best checkpoints): no seed of these records failed.
        assert not S.REQUIRE_CONVERGED
        assert r["n_seeds"] == 2 and r["n_diverged"] == 0 and "status" not in r
    ref = summary["results"][0]
    assert (ref["lr"], ref["momentum"], ref["weight_decay"], ref["batch_size"]) == (
        0.1,
        0.9,
        5e-4,
        256,
    )


def test_smoke_grid_selects_on_validation(smoke):
    out, summary = smoke
    g = S.PRESETS["smoke"].grid
    n_points = g.size
    with open(out / "grid.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == n_points * 2
    (grid,) = [r for r in summary["results"] if r["mode"] == "grid"]
    assert grid["select"] == "val" and grid["grid_size"] == n_points
    for c in grid["selected_per_seed"]:
        vals = [
            float(r["val_acc"])
            for r in rows
            if int(r["seed"]) == c["seed"] and r["stop_reason"] != "diverged"
        ]
        assert c["val_acc"] == pytest.approx(max(vals), abs=1e-6)
        assert c["lr"] in g.lr and c["momentum"] in g.momentum
    np.testing.assert_allclose(
        grid["metrics"]["val_acc"]["per_seed"],
        [c["val_acc"] for c in grid["selected_per_seed"]],
        atol=1e-6,
    )
    assert summary["table10"][0]["model"] == "fcn_100x1"


def test_smoke_effect(smoke):
    _, summary = smoke
    for r in summary["results"]:
        if r["mode"] == "grid_point":
            continue
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


def test_smoke_grid_reports_diverged_points_and_never_selects_them(smoke):
    """The smoke grid holds lr = 1e4, which diverges on purpose."""
    out, summary = smoke
    points = [r for r in summary["results"] if r["mode"] == "grid_point"]
    bad = [r for r in points if r["lr"] == 1e4]
    good = [r for r in points if r["lr"] == 0.1]
    assert len(bad) == len(good) == 2
    for r in bad:
        assert r["status"] == "all models failed" and r["seed_status"] == ["diverged"] * 2
        assert r["n_diverged"] == 2 and r["n_seeds"] == 0 and r["n_failed"] == 2
        assert r["metrics"]["val_acc"]["mean"] is None and r["metrics"]["val_acc"]["std"] is None
    for r in good:
        assert "status" not in r and r["n_diverged"] == 0 and r["n_seeds"] == 2
        v = r["metrics"]["val_acc"]
        assert v["mean"] == pytest.approx(np.mean(v["per_seed"]))
        assert v["std"] == pytest.approx(np.std(v["per_seed"], ddof=1))
    with open(out / "grid.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["stop_reason"] for r in rows if float(r["lr"]) == 1e4} == {"diverged"}
    (grid,) = [r for r in summary["results"] if r["mode"] == "grid"]
    assert all(c["lr"] == 0.1 for c in grid["selected_per_seed"])
    # metrics.csv marks every per-seed row with its status.
    with open(out / "metrics.csv") as f:
        st = {
            r["status"]
            for r in csv.DictReader(f)
            if r["mode"] == "grid_point" and float(r["lr"]) == 1e4
        }
    assert st == {"diverged"}


def test_select_per_seed_never_picks_a_diverged_model():
    from types import SimpleNamespace

    r = SimpleNamespace(
        seed_index=np.array([0, 0, 1, 1]),
        stop_reason=["diverged", "max_steps", "diverged", "diverged"],
    )
    # Seed 0: the diverged model has the higher accuracy (e.g. finite, from its initial weights)
    # but is not selected; seed 1: every model diverged -> None.
    va = np.array([0.99, 0.9, 0.97, 0.98])
    picks = S.select_per_seed([(256, r, va)], 2)
    assert picks[0][0] == pytest.approx(0.9) and picks[0][3] == 1
    assert picks[1] is None


def test_table2_figure_copes_with_failed_and_single_seed_records(tmp_path):
    from sbjax.plots import suboptimal as plots

    def rec(mode, mean, std, status=None):
        st = {"mean": mean, "std": std}
        r = {
            "mode": mode,
            "model": "fcn_100x1",
            "dataset": "noisy_lms7",
            "metrics": {k: dict(st) for k in HEADLINE},
        }
        if status:
            r["status"] = status
        return r

    results = [
        dict(rec("reference", 0.95, 0.01), paper={"test_acc": 0.94}),
        rec("grid", None, None, "all models failed"),
        rec("control", 0.99, None),
    ]
    plots.table2_accuracies(results, tmp_path / "table2_accuracies.png")
    assert_figure(tmp_path / "table2_accuracies.png")


def test_set_override_records_and_redraw(smoke, tmp_path):
    out, summary = smoke
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["overrides"] == ["n_val=800"] and cfg["preset_config"]["n_val"] == 800
    assert cfg["preset_config"]["grid"]["lr"] == [0.1, 1e4]
    point = next(r for r in summary["results"] if r["mode"] == "grid_point" and "status" not in r)
    # The validation split has 800 points now: val_acc's binomial SE says so.
    m = point["metrics"]["val_acc"]["mean"]
    assert point["metrics"]["val_acc"]["sampling_se"] == pytest.approx(np.sqrt(m * (1 - m) / 800))
    for r in summary["results"]:
        assert r["part"] == r["mode"] and r["expect"]
    ref = summary["results"][0]
    assert ref["paper"]["test_acc"] == 0.940 and ref["paper_source"].startswith("Table 2")
    assert "lr 0.1" in point["expect"]
    redo = subprocess.run(
        [sys.executable, "-m", "sbjax.plots", str(out), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert redo.returncode == 0, redo.stderr
    name = "table2_accuracies.png"
    assert (tmp_path / name).read_bytes() == (out / name).read_bytes()


@pytest.mark.parametrize(
    "item,match",
    [
        ("grid.momentum=[1.5]", "grid.momentum"),
        ("noise=2.0", "noise"),
        ("models=[[100]]", "models"),
        ("control_train.optimizer=lbfgs", "control_train.optimizer"),
    ],
)
def test_bad_preset_values_fail_before_any_work(tmp_path, item, match):
    with pytest.raises(ValueError, match=match):
        S.main(["--preset", "smoke", "--out", str(tmp_path / "run"), "--set", item])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "item",
    [
        "train.lr=0.05",
        "n_train=20000",
        "models=[[300,2]]",
        "grid.lr=[0.01,0.1]",
        "grid_train.max_steps=8000",
    ],
)
def test_documented_overrides_fit_every_preset(item):
    """The --set examples of the docstring / README are valid on every preset."""
    from experiments.common import apply_overrides

    for name, preset in S.PRESETS.items():
        new = apply_overrides(preset, [item])
        S.check_preset(new)
        assert new != preset or name, name
