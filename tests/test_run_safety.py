"""Run folders never destroy what a user owns; devices are explicit; env.json says enough.

Each test here failed on the code before the safety fixes: `--overwrite` emptied any folder
(including the working tree), a failed start left a half-made run folder, importing sbjax set
XLA_FLAGS, and env.json lacked commit, jaxlib and CPU.
"""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import common
from sbjax import io

ROOT = Path(__file__).resolve().parent.parent


def _user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    return path


def _run_folder(path: Path, experiment: str) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"experiment": experiment}))
    (path / "summary.json").write_text("{}")
    return path


@pytest.mark.parametrize("out", [".", "", "..", "~"])
def test_overwrite_refuses_cwd_parents_home(tmp_path, monkeypatch, out):
    work = _user_folder(tmp_path / "home" / "work")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(work)
    target = os.path.expanduser(out) if out == "~" else out
    with pytest.raises(ValueError, match="out="):
        io.prepare_run_dir(target, experiment="extreme_sb", overwrite=True)
    assert (work / "thesis.tex").read_text() == "years of work"


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path):
    user = _user_folder(tmp_path / "mine")
    with pytest.raises(FileExistsError, match="not an sbjax run folder"):
        io.prepare_run_dir(user, experiment="extreme_sb", overwrite=True)
    with pytest.raises(FileExistsError, match="not an sbjax run folder"):
        io.prepare_run_dir(user, experiment="extreme_sb", resume=True)
    assert (user / "thesis.tex").exists()


def test_overwrite_refuses_another_experiments_run(tmp_path):
    other = _run_folder(tmp_path / "run", "uaps")
    with pytest.raises(FileExistsError, match="'uaps'"):
        io.prepare_run_dir(other, experiment="extreme_sb", overwrite=True)
    assert (other / "summary.json").exists()


def test_overwrite_replaces_a_run_of_the_same_experiment(tmp_path):
    run = _run_folder(tmp_path / "run", "extreme_sb")
    out = io.prepare_run_dir(run, experiment="extreme_sb", overwrite=True)
    assert out == run and out.is_dir() and not any(out.iterdir())


def test_out_naming_a_file_is_refused(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match="existing file"):
        io.prepare_run_dir(f, experiment="extreme_sb", overwrite=True)
    assert f.read_text() == "x"


def test_cli_overwrite_dot_deletes_nothing(tmp_path, monkeypatch):
    from experiments import extreme_sb

    work = _user_folder(tmp_path / "work")
    (work / ".git").mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(ValueError, match="working directory"):
        extreme_sb.main(["--preset", "smoke", "--out", ".", "--overwrite", "--no-progress"])
    assert (work / "thesis.tex").exists() and (work / ".git").is_dir()


def test_failed_start_leaves_no_run_folder(tmp_path):
    from experiments import extreme_sb

    out = tmp_path / "run"
    with pytest.raises(ValueError, match="models"):
        extreme_sb.main(["--preset", "smoke", "--out", str(out), "--models", "nope"])
    assert not out.exists()
    # A failure after start_run but before anything is written (e.g. missing data) leaves
    # nothing either, so a retry is not refused as "already exists".
    args = common.make_parser("extreme_sb", None, {"smoke": {}}).parse_args(
        ["--preset", "smoke", "--out", str(out)]
    )
    run = common.start_run("extreme_sb", args, {"n_seeds": 1})
    assert not out.exists()
    run.finish()
    assert json.loads((out / "config.json").read_text())["experiment"] == "extreme_sb"
    assert (out / "env.json").is_file()


def test_atomic_writes_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        io.write_json(tmp_path / "a.json", {"x": 1})
        io.save_npz(tmp_path / "p.npz", {"w": [1.0]})
    finally:
        os.umask(old)
    for name in ("a.json", "p.npz"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_read_jsonl_tolerates_only_a_torn_last_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"a": 1}\n{"a": 2}\n{"a": ')
    assert io.read_jsonl(p) == [{"a": 1}, {"a": 2}]
    p.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        io.read_jsonl(p)


def test_stale_tmp_files_are_removed(tmp_path):
    run = _run_folder(tmp_path / "run", "extreme_sb")
    (run / ".summary.json.abc123.tmp").write_text("torn")
    io.prepare_run_dir(run, experiment="extreme_sb", resume=True)
    assert not list(run.glob(".*.tmp")) and (run / "summary.json").exists()


def _python(code: str, **env) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "SBJAX_CPU_DEVICES")}
    e.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=e, cwd=ROOT, timeout=120
    )


