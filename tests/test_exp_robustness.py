"""Tests of `python -m experiments.robustness_of_sb` (App. C Tables 6-9, Fig. 5).

Default suite: the helpers (part parsing, the alpha-mixed init wrapper, LMS-7 with a moved linear
coordinate) and the smoke preset's Table 7 part end to end. Slow: every part of the smoke preset,
and the quick preset.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import robustness_of_sb as R
from experiments.common import parse_parts
from experiments.evaluation import eval_keys, split_by_grid, sweep_eval_keys
from experiments.synthetic import train_config
from sbjax.data import make_dataset
from sbjax.models import make_model
from tests.helpers import assert_figure

ROOT = Path(__file__).resolve().parent.parent

HEADLINE = (
    "train_acc",
    "test_acc",
    "test_auc",
    "s_rand_acc",
    "s_rand_auc",
    "sc_rand_acc",
    "sc_rand_auc",
)


def test_parse_parts():
    assert parse_parts("all", R.PARTS) == list(R.PARTS)
    assert parse_parts("init, activations", R.PARTS) == ["activations", "init"]
    for bad in ("nope", "", "init,foo"):
        with pytest.raises(ValueError, match="parts"):
            parse_parts(bad, R.PARTS)


def test_mixed_init_model_interpolates_weights():
    model = make_model({"name": "fcn", "width": 8, "depth": 2})
    x = jax.numpy.zeros((1, 5))
    slab = model.init(jax.random.key(1), x)
    k = jax.random.key(2)
    rand = model.init(k, x)
    for alpha in (0.0, 0.3, 1.0):
        mixed = R.mixed_init_model(model, slab, alpha, tag="t")
        got = mixed.init(k, x)
        want = jax.tree_util.tree_map(lambda s, r, a=alpha: a * s + (1 - a) * r, slab, rand)
        jax.tree_util.tree_map(
            lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7), got, want
        )
        assert mixed.apply is model.apply and mixed.logits is model.logits
        assert f"alpha_mix={alpha!r}" in mixed.config and "slab=t" in mixed.config
    # alpha = 1 starts exactly at M_slab whatever the key; different keys differ below 1.
    one = R.mixed_init_model(model, slab, 1.0, tag="t")
    a, b = one.init(jax.random.key(5), x), one.init(jax.random.key(6), x)
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    half = R.mixed_init_model(model, slab, 0.5, tag="t")
    a, b = half.init(jax.random.key(5), x), half.init(jax.random.key(6), x)
    assert not np.allclose(a["params"]["hidden_0"]["kernel"], b["params"]["hidden_0"]["kernel"])
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="alpha"):
            R.mixed_init_model(model, slab, bad, tag="t")


def test_lms7_with_linear_at_moves_the_linear_coordinate():
    ds_lms = make_dataset("lms", k=7, d=12)
    ds_ms = make_dataset("ms", k=7, d=12)
    np.testing.assert_array_equal(ds_lms.rotation, ds_ms.rotation)
    x, y = R.lms7_with_linear_at(ds_lms, ds_ms, jax.random.key(0), 4000, coord=5)
    assert x.shape == (4000, 12) and y.shape == (4000,)
    z = np.asarray(ds_ms.to_canonical(x))
    sign = 2 * y - 1
    # Coordinate 5 is now the linear feature: its sign is the label, with margin 0.1.
    assert np.all(sign * z[:, 5] >= 0.1 - 1e-5)
    # No other coordinate is linearly separable (they are 7-slabs, coordinate 0 included).
    for c in (0, 1, 11):
        assert np.mean(sign * z[:, c] > 0) < 0.8


def test_smoke_regularization_end_to_end(tmp_path):
    out = tmp_path / "run"
    # --set end to end: Table 7's dropout rates from the command line.
    summary = R.main(
        [
            "--preset",
            "smoke",
            "--parts",
            "regularization",
            "--out",
            str(out),
            "--no-progress",
            "--set",
            "table7.dropouts=[0.0, 0.05]",
        ]
    )
    for name in (
        "config.json",
        "env.json",
        "summary.json",
        "metrics.csv",
        "tables6to9_randomized_auc.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert_figure(out / "tables6to9_randomized_auc.png")
    assert (out / "params" / "t7_lms7_fcn_100x1.npz").is_file()
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["experiment"] == "robustness_of_sb" and on_disk["parts"] == ["regularization"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["overrides"] == ["table7.dropouts=[0.0, 0.05]"]
    assert cfg["preset_config"]["table7"]["dropouts"] == [0.0, 0.05]
    recs = summary["results"]
    p = R.PRESETS["smoke"]
    dropouts = (0.0, 0.05)
    assert len(recs) == len(dropouts) * len(p.table7.l2)
    assert sorted((round(r["dropout"], 6), r["weight_decay"]) for r in recs) == sorted(
        (d, float(w)) for d in dropouts for w in p.table7.l2
    )
    for r in recs:
        assert r["part"] == "table7" and r["dataset"] == "lms7" and r["model"] == "fcn_100x1"
        assert r["paper"] == {"s_rand_auc": 0.5, "sc_rand_auc": 1.0, "test_auc": 1.0}
        assert r["paper_source"].startswith("Table 7") and "dropout" in r["expect"]
        # LMS-7 converges within the smoke budget: every seed is used.
        assert r["n_total"] == r["n_seeds"] == p.n_seeds and r["n_failed"] == 0
        assert r["seed_status"] == ["ok"] * p.n_seeds
        for k in HEADLINE:
            assert {"mean", "std", "n", "per_seed"} <= set(r["metrics"][k])
            assert len(r["metrics"][k]["per_seed"]) == p.n_seeds
        assert r["metrics"]["s_rand_auc"]["sampling_se"] > 0
        m = {k: np.asarray(v["per_seed"]) for k, v in r["metrics"].items()}
        # Extreme SB at tiny size: the linear coordinate alone (1000 test points: SE ~0.018).
        assert np.all(m["test_auc"] > 0.98)
        assert np.all(np.abs(m["sc_rand_auc"] - m["test_auc"]) < 0.02)
        assert np.all(np.abs(m["s_rand_auc"] - 0.5) < 0.08)
    # Labels tell the cells apart (the log lines and the closing table).
    assert len({r["expect"] for r in recs}) == len(recs)
    redo = subprocess.run(
        [sys.executable, "-m", "sbjax.plots", str(out), "--out", str(tmp_path / "redraw")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert redo.returncode == 0, redo.stderr
    name = "tables6to9_randomized_auc.png"
    assert (tmp_path / "redraw" / name).read_bytes() == (out / name).read_bytes()


@pytest.mark.parametrize(
    "item,match",
    [
        ("table9.inits=['he']", "table9.inits"),
        ("table8.dims=[[5, 7]]", "table8.dims"),
        ("fig5.alphas=[1.5]", "fig5.alphas"),
        ("train.batch_size=0", "train.batch_size"),
        ("table6.optimizers=['lbfgs']", "table6.optimizers"),
    ],
)
def test_bad_preset_values_fail_before_any_work(tmp_path, item, match):
    with pytest.raises(ValueError, match=match):
        R.main(["--preset", "smoke", "--out", str(tmp_path / "run"), "--set", item])
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_smoke_all_parts(tmp_path):
    out = tmp_path / "run"
    summary = R.main(["--preset", "smoke", "--out", str(out), "--no-progress"])
    parts = {r["part"] for r in summary["results"]}
    assert parts == {"table6", "table7", "table8", "table9", "fig5"}
    for name in ("tables6to9_randomized_auc.png", "fig5_complex_first_init.png"):
        assert_figure(out / name)
    t8 = [r for r in summary["results"] if r["part"] == "table8"]
    assert [(r["d"], r["n_complex"]) for r in t8] == [
        tuple(v) for v in R.PRESETS["smoke"].table8.dims
    ]
    cf = summary["complex_first"]
    assert 0 <= cf["linear_coord"] < 50 and len(cf["coord_auc"]) == 50
    f5 = [r for r in summary["results"] if r["part"] == "fig5" and r["role"] == "m_alpha"]
    assert [r["alpha"] for r in f5] == list(R.PRESETS["smoke"].fig5.alphas)
    assert all("init_ms7_acc" in r["metrics"] for r in f5)


@pytest.mark.slow
def test_quick_preset(tmp_path):
    out = tmp_path / "run"
    summary = R.main(["--preset", "quick", "--out", str(out), "--no-progress"])
    t6 = [r for r in summary["results"] if r["part"] == "table6"]
    assert len(t6) == 12
    for r in t6 + [r for r in summary["results"] if r["part"] in ("table7", "table8")]:
        assert abs(r["metrics"]["s_rand_auc"]["mean"] - 0.5) < 0.05
        assert r["metrics"]["sc_rand_auc"]["mean"] > 0.98
    slab = [r for r in summary["results"] if r.get("role") == "m_slab"]
    assert max(slab[0]["metrics"]["test_acc"]["per_seed"]) > 0.99
    assert summary["complex_first"]["m_slab_status"] == "ok"


# ------------------------------------------------------------------------------------------------
# Per-model evaluation keys and failed models.


def test_eval_keys_differ_between_cells_grid_points_and_seeds():
    from types import SimpleNamespace

    data = lambda k: [tuple(v) for v in np.asarray(jax.random.key_data(k))]  # noqa: E731
    one = SimpleNamespace(
        seed_index=np.array([0, 1, 2]), grid_index=np.zeros(3, int), grid_points=[{}]
    )
    # Table 6: every cell (sweep) its own keys, every seed its own key.
    cells = [
        data(sweep_eval_keys(0, f"t6_lms7_{a}_{o}", one))
        for a in ("relu", "tanh")
        for o in ("sgd", "adam")
    ]
    flat = [k for c in cells for k in c]
    assert len(set(flat)) == len(flat) == 12
    # A traced grid: each grid point is a cell of its own; seed s of a cell keeps its key.
    grid = SimpleNamespace(
        seed_index=np.array([0, 0, 1, 1]),
        grid_index=np.array([0, 1, 0, 1]),
        grid_points=[{"init_scale": 0.5}, {"init_scale": 2.0}],
    )
    g = data(sweep_eval_keys(0, "t9_lms7_xavier", grid))
    assert len(set(g)) == 4
    assert g[2] == data(eval_keys(0, "t9_lms7_xavier/init_scale=0.5", [1]))[0]


def test_m_slab_is_never_a_diverged_model():
    acc = [0.6, 1.0, 0.9, 0.95]
    assert R.select_m_slab(acc, ["ok", "diverged", "ok", "unconverged_used"]) == (2, "ok")
    # No seed converged: the best of those that only ran out of budget, never the diverged one.
    assert R.select_m_slab(acc, ["unconverged_used", "diverged", "unconverged", "diverged"]) == (
        2,
        "unconverged",
    )
    assert R.select_m_slab(acc, ["diverged"] * 4) == (None, None)


def test_a_learning_rate_that_diverges_is_excluded_and_counted(tmp_path):
    """A real sweep whose grid holds a learning rate that diverges on purpose (lr = 1e4)."""
    from experiments.common import make_parser, run_sweep, start_run

    p = R.PRESETS["smoke"]
    args = make_parser(R.NAME, None, R.PRESETS, preset_help=R.PRESET_HELP).parse_args(
        ["--preset", "smoke", "--out", str(tmp_path / "run"), "--no-progress"]
    )
    run = start_run(R.NAME, args, p)
    ds = R._dataset(p, "lms7")
    train, test = R._data(run, p, ds, tag=70)
    model = make_model({"name": "fcn", "width": 100, "depth": 1})
    r = run_sweep(
        run, "lr_grid", train_config(p.train), model, train, test, grid={"lr": [0.1, 1e4]}
    )
    lr = np.asarray(r.hparams["lr"])
    assert [s for s, v in zip(r.stop_reason, lr, strict=True) if v > 1] == ["diverged"] * 2
    assert [s for s, v in zip(r.stop_reason, lr, strict=True) if v < 1] == ["converged"] * 2
    met = R.cell_metrics(run, "lr_grid", r, model, r.params, ds, train, test)
    # The trap: a diverged model's accuracy is finite (argmax of NaN logits is class 0).
    assert np.all(np.isfinite(met["test_acc"]))
    recs = [
        R.record(run, "lr", "lms7", "fcn_100x1", m, r, test, mask, lr=pt["lr"])
        for (m, mask), pt in zip(split_by_grid(r, met), r.grid_points, strict=True)
    ]
    good, bad = recs
    assert good["n_seeds"] == 2 and good["n_diverged"] == 0 and "status" not in good
    assert bad["status"] == "all models failed" and bad["n_seeds"] == 0
    assert bad["n_diverged"] == 2 and bad["seed_status"] == ["diverged", "diverged"]
    assert all(v["mean"] is None and v["std"] is None for v in bad["metrics"].values())
    # A record mixing seed 0 at lr 0.1 and seed 1 at lr 1e4: the diverged seed is marked and
    # every mean is the non-diverged seed's value, accuracies and AUCs alike.
    mask = ((r.grid_index == 0) & (r.seed_index == 0)) | ((r.grid_index == 1) & (r.seed_index == 1))
    mixed = R.record(
        run, "lr", "lms7", "fcn_100x1", {k: v[mask] for k, v in met.items()}, r, test, mask
    )
    assert mixed["seed_status"] == ["ok", "diverged"]
    assert mixed["n_seeds"] == 1 and mixed["n_diverged"] == 1 and mixed["n_failed"] == 1
    for name, st in mixed["metrics"].items():
        assert st["n"] == 1 and st["std"] is None, name
        assert st["mean"] == pytest.approx(st["per_seed"][0]), name
    assert mixed["metrics"]["test_acc"]["mean"] == pytest.approx(
        good["metrics"]["test_acc"]["per_seed"][0]
    )
    # The figure copes with an all-failed cell and a one-seed cell.
    R.make_figures(
        run,
        [
            dict(rec, part="table9", init="xavier", init_scale=rec["lr"])
            for rec in (good, bad, dict(mixed, lr=3.0))
        ],
        None,
    )
    assert run.figures == ["tables6to9_randomized_auc.png"]
    assert_figure(run.out / "tables6to9_randomized_auc.png")


@pytest.mark.parametrize(
    "item",
    [
        "train.lr=0.05",
        "table6.optimizers=['adam']",
        "table7.dropouts=[0.0,0.05]",
        "table9.scales=[0.5,2.0]",
        "fig5.alphas=[0.0,1.0]",
        "fig5.slab_train.max_steps=40000",
    ],
)
def test_documented_overrides_fit_every_preset(item):
    """The --set examples of the docstring / README are valid on every preset."""
    from experiments.common import apply_overrides

    for name, preset in R.PRESETS.items():
        new = apply_overrides(preset, [item])
        R.check_preset(new)
        assert new != preset or name, name
