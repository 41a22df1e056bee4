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
[U, K, ...]); results, metrics.jsonl and the history are still in model order. The stack below
it: `sbjax.train.plan` (checks, grid, layout, padding, hyperparameters: `SweepSpec`,
`plan_sweep`), `sbjax.train.checkpoint` (fingerprint, resume, atomic commits); here the compiled
programs and `ChunkDriver` (compiled chunks or a host loop, progress bar).

Checkpoint folder (`out_dir`): see `sbjax.train.checkpoint`.

Note: `shard_map(vmap(train))` with the default `check_vma=True` silently sums gradients of
key-independent parameters across the models of a device (DESIGN.md); plain `jit` with explicit
shardings has no cross-model collectives, which the tests check on the compiled program.
"""

from __future__ import annotations

import collections
import functools
import logging
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

from sbjax.train.checkpoint import (  # noqa: F401 (public names of the sweep's files)
    CHECKPOINT_FORMAT,
    CHECKPOINT_META,
    CHECKPOINT_PREFIX,
    METRICS,
    Checkpointer,
)
from sbjax.train.config import TrainConfig
from sbjax.train.engine import Trainer
from sbjax.train.plan import (  # noqa: F401 (re-exported: the public API of sweeps)
    HOST_LOOP_FAMILIES,
    LOOPS,
    MAP_FAMILIES,
    VECTORIZE,
    SweepPlan,
    SweepResult,
    SweepSpec,
    plan_sweep,
    put_global,
    resolve_loop,
    resolve_vectorize,
    to_host,
)
from sbjax.train.units import model_keys, unit_keys  # noqa: F401 (model_keys re-exported)

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)


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


SHARED_ORDER_STREAM = 0x5EED  # fold_in(key(seed), this): the shared batch order's key


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


def train_sweep(
    cfg: TrainConfig,
    model: Any,
    train: tuple[Any, Any],
    val: tuple[Any, Any] | None = None,
    spec: SweepSpec | None = None,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    desc: str = "train",
    **fields: Any,
) -> SweepResult:
    """Trains n_seeds x n_members x |grid| models of one architecture in one compiled program.

        r = train_sweep(cfg, model, (x, y), n_seeds=8, grid={"lr": [0.01, 0.1]})
        r = train_sweep(cfg, model, (x, y), spec)           # the same with a SweepSpec

    Args:
      cfg: static training settings; its hyperparameter fields are the defaults of the grid.
      model: an `sbjax.models.Model`, or a config accepted by `sbjax.models.make_model`.
      train: (x float32 [N, ...], y int [N] in {0, 1}).
      val: optional selection set (x, y) for best-model selection (REFERENCE.md Sec. 11 item 10:
        the reference selects on its test set; pass it here explicitly to reproduce that).
      spec: a `SweepSpec` (seeds, members, grid, units, objective inputs, monitors, devices,
        program choice); None: its defaults.
      out_dir: checkpoint folder (`sbjax.train.checkpoint`: checkpoint.json, checkpoint-*.npz,
        metrics.jsonl); None: no files. Only these files are ever written or deleted in it.
      resume: continue from the checkpoint in `out_dir` (must match this configuration; any
        `periods_per_chunk` may be used). Without a checkpoint there, training starts afresh.
      overwrite: delete an existing checkpoint in `out_dir` first.
      progress: show a tqdm progress bar (in updates).
      desc: progress-bar label.
      **fields: `SweepSpec` fields (n_seeds, seed_indices, n_members, grid, seed, unit_size,
        objective, example_weights, unlabeled, unlabeled_batch_size, init_variables, frozen,
        monitor, devices, vectorize, loop, periods_per_chunk, max_chunks), building the spec or
        replacing those fields of `spec`.

    Returns:
      A `SweepResult` (leading axis M in model order whatever K; `unit_size` and `unit_view`
      give the unit layout).

    Raises:
      ValueError: a bad argument (before any data preparation or compilation), or a checkpoint
        that does not match this configuration.
      TypeError: a keyword that is neither an argument nor a `SweepSpec` field.
      FileExistsError: `out_dir` holds a checkpoint and neither `resume` nor `overwrite` is set.
    """
    t_start = time.perf_counter()
    plan = plan_sweep(cfg, model, train, val, spec, out_dir=out_dir, **fields)
    ckpt = Checkpointer(plan, resume=resume, overwrite=overwrite)  # fingerprint checked here

    model_sh = NamedSharding(plan.mesh, P("model"))
    repl = NamedSharding(plan.mesh, P())
    hp = put_global(
        {
            **{k: jnp.asarray(v) for k, v in plan.hp_np.items()},
            **jax.tree_util.tree_map(jnp.asarray, plan.hp_in),
        },
        model_sh,
    )
    data = put_global(jax.tree_util.tree_map(jnp.asarray, plan.data_host), repl)
    keys = put_global(unit_keys(plan.seed, plan.seed_indices, plan.layout, plan.m_pad), model_sh)
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
        s, stop = to_host((st.step, st.stop_step))
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
            rows = {k: plan.layout.rows_to_models(np.asarray(v)) for k, v in to_host(rows).items()}
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
