"""Accuracy, ROC-AUC and PR-AUC for stacks of models, computed on device in one compiled call.

Every stacked function takes `logits_fn(variables, x) -> logits [n, 2]` (a pure function of ONE
model's variables, e.g. `model.logits`) and variables stacked along a leading model axis `[M, ...]`,
and returns per-model results `[M, ...]` from a single `jit(vmap(...))`. The score of a point is
`logit1 - logit0` (the reference's choice; Shah et al. 2020, Sec. 3); class 1 is predicted when
`argmax(logits) == 1`, i.e. `score > 0` (ties go to class 0, as `argmax` picks the first maximum).

The array-level functions (`*_from_logits`, `*_from_scores`) accept any number of leading batch
axes, so `[M, n]` scores give `[M]` AUCs.

AUCs are exact with ties and agree with scikit-learn:

* ROC-AUC (`roc_auc_score`) is the Mann-Whitney statistic: each (positive, negative) pair counts 1 if
  the positive scores higher and 1/2 if tied. It equals the rank formula
  `(sum of the positives' average ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`; we evaluate it per
  positive after one sort (`#neg < s_i + 1/2 #neg == s_i`) and average the per-positive fractions,
  because the rank-sum form overflows float32's 24-bit mantissa (sums ~ n^2 / 4) for test
  sets of 10^4 to 10^5 points.
* PR-AUC is average precision as `average_precision_score` computes it (no interpolation):
  `AP = sum_t (R_t - R_{t-1}) P_t` over the distinct score thresholds, which equals the mean over
  positives of `precision(threshold = s_i) = #pos >= s_i / #all >= s_i`, ties included.

Both return NaN when a class is missing (scikit-learn raises) or a score is NaN.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from sbjax.eval.checks import (
    check_batch_size,
    check_finite_inputs,
    check_logits_fn,
    check_model_chunk,
    check_model_keys,
    check_xy,
    num_models,
)
from sbjax.validate import check_choice

LogitsFn = Callable[[Any, jax.Array], jax.Array]

AUC_KINDS = ("roc", "pr", "both")

__all__ = [
    "AUC_KINDS",
    "accuracy",
    "accuracy_from_logits",
    "auc",
    "check_finite_inputs",
    "check_model_keys",
    "evaluate",
    "fold_in_keys",
    "ks_statistic",
    "map_models",
    "metrics_from_logits",
    "num_models",
    "pr_auc",
    "pr_auc_from_scores",
    "roc_auc",
    "roc_auc_from_scores",
    "score_from_logits",
    "stacked_logits",
]


# ----------------------------------------------------------------------------------------------
# PRNG keys of a stack (checks: `sbjax.eval.checks`).
# ----------------------------------------------------------------------------------------------


def fold_in_keys(key: jax.Array, data: int, per_model: bool) -> jax.Array:
    """`jax.random.fold_in` of one key, or of each key of a stack [M] when `per_model`."""
    if per_model:
        return jax.vmap(lambda k: jax.random.fold_in(k, data))(key)
    return jax.random.fold_in(key, data)


# ----------------------------------------------------------------------------------------------
# One function: checks in Python, then a jitted body.
# ----------------------------------------------------------------------------------------------


def checked_jit(
    check: Callable[[types.SimpleNamespace], None],
    *,
    static_argnames: tuple[str, ...] = (),
    finish: Callable[[Any, types.SimpleNamespace], Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: a public function written once, its arguments checked before it is jitted.

    The decorated function `f` carries the public name, signature, defaults and docstring; its
    body is the traced computation. A call of the result

    1. binds the arguments to `f`'s signature (defaults filled in; a wrong call is the TypeError
       `f` would raise);
    2. runs `check(a)` in Python, before anything is traced: `a` is a `types.SimpleNamespace` of
       every argument by name. `check` validates them (`sbjax.validate.fail`: a ValueError naming
       the parameter) and may replace any of them in place by the form the body takes
       (`a.x = jnp.asarray(a.x, jnp.float32)`, a dataset `basis` by its coordinate arrays, a
       `model` by its functions). Other attributes it sets are not passed to the body; `finish`
       can read them;
    3. calls `jax.jit(f, static_argnames=static_argnames)` with every argument as a keyword:
       static arguments must be hashable (each distinct value compiles its own program), the
       others pytrees of arrays (or None). The jitted `f` is built once, so equal static values
       and argument shapes reuse one compiled program across calls;
    4. returns `finish(out, a)` (Python-side post-processing of the compiled result, e.g.
       Python ints or a renamed dict), or `out` without `finish`.

    Values a body derives from shapes (e.g. `per_model_keys(key)`) are recomputed in the body
    rather than passed: shapes are static under `jit`.
    """
    static_argnames = tuple(static_argnames)

    def wrap(f: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(f)
        names = tuple(sig.parameters)
        unknown = set(static_argnames) - set(names)
        if unknown:
            raise TypeError(f"{f.__name__}: static_argnames {sorted(unknown)} are not parameters")
        jitted = jax.jit(f, static_argnames=static_argnames)

        @functools.wraps(f)
        def checked(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            a = types.SimpleNamespace(**bound.arguments)
            check(a)
            out = jitted(**{name: getattr(a, name) for name in names})
            return out if finish is None else finish(out, a)

        checked.jitted = jitted  # the compiled body, e.g. for its cache
        return checked

    return wrap


# ----------------------------------------------------------------------------------------------
# Mapping over models and batches.
# ----------------------------------------------------------------------------------------------


def map_models(fn: Callable[[Any], Any], variables: Any, *, model_chunk: int | None = None) -> Any:
    """Applies `fn(one_model_variables)` to every model of a stack; returns stacked outputs.

    Args:
        fn: pure function of one model's variables (traceable).
        variables: pytree stacked along a leading model axis [M, ...].
        model_chunk: None vmaps over all M models at once; an integer g runs `lax.map` over
            groups of g vmapped models, which bounds memory (UAPs/PGD on big models or many seeds).

    Returns:
        `fn`'s output pytree with a leading axis [M, ...].
    """
    if model_chunk is None:
        return jax.vmap(fn)(variables)
    return jax.lax.map(fn, variables, batch_size=model_chunk)


def map_models_keys(
    fn: Callable[[Any, Any], Any],
    variables: Any,
    key: Any,
    per_model: bool,
    *,
    model_chunk: int | None = None,
) -> Any:
    """`map_models` of `fn(one_model_variables, its_key)`.

    With `per_model` (keys [M], see `check_model_keys`) model i gets key[i], mapped together with
    its variables; otherwise the one shared key is closed over.
    """
    if per_model:
        return map_models(lambda vk: fn(*vk), (variables, key), model_chunk=model_chunk)
    return map_models(lambda v: fn(v, key), variables, model_chunk=model_chunk)


def map_batches(fn: Callable[[Any], Any], x: Any, batch_size: int | None):
    """Applies `fn` (batch -> batch of outputs) to x [n, ...] in chunks of `batch_size` rows.

    `x` may be a pytree of arrays sharing the leading axis n. The last chunk is padded (with
    copies of the first row) and the padding dropped, so only one shape is compiled. Memory
    scales with `batch_size` instead of n.
    """
    n = jax.tree.leaves(x)[0].shape[0]
    if batch_size is None or batch_size >= n:
        return fn(x)
    n_batches = -(-n // batch_size)
    pad = n_batches * batch_size - n

    def chunk(a):
        if pad:
            a = jnp.concatenate([a, jnp.broadcast_to(a[:1], (pad, *a.shape[1:]))], axis=0)
        return a.reshape(n_batches, batch_size, *a.shape[1:])

    out = jax.lax.map(fn, jax.tree.map(chunk, x))
    return jax.tree.map(lambda o: o.reshape(n_batches * batch_size, *o.shape[2:])[:n], out)


def model_logits(logits_fn: LogitsFn, v: Any, x: jax.Array, batch_size: int | None) -> jax.Array:
    return map_batches(lambda xb: logits_fn(v, xb), x, batch_size)


def _check_stacked_logits(a: types.SimpleNamespace) -> None:
    check_logits_fn(a.logits_fn)
    num_models(a.variables)
    check_batch_size(a.batch_size)
    check_model_chunk(a.model_chunk)
    check_finite_inputs("x", a.x)
    a.x = jnp.asarray(a.x)


@checked_jit(_check_stacked_logits, static_argnames=("logits_fn", "batch_size", "model_chunk"))
def stacked_logits(
    logits_fn: LogitsFn,
    variables: Any,
    x: jax.Array,
    *,
    batch_size: int | None = None,
    model_chunk: int | None = None,
) -> jax.Array:
    """Logits of every model of a stack on the same inputs.

    Args:
        logits_fn: `logits_fn(variables, x) -> [n, 2]` for one model; must be hashable (functions
            and bound methods of Flax modules are) because it is a static argument of `jit`.
        variables: one model's variables stacked along a leading axis [M, ...].
        x: inputs [n, ...] in the model basis.
        batch_size: evaluate at most this many inputs at once (None: all n).
        model_chunk: vmap over groups of this many models inside `lax.map` (None: all M at once).

    Returns:
        float32 logits [M, n, 2].
    """
    return map_models(
        lambda v: model_logits(logits_fn, v, x, batch_size), variables, model_chunk=model_chunk
    )


# ----------------------------------------------------------------------------------------------
# Array-level metrics (any leading batch axes).
# ----------------------------------------------------------------------------------------------


def score_from_logits(logits: jax.Array) -> jax.Array:
    """Score `logit1 - logit0`: [..., n, 2] -> [..., n]."""
    return logits[..., 1] - logits[..., 0]


def accuracy_from_logits(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Standard accuracy E[1{argmax logits = y}] (Shah et al. 2020, Sec. 3).

    Args:
        logits: [..., n, 2].
        y: int labels in {0, 1}, [n] or [..., n].

    Returns:
        float32 accuracy [...].
    """
    pred = jnp.argmax(logits, axis=-1)
    return jnp.mean((pred == y).astype(jnp.float32), axis=-1)


def _tie_counts(s: jax.Array, *ws: jax.Array):
    """Sorts scores once and counts weights below / up to each point's tie group.

    Args:
        s: scores [n]. *ws: integer weights [n] each (e.g. 0/1 class indicators).

    Returns:
        (ws_sorted, below, upto, start): in ascending score order, for each weight array the
        weight of each point, the total weight strictly below its score and the total weight at or
        below its score (tuples, one entry per weight array), and the sorted position where each
        point's tie group starts. One sort plus linear scans: on CPU a sort of 5e4 floats costs
        ~25 ms, so this is ~3x faster than sorting and then running sorted searches.
    """
    n = s.shape[0]
    s_sorted, *ws_sorted = jax.lax.sort((s, *ws), num_keys=1)
    idx = jnp.arange(n)
    new_group = jnp.concatenate([jnp.ones((1,), bool), s_sorted[1:] != s_sorted[:-1]])
    last_of_group = jnp.concatenate([new_group[1:], jnp.ones((1,), bool)])
    start = jax.lax.cummax(jnp.where(new_group, idx, 0))
    end = jax.lax.cummin(jnp.where(last_of_group, idx, n - 1), reverse=True)
    below, upto = [], []
    for w in ws_sorted:
        cum = jnp.cumsum(w)
        below.append((cum - w)[start])
        upto.append(cum[end])
    return tuple(ws_sorted), tuple(below), tuple(upto), start


def _roc_auc_1d(s: jax.Array, y: jax.Array) -> jax.Array:
    neg = (y != 1).astype(jnp.int32)
    n_neg = jnp.sum(neg)
    n_pos = s.shape[0] - n_neg
    (neg_sorted,), (below,), (upto,), _ = _tie_counts(s, neg)
    # Per positive: fraction of negatives scored lower, ties counted 1/2 (Mann-Whitney).
    frac = (below + 0.5 * (upto - below)) / jnp.maximum(n_neg, 1)
    auc = jnp.sum(jnp.where(neg_sorted == 0, frac, 0.0)) / jnp.maximum(n_pos, 1)
    bad = (n_pos == 0) | (n_neg == 0) | jnp.any(jnp.isnan(s))
    return jnp.where(bad, jnp.nan, auc).astype(jnp.float32)


def _pr_auc_1d(s: jax.Array, y: jax.Array) -> jax.Array:
    pos = (y == 1).astype(jnp.int32)
    n = s.shape[0]
    n_pos = jnp.sum(pos)
    (pos_sorted,), (pos_below,), _, start = _tie_counts(s, pos)
    # Per positive: precision at threshold s_i = #pos >= s_i / #all >= s_i (tie group included).
    precision = (n_pos - pos_below) / (n - start)
    ap = jnp.sum(jnp.where(pos_sorted == 1, precision, 0.0)) / jnp.maximum(n_pos, 1)
    bad = (n_pos == 0) | jnp.any(jnp.isnan(s))
    return jnp.where(bad, jnp.nan, ap).astype(jnp.float32)


def _leading_vmap(fn_1d, scores: jax.Array, y: jax.Array) -> jax.Array:
    scores = jnp.asarray(scores)
    y = jnp.asarray(y)
    lead = scores.shape[:-1]
    y = jnp.broadcast_to(y, scores.shape)
    out = jax.vmap(fn_1d)(scores.reshape(-1, scores.shape[-1]), y.reshape(-1, scores.shape[-1]))
    return out.reshape(lead)


def roc_auc_from_scores(scores: jax.Array, y: jax.Array) -> jax.Array:
    """ROC-AUC, exact with ties (= `sklearn.metrics.roc_auc_score`).

    The reference implementation's AUC (REFERENCE 4.2, disagreement row 2).

    Args:
        scores: real scores [..., n] (higher = more class 1).
        y: labels in {0, 1}, [n] or [..., n].

    Returns:
        float32 [...]; NaN where a class is absent or a score is NaN.
    """
    return _leading_vmap(_roc_auc_1d, scores, y)


def pr_auc_from_scores(scores: jax.Array, y: jax.Array) -> jax.Array:
    """PR-AUC as average precision, exact with ties (= `average_precision_score`).

    The AUC of Shah et al. 2020, Definition 2 (area under the precision-recall curve).

    Args:
        scores: real scores [..., n].
        y: labels in {0, 1}, [n] or [..., n].

    Returns:
        float32 [...]; NaN where there is no positive or a score is NaN.
    """
    return _leading_vmap(_pr_auc_1d, scores, y)


def _ks_1d(a, b, mask_a, mask_b):
    n_a = jnp.sum(mask_a)
    n_b = jnp.sum(mask_b)
    s = jnp.concatenate([a, b])
    w = jnp.concatenate([mask_a, jnp.zeros_like(mask_b)]).astype(jnp.int32)
    v = jnp.concatenate([jnp.zeros_like(mask_a), mask_b]).astype(jnp.int32)
    valid = jnp.concatenate([mask_a, mask_b]).astype(jnp.int32)
    # Both empirical CDFs at every pooled point t (right-continuous: counts of samples <= t);
    # masked points sort along but weigh nothing.
    (_, _, valid_sorted), _, (cdf_a, cdf_b, _), _ = _tie_counts(s, w, v, valid)
    diff = jnp.abs(cdf_a / jnp.maximum(n_a, 1) - cdf_b / jnp.maximum(n_b, 1))
    d = jnp.max(jnp.where(valid_sorted == 1, diff, 0.0))
    return jnp.where((n_a == 0) | (n_b == 0), jnp.nan, d).astype(jnp.float32)


def ks_statistic(
    a: jax.Array,
    b: jax.Array,
    mask_a: jax.Array | None = None,
    mask_b: jax.Array | None = None,
) -> jax.Array:
    """Two-sample Kolmogorov-Smirnov distance sup_t |F_a(t) - F_b(t)| with optional masks.

    Used to compare logit distributions (Table 1's "logits" column) on device with fixed shapes.

    Args:
        a: samples [..., n_a]; b: samples [..., n_b].
        mask_a, mask_b: bool [..., n_a] / [..., n_b] selecting the samples (None: all).

    Returns:
        float32 [...] in [0, 1]; NaN if a sample is empty.
    """
    a = jnp.asarray(a)
    b = jnp.asarray(b)
    mask_a = jnp.ones(a.shape, bool) if mask_a is None else jnp.broadcast_to(mask_a, a.shape)
    mask_b = jnp.ones(b.shape, bool) if mask_b is None else jnp.broadcast_to(mask_b, b.shape)
    lead = jnp.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    a, mask_a = (jnp.broadcast_to(t, (*lead, a.shape[-1])) for t in (a, mask_a))
    b, mask_b = (jnp.broadcast_to(t, (*lead, b.shape[-1])) for t in (b, mask_b))
    flat = lambda t: t.reshape(-1, t.shape[-1])
    out = jax.vmap(_ks_1d)(flat(a), flat(b), flat(mask_a), flat(mask_b))
    return out.reshape(lead)


# ----------------------------------------------------------------------------------------------
# Stacked metrics.
# ----------------------------------------------------------------------------------------------


def metrics_from_logits(logits: jax.Array, y: jax.Array, auc_kind: str = "roc") -> dict:
    """Accuracy and AUC(s) from logits [..., n, 2] (keys `accuracy`, `roc_auc`, `pr_auc`)."""
    check_choice("auc_kind", auc_kind, AUC_KINDS)
    out = {"accuracy": accuracy_from_logits(logits, y)}
    s = score_from_logits(logits)
    if auc_kind in ("roc", "both"):
        out["roc_auc"] = roc_auc_from_scores(s, y)
    if auc_kind in ("pr", "both"):
        out["pr_auc"] = pr_auc_from_scores(s, y)
    return out


def _check_evaluate(a: types.SimpleNamespace) -> None:
    check_logits_fn(a.logits_fn)
    num_models(a.variables)
    check_xy(a.x, a.y)
    check_choice("auc_kind", a.auc_kind, AUC_KINDS)
    check_batch_size(a.batch_size)
    check_model_chunk(a.model_chunk)
    a.x, a.y = jnp.asarray(a.x), jnp.asarray(a.y)


@checked_jit(
    _check_evaluate, static_argnames=("logits_fn", "auc_kind", "batch_size", "model_chunk")
)
def evaluate(
    logits_fn: LogitsFn,
    variables: Any,
    x: jax.Array,
    y: jax.Array,
    *,
    auc_kind: str = "roc",
    batch_size: int | None = None,
    model_chunk: int | None = None,
) -> dict[str, jax.Array]:
    """Standard accuracy and AUC of every model of a stack.

    Args:
        logits_fn: `logits_fn(variables, x) -> [n, 2]` for one model (hashable).
        variables: stacked variables [M, ...].
        x: inputs [n, ...] (model basis). y: int labels [n] in {0, 1}.
        auc_kind: "roc" (reference, default), "pr" (paper Definition 2) or "both".
        batch_size, model_chunk: memory controls, see `stacked_logits`.

    Returns:
        dict with float32 [M] arrays: `accuracy` and `roc_auc` and/or `pr_auc`.
    """

    def one(v):
        return metrics_from_logits(model_logits(logits_fn, v, x, batch_size), y, auc_kind)

    return map_models(one, variables, model_chunk=model_chunk)


def accuracy(logits_fn: LogitsFn, variables: Any, x: jax.Array, y: jax.Array, **kw) -> jax.Array:
    """Standard accuracy [M] of every model of a stack (see `evaluate` for arguments)."""
    return evaluate(logits_fn, variables, x, y, **kw)["accuracy"]


def roc_auc(logits_fn: LogitsFn, variables: Any, x: jax.Array, y: jax.Array, **kw) -> jax.Array:
    """ROC-AUC [M] of the score logit1 - logit0 (the reference's AUC)."""
    return evaluate(logits_fn, variables, x, y, auc_kind="roc", **kw)["roc_auc"]


def pr_auc(logits_fn: LogitsFn, variables: Any, x: jax.Array, y: jax.Array, **kw) -> jax.Array:
    """PR-AUC (average precision) [M] of the score (the paper's Definition 2)."""
    return evaluate(logits_fn, variables, x, y, auc_kind="pr", **kw)["pr_auc"]


def auc(
    logits_fn: LogitsFn,
    variables: Any,
    x: jax.Array,
    y: jax.Array,
    *,
    kind: str = "roc",
    **kw,
) -> jax.Array:
    """ROC-AUC (`kind="roc"`, reference default) or PR-AUC (`kind="pr"`, paper) [M]."""
    check_choice("kind", kind, ("roc", "pr"))
    return evaluate(logits_fn, variables, x, y, auc_kind=kind, **kw)[f"{kind}_auc"]
