"""Last-layer probes: "learned but unused" versus "not learned" (BEYOND.md Sec. 1.1).

The S^c-randomized AUC (Shah et al. 2020, Sec. 3) shows that a model's *logits* ignore S^c; it
does not say whether the *representation* still encodes S^c. A last-layer probe separates the two
(Kirichenko, Izmailov, Wilson, "Last Layer Re-Training is Sufficient for Robustness to Spurious
Correlations", ICLR 2023, Deep Feature Reweighting): freeze each model's feature map phi (the
penultimate activations, `sbjax.models.features.features_fn`), refit only a linear last layer on
data where S carries no label information, and measure it on test data randomized the same way.

Two probes per model, each trained and tested on its own randomized data:

* S-randomized probe (`probe_s_rand_*`): train on phi(x) of S-randomized training inputs, test on
  phi(x) of S-randomized test inputs. S is independent of the label there, so the probe can only
  use what phi encodes about S^c: high accuracy = S^c was learned (but, if the model's own
  S-randomized accuracy is at chance, unused); chance = S^c is not linearly decodable from phi.
  This is DFR with the S-randomized set as the group-balanced set.
* S^c-randomized probe (`probe_sc_rand_*`), the "probe for S alone": the same with S^c randomized
  (train and test), so only what phi encodes about S can be used.

The probe is binary logistic regression on standardized features (mean / std of the probe's own
training rows; constant features are left at 0), L2-penalised, fitted exactly by damped Newton:

    minimise  (1 / n) sum_i BCE(w . phi_i + b, y_i) + (l2 / 2) ||w||^2     (bias not penalised)

which is scikit-learn's `LogisticRegression(C=1 / (n l2))` on the same standardized features. Its
strength is chosen per model from `l2_grid` on a held-out part of the randomized training set
(lowest validation log-loss by default) inside the same compiled program, as a regularization
path (`lax.scan` from the strongest penalty down, each fit warm-started from the previous one;
the models are vmapped); the chosen strength is then refitted on the whole randomized training
set. Note: the path replaces a vmap over the grid, under which every strength would run as many
Newton iterations as the slowest (separable data, weak penalty): same optima (the problem is
strictly convex), 2.1x faster measured on 8 FCNs with [16k, 100] features.

Note: DFR (Kirichenko et al.) uses L1 logistic regression, C in {1, .7, .3, .1, .07, .03, .01} and
averages 20 refits on subsets of a small held-out set; here L2 (a smooth, exactly solved problem,
as the issue asks) on the full randomized training set, and one refit.

Keys: like `sbjax.eval.randomize`, one key shared by the models (all models see the same
randomized sets and split) or keys [M] (model i uses `key[i]`; its result equals a call on model
i alone with `key[i]`). Streams: `fold_in(key, 0..4)` = S-randomized train, S-randomized test,
S^c-randomized train, S^c-randomized test, train / validation split.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sbjax.eval.checks import (
    check_batch_size,
    check_model_chunk,
    check_model_keys,
    check_xy,
    num_models,
    per_model_keys,
)
from sbjax.eval.coords import as_basis, basis_arrays, flat_features
from sbjax.eval.metrics import checked_jit, map_batches, map_models_keys, roc_auc_from_scores
from sbjax.eval.randomize import RANDOMIZE_MODES, randomize_flat
from sbjax.models.features import features_fn as _model_features_fn
from sbjax.models.registry import Model
from sbjax.validate import check_choice, check_int, check_range, fail

_HI = jax.lax.Precision.HIGHEST

DEFAULT_L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
PROBE_SELECTION = ("loss", "accuracy")
# Step sizes tried at once by the Newton line search (0 included: an iteration never increases J).
_STEPS = tuple(2.0**-i for i in range(12)) + (0.0,)

__all__ = [
    "DEFAULT_L2_GRID",
    "PROBE_SELECTION",
    "DFRHead",
    "LogisticFit",
    "dfr_logits",
    "dfr_refit",
    "fit_logistic",
    "group_balanced_subsets",
    "last_layer_probe",
]


# ----------------------------------------------------------------------------------------------
# Exact L2 logistic regression (one problem; vmap it over models and strengths).
# ----------------------------------------------------------------------------------------------


class LogisticFit(NamedTuple):
    """Output of `fit_logistic` (leading axes added by vmap).

    Attributes:
        w: float32 [h] weights. b: float32 [] bias. Score = phi @ w + b (class 1 when > 0).
        objective: float32 [] final value of the penalised mean log-loss.
        grad_norm: float32 [] max-abs gradient of the objective at (w, b).
        n_iter: int32 [] Newton iterations used.
        converged: bool [] Newton decrement below `tol` within `max_iter`.
    """

    w: jax.Array
    b: jax.Array
    objective: jax.Array
    grad_norm: jax.Array
    n_iter: jax.Array
    converged: jax.Array


def _objective(f, y, w, l2):
    return jnp.mean(optax.sigmoid_binary_cross_entropy(f, y)) + 0.5 * l2 * jnp.sum(w * w)


def fit_logistic(
    x: jax.Array,
    y: jax.Array,
    l2: jax.Array | float,
    *,
    max_iter: int = 50,
    tol: float = 1e-9,
    init: tuple[jax.Array, jax.Array] | None = None,
) -> LogisticFit:
    """L2-regularised binary logistic regression, solved by damped Newton; pure and traceable.

    Minimises `mean_i BCE(x_i . w + b, y_i) + (l2 / 2) ||w||^2` (bias unpenalised; scikit-learn's
    `LogisticRegression(C=1 / (n * l2))`). Each iteration solves the (h + 1)-dimensional Newton
    system by Cholesky and takes the best of the steps 1, 1/2, ..., 2^-11, 0 (evaluated at once:
    two matrix-vector products per iteration), so the objective never increases and separable data
    (where plain Newton overshoots) are handled. Stops when the Newton decrement g . H^-1 g falls
    below `tol` or no step decreases the objective (float32 resolution), at most `max_iter`
    iterations. Cost per iteration O(n h^2) (the Hessian).

    Args:
        x: float32 [n, h] features (standardize them for a well-conditioned problem).
        y: labels [n] in {0, 1}.
        l2: L2 strength >= 0 (traced: a grid is a vmap). With l2 = 0 on separable data the
            optimum does not exist; the weights then grow until float32 stalls.
        max_iter: Newton iteration cap (static).
        tol: threshold on the Newton decrement.
        init: optional starting point (w [h], b []) (a warm start along a regularization path);
            default zeros. The optimum does not depend on it (strictly convex for l2 > 0).

    Returns:
        `LogisticFit`.
    """
    n, h = x.shape
    yf = jnp.asarray(y, jnp.float32)
    l2 = jnp.asarray(l2, jnp.float32)
    xa = jnp.concatenate([x, jnp.ones((n, 1), x.dtype)], axis=1)
    reg = jnp.concatenate([jnp.full((h,), 1.0), jnp.zeros((1,))]) * l2
    steps = jnp.asarray(_STEPS, jnp.float32)

    def obj(theta, f):
        return _objective(f, yf, theta[:h], l2)

    def grad_hess(theta, f):
        p = jax.nn.sigmoid(f)
        g = jnp.matmul(xa.T, p - yf, precision=_HI) / n + reg * theta
        wt = jnp.sqrt(p * (1.0 - p) / n)
        xw = xa * wt[:, None]
        hess = jnp.matmul(xw.T, xw, precision=_HI) + jnp.diag(reg)
        # Jitter: saturated probabilities (separable data) can leave the bias direction flat.
        hess = hess + 1e-7 * (jnp.trace(hess) / (h + 1) + 1e-6) * jnp.eye(h + 1)
        return g, hess

    def cond(state):
        _, _, it, dec, stalled = state
        return (it < max_iter) & (dec > tol) & ~stalled

    def body(state):
        theta, f, it, _, _ = state
        g, hess = grad_hess(theta, f)
        delta = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(hess), g)
        dec = jnp.dot(g, delta)
        u = jnp.matmul(xa, delta, precision=_HI)
        cand = jax.vmap(lambda a: obj(theta - a * delta, f - a * u))(steps)
        best = jnp.argmin(cand)
        a = steps[best]
        stalled = a == 0.0
        return theta - a * delta, f - a * u, it + 1, dec, stalled

    if init is None:
        theta0 = jnp.zeros((h + 1,), jnp.float32)
    else:
        theta0 = jnp.concatenate([jnp.asarray(init[0], jnp.float32), jnp.reshape(init[1], (1,))])
    f0 = jnp.matmul(xa, theta0, precision=_HI)
    init = (theta0, f0, jnp.int32(0), jnp.float32(jnp.inf), jnp.bool_(False))
    theta, f, it, dec, stalled = jax.lax.while_loop(cond, body, init)
    g, _ = grad_hess(theta, f)
    return LogisticFit(
        w=theta[:h],
        b=theta[h],
        objective=obj(theta, f),
        grad_norm=jnp.max(jnp.abs(g)),
        n_iter=it,
        converged=(dec <= tol) | stalled,
    )


def _standardize_stats(feats):
    mu = jnp.mean(feats, axis=0)
    sd = jnp.std(feats, axis=0)
    # Constant features (dead ReLU units, float-noise level) stay at 0 after centring.
    ok = sd > 1e-6 * (jnp.max(sd) + 1e-30)
    return mu, jnp.where(ok, sd, 1.0), ok


def _standardize(feats, stats):
    mu, sd, ok = stats
    return jnp.where(ok, (feats - mu) / sd, 0.0)


def _probe_one(f_tr, y_tr, f_te, y_te, perm, l2_grid, n_fit, select_by, max_iter, tol):
    """One model, one randomization: grid on a held-out split, refit, test metrics."""
    fp, yp = f_tr[perm], y_tr[perm]
    fit_x, fit_y, val_x, val_y = fp[:n_fit], yp[:n_fit], fp[n_fit:], yp[n_fit:]
    stats = _standardize_stats(fit_x)
    zx, zv = _standardize(fit_x, stats), _standardize(val_x, stats)

    def on_grid(prev, l2):
        fit = fit_logistic(zx, fit_y, l2, max_iter=max_iter, tol=tol, init=prev)
        s = zv @ fit.w + fit.b
        loss = jnp.mean(optax.sigmoid_binary_cross_entropy(s, val_y.astype(jnp.float32)))
        acc = jnp.mean(((s > 0).astype(jnp.int32) == val_y).astype(jnp.float32))
        return (fit.w, fit.b), (loss, acc, fit.converged, fit.w, fit.b)

    # A regularization path: strengths in decreasing order (`l2_grid` arrives sorted so), each
    # fit warm-started from the previous optimum (see the module docstring).
    start = (jnp.zeros(zx.shape[1], jnp.float32), jnp.float32(0.0))
    _, (val_loss, val_acc, grid_conv, ws, bs) = jax.lax.scan(on_grid, start, l2_grid)
    if select_by == "loss":
        best = jnp.argmin(val_loss)
    else:  # accuracy; ties go to the lower validation loss
        best = jnp.argmin(jnp.where(val_acc == jnp.max(val_acc), val_loss, jnp.inf))
    l2 = l2_grid[best]
    stats_all = _standardize_stats(f_tr)
    z_tr = _standardize(f_tr, stats_all)
    # Warm start from the chosen grid fit (standardized with nearly the same statistics).
    fit = fit_logistic(z_tr, y_tr, l2, max_iter=max_iter, tol=tol, init=(ws[best], bs[best]))
    s_tr = z_tr @ fit.w + fit.b
    s_te = _standardize(f_te, stats_all) @ fit.w + fit.b
    pred_acc = lambda s, y: jnp.mean(((s > 0).astype(jnp.int32) == y).astype(jnp.float32))
    return {
        "acc": pred_acc(s_te, y_te),
        "auc": roc_auc_from_scores(s_te, y_te),
        "train_acc": pred_acc(s_tr, y_tr),
        "val_acc": val_acc[best],
        "val_loss": val_loss[best],
        "l2": l2,
        "converged": fit.converged & jnp.all(grid_conv),
        "grad_norm": fit.grad_norm,
    }


# ----------------------------------------------------------------------------------------------
# DFR (Kirichenko et al. 2023) as a method: a new last layer on frozen features.
# ----------------------------------------------------------------------------------------------


class DFRHead(NamedTuple):
    """A refit last layer (leading axes added by vmap): score = standardize(phi) @ w + b.

    Attributes: w float32 [h]; b float32 []; mu, sd float32 [h] and ok bool [h]: the
    standardization of the refit set (constant features left at 0); converged bool []: every
    subset's fit converged.
    """

    w: jax.Array
    b: jax.Array
    mu: jax.Array
    sd: jax.Array
    ok: jax.Array
    converged: jax.Array


def group_balanced_subsets(
    groups: np.ndarray, n_subsets: int, rng: np.random.Generator
) -> np.ndarray:
    """int [n_subsets, m]: rows of `n_subsets` subsets, each with the smallest non-empty group's
    size of rows from every non-empty group (without replacement within a subset), as DFR
    subsamples its reweighting set.

    Raises:
        ValueError: naming `groups` if a non-empty group has fewer than 2 rows, or `n_subsets`.
    """
    g = np.asarray(groups).reshape(-1)
    check_int("n_subsets", n_subsets, min_value=1)
    members = [np.flatnonzero(g == v) for v in np.unique(g)]
    size = min(len(m) for m in members)
    if size < 2:
        fail("groups", f"a group of {size} row", "every non-empty group with >= 2 rows")
    return np.stack(
        [
            np.concatenate([rng.choice(m, size, replace=False) for m in members])
            for _ in range(n_subsets)
        ]
    ).astype(np.int32)


def dfr_refit(
    feats: jax.Array,
    y: jax.Array,
    subsets: jax.Array,
    l2: jax.Array | float,
    *,
    max_iter: int = 100,
) -> DFRHead:
    """DFR's refit of one model's last layer; pure and traceable (vmap it over models, strengths).

    The features are standardized with the whole refit set's mean / std; on each subset an L2
    logistic regression is fitted to convergence from zero (`fit_logistic`, exact damped Newton);
    the subsets' weights and biases are averaged (Kirichenko et al. 2023, Sec. 5, with L2 in place
    of their L1 penalty).

    Args:
        feats: float32 [n, h] frozen features of the refit set. y: labels [n] in {0, 1}.
        subsets: int [K, m] rows of each subset (`group_balanced_subsets`). l2: strength > 0.
        max_iter: Newton iteration cap per subset (static).
    """
    stats = _standardize_stats(feats)
    z = _standardize(feats, stats)
    y = jnp.asarray(y, jnp.int32)
    fits = jax.vmap(lambda idx: fit_logistic(z[idx], y[idx], l2, max_iter=max_iter))(subsets)
    return DFRHead(jnp.mean(fits.w, axis=0), jnp.mean(fits.b), *stats, jnp.all(fits.converged))


def dfr_logits(head: DFRHead, feats: jax.Array) -> jax.Array:
    """float32 [n, 2] logits (-s / 2, s / 2) of a `DFRHead` on features [n, h]: the softmax of
    class 1 is sigmoid(s), as in the fit."""
    s = _standardize(feats, (head.mu, head.sd, head.ok)) @ head.w + head.b
    return jnp.stack([-0.5 * s, 0.5 * s], axis=-1)


def _n_fit(val_fraction: float, n_train: int) -> int:
    """Rows the grid fits on; the other round(val_fraction n_train) rows choose the strength."""
    return n_train - int(round(val_fraction * n_train))


def _check_last_layer_probe(a: types.SimpleNamespace) -> None:
    if isinstance(a.model, Model):
        feat_fn, logits_fn = _model_features_fn(a.model), a.model.logits
    elif callable(a.model):
        feat_fn, logits_fn = a.model, None
    else:
        fail("model", type(a.model).__name__, "a Model or a features_fn(variables, x) -> [n, h]")
    check_model_keys(a.key, num_models(a.variables))
    check_xy(a.x_train, a.y_train)
    check_xy(a.x_test, a.y_test)
    shape = np.shape(a.x_train)
    if shape[1:] != np.shape(a.x_test)[1:]:
        fail("x_test.shape", np.shape(a.x_test), f"[n, {', '.join(map(str, shape[1:]))}]")
    b = as_basis(a.basis)
    if int(np.prod(shape[1:])) != b.dim:
        fail("x_train.shape", shape, f"inputs with {b.dim} features to match the basis")
    grid = np.asarray(a.l2_grid, np.float64).reshape(-1)
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
        fail("l2_grid", tuple(np.asarray(a.l2_grid).reshape(-1).tolist()), "finite strengths > 0")
    grid = np.sort(grid)[::-1]  # the path runs from the strongest penalty down
    check_range("val_fraction", a.val_fraction, 0.0, 1.0, lo_open=True, hi_open=True)
    n_train = int(shape[0])
    n_fit = _n_fit(a.val_fraction, n_train)
    if n_train - n_fit < 2 or n_fit < 2:
        fail(
            "val_fraction",
            a.val_fraction,
            f"a share leaving >= 2 fit and >= 2 validation rows of {n_train}",
        )
    check_choice("select_by", a.select_by, PROBE_SELECTION)
    check_int("max_iter", a.max_iter, min_value=1)
    check_range("tol", a.tol, 0.0, None, lo_open=True)
    check_choice("mode", a.mode, RANDOMIZE_MODES)
    check_batch_size(a.batch_size)
    check_model_chunk(a.model_chunk)
    a.model = (feat_fn, logits_fn)
    a.x_train, a.y_train = jnp.asarray(a.x_train, jnp.float32), jnp.asarray(a.y_train, jnp.int32)
    a.x_test, a.y_test = jnp.asarray(a.x_test, jnp.float32), jnp.asarray(a.y_test, jnp.int32)
    a.basis = basis_arrays(b)
    a.l2_grid = jnp.asarray(grid, jnp.float32)
    a.val_fraction = float(a.val_fraction)
    a.tol = jnp.float32(a.tol)
    a.max_iter = int(a.max_iter)


@checked_jit(
    _check_last_layer_probe,
    static_argnames=(
        "model",
        "val_fraction",
        "select_by",
        "max_iter",
        "mode",
        "batch_size",
        "model_chunk",
    ),
)
def last_layer_probe(
    model: Model | Callable[[Any, jax.Array], jax.Array],
    variables: Any,
    x_train: jax.Array,
    y_train: jax.Array,
    x_test: jax.Array,
    y_test: jax.Array,
    key: jax.Array,
    basis: Any,
    *,
    l2_grid: Sequence[float] = DEFAULT_L2_GRID,
    val_fraction: float = 0.2,
    select_by: str = "loss",
    max_iter: int = 50,
    tol: float = 1e-9,
    mode: str = "permute",
    batch_size: int | None = None,
    model_chunk: int | None = None,
) -> dict[str, jax.Array]:
    """S-randomized and S^c-randomized last-layer probes of every model, in one compiled call.

    Args:
        model: a `Model` (its penultimate features via `sbjax.models.features.features_fn`; the
            model's own head is also scored on the randomized test sets) or a hashable
            `features_fn(variables, x) -> [n, h]` of one model.
        variables: stacked variables [M, ...].
        x_train: float32 [n_train, ...] probe training inputs (model basis); y_train: int [n_train].
        x_test: float32 [n_test, ...] test inputs; y_test: int [n_test]. Labels in {0, 1}.
        key: one PRNG key shared by the models, or keys [M] (see the module docstring).
        basis: a dataset or `Basis` (rotation, S, S^c; `sbjax.eval.randomize.as_basis`).
        l2_grid: L2 strengths (> 0) tried per model; the penalty is (l2 / 2) ||w||^2 on the mean
            log-loss of standardized features (scikit-learn C = 1 / (n l2)).
        val_fraction: share of the (randomized) training rows held out to choose l2.
        select_by: "loss" (validation log-loss, default) or "accuracy" (ties: lower loss).
        max_iter, tol: Newton iteration cap and decrement tolerance (`fit_logistic`).
        mode: "permute" (default) or "resample" without a source: how blocks are randomized
            (`sbjax.eval.randomize.randomize_block`).
        batch_size: compute features at most this many rows at once. model_chunk: `lax.map` over
            groups of this many vmapped models (memory).

    Returns:
        dict of [M] arrays, for kind in ("s_rand", "sc_rand"):
        `probe_{kind}_acc`, `probe_{kind}_auc` (test accuracy / ROC-AUC of the probe on
        kind-randomized test inputs), `probe_{kind}_train_acc`, `probe_{kind}_val_acc`,
        `probe_{kind}_val_loss` (held-out metrics of the chosen strength), `probe_{kind}_l2` (the
        chosen strength), `probe_{kind}_converged` (bool: every Newton solve converged),
        `probe_{kind}_grad_norm` (final max-abs gradient of the refit); with a `Model` also
        `head_{kind}_acc`, the model's own accuracy on the same randomized test set.

    Raises:
        ValueError: bad shapes, labels, grid, fraction or options (before compiling).
    """
    feat_fn, logits_fn = model  # checked: the features_fn and the head's logits_fn (or None)
    w, idx_s, idx_sc = basis  # checked: `BasisArrays`
    x_tr, y_tr, x_te, y_te = x_train, y_train, x_test, y_test
    n_fit = _n_fit(val_fraction, x_tr.shape[0])
    per_model = per_model_keys(key)
    xf_tr, xf_te = flat_features(x_tr), flat_features(x_te)

    def rand(k, xf, shape, idx, stream):
        return randomize_flat(jax.random.fold_in(k, stream), xf, idx, w, mode, None).reshape(shape)

    def inputs(k):
        return {
            "s_rand": (rand(k, xf_tr, x_tr.shape, idx_s, 0), rand(k, xf_te, x_te.shape, idx_s, 1)),
            "sc_rand": (
                rand(k, xf_tr, x_tr.shape, idx_sc, 2),
                rand(k, xf_te, x_te.shape, idx_sc, 3),
            ),
            "perm": jax.random.permutation(jax.random.fold_in(k, 4), x_tr.shape[0]),
        }

    shared = None if per_model else inputs(key)  # one draw for all models: made once

    def one(v, k):
        data = inputs(k) if per_model else shared
        phi = lambda t: map_batches(lambda xb: feat_fn(v, xb), t, batch_size)
        out = {}
        for kind in ("s_rand", "sc_rand"):
            xr_tr, xr_te = data[kind]
            res = _probe_one(
                phi(xr_tr),
                y_tr,
                phi(xr_te),
                y_te,
                data["perm"],
                l2_grid,
                n_fit,
                select_by,
                max_iter,
                tol,
            )
            for name, val in res.items():
                out[f"probe_{kind}_{name}"] = val
            if logits_fn is not None:
                lg = map_batches(lambda xb: logits_fn(v, xb), xr_te, batch_size)
                out[f"head_{kind}_acc"] = jnp.mean((jnp.argmax(lg, -1) == y_te).astype(jnp.float32))
        return out

    return map_models_keys(one, variables, key, per_model, model_chunk=model_chunk)
