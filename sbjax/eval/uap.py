"""Universal adversarial perturbations (UAPs; Shah et al. 2020, Sec. 4, Fig. 4; REFERENCE 5.5-5.7).

One perturbation u per model, applied to every input. The reference's UAPs are **label-signed**
(disagreement row 16): the applied perturbation is `(2y - 1) u`, i.e. +u for class 1 and -u for
class 0, so u only has to push each class towards the other. The paper calls its UAPs
"data-agnostic"; `label_signed=False` gives the plain label-agnostic variant (the same u added to
every input; for two classes it can at best push everything into one class, accuracy ~ 0.5).

* SVD-UAP (`svd_uap`, reference nb06, arXiv 2005.08632): run instance-specific L2 PGD on the fit
  set, take the top right singular vector of the unnormalised perturbation matrix P [n, D]. Its
  sign is arbitrary; we orient it so that `sum_i (2y_i - 1) <P_i, u> >= 0` (the label-signed
  direction PGD found), and evaluation with `both_signs=True` (the reference) reports the lower
  accuracy of +u and -u. The evaluation eps is an ABSOLUTE L2 norm (reference: 1.0 on LMS-5,
  0.5 on MS-(5,7)) while the PGD eps is a multiple of the data range.
* AS-UAP (`as_uap`, reference nb06, "Algorithm 2 of arXiv 1811.11304, unclipped"): delta = 0;
  `n_epochs` passes over the fit set in order in batches; per batch `n_iter` steps of
  `delta += lr * g / ||g||` on the batch-mean cross-entropy of `clip(x + (2y - 1) delta)`, then
  projection onto the L2 ball of radius eps (no clamp on delta itself).

Fit and evaluation sets are separate arguments. **The reference (and so the paper's Fig. 4
numbers) fits and evaluates on the same test set**; pass the same arrays to reproduce that, or fit
on training data and evaluate on the test set for a held-out estimate.
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sbjax.eval.attacks import budget_fraction, check_attack_params, clip_to_box, pgd_perturb
from sbjax.eval.checks import (
    check_batch_size,
    check_logits_fn,
    check_model_chunk,
    check_model_keys,
    check_xy,
    num_models,
    per_model_keys,
)
from sbjax.eval.metrics import (
    LogitsFn,
    accuracy,
    accuracy_from_logits,
    checked_jit,
    map_batches,
    map_models,
    map_models_keys,
    model_logits,
)
from sbjax.validate import check_choice, check_int, check_range, fail

UAP_KINDS = ("svd", "as", "plain")

__all__ = [
    "UAP_KINDS",
    "apply_uap",
    "as_uap",
    "svd_uap",
    "uap_accuracy",
    "uap_report",
    "uap_transfer_matrix",
    "uap_transfer_matrix_multi",
]


def _signs(y: jax.Array, label_signed: bool) -> jax.Array:
    return (2 * y - 1).astype(jnp.float32) if label_signed else jnp.ones(y.shape, jnp.float32)


def _bcast(s: jax.Array, ndim: int) -> jax.Array:
    return s.reshape((-1,) + (1,) * (ndim - 1))


# ----------------------------------------------------------------------------------------------
# SVD-UAP.
# ----------------------------------------------------------------------------------------------


def _check_svd_uap(a: types.SimpleNamespace) -> None:
    check_logits_fn(a.logits_fn)
    check_model_keys(a.key, num_models(a.variables))
    check_xy(a.x_fit, a.y_fit)
    check_attack_params("l2", a.eps, a.step_size, a.n_iter, a.bounds, a.rand_init, 1, "constant")
    check_batch_size(a.batch_size)
    check_model_chunk(a.model_chunk)
    a.x_fit, a.y_fit = jnp.asarray(a.x_fit, jnp.float32), jnp.asarray(a.y_fit)
    a.eps, a.step_size, a.rand_init = (jnp.float32(t) for t in (a.eps, a.step_size, a.rand_init))
    a.bounds = _bounds(a.bounds)
    a.n_iter, a.label_signed = int(a.n_iter), bool(a.label_signed)


@checked_jit(
    _check_svd_uap,
    static_argnames=("logits_fn", "n_iter", "label_signed", "batch_size", "model_chunk"),
)
def svd_uap(
    logits_fn: LogitsFn,
    variables: Any,
    x_fit: jax.Array,
    y_fit: jax.Array,
    key: jax.Array,
    *,
    eps: float,
    step_size: float,
    n_iter: int = 30,
    bounds: tuple[float, float] | None = None,
    rand_init: float = 1e-3,
    label_signed: bool = True,
    batch_size: int | None = None,
    model_chunk: int | None = None,
) -> jax.Array:
    """SVD-UAP of every model: top right singular vector of its L2-PGD perturbations.

    Reference settings (nb06): LMS-5 `eps = 1.0 * drange`, `step_size = 0.05 * drange`,
    `n_iter = 30`; MS-(5,7) `eps = 0.5 * drange`, `step_size = 0.05 * drange`, `n_iter = 50`;
    `bounds = data_bounds(x_train, x_test)`, drange = B1 - B0; fit on the test set.

    Args:
        logits_fn: `logits_fn(variables, x) -> [n, 2]` for one model (hashable).
        variables: stacked variables [M, ...].
        x_fit: inputs [n, ...] the PGD runs on (model basis). y_fit: labels [n].
        key: PRNG key of PGD's random starts, or keys [M] (one per model, see `pgd_attack`).
        eps, step_size, n_iter, bounds, rand_init: the L2 PGD (see `pgd_attack`).
        label_signed: orient u as the label-signed direction (+u pushes class 1 to class 0);
            False orients it along the plain mean perturbation.
        batch_size, model_chunk: memory controls.

    Returns:
        float32 [M, ...] unit-L2-norm directions u (model basis); scale with `uap_accuracy(eps=)`.
    """
    n = x_fit.shape[0]

    def one(v, key):
        def attack(batch):
            xb, yb, ib = batch
            return pgd_perturb(
                lambda t: logits_fn(v, t),
                xb,
                yb,
                key,
                norm="l2",
                eps=eps,
                step_size=step_size,
                n_iter=n_iter,
                bounds=bounds,
                rand_init=rand_init,
                example_index=ib,
            )[0]

        p = map_batches(attack, (x_fit, y_fit, jnp.arange(n)), batch_size).reshape(n, -1)
        # Top right singular vector of the unnormalised perturbations (the reference computes a
        # row-normalised copy and ignores it), as the top eigenvector of the smaller Gram matrix:
        # p^T p [D, D] when D <= n, else p p^T [n, n] mapped back by p^T. Same vector as the SVD's
        # up to float rounding and sign (fixed below), and ~100x cheaper than a batched SVD of
        # [n, D] on CPU (benchmarks/RESULTS.md, "UAP evaluation").
        u = _top_right_singular_vector(p)
        proj = jnp.sum(_signs(y_fit, label_signed) * (p @ u))
        u = jnp.where(proj < 0, -u, u)
        return u.reshape(x_fit.shape[1:])

    return map_models_keys(one, variables, key, per_model_keys(key), model_chunk=model_chunk)


def _top_right_singular_vector(p: jax.Array) -> jax.Array:
    """The unit top right singular vector of p [n, D] (sign arbitrary), via `eigh` of the smaller
    Gram matrix."""
    hi = jax.lax.Precision.HIGHEST
    n, dim = p.shape
    if dim <= n:
        _, vecs = jnp.linalg.eigh(jnp.matmul(p.T, p, precision=hi))
        return vecs[:, -1]
    _, vecs = jnp.linalg.eigh(jnp.matmul(p, p.T, precision=hi))
    u = jnp.matmul(p.T, vecs[:, -1], precision=hi)
    return u / jnp.maximum(jnp.linalg.norm(u), 1e-30)


def _bounds(bounds):
    return (
        None
        if bounds is None
        else (jnp.asarray(bounds[0], jnp.float32), jnp.asarray(bounds[1], jnp.float32))
    )


# ----------------------------------------------------------------------------------------------
# AS-UAP (and the plain label-agnostic UAP).
# ----------------------------------------------------------------------------------------------


def _check_as_uap(a: types.SimpleNamespace) -> None:
    check_logits_fn(a.logits_fn)
    num_models(a.variables)
    check_xy(a.x_fit, a.y_fit)
    check_attack_params("l2", a.eps, a.step_size, a.n_iter, a.bounds, 0.0, 1, "constant")
    check_int("n_epochs", a.n_epochs, min_value=1)
    check_int("batch_size", a.batch_size, min_value=1)
    check_model_chunk(a.model_chunk)
    a.batch_size = min(int(a.batch_size), int(np.shape(a.x_fit)[0]))
    a.x_fit, a.y_fit = jnp.asarray(a.x_fit, jnp.float32), jnp.asarray(a.y_fit)
    a.eps, a.step_size = jnp.float32(a.eps), jnp.float32(a.step_size)
    a.bounds = _bounds(a.bounds)
    a.n_iter, a.n_epochs, a.label_signed = int(a.n_iter), int(a.n_epochs), bool(a.label_signed)


@checked_jit(
    _check_as_uap,
    static_argnames=(
        "logits_fn",
        "n_iter",
        "n_epochs",
        "batch_size",
        "label_signed",
        "model_chunk",
    ),
)
def as_uap(
    logits_fn: LogitsFn,
    variables: Any,
    x_fit: jax.Array,
    y_fit: jax.Array,
    *,
    eps: float,
    n_iter: int,
    step_size: float = 0.05,
    n_epochs: int = 2,
    batch_size: int = 256,
    bounds: tuple[float, float] | None = None,
    label_signed: bool = True,
    model_chunk: int | None = None,
) -> jax.Array:
    """AS-UAP of every model (REFERENCE 5.6); `label_signed=False` gives a plain UAP.

    Reference settings (nb06): LMS-5 `eps = 1.0, n_iter = 30`; MS-(5,7) `eps = 0.5, n_iter = 50`;
    `step_size = 0.05`, 2 epochs, batch 256 in order, bounds = data bounds; fit on the test set.

    Args:
        logits_fn: `logits_fn(variables, x) -> [n, 2]` for one model (hashable).
        variables: stacked variables [M, ...].
        x_fit: inputs [n, ...] (model basis), visited in order. y_fit: labels [n].
        eps: L2 radius (absolute). n_iter: steps per batch. step_size: absolute step.
        n_epochs: passes over the fit set. batch_size: rows per batch (the last one may be
            partial; its loss is the mean over its real rows).
        bounds: (B0, B1) clamp of the perturbed inputs, or None.
        label_signed: apply (2y - 1) delta (reference) or delta to every input (plain UAP).
        model_chunk: memory control.

    Returns:
        float32 [M, ...] perturbations with L2 norm <= eps (model basis).
    """
    x, y = x_fit, y_fit
    n = x.shape[0]
    n_batches = -(-n // batch_size)
    pad = n_batches * batch_size - n
    mask = jnp.concatenate([jnp.ones(n), jnp.zeros(pad)]).reshape(n_batches, batch_size)
    xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    yp = jnp.concatenate([y, jnp.zeros(pad, y.dtype)]) if pad else y
    xb = xp.reshape(n_batches, batch_size, *x.shape[1:])
    yb = yp.reshape(n_batches, batch_size)

    def one(v):
        def batch_loss(delta, xi, yi, mi):
            s = _bcast(_signs(yi, label_signed), xi.ndim)
            xa = xi + clip_to_box(xi, s * delta[None], bounds)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits_fn(v, xa), yi)
            # Mean over the real examples of the batch (the last batch is padded).
            return jnp.sum(ce * mi) / jnp.sum(mi)

        grad = jax.grad(batch_loss)

        def per_batch(delta, batch):
            xi, yi, mi = batch

            def step(_, d):
                g = grad(d, xi, yi, mi)
                gn = jnp.sqrt(jnp.sum(g * g))
                d = d + step_size * g / jnp.where(gn > 0, gn, 1.0)
                return optax.projections.projection_l2_ball(d, eps)

            return jax.lax.fori_loop(0, n_iter, step, delta), None

        def epoch(delta, _):
            return jax.lax.scan(per_batch, delta, (xb, yb, mask))[0], None

        delta0 = jnp.zeros(x.shape[1:], jnp.float32)
        return jax.lax.scan(epoch, delta0, None, length=n_epochs)[0]

    return map_models(one, variables, model_chunk=model_chunk)


# ----------------------------------------------------------------------------------------------
# Evaluation and transfer.
# ----------------------------------------------------------------------------------------------


def _scale(u: jax.Array, eps) -> jax.Array:
    if eps is None:
        return u
    return eps * u / jnp.maximum(jnp.sqrt(jnp.sum(u * u)), 1e-30)


def apply_uap(
    x: jax.Array,
    y: jax.Array,
    u: jax.Array,
    *,
    eps: float | None = None,
    label_signed: bool = True,
    direction: float = 1.0,
    bounds: tuple[float, float] | None = None,
) -> jax.Array:
    """Perturbed inputs `clip(x + direction (2y - 1) u, B0, B1)` for ONE UAP (traceable).

    Args:
        x: inputs [n, ...]. y: labels [n]. u: one UAP [...] (features of x).
        eps: None (use u as given) or the absolute L2 norm to rescale u to.
        label_signed: (2y - 1) u (reference) or u for every input.
        direction: +1 or -1. bounds: (B0, B1) or None.

    Returns:
        float32 [n, ...]; each row moves by at most ||u|| (or eps) when x lies in the box.
    """
    x = jnp.asarray(x, jnp.float32)
    u = _scale(jnp.asarray(u, jnp.float32), eps)
    s = _bcast(_signs(jnp.asarray(y), label_signed), x.ndim)
    return x + clip_to_box(x, direction * s * u[None], _bounds(bounds))


def _acc_under(logits_fn, v, x, y, u, eps, label_signed, both_signs, bounds, batch_size):
    """Accuracy of one model under one UAP; returns (accuracy, sign used)."""
    u = _scale(u, eps)

    def acc(direction):
        xa = apply_uap(x, y, u, label_signed=label_signed, direction=direction, bounds=bounds)
        return accuracy_from_logits(model_logits(logits_fn, v, xa, batch_size), y)

    plus = acc(1.0)
    if not both_signs:
        return plus, jnp.float32(1.0)
    minus = acc(-1.0)
    # The lower accuracy of +u and -u (reference SVD-UAP evaluation); ties keep +u.
    return jnp.minimum(plus, minus), jnp.where(minus < plus, -1.0, 1.0).astype(jnp.float32)


def _check_uaps(uaps, x, name="uaps"):
    feat = tuple(np.shape(x)[1:])
    shape = tuple(np.shape(uaps))
    if shape[-len(feat) :] != feat or len(shape) not in (len(feat), len(feat) + 1):
        fail(f"{name}.shape", shape, f"[{', '.join(map(str, feat))}] or [K, ...] matching x")
    return len(shape) == len(feat)


def _normalize_uap_eval(a: types.SimpleNamespace) -> None:
    """The arrays `uap_accuracy` and `uap_transfer_matrix` take (after their checks)."""
    a.x, a.y = jnp.asarray(a.x, jnp.float32), jnp.asarray(a.y)
    a.uaps = jnp.asarray(a.uaps, jnp.float32)
    a.eps = None if a.eps is None else jnp.float32(a.eps)
    a.bounds = _bounds(a.bounds)
    a.label_signed, a.both_signs = bool(a.label_signed), bool(a.both_signs)


def _check_uap_accuracy(a: types.SimpleNamespace) -> None:
    check_logits_fn(a.logits_fn)
    m = num_models(a.variables)
    check_xy(a.x, a.y)
    shared = _check_uaps(a.uaps, a.x)
    if not shared and np.shape(a.uaps)[0] != m:
        fail("uaps.shape", np.shape(a.uaps), f"[{m}, ...] (one UAP per model) or a single UAP")
    if a.eps is not None:
        check_range("eps", a.eps, 0.0, None, lo_open=True)
    check_batch_size(a.batch_size)
    check_model_chunk(a.model_chunk)
    _normalize_uap_eval(a)
    a.return_sign = bool(a.return_sign)


@checked_jit(
    _check_uap_accuracy,
    static_argnames=("logits_fn", "label_signed", "both_signs", "batch_size", "model_chunk"),
    finish=lambda out, a: out if a.return_sign else out[0],  # (accuracy, sign)
)
def uap_accuracy(
    logits_fn: LogitsFn,
    variables: Any,
    x: jax.Array,
    y: jax.Array,
    uaps: jax.Array,
    *,
    eps: float | None = None,
    label_signed: bool = True,
    both_signs: bool = False,
    bounds: tuple[float, float] | None = None,
    batch_size: int | None = None,
    model_chunk: int | None = None,
    return_sign: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Accuracy of each model under its UAP: `clip(x + dir (2y - 1) u, B0, B1)`.

    Args:
        logits_fn, variables: the stacked models [M, ...].
        x, y: evaluation set [n, ...], [n].
        uaps: [M, ...] (model i gets uaps[i]) or [...] (one UAP shared by all models).
        eps: None applies u as given (AS-UAP); a number rescales u to that absolute L2 norm
            (SVD-UAP: reference 1.0 on LMS-5, 0.5 on MS-(5,7)).
        label_signed: apply (2y - 1) u (reference) or u to every input (plain).
        both_signs: report the lower accuracy of dir = +1 and -1 (reference SVD-UAP evaluation).
        bounds: (B0, B1) clamp or None.
        batch_size, model_chunk: memory controls.
        return_sign: also return the sign [M] (+1 or -1) that gave the reported accuracy.

    Returns:
        float32 accuracy [M] (and the signs [M]).
    """
    shared = uaps.ndim == x.ndim - 1  # one UAP [...] for every model (checked)
    if shared:
        fn = lambda v: _acc_under(
            logits_fn, v, x, y, uaps, eps, label_signed, both_signs, bounds, batch_size
        )
        return map_models(fn, variables, model_chunk=model_chunk)
    fn = lambda vu: _acc_under(
        logits_fn, vu[0], x, y, vu[1], eps, label_signed, both_signs, bounds, batch_size
    )
    return map_models(fn, (variables, uaps), model_chunk=model_chunk)


