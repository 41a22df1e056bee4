"""The checkpoint folder of a sweep: fingerprint, manifest, npz state and metrics.jsonl.

* `checkpoint-<sha256[:16]>.npz`: training state and history of every model (padding included),
  named by the hash of its bytes.
* `checkpoint.json`: the manifest, written last by one atomic rename; it is the commit point. It
  holds the format version, the configuration fingerprint, the progress in updates
  (`updates_done`, a multiple of `eval_every`, so a resume may use another chunk size) and the
  name and hash of the npz. A kill at any moment leaves either the previous or the new manifest,
  each naming a complete npz; npz files that no manifest names are deleted.
* `metrics.jsonl`: one row per model and evaluation, rewritten from the checkpoint's history on
  resume, so rows newer than the checkpoint and a torn last line disappear.

Files are written to a temporary file in the same folder with the user's normal permissions
(0o666 minus the umask) and renamed into place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io as _bytes_io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from sbjax import io
from sbjax.train.config import TrainConfig
from sbjax.train.data import TrainData
from sbjax.train.engine import HISTORY_KEYS, TrainState
from sbjax.train.plan import SweepPlan, metric_rows, put_global, state_to_host
from sbjax.train.units import objective_part

log = logging.getLogger("sbjax.train.sweep")

CHECKPOINT_META = "checkpoint.json"
CHECKPOINT_PREFIX = "checkpoint-"
METRICS = "metrics.jsonl"
# Version 1 (no "format" key) stored `chunks_done` and a fixed `checkpoint.npz`.
# Version 2: optimizer state without inject_hyperparams and no objective part.
CHECKPOINT_FORMAT = 3
_LEGACY_CHECKPOINT = "checkpoint.npz"


def config_for_fingerprint(cfg: TrainConfig) -> dict:
    """The config's fields as the fingerprint sees them: fields added later are left out at
    their defaults, so checkpoints written before them still resume."""
    d = dataclasses.asdict(cfg)
    for name, default in (("batch_order", "per_model"), ("compute_dtype", "float32")):
        if d.get(name) == default:
            d.pop(name)
    return d


# ---------------------------------------------------------------------------------------------
# Checkpoint files, written through `sbjax.io.atomic_write_bytes` (one rename each, the user's
# file permissions); the npz is named by the hash of its bytes, the manifest commits it.


def _npz_bytes(tree: Any) -> bytes:
    """A pytree as `.npz` bytes, keys '/'-joined tree paths (the layout of `io.save_npz`)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    buf = _bytes_io.BytesIO()
    np.savez(buf, **{jax.tree_util.keystr(p): np.asarray(v) for p, v in flat})
    return buf.getvalue()


def _load_npz_bytes(data: bytes, like: Any) -> Any:
    npz = np.load(_bytes_io.BytesIO(data))
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    return jax.tree_util.tree_unflatten(treedef, [npz[jax.tree_util.keystr(p)] for p, _ in flat])


def _is_own_tmp(name: str) -> bool:
    return name.endswith(".tmp") and (
        name.startswith(f".{CHECKPOINT_PREFIX}")
        or name.startswith(f".{CHECKPOINT_META}.")
        or name.startswith(f".{METRICS}.")
    )


def _clean_folder(out: Path, keep_npz: str | None) -> None:
    """Deletes temporary files left by a killed write and npz files the manifest does not name.

    Only names this module writes are touched, so a folder shared with other files is safe.
    """
    if not out.is_dir():
        return
    for f in out.iterdir():
        stale_npz = (
            f.name.startswith(CHECKPOINT_PREFIX) and f.name.endswith(".npz") and f.name != keep_npz
        )
        if stale_npz or _is_own_tmp(f.name):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()


def _remove_checkpoint(out: Path) -> None:
    """`overwrite=True`: deletes this module's files only (never the whole folder)."""
    for name in (CHECKPOINT_META, METRICS, _LEGACY_CHECKPOINT):
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    _clean_folder(out, keep_npz=None)


def _hash_arrays(h, arrays) -> None:
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(np.asarray(a))
        h.update(repr((a.shape, str(a.dtype))).encode())
        h.update(a)


