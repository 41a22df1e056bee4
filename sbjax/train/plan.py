"""Planning a sweep: every check, the grid, the unit layout, padding and device placement.

`plan_sweep` turns `train_sweep`'s arguments (a `SweepSpec`) into a `SweepPlan` in milliseconds,
before any data preparation or compilation, so a bad argument fails fast. Model order is
seed-major: model m = (seed * n_members + member) * n_grid + grid_point (`sbjax.train.sweep`'s
docstring gives the key and unit layout). Also here: the host <-> device helpers (`put_global`,
`to_host`) that work when the mesh spans several processes, and `SweepResult`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from sbjax.models import make_model
from sbjax.models.image import IMAGE_MODELS
from sbjax.train.config import TrainConfig, expand_grid, hparam_arrays, hparam_names
from sbjax.train.data import TrainData, decorrelation_view, prepare_data
from sbjax.train.engine import HISTORY_KEYS, Trainer, TrainState, make_trainer
from sbjax.train.objective import Objective
from sbjax.train.stopping import STOP_REASONS
from sbjax.train.units import UnitLayout, objective_inputs, unit_inputs
from sbjax.validate import check_choice, check_int, fail


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
      objective_state: the final state of the objective's `LossRule` per model (leading axis M;
        e.g. Group DRO's group weights "q"), () without one.
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
    objective_state: Any = ()

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


def make_mesh(devices: Sequence[Any] | None) -> Mesh:
    return Mesh(np.asarray(_check_devices(devices)), ("model",))


VECTORIZE = ("vmap", "map", "auto")


LOOPS = ("scan", "host", "auto")
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


def put_global(tree: Any, sharding: NamedSharding) -> Any:
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


def to_host(tree: Any) -> Any:
    if jax.process_count() > 1:  # sharded across hosts: gather the global arrays
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


def state_to_host(state: TrainState) -> TrainState:
    return to_host(state._replace(key=jax.random.key_data(state.key)))


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


def chunk_plan(remaining: int, target: int) -> list[int]:
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


def metric_rows(
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
        plan = chunk_plan(self.total_periods - periods_done, ppc)
        return plan if self.max_chunks is None else plan[: self.max_chunks]

    def metric_rows(self, rows, first_period: int) -> list[dict]:
        return metric_rows(
            rows, first_period, self.m, self.n_grid, self.n_members, self.seed_indices
        )

    def result(self, state, history, compile_s: float, wall_s: float) -> SweepResult:
        """The host `SweepResult` in model order, padding removed."""
        m, n_u, k, layout = self.m, self.n_u, self.layout.unit_size, self.layout
        final = state_to_host(state)
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
            objective_state=strip(final.objective_state),
        )


@dataclasses.dataclass(frozen=True, eq=False)
class SweepSpec:
    """What one sweep trains besides (config, model, data): seeds, members, grid, units, the
    objective's inputs, monitors and how the program runs. `train_sweep(..., **fields)` builds
    one from keywords; `dataclasses.replace(spec, ...)` derives another.

    Attributes:
      n_seeds, n_members: independent initialisations / batch orders (members are keyed apart).
      seed_indices: explicit seed indices to train (default range(n_seeds)); seed index s gives
        the same model in any sweep, so seeds can be added to a study later.
      grid: hyperparameter grid, e.g. {"lr": [0.01, 0.1]}; traced, so one compile for the grid.
      seed: root seed.
      unit_size: K, members per training unit. The members of a unit (consecutive member
        indices of one seed) are trained together on the same batches and the objective sees all
        their outputs; `n_members` must be a multiple of K. K = 1 (default): independent models.
      objective: an `sbjax.train.objective.Objective` (penalties with traced strengths
        lambda_<name> that `grid` accepts, a batch transform); None: the plain data loss.
        Evaluation, the stop rule and selection always use the plain data loss.
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
      groups: int [N] group of each training example (e.g. `sbjax.data.groups.spurious_groups`:
        label x whether S agrees), read by objectives whose `LossRule` needs groups (Group
        DRO) as `ctx.groups`; None (default): no groups, every program unchanged.
      decorrelation: (x_alt [N, ...], order int [N]) makes the spurious correlation a traced
        axis: x_alt holds each training row with its S block taken from an opposite-class row,
        order is a permutation of the rows; at the traced hyperparameter "correlation" = c
        (default 1.0, e.g. grid={"correlation": [1.0, 0.95, 0.9]}) the rows with
        order < round((1 - c) N) train on x_alt (exactly that many; the sets are nested in c),
        also in the train metrics, and `ctx.groups` = 2 y + [S agrees]. None: unchanged programs.
      monitor: name -> (x [n, ...], y [n]) fixed evaluation sets (e.g. the S-randomized and
        S^c-randomized copies of a test subset: the feature timeline). Each evaluation period
        records every model's accuracy on each set inside the compiled program, as the history
        entry `monitor_<name>_acc` [M, E] (also in metrics.jsonl); the checkpoint fingerprint
        covers the sets. None (default): the program and every number of a sweep without them.
      devices: devices to shard the model axis over (default: all).
      vectorize: "vmap" (default) batches the models of a device; "map" loops over them inside
        the compiled program (same results); "auto": "map" for cnn1d, GRU and LSTM on CPU,
        else "vmap".
      loop: "scan" (default) compiles whole chunks of updates into one program; "host" calls a
        compiled single update from Python (same results to float rounding; much faster for
        convolutional models on CPU, see `sbjax.train.sweep.host_loop_programs`); "auto": "host"
        for the image CNNs (`HOST_LOOP_FAMILIES`) on CPU, else "scan".
      periods_per_chunk: evaluation periods per compiled call (checkpoint granularity); the last
        chunk may be shorter so that training ends exactly at the budget. None: about every 1000
        updates and at least ~10 chunks per run.
      max_chunks: return after this many chunks in this call (time-sliced or preemptible jobs:
        call again with resume=True to continue); the result then holds the partial state.
    """

    n_seeds: int = 1
    seed_indices: Sequence[int] | None = None
    n_members: int = 1
    grid: Mapping[str, Sequence[float]] | None = None
    seed: int = 0
    unit_size: int = 1
    objective: Objective | None = None
    example_weights: Any = None
    unlabeled: Any = None
    unlabeled_batch_size: int | None = None
    init_variables: Any = None
    frozen: Any = None
    monitor: Mapping[str, tuple[Any, Any]] | None = None
    groups: Any = None
    decorrelation: tuple[Any, Any] | None = None
    devices: Sequence[Any] | None = None
    vectorize: str = "vmap"
    loop: str = "scan"
    periods_per_chunk: int | None = None
    max_chunks: int | None = None

    @classmethod
    def build(cls, spec: SweepSpec | None = None, /, **fields: Any) -> SweepSpec:
        """`spec` (default: all defaults) with `fields` replaced; an unknown field is a TypeError
        naming it and the fields that exist, as for any misspelt keyword argument."""
        if spec is not None and not isinstance(spec, SweepSpec):
            fail("spec", type(spec).__name__, "None or an sbjax.train.SweepSpec")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(fields) - set(known))
        if unknown:
            raise TypeError(
                f"unexpected keyword argument(s) {', '.join(map(repr, unknown))}: a sweep takes "
                f"cfg, model, train, val, spec, out_dir, resume, overwrite, progress, desc and the "
                f"SweepSpec fields {', '.join(known)}"
            )
        return dataclasses.replace(spec or cls(), **fields)


def _checked_seed_indices(spec: SweepSpec) -> list[int]:
    if spec.seed_indices is None:
        check_int("n_seeds", spec.n_seeds, min_value=1)
        return list(range(spec.n_seeds))
    seed_indices = [int(i) for i in spec.seed_indices]
    if not seed_indices or min(seed_indices) < 0 or len(set(seed_indices)) != len(seed_indices):
        fail("seed_indices", seed_indices, "a non-empty list of distinct integers >= 0")
    return seed_indices


def _check_spec(spec: SweepSpec) -> list[int]:
    """The spec's own checks (milliseconds; nothing depends on the data); returns the seeds."""
    check_choice("vectorize", spec.vectorize, VECTORIZE)
    check_choice("loop", spec.loop, LOOPS)
    seed_indices = _checked_seed_indices(spec)
    check_int("n_members", spec.n_members, min_value=1)
    check_int("unit_size", spec.unit_size, min_value=1)
    if spec.n_members % spec.unit_size:
        fail("n_members", spec.n_members, f"a multiple of unit_size={spec.unit_size}")
    if spec.objective is not None and not isinstance(spec.objective, Objective):
        fail("objective", spec.objective, "None or an sbjax.train.objective.Objective")
    if spec.unlabeled is None and spec.unlabeled_batch_size is not None:
        fail("unlabeled_batch_size", spec.unlabeled_batch_size, "None without an unlabeled pool")
    if spec.unlabeled_batch_size is not None:
        check_int("unlabeled_batch_size", spec.unlabeled_batch_size, min_value=1)
    if spec.periods_per_chunk is not None:
        check_int("periods_per_chunk", spec.periods_per_chunk, min_value=1)
    if spec.max_chunks is not None:
        check_int("max_chunks", spec.max_chunks, min_value=0)
    rule = None if spec.objective is None else spec.objective.loss_rule
    if rule is not None and rule.unit_size is not None and spec.unit_size != rule.unit_size:
        fail("unit_size", spec.unit_size, f"{rule.unit_size} for the {rule.name!r} objective")
    return seed_indices


