"""Tests of `python -m experiments.ensembles` (App. E.1, reference nb04).

Default suite: preset sanity and the smoke preset (LMS-5 ensembles) end to end, asserting
the run folder, the headline keys and the effect (ensembles stay invariant to S^c). Slow: the quick
preset end to end with the MS-5 / noisy LMS-7 effects.
"""

from __future__ import annotations

import json

import pytest

from experiments import ensembles as E

HEADLINE = ("test_acc", "train_acc", "ensemble_test_acc", "ensemble_gain", "test_auc",
            "s_rand_acc", "s_rand_auc", "sc_rand_acc", "sc_rand_auc")


def test_aggregations_match_the_library():
    from sbjax.eval.ensemble import AGGREGATIONS

    assert E.AGGREGATIONS == AGGREGATIONS


def test_presets_are_consistent():
    for name, p in E.PRESETS.items():
        assert p.n_seeds >= (5 if name == "paper" else 1)
        for st in p.studies:
            assert max(st.ensemble_sizes) <= st.n_members
            assert st.ensemble_sizes[0] == 1, "single models are the baseline"
    keys = [st.key for st in E.PRESETS["quick"].studies]
    assert keys == ["lms5", "ms5", "noisy_lms7"]
    noisy = dict(E.PRESETS["paper"].studies[2].dataset_params)
    assert noisy["p"] == 0.5 and noisy["k"] == 7


def _records(summary, dataset, agg="logits"):
    return {r["ensemble_size"]: r for r in summary["results"]
            if r["dataset"] == dataset and r["aggregation"] == agg}


def test_smoke_end_to_end(tmp_path):
    out = tmp_path / "ens"
    summary = E.main(["--preset", "smoke", "--out", str(out), "--no-progress"])
    for f in ("config.json", "env.json", "summary.json", "metrics.csv", "fig6_ensembles.png",
              "ensembles_randomized_auc.png", "params/lms5_fcn_100x2.npz"):
        assert (out / f).exists(), f
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["experiment"] == "ensembles" and on_disk["preset"] == "smoke"
    recs = _records(on_disk, "lms5")
    assert sorted(recs) == [1, 3]
    assert len(on_disk["results"]) == 2 * len(E.AGGREGATIONS)
    for r in on_disk["results"]:
        assert r["model"] == "fcn_100x2" and r["n_seeds"] == 2
        assert set(HEADLINE) <= set(r["metrics"])
        assert len(r["metrics"]["ensemble_test_acc"]["per_seed"]) == 2
    # A one-member "ensemble" is the member itself.
    one = recs[1]["metrics"]
    assert one["ensemble_gain"]["mean"] == pytest.approx(0.0, abs=1e-6)
    # The effect (App. E.1 / nb04): the 3-member LMS-5 ensemble is accurate, relies on the linear
    # coordinate alone (S-randomized AUC ~0.5) and is invariant to the 5-slabs (S^c AUC 1).
    m = recs[3]["metrics"]
    assert m["ensemble_test_acc"]["mean"] > 0.98
    assert m["test_auc"]["mean"] > 0.99
    assert abs(m["s_rand_auc"]["mean"] - 0.5) < 0.05
    assert m["sc_rand_auc"]["mean"] > 0.99
    assert summary["results"] == on_disk["results"]


@pytest.mark.slow
def test_quick_end_to_end(tmp_path):
    out = tmp_path / "ens_quick"
    summary = E.main(["--preset", "quick", "--out", str(out), "--no-progress"])
    lms = _records(summary, "lms5")[3]["metrics"]
    assert abs(lms["s_rand_auc"]["mean"] - 0.5) < 0.05 and lms["sc_rand_auc"]["mean"] > 0.99
    ms = _records(summary, "ms5")
    # MS-5: single models overfit; ensembles of 10 improve test accuracy.
    assert ms[1]["metrics"]["test_acc"]["mean"] < 0.9
    assert ms[10]["metrics"]["ensemble_test_acc"]["mean"] > ms[1]["metrics"]["test_acc"]["mean"]
    noisy = _records(summary, "noisy_lms7")
    # Noisy LMS-7 (50 % linear noise): everything stays near 0.75, no gain from ensembling.
    for k in (1, 10):
        assert abs(noisy[k]["metrics"]["ensemble_test_acc"]["mean"] - 0.75) < 0.04
    assert noisy[10]["metrics"]["ensemble_gain"]["mean"] < 0.02
    assert abs(noisy[10]["metrics"]["s_rand_acc"]["mean"] - 0.5) < 0.05
