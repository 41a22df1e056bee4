"""End-to-end tests of `python -m experiments.uaps` (smoke preset by default, quick = slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import uaps as U

HEADLINE = ("test_acc", "train_acc", "pgd_acc", "pgd_frac_on_s", "uap_acc", "uap_frac_on_s",
            "as_uap_acc", "as_uap_frac_on_s")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("uaps") / "run"
    summary = U.main(["--preset", "smoke", "--out", str(out), "--no-progress"])
    return out, summary


def test_smoke_files_and_schema(smoke):
    out, summary = smoke
    for name in ("config.json", "env.json", "summary.json", "metrics.csv",
                 "fig4_svd_uap_lms5.png", "fig4_as_uap_lms5.png", "uap_transfer_lms5.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "params" / "lms5_fcn_200x1.npz").is_file()
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["experiment"] == "uaps"
    (rec,) = summary["results"]
    assert rec["dataset"] == "lms5" and rec["model"] == "fcn_200x1" and rec["n_seeds"] == 2
    for key in HEADLINE:
        assert set(rec["metrics"][key]) == {"mean", "std", "per_seed"}
        assert len(rec["metrics"][key]["per_seed"]) == 2
    tr = summary["transfer"]["lms5"]
    assert tr["archs"] == ["fcn_200x1"] and np.shape(tr["per_model"]) == (2, 2)
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
        assert np.max(tr["mean"]) < 0.3
