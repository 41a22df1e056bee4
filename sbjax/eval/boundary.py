"""Two-dimensional projections of decision boundaries (Shah et al. 2020, Fig. 3c; REFERENCE 4.7).

The paper plots each FCN's decision boundary over the canonical S coordinate and "the most
influential coordinate in S^c". We predict on a grid over (c1 = S coordinate, c2 = an S^c
coordinate) in the canonical basis; every grid cell is evaluated on the same `n_fill` filler
points whose other coordinates come from:

* `fill="data"` (default): randomly chosen data rows (canonical basis), so the projection shows
  the boundary where the data actually lie;
* `fill="uniform"`: the reference's probes, every coordinate uniform on [0, width) (width = B = 1;
  not centred and not the data distribution).

and report, per cell, the fraction of filler points predicted class 1 (0/1 for a model that ignores
the other coordinates). Grid ranges are [min, max] of the data in c1 and c2, as in the reference.

The second coordinate defaults to the most influential S^c coordinate, actually computed: the one
with the lowest coordinate-wise randomized accuracy (`per_coordinate_randomized`), ties broken by
the smaller index. Note: the reference hard-codes c2 = 1 (disagreement row 25; pass `c2=1` for it)
and uses its uniform fill; our defaults follow the paper's text and the issue.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sbjax.eval.checks import (
    check_batch_size,
    check_logits_fn,
    check_model_chunk,
    check_model_keys,
    check_xy,
    num_models,
)
from sbjax.eval.coords import as_basis, as_coords
from sbjax.eval.metrics import LogitsFn, fold_in_keys, map_batches, map_models
from sbjax.eval.randomize import per_coordinate_randomized
from sbjax.validate import check_choice, check_int, check_range, fail

BOUNDARY_FILLS = ("data", "uniform")
_HI = jax.lax.Precision.HIGHEST

__all__ = ["BOUNDARY_FILLS", "BoundaryGrid", "boundary_projection", "most_influential"]


def most_influential(
    coord_values: Any, candidates: Sequence[int], coords: Sequence[int] | None = None
) -> np.ndarray | int:
    """The candidate coordinate with the lowest coordinate-wise randomized metric.

    Args:
        coord_values: [M, C] or [C] per-coordinate randomized accuracy (or AUC); column j belongs
            to coordinate `coords[j]`.
        candidates: coordinates to choose from (e.g. S^c).
        coords: the coordinates of the columns (default 0 .. C - 1).

    Returns:
        int NumPy [M] (or a Python int for 1-D input): per model, the candidate with the lowest
        value; ties go to the smallest coordinate index.
    """
    vals = np.asarray(coord_values, np.float64)
    one = vals.ndim == 1
    vals = np.atleast_2d(vals)
    if vals.ndim != 2:
        fail("coord_values.shape", np.shape(coord_values), "[M, C] or [C]")
    cols = np.arange(vals.shape[1]) if coords is None else np.asarray(coords).reshape(-1)
    if cols.shape[0] != vals.shape[1]:
        fail("coords", tuple(cols.tolist()), f"{vals.shape[1]} coordinates, one per column")
    cand = np.asarray(candidates).reshape(-1)
    where = np.array([np.flatnonzero(cols == c)[0] if np.any(cols == c) else -1 for c in cand])
    if cand.size == 0 or np.any(where < 0):
        fail("candidates", tuple(cand.tolist()), "a non-empty subset of the columns' coordinates")
    order = np.argsort(cand, kind="stable")  # ascending index, so argmin's first hit is smallest
    cand, where = cand[order], where[order]
    sub = vals[:, where]
    best = cand[np.argmin(np.where(np.isnan(sub), np.inf, sub), axis=1)]
    return int(best[0]) if one else best.astype(np.int64)


class BoundaryGrid(NamedTuple):
    """Grid predictions of `boundary_projection` (NumPy arrays).

    Attributes:
        c1: canonical coordinate on the horizontal axis (S).
        c2: int [M], canonical coordinate on the vertical axis of each model.
        u: float32 [G] grid values of c1.
        v: float32 [M, G] grid values of c2 (per model, since c2 may differ).
        prob: float32 [M, G, G] fraction of filler points predicted class 1, indexed [m, i_v, j_u].
        data_u: float32 [n] canonical c1 of the data rows (for an overlay).
        data_v: float32 [M, n] canonical c2 of the data rows.
        data_y: int [n] labels of the data rows.
        fill: "data" or "uniform".
    """

    c1: int
    c2: np.ndarray
    u: np.ndarray
    v: np.ndarray
    prob: np.ndarray
    data_u: np.ndarray
    data_v: np.ndarray
    data_y: np.ndarray
    fill: str


# Not a `checked_jit` function (sbjax.eval.metrics): `boundary_projection` is Python
# orchestration around it (a compiled coordinate-wise randomization picks c2, NumPy builds the
# grids, the result is a NumPy `BoundaryGrid`), and this kernel takes the arrays derived there,
# not the public arguments.
@functools.partial(
    jax.jit, static_argnames=("logits_fn", "c1", "batch_size", "model_chunk", "per_model")
)
def _grid_predict(
    logits_fn, variables, fill_rows, w, u, v, c2, c1, batch_size, model_chunk, per_model
):
    g = u.shape[0]
    r = fill_rows.shape[-2]

    def one(args):
        if per_model:  # fill_rows [M, R, D]: each model its own filler rows
            var, c2_m, v_m, fill_rows_m = args
        else:
            (var, c2_m, v_m), fill_rows_m = args, fill_rows
        # Probes [G_v, G_u, R, D] in the canonical basis, flattened and rotated in batches.
        z = jnp.broadcast_to(fill_rows_m, (g, g, r, fill_rows_m.shape[-1]))
        z = z.at[:, :, :, c1].set(u[None, :, None])
        z = z.at[:, :, :, c2_m].set(v_m[:, None, None])
        z = z.reshape(g * g * r, -1)

        def pred(zb):
            xb = zb if w is None else jnp.matmul(zb, w, precision=_HI)
            return (jnp.argmax(logits_fn(var, xb), axis=-1) == 1).astype(jnp.float32)

        p = map_batches(pred, z, batch_size)
        return p.reshape(g, g, r).mean(axis=-1)

    mapped = (variables, c2, v, fill_rows) if per_model else (variables, c2, v)
    return map_models(one, mapped, model_chunk=model_chunk)


def _second_coords(
    logits_fn, variables, b, key, per_model, data, c1, c2, coord_acc, batch_size, model_chunk
) -> np.ndarray:
    """c2 of every model, int64 [M]: as given, or the most influential S^c coordinate."""
    m = num_models(variables)
    x, y = data
    if isinstance(c2, str):
        check_choice("c2", c2, ("most_influential",))
        cand = [c for c in b.complex_coords if c != c1]
        if coord_acc is None:
            acc = per_coordinate_randomized(
                logits_fn,
                variables,
                x,
                y,
                fold_in_keys(key, 1, per_model),
                b.rotation,
                cand,
                batch_size=batch_size,
                model_chunk=model_chunk,
            )["accuracy"]
            c2s = most_influential(np.asarray(acc), cand, coords=cand)
        else:
            acc = np.asarray(coord_acc)
            if acc.shape[-1] != b.dim:
                fail("coord_acc.shape", acc.shape, f"[M, {b.dim}] or [{b.dim}]")
            c2s = most_influential(np.broadcast_to(acc, (m, b.dim)), cand)
    else:
        c2s = np.broadcast_to(np.asarray(c2, np.int64).reshape(-1), (m,)).copy()
        as_coords("c2", np.unique(c2s), b.dim)
        if np.any(c2s == c1):
            fail("c2", c2, f"a coordinate different from c1={c1}")
    return np.asarray(c2s, np.int64)


def _fill_rows(key, z, fill, n_fill, width, dim, per_model) -> jax.Array:
    """Filler rows [R, D] (canonical basis), or [M, R, D] with keys [M]: data rows or U[0, width)."""

    def draw_fill(kf):
        if fill == "data":
            return z[jax.random.choice(kf, z.shape[0], (n_fill,), replace=n_fill > z.shape[0])]
        return jax.random.uniform(kf, (n_fill, dim), maxval=width)

    kf = fold_in_keys(key, 0, per_model)
    return jax.vmap(draw_fill)(kf) if per_model else draw_fill(kf)


def boundary_projection(
    logits_fn: LogitsFn,
    variables: Any,
    basis: Any,
    key: jax.Array,
    *,
    data: tuple[jax.Array, jax.Array],
    c1: int | None = None,
    c2: int | Sequence[int] | str = "most_influential",
    fill: str = "data",
    n_grid: int = 50,
    n_fill: int = 16,
    width: float = 1.0,
    coord_acc: Any = None,
    batch_size: int | None = 65536,
    model_chunk: int | None = None,
) -> BoundaryGrid:
    """Predictions of every model on a grid over (c1, c2) in the canonical basis (Fig. 3c).

    Args:
        logits_fn: `logits_fn(variables, x) -> [n, 2]` for one model (hashable).
        variables: stacked variables [M, ...].
        basis: a dataset / `Basis` (rotation, S, S^c).
        key: PRNG key (filler rows; coordinate-wise randomization for c2), shared by the
            models, or keys [M]: model i draws its filler rows and randomizations from `key[i]`
            (its result equals a call on model i alone with `key[i]`).
        data: (x [n, d] model basis, y [n]): ranges, fillers (fill="data"), overlay, and the
            coordinate-wise randomized accuracy that picks c2 (reference: train + test).
        c1: horizontal coordinate (default: the first S coordinate).
        c2: "most_influential" (default; lowest coordinate-wise randomized accuracy among S^c,
            ties -> smaller index), an int (reference: 1), or one int per model.
        fill: "data" (default) or "uniform" (reference: U[0, width) in every coordinate).
        n_grid: G, grid points per axis. n_fill: R, filler points evaluated per grid cell.
        width: B for fill="uniform".
        coord_acc: precomputed coordinate-wise randomized accuracy [M, D] or [D] (all canonical
            coordinates, e.g. from `per_coordinate_randomized`) instead of computing it on `data`.
        batch_size: probes per model evaluated at once (memory). model_chunk: memory control.

    Returns:
        `BoundaryGrid`.
    """
    check_logits_fn(logits_fn)
    m = num_models(variables)
    per_model = check_model_keys(key, m)
    b = as_basis(basis)
    x, y = data
    check_xy(x, y)
    if int(np.prod(np.shape(x)[1:])) != b.dim or np.ndim(x) != 2:
        fail("data.shape", np.shape(x), f"[n, {b.dim}] vectors matching the basis")
    check_choice("fill", fill, BOUNDARY_FILLS)
    check_int("n_grid", n_grid, min_value=2)
    check_int("n_fill", n_fill, min_value=1)
    check_range("width", width, 0.0, None, lo_open=True)
    check_batch_size(batch_size)
    check_model_chunk(model_chunk)
    c1 = int(b.simple_coords[0]) if c1 is None else int(as_coords("c1", [c1], b.dim)[0])

    c2s = _second_coords(
        logits_fn, variables, b, key, per_model, (x, y), c1, c2, coord_acc, batch_size, model_chunk
    )

    w = None if b.rotation is None else jnp.asarray(b.rotation)
    xj = jnp.asarray(x, jnp.float32)
    z = xj if w is None else jnp.matmul(xj, w.T, precision=_HI)
    zn = np.asarray(z)
    u = np.linspace(zn[:, c1].min(), zn[:, c1].max(), n_grid, dtype=np.float32)
    v = np.stack(
        [np.linspace(zn[:, c].min(), zn[:, c].max(), n_grid, dtype=np.float32) for c in c2s]
    )

    fill_rows = _fill_rows(key, z, fill, n_fill, width, b.dim, per_model)
    prob = _grid_predict(
        logits_fn,
        variables,
        fill_rows,
        w,
        jnp.asarray(u),
        jnp.asarray(v),
        jnp.asarray(c2s, jnp.int32),
        c1,
        batch_size,
        model_chunk,
        per_model,
    )
    return BoundaryGrid(
        c1=c1,
        c2=c2s,
        u=u,
        v=v,
        prob=np.asarray(prob),
        data_u=zn[:, c1],
        data_v=zn[:, c2s].T.copy(),
        data_y=np.asarray(y),
        fill=fill,
    )
