"""Run folders and atomic writes.

A run folder holds `config.json`, `env.json`, `summary.json`, `metrics.csv`, figures and parameters.
Every write goes to a temporary file in the same folder and is renamed into place, so a killed run
never leaves a half-written file, and an existing run folder is never reused without `overwrite`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import secrets
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

RUN_MARKER = "config.json"


def _fsync_dir(folder: Path) -> None:
    """Makes a rename in `folder` durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` through a flushed temporary file in the same folder and one rename.

    A reader (or a resumed run) sees either the old file or the new one, never a torn one. The
    temporary file is created with mode 0o666 and O_EXCL, so the kernel applies the umask (and
    default ACLs) exactly as for any file the user creates (mkstemp would leave it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


_atomic_write_bytes = atomic_write_bytes  # old private name, kept for callers


def remove_stale_tmp(folder: str | os.PathLike) -> list[Path]:
    """Deletes temporary files `.<name>.*.tmp` left in `folder` by a killed `atomic_write_bytes`.

    Returns:
      The removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.glob(".*.tmp"):
        if p.is_file():
            p.unlink()
            removed.append(p)
    return removed


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
    """Records of a JSON-lines file; a torn LAST line (a kill during an append) is skipped.

    Raises:
      ValueError: if a line other than the last is not valid JSON (the file is damaged).
    """
    path = Path(path)
    if not path.exists():
        return []
    with open(path) as f:
        lines = [ln.strip() for ln in f]
    lines = [ln for ln in lines if ln]
    out = []
    for i, line in enumerate(lines):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break  # torn last line: the record was never completely written
            raise ValueError(f"{str(path)!r}: line {i + 1} is not valid JSON") from None
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


def save_tree(stem: str | os.PathLike, tree: Any) -> None:
    """Saves a nested structure of dicts / lists / scalars / strings / arrays without pickle.

    Arrays (numpy or jax, any size) go to `<stem>.npz`; everything else, with references to the
    arrays, to `<stem>.json` (written last: its presence means the pair is complete). Used for the
    data behind figures, so a figure can be redrawn from a run folder.
    """
    stem = Path(stem)
    arrays: dict[str, np.ndarray] = {}

    def encode(obj: Any) -> Any:
        if hasattr(obj, "__dataclass_fields__"):
            import dataclasses

            obj = dataclasses.asdict(obj)
        if isinstance(obj, Mapping):
            return {str(k): encode(v) for k, v in obj.items()}
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # NamedTuple
            return {k: encode(v) for k, v in obj._asdict().items()}
        if isinstance(obj, (list, tuple)):
            return [encode(v) for v in obj]
        if hasattr(obj, "shape") and hasattr(obj, "dtype") and np.ndim(obj) > 0:
            key = f"a{len(arrays)}"
            arrays[key] = np.asarray(obj)
            return {"__array__": key}
        return to_jsonable(obj)

    doc = {"format": 1, "tree": encode(tree)}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(stem.with_suffix(".npz"), buf.getvalue())
    atomic_write_bytes(stem.with_suffix(".json"), (json.dumps(doc) + "\n").encode())


def load_tree(stem: str | os.PathLike) -> Any:
    """Loads a structure written by `save_tree` (arrays as numpy arrays).

    Raises:
      FileNotFoundError / ValueError: naming the file, if the JSON or the npz it refers to is
        missing, unreadable or incomplete.
    """
    stem = Path(stem)
    js, npz = stem.with_suffix(".json"), stem.with_suffix(".npz")
    try:
        doc = read_json(js)
    except FileNotFoundError:
        raise FileNotFoundError(f"{str(js)!r} is missing") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{str(js)!r} is not valid JSON ({e})") from None
    if not isinstance(doc, dict) or "tree" not in doc:
        raise ValueError(f"{str(js)!r} is invalid: expected a saved tree {{'format', 'tree'}}")
    try:
        data = np.load(npz, allow_pickle=False) if npz.exists() else {}
    except (OSError, ValueError) as e:
        raise ValueError(f"{str(npz)!r} is unreadable ({e})") from None

    def decode(obj: Any) -> Any:
        if isinstance(obj, dict):
            if set(obj) == {"__array__"}:
                if obj["__array__"] not in data:
                    what = "is missing" if not npz.exists() else f"lacks array {obj['__array__']!r}"
                    raise ValueError(f"{str(npz)!r} {what} (needed by {str(js)!r})")
                return np.asarray(data[obj["__array__"]])
            return {k: decode(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [decode(v) for v in obj]
        return obj

    return decode(doc["tree"])


def _protected_dirs() -> list[Path]:
    """Folders `--overwrite` never touches: the working directory, $HOME, and every folder that
    contains either of them (their parents, up to /)."""
    protected = []
    homes = [Path.home()]
    if os.environ.get("HOME"):
        homes.append(Path(os.environ["HOME"]))
    for base in [Path.cwd(), *homes]:
        base = base.resolve()
        protected += [base, *base.parents]
    return protected


def is_run_dir(path: str | os.PathLike, experiment: str | None = None) -> bool:
    """Whether `path` is an sbjax run folder (of `experiment`, if given).

    The marker is `config.json` written by sbjax: a JSON object whose "experiment" names the
    experiment that made it.
    """
    marker = Path(path) / RUN_MARKER
    try:
        cfg = read_json(marker)
    except (OSError, ValueError):
        return False
    if not isinstance(cfg, dict) or not isinstance(cfg.get("experiment"), str):
        return False
    return experiment is None or cfg["experiment"] == experiment


def check_run_dir(
    out: str | os.PathLike, *, experiment: str, overwrite: bool = False, resume: bool = False
) -> Path:
    """Checks that `out` may be used as this run's folder, without touching the disk.

    Rules: `out` is a non-empty path and not an existing file; an existing non-empty folder is
    reused only with `resume` or replaced only with `overwrite`, and then only if it is an sbjax
    run folder of the same `experiment` (its `config.json` says so); `out` is never the working
    directory, $HOME, or a folder that contains either.

    Returns:
      The path (as given, made a `Path`).

    Raises:
      ValueError: bad `out` or flags; FileExistsError: `out` holds something that may not be
      reused or replaced.
    """
    if out is None or str(out).strip() == "":
        raise ValueError(f"out={out!r} is invalid: expected a folder path")
    if overwrite and resume:
        raise ValueError("overwrite=True and resume=True are exclusive: pick one")
    out_p = Path(out)
    res = out_p.resolve()
    if res in _protected_dirs():
        raise ValueError(
            f"out={str(out)!r} is invalid: it is the working directory, $HOME or a folder that "
            "contains one of them; expected a run folder of its own (e.g. runs/<name>)"
        )
    if out_p.exists() and not out_p.is_dir():
        raise ValueError(f"out={str(out)!r} is invalid: it is an existing file, expected a folder")
    if out_p.is_dir() and any(out_p.iterdir()):
        if not (overwrite or resume):
            raise FileExistsError(
                f"run folder {str(out)!r} already exists and is not empty; pass --resume to "
                "continue it or --overwrite to replace it"
            )
        if not is_run_dir(out_p, experiment):
            verb = "replace" if overwrite else "resume"
            found = read_json(out_p / RUN_MARKER).get("experiment") if is_run_dir(out_p) else None
            what = (
                f"a run folder of experiment {found!r}"
                if found is not None
                else f"not an sbjax run folder (no {RUN_MARKER} written by sbjax)"
            )
            raise FileExistsError(
                f"refusing to {verb} {str(out)!r}: it is {what}, expected a run folder of "
                f"{experiment!r}; choose another --out"
            )
    return out_p


# ----------------------------------------------------------------------------------------------
# What sbjax wrote into a run folder: `--overwrite` replaces only that.
# ----------------------------------------------------------------------------------------------

OWNED_RECORD = "sbjax_files.json"
# A run folder written before sbjax kept OWNED_RECORD: the names every experiment writes (figure
# PNGs are added from the figure data that names them).
_LEGACY_OWNED = (
    RUN_MARKER,
    "env.json",
    "summary.json",
    "metrics.csv",
    "report.md",
    "params",
    "sweeps",
    "figures",
    "logs",
)


def owned_entries(folder: str | os.PathLike) -> set[str]:
    """Top-level names in a run folder that sbjax wrote (files and folders).

    Read from `sbjax_files.json` (kept by `record_owned`); for an older run folder without it,
    the names every experiment writes plus the PNGs its saved figure data names.

    Raises:
      ValueError: naming the file, if `sbjax_files.json` exists but is not a JSON list of names.
    """
    folder = Path(folder)
    rec = folder / OWNED_RECORD
    if rec.exists():
        try:
            names = read_json(rec)
        except (OSError, ValueError) as e:
            raise ValueError(
                f"{str(rec)!r} is unreadable ({e}); it lists the files sbjax wrote into this run "
                "folder: fix or delete it by hand (deleting it makes --overwrite replace only the "
                "standard result files)"
            ) from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(
                f"{str(rec)!r} is invalid: expected a JSON list of file names written by sbjax; "
                "fix or delete it by hand"
            )
        return {n for n in names if n and "/" not in n and n not in (".", "..")} | {OWNED_RECORD}
    names = {n for n in _LEGACY_OWNED if (folder / n).exists()}
    for spec in sorted((folder / "figures").glob("*.json")):
        try:
            doc = read_json(spec)
            name = doc["tree"]["file"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(name, str) and "/" not in name:
            names.add(name)
    return names


def record_owned(folder: str | os.PathLike, *names: str) -> None:
    """Adds top-level entries of `folder` to its `sbjax_files.json` (atomically; no-op if known).

    Args:
      folder: a run folder. names: file or folder names directly inside it (a path inside a
        subfolder records the subfolder).
    """
    folder = Path(folder)
    top = {Path(n).parts[0] for n in names if str(n)}
    rec = folder / OWNED_RECORD
    have = set(read_json(rec)) if rec.exists() else set()
    if top <= have and rec.exists():
        return
    write_json(rec, sorted(have | top | {OWNED_RECORD}))


def replace_owned(folder: str | os.PathLike) -> list[str]:
    """Deletes what sbjax wrote into `folder` (`owned_entries`); returns the names it kept.

    A file a user put into the run folder (notes, a paper draft) is never deleted: it is kept and
    named in the returned list (and in a log line).
    """
    folder = Path(folder)
    owned = owned_entries(folder)
    kept = []
    for entry in sorted(folder.iterdir()):
        if entry.name in owned:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        elif not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
            kept.append(entry.name)
    if kept:
        import logging

        logging.getLogger(__name__).warning(
            "--overwrite replaced sbjax's files in %s and kept %d file(s) it did not write: %s",
            folder,
            len(kept),
            ", ".join(kept),
        )
    return kept


def prepare_run_dir(
    out: str | os.PathLike, *, experiment: str, overwrite: bool = False, resume: bool = False
) -> Path:
    """Creates (or reopens, or replaces) a run folder without ever deleting what a user owns.

    Call it only after every argument, the data and the model names have been checked, so a
    failed start leaves nothing behind. See `check_run_dir` for the rules; `overwrite` deletes
    only the files sbjax wrote (`replace_owned`), so a user's notes in the folder survive.

    Args:
      out: the run folder.
      experiment: the experiment's name, recorded in (and checked against) `config.json`.
      overwrite: replace an existing run folder of the same experiment.
      resume: reopen an existing run folder of the same experiment and keep its contents.

    Returns:
      The folder, which exists afterwards.
    """
    out_p = check_run_dir(out, experiment=experiment, overwrite=overwrite, resume=resume)
    if out_p.is_dir() and any(out_p.iterdir()) and overwrite:
        replace_owned(out_p)
    out_p.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(out_p)
    return out_p


# ----------------------------------------------------------------------------------------------
# One run at a time per folder.
# ----------------------------------------------------------------------------------------------


class RunLockedError(RuntimeError):
    """Another live process holds the run folder's lock."""


def lock_path(out: str | os.PathLike) -> Path:
    """The lock file of run folder `out`: `.<name>.sbjax-lock` beside it (never inside it, so a
    lock exists before the folder does and `--overwrite` cannot delete it)."""
    res = Path(out).resolve()
    return res.parent / f".{res.name}.sbjax-lock"


class RunLock:
    """An exclusive lock on a run folder for the life of a run.

    The lock file (`lock_path`) holds the owner's pid, host, experiment and start time, and is
    held with `fcntl.flock`, which the kernel releases when the owner exits however it exits, so
    a lock left by a killed run is stale by construction: the next run takes it over (and says
    so). Where flock is not available, a lock file of a dead pid on this host is stale. A second
    run on the same folder fails at once with `RunLockedError` naming the holder.
    """

    _held: dict[Path, RunLock] = {}  # this process's locks, by path

    def __init__(self, out: str | os.PathLike, experiment: str = "") -> None:
        self.out = Path(out).resolve()
        self.path = lock_path(out)
        self.experiment = experiment
        self._fd: int | None = None

    def _holder(self) -> dict:
        try:
            doc = json.loads(self.path.read_text() or "{}")
            return doc if isinstance(doc, dict) else {}
        except (OSError, ValueError):
            return {}

    def _refuse(self, holder: Mapping[str, Any]) -> None:
        who = (
            f"pid {holder.get('pid')} on host {holder.get('host')!r} "
            f"({holder.get('experiment') or 'an sbjax run'}, started {holder.get('started')})"
            if holder
            else "another process"
        )
        raise RunLockedError(
            f"run folder {str(self.out)!r} is in use by {who}: "
            "two runs on one --out would corrupt each other. Wait for it to finish, or choose "
            f"another --out; if that process is gone, delete {str(self.path)!r}"
        )

    def acquire(self) -> RunLock:
        """Takes the lock (replacing a stale one) or raises `RunLockedError`."""
        import fcntl
        import socket
        import time as _time

        old = RunLock._held.pop(self.path, None)
        if old is not None:  # an earlier run of this process that ended without release()
            old.release()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self._refuse(self._holder())
            except OSError:  # no flock on this file system: fall back to the recorded pid
                holder = self._holder()
                if _alive_here(holder):
                    os.close(fd)
                    self._refuse(holder)
            # The file may have been unlinked (released) between open and flock: retry then.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        stale = self._holder()
        if stale.get("pid") not in (None, os.getpid()):
            import logging

            logging.getLogger(__name__).warning(
                "run folder lock %s was left by pid %s on %r (%s), which no longer holds it: "
                "taking it over",
                self.path,
                stale.get("pid"),
                stale.get("host"),
                stale.get("started"),
            )
        doc = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "experiment": self.experiment,
            "started": _time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(doc) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        RunLock._held[self.path] = self
        return self

    def release(self) -> None:
        """Deletes the lock file and releases the lock (idempotent)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # before unlocking: a waiter re-checks the inode and retries
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None
        if RunLock._held.get(self.path) is self:
            del RunLock._held[self.path]

    @classmethod
    def release_all(cls) -> None:
        """Releases every run lock this process holds (an experiment's end, however it ends)."""
        for lock in list(cls._held.values()):
            lock.release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _alive_here(holder: Mapping[str, Any]) -> bool:
    """Whether a lock file's recorded owner is a live process on this host."""
    import socket

    pid = holder.get("pid")
    if not isinstance(pid, int) or holder.get("host") != socket.gethostname():
        return bool(holder)  # another host's lock cannot be checked from here: treat it as held
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _git_commit() -> str | None:
    """The sbjax source tree's git commit (with "+dirty" for local changes), if it is a clone."""
    import subprocess

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu_info() -> dict[str, Any]:
    """CPU model and instruction-set flags (Linux /proc/cpuinfo), which decide float rounding of
    XLA:CPU's kernels and so whether two machines give bit-identical results."""
    info: dict[str, Any] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "model name" and "cpu_model" not in info:
                    info["cpu_model"] = val.strip()
                elif key == "flags" and "cpu_flags" not in info:
                    flags = val.split()
                    info["cpu_flags"] = sorted(
                        f for f in flags if f.startswith(("avx", "fma", "sse4", "amx", "f16c"))
                    )
    except OSError:
        pass
    return info


def environment_info() -> dict[str, Any]:
    """Versions, commit, CPU and devices, written to `env.json` in every run folder.

    Records what decides whether two runs can be bit-identical: the sbjax commit, jax / jaxlib
    versions, the CPU model and vector flags, the devices and XLA_FLAGS.
    """
    info: dict[str, Any] = {
        "sbjax_commit": _git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        **_cpu_info(),
    }
    try:
        import jax

        info["jax"] = jax.__version__
        try:
            import jaxlib

            info["jaxlib"] = jaxlib.__version__
        except Exception:  # pragma: no cover
            pass
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
