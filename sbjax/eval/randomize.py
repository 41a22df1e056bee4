"""S- and S^c-randomized metrics (Shah et al. 2020, Sec. 3, Definitions 1-2, Table 1).

For a coordinate subset S of the canonical basis, the S-randomized distribution keeps each point's
coordinates outside S and its label, and replaces its S block by a draw from the marginal of S, so
that S carries no information about the label. A model that relies *exclusively* on S has chance
S-randomized accuracy/AUC and S-randomized logits shuffled across the classes; a model *invariant*
to S^c has S^c-randomized accuracy/AUC equal to the standard ones and unchanged logits (Table 1).

All operations happen in the canonical basis: `z = x @ W.T` (W = the dataset's rotation, rows are
the canonical directions in model space), modify the block, rotate forward `x = z @ W`. Only the
block changes, so we write the result as `x + (z_new[S] - z[S]) @ W[S]`: coordinates outside the
block and rows whose block is unchanged keep their exact float values, and an S block of one
coordinate costs O(n d) instead of O(n d^2).

Two modes (REFERENCE 4.3, disagreement row 18):

* `"permute"` (default, the reference implementation): ONE random permutation p of the evaluation
  rows; every point receives the whole block of point p(i). The block's empirical marginal is kept
  exactly (sampling without replacement from the evaluation set).
* `"resample"` (the paper's definition): the block is an independent draw from the marginal D^S.
  With `source` (an independent sample of the same distribution, [m >= n, ...] in the model basis)
  point i receives the block of a distinct random source row, i.e. an exact i.i.d. draw from D^S;
  without `source` the block is drawn with replacement from the evaluation rows (the empirical
  marginal, a bootstrap).

Keys: every function here takes `key` as ONE PRNG key, shared by all M models (one random draw,
so models are compared on paired data), or as a stacked key array [M] (model i uses `key[i]`; the
draws are made inside the same compiled `vmap` as the models, and model i's result equals a call
on model i alone with `key[i]`). Per-model keys give independent draws, e.g. each model's key
derived from its own (cell, seed), so the spread over seeds includes the randomization's own
sampling noise and no two cells of a table share a permutation.

Inputs need not be vectors: `x` of shape [n, ...] is flattened to [n, D] and coordinates index the
flattened features. Images have no rotation (`rotation=None` means the identity), e.g. for
MNIST-CIFAR (64, 32, 3) inputs S = the MNIST half, the first 32 * 32 * 3 flat indices (see
`image_basis`). Note the reference builds its MNIST- and CIFAR-randomized test sets from fresh
pairings of images (REFERENCE 4.4, row 19); randomizing the block of one test set here is the
`permute_block` variant.
"""

from __future__ import annotations

import math
import types
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbjax.eval.checks import (
    check_batch_size,
    check_finite_inputs,
    check_logits_fn,
    check_model_chunk,
    check_model_keys,
    check_xy,
    key_batch_shape,
    num_models,
    per_model_keys,
)
from sbjax.eval.coords import (
    Basis,
    as_basis,
    as_coords,
    basis_arrays,
    check_rotation,
    flat_features,
    image_basis,
)
from sbjax.eval.metrics import (
    AUC_KINDS,
    LogitsFn,
    checked_jit,
    ks_statistic,
    map_models,
    map_models_keys,
    metrics_from_logits,
    model_logits,
    score_from_logits,
)
from sbjax.validate import check_choice, check_range, fail

RANDOMIZE_MODES = ("permute", "resample")
_HI = jax.lax.Precision.HIGHEST

__all__ = [
    "RANDOMIZE_MODES",
    "Basis",
    "as_basis",
    "image_basis",
    "per_coordinate_randomized",
    "randomization_report",
    "randomize_block",
    "randomized_logits",
    "randomized_metrics",
    "reliance_summary",
]


# ----------------------------------------------------------------------------------------------
# Randomizing a block (the canonical basis: `sbjax.eval.coords`).
# ----------------------------------------------------------------------------------------------


def _block_values(xf: jax.Array, idx: jax.Array, w: jax.Array | None) -> jax.Array:
    """Canonical values of the block: [n, D] -> [n, k]."""
    if w is None:
        return xf[:, idx]
    return jnp.matmul(xf, w[idx].T, precision=_HI)