def fingerprint_parts(
    cfg: TrainConfig,
    model: Any,
    data: TrainData,
    seed_indices,
    n_members,
    points,
    seed,
    m_pad,
    extra: str | None = None,
) -> dict[str, str]:
    """Hashes of everything that changes a sweep's numbers, by part (named in mismatch errors).

    Every byte of the data counts (x, y and the validation set with its validity mask, which
    tells real points from chunk padding). `vectorize`, `loop` and `periods_per_chunk` are left out:
    they change how the same numbers are computed, not which (the tests check vmap == map and
    scan == host loop to float rounding, and chunk sizes bit for bit). The device count enters
    only through the number of padding models, which fixes the stored state's shape.
    """

    def digest(*parts) -> str:
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]

    h = hashlib.sha256()
    _hash_arrays(h, (data.x, data.y, data.x_val, data.y_val, data.m_val))
    parts = {
        "train_config": digest(config_for_fingerprint(cfg)),
        "model": digest(getattr(model, "config", repr(model))),
        "data": h.hexdigest()[:16],
        "sweep": digest(int(seed), [int(s) for s in seed_indices], int(n_members), points),
        "padding_models": str(int(m_pad)),
        "objective": extra or "none",
    }
    if data.monitor is not None:
        # Only with monitor sets, so the fingerprints of sweeps without them are unchanged.
        hm = hashlib.sha256()
        for name, arrays in data.monitor.items():
            hm.update(name.encode() + b"\0")
            _hash_arrays(hm, arrays)
        parts["monitor"] = hm.hexdigest()[:16]
    if data.decorrelation is not None:  # likewise
        hd = hashlib.sha256()
        _hash_arrays(hd, (data.decorrelation["x_alt"], data.decorrelation["order"]))
        parts["decorrelation"] = hd.hexdigest()[:16]
    if data.groups is not None:  # only with groups, so other sweeps keep their fingerprints
        hg = hashlib.sha256()
        _hash_arrays(hg, (data.groups,))
        parts["groups"] = hg.hexdigest()[:16]
    return parts


def sweep_fingerprint(parts: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(parts), sort_keys=True).encode()).hexdigest()[:16]


# A manifest's fields and their types (checked on reading, so a damaged file names itself).
_MANIFEST_FIELDS = {"fingerprint": str, "updates_done": int, "npz": str, "sha256": str}


def _read_manifest(out: Path | None) -> dict | None:
    """The checkpoint manifest of `out` (None if there is none).

    Raises:
      ValueError: naming the file and what to do, if it is not JSON, not an object, or lacks a
        field (or has one of the wrong type).
    """
    if out is None or not (out / CHECKPOINT_META).exists():
        return None
    path = out / CHECKPOINT_META
    fix = (
        f"delete the sweep's checkpoint folder {str(out)!r} to train it again from the start, or "
        "use --overwrite (overwrite=True) to start the whole run again"
    )
    try:
        manifest = io.read_json(path)
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"checkpoint manifest {str(path)!r} is unreadable ({e}); {fix}") from None
    if not isinstance(manifest, dict):
        raise ValueError(
            f"checkpoint manifest {str(path)!r} is invalid: expected a JSON object, got "
            f"{type(manifest).__name__}; {fix}"
        )
    if manifest.get("format") != CHECKPOINT_FORMAT:
        return manifest  # an older format (or none): _check_manifest names it
    for field, kind in _MANIFEST_FIELDS.items():
        value = manifest.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ValueError(
                f"checkpoint manifest {str(path)!r} is invalid: field {field!r} is "
                f"{'missing' if field not in manifest else repr(value)}, expected a "
                f"{kind.__name__}; {fix}"
            )
    return manifest


def _write_checkpoint(
    out: Path,
    updates_done: int,
    host: TrainState,
    history: Mapping[str, Sequence[np.ndarray]],
    fingerprint: str,
    parts: Mapping[str, str],
) -> None:
    """The npz under a content-hash name, then the manifest (the commit point), then cleanup.

    `host` is the state on the host (`state_to_host`), gathered by every process beforehand.
    """
    hist = {k: np.concatenate(v, axis=1) for k, v in history.items()}
    data = _npz_bytes({"state": host, "history": hist})
    digest = hashlib.sha256(data).hexdigest()
    name = f"{CHECKPOINT_PREFIX}{digest[:16]}.npz"
    io.atomic_write_bytes(out / name, data)
    _write_manifest(
        out,
        {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": fingerprint,
            "fingerprint_parts": dict(parts),
            "updates_done": int(updates_done),
            "npz": name,
            "sha256": digest,
        },
    )
    _clean_folder(out, keep_npz=name)


