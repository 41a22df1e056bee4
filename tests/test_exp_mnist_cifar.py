"""experiments.mnist_cifar end to end on tiny data written in the real MNIST / CIFAR-10 formats
(so the file readers, pairing, BatchNorm training, randomized sets, ensembles, adversarial training
and UAPs all run), and on the real subset when it is present."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import mnist_cifar
from sbjax.data.mnist_cifar import default_subset_dir
from tests.helpers import assert_figure, imported_modules
from tests.test_mnist_cifar import write_fixture

ROOT = Path(__file__).resolve().parent.parent
HEADLINE = {"test_acc", "test_auc", "s_rand_auc", "sc_rand_auc"}


def _summary(out: Path) -> dict:
    for f in ("config.json", "env.json", "summary.json", "metrics.csv"):
        assert (out / f).exists(), f
    return json.loads((out / "summary.json").read_text())


def test_smoke_standard_and_uap_on_real_format_files(tmp_path):
    data_dir = write_fixture(tmp_path / "data")
    out = tmp_path / "run"
    argv = [
        "--preset",
        "smoke",
        "--out",
        str(out),
        "--source",
        "files",
        "--data-dir",
        str(data_dir),
        "--parts",
        "standard,uap",
        "--no-progress",
        "--set",
        "uap_steps=2",
    ]
    s = mnist_cifar.main(argv)
    assert s == _summary(out)
    config = json.loads((out / "config.json").read_text())
    assert config["overrides"] == ["uap_steps=2"] and config["preset_config"]["uap_steps"] == 2
    assert config["preset_config"]["source"] == "files"  # the --source shortcut
    std = [
        r for r in s["results"] if r.get("training") == "standard" and "test_auc" in r["metrics"]
    ]
    assert std and HEADLINE <= set(std[0]["metrics"])
    assert std[0]["dataset"] == "mnist_cifar_a" and std[0]["model"] == "small_cnn_4"
    # Smoke requires no convergence (20 updates: plumbing); its budget-limited model is used and
    # counted. Every record carries the seed accounting and the test set's sampling error.
    for r in s["results"]:
        assert r["n_total"] == 1 and r["n_diverged"] == 0 and len(r["seed_status"]) == 1
        assert r["n_seeds"] == 1 and r["seed_status"][0] in ("ok", "unconverged_used")
    assert "sampling_se" in std[0]["metrics"]["test_auc"]
    assert s["stop_reason"]["small_cnn_4_standard"][0] in ("converged", "max_steps")
    # BatchNorm follows the reference's (PyTorch's) unbiased running variance.
    assert json.loads((out / "config.json").read_text())["preset_config"]["bn_unbiased"] is True
    uap = [r for r in s["results"] if "uap_frac_on_s" in r["metrics"]][0]["metrics"]
    # A norm share strictly inside (0, 1): the UAP touches both blocks; the mean is its seeds'.
    frac = uap["uap_frac_on_s"]
    assert 0.0 < frac["mean"] < 1.0 and frac["mean"] == pytest.approx(np.mean(frac["per_seed"]))
    assert [r["part"] for r in s["results"]] == ["standard", "uap"]
    assert all(r["expect"] == mnist_cifar.EXPECT[r["part"]] for r in s["results"])
    pngs = ["fig3a_logits_small_cnn_4.png", "fig4_uap_small_cnn_4.png"]
    assert sorted(s["figures"]) == pngs and sorted(p.name for p in out.glob("*.png")) == pngs
    for png in pngs:
        assert_figure(out / png)
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
    assert sorted(p.name for p in redrawn.glob("*.png")) == pngs
    for png in pngs:
        assert_figure(redrawn / png)
        assert (redrawn / png).read_bytes() == (out / png).read_bytes(), png
    # Resuming a finished run reproduces the same numbers from the checkpoints.
    s2 = mnist_cifar.main([*argv, "--resume"])
    assert s2["results"] == s["results"]


def test_experiment_imports_no_matplotlib_and_no_other_experiment():
    names = imported_modules(ROOT / "experiments" / "mnist_cifar.py")
    assert not [m for m in names if m.split(".")[0] == "matplotlib"], names
    assert {m for m in names if m.startswith("experiments")} <= {"experiments.common"}, names


@pytest.mark.parametrize(
    "args,match",
    [
        (["--set", "version=D"], "^version='D'"),
        (["--set", "max_steps=0"], "^max_steps=0"),
        (["--set", "models=('small_cnn', 'vgg')"], "^models='vgg'"),
        (["--set", "adv_lr_boundaries=(30, 10)"], "^adv_lr_boundaries="),
        (["--models", "vgg"], "^models='vgg'"),
        (["--set", "lrr=0.1"], "'lrr' is not a preset key"),
    ],
)
def test_bad_settings_fail_before_any_work(tmp_path, args, match):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        mnist_cifar.main(["--preset", "smoke", "--out", str(out), *args])
    assert not out.exists()


def test_paper_values_per_part_architecture_and_version():
    pv = mnist_cifar.paper_values
    assert pv("standard", "resnet50", "A") == {
        "test_auc": 1.0,
        "s_rand_auc": 0.50,
        "sc_rand_auc": 1.0,
        "test_acc": 1.0,
    }
    assert pv("standard", "densenet121", "C")["s_rand_auc"] == 0.54
    assert pv("standard", "small_cnn", "A") == {}
    assert pv("adversarial", "mobilenetv2", "A") == {"test_acc": 0.999, "robust_acc": 0.991}
    assert pv("cifar_only", "googlenet", "A") == {"test_acc": 0.954}
    assert pv("cifar_only", "googlenet", "B") == {}
    assert pv("uap", "densenet121", "A") == {"uap_frac_on_s": 0.993}


def test_presets_follow_the_reference_bn_and_convergence_rules():
    for name, p in mnist_cifar.PRESETS.items():
        mnist_cifar.check_preset(p)
        assert p.bn_unbiased is True, name
        for arch in p.models:
            assert mnist_cifar._make_model(arch, p).config.bn_unbiased is True, (name, arch)
        assert p.require_converged is (name != "smoke"), name
    req = mnist_cifar.REQUIRE_CONVERGED
    assert set(req) == set(mnist_cifar.PARTS)
    assert req["standard"] and req["ensemble"] and req["uap"] == req["standard"]
    assert not req["adversarial"] and not req["cifar_only"]


def test_unconverged_standard_models_are_failed_where_convergence_is_required(tmp_path):
    """The quick / paper rule on smoke sizes (--set require_converged=True): 20 updates do not
    reach train loss < 0.01, so the standard record excludes the model, counts it and says that
    all models failed."""
    data_dir = write_fixture(tmp_path / "data")
    out = tmp_path / "run"
    s = mnist_cifar.main(
        [
            "--preset",
            "smoke",
            "--out",
            str(out),
            "--source",
            "files",
            "--data-dir",
            str(data_dir),
            "--parts",
            "standard",
            "--no-progress",
            "--set",
            "require_converged=True",
        ]
    )
    assert json.loads((out / "config.json").read_text())["preset_config"]["require_converged"]
    (r,) = s["results"]
    assert s["stop_reason"]["small_cnn_4_standard"] == ["max_steps"]
    assert r["seed_status"] == ["unconverged"] and r["n_unconverged"] == 1
    assert r["n_seeds"] == 0 and r["status"] == "all models failed"
    assert all(st["mean"] is None for st in r["metrics"].values())
    assert not (out / "fig3a_logits_small_cnn_4.png").exists()  # no single-model figure of it


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
    s = mnist_cifar.main(
        [
            "--preset",
            "smoke",
            "--out",
            str(tmp_path / "run"),
            "--source",
            "files",
            "--data-dir",
            str(data_dir),
            "--no-progress",
        ]
    )
    names = {k for r in s["results"] for k in r["metrics"]}
    assert {"robust_acc", "ensemble_test_acc", "uap_frac_on_s"} <= names
    assert all(r["n_seeds"] == r["n_total"] - r["n_failed"] for r in s["results"])
    ens = [r for r in s["results"] if "ensemble_test_acc" in r["metrics"]][0]
    assert len(ens["seed_status"]) == 1  # one status per ensemble, not per member
    assert len(s["stop_reason"]["small_cnn_4_ensemble"]) == mnist_cifar.PRESETS["smoke"].n_members
    assert any(r["dataset"] == "cifar_a_only" for r in s["results"])


@pytest.mark.slow
@pytest.mark.skipif(
    not (default_subset_dir() / "mnist01.npz").exists(),
    reason="the real MNIST-CIFAR subset (../shared/data) is not present",
)
def test_quick_preset_shows_extreme_sb_on_the_real_subset(tmp_path):
    s = mnist_cifar.main(
        [
            "--preset",
            "quick",
            "--out",
            str(tmp_path / "run"),
            "--parts",
            "standard",
            "--no-progress",
        ]
    )
    m = s["results"][0]["metrics"]
    assert m["test_auc"]["mean"] > 0.95
    assert abs(m["s_rand_auc"]["mean"] - 0.5) < 0.1
    assert m["sc_rand_auc"]["mean"] > 0.95
    assert np.isfinite(m["train_acc"]["mean"])