def check_groups(groups: Any, n: int, objective: Objective | None) -> np.ndarray:
    """int32 [N] groups in [0, n_groups) (the objective's `LossRule.n_groups` when it has one)."""
    if groups is None:
        fail(
            "groups", None, "an int array [N] of training-example groups (the objective needs them)"
        )
    g = np.asarray(groups)
    if g.shape != (n,) or g.dtype.kind not in "iu" or (g.size and g.min() < 0):
        fail(
            "groups",
            getattr(g, "shape", g),
            f"non-negative integers [{n}] (one per training example)",
        )
    rule = None if objective is None else objective.loss_rule
    n_groups = getattr(rule, "n_groups", None)
    if n_groups is not None and g.size and g.max() >= n_groups:
        fail("groups", int(g.max()), f"group indices below the objective's n_groups = {n_groups}")
    return g.astype(np.int32)


def _with_groups(cfg: TrainConfig, spec: SweepSpec, data: TrainData) -> TrainData:
    """`data` with the checked groups or decorrelation view of `spec` (unchanged without)."""
    objective = spec.objective
    if spec.decorrelation is not None:
        if spec.groups is not None:
            fail("groups", "<given>", "None with decorrelation (its flips define the groups)")
        if not isinstance(spec.decorrelation, tuple | list) or len(spec.decorrelation) != 2:
            fail("decorrelation", type(spec.decorrelation).__name__, "(x_alt, order) or None")
        view = decorrelation_view(cfg, data.x, *spec.decorrelation)
        return dataclasses.replace(data, decorrelation=view)
    if spec.groups is not None or (objective is not None and objective.needs_groups):
        groups = check_groups(spec.groups, len(data.y), objective)
        return dataclasses.replace(data, groups=groups)
    return data