def _write_manifest(out: Path, manifest: Mapping[str, Any]) -> None:
    io.atomic_write_bytes(out / CHECKPOINT_META, (json.dumps(manifest, indent=2) + "\n").encode())


def _jsonl_bytes(recs: Sequence[Mapping[str, Any]]) -> bytes:
    return "".join(json.dumps(io.to_jsonable(r)) + "\n" for r in recs).encode()


def _check_manifest(
    out: Path,
    manifest: Mapping[str, Any],
    fingerprint: str,
    parts: Mapping[str, str],
    total_periods: int,
    eval_every: int,
) -> int:
    """Checks a manifest against this sweep (before compiling); returns the periods done."""
    where = str(out / CHECKPOINT_META)
    if manifest.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"resume=True is invalid: expected a checkpoint of format {CHECKPOINT_FORMAT} in "
            f"{where!r}, got format {manifest.get('format', 1)} (written by an older sbjax); "
            "use --overwrite (overwrite=True) to start again"
        )
    if manifest.get("fingerprint") != fingerprint:
        old = manifest.get("fingerprint_parts", {})
        differ = sorted(k for k in {*parts, *old} if old.get(k) != parts.get(k))
        if "padding_models" in differ:  # the only part that depends on the machine
            differ[differ.index("padding_models")] = "padding_models (another device count)"
        raise ValueError(
            f"resume=True is invalid: expected the configuration of the checkpoint in {where!r} "
            f"(fingerprint {manifest.get('fingerprint')}), got {fingerprint}; differing parts: "
            f"{', '.join(differ) or 'unknown'}; use --overwrite (overwrite=True) to start again"
        )
    updates_done = manifest["updates_done"]
    if isinstance(updates_done, bool) or not isinstance(updates_done, int):
        updates_done = -1
    periods_done, rem = divmod(updates_done, eval_every)
    if rem or not 0 <= periods_done <= total_periods:
        raise ValueError(
            f"checkpoint {where!r} is inconsistent: updates_done="
            f"{manifest['updates_done']!r} is not a multiple of eval_every="
            f"{eval_every} within the budget of {total_periods * eval_every}"
        )
    return periods_done


def _load_checkpoint(
    out: Path,
    manifest: Mapping[str, Any],
    like: TrainState,
    eval_every: int,
    history_keys: Sequence[str] = HISTORY_KEYS,
):
    """Loads the npz a checked manifest names, verifying its hash and its progress.

    Returns:
      (host state [M, ...], history {name: [M, periods_done]}).
    """
    where = str(out / CHECKPOINT_META)
    npz = out / manifest["npz"]
    if not npz.exists():
        raise FileNotFoundError(
            f"checkpoint {where!r} names {str(npz)!r}, which is missing; use "
            "--overwrite (overwrite=True) to start again"
        )
    data = npz.read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
        raise ValueError(
            f"checkpoint file {str(npz)!r} is corrupt (its sha256 differs from the "
            f"one in {where!r}); use --overwrite (overwrite=True) to start again"
        )
    loaded = _load_npz_bytes(data, {"state": like, "history": {k: 0 for k in history_keys}})
    st, hist = loaded["state"], {k: np.asarray(v) for k, v in loaded["history"].items()}
    updates_done = int(manifest["updates_done"])
    if hist["step"].shape[1] != updates_done // eval_every or np.any(
        np.asarray(st.step) != updates_done
    ):
        raise ValueError(
            f"checkpoint {where!r} is inconsistent: updates_done={updates_done} but "
            "the stored state or history is at another step"
        )
    return st, hist


