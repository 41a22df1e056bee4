"""End-to-end tests of `python -m experiments.uaps` (smoke preset by default, quick = slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import uaps as U
from tests.helpers import assert_figure

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("fig4_svd_uap_lms5.png", "fig4_as_uap_lms5.png", "uap_transfer_lms5.png")

HEADLINE = (
    "test_acc",
    "train_acc",
    "pgd_acc",
    "pgd_frac_on_s",
    "uap_acc",
    "uap_frac_on_s",
    "as_uap_acc",
    "as_uap_frac_on_s",
)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("uaps") / "run"
    # --set end to end: AS-UAP batches of 128 instead of nb06's 256.
    summary = U.main(
        [
            "--preset",
            "smoke",
            "--out",
            str(out),
            "--no-progress",
            "--set",
            "attacks.lms5.as_batch=128",
        ]
    )
    return out, summary


def test_smoke_files_and_schema(smoke):
    out, summary = smoke
    for name in ("config.json", "env.json", "summary.json", "metrics.csv", *FIGURES):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for name in FIGURES:
        assert_figure(out / name, min_width=250, min_height=150)
    assert sorted(summary["figures"]) == sorted(FIGURES)
    assert (out / "params" / "lms5_fcn_200x1.npz").is_file()
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["experiment"] == "uaps"
    (rec,) = summary["results"]
    assert rec["dataset"] == "lms5" and rec["model"] == "fcn_200x1" and rec["n_total"] == 2
    # nb06's stop rule is required; the smoke budget lets both seeds meet it.
    assert U.REQUIRE_CONVERGED
    assert rec["n_seeds"] == 2 and rec["seed_status"] == ["ok", "ok"] and "status" not in rec
    for key in HEADLINE:
        assert {"mean", "std", "n", "per_seed"} <= set(rec["metrics"][key])
        assert len(rec["metrics"][key]["per_seed"]) == 2
    assert rec["metrics"]["uap_acc"]["sampling_se"] > 0
    tr = summary["transfer"]["lms5"]
    assert tr["archs"] == ["fcn_200x1"] and np.shape(tr["per_model"]) == (2, 2)
    assert tr["used"] == {"fcn_200x1": [True, True]}
    assert tr["mean"][0][0] == pytest.approx(np.mean(tr["per_model"]))
    assert summary["uap_heatmap_seed"] == {"lms5": {"fcn_200x1": 0}}
    b = summary["bounds"]["lms5"]
    assert b["lo"] < 0 < b["hi"] and b["drange"] == pytest.approx(b["hi"] - b["lo"])


def test_smoke_effect(smoke):
    _, summary = smoke
    m = {k: np.asarray(v["per_seed"]) for k, v in summary["results"][0]["metrics"].items()}
    assert np.all(m["test_acc"] > 0.98)
    # Instance-specific PGD with eps = 0.5 drange breaks every point, and spends its budget on S.
    assert np.all(m["pgd_acc"] < 0.05)
    assert np.all(m["pgd_frac_on_s"] > 0.9)
    # The SVD-UAP of norm 1 on a d = 50 input lies along S and nullifies the model.
    assert np.all(m["uap_acc"] < 0.2)
    assert np.all(m["uap_frac_on_s"] > 0.95)
    # UAPs respect their L2 budget: the fraction on S is a |cosine|.
    assert np.all((m["as_uap_frac_on_s"] >= 0) & (m["as_uap_frac_on_s"] <= 1 + 1e-6))
    # The transfer matrix's diagonal blocks hold each model under its own UAP.
    per = np.asarray(summary["transfer"]["lms5"]["per_model"])
    np.testing.assert_allclose(np.diag(per), m["uap_acc"], atol=1e-6)


@pytest.mark.slow
def test_quick_preset(tmp_path):
    summary = U.main(["--preset", "quick", "--out", str(tmp_path / "quick"), "--no-progress"])
    for rec in summary["results"]:
        m = {k: v["mean"] for k, v in rec["metrics"].items()}
        assert m["test_acc"] > 0.98, rec["model"]
        assert m["pgd_acc"] < 0.05 and m["pgd_frac_on_s"] > 0.95, rec["model"]
        assert m["uap_acc"] < 0.15 and m["uap_frac_on_s"] > 0.95, rec["model"]
    for tr in summary["transfer"].values():
        assert max(v for row in tr["mean"] for v in row if v is not None) < 0.3


def test_transfer_matrix_means_skip_failed_models():
    """A failed model's UAP and its accuracy never enter the transfer means."""
    import jax

    from sbjax.models import make_model

    model = make_model({"name": "fcn", "width": 8, "depth": 1})
    x = jax.random.normal(jax.random.key(0), (64, 5))
    y = (x[:, 0] > 0).astype(np.int32)
    params = jax.vmap(lambda k: model.init(k, x[:1]))(jax.random.split(jax.random.key(1), 3))
    uaps = np.asarray(jax.random.normal(jax.random.key(2), (3, 5)))
    stacks = {"a": (model, params)}
    full = U.transfer_matrix(stacks, {"a": uaps}, (x, y), (-5.0, 5.0))
    per = np.asarray(full["per_model"])
    assert full["mean"][0][0] == pytest.approx(per.mean())
    part = U.transfer_matrix(
        stacks, {"a": uaps}, (x, y), (-5.0, 5.0), used={"a": np.array([True, False, True])}
    )
    keep = [0, 2]
    assert part["mean"][0][0] == pytest.approx(per[np.ix_(keep, keep)].mean())
    assert part["same_seed"][0][0] == pytest.approx(np.mean([per[0, 0], per[2, 2]]))
    none = U.transfer_matrix(
        stacks, {"a": uaps}, (x, y), (-5.0, 5.0), used={"a": np.zeros(3, bool)}
    )
    assert none["mean"] == [[None]] and none["same_seed"] == [[None]]


