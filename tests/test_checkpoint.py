"""Checkpoints of `train_sweep`: progress in updates, an atomic commit point, kills at any moment,
fingerprints over everything that changes the numbers, file permissions, early argument checks."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import chex
import jax
import numpy as np
import pytest

from sbjax.io import read_json, read_jsonl
from sbjax.models import make_model
from sbjax.train import TrainConfig, train_sweep
from sbjax.train import plan as plan_mod
from sbjax.train import sweep as sweep_mod
from sbjax.train.checkpoint import fingerprint_parts
from sbjax.train.plan import chunk_plan


def _data(n=512, d=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).astype(np.int32)
    return x, y


MODEL = make_model({"name": "fcn", "width": 16, "depth": 1})
CFG = TrainConfig(lr=0.1, batch_size=64, max_steps=40, eval_every=10, stop_rule="none")  # 4 periods
KW = dict(n_seeds=2, progress=False)


class _Killed(Exception):
    """Stands for SIGKILL at a chosen write."""


def _same_result(a, b):
    chex.assert_trees_all_equal(
        jax.tree_util.tree_map(np.asarray, a.params), jax.tree_util.tree_map(np.asarray, b.params)
    )
    chex.assert_trees_all_equal(
        jax.tree_util.tree_map(np.asarray, a.best_params),
        jax.tree_util.tree_map(np.asarray, b.best_params),
    )
    for k in a.history:
        np.testing.assert_array_equal(a.history[k], b.history[k], err_msg=k)
    np.testing.assert_array_equal(a.stop_step, b.stop_step)


def _rows(folder):
    return read_jsonl(folder / "metrics.jsonl")


def _npz_files(folder):
    return sorted(p.name for p in folder.glob("checkpoint-*.npz"))


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The uninterrupted run, one period per chunk, with its metrics rows."""
    out = tmp_path_factory.mktemp("full")
    r = train_sweep(CFG, MODEL, _data(), out_dir=out, periods_per_chunk=1, **KW)
    return r, _rows(out)


def test_resume_with_another_chunk_size_continues_from_updates_done(tmp_path, full):
    full_r, full_rows = full
    part = train_sweep(
        CFG, MODEL, _data(), out_dir=tmp_path, periods_per_chunk=2, max_chunks=1, **KW
    )
    assert part.history["step"].shape[1] == 2
    manifest = read_json(tmp_path / "checkpoint.json")
    assert manifest["updates_done"] == 20 and manifest["npz"] in _npz_files(tmp_path)
    res = train_sweep(CFG, MODEL, _data(), out_dir=tmp_path, resume=True, periods_per_chunk=1, **KW)
    np.testing.assert_array_equal(res.history["step"], [[10, 20, 30, 40]] * 2)
    _same_result(full_r, res)
    assert _rows(tmp_path) == full_rows  # every (model, period) exactly once, in order
    assert read_json(tmp_path / "checkpoint.json")["updates_done"] == 40


def test_chunk_size_that_does_not_divide_the_budget_ends_exactly_at_it(tmp_path):
    cfg = TrainConfig(lr=0.1, batch_size=64, max_steps=70, eval_every=10, stop_rule="none")
    ref = train_sweep(cfg, MODEL, _data(), periods_per_chunk=1, **KW)
    # 7 periods: chunks of 5 then 2 (a divisor would be 1); resumed after 1 period: 5 then 1.
    train_sweep(cfg, MODEL, _data(), out_dir=tmp_path, periods_per_chunk=1, max_chunks=1, **KW)
    res = train_sweep(cfg, MODEL, _data(), out_dir=tmp_path, resume=True, periods_per_chunk=5, **KW)
    np.testing.assert_array_equal(res.history["step"][0], np.arange(1, 8) * 10)
    _same_result(ref, res)
    assert read_json(tmp_path / "checkpoint.json")["updates_done"] == 70