def _check_transfer(a: types.SimpleNamespace) -> None:
    check_logits_fn(a.logits_fn)
    num_models(a.variables)
    check_xy(a.x, a.y)
    if _check_uaps(a.uaps, a.x):
        a.uaps = jnp.asarray(a.uaps)[None]
    if a.eps is not None:
        check_range("eps", a.eps, 0.0, None, lo_open=True)
    check_batch_size(a.batch_size)
    check_model_chunk(a.model_chunk)
    _normalize_uap_eval(a)


@checked_jit(
    _check_transfer,
    static_argnames=("logits_fn", "label_signed", "both_signs", "batch_size", "model_chunk"),
)
def uap_transfer_matrix(
    logits_fn: LogitsFn,
    variables: Any,
    x: jax.Array,
    y: jax.Array,
    uaps: jax.Array,
    *,
    eps: float | None = None,
    label_signed: bool = True,
    both_signs: bool = False,
    bounds: tuple[float, float] | None = None,
    batch_size: int | None = None,
    model_chunk: int | None = None,
) -> jax.Array:
    """Accuracy of model j under the UAP of model i: a [K, M] transfer matrix.

    The diagonal (when `uaps` come from the same stack) is `uap_accuracy`. UAPs are applied one
    after another (`lax.map`), models in parallel. For several architectures use
    `uap_transfer_matrix_multi`.

    Args:
        uaps: [K, ...] UAPs (e.g. from `svd_uap` / `as_uap` of any models on the same inputs).
        Other arguments: as in `uap_accuracy`.

    Returns:
        float32 [K, M].
    """

    def per_uap(u):
        fn = lambda v: _acc_under(
            logits_fn, v, x, y, u, eps, label_signed, both_signs, bounds, batch_size
        )[0]
        return map_models(fn, variables, model_chunk=model_chunk)

    return jax.lax.map(per_uap, uaps)


