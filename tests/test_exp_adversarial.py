"""Tests of `python -m experiments.adversarial_training` (App. E.2.1, Fig. 7).

Default suite: preset sanity and the smoke preset end to end (run folder, one record per
(width, eps) with the headline keys, robust accuracy consistent with the training eps). Slow: the
quick preset end to end with the effect (small-eps models reach ~100 % standard and robust
accuracy and rely on the 5-slabs only).
"""

from __future__ import annotations

import json

import pytest

from experiments import adversarial_training as A

HEADLINE = ("train_acc", "test_acc", "test_auc", "robust_acc", "s_rand_acc", "s_rand_auc",
            "sc_rand_acc", "sc_rand_auc")


def test_presets():
    paper = A.PRESETS["paper"]
    assert paper.widths == (200, 1000, 2000) and paper.n_seeds >= 5
    assert paper.epochs == 4000 and paper.lr_boundaries_epochs == (1000, 2000, 3000)
    assert paper.n_train == 6000 and paper.lr == 0.1 and paper.lr_decay == 0.1
    assert paper.adv_steps == 40
    for p in A.PRESETS.values():
        assert 0.0 in p.eps_grid, "eps = 0 is the standard-training baseline"
        assert list(p.eps_grid) == sorted(p.eps_grid)


def test_smoke_end_to_end(tmp_path):
    out = tmp_path / "adv"
    A.main(["--preset", "smoke", "--out", str(out), "--no-progress"])
    for f in ("config.json", "env.json", "summary.json", "metrics.csv",
              "fig7_adversarial_training.png", "params/adv_ms57_fcn_32x2.npz"):
        assert (out / f).exists(), f
    s = json.loads((out / "summary.json").read_text())
    preset = A.PRESETS["smoke"]
    assert len(s["results"]) == len(preset.widths) * len(preset.eps_grid)
    lo, hi = s["attack_bounds"]
    assert lo < 0 < hi
    for r in s["results"]:
        assert r["dataset"] == "adv_ms57" and r["model"] == "fcn_32x2" and r["width"] == 32
        assert set(HEADLINE) <= set(r["metrics"])
        m = {k: v["mean"] for k, v in r["metrics"].items()}
        assert all(0.0 <= v <= 1.0 for v in m.values())
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
