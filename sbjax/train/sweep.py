"""Train a whole sweep (seeds x ensemble members x hyperparameter points) as one program.

`train_sweep` is the host loop around `Trainer`: it lays the models along one axis, shards that axis
over every device (JAX's own sharding: a 1-D `Mesh`, `NamedSharding(mesh, P("model"))` for keys,
hyperparameters, state and outputs, `P()` for the data), and runs the compiled program in chunks
of evaluation periods. Between chunks it updates a progress bar, appends metrics to
`metrics.jsonl` and writes a checkpoint, so `resume=True` continues a killed run to results
identical to an uninterrupted one.

Model order is seed-major: model m = (seed * n_members + member) * n_grid + grid_point. Every grid
point of a (seed, member) shares its PRNG key (same init and batch order: common random numbers),
and the key of (seed s, member j) is `fold_in(fold_in(key(seed), s), j)`, independent of the sweep
size, so seed s of a sweep equals a single run with seed index s.

Note: `shard_map(vmap(train))` with the default `check_vma=True` silently sums gradients of
key-independent parameters across the models of a device (DESIGN.md); plain `jit` with explicit
shardings has no cross-model collectives, which the tests check on the compiled program.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import logging
import math
import shutil
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
from sbjax.train.config import TrainConfig, expand_grid, hparam_arrays
from sbjax.train.engine import (
    HISTORY_KEYS,
    STOP_REASONS,
    TrainData,
    Trainer,
    TrainState,
    make_trainer,
    prepare_data,
)
from sbjax.validate import check_choice, check_int, fail

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.npz"
CHECKPOINT_META = "checkpoint.json"
METRICS = "metrics.jsonl"


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
        val_loss.
      stop_step: int [M] updates actually applied.
      stop_reason: list of M strings: "converged", "diverged" or "max_steps".
      hparams: name -> float32 [M] traced hyperparameters of each model.
      seed_index, member_index, grid_index: int [M].
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
    compile_s: float = 0.0
    wall_s: float = 0.0

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
    devs = list(devices) if devices is not None else jax.devices()
    return Mesh(np.asarray(devs), ("model",))


VECTORIZE = ("vmap", "map")


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

    return jax.shard_map(local, mesh=mesh, in_specs=(P("model"), P("model"), P()),
                         out_specs=P("model"), check_vma=False)


LOOPS = ("scan", "host")


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
    end = jax.jit(_over_models(trainer.end_period, mesh, vectorize), in_shardings=shard[
        "in_shardings"], out_shardings=(model_sh, model_sh), donate_argnums=(0,))
    return update, end


def sharded_programs(trainer: Trainer, mesh: Mesh, n_periods: int, vectorize: str = "vmap"):
    """The jitted sweep programs: `init(keys, hp, data)` and `run(state, hp, data)`.

    The model axis of keys, hyperparameters, state and history is sharded over the mesh's "model"
    axis; the data are replicated. Models never interact, so the compiled program has no
    collectives (checked in tests/test_train_sharding.py).
    """
    model_sh = NamedSharding(mesh, P("model"))
    repl = NamedSharding(mesh, P())
    init_fn = jax.jit(
        _over_models(trainer.init, mesh, vectorize),
        in_shardings=(model_sh, model_sh, repl),
        out_shardings=model_sh,
    )
    run_fn = jax.jit(
        _over_models(functools.partial(trainer.run, n_periods=n_periods), mesh, vectorize),
        in_shardings=(model_sh, model_sh, repl),
        out_shardings=(model_sh, model_sh),
        donate_argnums=(0,),
    )
    return init_fn, run_fn


_PROGRAM_CACHE: collections.OrderedDict = collections.OrderedDict()
_PROGRAM_CACHE_SIZE = 8


def _compiled_programs(trainer: Trainer, mesh: Mesh, ppc: int, model: Any, keys, hp, data,
                       vectorize: str, loop: str = "scan"):
    """Compiled (init, run) programs, reused across `train_sweep` calls with the same model object,
    configuration, shapes and devices (e.g. a study that trains the same sweep on new data)."""
    sig = lambda tree: tuple((a.shape, str(a.dtype)) for a in jax.tree_util.tree_leaves(tree))
    key = (id(model.init), id(model.apply), id(model.logits), trainer.cfg, trainer.n_train,
           tuple(d.id for d in mesh.devices.flat), ppc, sig(hp), sig(data), keys.shape, vectorize,
           loop)
    hit = _PROGRAM_CACHE.get(key)
    if hit is not None:
        _PROGRAM_CACHE.move_to_end(key)
        return hit[0], hit[1]
    init_fn, run_fn = sharded_programs(trainer, mesh, ppc, vectorize)
    init_c = init_fn.lower(keys, hp, data).compile()
    run_c = None
    if loop == "scan":  # the host loop compiles its two small programs on first use
        state_shapes = jax.eval_shape(init_fn, keys, hp, data)
        run_c = run_fn.lower(state_shapes, hp, data).compile()
    _PROGRAM_CACHE[key] = (init_c, run_c, model)  # the model keeps the ids above alive
    if len(_PROGRAM_CACHE) > _PROGRAM_CACHE_SIZE:
        _PROGRAM_CACHE.popitem(last=False)
    return init_c, run_c


def _to_host(tree: Any) -> Any:
    if jax.process_count() > 1:  # sharded across hosts: gather the global arrays
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def _state_to_host(state: TrainState) -> TrainState:
    return _to_host(state._replace(key=jax.random.key_data(state.key)))


def _fingerprint(cfg, model, data: TrainData, n_seeds, n_members, points, seed, m_pad) -> str:
    h = hashlib.sha256()
    h.update(repr((dataclasses.asdict(cfg), getattr(model, "config", repr(model)))).encode())
    h.update(repr((n_seeds, n_members, points, seed, m_pad)).encode())
    for a in (data.x, data.y, data.x_val):
        if a is not None:
            a = np.asarray(a)
            h.update(repr(a.shape).encode())
            h.update(np.ascontiguousarray(a[:: max(1, a.shape[0] // 997)]).tobytes())
    return h.hexdigest()[:16]


def _divisor_at_most(n: int, target: int) -> int:
    return max(d for d in range(1, min(n, max(1, target)) + 1) if n % d == 0)


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
      out_dir: checkpoint folder (checkpoint.npz, checkpoint.json, metrics.jsonl); None: no files.
      resume: continue from the checkpoint in `out_dir` (must match this configuration).
      overwrite: delete an existing checkpoint in `out_dir` first.
      periods_per_chunk: evaluation periods per compiled call (checkpoint granularity).
      devices: devices to shard the model axis over (default: all).
      progress: show a tqdm progress bar.
      desc: progress-bar label.
      max_chunks: return after this many chunks in this call (time-sliced or preemptible jobs:
        call again with resume=True to continue); the result then holds the partial state.
      vectorize: "vmap" (default) batches the models of a device; "map" loops over them inside
        the compiled program (same results).
      loop: "scan" (default) compiles whole chunks of updates into one program; "host" calls a
        compiled single update from Python (same results; much faster for convolutional models
        on CPU, see `host_loop_programs`).

    Returns:
      A `SweepResult`.
    """
    t_start = time.perf_counter()
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
    if not hasattr(model, "init"):
        from sbjax.models import make_model

        model = make_model(model)
    points = expand_grid(grid)
    n_grid = len(points)
    data_host = prepare_data(cfg, train, val)
    trainer: Trainer = make_trainer(cfg, model, data_host)

    mesh = _mesh(devices)
    n_dev = mesh.devices.size
    m = n_seeds * n_members * n_grid
    m_pad = -m % n_dev
    hp_np = hparam_arrays(cfg, points, n_seeds * n_members)
    hp_np = {k: np.concatenate([v, np.repeat(v[-1:], m_pad)]) for k, v in hp_np.items()}
    model_sh = NamedSharding(mesh, P("model"))
    repl = NamedSharding(mesh, P())

    fingerprint = _fingerprint(cfg, model, data_host, seed_indices, n_members, points, seed, m_pad)
    out = Path(out_dir) if out_dir is not None else None
    ckpt_exists = out is not None and (out / CHECKPOINT_META).exists()
    if out is not None and ckpt_exists and not resume:
        if not overwrite:
            raise FileExistsError(
                f"{str(out)!r} already holds a training checkpoint; pass resume=True (--resume) "
                "to continue it or overwrite=True (--overwrite) to start again"
            )
        shutil.rmtree(out)
        ckpt_exists = False

    hp = jax.device_put({k: jnp.asarray(v) for k, v in hp_np.items()}, model_sh)
    data = jax.device_put(jax.tree_util.tree_map(jnp.asarray, data_host), repl)
    keys = jax.device_put(model_keys(seed, seed_indices, n_members, n_grid, m_pad), model_sh)

    total = trainer.total_periods
    if periods_per_chunk is None:
        # A checkpoint and progress update every ~1000 updates, and at least ~10 per run.
        periods_per_chunk = max(1, min(1000 // cfg.eval_every, math.ceil(total / 10)))
    check_int("periods_per_chunk", periods_per_chunk, min_value=1)
    ppc = _divisor_at_most(total, periods_per_chunk)
    n_chunks = total // ppc

    t0 = time.perf_counter()
    init_c, run_c = _compiled_programs(trainer, mesh, ppc, model, keys, hp, data, vectorize,
                                       loop)
    compile_s = time.perf_counter() - t0
    state = init_c(keys, hp, data)

    history: dict[str, list[np.ndarray]] = {k: [] for k in HISTORY_KEYS}
    done_chunks = 0
    if ckpt_exists:
        meta = io.read_json(out / CHECKPOINT_META)
        if meta["fingerprint"] != fingerprint:
            raise ValueError(
                f"resume={resume!r} is invalid: expected the configuration of the checkpoint in "
                f"{str(out)!r} (fingerprint {meta['fingerprint']}), got {fingerprint}; use "
                "--overwrite to start again"
            )
        like = _state_to_host(state)
        loaded = io.load_npz(out / CHECKPOINT, {"state": like, "history": {k: 0 for k in HISTORY_KEYS}})
        st = loaded["state"]
        state = jax.device_put(st._replace(key=jax.random.wrap_key_data(st.key)), model_sh)
        history = {k: [np.asarray(loaded["history"][k])] for k in HISTORY_KEYS}
        done_chunks = int(meta["chunks_done"])
        # Drop metric rows written after the checkpoint (a kill between the two writes).
        rows = [r for r in io.read_jsonl(out / METRICS) if r["chunk"] < done_chunks]
        io._atomic_write_bytes(
            out / METRICS, "".join(json.dumps(r) + "\n" for r in rows).encode()
        )
        log.info("resuming %s at chunk %d of %d", out, done_chunks, n_chunks)

    bar = None
    if progress and jax.process_index() == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_chunks * ppc * cfg.eval_every, initial=done_chunks * ppc * cfg.eval_every,
                   unit="step", desc=desc, dynamic_ncols=True)

    def n_running(st) -> int:
        s, stop = _to_host((st.step, st.stop_step))
        return int(np.sum(np.asarray(s)[:m] < np.asarray(stop)[:m]))

    chunk = done_chunks
    limit = n_chunks if max_chunks is None else min(n_chunks, done_chunks + max_chunks)
    if loop == "host":
        update_c, end_c = host_loop_programs(trainer, mesh, vectorize)

        def run_c(st, hp, data):
            rows = []
            for _ in range(ppc):
                for _ in range(cfg.eval_every):
                    st = update_c(st, hp, data)
                st, row = end_c(st, hp, data)
                rows.append(row)
            return st, jax.tree_util.tree_map(lambda *r: jnp.stack(r, axis=1), *rows)

    running = n_running(state) if done_chunks > 0 else m  # a resumed run may be finished
    while chunk < limit and not (chunk > 0 and running == 0):
        state, rows = run_c(state, hp, data)
        rows = {k: np.asarray(v) for k, v in _to_host(rows).items()}
        for k in HISTORY_KEYS:
            history[k].append(rows[k])
        chunk += 1
        running = n_running(state)  # one small transfer per chunk: stop check and progress bar
        if out is not None and jax.process_index() == 0:
            _write_chunk(out, chunk, state, history, rows, fingerprint, m, n_grid, n_members)
        if bar is not None:
            bar.update(ppc * cfg.eval_every)
            acc = rows["train_acc"][:m, -1]
            bar.set_postfix(train_acc=f"{np.nanmean(acc):.4f}", running=running)
    if bar is not None:
        bar.close()

    final = _state_to_host(state)
    hist = {k: np.concatenate(v, axis=1)[:m] if v else np.zeros((m, 0)) for k, v in history.items()}
    idx = np.arange(m)
    strip = lambda tree: jax.tree_util.tree_map(lambda a: np.asarray(a)[:m], tree)
    return SweepResult(
        params=strip(final.variables),
        best_params=strip(final.best_variables),
        best_step=np.asarray(final.best_step)[:m],
        history=hist,
        stop_step=np.minimum(np.asarray(final.step), np.asarray(final.stop_step))[:m],
        stop_reason=[STOP_REASONS[int(r)] for r in np.asarray(final.stop_reason)[:m]],
        hparams={k: v[:m] for k, v in hp_np.items()},
        seed_index=np.asarray(seed_indices)[idx // (n_members * n_grid)],
        member_index=(idx // n_grid) % n_members,
        grid_index=idx % n_grid,
        grid_points=points,
        n_seeds=n_seeds,
        n_members=n_members,
        compile_s=compile_s,
        wall_s=time.perf_counter() - t_start,
    )


def _write_chunk(out: Path, chunk, state, history, rows, fingerprint, m, n_grid, n_members) -> None:
    """Checkpoint first, then metrics rows: a kill in between loses no checkpointed work, and
    resume drops any metric rows newer than the checkpoint."""
    out.mkdir(parents=True, exist_ok=True)
    host = _state_to_host(state)
    hist = {k: np.concatenate(v, axis=1) for k, v in history.items()}
    io.save_npz(out / CHECKPOINT, {"state": host, "history": hist})
    io.write_json(out / CHECKPOINT_META, {"fingerprint": fingerprint, "chunks_done": chunk})
    recs = []
    for i in range(m):
        for e in range(rows["step"].shape[1]):
            rec = {"chunk": chunk - 1, "model": i, "seed": i // (n_members * n_grid),
                   "member": (i // n_grid) % n_members, "grid": i % n_grid}
            rec.update({k: float(rows[k][i, e]) for k in HISTORY_KEYS})
            recs.append(rec)
    io.append_jsonl(out / METRICS, recs)