def test_import_sbjax_sets_no_xla_flags():
    r = _python(
        "import os, sbjax, sbjax.train, sbjax.eval; print(repr(os.environ.get('XLA_FLAGS')))"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "None"


_ENV_JSON = """
import json, sys
from experiments import common
args = common.make_parser('extreme_sb', None, {'smoke': {}}).parse_args(sys.argv[1:])
run = common.start_run('extreme_sb', args, {'n_seeds': 1})
run.ensure_folder()
print(json.dumps(json.load(open(run.out / 'env.json'))))
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs >= 2 cores")
@pytest.mark.parametrize(
    "flag,env,expected",
    [
        (["--devices", "1"], {}, 1),
        (["--devices", "2"], {}, 2),
        ([], {"SBJAX_CPU_DEVICES": "1"}, 1),
        ([], {}, min(os.cpu_count() or 1, 64)),
    ],
)
def test_devices_are_honoured_and_recorded(tmp_path, flag, env, expected):
    out = tmp_path / "run"
    code = _ENV_JSON.replace("sys.argv[1:]", repr(["--out", str(out), *flag]))
    r = _python(code, **env)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(info["devices"]) == expected
    for key in ("sbjax_commit", "jaxlib", "cpu_model", "cpu_flags", "xla_flags"):
        assert key in info, key
    assert info["jaxlib"] and info["cpu_model"]


@pytest.mark.parametrize("value", ["0", str((os.cpu_count() or 1) + 1)])
def test_bad_device_counts_fail_before_any_folder(tmp_path, value):
    out = tmp_path / "run"
    args = common.make_parser("extreme_sb", None, {"smoke": {}}).parse_args(
        ["--preset", "smoke", "--out", str(out), "--devices", value]
    )
    with pytest.raises(ValueError, match=f"devices={value}"):
        common.start_run("extreme_sb", args, {"n_seeds": 1})
    assert not out.exists()


def test_records_exclude_and_count_failed_models():
    run = common.Run(
        name="x",
        out=Path("unused"),
        preset="smoke",
        preset_config={},
        n_seeds=4,
        seed=0,
        resume=False,
        progress=False,
    )
    rec = run.add_result(
        dataset="d",
        model="m",
        metrics={"test_acc": [0.9, 0.5, 0.8, 0.7], "test_auc": [0.95, float("nan"), 0.85, 0.9]},
        status=["converged", "diverged", "converged", "max_steps"],
        require_converged=True,
        test_size=(5000, 5000),
    )
    assert rec["n_seeds"] == 2 and rec["n_total"] == 4
    assert rec["n_diverged"] == 1 and rec["n_unconverged"] == 1 and rec["n_failed"] == 2
    assert rec["seed_status"] == ["ok", "diverged", "ok", "unconverged"]
    acc = rec["metrics"]["test_acc"]
    assert acc["mean"] == pytest.approx(0.85) and acc["n"] == 2
    assert acc["std"] == pytest.approx(0.0707106781, rel=1e-6)  # sample std, ddof=1
    assert rec["metrics"]["test_auc"]["mean"] == pytest.approx(0.9)  # same denominator
    assert rec["metrics"]["test_auc"]["sampling_se"] == pytest.approx(0.0057738, rel=1e-4)
    assert acc["per_seed"] == [0.9, 0.5, 0.8, 0.7]
    # A used seed with a NaN metric is failed for every metric of the record.
    rec = run.add_result(
        dataset="d", model="m", metrics={"a_acc": [0.9, 0.7], "a_auc": [0.9, float("nan")]}
    )
    assert rec["seed_status"] == ["ok", "nonfinite_metric"]
    assert (
        rec["metrics"]["a_acc"]["mean"] == pytest.approx(0.9)
        and rec["metrics"]["a_acc"]["std"] is None
    )
    rec = run.add_result(
        dataset="d", model="m", metrics={"a_acc": [0.5, 0.5]}, status=["diverged", "diverged"]
    )
    assert rec["status"] == "all models failed" and rec["metrics"]["a_acc"]["mean"] is None


def test_status_lists_are_not_mistaken_for_stop_reasons():
    run = common.Run(
        name="x",
        out=Path("unused"),
        preset="smoke",
        preset_config={},
        n_seeds=2,
        seed=0,
        resume=False,
        progress=False,
    )
    rec = run.add_result(
        dataset="d",
        model="m",
        metrics={"test_acc": [0.5, 0.9]},
        status=["diverged", "ok"],
        require_converged=True,
        test_size={"test_acc": (10, 10)},
    )
    assert rec["seed_status"] == ["diverged", "ok"] and rec["n_seeds"] == 1
    assert rec["metrics"]["test_acc"]["sampling_se"] == pytest.approx((0.9 * 0.1 / 20) ** 0.5)
    rec = run.add_result(
        dataset="d", model="m", metrics={"train_acc": [0.5, 0.9]}, test_size=(10, 10)
    )
    assert "sampling_se" not in rec["metrics"]["train_acc"]


@pytest.mark.parametrize("c2", ["foo", "0", "50", "-1"])
def test_extreme_sb_bad_boundary_axis_fails_before_training(tmp_path, c2):
    import time

    from experiments import extreme_sb

    out = tmp_path / "run"
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="boundary_c2"):
        extreme_sb.main(["--preset", "smoke", "--out", str(out), "--boundary-c2", c2])
    assert time.perf_counter() - t0 < 5 and not out.exists()


def test_plots_read_failed_and_single_seed_records():
    from sbjax import plots
    from sbjax.plots import paper  # noqa: F401  (a lazy submodule: imported here, not by order)

    assert np.isnan(plots.paper.mean_std({"mean": None, "std": None})[0])
    assert plots.paper.mean_std({"mean": 0.5, "std": None}) == (0.5, 0.0)
    assert plots.paper.mean_std([0.4, 0.6]) == pytest.approx((0.5, 0.1414213562))