def uap_transfer_matrix_multi(
    targets: Sequence[tuple[LogitsFn, Any]],
    x: jax.Array,
    y: jax.Array,
    uaps: jax.Array,
    **kw: Any,
) -> jax.Array:
    """Transfer matrix across architectures: columns are the models of each target, in order.

    Args:
        targets: sequence of `(logits_fn, stacked_variables)`, e.g. FCN, CNN and GRU stacks.
        x, y, uaps, **kw: as in `uap_transfer_matrix`.

    Returns:
        float32 [K, sum of the targets' M].
    """
    if not targets:
        fail("targets", targets, "a non-empty sequence of (logits_fn, variables)")
    cols = [uap_transfer_matrix(fn, v, x, y, uaps, **kw) for fn, v in targets]
    return jnp.concatenate(cols, axis=1)


# ----------------------------------------------------------------------------------------------
# One-call report.
# ----------------------------------------------------------------------------------------------


def _signed_svd_uap(
    logits_fn: LogitsFn,
    variables: Any,
    fit: tuple[jax.Array, jax.Array],
    evaluation: tuple[jax.Array, jax.Array],
    key: jax.Array,
    *,
    eps: float,
    pgd_eps: float | None,
    step_size: float,
    n_iter: int,
    bounds: tuple[float, float] | None,
    batch_size: int | None,
    model_chunk: int | None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`uap_report`'s SVD-UAP at norm eps, times the sign of +-u with the lower accuracy.

    Returns:
        (u [M, ...], accuracy [M], sign [M]).
    """
    x_fit, y_fit = fit
    x_ev, y_ev = evaluation
    if pgd_eps is None:
        fail("pgd_eps", pgd_eps, "the PGD radius for an SVD-UAP (reference: c * drange)")
    u = svd_uap(
        logits_fn,
        variables,
        x_fit,
        y_fit,
        key,
        eps=pgd_eps,
        step_size=step_size,
        n_iter=n_iter,
        bounds=bounds,
        batch_size=batch_size,
        model_chunk=model_chunk,
    )
    u = jax.vmap(lambda t: _scale(t, jnp.float32(eps)))(u)
    acc, sign = uap_accuracy(
        logits_fn,
        variables,
        x_ev,
        y_ev,
        u,
        both_signs=True,
        bounds=bounds,
        model_chunk=model_chunk,
        return_sign=True,
    )
    u = u * _bcast(sign, u.ndim)
    return u, acc, sign


def uap_report(
    logits_fn: LogitsFn,
    variables: Any,
    fit: tuple[jax.Array, jax.Array],
    evaluation: tuple[jax.Array, jax.Array],
    basis: Any,
    key: jax.Array,
    *,
    kind: str = "svd",
    eps: float,
    pgd_eps: float | None = None,
    step_size: float,
    n_iter: int,
    bounds: tuple[float, float] | None = None,
    batch_size: int | None = None,
    model_chunk: int | None = None,
) -> dict[str, Any]:
    """Fits a UAP per model on `fit`, evaluates it on `evaluation`, and measures its share on S.

    Args:
        logits_fn, variables: the stacked models [M, ...].
        fit: (x, y) to fit on; evaluation: (x, y) to evaluate on (the reference: both = the test
            set).
        basis: a dataset / `Basis` for the fraction on S.
        key: PRNG key of SVD-UAP's PGD starts, or keys [M] (one per model).
        kind: "svd" (reference SVD-UAP: label-signed, lower accuracy of +-u), "as" (reference
            AS-UAP, label-signed) or "plain" (AS-UAP algorithm, label-agnostic).
        eps: absolute L2 norm of the UAP (SVD: evaluation scale; AS/plain: the ball radius).
        pgd_eps: SVD-UAP's PGD radius (reference: 1.0 * drange on LMS-5, 0.5 * drange on
            MS-(5,7)); required for kind="svd".
        step_size, n_iter: SVD: PGD step and iterations; AS/plain: step (reference 0.05) and
            steps per batch.
        bounds: (B0, B1) data box. batch_size: SVD: PGD batch (memory); AS/plain: the UAP's batch
            (default 256). model_chunk: memory control.

    Returns:
        dict: `uap` [M, ...] (applied scale), `accuracy` [M], `clean_accuracy` [M], `sign` [M],
        `fraction_on_s` [M] (|u_can[S]| / ||u_can||) and `energy_on_s` [M], plus the settings.
    """
    check_choice("kind", kind, UAP_KINDS)
    x_fit, y_fit = fit
    x_ev, y_ev = evaluation
    if kind == "svd":
        u, acc, sign = _signed_svd_uap(
            logits_fn,
            variables,
            fit,
            evaluation,
            key,
            eps=eps,
            pgd_eps=pgd_eps,
            step_size=step_size,
            n_iter=n_iter,
            bounds=bounds,
            batch_size=batch_size,
            model_chunk=model_chunk,
        )
    else:
        label_signed = kind == "as"
        u = as_uap(
            logits_fn,
            variables,
            x_fit,
            y_fit,
            eps=eps,
            n_iter=n_iter,
            step_size=step_size,
            batch_size=batch_size or 256,
            bounds=bounds,
            label_signed=label_signed,
            model_chunk=model_chunk,
        )
        acc, sign = uap_accuracy(
            logits_fn,
            variables,
            x_ev,
            y_ev,
            u,
            label_signed=label_signed,
            bounds=bounds,
            model_chunk=model_chunk,
            return_sign=True,
        )
    clean = accuracy(logits_fn, variables, x_ev, y_ev, model_chunk=model_chunk)
    return {
        "kind": kind,
        "label_signed": kind != "plain",
        "eps": float(eps),
        "uap": u,
        "accuracy": acc,
        "clean_accuracy": clean,
        "sign": sign,
        "fraction_on_s": budget_fraction(u, basis),
        "energy_on_s": budget_fraction(u, basis, kind="energy"),
    }
