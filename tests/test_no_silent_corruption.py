"""No silent corruption (issue 25): each case an adversarial user found, as a test.

Every test here failed on the code before the fix: two runs on one --out mixed their files, the
phase diagram averaged diverged models, a bad training setting with --overwrite deleted the
previous run before failing, mitigation crashed when every model diverged, NaN test inputs gave
numbers, --overwrite deleted a user's notes, `python -m sbjax.plots` stopped at the first damaged
figure, a damaged checkpoint manifest raised bare JSON / Key / Attribute errors, and a one-point
test set was refused only after training.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import common
from sbjax import io

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "SBJAX_CPU_DEVICES")}
    e["PYTHONPATH"] = str(ROOT)
    return e


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _old_run(path: Path, experiment: str = "extreme_sb") -> Path:
    """A finished run folder of `experiment` (as sbjax writes it, with its record of files)."""
    path.mkdir(parents=True)
    io.record_owned(path, "config.json", "summary.json", "params")
    (path / "config.json").write_text(json.dumps({"experiment": experiment}))
    (path / "summary.json").write_text('{"results": ["the old run"]}')
    (path / "params").mkdir()
    (path / "params" / "a.npz").write_bytes(b"weights")
    return path


# ----------------------------------------------------------------------------------------------
# 1. One run per folder.
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def held_lock(tmp_path):
    """A separate live process holding the lock of tmp_path/run (until the test ends)."""
    out = tmp_path / "run"
    code = (
        "import sys, time; from sbjax.io import RunLock; "
        f"RunLock({str(out)!r}, 'extreme_sb').acquire(); print('held', flush=True); time.sleep(120)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=_env(), cwd=ROOT
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        yield out, proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_a_second_run_on_the_same_out_is_refused_naming_the_holder(held_lock):
    from experiments import extreme_sb

    out, pid = held_lock
    _old_run(out)
    before = _snapshot(out)
    with pytest.raises(io.RunLockedError, match=f"pid {pid} on host {socket.gethostname()!r}"):
        extreme_sb.main(["--preset", "smoke", "--out", str(out), "--overwrite", "--no-progress"])
    assert _snapshot(out) == before  # nothing touched


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path, caplog):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from sbjax.io import RunLock; RunLock({str(out)!r}, 'x').acquire(); "
            "print('held', flush=True); import time; time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
    )
    assert proc.stdout.readline().strip() == "held"
    proc.kill()  # SIGKILL: the lock file stays, the kernel drops the lock
    proc.wait()
    assert io.lock_path(out).exists()
    with caplog.at_level("WARNING"), io.RunLock(out, "y") as lock:
        assert json.loads(io.lock_path(out).read_text())["pid"] == os.getpid()
        assert f"left by pid {proc.pid}" in caplog.text
        taker = subprocess.run(  # and it is held now: another taker fails
            [
                sys.executable,
                "-c",
                f"from sbjax.io import RunLock; RunLock({str(out)!r}).acquire()",
            ],
            env=_env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert taker.returncode != 0 and "RunLockedError" in taker.stderr
    assert lock._fd is None and not io.lock_path(out).exists()  # released and removed


def test_a_second_process_cannot_take_a_held_lock(tmp_path):
    out = tmp_path / "run"
    with io.RunLock(out, "x"):
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from sbjax.io import RunLock; RunLock({str(out)!r}).acquire()",
            ],
            env=_env(),
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        assert r.returncode != 0 and "RunLockedError" in r.stderr and "is in use by" in r.stderr
    # released: now it can
    r = subprocess.run(
        [sys.executable, "-c", f"from sbjax.io import RunLock; RunLock({str(out)!r}).acquire()"],
        env=_env(),
        cwd=ROOT,
    )
    assert r.returncode == 0


def test_start_run_holds_the_lock_until_finish(tmp_path):
    out = tmp_path / "run"
    parser = common.make_parser("extreme_sb", None, {"smoke": {}})
    run = common.start_run("extreme_sb", parser.parse_args(["--out", str(out)]), {"n_seeds": 1})
    assert run.lock is not None and io.lock_path(out).exists()
    run.finish()
    assert not io.lock_path(out).exists()


# ----------------------------------------------------------------------------------------------
# 2. Diverged phase-diagram models are counted, not averaged.
# ----------------------------------------------------------------------------------------------


def test_phase_diagram_reports_diverged_models():
    from sbjax.train import TrainConfig
    from sbjax.train.phase import PhaseData, phase_diagram

    cfg = TrainConfig(lr=1e10, batch_size=64, max_steps=40, eval_every=20, stop_rule="none")
    r = phase_diagram(
        cfg,
        {"name": "fcn", "width": 16, "depth": 1},
        PhaseData(d=6, n_train=256, n_test=128),
        p=[0.0, 0.5],
        margin=[0.3],
        k=[3],
        n_seeds=2,
    )
    assert r.stop_reason.shape == (2, 1, 1, 2)
    assert (r.stop_reason == "diverged").all() and r.n_diverged == 4
    assert np.isnan(r.reliance()["reliance_s"]).all()
    (cross,) = r.crossover()
    assert cross["p_cross"] is None and cross["n_failed_cells"] == 2


def test_diagnostics_phase_part_excludes_diverged_models(tmp_path):
    from experiments import diagnostics as D

    out = tmp_path / "diag"
    summary = D.main(
        [
            "--preset",
            "smoke",
            "--parts",
            "phase",
            "--set",
            "phase.train.lr=1e10",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    recs = [r for r in summary["results"] if r["part"] == "phase"]
    assert recs and all(r["n_diverged"] == r["n_total"] and r["n_seeds"] == 0 for r in recs)
    assert all(r["status"] == "all models failed" for r in recs)
    assert summary["phase"]["status"] == "all models failed"
    assert summary["phase"]["n_diverged"] == summary["phase"]["n_models"]


# ----------------------------------------------------------------------------------------------
# 3, 9. Every check runs before the folder is created or replaced.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "setting, match",
    [("train.batch_size=100000", "batch_size"), ("n_test.lms5=1", "n_test")],
)
def test_a_bad_setting_with_overwrite_keeps_the_previous_run(tmp_path, setting, match):
    from experiments import extreme_sb

    old = _old_run(tmp_path / "run")
    before = _snapshot(old)
    argv = ["--preset", "smoke", "--set", setting, "--no-progress"]
    with pytest.raises(ValueError, match=match):
        extreme_sb.main([*argv, "--out", str(old), "--overwrite"])
    assert _snapshot(old) == before
    fresh = tmp_path / "fresh"
    with pytest.raises(ValueError, match=match):
        extreme_sb.main([*argv, "--out", str(fresh)])
    assert not fresh.exists()  # and a retry is not refused
    assert not io.lock_path(fresh).exists()


def test_a_one_class_test_draw_is_refused_before_training(tmp_path):
    from experiments.synthetic import make_data

    with pytest.raises(ValueError, match=r"n_test\.lms5=2 is invalid"):
        for seed in range(50):  # some seed draws two points of one class
            make_data("lms5", 10, 100, 2, seed)


def test_overwrite_never_deletes_a_folder_that_contains_home(tmp_path, monkeypatch):
    run = _old_run(tmp_path / "runs" / "a")
    home = run / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(ValueError, match=r"\$HOME"):
        io.prepare_run_dir(run, experiment="extreme_sb", overwrite=True)
    assert (home / "thesis.tex").exists() and (run / "summary.json").exists()


def test_mitigation_with_no_methods_is_refused(tmp_path):
    from experiments import mitigation as mit

    with pytest.raises(ValueError, match="methods"):
        mit.main(["--preset", "smoke", "--methods", "", "--out", str(tmp_path / "m")])
    assert not (tmp_path / "m").exists()


# ----------------------------------------------------------------------------------------------
# 4. A part whose models all diverge is reported, not crashed on.
# ----------------------------------------------------------------------------------------------


def test_mitigation_reports_a_method_whose_models_all_diverged(tmp_path):
    from experiments import mitigation as mit

    out = tmp_path / "m"
    summary = mit.main(
        [
            "--preset",
            "smoke",
            "--methods",
            "erm",
            "--set",
            "lms5.lr=1e10",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    recs = summary["results"]  # one record per selection rule
    assert [r["selection"] for r in recs] == ["target_val", "source_val"]
    for rec in recs:
        assert rec["status"] == "all models failed" and rec["n_diverged"] == rec["n_total"] == 2
        assert rec["report"] == "all models failed"
    assert (out / "summary.json").exists()


# ----------------------------------------------------------------------------------------------
# 5. NaN inputs are refused by the public evaluation functions.
# ----------------------------------------------------------------------------------------------


def _nan_case():
    from sbjax.data import make_dataset
    from sbjax.models import make_model

    ds = make_dataset("lms", k=5, d=6)
    (x, y), _ = ds.sample_split(jax.random.key(0), 64, 2)
    x = np.asarray(x).copy()
    x[3, 2] = np.nan
    model = make_model({"name": "fcn", "width": 8, "depth": 1})
    v = jax.vmap(lambda k: model.init(k, x[:1]))(jax.random.split(jax.random.key(1), 2))
    return ds, model, v, x, np.asarray(y)


@pytest.mark.parametrize(
    "name", ["randomization_report", "stacked_logits", "evaluate", "pgd_attack", "ldsb_report"]
)
def test_public_evaluation_refuses_nan_inputs(name):
    from sbjax import eval as E

    ds, model, v, x, y = _nan_case()
    keys = jax.random.split(jax.random.key(2), 2)
    calls = {
        "randomization_report": lambda: E.randomization_report(model.logits, v, x, y, keys, ds),
        "stacked_logits": lambda: E.stacked_logits(model.logits, v, x),
        "evaluate": lambda: E.evaluate(model.logits, v, x, y),
        "pgd_attack": lambda: E.pgd_attack(
            model.logits, v, x, y, keys[0], eps=0.1, step_size=0.05, n_iter=2
        ),
        "ldsb_report": lambda: E.ldsb_report(model, v, x, keys, ds),
    }
    with pytest.raises(ValueError, match=r"x=.*1 NaN/inf value.*first row 3"):
        calls[name]()


# ----------------------------------------------------------------------------------------------
# 6. --overwrite replaces only what sbjax wrote.
# ----------------------------------------------------------------------------------------------


def test_overwrite_keeps_the_users_files(tmp_path, caplog):
    run = _old_run(tmp_path / "run")
    (run / "notes.md").write_text("what I saw")
    (run / "analysis").mkdir()
    (run / "analysis" / "plot.py").write_text("...")
    with caplog.at_level("WARNING"):
        io.prepare_run_dir(run, experiment="extreme_sb", overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["analysis", "notes.md"]
    assert "kept 2 file(s) it did not write: analysis, notes.md" in caplog.text


def test_overwrite_of_an_older_run_folder_without_a_record(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "summary.json", "metrics.csv", "fig.png", "notes.md"):
        (run / name).write_text(json.dumps({"experiment": "uaps"}))
    (run / "figures").mkdir()
    (run / "figures" / "fig.json").write_text(
        json.dumps({"format": 1, "tree": {"file": "fig.png"}})
    )
    io.prepare_run_dir(run, experiment="uaps", overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["notes.md"]


def test_cli_overwrite_keeps_notes_and_records_its_files(tmp_path):
    from experiments import show_data

    out = tmp_path / "preview"
    argv = ["--out", str(out), "--n", "200", "--n-scatter", "50", "--d", "4"]
    show_data.main(argv)
    owned = set(json.loads((out / io.OWNED_RECORD).read_text()))
    assert {"config.json", "blocks.json", "data_preview.png", "figures"} <= owned
    (out / "notes.md").write_text("mine")
    show_data.main([*argv, "--overwrite"])
    assert (out / "notes.md").read_text() == "mine" and (out / "blocks.json").exists()


def test_experiment_runs_record_every_file_they_write(tmp_path):
    out = tmp_path / "run"
    parser = common.make_parser("extreme_sb", None, {"smoke": {}})
    run = common.start_run("extreme_sb", parser.parse_args(["--out", str(out)]), {"n_seeds": 1})
    run.save_params("p", {"w": np.zeros((1, 2))})
    io.write_csv(run.path("grid.csv"), [{"a": 1}])
    run.finish()
    owned = set(json.loads((out / io.OWNED_RECORD).read_text()))
    assert {p.name for p in out.iterdir()} <= owned


# ----------------------------------------------------------------------------------------------
# 7. `python -m sbjax.plots` redraws what it can and names what it cannot.
# ----------------------------------------------------------------------------------------------


def _figure_run(tmp_path) -> Path:
    from sbjax.plots import save_and_draw

    run = tmp_path / "run"
    run.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        save_and_draw(
            run,
            name,
            "mitigation_heatmap",
            values=np.asarray([[0.5, 0.9]]),
            methods=["erm"],
            datasets=["lms5", "ms57"],
            metric="s_rand_acc",
        )
    (run / "summary.json").write_text(json.dumps({"figures": ["a.png", "b.png", "c.png"]}))
    return run


def test_redraw_draws_the_rest_and_names_each_damaged_figure(tmp_path):
    from sbjax.plots.registry import RedrawError, redraw

    run = _figure_run(tmp_path)
    (run / "figures" / "a.npz").unlink()  # missing data file
    (run / "figures" / "b.json").write_text("{not json")  # corrupt
    (run / "figures" / "c.json").unlink()  # missing spec (summary.json lists c.png)
    (run / "figures" / "c.npz").unlink()
    from sbjax.plots import save_and_draw

    save_and_draw(
        run, "d.png", "mitigation_heatmap", values=np.ones((1, 1)), methods=["m"], datasets=["x"]
    )
    (run / "d.png").unlink()
    with pytest.raises(RedrawError) as err:
        redraw(run)
    assert err.value.written == [run / "d.png"] and (run / "d.png").exists()
    text = str(err.value)
    assert "a.npz" in text and "is missing" in text
    assert "b.json" in text and "not valid JSON" in text
    assert "c.json: missing (summary.json lists 'c.png')" in text


def test_redraw_cli_exits_nonzero_and_prints_what_it_drew(tmp_path):
    run = _figure_run(tmp_path)
    (run / "figures" / "a.npz").unlink()
    r = subprocess.run(
        [sys.executable, "-m", "sbjax.plots", str(run)],
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=120,
    )
    assert r.returncode == 1
    assert str(run / "b.png") in r.stdout and str(run / "c.png") in r.stdout
    assert "a.npz" in r.stderr and "Traceback" not in r.stderr


# ----------------------------------------------------------------------------------------------
# 8. A damaged checkpoint manifest names its file and what to do.
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from sbjax.models import make_model
    from sbjax.train import TrainConfig, train_sweep

    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    cfg = TrainConfig(lr=0.1, batch_size=32, max_steps=20, eval_every=10, stop_rule="none")
    model = make_model({"name": "fcn", "width": 8, "depth": 1})
    out = tmp_path_factory.mktemp("ckpt") / "sweep"
    kw = dict(n_seeds=1, progress=False, out_dir=out, max_chunks=1, periods_per_chunk=1)
    train_sweep(cfg, model, (x, y), **kw)

    def resume():
        return train_sweep(cfg, model, (x, y), **{**kw, "resume": True})

    return out / "checkpoint.json", resume


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda m: "{torn", "is unreadable"),
        (lambda m: json.dumps([m]), "expected a JSON object, got list"),
        (
            lambda m: json.dumps({k: v for k, v in m.items() if k != "sha256"}),
            "'sha256' is missing",
        ),
        (lambda m: json.dumps({**m, "updates_done": "10"}), "'updates_done' is '10'"),
    ],
)
def test_a_damaged_manifest_names_the_file_and_the_fix(checkpoint, damage, match):
    path, resume = checkpoint
    good = path.read_text()
    try:
        path.write_text(damage(json.loads(good)))
        with pytest.raises(ValueError, match=match) as err:
            resume()
        assert str(path) in str(err.value) and "--overwrite" in str(err.value)
    finally:
        path.write_text(good)


def test_lock_file_records_owner(tmp_path):
    out = tmp_path / "r"
    with io.RunLock(out, "uaps"):
        doc = json.loads(io.lock_path(out).read_text())
    assert doc["pid"] == os.getpid() and doc["host"] == socket.gethostname()
    assert doc["experiment"] == "uaps" and time.strptime(doc["started"], "%Y-%m-%d %H:%M:%S")