@pytest.mark.parametrize("remaining", [1, 2, 5, 7, 12, 97, 100])
@pytest.mark.parametrize("target", [1, 3, 5, 10, 1000])
def test_chunk_plan_adds_up_to_the_remaining_periods(remaining, target):
    plan = chunk_plan(remaining, target)
    assert sum(plan) == remaining
    assert max(plan) <= target and len(set(plan)) <= 2  # at most one extra compiled program
    assert len(plan) <= -(-remaining // target) * 2  # never many more chunks than asked for


def test_kill_between_npz_and_manifest_resumes_to_the_uninterrupted_result(
    tmp_path, monkeypatch, full
):
    full_r, full_rows = full
    real_replace = os.replace
    commits = []

    def replace(src, dst):
        if os.path.basename(dst) == "checkpoint.json":
            commits.append(dst)
            if len(commits) == 2:  # the second chunk's npz is written, its manifest is not
                raise _Killed
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(_Killed):
        train_sweep(CFG, MODEL, _data(), out_dir=tmp_path, periods_per_chunk=1, **KW)
    monkeypatch.undo()
    assert read_json(tmp_path / "checkpoint.json")["updates_done"] == 10
    assert len(_npz_files(tmp_path)) == 2  # the committed one and the orphan
    res = train_sweep(CFG, MODEL, _data(), out_dir=tmp_path, resume=True, periods_per_chunk=1, **KW)
    _same_result(full_r, res)
    assert _rows(tmp_path) == full_rows
    assert _npz_files(tmp_path) == [read_json(tmp_path / "checkpoint.json")["npz"]]


def test_torn_metrics_line_newer_rows_and_stale_tmp_files_are_cleaned(tmp_path, full):
    full_r, full_rows = full
    train_sweep(CFG, MODEL, _data(), out_dir=tmp_path, periods_per_chunk=1, max_chunks=2, **KW)
    newer = dict(_rows(tmp_path)[-1], period=2, step=30.0, updates=30.0)
    with open(tmp_path / "metrics.jsonl", "a") as f:  # a row past the checkpoint, then a torn one
        f.write(json.dumps(newer) + "\n" + '{"period": 3, "model": 0, "se')
    stale = [
        ".checkpoint.json.1a2b3c.tmp",
        ".checkpoint-0123456789abcdef.npz.ffee.tmp",
        ".metrics.jsonl.x9y8.tmp",
    ]
    for name in stale:
        (tmp_path / name).write_bytes(b"partial")
    (tmp_path / "notes.txt").write_text("not ours")
    res = train_sweep(CFG, MODEL, _data(), out_dir=tmp_path, resume=True, periods_per_chunk=1, **KW)
    _same_result(full_r, res)
    assert _rows(tmp_path) == full_rows
    assert not [n for n in stale if (tmp_path / n).exists()]
    assert (tmp_path / "notes.txt").read_text() == "not ours"


def test_overwrite_deletes_only_the_checkpoint_files(tmp_path):
    train_sweep(CFG, MODEL, _data(), out_dir=tmp_path, periods_per_chunk=1, max_chunks=1, **KW)
    (tmp_path / "notes.txt").write_text("not ours")
    with pytest.raises(FileExistsError, match="resume"):
        train_sweep(CFG, MODEL, _data(), out_dir=tmp_path, periods_per_chunk=1, **KW)
    r = train_sweep(
        CFG, MODEL, _data(), out_dir=tmp_path, overwrite=True, periods_per_chunk=1, **KW
    )
    assert r.history["step"].shape[1] == 4
    assert (tmp_path / "notes.txt").read_text() == "not ours"
    assert len(_npz_files(tmp_path)) == 1 and len(_rows(tmp_path)) == 2 * 4


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["022", "027"])
def test_files_get_the_users_normal_permissions(tmp_path, umask):
    old = os.umask(umask)
    try:
        train_sweep(CFG, MODEL, _data(), out_dir=tmp_path, periods_per_chunk=1, max_chunks=1, **KW)
    finally:
        os.umask(old)
    files = ["checkpoint.json", "metrics.jsonl", *_npz_files(tmp_path)]
    assert len(files) == 3
    for name in files:
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_metrics_rows_carry_the_true_seed_index(tmp_path):
    r = train_sweep(
        CFG,
        MODEL,
        _data(),
        seed_indices=[3, 5],
        out_dir=tmp_path,
        periods_per_chunk=1,
        max_chunks=2,
        progress=False,
    )
    assert list(r.seed_index) == [3, 5]
    rows = _rows(tmp_path)
    assert {(row["model"], row["seed"]) for row in rows} == {(0, 3), (1, 5)}
    assert sorted(row["period"] for row in rows if row["model"] == 1) == [0, 1]


def _forbid_work(monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("argument checks must come before data preparation and compiling")

    monkeypatch.setattr(plan_mod, "prepare_data", forbidden)
    monkeypatch.setattr(sweep_mod, "_compiled_programs", forbidden)


@pytest.mark.parametrize(
    "kwargs, name, shown",
    [
        ({"devices": []}, "devices", "[]"),
        ({"devices": ()}, "devices", "()"),
        ({"periods_per_chunk": 0}, "periods_per_chunk", "0"),
        ({"periods_per_chunk": -2}, "periods_per_chunk", "-2"),
        ({"periods_per_chunk": 1.5}, "periods_per_chunk", "1.5"),
        ({"periods_per_chunk": True}, "periods_per_chunk", "True"),
        ({"max_chunks": -1}, "max_chunks", "-1"),
        ({"out_dir": "FILE"}, "out_dir", "FILE"),
        ({"out_dir": "FILE/sub"}, "out_dir", "FILE"),
    ],
)
def test_bad_arguments_fail_in_milliseconds_before_any_work(
    tmp_path, monkeypatch, kwargs, name, shown
):
    (tmp_path / "FILE").write_text("a file, not a folder")
    kwargs = {k: (str(tmp_path / v) if k == "out_dir" else v) for k, v in kwargs.items()}
    _forbid_work(monkeypatch)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=name) as err:
        train_sweep(CFG, MODEL, _data(), progress=False, **kwargs)
    assert time.perf_counter() - t0 < 0.5
    msg = str(err.value)
    assert shown in msg and "expected" in msg, msg


