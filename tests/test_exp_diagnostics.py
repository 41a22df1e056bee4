"""Tests of `python -m experiments.diagnostics` (issue 14).

Default suite: preset checks, the timeline summaries on a known history, the MNIST-CIFAR skip when
no data is found, and the smoke preset's probe / LD-SB / timeline parts end to end (records,
values, figures redrawn byte for byte). Slow: the whole smoke preset with margins and the phase
diagram.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from experiments import diagnostics as D
from experiments.common import Run
from tests.helpers import assert_figure, imported_modules

ROOT = Path(__file__).resolve().parent.parent


def test_presets_are_consistent():
    for name, p in D.PRESETS.items():
        D.check_preset(p)
        assert p.n_seeds >= (5 if name == "paper" else 1)
    quick = D.PRESETS["quick"]
    assert list(quick.studies) == ["lms5", "ms57", "mnist_cifar"]
    assert quick.phase.k == (3, 5, 7)
    assert 0.0 in quick.phase.p and 0.5 in quick.phase.p


def test_experiment_imports_no_matplotlib_and_no_other_experiment():
    names = imported_modules(ROOT / "experiments" / "diagnostics.py")
    assert not [m for m in names if m.split(".")[0] == "matplotlib"], names
    allowed = {"experiments.common", "experiments.evaluation", "experiments.synthetic"}
    assert {m for m in names if m.startswith("experiments")} <= allowed, names


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--set", "phase.k=(4,)"], "phase.k"),
        (["--set", "phase.p=(0.0, 1.5)"], "phase.p"),
        (["--set", "studies.lms5.n_probe=3"], "studies.lms5.n_probe"),
        (["--set", "studies.lms5.train.lr=-1.0"], "studies.lms5.train.lr"),
        (["--parts", "probe,nothing"], "parts"),
        (["--datasets", "ms57"], "datasets"),  # not in the smoke preset
    ],
)
def test_bad_arguments_fail_before_any_work(tmp_path, argv, match):
    out = tmp_path / "diag"
    with pytest.raises(ValueError, match=match):
        D.main(["--preset", "smoke", "--out", str(out), *argv])
    assert not out.exists()


def test_timeline_metrics_on_a_known_history():
    # Two seeds, evaluations at 100..500. Seed 0 learns S at 200 and never S^c; seed 1 picks S^c
    # up (reliance 0.3 at 200), drops it again and stops at 400 (its evaluation at 500 repeats
    # the stopped model and must be ignored).
    upd = np.array([100, 200, 300, 400, 500], np.float64)
    test = np.ones((2, 5))
    s_rand = np.array([[0.9, 0.6, 0.5, 0.5, 0.5], [1.0, 0.7, 0.55, 0.5, 0.5]])
    sc_rand = np.array([[1.0, 1.0, 1.0, 1.0, 1.0], [0.9, 0.7, 0.9, 0.98, 0.5]])
    r = types.SimpleNamespace(
        history={
            "step": np.tile(upd, (2, 1)),
            "monitor_test_acc": test,
            "monitor_s_rand_acc": s_rand,
            "monitor_sc_rand_acc": sc_rand,
        },
        stop_step=np.array([500, 400]),
    )
    out, curves, never = D._timeline_metrics(r)
    np.testing.assert_allclose(out["reliance_s_final"], [0.5, 0.5])
    np.testing.assert_allclose(out["reliance_sc_final"], [0.0, 0.02])  # not the 0.5 at 500
    np.testing.assert_allclose(out["reliance_sc_max"], [0.0, 0.3])
    np.testing.assert_allclose(out["updates_to_s"], [200, 200])  # first reliance >= 0.25
    np.testing.assert_array_equal(out["sc_picked_then_dropped"], [0.0, 1.0])
    assert "updates_to_sc" not in out and never == {"updates_to_sc": 1}
    assert curves["test"].shape == (2, 5)


def test_mnist_cifar_without_data_is_skipped_with_a_message(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SBJAX_MNIST_CIFAR_SUBSET", str(tmp_path / "empty"))
    preset = D.PRESETS["quick"]
    run = Run(
        name=D.NAME,
        out=tmp_path / "run",
        preset="quick",
        preset_config=None,
        n_seeds=1,
        seed=0,
        resume=False,
        progress=False,
    )
    extra = {"skipped": {}, "data_notes": {}, "sweep_wall_s": {}}
    D.run_study(run, preset, "mnist_cifar", ["probe"], extra, {"probe": [], "timeline": {}})
    assert "SBJAX_MNIST_CIFAR_SUBSET" in extra["skipped"]["mnist_cifar"]
    assert "mnist_cifar: skipped" in caplog.text
    assert run.results == [] and not run.out.exists()


def _records(summary, part):
    return {r["model"]: r for r in summary["results"] if r["part"] == part}


def _redraw_equal(tmp_path, out):
    redrawn = tmp_path / "redrawn"
    r = subprocess.run(
        [sys.executable, "-m", "sbjax.plots", str(out), "--out", str(redrawn)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert sorted(p.name for p in redrawn.glob("*.png")) == pngs
    for name in pngs:
        assert_figure(out / name)
        assert (redrawn / name).read_bytes() == (out / name).read_bytes(), name
    return pngs


def test_smoke_probe_ldsb_timeline_end_to_end(tmp_path):
    out = tmp_path / "diag"
    summary = D.main(
        ["--preset", "smoke", "--out", str(out), "--no-progress", "--parts", "probe,ldsb,timeline"]
    )
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["experiment"] == "diagnostics" and on_disk["preset"] == "smoke"
    assert summary["parts"] == ["probe", "ldsb", "timeline"]
    for r in on_disk["results"]:
        assert r["experiment"] == "diagnostics" and r["dataset"] == "lms5"
        assert r["n_total"] == 2 and r["n_diverged"] == 0
        for st in r["metrics"].values():
            assert set(st) >= {"mean", "std", "per_seed"} and len(st["per_seed"]) == 2
    probe, ldsb, tl = (_records(on_disk, k) for k in ("probe", "ldsb", "timeline"))
    assert (
        sorted(probe)
        == sorted(ldsb)
        == [
            "fcn_100x1",
            "fcn_100x1_abandoned",
            "fcn_100x1_init",
            "fcn_100x1_s_removed",
        ]
    )
    # nothing trained at init
    assert sorted(tl) == ["fcn_100x1", "fcn_100x1_abandoned", "fcn_100x1_s_removed"]
    main = probe["fcn_100x1"]["metrics"]
    # Extreme SB on LMS-5: the model's own head ignores S^c (S-randomized accuracy at chance),
    # while the S probe on its features is perfect.
    assert main["test_acc"]["mean"] > 0.98
    assert main["head_s_rand_acc"]["mean"] < 0.6
    assert main["probe_sc_rand_acc"]["mean"] > 0.95
    assert 0.0 <= main["probe_s_rand_acc"]["mean"] <= 1.0
    m = ldsb["fcn_100x1"]["metrics"]
    assert m["ldsb_rank"]["mean"] >= 1 and m["ldsb_r1_explained"]["mean"] <= 1
    assert m["ldsb_pperp_pc"]["mean"] < 0.1 < m["ldsb_p_pc"]["mean"]  # LD-SB on a rank-r P
    assert m["ldsb_r1_overlap_s"]["mean"] > 0.8  # the top direction is S
    t = tl["fcn_100x1"]["metrics"]
    assert t["reliance_s_final"]["mean"] > 0.35 and t["reliance_sc_final"]["mean"] < 0.05
    assert "updates_to_s" in t
    assert tl["fcn_100x1_s_removed"]["model"].endswith("_s_removed")
    pngs = _redraw_equal(tmp_path, out)
    assert pngs == ["probe_bars.png", "timeline_lms5.png"]
    assert (out / "params" / "lms5_fcn_100x1.npz").exists()
    rows = (out / "sweeps" / "lms5_fcn_100x1" / "metrics.jsonl").read_text().splitlines()
    assert "monitor_s_rand_acc" in json.loads(rows[0])


@pytest.mark.slow
def test_smoke_all_parts_end_to_end(tmp_path):
    out = tmp_path / "diag"
    D.main(["--preset", "smoke", "--out", str(out), "--no-progress"])
    on_disk = json.loads((out / "summary.json").read_text())
    margin, phase = (
        _records(on_disk, "margin"),
        [r for r in on_disk["results"] if r["part"] == "phase"],
    )
    m = margin["fcn_100x1"]["metrics"]
    assert m["margin_s_median"]["mean"] < m["margin_sc_median"]["mean"]
    assert m["flipped_frac_s"]["mean"] > 0.9
    assert len(phase) == 2 and {r["p"] for r in phase} == {0.0, 0.5}
    by_p = {r["p"]: r["metrics"] for r in phase}
    assert by_p[0.0]["reliance_s"]["mean"] > by_p[0.0]["reliance_sc"]["mean"]
    assert by_p[0.5]["reliance_sc"]["mean"] > by_p[0.5]["reliance_s"]["mean"]
    (cross,) = on_disk["phase"]["crossover"]
    assert (cross["margin"], cross["k"], cross["p_cross"]) == (0.3, 3, 0.5)
    assert cross["p_cross_per_seed"] == [0.5] and cross["n_never"] == 0
    assert [b["updates"] for b in cross["by_budget"]] == on_disk["phase"]["updates"]
    pngs = _redraw_equal(tmp_path, out)
    assert pngs == ["phase_diagram.png", "probe_bars.png", "timeline_lms5.png"]


def _phase_result(s_rand, sc_rand, test, p=(0.0, 0.1, 0.5)):
    """A PhaseResult [P, G=1, K, S] with a two-period timeline whose last period is final."""
    from sbjax.train.phase import PhaseResult

    m = {"s_rand_acc": s_rand, "sc_rand_acc": sc_rand, "test_acc": test}
    tl = {k: np.stack([np.full_like(v, 0.5), v], axis=-1) for k, v in m.items()}
    return PhaseResult(
        p=p,
        margin=(0.3,),
        k=(3, 7),
        n_seeds=s_rand.shape[-1],
        metrics=m,
        timeline=tl,
        updates=np.array([100, 200]),
        stop_reason=np.full(s_rand.shape, "max_steps"),
        strategy="program",
        compile_s=0.0,
        run_s=0.0,
        n_devices=1,
    )


def test_per_seed_crossovers_intervals_and_verdicts():
    """k = 3: three of four seeds cross at p = 0.1, one never; k = 7: nobody crosses and the
    clean test accuracy at p = 0.5 is at chance (a learnability limit, not SB)."""
    shape = (3, 1, 2, 4)
    s_rand, sc_rand, test = np.full(shape, 0.5), np.full(shape, 0.5), np.full(shape, 0.5)
    s_rand[1:, 0, 0, :3] = 0.95  # S^c used from p = 0.1 on (seeds 0-2): S-randomized acc high
    test[:, 0, 0, :] = 0.97
    res = _phase_result(s_rand, sc_rand, test)
    per = res.crossover_per_seed(0.05)
    np.testing.assert_array_equal(per[0, 0], [0.1, 0.1, 0.1, np.nan])
    assert np.all(np.isnan(per[0, 1]))
    assert np.all(np.isnan(res.crossover_per_seed(0.05, period=0)))  # nothing at 100 updates
    c3, c7 = D.crossover_summary(res, 0.05, seed=0)
    assert c3["p_cross_per_seed"] == [0.1, 0.1, 0.1, None] and c3["n_never"] == 1
    assert c3["p_cross_seed_mean"] == pytest.approx(0.1)
    assert c3["p_cross_ci95"] == pytest.approx([0.1, 0.1])
    assert [b["p_cross_seed_mean"] for b in c3["by_budget"]] == [None, pytest.approx(0.1)]
    assert c3["sc_learned"] and "1 of 4 seeds never cross" in c3["verdict"]
    assert not c7["sc_learned"] and "learnability limit" in c7["verdict"]


def test_bootstrap_interval_covers_the_mean():
    rng = np.random.default_rng(0)
    v = np.array([0.05, 0.1, 0.1, 0.2])
    lo, hi = D.bootstrap_mean_ci(v, rng)
    assert lo <= v.mean() <= hi and lo >= v.min() and hi <= v.max()
    assert D.bootstrap_mean_ci([0.1], rng) is None