def randomize_flat(
    key: jax.Array,
    xf: jax.Array,
    idx: jax.Array,
    w: jax.Array | None,
    mode: str,
    source_f: jax.Array | None,
) -> jax.Array:
    """Core of `randomize_block` on flattened inputs; `idx` may be traced."""
    n = xf.shape[0]
    z_block = _block_values(xf, idx, w)
    if mode == "permute":
        new = z_block[jax.random.permutation(key, n)]
    elif source_f is None:
        new = z_block[jax.random.randint(key, (n,), 0, n)]
    else:
        rows = jax.random.permutation(key, source_f.shape[0])[:n]
        new = _block_values(source_f[rows], idx, w)
    if w is None:
        return xf.at[:, idx].set(new)
    return xf + jnp.matmul(new - z_block, w[idx], precision=_HI)


def _check_mode_source(mode: str, source: Any, x: Any) -> None:
    check_choice("mode", mode, RANDOMIZE_MODES)
    if source is None:
        return
    if mode != "resample":
        fail("source", "an array", "None unless mode='resample' (permute uses the rows of x)")
    if np.shape(source)[1:] != np.shape(x)[1:]:
        fail("source.shape", np.shape(source), f"[m, {', '.join(map(str, np.shape(x)[1:]))}]")
    if np.shape(source)[0] < np.shape(x)[0]:
        fail("source.shape", np.shape(source), f"at least n={np.shape(x)[0]} rows")


def randomize_block(
    key: jax.Array,
    x: jax.Array,
    coords: Sequence[int],
    rotation: Any = None,
    *,
    mode: str = "permute",
    source: jax.Array | None = None,
) -> jax.Array:
    """Randomizes the canonical block `coords` of every point; labels are not touched.

    Args:
        key: PRNG key (the permutation / draw), or keys [K]: K independent draws.
        x: inputs [n, ...] in the model basis.
        coords: canonical (flattened) indices of the block, e.g. S or S^c.
        rotation: [D, D] W with x = z @ W, or None for the identity.
        mode: "permute" (reference) or "resample" (paper), see the module docstring.
        source: with mode="resample", an independent sample [m >= n, ...] to draw blocks from.

    Returns:
        float32 [n, ...] (or [K, n, ...] for K keys): x with the block of row i replaced (in the
        canonical basis) by the block of another row, other canonical coordinates unchanged.
    """
    x = jnp.asarray(x, jnp.float32)
    if x.ndim < 2:
        fail("x.shape", x.shape, "a batch of inputs [n, ...]")
    dim = math.prod(x.shape[1:])
    idx = as_coords("coords", coords, dim)
    w = check_rotation(rotation, dim)
    _check_mode_source(mode, source, x)
    src = None if source is None else flat_features(jnp.asarray(source, jnp.float32))
    batch = key_batch_shape(key)
    if len(batch) > 1:
        fail("key", f"a key array of batch shape {batch}", "one PRNG key or a stack [K]")
    wj = None if w is None else jnp.asarray(w)

    def one(k):
        return randomize_flat(k, flat_features(x), jnp.asarray(idx), wj, mode, src).reshape(x.shape)

    return jax.vmap(one)(key) if batch else one(key)


# ----------------------------------------------------------------------------------------------
# Stacked randomized logits and metrics.
# ----------------------------------------------------------------------------------------------


def _check_randomized(a: types.SimpleNamespace, rotation: Any) -> tuple[int, jax.Array | None]:
    """Checks the arguments the randomized evaluations share (`y` when `a` has one).

    Normalizes `a.x` (float32) and `a.source` (flattened float32 [m, D], or None); returns D and
    the rotation W as an array (or None).
    """
    check_logits_fn(a.logits_fn)
    check_model_keys(a.key, num_models(a.variables))
    if getattr(a, "y", None) is not None:
        check_xy(a.x, a.y)
    check_finite_inputs("x", a.x)
    check_finite_inputs("source", a.source)
    a.x = jnp.asarray(a.x, jnp.float32)
    dim = math.prod(a.x.shape[1:])
    w = check_rotation(rotation, dim)
    _check_mode_source(a.mode, a.source, a.x)
    check_batch_size(a.batch_size)
    check_model_chunk(a.model_chunk)
    a.source = None if a.source is None else flat_features(jnp.asarray(a.source, jnp.float32))
    return dim, (None if w is None else jnp.asarray(w))


def _check_randomized_logits(a: types.SimpleNamespace) -> None:
    dim, a.rotation = _check_randomized(a, a.rotation)
    a.coords = jnp.asarray(as_coords("coords", a.coords, dim))