def test_fingerprint_covers_every_part_and_is_checked_before_compiling(tmp_path, monkeypatch):
    x, y = _data()
    train_sweep(CFG, MODEL, (x, y), out_dir=tmp_path, periods_per_chunk=1, max_chunks=1, **KW)
    monkeypatch.setattr(sweep_mod, "_compiled_programs", lambda *a, **k: pytest.fail("compiled"))
    x2 = x.copy()
    x2[301, 5] += 1e-3  # one input value
    y2 = y.copy()
    y2[77] = 1 - y2[77]  # one label
    cases = [
        (dict(train=(x2, y)), "data"),
        (dict(train=(x, y2)), "data"),
        (dict(val=(x[:64], y[:64])), "data"),
        (dict(cfg=dataclasses.replace(CFG, momentum=0.5)), "train_config"),  # any field
        (dict(model=make_model({"name": "fcn", "width": 17})), "model"),
        (dict(seed=1), "sweep"),
        (dict(seed_indices=[0, 2]), "sweep"),
        (dict(n_members=2), "sweep"),
        (dict(grid={"lr": [0.1, 0.2]}), "sweep"),
    ]
    for case, part in cases:
        kw = {"cfg": CFG, "model": MODEL, "train": (x, y), "val": None, **KW, **case}
        if "seed_indices" in kw:
            kw.pop("n_seeds")
        with pytest.raises(ValueError, match=f"differing parts: {part};"):
            train_sweep(
                kw.pop("cfg"),
                kw.pop("model"),
                kw.pop("train"),
                kw.pop("val"),
                out_dir=tmp_path,
                resume=True,
                **kw,
            )
    # A checkpoint of the old layout (chunks_done, no format) is refused with a clear message.
    (tmp_path / "checkpoint.json").write_text(json.dumps({"fingerprint": "x", "chunks_done": 1}))
    with pytest.raises(ValueError, match="format"):
        train_sweep(CFG, MODEL, (x, y), out_dir=tmp_path, resume=True, **KW)


def test_fingerprint_hashes_every_byte_of_the_data():
    from sbjax.train import prepare_data

    x, y = _data(n=5000)  # big enough that a strided sample of ~1000 rows skips most rows
    xv, yv = _data(n=300, seed=1)

    def data_part(x, y, xv, yv):
        data = prepare_data(CFG, (x, y), (xv, yv))
        return fingerprint_parts(CFG, MODEL, data, [0], 1, [{}], 0, 0)["data"]

    ref = data_part(x, y, xv, yv)
    assert data_part(x.copy(), y.copy(), xv.copy(), yv.copy()) == ref
    for arr, idx in [(x, (4001, 3)), (y, 4001), (xv, (151, 0)), (yv, 299)]:
        changed = [a.copy() for a in (x, y, xv, yv)]
        k = [id(a) for a in (x, y, xv, yv)].index(id(arr))
        changed[k][idx] = 1 - changed[k][idx] if changed[k].dtype.kind == "i" else 7.0
        assert data_part(*changed) != ref, (k, idx)


def test_enable_compilation_cache_sets_jax_config_unless_the_user_did(tmp_path, monkeypatch):
    monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
    old_dir = jax.config.jax_compilation_cache_dir
    old_min = jax.config.jax_persistent_cache_min_compile_time_secs
    try:
        jax.config.update("jax_compilation_cache_dir", None)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
        got = sweep_mod.enable_compilation_cache(tmp_path / "run" / ".jax_cache")
        assert got == tmp_path / "run" / ".jax_cache" and got.is_dir()
        assert jax.config.jax_compilation_cache_dir == str(got)
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.5
        # A cache the user configured wins: nothing changes.
        jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
        assert sweep_mod.enable_compilation_cache(tmp_path / "other") == tmp_path / "mine"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 2.0
        assert not (tmp_path / "other").exists()
    finally:
        jax.config.update("jax_compilation_cache_dir", old_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", old_min)