def _program_choice(cfg: TrainConfig, model: Any, spec: SweepSpec) -> tuple[str, str]:
    """(loop, vectorize) with "auto" resolved for `model`; the shared batch order needs vmap+scan."""
    loop = resolve_loop(spec.loop, model)
    vectorize = resolve_vectorize(spec.vectorize, model)
    if cfg.batch_order == "shared" and (vectorize != "vmap" or loop != "scan"):
        fail(
            "batch_order",
            "shared",
            f"'per_model' with vectorize={vectorize!r}, loop={loop!r} (the shared order runs in "
            "the vmapped, scanned program)",
        )
    return loop, vectorize


def plan_sweep(
    cfg: TrainConfig,
    model: Any,
    train,
    val=None,
    spec: SweepSpec | None = None,
    *,
    out_dir: str | Path | None = None,
    **fields: Any,
) -> SweepPlan:
    """Checks every argument (in milliseconds, before data preparation), then prepares the data,
    the `Trainer`, the unit layout, padding and hyperparameter arrays (`train_sweep`'s args;
    `fields` are `SweepSpec` fields that build or replace parts of `spec`)."""
    spec = SweepSpec.build(spec, **fields)
    seed_indices = _check_spec(spec)
    n_seeds, n_members, objective = len(seed_indices), spec.n_members, spec.objective
    devs = _check_devices(spec.devices)
    out = _check_out_dir(out_dir)
    if not hasattr(model, "init"):
        model = make_model(model)
    loop, vectorize = _program_choice(cfg, model, spec)
    extra_hp = {"unlabeled_mix": 1.0} if spec.unlabeled is not None else {}
    if spec.decorrelation is not None:
        extra_hp["correlation"] = 1.0
    points = expand_grid(spec.grid, hparam_names(cfg, objective) + tuple(extra_hp))
    data_host = prepare_data(cfg, train, val, spec.monitor)
    k_unit = int(spec.unit_size)
    n_units = n_members // k_unit
    layout = UnitLayout(n_seeds, n_units, k_unit, len(points))
    inputs = objective_inputs(
        cfg,
        model,
        data_host,
        layout,
        spec.example_weights,
        spec.unlabeled,
        spec.unlabeled_batch_size,
        spec.init_variables,
        spec.frozen,
    )
    if inputs.x_u is not None:
        data_host = dataclasses.replace(data_host, x_u=inputs.x_u)
    data_host = _with_groups(cfg, spec, data_host)
    trainer = make_trainer(
        cfg,
        model,
        data_host,
        objective=objective,
        unit_size=k_unit,
        unlabeled_batch_size=spec.unlabeled_batch_size,
        has_weights=inputs.weights is not None,
        n_frozen=inputs.n_frozen,
        has_init=inputs.init is not None,
    )
    mesh = make_mesh(devs)
    m_pad = -layout.n_units_total % mesh.devices.size  # padding units
    hp_np = hparam_arrays(cfg, points, n_seeds * n_units, objective, extra_hp)
    hp_np = {k: np.concatenate([v, np.repeat(v[-1:], m_pad)]) for k, v in hp_np.items()}
    return SweepPlan(
        cfg=cfg,
        model=model,
        trainer=trainer,
        data_host=data_host,
        points=points,
        seed=spec.seed,
        seed_indices=seed_indices,
        n_seeds=n_seeds,
        n_members=n_members,
        layout=layout,
        mesh=mesh,
        m_pad=m_pad,
        hp_np=hp_np,
        hp_in=unit_inputs(inputs, layout, m_pad),
        inputs=inputs,
        out=out,
        vectorize=vectorize,
        loop=loop,
        periods_per_chunk=spec.periods_per_chunk,
        max_chunks=spec.max_chunks,
    )
