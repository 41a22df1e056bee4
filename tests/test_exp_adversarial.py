"""Tests of `python -m experiments.adversarial_training` (App. E.2.1, Fig. 7).

Default suite: preset sanity, diverged models excluded from the records (fake sweep results), and
the smoke preset end to end (run folder, one record per (width, eps) with the headline keys,
robust accuracy consistent with the training eps). Slow: the quick preset end to end with the
effect (small-eps models reach ~100 % standard and robust accuracy and rely on the 5-slabs only).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import adversarial_training as A
from experiments.common import Run
from tests.helpers import assert_figure, imported_modules

ROOT = Path(__file__).resolve().parent.parent
HEADLINE = (
    "train_acc",
    "test_acc",
    "test_auc",
    "robust_acc",
    "s_rand_acc",
    "s_rand_auc",
    "sc_rand_acc",
    "sc_rand_auc",
)


def test_presets():
    paper = A.PRESETS["paper"]
    assert paper.widths == (200, 1000, 2000) and paper.n_seeds >= 5
    assert paper.epochs == 4000 and paper.lr_boundaries_epochs == (1000, 2000, 3000)
    assert paper.n_train == 6000 and paper.lr == 0.1 and paper.lr_decay == 0.1
    assert paper.adv_steps == 40
    for p in A.PRESETS.values():
        A.check_preset(p)
        assert 0.0 in p.eps_grid, "eps = 0 is the standard-training baseline"
        assert list(p.eps_grid) == sorted(p.eps_grid)


def test_experiment_imports_no_matplotlib_and_no_other_experiment():
    names = imported_modules(ROOT / "experiments" / "adversarial_training.py")
    assert not [m for m in names if m.split(".")[0] == "matplotlib"], names
    assert {m for m in names if m.startswith("experiments")} <= {"experiments.common"}, names


@pytest.mark.parametrize(
    "item,match",
    [
        ("epochs=0", "^epochs=0"),
        ("lr_boundaries_epochs=(3, 9)", "^lr_boundaries_epochs="),
        ("eps_grid=(0.0, -0.1)", "^eps_grid=-0.1"),
        ("batch_size=5000", "^batch_size=5000"),
        ("momentum=1.0", "^momentum="),
        ("evals=1000", "^evals="),
        ("epoch=3", "'epoch' is not a preset key"),
    ],
)
def test_bad_overrides_fail_before_any_work(tmp_path, item, match):
    out = tmp_path / "adv"
    with pytest.raises(ValueError, match=match):
        A.main(["--preset", "smoke", "--out", str(out), "--set", item])
    assert not out.exists()


def test_expectations_follow_app_e21():
    assert A.expectation(200, 0.1)[1]["robust_acc"] == 1.0
    assert A.expectation(200, 0.2)[1] == {"test_acc": 0.5, "robust_acc": 0.5}
    assert A.expectation(200, 0.15)[1] == {}
    assert A.expectation(1000, 0.25)[1]["s_rand_acc"] == 0.5
    assert A.expectation(2000, 0.3)[1]["test_acc"] == 0.5
    assert A.expectation(32, 0.0) == (None, {})


def test_diverged_models_are_excluded_and_unconverged_ones_used(tmp_path):
    """Fixed budget, no stop rule: "max_steps" models are used; a diverged one is out."""
    assert A.REQUIRE_CONVERGED is False
    eps_grid = (0.0, 0.1, 0.3)
    reasons = np.array(
        [["max_steps"] * 3, ["max_steps", "diverged", "max_steps"], ["diverged"] * 3]
    )
    acc = np.array([[1.0, 0.98, 0.99], [0.97, 0.5, 0.95], [0.5, 0.5, 0.5]])  # diverged: 0.5
    auc = np.where(reasons == "diverged", np.nan, 0.99)
    grids = {k: acc for k in ("train_acc", "test_acc", "robust_acc", "s_rand_acc", "sc_rand_acc")}
    grids.update({k: auc for k in ("test_auc", "s_rand_auc", "sc_rand_auc")})
    run = Run(
        name=A.NAME,
        out=tmp_path / "run",
        preset="test",
        preset_config=None,
        n_seeds=3,
        seed=0,
        resume=False,
        progress=False,
    )
    y = np.array([0, 1] * 50)
    recs = A.add_records(run, "fcn_8x2", 8, eps_grid, grids, reasons, y)
    r0, r1, r2 = recs
    assert r0["n_seeds"] == 3 and r0["n_unconverged"] == 3 and r0["n_failed"] == 0
    assert r0["seed_status"] == ["unconverged_used"] * 3
    assert r1["n_seeds"] == 2 and r1["n_diverged"] == 1
    assert r1["seed_status"] == ["unconverged_used", "diverged", "unconverged_used"]
    for st in r1["metrics"].values():  # accuracies and AUCs: the same two seeds
        assert st["n"] == 2
    assert r1["metrics"]["test_acc"]["mean"] == pytest.approx(0.96)
    assert r1["metrics"]["test_acc"]["sampling_se"] == pytest.approx(np.sqrt(0.96 * 0.04 / 100))
    assert r2["status"] == "all models failed" and r2["metrics"]["test_acc"]["mean"] is None
    A.draw_figure(
        run,
        A.Preset(n_seeds=3, widths=(8,), eps_grid=eps_grid, epochs=1, lr_boundaries_epochs=()),
        recs,
    )
    assert_figure(tmp_path / "run" / "fig7_adversarial_training.png")


def test_smoke_end_to_end(tmp_path):
    out = tmp_path / "adv"
    # --set reaches the preset (one epoch fewer, a wider model) and lands in config.json.
    A.main(
        [
            "--preset",
            "smoke",
            "--out",
            str(out),
            "--no-progress",
            "--set",
            "epochs=5",
            "--set",
            "widths=(40,)",
        ]
    )
    for f in (
        "config.json",
        "env.json",
        "summary.json",
        "metrics.csv",
        "fig7_adversarial_training.png",
        "params/adv_ms57_fcn_40x2.npz",
    ):
        assert (out / f).exists(), f
    config = json.loads((out / "config.json").read_text())
    assert config["overrides"] == ["epochs=5", "widths=(40,)"]
    assert config["preset_config"]["epochs"] == 5 and config["preset_config"]["widths"] == [40]
    s = json.loads((out / "summary.json").read_text())
    assert s["figures"] == ["fig7_adversarial_training.png"]
    preset = dataclasses.replace(A.PRESETS["smoke"], epochs=5, widths=(40,))
    # Fig. 7 is redrawn from the run folder alone, to the same picture.
    redrawn = tmp_path / "redrawn"
    r = subprocess.run(
        [sys.executable, "-m", "sbjax.plots", str(out), "--out", str(redrawn)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in redrawn.glob("*.png")) == ["fig7_adversarial_training.png"]
    assert_figure(redrawn / "fig7_adversarial_training.png")
    assert (redrawn / "fig7_adversarial_training.png").read_bytes() == (
        out / "fig7_adversarial_training.png"
    ).read_bytes()
    assert len(s["results"]) == len(preset.widths) * len(preset.eps_grid)
    assert len(s["stop_reason"]["40"]) == len(preset.eps_grid)
    lo, hi = s["attack_bounds"]
    assert lo < 0 < hi
    for r in s["results"]:
        assert r["dataset"] == "adv_ms57" and r["model"] == "fcn_40x2" and r["width"] == 40
        assert r["part"] == f"width 40, eps {r['eps']:g}"
        assert set(HEADLINE) <= set(r["metrics"])
        assert r["n_total"] == preset.n_seeds and r["n_diverged"] == 0
        assert r["n_seeds"] == preset.n_seeds, r["seed_status"]
        assert "sampling_se" in r["metrics"]["test_auc"]
        m = {k: v["mean"] for k, v in r["metrics"].items()}
        for k, st in r["metrics"].items():  # the mean is over exactly the used seeds
            used = [
                v
                for v, s_ in zip(st["per_seed"], r["seed_status"], strict=True)
                if s_ in ("ok", "unconverged_used")
            ]
            assert st["mean"] == pytest.approx(float(np.mean(used))), k
        if r["eps"] == 0.0:
            assert m["robust_acc"] == pytest.approx(m["test_acc"])
        else:  # PGD can only remove correct predictions (up to its random start)
            assert m["robust_acc"] <= m["test_acc"] + 0.01


@pytest.mark.slow
def test_quick_end_to_end(tmp_path):
    out = tmp_path / "adv_quick"
    s = A.main(["--preset", "quick", "--out", str(out), "--no-progress"])
    recs = {(r["width"], r["eps"]): r["metrics"] for r in s["results"]}
    std = recs[(200, 0.0)]
    assert std["test_acc"]["mean"] > 0.97
    small = recs[(200, 0.05)]
    assert small["test_acc"]["mean"] > 0.95 and small["robust_acc"]["mean"] > 0.9
    # Reliance on the ten 5-slabs only (S-randomized ~0.5, S^c-randomized unchanged).
    for m in (std, small):
        assert abs(m["s_rand_acc"]["mean"] - 0.5) < 0.06
        assert m["sc_rand_acc"]["mean"] > m["test_acc"]["mean"] - 0.03
    # Large budgets beyond gamma_S = 0.3 fail (~50 %).
    assert recs[(200, 0.4)]["test_acc"]["mean"] < 0.7
