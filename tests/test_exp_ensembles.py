"""Tests of `python -m experiments.ensembles` (App. E.1, reference nb04).

Default suite: preset sanity, failed members (an ensemble with a diverged or unconverged member
is excluded from every mean and counted; fake sweep results, and a real diverging sweep) and the
smoke preset (LMS-5 ensembles) end to end, asserting the run folder, the headline keys and the
effect (ensembles stay invariant to S^c). Slow: the quick preset end to end with the MS-5 / noisy
LMS-7 effects.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import ensembles as E
from experiments.common import Run
from tests.helpers import assert_figure, imported_modules

HEADLINE = (
    "test_acc",
    "train_acc",
    "ensemble_test_acc",
    "gain_vs_members_mean",
    "gain_vs_member0",
    "test_auc",
    "s_rand_acc",
    "s_rand_auc",
    "sc_rand_acc",
    "sc_rand_auc",
)


def test_aggregations_match_the_library():
    from sbjax.eval.ensemble import AGGREGATIONS

    assert E.AGGREGATIONS == AGGREGATIONS


ROOT = Path(__file__).resolve().parent.parent


def test_presets_are_consistent():
    for name, p in E.PRESETS.items():
        E.check_preset(p)
        assert p.n_seeds >= (5 if name == "paper" else 1)
        for key, st in p.studies.items():
            assert st.key == key
            assert max(st.ensemble_sizes) <= st.n_members
            assert st.ensemble_sizes[0] == 1, "single models are the baseline"
    assert list(E.PRESETS["quick"].studies) == ["lms5", "ms5", "noisy_lms7"]
    noisy = E.PRESETS["paper"].studies["noisy_lms7"].dataset_params
    assert noisy["p"] == 0.5 and noisy["k"] == 7


def test_experiment_imports_no_matplotlib_and_no_other_experiment():
    names = imported_modules(ROOT / "experiments" / "ensembles.py")
    assert not [m for m in names if m.split(".")[0] == "matplotlib"], names
    assert {m for m in names if m.startswith("experiments")} <= {"experiments.common"}, names


@pytest.mark.parametrize(
    "item,match",
    [
        ("studies.lms5.ensemble_sizes=(1, 5)", "studies.lms5.ensemble_sizes"),
        ("studies.lms5.batch_size=100000", "studies.lms5.batch_size"),
        ("studies.lms5.lr=-0.1", "studies.lms5.lr"),
        ("studies.ms5.lr=0.1", "'ms5' is not a preset key"),
        ("n_seeds=0", "n_seeds"),
    ],
)
def test_bad_overrides_fail_before_any_work(tmp_path, item, match):
    out = tmp_path / "ens"
    with pytest.raises(ValueError, match=match):
        E.main(["--preset", "smoke", "--out", str(out), "--set", item])
    assert not out.exists()


def test_expectations_name_the_paper_values():
    assert E.expectation("lms5", 3, "logits")[1] == {
        "test_auc": 1.0,
        "s_rand_auc": 0.507,
        "sc_rand_auc": 1.0,
    }
    assert E.expectation("ms5", 10, "probs")[1] == {"gain_vs_members_mean": 0.20}
    assert E.expectation("noisy_lms7", 5, "logits")[1] == {"ensemble_test_acc": 0.75}
    assert E.expectation("other", 1, "logits") == (None, {})


def test_ensemble_stop_reasons():
    from sbjax.eval.ensemble import ensemble_stop_reasons

    reasons = [
        "converged",
        "converged",
        "diverged",  # seed 0: member 2 diverged
        "converged",
        "max_steps",
        "converged",  # seed 1: member 1 out of budget
        "diverged",
        "max_steps",
        "converged",
    ]  # seed 2: diverged wins
    assert ensemble_stop_reasons(reasons, 3) == ["diverged", "max_steps", "diverged"]
    assert ensemble_stop_reasons(reasons, 3, size=2) == ["converged", "max_steps", "diverged"]
    assert ensemble_stop_reasons(reasons, 3, size=1) == ["converged", "converged", "diverged"]
    with pytest.raises(ValueError):
        ensemble_stop_reasons(reasons, 4)
    with pytest.raises(ValueError):
        ensemble_stop_reasons(reasons, 3, size=4)
    with pytest.raises(ValueError):
        ensemble_stop_reasons(["ok"] * 3, 3)


def _run(tmp_path, n_seeds):
    return Run(
        name=E.NAME,
        out=tmp_path / "run",
        preset="test",
        preset_config=None,
        n_seeds=n_seeds,
        seed=0,
        resume=False,
        progress=False,
    )


def _fake_members(n_s, n_k, n=40, seed=0):
    """Member logits that are mostly right, and the members' accuracies (argmax, as the real
    evaluation: a NaN logit row predicts class 0, a finite accuracy)."""
    rng = np.random.default_rng(seed)
    y = np.tile([0, 1], n // 2)
    lg = rng.normal(size=(n_s, n_k, n, 2))
    lg[..., 1] += 1.5 * (2 * y - 1)
    return lg, y


def _acc(lg, y):
    return (np.argmax(lg, axis=-1) == y).mean(axis=-1)


def test_an_ensemble_with_a_failed_member_is_excluded_and_counted(tmp_path):
    n_s, n_k = 3, 3
    lg, y = _fake_members(n_s, n_k)
    reasons = ["converged"] * (n_s * n_k)
    reasons[1 * n_k + 2] = "diverged"  # seed 1, member 2: NaN logits, accuracy still finite
    reasons[2 * n_k + 1] = "max_steps"  # seed 2, member 1: never met the stop rule
    lg[1, 2] = np.nan
    logits = {"standard": lg, "s_rand": lg[..., ::-1], "sc_rand": lg}
    member_test = _acc(lg, y)
    assert np.all(np.isfinite(member_test))  # the trap: a diverged member's accuracy is finite
    study = E.Study("fake", "ms", {}, 100, y.size, 0, n_k, (1, 2, 3))
    run = _run(tmp_path, n_s)
    curves = E.add_records(run, study, "fcn", reasons, member_test, member_test, logits, y)
    assert len(run.results) == 3 * len(E.AGGREGATIONS)
    k1, k2, k3 = (curves["logits"][k] for k in (1, 2, 3))
    # k = 1: member 0 of every seed trained: nothing excluded.
    assert k1["n_seeds"] == 3 and k1["n_failed"] == 0 and k1["seed_status"] == ["ok"] * 3
    # k = 2: seed 2's member 1 ran out of budget -> that ensemble is out (convergence required).
    assert E.REQUIRE_CONVERGED
    assert k2["n_seeds"] == 2 and k2["n_unconverged"] == 1 and k2["n_diverged"] == 0
    assert k2["seed_status"] == ["ok", "ok", "unconverged"]
    # k = 3: seed 1 holds the diverged member, seed 2 the unconverged one: one ensemble is left,
    # and every metric (accuracies and AUCs alike) is over that one seed.
    assert k3["n_seeds"] == 1 and k3["n_diverged"] == 1 and k3["n_unconverged"] == 1
    assert k3["n_total"] == 3 and k3["n_failed"] == 2
    assert k3["seed_status"] == ["ok", "diverged", "unconverged"]
    for name, st in k3["metrics"].items():
        assert st["n"] == 1 and st["std"] is None, name
        assert len(st["per_seed"]) == 3, name
        assert st["mean"] == pytest.approx(st["per_seed"][0]), name
    m = k3["metrics"]
    assert m["test_acc"]["mean"] == pytest.approx(member_test[0].mean())
    ens = m["ensemble_test_acc"]["per_seed"][0]
    assert m["gain_vs_members_mean"]["mean"] == pytest.approx(ens - member_test[0].mean())
    assert m["gain_vs_member0"]["mean"] == pytest.approx(ens - member_test[0, 0])
    assert "sampling_se" in m["test_auc"] and "sampling_se" in m["ensemble_test_acc"]
    assert "sampling_se" not in m["gain_vs_members_mean"]
    # Per-seed rows of metrics.csv carry the status.
    rows = [
        r
        for r in run.rows
        if r["ensemble_size"] == 3 and r["metric"] == "test_acc" and r["aggregation"] == "logits"
    ]
    assert [r["status"] for r in rows] == ["ok", "diverged", "unconverged"]


def test_a_record_whose_ensembles_all_failed_says_so_and_the_figures_cope(tmp_path):
    n_s, n_k = 2, 2
    lg, y = _fake_members(n_s, n_k, seed=1)
    reasons = ["converged", "diverged", "diverged", "converged"]
    lg[0, 1] = np.nan
    lg[1, 0] = np.nan
    logits = {"standard": lg, "s_rand": lg, "sc_rand": lg}
    member_test = _acc(lg, y)
    study = E.Study("fake", "ms", {}, 100, y.size, 0, n_k, (1, 2))
    run = _run(tmp_path, n_s)
    curves = E.add_records(run, study, "fcn", reasons, member_test, member_test, logits, y)
    k1, k2 = curves["logits"][1], curves["logits"][2]
    assert k1["n_seeds"] == 1 and k1["seed_status"] == ["ok", "diverged"]
    assert k1["metrics"]["test_acc"]["std"] is None  # one seed: no std
    assert k2["status"] == "all models failed" and k2["n_seeds"] == 0 and k2["n_diverged"] == 2
    assert all(st["mean"] is None and st["std"] is None for st in k2["metrics"].values())
    oc = {
        "dataset": "fake",
        "member_test_acc": member_test,
        "curves": curves,
        "member_used": np.array([[True, False], [False, True]]),
    }
    E.draw_figures(run, [oc])
    assert_figure(tmp_path / "run" / "fig6_ensembles.png")
    assert_figure(tmp_path / "run" / "ensembles_randomized_auc.png")
    run.finish()  # summary.json / metrics.csv with failed records
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["results"][-1]["status"] == "all models failed"


@pytest.mark.slow
def test_a_real_diverging_sweep_is_marked_failed(tmp_path):
    """Through the experiment's own training: a huge learning rate makes every member diverge."""
    study = E.Study(
        "lms5",
        "lms",
        {"k": 5, "d": 10},
        256,
        256,
        0,
        2,
        (1, 2),
        lr=1e9,
        batch_size=128,
        max_steps=20,
        eval_every=10,
        patience=1,
    )
    preset = E.Preset(n_seeds=2, width=16, depth=1, studies={"lms5": study})
    run = _run(tmp_path, 2)
    oc = E.run_study(run, preset, study, 0)
    assert np.all(np.asarray(oc["stop_reason"]) == "diverged")
    assert not oc["member_used"].any()
    for r in run.results:
        assert r["status"] == "all models failed" and r["n_diverged"] == 2, r["seed_status"]
        assert r["metrics"]["test_acc"]["mean"] is None


