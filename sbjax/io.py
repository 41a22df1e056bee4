"""Run folders and atomic writes.

A run folder holds `config.json`, `env.json`, `summary.json`, `metrics.csv`, figures and parameters.
Every write goes to a temporary file in the same folder and is renamed into place, so a killed run
never leaves a half-written file, and an existing run folder is never reused without `overwrite`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

RUN_MARKER = "config.json"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def to_jsonable(obj: Any) -> Any:
    """Converts numpy / jax scalars and arrays (and tuples, dataclasses) into JSON types."""
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        return np.asarray(obj).tolist()
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return str(obj)  # JSON has no NaN/inf; keep them visible rather than crash
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically writes `obj` as indented JSON."""
    text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False)
    _atomic_write_bytes(Path(path), (text + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    """Atomically writes a list of dict rows as CSV (columns: union of keys, first-seen order)."""
    rows = [dict(to_jsonable(r)) for r in rows]
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols)
    w.writeheader()
    for r in rows:
        w.writerow(r)
    _atomic_write_bytes(Path(path), buf.getvalue().encode())


def append_jsonl(path: str | os.PathLike, records: Iterable[Mapping[str, Any]]) -> None:
    """Appends records to a JSON-lines file (one flushed write per call)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(to_jsonable(r)) + "\n" for r in records)
    with open(path, "a") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                out.append(json.loads(line))
    return out


def save_npz(path: str | os.PathLike, tree: Any) -> None:
    """Atomically saves a pytree of arrays as a flat `.npz` (keys are '/'-joined tree paths)."""
    import jax

    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    arrays = {jax.tree_util.keystr(p): np.asarray(v) for p, v in flat}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    _atomic_write_bytes(Path(path), buf.getvalue())


def load_npz(path: str | os.PathLike, like: Any) -> Any:
    """Loads a `.npz` written by `save_npz` into the structure of `like`."""
    import jax

    data = np.load(path)
    flat, treedef = jax.tree_util.tree_flatten_with_path(like)
    leaves = [data[jax.tree_util.keystr(p)] for p, _ in flat]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def prepare_run_dir(out: str | os.PathLike, *, overwrite: bool = False, resume: bool = False) -> Path:
    """Creates (or reopens) a run folder without ever clobbering earlier results.

    Args:
      out: the run folder.
      overwrite: delete an existing run folder first.
      resume: reopen an existing run folder and keep its contents.

    Raises:
      FileExistsError: if `out` already holds a run and neither flag is given.
    """
    out = Path(out)
    if overwrite and resume:
        raise ValueError("overwrite=True and resume=True are exclusive: pick one")
    if out.exists() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
        elif not resume:
            raise FileExistsError(
                f"run folder {str(out)!r} already exists and is not empty; pass --resume to continue "
                "it or --overwrite to replace it"
            )
    out.mkdir(parents=True, exist_ok=True)
    return out


def environment_info() -> dict[str, Any]:
    """Versions and devices, written to `env.json` in every run folder."""
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import jax

        info["jax"] = jax.__version__
        info["backend"] = jax.default_backend()
        info["devices"] = [str(d) for d in jax.devices()]
        info["process_count"] = jax.process_count()
    except Exception as e:  # pragma: no cover - env info must never crash a run
        info["jax_error"] = repr(e)
    for mod in ("flax", "optax", "numpy", "chex"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:
            pass
    info["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    return info