class Checkpointer:
    """The checkpoint folder of one sweep: fingerprint, resume and atomic commits.

    Construction reads the manifest and checks it against the plan (before anything compiles);
    `restore` loads the committed state and history and rewrites metrics.jsonl from them;
    `commit` writes a chunk (npz, then the manifest by an atomic rename, then the metric rows).
    Without `out_dir` every method is a no-op.
    """

    def __init__(self, plan: SweepPlan, *, resume: bool, overwrite: bool):
        self.plan, self.out = plan, plan.out
        self.fingerprint, self.parts, self.periods_done = None, None, 0
        has_manifest = self.out is not None and (self.out / CHECKPOINT_META).exists()
        if has_manifest and not resume:
            if not overwrite:
                raise FileExistsError(
                    f"{str(self.out)!r} already holds a training checkpoint; pass resume=True "
                    "(--resume) to continue it or overwrite=True (--overwrite) to start again"
                )
            _remove_checkpoint(self.out)
        manifest = _read_manifest(self.out) if resume else None
        self.manifest = manifest
        if self.out is not None:
            self.parts = fingerprint_parts(
                plan.cfg,
                plan.model,
                plan.data_host,
                plan.seed_indices,
                plan.n_members,
                plan.points,
                plan.seed,
                plan.m_pad,
                extra=objective_part(plan.trainer, plan.inputs),
            )
            self.fingerprint = sweep_fingerprint(self.parts)
            if manifest is not None:
                self.periods_done = _check_manifest(
                    self.out,
                    manifest,
                    self.fingerprint,
                    self.parts,
                    plan.total_periods,
                    plan.cfg.eval_every,
                )

    def restore(self, state: TrainState, sharding) -> tuple[TrainState, dict]:
        """(state, history lists) after a resume (the fresh ones otherwise); cleans the folder."""
        plan, out = self.plan, self.out
        keys = plan.trainer.history_keys
        history: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        recs: list[dict] = []
        if self.manifest is not None:
            st, hist = _load_checkpoint(
                out, self.manifest, state_to_host(state), plan.cfg.eval_every, keys
            )
            state = put_global(st._replace(key=jax.random.wrap_key_data(st.key)), sharding)
            history = {k: [hist[k]] for k in keys}
            recs = plan.metric_rows(hist, 0)
            log.info(
                "resuming %s at update %d of %d",
                out,
                self.periods_done * plan.cfg.eval_every,
                plan.total_periods * plan.cfg.eval_every,
            )
        if out is not None and jax.process_index() == 0:
            # metrics.jsonl mirrors the checkpoint: rows written after it, a torn last line of a
            # killed append, and leftovers of a run killed before its first checkpoint all go, as
            # do temporary files of killed writes and npz files no manifest names.
            _clean_folder(out, keep_npz=self.manifest["npz"] if self.manifest else None)
            io.atomic_write_bytes(out / METRICS, _jsonl_bytes(recs))
        return state, history

    def commit(self, periods_done: int, n_new: int, state, history, rows) -> None:
        if self.out is None:
            return
        # Gathering a state sharded over several processes is a collective: every process takes
        # part (a gather on process 0 alone would wait forever), and only process 0 writes.
        host = state_to_host(state)
        if jax.process_index() != 0:
            return
        plan = self.plan
        _write_chunk(
            self.out,
            periods_done,
            n_new,
            host,
            history,
            rows,
            self.fingerprint,
            self.parts,
            plan.cfg.eval_every,
            plan.m,
            plan.n_grid,
            plan.n_members,
            plan.seed_indices,
        )


def _write_chunk(
    out: Path,
    periods_done: int,
    n_new: int,
    host,
    history,
    rows,
    fingerprint,
    parts,
    eval_every,
    m,
    n_grid,
    n_members,
    seed_indices,
) -> None:
    """Checkpoint (committed by its manifest) first, then the chunk's metric rows: a kill in
    between loses no checkpointed work, and resume rewrites metrics.jsonl from the checkpoint.

    Args:
      periods_done: evaluation periods done after this chunk (the checkpoint stores
        `periods_done * eval_every` updates, a unit independent of the chunk size).
      n_new: periods in this chunk; `rows` holds their history, {name: [M, n_new]}.
    """
    out.mkdir(parents=True, exist_ok=True)
    _write_checkpoint(out, periods_done * eval_every, host, history, fingerprint, parts)
    recs = metric_rows(rows, periods_done - n_new, m, n_grid, n_members, seed_indices)
    io.append_jsonl(out / METRICS, recs)