@checked_jit(
    _check_randomized_logits,
    static_argnames=("logits_fn", "mode", "batch_size", "model_chunk"),
)
def randomized_logits(
    logits_fn: LogitsFn,
    variables: Any,
    x: jax.Array,
    key: jax.Array,
    coords: Sequence[int],
    rotation: Any = None,
    *,
    mode: str = "permute",
    source: jax.Array | None = None,
    batch_size: int | None = None,
    model_chunk: int | None = None,
) -> jax.Array:
    """Logits [M, n, 2] of every model on the coords-randomized inputs.

    With one key all M models see the SAME randomized set (one draw from `key`), so models are
    compared on paired data. With keys [M] model i sees its own draw from `key[i]` (the result
    for model i equals a call on model i alone with `key[i]`), all in one compiled call.

    Args:
        logits_fn: `logits_fn(variables, x) -> [n, 2]` for one model (hashable).
        variables: stacked variables [M, ...].
        x: inputs [n, ...] (model basis).
        key: one PRNG key shared by the models, or keys [M], one per model.
        coords, rotation, mode, source: see `randomize_block`.
        batch_size, model_chunk: memory controls (see `sbjax.eval.stacked_logits`).
    """
    # Checked: coords an int array, rotation W or None, source flattened [m, D] or None.

    def randomized(k):
        return randomize_flat(k, flat_features(x), coords, rotation, mode, source).reshape(x.shape)

    if not per_model_keys(key):
        # One draw shared by every model: randomize once, outside the model map.
        xr = randomized(key)
        return map_models(
            lambda v: model_logits(logits_fn, v, xr, batch_size),
            variables,
            model_chunk=model_chunk,
        )
    return map_models_keys(
        lambda v, k: model_logits(logits_fn, v, randomized(k), batch_size),
        variables,
        key,
        True,
        model_chunk=model_chunk,
    )


def randomized_metrics(
    logits_fn: LogitsFn,
    variables: Any,
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    coords: Sequence[int],
    rotation: Any = None,
    *,
    mode: str = "permute",
    source: jax.Array | None = None,
    auc_kind: str = "roc",
    batch_size: int | None = None,
    model_chunk: int | None = None,
) -> dict[str, jax.Array]:
    """coords-randomized accuracy and AUC [M] (Definitions 1 and 2 with S = coords).

    Args:
        y: int labels [n] in {0, 1} (kept with their points).
        key: one PRNG key shared by the models, or keys [M], one per model (see
            `randomized_logits`).
        auc_kind: "roc" (reference default), "pr" (paper's Definition 2) or "both".
        Other arguments: see `randomized_logits`.

    Returns:
        dict of float32 [M]: `accuracy` and `roc_auc` and/or `pr_auc`.
    """
    check_choice("auc_kind", auc_kind, AUC_KINDS)
    logits = randomized_logits(
        logits_fn,
        variables,
        x,
        key,
        coords,
        rotation,
        mode=mode,
        source=source,
        batch_size=batch_size,
        model_chunk=model_chunk,
    )
    check_xy(x, y)
    return metrics_from_logits(logits, jnp.asarray(y), auc_kind)


def _report_one(logits, logits_s, logits_sc, y, auc_kind):
    """Metrics and logit-distribution statistics of one model (Table 1)."""
    pos = y == 1
    neg = ~pos
    out = {}
    for name, lg in (
        ("standard", logits),
        ("s_randomized", logits_s),
        ("sc_randomized", logits_sc),
    ):
        out[name] = metrics_from_logits(lg, y, auc_kind)
        out[name]["pred_pos_rate"] = jnp.mean((jnp.argmax(lg, -1) == 1).astype(jnp.float32))
    s0 = score_from_logits(logits)
    ss = score_from_logits(logits_s)
    ssc = score_from_logits(logits_sc)
    # "Shuffled across true positives and negatives": each class's S-randomized scores are
    # distributed like the original scores of ALL points. "Essentially identical": each class's
    # S^c-randomized scores are distributed like that class's original scores.
    out["logit_ks"] = {
        "s_randomized_vs_all": jnp.maximum(
            ks_statistic(ss, s0, mask_a=pos), ks_statistic(ss, s0, mask_a=neg)
        ),
        "sc_randomized_vs_same_class": jnp.maximum(
            ks_statistic(ssc, s0, mask_a=pos, mask_b=pos),
            ks_statistic(ssc, s0, mask_a=neg, mask_b=neg),
        ),
        "sc_max_abs_score_change": jnp.max(jnp.abs(ssc - s0)),
    }
    return out, (s0, ss, ssc)


