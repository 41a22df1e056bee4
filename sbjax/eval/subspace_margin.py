"""Margins along subspaces: the smallest flip restricted to span(S), span(S^c), ... (BEYOND.md 5.3).

For a test point x and a subspace with orthonormal basis U [k, D] (model basis), the margin along
U is the smallest ||delta||_2 with delta in span(U) that changes the model's predicted class
(Ortiz-Jimenez, Modas, Moosavi-Dezfooli, Frossard, "Hold me tight! Influence of discriminative
features on deep network boundaries", NeurIPS 2020, subspace-constrained DeepFool; repository
`LTS4/hold-me-tight`). Subspaces are canonical coordinate blocks: U = W[coords] (rows of the
dataset rotation W, since z = x @ W.T), so a perturbation `delta = a @ U` changes exactly the
canonical coordinates `coords` by `a`.

Per point (score s = logit1 - logit0, prediction = class 1 iff s > 0):

1. DeepFool in the subspace: a <- a - s(x') g_a / ||g_a||^2 with g_a = U grad_x s(x') evaluated at
   x' = x + (1 + overshoot) a @ U; ||a|| is clipped to `max_radius`; a point stops as soon as x'
   is classified differently from x. For a model that is linear in the subspace this is exact
   in one step.
2. Bisection on t in [0, 1] along the found delta = (1 + overshoot) a @ U between "same
   prediction" (t = 0) and "flipped" (t = 1), `n_bisect` halvings: removes the overshoot.
3. margin = t_hi ||delta||, or +inf when no flip was found within `max_radius` after `n_iter`
   steps (also when the gradient in the subspace vanishes: a model invariant to the subspace).

Margins are upper bounds on the true minimal flip (an attack finds *a* flip; a nonconvex boundary
can hide a closer one). No value box is applied: margins measure the geometry of the decision
function, not of the data support.

Summaries per model and subspace: the median margin over test points (+inf when fewer than half
flip within `max_radius`), the fraction flipped within `max_radius`, the median over the flipped
points only, and for the default subspaces the ratio margin(S^c) / margin(S): the paper's
O(sqrt(d)) (f*) versus O(1) (SGD) margin argument (Shah et al. 2020, Sec. 4.3) made measurable.
Extreme SB predicts an O(1) margin along S and a very large or infinite margin along S^c.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbjax.eval.checks import (
    check_batch_size,
    check_finite_inputs,
    check_logits_fn,
    check_model_chunk,
    num_models,
)
from sbjax.eval.coords import as_basis, as_coords, flat_features
from sbjax.eval.metrics import LogitsFn, checked_jit, map_batches, map_models, score_from_logits
from sbjax.validate import check_int, check_range, fail

_HI = jax.lax.Precision.HIGHEST

__all__ = ["subspace_basis", "subspace_margins"]


def subspace_basis(basis: Any, coords: Sequence[int]) -> np.ndarray:
    """Orthonormal rows U [k, D] (model basis) spanning the canonical coordinates `coords`.

    Args:
        basis: a dataset or `Basis` (its rotation W; identity when None).
        coords: canonical (flattened) indices.

    Returns:
        float32 NumPy [k, D]: W[coords] (rows e_c @ W), so `a @ U` moves canonical coords by `a`.
    """
    b = as_basis(basis)
    idx = as_coords("coords", coords, b.dim)
    if b.rotation is None:
        return np.eye(b.dim, dtype=np.float32)[idx]
    return np.asarray(b.rotation, np.float32)[idx]


def _margins_batch(score_fn, x, u, max_radius, n_iter, overshoot, n_bisect):
    """Subspace DeepFool + bisection for a batch x [b, ...]; returns margins [b] (inf: none)."""
    shape = x.shape
    xf = flat_features(x)
    k = u.shape[0]

    def s_of(xflat):
        return score_fn(xflat.reshape(shape))

    grad_s = jax.grad(lambda xflat: jnp.sum(s_of(xflat)))  # rows are independent (eval mode)
    pred0 = s_of(xf) > 0

    def moved(a):
        return xf + (1.0 + overshoot) * jnp.matmul(a, u, precision=_HI)

    def cond(state):
        it, _, done = state
        return (it < n_iter) & ~jnp.all(done)

    def body(state):
        it, a, done = state
        xa = moved(a)
        s = s_of(xa)
        done = done | ((s > 0) != pred0)
        g = jnp.matmul(grad_s(xa), u.T, precision=_HI)  # [b, k]
        gg = jnp.sum(g * g, axis=1)
        step = -(s / jnp.where(gg > 0, gg, 1.0))[:, None] * g
        a_new = a + jnp.where((gg > 0)[:, None], step, 0.0)
        nrm = jnp.linalg.norm(a_new, axis=1, keepdims=True)
        a_new = a_new * jnp.minimum(1.0, max_radius / jnp.maximum(nrm, 1e-30))
        a = jnp.where(done[:, None], a, a_new)
        return it + 1, a, done

    a0 = jnp.zeros((xf.shape[0], k), jnp.float32)
    _, a, _ = jax.lax.while_loop(cond, body, (jnp.int32(0), a0, jnp.zeros(xf.shape[0], bool)))
    delta = (1.0 + overshoot) * jnp.matmul(a, u, precision=_HI)
    flipped = (s_of(xf + delta) > 0) != pred0

    def bisect(_, lohi):
        lo, hi = lohi
        mid = 0.5 * (lo + hi)
        f = (s_of(xf + mid[:, None] * delta) > 0) != pred0
        return jnp.where(f, lo, mid), jnp.where(f, mid, hi)

    lo0 = jnp.zeros(xf.shape[0], jnp.float32)
    _, hi = jax.lax.fori_loop(0, n_bisect, bisect, (lo0, jnp.ones_like(lo0)))
    margin = hi * jnp.linalg.norm(delta, axis=1)
    ok = flipped & (margin <= max_radius)
    return jnp.where(ok, margin, jnp.inf)


def _check_subspace_margins(a: types.SimpleNamespace) -> None:
    check_logits_fn(a.logits_fn)
    num_models(a.variables)
    if np.ndim(a.x) < 2:
        fail("x.shape", np.shape(a.x), "a batch of inputs [n, ...]")
    b = as_basis(a.basis)
    dim = int(np.prod(np.shape(a.x)[1:]))
    if dim != b.dim:
        fail("x.shape", np.shape(a.x), f"inputs with {b.dim} features to match the basis")
    subspaces = a.subspaces
    if subspaces is None:
        subspaces = {"s": b.simple_coords, "sc": b.complex_coords}
    if not isinstance(subspaces, Mapping) or not subspaces:
        fail("subspaces", subspaces, "a non-empty dict name -> canonical coordinates")
    names = list(subspaces)
    blocks = [subspace_basis(b, subspaces[nm]) for nm in names]
    kmax = max(u.shape[0] for u in blocks)
    # Zero rows add nothing to a @ U or to U g: padding keeps one shape for every subspace.
    us = np.zeros((len(blocks), kmax, dim), np.float32)
    for i, u in enumerate(blocks):
        us[i, : u.shape[0]] = u
    check_finite_inputs("x", a.x)
    a.x = jnp.asarray(a.x, jnp.float32)
    max_radius = a.max_radius
    if max_radius is None:
        max_radius = 2.0 * float(jnp.max(jnp.linalg.norm(flat_features(a.x), axis=1)))
        if max_radius <= 0:
            fail("max_radius", None, "an explicit radius > 0 (every input is 0)")
    check_range("max_radius", max_radius, 0.0, None, lo_open=True)
    check_int("n_iter", a.n_iter, min_value=1)
    check_range("overshoot", a.overshoot, 0.0, None)
    check_int("n_bisect", a.n_bisect, min_value=0)
    check_batch_size(a.batch_size)
    check_model_chunk(a.model_chunk)
    a.basis, a.subspaces = None, jnp.asarray(us)  # the body takes the stacked rows [B, k, D]
    a.max_radius, a.overshoot = jnp.float32(max_radius), jnp.float32(a.overshoot)
    a.n_iter, a.n_bisect = int(a.n_iter), int(a.n_bisect)
    a.return_margins = bool(a.return_margins)
    a.names, a.radius = names, float(max_radius)  # for `_name_margins`


def _name_margins(res: dict[str, jax.Array], a: types.SimpleNamespace) -> dict[str, Any]:
    """Per-subspace results [M, B, ...] -> the named [M] (and [M, n]) entries."""
    out: dict[str, Any] = {}
    for i, nm in enumerate(a.names):
        out[f"margin_median_{nm}"] = res["median"][:, i]
        out[f"flipped_frac_{nm}"] = res["flipped_frac"][:, i]
        out[f"margin_median_flipped_{nm}"] = res["median_flipped"][:, i]
        if a.return_margins:
            out[f"margins_{nm}"] = res["margins"][:, i]
    if "s" in a.names and "sc" in a.names:
        out["margin_ratio_sc_s"] = out["margin_median_sc"] / out["margin_median_s"]
    out["max_radius"] = a.radius
    return out


@checked_jit(
    _check_subspace_margins,
    static_argnames=("logits_fn", "n_iter", "n_bisect", "batch_size", "model_chunk"),
    finish=_name_margins,
)
def subspace_margins(
    logits_fn: LogitsFn,
    variables: Any,
    x: jax.Array,
    basis: Any,
    *,
    subspaces: Mapping[str, Sequence[int]] | None = None,
    max_radius: float | None = None,
    n_iter: int = 50,
    overshoot: float = 0.02,
    n_bisect: int = 20,
    return_margins: bool = False,
    batch_size: int | None = None,
    model_chunk: int | None = None,
) -> dict[str, jax.Array]:
    """Margins of every model along canonical subspaces, in one compiled call.

    Args:
        logits_fn: `logits_fn(variables, x) -> [n, 2]` for one model (hashable).
        variables: stacked variables [M, ...].
        x: float32 [n, ...] test inputs (model basis).
        basis: a dataset or `Basis` (rotation, S, S^c).
        subspaces: name -> canonical coordinates (default {"s": S, "sc": S^c}); e.g.
            `{f"c{c}": [c] for c in range(d)}` for a per-coordinate margin profile.
        max_radius: largest margin searched (default 2 max_i ||x_i||: a perturbation that large
            leaves the data's range); farther flips count as not flipped (+inf).
        n_iter: DeepFool iterations (static). overshoot: DeepFool overshoot (removed by the
            bisection). n_bisect: bisection halvings (relative precision ~ overshoot 2^-n_bisect
            for a single-step flip).
        return_margins: also return the per-point margins `margins_{name}` [M, n] (+inf = none).
        batch_size: attack at most this many points at once. model_chunk: `lax.map` over groups
            of this many vmapped models.

    Returns:
        dict of float32 [M] arrays per subspace name: `margin_median_{name}` (median over points,
        +inf included), `flipped_frac_{name}` (share flipped within max_radius),
        `margin_median_flipped_{name}` (median over flipped points; NaN if none); with both "s" and
        "sc": `margin_ratio_sc_s` = margin_median_sc / margin_median_s (+inf when only S flips
        within the radius, NaN when neither does); `max_radius` (float).

    Raises:
        ValueError: bad subspaces, radius, iteration counts or shapes (before compiling).
    """
    us = subspaces  # checked: each subspace's rows, zero-padded to [B, k, D]

    def one(v):
        score_fn = lambda t: score_from_logits(logits_fn(v, t))

        def per_subspace(u):
            return map_batches(
                lambda xb: _margins_batch(score_fn, xb, u, max_radius, n_iter, overshoot, n_bisect),
                x,
                batch_size,
            )

        # Subspaces one after the other (zero-padded to a common k): memory of one at a time.
        m = jax.lax.map(per_subspace, us)  # [B, n]
        fin = jnp.isfinite(m)
        return {
            "margins": m,
            "median": jnp.median(m, axis=1),
            "flipped_frac": jnp.mean(fin.astype(jnp.float32), axis=1),
            "median_flipped": jnp.nanmedian(jnp.where(fin, m, jnp.nan), axis=1),
        }

    return map_models(one, variables, model_chunk=model_chunk)  # [M, B, ...]