def test_set_override_lands_in_config(smoke):
    out, summary = smoke
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["overrides"] == ["attacks.lms5.as_batch=128"]
    assert cfg["preset_config"]["attacks"]["lms5"]["as_batch"] == 128
    assert cfg["preset_config"]["attacks"]["ms57"]["as_batch"] == 256
    (rec,) = summary["results"]
    assert rec["part"] == "fig4" and "PGD" in rec["expect"]
    # Fig. 4's share on S and nb06's (200,1)-FCN values, cited.
    assert rec["paper"]["uap_frac_on_s"] == 0.996 and rec["paper"]["pgd_frac_on_s"] == 0.99732
    assert "Fig. 4" in rec["paper_source"] and "nb06" in rec["paper_source"]


@pytest.mark.parametrize(
    "item,match",
    [
        ("attacks.lms5.pgd_steps=0", "attacks.lms5.pgd_steps"),
        ("stop_rule.lms5=nope", "stop_rule.lms5"),
        ("models=['fcn_100x1']", "models"),
        ("train.momentum=1.5", "train.momentum"),
    ],
)
def test_bad_preset_values_fail_before_any_work(tmp_path, item, match):
    with pytest.raises(ValueError, match=match):
        U.main(["--preset", "smoke", "--out", str(tmp_path / "run"), "--set", item])
    assert not (tmp_path / "run").exists()


def test_figures_are_redrawn_from_the_run(smoke, tmp_path):
    out, _ = smoke
    redo = subprocess.run(
        [sys.executable, "-m", "sbjax.plots", str(out), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert redo.returncode == 0, redo.stderr
    for name in FIGURES:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


@pytest.mark.parametrize(
    "item",
    [
        "train.lr=0.05",
        "max_steps.lms5=5000",
        "attacks.lms5.pgd_steps=40",
        "n_test.ms57=5000",
        "stop_eps.ms57=0.005",
    ],
)
def test_documented_overrides_fit_every_preset(item):
    """The --set examples of the docstring / README are valid on every preset."""
    from experiments.common import apply_overrides

    for name, preset in U.PRESETS.items():
        new = apply_overrides(preset, [item])
        U.check_preset(new)
        assert new != preset or name, name