def _records(summary, dataset, agg="logits"):
    return {
        r["ensemble_size"]: r
        for r in summary["results"]
        if r["dataset"] == dataset and r["aggregation"] == agg
    }


def test_smoke_end_to_end(tmp_path):
    out = tmp_path / "ens"
    # --set reaches a study's value (here a smaller test set) and lands in config.json.
    summary = E.main(
        [
            "--preset",
            "smoke",
            "--out",
            str(out),
            "--no-progress",
            "--set",
            "studies.lms5.n_test=1500",
        ]
    )
    for f in (
        "config.json",
        "env.json",
        "summary.json",
        "metrics.csv",
        "fig6_ensembles.png",
        "ensembles_randomized_auc.png",
        "params/lms5_fcn_100x2.npz",
    ):
        assert (out / f).exists(), f
    config = json.loads((out / "config.json").read_text())
    assert config["overrides"] == ["studies.lms5.n_test=1500"]
    assert config["preset_config"]["studies"]["lms5"]["n_test"] == 1500
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["experiment"] == "ensembles" and on_disk["preset"] == "smoke"
    assert sorted(on_disk["figures"]) == ["ensembles_randomized_auc.png", "fig6_ensembles.png"]
    # Every figure is redrawn from the run folder alone, to the same picture.
    redrawn = tmp_path / "redrawn"
    r = subprocess.run(
        [sys.executable, "-m", "sbjax.plots", str(out), "--out", str(redrawn)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in redrawn.glob("*.png")) == sorted(
        p.name for p in out.glob("*.png")
    )
    for png in out.glob("*.png"):
        assert_figure(redrawn / png.name)
        assert (redrawn / png.name).read_bytes() == png.read_bytes(), png.name
    recs = _records(on_disk, "lms5")
    assert sorted(recs) == [1, 3]
    assert len(on_disk["results"]) == 2 * len(E.AGGREGATIONS)
    for r in on_disk["results"]:
        assert r["model"] == "fcn_100x2" and r["n_seeds"] == 2 and r["n_total"] == 2
        assert r["n_diverged"] == 0 and r["n_unconverged"] == 0 and "status" not in r
        assert r["seed_status"] == ["ok", "ok"]
        assert set(HEADLINE) <= set(r["metrics"])
        assert len(r["metrics"]["ensemble_test_acc"]["per_seed"]) == 2
        assert r["metrics"]["test_auc"]["sampling_se"] > 0
        assert r["part"] == f"ensemble of {r['ensemble_size']}, {r['aggregation']}-averaged"
        assert "S-rand AUC ~0.5" in r["expect"]
        n = r["metrics"]["test_acc"]["mean"]
        assert r["metrics"]["test_acc"]["sampling_se"] == pytest.approx(
            np.sqrt(n * (1 - n) / 1500)
        )  # the overridden test size
    assert recs[3]["paper"] == {"test_auc": 1.0, "s_rand_auc": 0.507, "sc_rand_auc": 1.0}
    assert len(on_disk["stop_reason"]["lms5"]) == 2
    # A one-member "ensemble" is the member itself.
    one = recs[1]["metrics"]
    assert one["gain_vs_members_mean"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert one["gain_vs_member0"]["mean"] == pytest.approx(0.0, abs=1e-6)
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
    assert noisy[10]["metrics"]["gain_vs_members_mean"]["mean"] < 0.02
    assert abs(noisy[10]["metrics"]["s_rand_acc"]["mean"] - 0.5) < 0.05


# ------------------------------------------------------------------ App. E.1's sample size searched

TINY_SEARCH = [
    "--set",
    "search.dataset_params={'k': 5, 'd': 10}",
    "--set",
    "search.n_train=[300, 600]",
    "--set",
    "search.n_seeds=3",
    "--set",
    "search.n_members=3",
    "--set",
    "search.ensemble_sizes=[1, 3]",
    "--set",
    "search.n_test=1000",
    "--set",
    "search.n_val=200",
    "--set",
    "search.max_steps=1500",
    "--set",
    "search.eval_every=100",
    "--set",
    "n_seeds=3",
]


@pytest.fixture(scope="module")
def search_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ens_search") / "run"
    return out, E.main(["--preset", "search", "--out", str(out), "--no-progress", *TINY_SEARCH])


def test_search_records_carry_size_ensemble_size_and_gain_interval(search_run):
    out, summary = search_run
    recs = [r for r in summary["results"] if r.get("search")]
    assert {(r["n_train"], r["ensemble_size"], r["aggregation"]) for r in recs} == {
        (n, k, a) for n in (300, 600) for k in (1, 3) for a in ("logits", "probs")
    }
    assert any(r["n_seeds"] > 0 for r in recs), "some ensembles must count for this test"
    for r in recs:
        assert r["part"].startswith(f"search n_train {r['n_train']}: ensemble of ")
        used = np.asarray([s in ("ok", "unconverged_used") for s in r["seed_status"]])
        gain = np.asarray(r["metrics"]["gain_vs_members_mean"]["per_seed"])[used]
        g = r["ensemble_gain"]
        assert g["n"] == used.sum()
        if g["n"]:
            assert g["mean"] == pytest.approx(float(gain.mean()))
        if g["n"] >= 2:
            assert g["ci95"][0] <= g["mean"] <= g["ci95"][1]
        if r["ensemble_size"] == 1:  # a single model is its own members' mean
            assert g["mean"] in (None, pytest.approx(0.0, abs=1e-7))
        if r["aggregation"] == "probs":
            assert set(r["probs_minus_logits"]) == {"mean", "ci95", "n"}
    answer = summary["search"]["answer"]
    assert [row["n_train"] for row in answer["per_size"]] == [300, 600]
    assert answer["verdict"].startswith(("reached", "not reached on the searched range"))
    assert_figure(out / "ensemble_gain_vs_n_train.png")
    assert (out / "params" / "search_ms5_fcn_100x2.npz").is_file()


def test_search_answer_needs_the_band_and_both_gains():
    def per_size(g5, g10):
        mk = {
            "logits": {
                k: {"ensemble_gain": {"mean": g, "ci95": [g - 0.02, g + 0.02], "n": 10}}
                for k, g in ((5, g5), (10, g10))
            }
        }
        return mk

    sizes = (3000, 4500, 6000)
    acc = np.stack([np.full((10, 10), a) for a in (0.6, 0.75, 0.9)])
    ok = np.ones_like(acc, bool)
    ans = E.search_answer(
        sizes, [per_size(0.2, 0.25), per_size(0.14, 0.19), per_size(0.2, 0.2)], acc, ok
    )
    assert ans["reached_at"] == [4500]  # 3000 and 6000 are outside the ~75 % band
    ans = E.search_answer(
        sizes, [per_size(0.0, 0.0), per_size(0.14, 0.1), per_size(0.2, 0.2)], acc, ok
    )
    assert ans["reached_at"] == [] and ans["verdict"] == (
        "not reached on the searched range n_train = 3000-6000"
    )


@pytest.mark.parametrize(
    "item,match",
    [
        ("search.n_train=[100]", "search.n_train"),
        ("search.n_train=[3000, 2000]", "search.n_train"),
        ("search.ensemble_sizes=[1, 20]", "search.ensemble_sizes"),
        ("search.lr=0", "search.lr"),
        ("search.n_val=-1", "search.n_val"),
    ],
)
def test_bad_search_values_fail_before_any_work(tmp_path, item, match):
    out = tmp_path / "ens"
    with pytest.raises(ValueError, match=match):
        E.main(["--preset", "search", "--out", str(out), "--set", item])
    assert not out.exists()
