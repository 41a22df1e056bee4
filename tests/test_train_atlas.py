"""The one-program shortcut atlas (`sbjax.train.atlas`) and its experiment's claim logic."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from experiments import shortcut_atlas as X
from sbjax.data.atlas import AtlasData
from sbjax.train import TrainConfig

TINY = AtlasData(embed_dim=3, max_nesting=1, n_train=64, n_test=32, n_probe=64)
CFG = TrainConfig(
    optimizer="adam", lr=1e-2, batch_size=16, max_steps=40, eval_every=20, stop_rule="none"
)


def test_bad_inputs_raise_before_compiling():
    from sbjax.train.atlas import atlas_sweep

    lin = {"name": "linear"}
    with pytest.raises(ValueError, match=r"cells\[1\]\.rho_c"):
        atlas_sweep(CFG, lin, TINY, [{"rho_s": 0.5}, {"rho_c": 2.0}])
    with pytest.raises(ValueError, match="cells"):
        atlas_sweep(CFG, lin, TINY, [])
    with pytest.raises(ValueError, match="strategy"):
        atlas_sweep(CFG, lin, TINY, [{}], strategy="fast")
    with pytest.raises(ValueError, match="n_seeds"):
        atlas_sweep(CFG, lin, TINY, [{}], n_seeds=0)
    with pytest.raises(ValueError, match="batch_size"):
        atlas_sweep(dataclasses.replace(CFG, batch_size=128), lin, TINY, [{}])


def test_t_interval_and_verdicts():
    ci = X.t_interval([1.0, 2.0, 3.0, np.nan])  # NaN (a failed model) is left out
    assert ci["n"] == 3 and ci["mean"] == pytest.approx(2.0)
    assert ci["ci95"][1] - 2.0 == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-5)
    assert X.t_interval([np.nan])["mean"] is None
    assert X.verdict([0.01, 0.05], -0.1, 0.1) == "pass"
    assert X.verdict([0.2, 0.3], -0.1, 0.1) == "fail"
    assert X.verdict([0.05, 0.3], -0.1, 0.1) == "inconclusive"  # wider than its band
    assert X.verdict(None, 0, 1) == "inconclusive"


def _preset():
    return X.PRESETS["smoke"].__class__(
        **{
            **X.PRESETS["smoke"].__dict__,
            "predictivity": (0.5, 0.7),
            "availability": ({"alpha_s": 1.0}, {"alpha_s": 4.0}),
        }
    )


def test_claims_on_constructed_grids():
    p = _preset()
    avail = [dict(a) for a in p.availability]
    rng = np.random.default_rng(0)
    s = 6

    def arch(center_more):  # [P=2, A=2, S] flattened to [C, S]; cell (rho 0.7, a_s=4) is "more"
        g = 0.01 * rng.standard_normal((2, 2, s))
        g[1, 1] += center_more
        return {"bias": g.reshape(4, s)}

    atlas = {
        "linear": arch(0.0),
        "relu_d1": arch(0.3),
        "tanh_d1": arch(0.2),
        "relu_d2": arch(0.35),
        "relu_d3": arch(0.4),
        "relu_d4": arch(0.45),
    }
    c = X.claims(p, avail, atlas)
    assert c["linear_unbiased"]["verdict"] == "pass"
    assert c["nonlinear_biased"]["verdict"] == "pass"
    assert c["bias_grows_with_depth"]["verdict"] == "pass"
    assert c["bias_grows_with_depth"]["slope_per_layer"]["mean"] == pytest.approx(0.05, abs=0.01)
    # a biased linear model fails claim 1; a flat depth profile is not a pass for claim 3
    atlas["linear"] = arch(0.5)
    for a in ("relu_d2", "relu_d3", "relu_d4"):
        atlas[a] = arch(0.3)
    c = X.claims(p, avail, atlas)
    assert c["linear_unbiased"]["verdict"] == "fail"
    assert c["bias_grows_with_depth"]["verdict"] != "pass"
    # failed models (NaN) are excluded, not averaged
    atlas["relu_d1"]["bias"][3, :2] = np.nan
    c = X.claims(p, avail, atlas)
    assert c["nonlinear_biased"]["by_architecture"]["relu_d1"]["n"] == s - 2


def test_check_preset_names_the_key():
    p = _preset()
    with pytest.raises(ValueError, match="architectures"):
        X.check_preset(p.__class__(**{**p.__dict__, "architectures": ("relu_d9",)}))
    with pytest.raises(ValueError, match="predictivity"):
        X.check_preset(p.__class__(**{**p.__dict__, "predictivity": (1.5,)}))
    with pytest.raises(ValueError, match="availability"):
        X.check_preset(p.__class__(**{**p.__dict__, "availability": ({"beta": 1},)}))


@pytest.mark.slow
def test_program_equals_loop_and_failed_models_are_flagged():
    from sbjax.train.atlas import atlas_sweep

    cells = [{"rho_s": 0.5, "alpha_s": 2.0}, {"rho_s": 0.7, "eta_c": 1}]
    model = {"name": "fcn", "width": 8, "depth": 1}
    a = atlas_sweep(CFG, model, TINY, cells, n_seeds=2, strategy="program")
    b = atlas_sweep(CFG, model, TINY, cells, n_seeds=2, strategy="loop")
    for k in a.metrics:
        np.testing.assert_allclose(a.metrics[k], b.metrics[k], rtol=1e-4, atol=1e-5, err_msg=k)
    assert a.metrics["shortcut_bias"].shape == (2, 2)
    # a learning rate that blows up: every model diverged, and `failed` says so
    bad = atlas_sweep(
        dataclasses.replace(CFG, optimizer="sgd", lr=1e6), model, TINY, cells[:1], n_seeds=2
    )
    assert bad.failed().all()


@pytest.mark.slow
def test_linear_model_trained_long_is_unbiased_in_program():
    from sbjax.train.atlas import atlas_sweep

    data = AtlasData(embed_dim=4, max_nesting=1, n_train=4000, n_test=500, n_probe=4000)
    cfg = TrainConfig(
        optimizer="adam", lr=1e-2, batch_size=128, max_steps=3000, eval_every=1000, stop_rule="none"
    )
    r = atlas_sweep(
        cfg, {"name": "linear"}, data, [{"rho_s": 0.6, "rho_c": 0.6, "alpha_s": 4.0}], n_seeds=3
    )
    assert np.all(np.abs(r.metrics["shortcut_bias"]) < 0.05)
    assert np.all(r.metrics["test_acc"] > r.metrics["bayes_acc"] - 0.03)


@pytest.mark.slow
def test_experiment_smoke_end_to_end(tmp_path):
    from sbjax import io

    out = tmp_path / "atlas"
    summary = X.main(["--preset", "smoke", "--out", str(out), "--no-progress"])
    recs = summary["results"]
    assert {r["part"] for r in recs} == {"atlas", "bridge"}
    for r in recs:
        assert {"architecture", "availability", "predictivity", "shortcut_bias"} <= set(r)
        assert set(r["shortcut_bias"]) == {"mean", "ci95", "n"}
    assert (out / "atlas_heatmap.png").exists() and (out / "atlas_depth.png").exists()
    assert io.read_json(out / "summary.json")["claims"]["interval"].startswith("95 %")
    from sbjax.plots import redraw

    assert len(redraw(out, tmp_path / "redrawn")) == 2


def test_atlas_figures_draw_and_check_shapes(tmp_path):
    from sbjax.plots import atlas as PA
    from tests.test_plots import assert_png

    panels = {"linear": np.zeros((2, 3)), "relu_d1": np.linspace(-0.2, 0.4, 6).reshape(2, 3)}
    path = tmp_path / "h.png"
    fig = PA.atlas_heatmap(panels, [0.5, 0.7], ["a_s=1", "a_s=2", "a_s=4"], path)
    assert_png(path, fig)
    path = tmp_path / "d.png"
    fig = PA.atlas_depth([1, 2], [0.1, 0.2], [[0.0, 0.2], None], path, linear={"mean": 0.0})
    assert_png(path, fig)
    with pytest.raises(ValueError, match=r"panels\['linear'\]"):
        PA.atlas_heatmap({"linear": np.zeros((3, 3))}, [0.5, 0.7], ["a", "b", "c"])
    with pytest.raises(ValueError, match="depth"):
        PA.atlas_depth([1, 2], [0.1], [None])
