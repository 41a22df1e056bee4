"""The dataset preview `python -m experiments.show_data` (Fig. 2 style figure + blocks.json)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import show_data
from tests.helpers import assert_figure, imported_modules

ROOT = Path(__file__).resolve().parent.parent

ARGS = ["--n", "4000", "--n-scatter", "300", "--d", "6"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("show") / "run"
    out.mkdir()
    # --overwrite replaces an earlier show_data run folder (its config.json is the run marker);
    # a file sbjax did not write (stale.txt) is kept: only recorded outputs are replaced.
    (out / "config.json").write_text(json.dumps({"experiment": "show_data"}))
    (out / "stale.txt").write_text("old")
    stats = show_data.main(["--out", str(out), "--overwrite", *ARGS])
    return out, stats


def test_writes_files(run):
    import jax

    out, stats = run
    assert sorted(p.name for p in out.iterdir()) == [
        "blocks.json",
        "config.json",
        "data_preview.png",
        "env.json",
        "figures",
        "sbjax_files.json",
        "stale.txt",
    ]
    assert (out / "stale.txt").read_text() == "old"
    assert sorted(p.name for p in (out / "figures").iterdir()) == [
        "data_preview.json",
        "data_preview.npz",
    ]
    assert_figure(out / "data_preview.png", min_width=1200, min_height=500)
    assert json.loads((out / "blocks.json").read_text()) == json.loads(json.dumps(stats))
    config = json.loads((out / "config.json").read_text())
    assert (config["experiment"], config["n"], config["d"]) == ("show_data", 4000, 6)
    env = json.loads((out / "env.json").read_text())
    assert env["jax"] == jax.__version__ and env["devices"] == [str(d) for d in jax.devices()]


def test_the_preview_is_redrawn_from_the_run_folder(run, tmp_path):
    out, _ = run
    r = subprocess.run(
        [sys.executable, "-m", "sbjax.plots", str(out), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["data_preview.png"]
    assert (tmp_path / "data_preview.png").read_bytes() == (out / "data_preview.png").read_bytes()


def test_imports_no_matplotlib_and_no_other_experiment():
    names = imported_modules(ROOT / "experiments" / "show_data.py")
    assert not [m for m in names if m.split(".")[0] == "matplotlib"], names
    assert {m for m in names if m.startswith("experiments")} <= {"experiments.common"}, names


def test_block_statistics(run):
    _, stats = run
    blocks = stats["blocks"]
    assert list(blocks) == ["linear", "noisy_linear", "slab3", "slab5", "slab7"]
    for name, st in blocks.items():
        assert st["n"] == 4000 and abs(st["class_balance"] - 0.5) < 0.04
        assert st["n_outside_supports"] == 0, name
        for sup in st["supports"]:
            assert sup["n_hit"] > 0, (name, sup)
            assert sup["lo"] - 1e-6 <= sup["emp_min"] <= sup["emp_max"] <= sup["hi"] + 1e-6
            assert abs(sup["fraction_of_class"] - sup["prob"]) < 0.05, (name, sup)
    for name in ("linear", "slab3", "slab5", "slab7"):
        assert blocks[name]["bayes_accuracy"] == 1.0
    assert abs(blocks["noisy_linear"]["bayes_accuracy"] - 0.95) < 0.015
    for name in ("slab5", "slab7"):
        for c in ("0", "1"):
            assert abs(blocks[name]["classes"][c]["E_x2"] - 0.198) < 0.02
    assert [len(blocks[f"slab{k}"]["supports"]) for k in (3, 5, 7)] == [3, 5, 7]


def test_dataset_statistics(run):
    _, stats = run
    ds = stats["datasets"]
    assert list(ds) == ["LMS-5", "noisy LMS-5 (p=0.1)", "MS-(5,7)"]
    assert ds["LMS-5"]["S_rule_accuracy"] == 1.0 and ds["MS-(5,7)"]["S_rule_accuracy"] == 1.0
    assert 0.9 < ds["noisy LMS-5 (p=0.1)"]["S_rule_accuracy"] < 1.0
    assert all(v["Sc_coord1_rule_accuracy"] == 1.0 for v in ds.values())
    assert all(v["drange_rotated"] > 1.0 for v in ds.values())


def test_refuses_non_empty_out(tmp_path):
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError):
        show_data.main(["--out", str(tmp_path), *ARGS])
    assert (tmp_path / "keep.txt").read_text() == "precious"


def test_help_lists_options_with_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        show_data.main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--out", "--overwrite", "--n ", "--seed", "--margin", "--p "):
        assert opt in text
    assert "default: runs/show_data" in text
    assert "(default: False)" not in text  # flags get no default note (common.HelpFormatter)
    assert "\n    python -m experiments.show_data --out runs/show_data" in text  # kept as written


@pytest.mark.parametrize(
    "bad,name", [(["--p", "1.5"], "p"), (["--margin", "0.2"], "margin"), (["--n", "0"], "n")]
)
def test_invalid_arguments(tmp_path, bad, name):
    with pytest.raises(ValueError, match=rf"^{name}="):
        show_data.main(["--out", str(tmp_path / "x"), *bad])
    assert not (tmp_path / "x").exists()  # validated before the run folder is made