def _check_randomization_report(a: types.SimpleNamespace) -> None:
    b = as_basis(a.basis)
    dim, _ = _check_randomized(a, b.rotation)
    if dim != b.dim:
        fail("x.shape", a.x.shape, f"inputs with {b.dim} features to match the basis")
    check_choice("auc_kind", a.auc_kind, AUC_KINDS)
    a.basis = basis_arrays(b)
    a.y = jnp.asarray(a.y)
    a.return_scores = bool(a.return_scores)


def _class_counts(out: dict[str, Any], a: types.SimpleNamespace) -> dict[str, Any]:
    n_pos = int(np.sum(np.asarray(a.y) == 1))
    out["n_pos"] = n_pos
    out["n_neg"] = int(a.y.shape[0]) - n_pos
    return out


@checked_jit(
    _check_randomization_report,
    static_argnames=("logits_fn", "mode", "auc_kind", "return_scores", "batch_size", "model_chunk"),
    finish=_class_counts,
)
def randomization_report(
    logits_fn: LogitsFn,
    variables: Any,
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    basis: Any,
    *,
    mode: str = "permute",
    source: jax.Array | None = None,
    auc_kind: str = "roc",
    return_scores: bool = False,
    batch_size: int | None = None,
    model_chunk: int | None = None,
) -> dict[str, Any]:
    """Standard, S-randomized and S^c-randomized metrics of every model, in one compiled call.

    The S- and S^c-randomized sets use independent draws (`fold_in(key, 0)` and `(key, 1)`),
    shared by all models for one key; with keys [M] model i draws both from `key[i]` (its result
    equals a call on model i alone with `key[i]`). Feed the result to `reliance_summary` for the
    Table 1 verdict.

    Args:
        logits_fn: `logits_fn(variables, x) -> [n, 2]` for one model (hashable).
        variables: stacked variables [M, ...].
        x: evaluation inputs [n, ...] (model basis). y: int labels [n] in {0, 1}.
        key: one PRNG key shared by the models, or keys [M], one per model.
        basis: a dataset (`.rotation`, `.simple_coords`, `.d`) or a `Basis` (`as_basis`,
            `image_basis`).
        mode: "permute" (reference, default) or "resample" (paper); `source` as in
            `randomize_block`.
        auc_kind: "roc" (reference, default), "pr" (paper Definition 2) or "both".
        return_scores: also return the scores (logit1 - logit0) [M, n] of the three sets, for
            logit histograms (paper Fig. 3a).
        batch_size, model_chunk: memory controls.

    Returns:
        Nested dict of float32 arrays [M]: `standard`, `s_randomized`, `sc_randomized` each with
        `accuracy`, the AUC(s) and `pred_pos_rate` (fraction predicted class 1); `logit_ks` with
        `s_randomized_vs_all` (max over classes of the KS distance between a class's S-randomized
        scores and all original scores), `sc_randomized_vs_same_class` (max over classes of the
        KS distance between a class's S^c-randomized and original scores) and
        `sc_max_abs_score_change`; `n_pos`, `n_neg` (ints); optionally `scores` [M, n] each.
    """
    w, idx_s, idx_sc = basis  # checked: `BasisArrays`; source flattened [m, D] or None
    per_model = per_model_keys(key)
    xf = flat_features(x)

    def randomized(k):
        # S and S^c use independent draws: fold_in(k, 0) and fold_in(k, 1).
        xs = randomize_flat(jax.random.fold_in(k, 0), xf, idx_s, w, mode, source)
        xsc = randomize_flat(jax.random.fold_in(k, 1), xf, idx_sc, w, mode, source)
        return xs.reshape(x.shape), xsc.reshape(x.shape)

    shared = None if per_model else randomized(key)  # one draw for all models: made once

    def one(v, k):
        xs, xsc = randomized(k) if per_model else shared
        lg = [model_logits(logits_fn, v, t, batch_size) for t in (x, xs, xsc)]
        out, scores = _report_one(*lg, y, auc_kind)
        if return_scores:
            out["scores"] = dict(
                zip(("standard", "s_randomized", "sc_randomized"), scores, strict=True)
            )
        return out

    return map_models_keys(one, variables, key, per_model, model_chunk=model_chunk)


# ----------------------------------------------------------------------------------------------
# Table 1 verdict.
# ----------------------------------------------------------------------------------------------

# Two-sample KS critical value coefficient c(alpha) = sqrt(-ln(alpha / 2) / 2) at alpha = 0.001.
_KS_C_ALPHA = math.sqrt(-math.log(0.001 / 2) / 2)


