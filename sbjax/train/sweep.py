"""Train a whole sweep (seeds x ensemble members x hyperparameter points) as one program.

`train_sweep` is the host loop around `Trainer`: it lays the models along one axis, shards that axis
over every device (JAX's own sharding: a 1-D `Mesh`, `NamedSharding(mesh, P("model"))` for keys,
hyperparameters, state and outputs, `P()` for the data), and runs the compiled program in chunks
of evaluation periods. Between chunks it updates a progress bar, writes a checkpoint and appends
metrics to `metrics.jsonl`, so `resume=True` continues a killed run to results identical to an
uninterrupted one.

Model order is seed-major: model m = (seed * n_members + member) * n_grid + grid_point. Every grid
point of a (seed, member) shares its PRNG key (same init and batch order: common random numbers),
and the key of (seed s, member j) is `fold_in(fold_in(key(seed), s), j)`, independent of the sweep
size, so seed s of a sweep equals a single run with seed index s.

With `unit_size` K > 1 the sharded axis holds training units of K consecutive members of one seed
(`sbjax.train.units`: unit u = (seed * n_units + unit) * n_grid + grid_point, state leaves
[U, K, ...]); results, metrics.jsonl and the history are still in model order. The code is three
parts: `plan_sweep` (checks, grid, layout, padding, hyperparameters), `Checkpointer` (fingerprint,
resume, atomic commits) and `ChunkDriver` (compiled chunks or a host loop, progress bar).

Checkpoint folder (`out_dir`):

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

Note: `shard_map(vmap(train))` with the default `check_vma=True` silently sums gradients of
key-independent parameters across the models of a device (DESIGN.md); plain `jit` with explicit
shardings has no cross-model collectives, which the tests check on the compiled program.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import hashlib
import io as _bytes_io
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sbjax import io
from sbjax.models.image import IMAGE_MODELS
from sbjax.train.config import TrainConfig, expand_grid, hparam_arrays, hparam_names
from sbjax.train.engine import (
    HISTORY_KEYS,
    STOP_REASONS,
    TrainData,
    Trainer,
    TrainState,
    make_trainer,
    prepare_data,
)
from sbjax.train.objective import Objective
from sbjax.train.units import (
    UnitLayout,
    _objective_inputs,
    _objective_part,
    _unit_inputs,
    _unit_keys,
)
from sbjax.validate import check_choice, check_int, fail

log = logging.getLogger(__name__)

CHECKPOINT_META = "checkpoint.json"
CHECKPOINT_PREFIX = "checkpoint-"
METRICS = "metrics.jsonl"
# Version 1 (no "format" key) stored `chunks_done` and a fixed `checkpoint.npz`.
# Version 2: optimizer state without inject_hyperparams and no objective part.
CHECKPOINT_FORMAT = 3
_LEGACY_CHECKPOINT = "checkpoint.npz"


def enable_compilation_cache(path: str | os.PathLike, min_compile_time_s: float = 0.5) -> Path:
    """Turns on JAX's persistent compilation cache in `path`, unless the user configured one.

    A resumed run then loads its compiled programs from disk instead of compiling them again.
    JAX's cache is process-global, so this is a process-level switch for entry points (the
    experiment commands call it with ~/.cache/sbjax/xla, shared by every run, so a resume or a
    rerun into another folder loads its programs), not an argument of `train_sweep`. Call it
    before the first compilation that should be cached.

    Args:
      path: cache folder (created if missing).
      min_compile_time_s: cache only programs that took at least this long to compile (JAX's
        `jax_persistent_cache_min_compile_time_secs`; its default is 1 s). Left alone when the
        environment variable JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS is set.

    Returns:
      The cache folder in use: the user's own (`jax_compilation_cache_dir` set through
      `jax.config` or JAX_COMPILATION_CACHE_DIR), which is never overridden, else `path`.
    """
    current = jax.config.jax_compilation_cache_dir
    if current:
        return Path(current)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    return path


@dataclasses.dataclass
class SweepResult:
    """Everything a sweep produced, on the host, padding removed.

    Arrays have a leading model axis M = n_seeds * n_members * n_grid (seed-major order).

    Attributes:
      params: final Flax variables, stacked [M, ...] (numpy leaves).
      best_params: variables at each model's best evaluation (validation accuracy, or train
        accuracy without a validation set).
      best_step: int [M] update count of `best_params`.
      history: name -> float [M, E] per evaluation: step, updates, train_acc, train_loss, val_acc,
        val_loss, val_robust_acc, and monitor_<name>_acc per monitor set of `train_sweep`.
      stop_step: int [M] updates actually applied.
      stop_reason: list of M strings: "converged", "diverged" or "max_steps".
      hparams: name -> float32 [M] traced hyperparameters of each model.
      seed_index, member_index, grid_index: int [M] (member_index counts members of a seed
        across its units: unit = member // unit_size).
      unit_size: K, members per training unit (1: independent models).
      grid_points: the expanded grid (list of dicts), indexed by `grid_index`.
      compile_s, wall_s: compile time and total wall time of this call (s).
    """

    params: Any
    best_params: Any
    best_step: np.ndarray
    history: dict[str, np.ndarray]
    stop_step: np.ndarray
    stop_reason: list[str]
    hparams: dict[str, np.ndarray]
    seed_index: np.ndarray
    member_index: np.ndarray
    grid_index: np.ndarray
    grid_points: list[dict]
    n_seeds: int
    n_members: int
    unit_size: int = 1
    compile_s: float = 0.0
    wall_s: float = 0.0

    @property
    def unit_index(self) -> np.ndarray:
        """int [M]: the training unit of each model within its seed (member // unit_size)."""
        return np.asarray(self.member_index) // self.unit_size

    @property
    def member_in_unit(self) -> np.ndarray:
        """int [M]: position of each model inside its unit (member % unit_size)."""
        return np.asarray(self.member_index) % self.unit_size

    def unit_view(self, a: Any) -> Any:
        """Reshapes leading-axis-M arrays (or pytrees) to
        [n_seeds, n_members // unit_size, unit_size, n_grid, ...] (seed, unit, member, grid)."""
        g, k = len(self.grid_points), self.unit_size
        return jax.tree_util.tree_map(
            lambda v: np.asarray(v).reshape(
                (self.n_seeds, self.n_members // k, k, g) + np.shape(v)[1:]
            ),
            a,
        )

    @property
    def n_models(self) -> int:
        return len(self.stop_reason)

    def by_grid(self, a: Any) -> Any:
        """Reshapes leading-axis-M arrays (or pytrees) to [n_grid, n_seeds * n_members, ...]."""
        g = len(self.grid_points)
        return jax.tree_util.tree_map(
            lambda v: np.swapaxes(np.asarray(v).reshape((-1, g) + np.shape(v)[1:]), 0, 1), a
        )

    def select(self, a: Any, mask: np.ndarray) -> Any:
        """Rows of a leading-axis-M pytree where `mask` [M] is true."""
        return jax.tree_util.tree_map(lambda v: np.asarray(v)[mask], a)


def model_keys(
    seed: int, seed_indices: Sequence[int], n_members: int, n_grid: int, n_pad: int = 0
) -> jax.Array:
    """PRNG keys [M + n_pad] in sweep order (see module docstring); padding gets unused streams."""
    root = jax.random.key(seed)
    keys = []
    for s in seed_indices:
        ks = jax.random.fold_in(root, s)
        for j in range(n_members):
            kj = jax.random.fold_in(ks, j)
            keys.extend([kj] * n_grid)
    for i in range(n_pad):
        keys.append(jax.random.fold_in(jax.random.fold_in(root, 2**31 - 1), i))
    return jnp.stack(keys)


def _mesh(devices: Sequence[Any] | None) -> Mesh:
    return Mesh(np.asarray(_check_devices(devices)), ("model",))


VECTORIZE = ("vmap", "map", "auto")


def _over_models(fn, mesh: Mesh, vectorize: str):
    """Lifts `fn(a, b, data)` of one model to the stacked model axis of (a, b).

    "vmap" batches the models (one program, batched matmuls: the fast choice for FCNs and on
    accelerators). "map" runs each device's models one after another with `lax.map` inside a
    `shard_map`: on CPU, vmapped convolutions become grouped convolutions that cost about twice
    as much per model as a loop (measured for small_cnn), so image models train faster this way.
    `check_vma=False` because the models of a device are independent (no psum is wanted; the
    default check would insert gradient sums for key-independent parameters, DESIGN.md's trap).
    """
    if vectorize == "vmap":
        return jax.vmap(fn, in_axes=(0, 0, None))

    def local(a, b, data):
        return jax.lax.map(lambda ab: fn(ab[0], ab[1], data), (a, b))

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P("model"), P("model"), P()),
        out_specs=P("model"),
        check_vma=False,
    )


LOOPS = ("scan", "host", "auto")
SHARED_ORDER_STREAM = 0x5EED  # fold_in(key(seed), this): the shared batch order's key
# What "auto" picks on CPU, per model family (measured on the 2-core CPU, benchmarks/RESULTS.md,
# "Scan or host loop" and "1-D CNN and GRU programs on CPU"): a scan over a lax.map of the
# models trains cnn1d and the RNNs faster than the vmapped program (16 seeds, 300 updates, 2
# devices: cnn1d 15.8 vs 26.2 s, GRU 20.7 vs 31.5 s per call), because XLA:CPU runs many small
# per-model GEMMs better than their batched form; the host loop with vmap deadlocks there in an
# all-gather. The image CNNs train ~20x faster with the host loop (small_cnn). FCNs keep the
# vmapped, scanned program.
MAP_FAMILIES = ("cnn1d", "gru", "lstm")
HOST_LOOP_FAMILIES = IMAGE_MODELS


def _family_on_cpu(model: Any) -> str | None:
    family = getattr(getattr(model, "config", None), "name", None)
    return family if jax.default_backend() == "cpu" else None


def resolve_loop(loop: str, model: Any) -> str:
    """ "scan" or "host" for `loop` ("auto": "host" for the image CNNs on CPU, else "scan")."""
    if loop != "auto":
        return loop
    return "host" if _family_on_cpu(model) in HOST_LOOP_FAMILIES else "scan"


def resolve_vectorize(vectorize: str, model: Any) -> str:
    """ "vmap" or "map" for `vectorize` ("auto": "map" for cnn1d, GRU, LSTM on CPU, else vmap)."""
    if vectorize != "auto":
        return vectorize
    return "map" if _family_on_cpu(model) in MAP_FAMILIES else "vmap"


def host_loop_programs(trainer: Trainer, mesh: Mesh, vectorize: str = "vmap"):
    """Jitted `update(state, hp, data)` and `end_period(state, hp, data)` over the model axis.

    For `loop="host"`: Python drives the updates of a period one call at a time. XLA:CPU runs
    convolutions inside a while loop (`lax.scan`) about 20x slower than the same step called on
    its own (measured for small_cnn: 1.74 vs 0.08 CPU s per update), so convolutional models on
    CPU train faster this way; per-call dispatch (~0.1 ms) is negligible next to a conv step.
    """
    model_sh = NamedSharding(mesh, P("model"))
    repl = NamedSharding(mesh, P())
    shard = dict(in_shardings=(model_sh, model_sh, repl), out_shardings=model_sh)
    update = jax.jit(_over_models(trainer.update, mesh, vectorize), donate_argnums=(0,), **shard)
    end = jax.jit(
        _over_models(trainer.end_period, mesh, vectorize),
        in_shardings=shard["in_shardings"],
        out_shardings=(model_sh, model_sh),
        donate_argnums=(0,),
    )
    return update, end


def _config_for_fingerprint(cfg: TrainConfig) -> dict:
    """The config's fields as the fingerprint sees them: fields added later are left out at
    their defaults, so checkpoints written before them still resume."""
    d = dataclasses.asdict(cfg)
    for name, default in (("batch_order", "per_model"), ("compute_dtype", "float32")):
        if d.get(name) == default:
            d.pop(name)
    return d


def sharded_programs(
    trainer: Trainer, mesh: Mesh, n_periods: int, vectorize: str = "vmap", order_key=None
):
    """The jitted sweep programs: `init(keys, hp, data)` and `run(state, hp, data)`.

    The model axis of keys, hyperparameters, state and history is sharded over the mesh's "model"
    axis; the data are replicated. Models never interact, so the compiled program has no
    collectives (checked in tests/test_train_sharding.py). With `TrainConfig(batch_order=
    "shared")`, `run` is `Trainer.run_shared` with `order_key` (its only cross-model reads are the
    step counter of unit 0 at each period start).
    """
    model_sh = NamedSharding(mesh, P("model"))
    repl = NamedSharding(mesh, P())
    init_fn = jax.jit(
        _over_models(trainer.init, mesh, vectorize),
        in_shardings=(model_sh, model_sh, repl),
        out_shardings=model_sh,
    )
    if trainer.cfg.batch_order == "shared":
        run = functools.partial(trainer.run_shared, n_periods=n_periods, order_key=order_key)
    else:
        run = _over_models(functools.partial(trainer.run, n_periods=n_periods), mesh, vectorize)
    run_fn = jax.jit(
        run,
        in_shardings=(model_sh, model_sh, repl),
        out_shardings=(model_sh, model_sh),
        donate_argnums=(0,),
    )
    return init_fn, run_fn


_PROGRAM_CACHE: collections.OrderedDict = collections.OrderedDict()
_PROGRAM_CACHE_SIZE = 16


def _compiled_programs(
    trainer: Trainer,
    mesh: Mesh,
    chunk_sizes: Sequence[int],
    model: Any,
    keys,
    hp,
    data,
    vectorize: str,
    loop: str = "scan",
    order_key=None,
):
    """Compiled `init` and one `run` program per chunk size (periods), reused across `train_sweep`
    calls with the same model object, configuration, shapes and devices (e.g. a study that trains
    the same sweep on new data).

    Returns:
      (init, {n_periods: run}); the runs are None for `loop="host"`, which compiles its two small
      programs on first use.
    """
    sig = lambda tree: tuple((a.shape, str(a.dtype)) for a in jax.tree_util.tree_leaves(tree))
    tr = (
        trainer.objective,
        trainer.unit_size,
        trainer.n_unlabeled,
        trainer.unlabeled_batch_size,
        trainer.has_weights,
        trainer.n_frozen,
        trainer.has_init,
        trainer.monitor_names,
    )
    base = (
        id(model.init),
        id(model.apply),
        id(model.logits),
        trainer.cfg,
        trainer.n_train,
        tr,
        tuple(d.id for d in mesh.devices.flat),
        sig(hp),
        sig(data),
        keys.shape,
        vectorize,
        # the shared order's key is a constant of the program
        None if order_key is None else tuple(np.asarray(jax.random.key_data(order_key)).tolist()),
    )

    def cached(key, build):
        hit = _PROGRAM_CACHE.get(key)
        if hit is not None:
            _PROGRAM_CACHE.move_to_end(key)
            return hit[0]
        prog = build()
        _PROGRAM_CACHE[key] = (prog, model)  # the model keeps the ids in `base` alive
        if len(_PROGRAM_CACHE) > _PROGRAM_CACHE_SIZE:
            _PROGRAM_CACHE.popitem(last=False)
        return prog

    init_fn, _ = sharded_programs(trainer, mesh, 1, vectorize)
    init_c = cached(base + ("init",), lambda: init_fn.lower(keys, hp, data).compile())
    runs: dict[int, Any] = {}
    for n in sorted(set(chunk_sizes)):
        if loop != "scan":
            runs[n] = None
            continue

        def build(n=n):
            _, run_fn = sharded_programs(trainer, mesh, n, vectorize, order_key)
            state_shapes = jax.eval_shape(init_fn, keys, hp, data)
            return run_fn.lower(state_shapes, hp, data).compile()

        runs[n] = cached(base + ("run", n), build)
    return init_c, runs


def _put_global(tree: Any, sharding: NamedSharding) -> Any:
    """`jax.device_put` that also works when the mesh spans several processes.

    Every process builds the same host arrays (same seeds, data and grid), so each one fills the
    shards of its own devices from its copy (`jax.make_array_from_callback`); `device_put` of a
    host array onto devices of other processes is an error in JAX. Typed PRNG keys travel as
    their key data and are wrapped again.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(a: Any) -> jax.Array:
        if isinstance(a, jax.Array) and jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(a)
            raw = put(jax.random.key_data(a))
            return jax.random.wrap_key_data(raw, impl=impl)
        host = np.asarray(a)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree_util.tree_map(put, tree)


def _to_host(tree: Any) -> Any:
    if jax.process_count() > 1:  # sharded across hosts: gather the global arrays
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def _state_to_host(state: TrainState) -> TrainState:
    return _to_host(state._replace(key=jax.random.key_data(state.key)))


# ---------------------------------------------------------------------------------------------
# Input checks (before any data preparation or compilation)


def _check_devices(devices: Sequence[Any] | None) -> list:
    if devices is None:
        return list(jax.devices())
    devs = list(devices)
    if not devs:
        fail("devices", devices, "a non-empty sequence of distinct JAX devices, or None for all")
    if len({id(d) for d in devs}) != len(devs):
        fail("devices", devs, "a non-empty sequence of distinct JAX devices, or None for all")
    return devs


def _check_out_dir(out_dir: str | os.PathLike | None) -> Path | None:
    """The checkpoint folder, refused up front if it (or a parent) is an existing file."""
    if out_dir is None:
        return None
    out = Path(out_dir)
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                fail(
                    "out_dir",
                    str(out_dir),
                    f"a folder path (None for no files), but {str(p)!r} is an existing file",
                )
            break
    return out


# ---------------------------------------------------------------------------------------------
# Chunking


def _divisor_at_most(n: int, target: int) -> int:
    return max(d for d in range(1, min(n, max(1, target)) + 1) if n % d == 0)


def _chunk_plan(remaining: int, target: int) -> list[int]:
    """Chunk sizes (periods) that add up to exactly `remaining`.

    A divisor of `remaining` close to `target` needs one compiled run program; when the best
    divisor is under half the target (e.g. a prime number of periods), the plan is `target`-sized
    chunks and one shorter last chunk instead, which costs one more compile but not hundreds of
    tiny chunks.
    """
    if remaining <= 0:
        return []
    d = _divisor_at_most(remaining, target)
    if 2 * d >= min(target, remaining):
        return [d] * (remaining // d)
    q, r = divmod(remaining, target)
    return [target] * q + ([r] if r else [])


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


def _fingerprint_parts(
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
        "train_config": digest(_config_for_fingerprint(cfg)),
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
    return parts


def _fingerprint(parts: Mapping[str, str]) -> str:
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

    `host` is the state on the host (`_state_to_host`), gathered by every process beforehand.
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


def _metric_rows(
    rows: Mapping[str, np.ndarray],
    first_period: int,
    m: int,
    n_grid: int,
    n_members: int,
    seed_indices: Sequence[int],
) -> list[dict]:
    """metrics.jsonl records of evaluations [first_period, ...) from rows {name: [>= m, E]}
    (`HISTORY_KEYS`, then any monitor accuracies, in the order of `rows`).

    Period-major, so the rows of a run are the same whatever its chunking (or resumes) was.
    """
    keys = list(HISTORY_KEYS) + [k for k in rows if k not in HISTORY_KEYS]
    recs = []
    for e in range(rows["step"].shape[1]):
        for i in range(m):
            rec = {
                "period": first_period + e,
                "model": i,
                "seed": int(seed_indices[i // (n_members * n_grid)]),
                "member": (i // n_grid) % n_members,
                "grid": i % n_grid,
            }
            rec.update({k: float(rows[k][i, e]) for k in keys})
            recs.append(rec)
    return recs


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


def train_sweep(
    cfg: TrainConfig,
    model: Any,
    train: tuple[Any, Any],
    val: tuple[Any, Any] | None = None,
    *,
    n_seeds: int = 1,
    seed_indices: Sequence[int] | None = None,
    n_members: int = 1,
    grid: Mapping[str, Sequence[float]] | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    periods_per_chunk: int | None = None,
    devices: Sequence[Any] | None = None,
    progress: bool = True,
    desc: str = "train",
    max_chunks: int | None = None,
    vectorize: str = "vmap",
    loop: str = "scan",
    objective: Objective | None = None,
    unit_size: int = 1,
    example_weights: Any = None,
    unlabeled: Any = None,
    unlabeled_batch_size: int | None = None,
    init_variables: Any = None,
    frozen: Any = None,
    monitor: Mapping[str, tuple[Any, Any]] | None = None,
) -> SweepResult:
    """Trains n_seeds x n_members x |grid| models of one architecture in one compiled program.

    Args:
      cfg: static training settings; its hyperparameter fields are the defaults of the grid.
      model: an `sbjax.models.Model`, or a config accepted by `sbjax.models.make_model`.
      train: (x float32 [N, ...], y int [N] in {0, 1}).
      val: optional selection set (x, y) for best-model selection (REFERENCE.md Sec. 11 item 10:
        the reference selects on its test set; pass it here explicitly to reproduce that).
      n_seeds, n_members: independent initialisations / batch orders (members are keyed apart).
      seed_indices: explicit seed indices to train (default range(n_seeds)); seed index s gives
        the same model in any sweep, so seeds can be added to a study later.
      grid: hyperparameter grid, e.g. {"lr": [0.01, 0.1]}; traced, so one compile for the grid.
      seed: root seed.
      out_dir: checkpoint folder (see the module docstring: checkpoint.json, checkpoint-*.npz,
        metrics.jsonl); None: no files. Only these files are ever written or deleted in it.
      resume: continue from the checkpoint in `out_dir` (must match this configuration; any
        `periods_per_chunk` may be used). Without a checkpoint there, training starts afresh.
      overwrite: delete an existing checkpoint in `out_dir` first.
      periods_per_chunk: evaluation periods per compiled call (checkpoint granularity); the last
        chunk may be shorter so that training ends exactly at the budget. None: about every 1000
        updates and at least ~10 chunks per run.
      devices: devices to shard the model axis over (default: all).
      progress: show a tqdm progress bar (in updates).
      desc: progress-bar label.
      max_chunks: return after this many chunks in this call (time-sliced or preemptible jobs:
        call again with resume=True to continue); the result then holds the partial state.
      vectorize: "vmap" (default) batches the models of a device; "map" loops over them inside
        the compiled program (same results); "auto": "map" for cnn1d, GRU and LSTM on CPU,
        else "vmap".
      loop: "scan" (default) compiles whole chunks of updates into one program; "host" calls a
        compiled single update from Python (same results to float rounding; much faster for
        convolutional models on CPU, see `host_loop_programs`); "auto": "host" for the image
        CNNs (`HOST_LOOP_FAMILIES`) on CPU, else "scan".
      objective: an `sbjax.train.objective.Objective` (penalties with traced strengths
        lambda_<name> that `grid` accepts, a batch transform); None: the plain data loss.
        Evaluation, the stop rule and selection always use the plain data loss.
      unit_size: K, members per training unit. The members of a unit (consecutive member
        indices of one seed) are trained together on the same batches and the objective sees all
        their outputs; `n_members` must be a multiple of K. K = 1 (default): independent models.
      example_weights: float [N] (every model) or [M, N] (per model, in model order) non-negative
        weights of the training examples in the data loss (normalised by the batch's row count, so
        all-ones weights are the unweighted loss). A new array of the same shape reuses the
        compiled program (JTT's second stage, group reweighting).
      unlabeled: [Nu, ...] inputs of an auxiliary unlabeled stream (same per-example shape as the
        training inputs), batched in its own keyed order; the traced hyperparameter
        "unlabeled_mix" (default 1) is the probability that a row of the unlabeled batch comes
        from this pool rather than from the training inputs.
      unlabeled_batch_size: rows of the unlabeled batch (default `cfg.batch_size`).
      init_variables: stacked Flax variables [M, ...] (model order, e.g. a previous stage's
        `result.params`) to start from instead of a fresh initialisation (init_scale unused).
      frozen: variables of frozen members, leaves [F, ...] (shared by every unit) or [M, F, ...]
        (per model; a unit uses the row of its first member). Penalties read their logits as
        `ctx.frozen_logits` / `ctx.frozen_logits_u` (D-BAT's earlier members).
      monitor: name -> (x [n, ...], y [n]) fixed evaluation sets (e.g. the S-randomized and
        S^c-randomized copies of a test subset: the feature timeline). Each evaluation period
        records every model's accuracy on each set inside the compiled program, as the history
        entry `monitor_<name>_acc` [M, E] (also in metrics.jsonl); the checkpoint fingerprint
        covers the sets. None (default): the program and every number of a sweep without them.

    Returns:
      A `SweepResult` (leading axis M in model order whatever K; `unit_size` and `unit_view`
      give the unit layout).

    Raises:
      ValueError: a bad argument (before any data preparation or compilation), or a checkpoint
        that does not match this configuration.
      FileExistsError: `out_dir` holds a checkpoint and neither `resume` nor `overwrite` is set.
    """
    t_start = time.perf_counter()
    plan = plan_sweep(
        cfg,
        model,
        train,
        val,
        n_seeds=n_seeds,
        seed_indices=seed_indices,
        n_members=n_members,
        grid=grid,
        seed=seed,
        devices=devices,
        vectorize=vectorize,
        loop=loop,
        periods_per_chunk=periods_per_chunk,
        max_chunks=max_chunks,
        out_dir=out_dir,
        objective=objective,
        unit_size=unit_size,
        example_weights=example_weights,
        unlabeled=unlabeled,
        unlabeled_batch_size=unlabeled_batch_size,
        init_variables=init_variables,
        frozen=frozen,
        monitor=monitor,
    )
    ckpt = Checkpointer(plan, resume=resume, overwrite=overwrite)  # fingerprint checked here

    model_sh = NamedSharding(plan.mesh, P("model"))
    repl = NamedSharding(plan.mesh, P())
    hp = _put_global(
        {
            **{k: jnp.asarray(v) for k, v in plan.hp_np.items()},
            **jax.tree_util.tree_map(jnp.asarray, plan.hp_in),
        },
        model_sh,
    )
    data = _put_global(jax.tree_util.tree_map(jnp.asarray, plan.data_host), repl)
    keys = _put_global(_unit_keys(plan.seed, plan.seed_indices, plan.layout, plan.m_pad), model_sh)
    chunks = plan.chunks(ckpt.periods_done)

    # The bar appears before compiling, naming what is compiled, so a first run never sits
    # silent for the seconds XLA takes (the persistent cache makes later runs skip this).
    bar = _progress_bar(plan, ckpt.periods_done, desc) if progress else None
    if bar is not None:
        bar.set_postfix_str(
            f"compiling {plan.m} x {getattr(getattr(plan.model, 'config', None), 'name', 'model')} "
            f"({plan.loop} loop, {plan.vectorize})"
        )
    try:
        t0 = time.perf_counter()
        order_key = None
        if plan.cfg.batch_order == "shared":  # one epoch order for the sweep, from its seed
            order_key = jax.random.fold_in(jax.random.key(plan.seed), SHARED_ORDER_STREAM)
        init_c, run_programs = _compiled_programs(
            plan.trainer,
            plan.mesh,
            chunks,
            plan.model,
            keys,
            hp,
            data,
            plan.vectorize,
            plan.loop,
            order_key,
        )
        compile_s = time.perf_counter() - t0
        state = init_c(keys, hp, data)
        state, history = ckpt.restore(state, model_sh)

        driver = ChunkDriver(plan, run_programs)
        state, history = driver.run(state, hp, data, chunks, history, ckpt, bar)
    finally:
        if bar is not None:
            bar.close()  # also on an error or Ctrl-C, so the terminal line is left clean
    return plan.result(state, history, compile_s, time.perf_counter() - t_start)


# ---------------------------------------------------------------------------------------------
# The three parts of a sweep: a plan (checks, grid, layout, padding, hyperparameters), a
# checkpointer (fingerprint, resume, atomic commits) and a chunk driver (compiled chunks or a
# host loop, progress bar).


@dataclasses.dataclass
class SweepPlan:
    """Everything decided before compiling, from arguments checked in milliseconds.

    Attributes:
      layout: the unit layout (`sbjax.train.units.UnitLayout`); `n_u` real units, `m_pad`
        padding units (so that the unit axis divides the device count), `m` real models.
      hp_np: traced hyperparameters, float32 [n_u + m_pad] per name; `hp_in` the per-unit
        inputs of the objective (example weights, init / frozen variables).
      inputs: the validated objective inputs in model order (fingerprinted).
    """

    cfg: TrainConfig
    model: Any
    trainer: Trainer
    data_host: TrainData
    points: list[dict]
    seed: int
    seed_indices: list[int]
    n_seeds: int
    n_members: int
    layout: UnitLayout
    mesh: Mesh
    m_pad: int
    hp_np: dict
    hp_in: dict
    inputs: Any
    out: Path | None
    vectorize: str
    loop: str
    periods_per_chunk: int | None
    max_chunks: int | None

    @property
    def m(self) -> int:
        return self.layout.n_models

    @property
    def n_u(self) -> int:
        return self.layout.n_units_total

    @property
    def n_grid(self) -> int:
        return len(self.points)

    @property
    def total_periods(self) -> int:
        return self.trainer.total_periods

    def chunks(self, periods_done: int) -> list[int]:
        """Chunk sizes (periods) from `periods_done` to the budget (or `max_chunks` of them)."""
        ppc = self.periods_per_chunk
        if ppc is None:
            # A checkpoint and progress update every ~1000 updates, and at least ~10 per run.
            ppc = max(1, min(1000 // self.cfg.eval_every, math.ceil(self.total_periods / 10)))
        plan = _chunk_plan(self.total_periods - periods_done, ppc)
        return plan if self.max_chunks is None else plan[: self.max_chunks]

    def metric_rows(self, rows, first_period: int) -> list[dict]:
        return _metric_rows(
            rows, first_period, self.m, self.n_grid, self.n_members, self.seed_indices
        )

    def result(self, state, history, compile_s: float, wall_s: float) -> SweepResult:
        """The host `SweepResult` in model order, padding removed."""
        m, n_u, k, layout = self.m, self.n_u, self.layout.unit_size, self.layout
        final = _state_to_host(state)
        hist = {
            key: np.concatenate(v, axis=1)[:m] if v else np.zeros((m, 0))
            for key, v in history.items()
        }
        idx = np.arange(m)
        strip = lambda tree: jax.tree_util.tree_map(
            lambda a: layout.to_models(np.asarray(a)[:n_u]), tree
        )
        per_model = lambda v: layout.to_models(
            np.repeat(np.asarray(v)[:n_u, None], k, 1) if k > 1 else np.asarray(v)[:n_u]
        )
        return SweepResult(
            params=strip(final.variables),
            best_params=strip(final.best_variables),
            best_step=strip(final.best_step),
            history=hist,
            stop_step=np.minimum(strip(final.step), strip(final.stop_step)),
            stop_reason=[STOP_REASONS[int(r)] for r in strip(final.stop_reason)],
            hparams={key: per_model(v) for key, v in self.hp_np.items()},
            seed_index=np.asarray(self.seed_indices)[idx // (self.n_members * self.n_grid)],
            member_index=(idx // self.n_grid) % self.n_members,
            grid_index=idx % self.n_grid,
            grid_points=self.points,
            n_seeds=self.n_seeds,
            n_members=self.n_members,
            unit_size=k,
            compile_s=compile_s,
            wall_s=wall_s,
        )


def plan_sweep(
    cfg: TrainConfig,
    model: Any,
    train,
    val=None,
    *,
    n_seeds: int = 1,
    seed_indices: Sequence[int] | None = None,
    n_members: int = 1,
    grid: Mapping[str, Sequence[float]] | None = None,
    seed: int = 0,
    devices: Sequence[Any] | None = None,
    vectorize: str = "vmap",
    loop: str = "scan",
    periods_per_chunk: int | None = None,
    max_chunks: int | None = None,
    out_dir: str | Path | None = None,
    objective: Objective | None = None,
    unit_size: int = 1,
    example_weights=None,
    unlabeled=None,
    unlabeled_batch_size: int | None = None,
    init_variables=None,
    frozen=None,
    monitor=None,
) -> SweepPlan:
    """Checks every argument (in milliseconds, before data preparation), then prepares the data,
    the `Trainer`, the unit layout, padding and hyperparameter arrays (`train_sweep`'s args)."""
    check_choice("vectorize", vectorize, VECTORIZE)
    check_choice("loop", loop, LOOPS)
    if seed_indices is None:
        check_int("n_seeds", n_seeds, min_value=1)
        seed_indices = list(range(n_seeds))
    else:
        seed_indices = [int(i) for i in seed_indices]
        if not seed_indices or min(seed_indices) < 0 or len(set(seed_indices)) != len(seed_indices):
            fail("seed_indices", seed_indices, "a non-empty list of distinct integers >= 0")
        n_seeds = len(seed_indices)
    check_int("n_members", n_members, min_value=1)
    check_int("unit_size", unit_size, min_value=1)
    if n_members % unit_size:
        fail("n_members", n_members, f"a multiple of unit_size={unit_size}")
    if objective is not None and not isinstance(objective, Objective):
        fail("objective", objective, "None or an sbjax.train.objective.Objective")
    if unlabeled is None and unlabeled_batch_size is not None:
        fail("unlabeled_batch_size", unlabeled_batch_size, "None without an unlabeled pool")
    if unlabeled_batch_size is not None:
        check_int("unlabeled_batch_size", unlabeled_batch_size, min_value=1)
    if periods_per_chunk is not None:
        check_int("periods_per_chunk", periods_per_chunk, min_value=1)
    if max_chunks is not None:
        check_int("max_chunks", max_chunks, min_value=0)
    devs = _check_devices(devices)
    out = _check_out_dir(out_dir)
    if not hasattr(model, "init"):
        from sbjax.models import make_model

        model = make_model(model)
    loop = resolve_loop(loop, model)
    vectorize = resolve_vectorize(vectorize, model)
    if cfg.batch_order == "shared" and (vectorize != "vmap" or loop != "scan"):
        fail(
            "batch_order",
            "shared",
            f"'per_model' with vectorize={vectorize!r}, loop={loop!r} (the shared order runs in "
            "the vmapped, scanned program)",
        )
    extra_hp = {"unlabeled_mix": 1.0} if unlabeled is not None else {}
    points = expand_grid(grid, hparam_names(cfg, objective) + tuple(extra_hp))
    data_host = prepare_data(cfg, train, val, monitor)
    k_unit = int(unit_size)
    n_units = n_members // k_unit
    layout = UnitLayout(n_seeds, n_units, k_unit, len(points))
    inputs = _objective_inputs(
        cfg,
        model,
        data_host,
        layout,
        example_weights,
        unlabeled,
        unlabeled_batch_size,
        init_variables,
        frozen,
    )
    if inputs.x_u is not None:
        data_host = dataclasses.replace(data_host, x_u=inputs.x_u)
    trainer = make_trainer(
        cfg,
        model,
        data_host,
        objective=objective,
        unit_size=k_unit,
        unlabeled_batch_size=unlabeled_batch_size,
        has_weights=inputs.weights is not None,
        n_frozen=inputs.n_frozen,
        has_init=inputs.init is not None,
    )
    mesh = _mesh(devs)
    m_pad = -layout.n_units_total % mesh.devices.size  # padding units
    hp_np = hparam_arrays(cfg, points, n_seeds * n_units, objective, extra_hp)
    hp_np = {k: np.concatenate([v, np.repeat(v[-1:], m_pad)]) for k, v in hp_np.items()}
    return SweepPlan(
        cfg=cfg,
        model=model,
        trainer=trainer,
        data_host=data_host,
        points=points,
        seed=seed,
        seed_indices=seed_indices,
        n_seeds=n_seeds,
        n_members=n_members,
        layout=layout,
        mesh=mesh,
        m_pad=m_pad,
        hp_np=hp_np,
        hp_in=_unit_inputs(inputs, layout, m_pad),
        inputs=inputs,
        out=out,
        vectorize=vectorize,
        loop=loop,
        periods_per_chunk=periods_per_chunk,
        max_chunks=max_chunks,
    )


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
            self.parts = _fingerprint_parts(
                plan.cfg,
                plan.model,
                plan.data_host,
                plan.seed_indices,
                plan.n_members,
                plan.points,
                plan.seed,
                plan.m_pad,
                extra=_objective_part(plan.trainer, plan.inputs),
            )
            self.fingerprint = _fingerprint(self.parts)
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
                out, self.manifest, _state_to_host(state), plan.cfg.eval_every, keys
            )
            state = _put_global(st._replace(key=jax.random.wrap_key_data(st.key)), sharding)
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
        host = _state_to_host(state)
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


def _progress_bar(plan: SweepPlan, periods_done: int, desc: str):
    """A tqdm bar in updates (process 0 only; None elsewhere)."""
    if jax.process_index() != 0:
        return None
    from tqdm.auto import tqdm

    every = plan.cfg.eval_every
    return tqdm(
        total=plan.total_periods * every,
        initial=periods_done * every,
        unit="step",
        desc=desc,
        dynamic_ncols=True,
    )


class ChunkDriver:
    """Runs the planned chunks: compiled `run` programs (loop="scan") or a host loop over
    compiled single updates (loop="host"); stops early once no model is running; updates the
    progress bar and commits a checkpoint after each chunk."""

    def __init__(self, plan: SweepPlan, run_programs: Mapping[int, Any]):
        self.plan = plan
        self.programs = dict(run_programs)
        if plan.loop == "host":
            update_c, end_c = host_loop_programs(plan.trainer, plan.mesh, plan.vectorize)
            every = plan.cfg.eval_every

            def host_run(n, st, hp, data):
                rows = []
                for _ in range(n):
                    for _ in range(every):
                        st = update_c(st, hp, data)
                    st, row = end_c(st, hp, data)
                    rows.append(row)
                    # Python drives the updates here, so the bar can move every period instead
                    # of once per chunk (a slow CNN chunk otherwise sits at 0 % for minutes).
                    if self.on_period is not None:
                        self.on_period(every)
                return st, jax.tree_util.tree_map(lambda *r: jnp.stack(r, axis=1), *rows)

            self.programs = {n: functools.partial(host_run, n) for n in self.programs}
        self.on_period = None  # host loop: called with the updates of each finished period

    def n_running(self, st) -> int:
        """Models (members of the real units) still updating: one small transfer."""
        s, stop = _to_host((st.step, st.stop_step))
        n_u = self.plan.n_u
        return int(np.sum(np.asarray(s)[:n_u] < np.asarray(stop)[:n_u]))

    def run(
        self, state, hp, data, chunks: Sequence[int], history: dict, ckpt: Checkpointer, bar=None
    ) -> tuple[Any, dict]:
        """Runs `chunks`, updating `bar` (a tqdm bar or None) in updates."""
        plan, every = self.plan, self.plan.cfg.eval_every
        periods_done = ckpt.periods_done
        if bar is not None:
            bar.set_postfix_str("training")
        running = self.n_running(state) if periods_done > 0 else plan.m  # may be finished
        moved = 0  # updates the bar already advanced inside the current chunk (host loop)

        def on_period(k: int) -> None:
            nonlocal moved
            moved += k
            bar.update(k)

        self.on_period = on_period if bar is not None else None
        for n in chunks:
            if running == 0:
                break
            moved = 0
            state, rows = self.programs[n](state, hp, data)
            rows = {k: plan.layout.rows_to_models(np.asarray(v)) for k, v in _to_host(rows).items()}
            for k in plan.trainer.history_keys:
                history[k].append(rows[k])
            periods_done += n
            running = self.n_running(state)  # stop check and progress bar
            ckpt.commit(periods_done, n, state, history, rows)
            if bar is not None:
                bar.update(n * every - moved)
                acc = rows["train_acc"][: plan.m, -1]
                bar.set_postfix(train_acc=f"{np.nanmean(acc):.4f}", running=f"{running}/{plan.m}")
        self.on_period = None
        if bar is not None:
            if running == 0 and bar.n < bar.total:
                # Every model stopped early (converged or diverged): say so and close the bar at
                # the update reached, so an early stop never looks like a hang at 10-20 %.
                bar.set_postfix_str(f"all {plan.m} models stopped at update {bar.n}")
                bar.total = bar.n
                bar.refresh()
        return state, history


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
    recs = _metric_rows(rows, periods_done - n_new, m, n_grid, n_members, seed_indices)
    io.append_jsonl(out / METRICS, recs)
