"""experiments.mnist_cifar end to end on tiny data written in the real MNIST / CIFAR-10 formats
(so the file readers, pairing, BatchNorm training, randomized sets, ensembles, adversarial training
and UAPs all run), and on the real subset when it is present."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from experiments import mnist_cifar
from sbjax.data.mnist_cifar import default_subset_dir
from tests.test_mnist_cifar import write_fixture

HEADLINE = {"test_acc", "test_auc", "s_rand_auc", "sc_rand_auc"}


def _summary(out: Path) -> dict:
    for f in ("config.json", "env.json", "summary.json", "metrics.csv"):
        assert (out / f).exists(), f
    return json.loads((out / "summary.json").read_text())


def test_smoke_standard_and_uap_on_real_format_files(tmp_path):
    data_dir = write_fixture(tmp_path / "data")
    out = tmp_path / "run"
    s = mnist_cifar.main(["--preset", "smoke", "--out", str(out), "--source", "files",
                          "--data-dir", str(data_dir), "--parts", "standard,uap",
                          "--no-progress"])
    assert s == _summary(out)
    std = [r for r in s["results"] if r.get("training") == "standard" and "test_auc" in r["metrics"]]
    assert std and HEADLINE <= set(std[0]["metrics"])
    assert std[0]["dataset"] == "mnist_cifar_a" and std[0]["model"] == "small_cnn_4"
    uap = [r for r in s["results"] if "uap_frac_on_s" in r["metrics"]][0]["metrics"]
    assert 0.0 <= uap["uap_frac_on_s"]["mean"] <= 1.0
    assert (out / "fig3a_logits_small_cnn_4.png").stat().st_size > 0
    assert (out / "fig4_uap_small_cnn_4.png").stat().st_size > 0
    # Resuming a finished run reproduces the same numbers from the checkpoints.
    s2 = mnist_cifar.main(["--preset", "smoke", "--out", str(out), "--source", "files",
                           "--data-dir", str(data_dir), "--parts", "standard,uap",
                           "--no-progress", "--resume"])
    assert s2["results"] == s["results"]


def test_existing_run_folder_is_not_overwritten(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        mnist_cifar.main(["--preset", "smoke", "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit):
        mnist_cifar.main(["--parts", "bogus", "--out", str(tmp_path / "other")])


@pytest.mark.slow
def test_smoke_all_parts(tmp_path):
    data_dir = write_fixture(tmp_path / "data")
    s = mnist_cifar.main(["--preset", "smoke", "--out", str(tmp_path / "run"), "--source",
                          "files", "--data-dir", str(data_dir), "--no-progress"])
    names = {k for r in s["results"] for k in r["metrics"]}
    assert {"robust_acc", "ensemble_test_acc", "uap_frac_on_s"} <= names
    assert any(r["dataset"] == "cifar_a_only" for r in s["results"])


@pytest.mark.slow
@pytest.mark.skipif(not (default_subset_dir() / "mnist01.npz").exists(),
                    reason="the real MNIST-CIFAR subset (../shared/data) is not present")
def test_quick_preset_shows_extreme_sb_on_the_real_subset(tmp_path):
    s = mnist_cifar.main(["--preset", "quick", "--out", str(tmp_path / "run"),
                          "--parts", "standard", "--no-progress"])
    m = s["results"][0]["metrics"]
    assert m["test_auc"]["mean"] > 0.95
    assert abs(m["s_rand_auc"]["mean"] - 0.5) < 0.1
    assert m["sc_rand_auc"]["mean"] > 0.95
    assert np.isfinite(m["train_acc"]["mean"])
