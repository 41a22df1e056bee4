"""Training data as the compiled programs see it: validated host arrays packed into `TrainData`.

`prepare_data` checks and packs host arrays (every check before anything compiles); `pack_data`
builds the same layout inside a traced program from data sampled there (`sbjax.train.phase`,
`sbjax.train.atlas`). Evaluation sets are stored in padded chunks [C, E, ...] with a validity mask.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbjax.train.config import TrainConfig
from sbjax.validate import fail


@dataclasses.dataclass(frozen=True)
class TrainData:
    """Device-ready arrays shared by every model of a sweep (replicated, never vmapped).

    Attributes:
      x, y: training set, float32 [N, ...] and int32 [N], indexed by minibatches.
      x_train_eval, m_train_eval: train-metric set, [C, E, ...] chunks and float32 [C, E] validity.
      x_val, y_val, m_val: validation set in chunks (None when there is none).
      x_u: the unlabeled pool [Nu, ...] (None without one).
      monitor: name -> (x [C, E, ...], y [C, E], validity [C, E]) fixed evaluation sets whose
        accuracy is recorded at every period end (None without any).
      groups: int32 [N] group of each training example (`SweepSpec.groups`; None without).
      decorrelation: the spurious-correlation view (`SweepSpec.decorrelation`, None without):
        "x_alt" [N, ...] the inputs with S taken from an opposite-class row, "order" int32 [N]
        (row i uses x_alt at correlation c iff order[i] < flip_count(c, N)), and their
        train-metric chunks "x_alt_eval" [C, E, ...], "order_eval" [C, E] (padding: N).
      n_rows: int32 scalar, possibly traced: the model trains on rows [0, n_rows) only (batches,
        epochs and train metrics; `pack_data(n_rows=...)`, `sbjax.train.sample_size`); None: all
        N rows.
    """

    x: jax.Array
    y: jax.Array
    x_train_eval: jax.Array
    y_train_eval: jax.Array
    m_train_eval: jax.Array
    x_val: jax.Array | None
    y_val: jax.Array | None
    m_val: jax.Array | None
    x_u: jax.Array | None = None
    monitor: dict[str, tuple[jax.Array, jax.Array, jax.Array]] | None = None
    groups: jax.Array | None = None
    decorrelation: dict[str, jax.Array] | None = None
    n_rows: jax.Array | None = None


jax.tree_util.register_dataclass(
    TrainData,
    data_fields=[f.name for f in dataclasses.fields(TrainData)],
    meta_fields=[],
)


def chunk_host(x: np.ndarray, y: np.ndarray, size: int):
    """Pads (x, y) to a multiple of `size` and reshapes to [C, size, ...] with a validity mask."""
    n = x.shape[0]
    size = min(size, n)
    c = math.ceil(n / size)
    pad = c * size - n
    xp = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
    yp = np.concatenate([y, np.zeros((pad,), y.dtype)]) if pad else y
    m = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    return (
        xp.reshape((c, size) + x.shape[1:]),
        yp.reshape(c, size),
        m.reshape(c, size),
    )


def check_xy(name: str, x: np.ndarray, y: np.ndarray) -> None:
    """Refuses non-finite inputs and labels outside {0, 1}, on the host, before any cast.

    Labels are checked on their raw values because `astype(int32)` would truncate 0.5 to 0 and the
    run would "converge" on labels nobody meant; a NaN/inf input would otherwise train for the whole
    budget and be reported as a diverged model.
    """
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        fail(f"{name} x", x.dtype, "a real-valued array")
    # min/max propagate NaN and expose +-inf without a full-size boolean temporary.
    if (
        np.issubdtype(x.dtype, np.inexact)
        and x.size
        and not (np.isfinite(np.min(x)) and np.isfinite(np.max(x)))
    ):
        bad = ~np.isfinite(x)
        rows = np.flatnonzero(bad.reshape(x.shape[0], -1).any(axis=1))
        fail(
            f"{name} x",
            f"<{int(bad.sum())} NaN/inf value(s) in {rows.size} row(s), first row {rows[0]}>",
            "finite inputs (clean or drop those rows)",
        )
    ok = np.isin(y, (0, 1))
    if not ok.all():
        fail(
            f"{name} labels",
            np.unique(y[~ok])[:5].tolist(),
            "labels in {0, 1} (integers, or floats exactly 0.0 / 1.0)",
        )


def to_float32(name: str, x: np.ndarray) -> np.ndarray:
    """Casts to float32, refusing finite float64 values that the cast would turn into inf."""
    wide = np.issubdtype(x.dtype, np.floating) and x.dtype.itemsize > 4
    with np.errstate(over="ignore"):  # reported below as a ValueError instead
        x = x.astype(np.float32)
    if wide and x.size and not (np.isfinite(np.min(x)) and np.isfinite(np.max(x))):
        fail(name, "<values beyond the float32 range>", "finite float32 inputs (|x| < 3.4e38)")
    return x


def check_monitor_name(name: Any) -> str:
    """A monitor set's name: a non-empty string of letters, digits and underscores."""
    if not isinstance(name, str) or not name or not all(c.isalnum() or c == "_" for c in name):
        fail("monitor", name, "names made of letters, digits and underscores (e.g. 's_rand')")
    return name