def reliance_summary(
    report: dict[str, Any],
    *,
    chance_tol: float | None = None,
    invariance_tol: float = 0.01,
    ks_tol: float | None = None,
) -> dict[str, Any]:
    """Classifies each model per Table 1: relies exclusively on S and is invariant to S^c.

    A model *depends exclusively on S* when (a) its S-randomized accuracy is within `chance_tol`
    of chance and every reported S-randomized AUC is within `chance_tol` of chance, and (b) its
    S-randomized scores of each class are distributed like the original scores of all points
    (KS distance <= `ks_tol`: "randomly shuffled across true positives and negatives"), and (c)
    (our addition; Table 1 presumes a trained model) its standard metrics exceed the majority-class
    accuracy / chance AUC by more than `chance_tol`, since a chance-level model trivially stays at
    chance. It is
    *invariant to S^c* when (a) its S^c-randomized accuracy and AUC(s) are within
    `invariance_tol` of the standard ones and (b) each class's S^c-randomized scores are
    distributed like its original scores (KS <= `ks_tol`: "essentially identical").

    Chance levels: accuracy `pi q + (1 - pi)(1 - q)` for a prediction independent of the label
    (pi = positive rate, q = the model's S-randomized rate of predicting class 1; 0.5 for balanced
    classes); ROC-AUC 0.5; PR-AUC pi.

    Args:
        report: output of `randomization_report` (any `auc_kind`).
        chance_tol: default `max(0.03, 3 SE)`, SE the null standard error of the metric
            (ROC-AUC: sqrt((n + 1) / (12 n_pos n_neg)); accuracy and PR-AUC: sqrt(pi (1 - pi) / n)
            with pi the chance level); 0.03 is REFERENCE 10's tolerance for the paper's 0.50.
        invariance_tol: absolute tolerance on |S^c-randomized - standard| (default 0.01: the
            paper's Table 2 gaps are 0.004-0.009).
        ks_tol: default the two-sample KS critical value at alpha = 0.001,
            1.949 sqrt((n1 + n2) / (n1 n2)), n1 = the class size, n2 = n (S) or the class size
            (S^c), using the smaller class.

    Returns:
        dict with bool NumPy [M] arrays `depends_exclusively_on_s`, `invariant_to_sc`,
        `exclusive_s_invariant_sc` (both), the per-condition bool arrays under `checks`, and the
        tolerances and chance levels used under `tolerances`.
    """
    if invariance_tol < 0:
        check_range("invariance_tol", invariance_tol, 0.0, None)
    n_pos, n_neg = int(report["n_pos"]), int(report["n_neg"])
    n = n_pos + n_neg
    if n_pos == 0 or n_neg == 0:
        fail("report", f"n_pos={n_pos}, n_neg={n_neg}", "both classes present")
    pi = n_pos / n
    std = {k: np.asarray(v) for k, v in report["standard"].items()}
    srand = {k: np.asarray(v) for k, v in report["s_randomized"].items()}
    scrand = {k: np.asarray(v) for k, v in report["sc_randomized"].items()}
    q = srand["pred_pos_rate"]
    chance = {"accuracy": pi * q + (1 - pi) * (1 - q), "roc_auc": 0.5, "pr_auc": pi}
    chance_std = {"accuracy": max(pi, 1 - pi), "roc_auc": 0.5, "pr_auc": pi}
    se = {
        "accuracy": math.sqrt(0.25 / n),
        "roc_auc": math.sqrt((n + 1) / (12 * n_pos * n_neg)),
        "pr_auc": math.sqrt(pi * (1 - pi) / n),
    }
    metric_names = [k for k in ("accuracy", "roc_auc", "pr_auc") if k in std]
    tol = {}
    for k in metric_names:
        tol[k] = chance_tol if chance_tol is not None else max(0.03, 3 * se[k])
        check_range(f"chance_tol[{k}]", tol[k], 0.0, None)
    n_small = min(n_pos, n_neg)
    ks_s = ks_tol if ks_tol is not None else _KS_C_ALPHA * math.sqrt((n_small + n) / (n_small * n))
    ks_sc = ks_tol if ks_tol is not None else _KS_C_ALPHA * math.sqrt(2 / n_small)

    checks = {}
    for k in metric_names:
        # Not in Table 1, which presumes a trained model: a model at chance to begin with would
        # trivially stay at chance under S-randomization.
        checks[f"s_randomized_standard_{k}_above_chance"] = std[k] - chance_std[k] > tol[k]
        checks[f"s_randomized_{k}_at_chance"] = np.abs(srand[k] - chance[k]) <= tol[k]
        checks[f"sc_randomized_{k}_unchanged"] = np.abs(scrand[k] - std[k]) <= invariance_tol
    ks = report["logit_ks"]
    checks["s_randomized_logits_shuffled"] = np.asarray(ks["s_randomized_vs_all"]) <= ks_s
    checks["sc_randomized_logits_identical"] = (
        np.asarray(ks["sc_randomized_vs_same_class"]) <= ks_sc
    )
    dep = np.logical_and.reduce([v for k, v in checks.items() if k.startswith("s_randomized")])
    inv = np.logical_and.reduce([v for k, v in checks.items() if k.startswith("sc_randomized")])
    return {
        "depends_exclusively_on_s": dep,
        "invariant_to_sc": inv,
        "exclusive_s_invariant_sc": dep & inv,
        "checks": checks,
        "tolerances": {
            "chance_tol": tol,
            "invariance_tol": invariance_tol,
            "ks_tol_s": ks_s,
            "ks_tol_sc": ks_sc,
            "chance_level": {k: np.asarray(chance[k]) for k in metric_names},
        },
    }