def prepare_data(cfg: TrainConfig, train, val=None, monitor=None) -> TrainData:
    """Validates and packs host arrays into `TrainData` (float32 inputs, int32 labels).

    Args:
      cfg: the training configuration (batch and evaluation sizes).
      train: (x [N, ...] real, y [N] with values in {0, 1}).
      val: optional (x [M, ...], y [M]) with the same per-example shape as the training inputs.
      monitor: optional mapping name -> (x [n, ...], y [n]) of fixed evaluation sets (same
        per-example shape as the training inputs); their accuracy is recorded at every
        evaluation as `monitor_<name>_acc`.

    Returns:
      `TrainData` with x float32, y int32, and the evaluation sets in padded chunks.

    Raises:
      ValueError: mismatched shapes, an empty set, a batch larger than the training set, NaN/inf
        inputs or labels outside {0, 1} (in any set), before anything is compiled.
    """
    x, y = (np.asarray(a) for a in train)
    if x.ndim < 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        fail("train", (x.shape, y.shape), "(x [N, ...], y [N]) with matching N")
    if x.shape[0] == 0:
        fail("train", x.shape, "a non-empty training set")
    if cfg.batch_size > x.shape[0]:
        fail("batch_size", cfg.batch_size, f"at most the training-set size {x.shape[0]}")
    check_xy("train", x, y)
    x = to_float32("train x", x)
    y = y.astype(np.int32)
    n_te = x.shape[0] if cfg.train_eval_size is None else min(cfg.train_eval_size, x.shape[0])
    xe, ye, me = chunk_host(x[:n_te], y[:n_te], cfg.eval_batch_size)
    xv = yv = mv = None
    if val is not None:
        vx, vy = (np.asarray(a) for a in val)
        if vx.shape[1:] != x.shape[1:] or vy.ndim != 1 or vx.shape[0] != vy.shape[0]:
            fail("val", (vx.shape, vy.shape), f"(x [M, {', '.join(map(str, x.shape[1:]))}], y [M])")
        if vx.shape[0] == 0:
            fail("val", vx.shape, "a non-empty validation set (or val=None)")
        check_xy("val", vx, vy)
        vx = to_float32("val x", vx)
        xv, yv, mv = chunk_host(vx, vy.astype(np.int32), cfg.eval_batch_size)
    mon = None
    if monitor is not None:
        if not isinstance(monitor, Mapping) or not monitor:
            fail("monitor", type(monitor).__name__, "None or a non-empty dict name -> (x, y)")
        mon = {}
        for name, xy in monitor.items():
            check_monitor_name(name)
            where = f"monitor[{name!r}]"
            if not isinstance(xy, tuple | list) or len(xy) != 2:
                fail(where, type(xy).__name__, "a pair (x [n, ...], y [n])")
            mx, my = (np.asarray(a) for a in xy)
            if mx.shape[1:] != x.shape[1:] or my.ndim != 1 or mx.shape[0] != my.shape[0]:
                fail(
                    where,
                    (mx.shape, my.shape),
                    f"(x [n, {', '.join(map(str, x.shape[1:]))}], y [n])",
                )
            if mx.shape[0] == 0:
                fail(where, mx.shape, "a non-empty set")
            check_xy(where, mx, my)
            mon[name] = chunk_host(
                to_float32(f"{where} x", mx), my.astype(np.int32), cfg.eval_batch_size
            )
    return TrainData(x, y, xe, ye, me, xv, yv, mv, monitor=mon)


def chunk_traced(x: jax.Array, y: jax.Array, size: int):
    """`chunk_host` for (traced) device arrays: the same padding and [C, size, ...] layout."""
    n = x.shape[0]
    size = min(size, n)
    c = math.ceil(n / size)
    pad = c * size - n
    xp = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
    yp = jnp.pad(y, (0, pad))
    m = (jnp.arange(c * size) < n).astype(jnp.float32)
    return xp.reshape((c, size) + x.shape[1:]), yp.reshape(c, size), m.reshape(c, size)