# ----------------------------------------------------------------------------------------------
# Per-coordinate randomization (REFERENCE 4.5).
# ----------------------------------------------------------------------------------------------


def _check_per_coordinate(a: types.SimpleNamespace) -> None:
    if a.rotation is not None and hasattr(a.rotation, "simple_coords"):
        a.rotation = as_basis(a.rotation).rotation
    if a.auc_kind is not None:
        check_choice("auc_kind", a.auc_kind, AUC_KINDS)
    dim, a.rotation = _check_randomized(a, a.rotation)
    if a.coords is None:
        coords = np.arange(dim)
    else:
        as_coords("coords", a.coords, dim)  # validation only; keep the caller's order
        coords = np.asarray(a.coords, np.int64).reshape(-1)
    a.y = jnp.asarray(a.y)
    a.coords = jnp.asarray(coords, jnp.int32)


@checked_jit(
    _check_per_coordinate,
    static_argnames=("logits_fn", "mode", "auc_kind", "batch_size", "model_chunk"),
)
def per_coordinate_randomized(
    logits_fn: LogitsFn,
    variables: Any,
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    rotation: Any = None,
    coords: Sequence[int] | None = None,
    *,
    mode: str = "permute",
    source: jax.Array | None = None,
    auc_kind: str | None = None,
    batch_size: int | None = None,
    model_chunk: int | None = None,
) -> dict[str, jax.Array]:
    """Coordinate-wise randomized accuracy (and optionally AUC) of every model (REFERENCE 4.5).

    For each canonical coordinate c separately, randomize that single coordinate with its own
    draw (`fold_in(key, c)`; with keys [M], model i uses `fold_in(key[i], c)`), rotate forward
    and evaluate. A coordinate the model relies on gets a
    low value; one it ignores keeps the standard accuracy. Coordinates are processed sequentially
    (`lax.map`), models in parallel.

    Args:
        key: one PRNG key shared by the models, or keys [M], one per model.
        rotation: [D, D] W or None (identity); or a dataset / `Basis` (its rotation is used).
        coords: canonical coordinates to test (default: all D).
        auc_kind: None (accuracy only, the reference), "roc", "pr" or "both".
        Other arguments: see `randomized_logits`.

    Returns:
        dict of float32 [M, C] arrays (`accuracy` and the requested AUCs), columns in the order of
        `coords` as given.
    """
    # Checked: rotation W or None, coords int32 [C], source flattened [m, D] or None.
    per_model = per_model_keys(key)
    xf = flat_features(x)

    def per_coord(c):
        def randomized(k):
            # A fresh permutation per coordinate, as in the reference.
            xr = randomize_flat(jax.random.fold_in(k, c), xf, c[None], rotation, mode, source)
            return xr.reshape(x.shape)

        shared = None if per_model else randomized(key)

        def one(v, k):
            xr = randomized(k) if per_model else shared
            m = metrics_from_logits(
                model_logits(logits_fn, v, xr, batch_size), y, auc_kind or "roc"
            )
            return m if auc_kind else {"accuracy": m["accuracy"]}

        return map_models_keys(one, variables, key, per_model, model_chunk=model_chunk)

    out = jax.lax.map(per_coord, coords)  # [C, M]
    return jax.tree.map(lambda a: a.T, out)