def pack_data(
    cfg: TrainConfig, x: jax.Array, y: jax.Array, monitor=None, *, val=None, n_rows=None
) -> TrainData:
    """`TrainData` built inside a traced function from data made there (no checks).

    For programs that sample their training set from traced parameters (`sbjax.train.phase`,
    `sbjax.train.sample_size`): the layout (train-metric chunks, monitor chunks) is
    `prepare_data`'s, so a `Trainer` made from `jax.eval_shape` of this function trains on it. No
    unlabeled pool.

    Args:
      cfg: the training configuration (evaluation sizes).
      x: float [N, ...] training inputs; y: int [N] labels in {0, 1} (not checked).
      monitor: optional name -> (x [n, ...], y [n]) monitor sets (see `prepare_data`).
      val: optional (x [M, ...], y [M]) validation set (best-model selection).
      n_rows: optional int32 scalar (may be traced) in [1, N]: train on the first n_rows rows
        only; the train metrics count only those rows.

    Returns:
      `TrainData` with float32 inputs and int32 labels.
    """
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.int32)
    n_te = x.shape[0] if cfg.train_eval_size is None else min(cfg.train_eval_size, x.shape[0])
    xe, ye, me = chunk_traced(x[:n_te], y[:n_te], cfg.eval_batch_size)
    if n_rows is not None:
        n_rows = jnp.asarray(n_rows, jnp.int32)
        rows = jnp.arange(me.size, dtype=jnp.int32).reshape(me.shape)
        me = me * (rows < n_rows).astype(jnp.float32)
    xv = yv = mv = None
    if val is not None:
        xv, yv, mv = chunk_traced(
            jnp.asarray(val[0], jnp.float32), jnp.asarray(val[1], jnp.int32), cfg.eval_batch_size
        )
    mon = None
    if monitor is not None:
        mon = {
            check_monitor_name(name): chunk_traced(
                jnp.asarray(mx, jnp.float32), jnp.asarray(my, jnp.int32), cfg.eval_batch_size
            )
            for name, (mx, my) in monitor.items()
        }
    return TrainData(x, y, xe, ye, me, xv, yv, mv, monitor=mon, n_rows=n_rows)


def flip_count(correlation: jax.Array | float, n: int) -> jax.Array:
    """int32: rows whose S disagrees with the label at `correlation`, round((1 - c) n) in float32
    (exact for the usual values, e.g. c = 0.95, n = 20,000 -> 1,000; tested)."""
    c = jnp.asarray(correlation, jnp.float32)
    return jnp.round((1.0 - c) * jnp.float32(n)).astype(jnp.int32)


def decorrelation_view(cfg: TrainConfig, x: np.ndarray, x_alt: Any, order: Any) -> dict:
    """Checks and packs `SweepSpec.decorrelation` = (x_alt [N, ...], order [N], a permutation of
    0..N-1) for the training inputs x [N, ...] (float32)."""
    x_alt, order = np.asarray(x_alt), np.asarray(order)
    n = x.shape[0]
    if x_alt.shape != x.shape:
        fail("decorrelation x_alt", x_alt.shape, f"the training inputs' shape {x.shape}")
    check_xy("decorrelation x_alt", x_alt, np.zeros(n, np.int32))
    if (
        order.shape != (n,)
        or order.dtype.kind not in "iu"
        or not np.array_equal(np.sort(order), np.arange(n))
    ):
        fail("decorrelation order", getattr(order, "shape", order), f"a permutation of 0..{n - 1}")
    x_alt = to_float32("decorrelation x_alt", x_alt)
    order = order.astype(np.int32)
    n_te = n if cfg.train_eval_size is None else min(cfg.train_eval_size, n)
    xe, oe, me = chunk_host(x_alt[:n_te], order[:n_te], cfg.eval_batch_size)
    oe = np.where(me > 0, oe, n).astype(np.int32)  # padding rows are never flipped
    return {"x_alt": x_alt, "order": order, "x_alt_eval": xe, "order_eval": oe}


def flip_rows(x: jax.Array, x_alt: jax.Array, order: jax.Array, n_flip: jax.Array):
    """(inputs with x_alt on the rows whose order < n_flip, flipped bool); any leading shape of
    order, x [..., feature dims]."""
    flip = order < n_flip
    mask = flip.reshape(flip.shape + (1,) * (x.ndim - flip.ndim))
    return jnp.where(mask, x_alt, x), flip
