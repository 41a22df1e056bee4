"""Low-dimensional simplicity bias (LD-SB; Morwani, Batra, Jain, Netrapalli, NeurIPS 2023).

LD-SB says a network is essentially a function of a low-rank projection `P x` of its input
(BEYOND.md Sec. 1.2). For one model with first-layer weights W1 [width, D] (Flax kernel [D, width]
transposed; `sbjax.models.features.first_layer_kernel`):

* P = V_r^T V_r, the projector onto the top-r right singular vectors V_r [r, D] of W1 (model
  basis), with r the smallest rank whose squared singular values reach `threshold` (default 0.9)
  of their total: sum_{i <= r} sigma_i^2 >= threshold * sum_i sigma_i^2 (the share of W1's
  Frobenius energy kept; `rank=` fixes r instead). P_perp = I - P.
* Pairs (x, x') of independent test inputs: x' = x[pi] for a random permutation pi of the test
  rows (so each point is paired once; x' = x for the ~1 fixed point of pi is counted as is).
  Mixed inputs `x_perp = P x + P_perp x'` (x's P-part kept, P_perp-part replaced) and
  `x_p = P x' + P_perp x` (P-part replaced).
* P_perp-pC = fraction of test points whose predicted class changes, pred(x_perp) != pred(x);
  P-pC the same for x_p. LD-SB holds when P_perp-pC is small and P-pC large (near the rate at
  which two random points are predicted differently).
* P_perp-LC / P-LC = the relative logit change mean_i ||f(x_mix,i) - f(x_i)||_2 /
  mean_i ||f(x_i)||_2 (f = the logit vector [2]); a ratio of means, so that points with
  f(x) = 0 (possible with dead ReLU units and a zero head bias) do not make it infinite.
* Overlap with S in the canonical basis (z = x @ W.T): with V_can = V_r @ W.T [r, D],
  `ldsb_overlap_s` = ||V_can[:, S]||_F^2 / |S| = mean over s in S of ||P e_s||^2 (how much of
  span(S) P contains; 1 when span(S) is inside span(P)), and `ldsb_p_in_s` =
  ||V_can[:, S]||_F^2 / r (the share of span(P) lying inside span(S); 1 when span(P) is inside
  span(S)).

Note: the pC / LC definitions follow BEYOND.md Sec. 1.2, which marks the exact metric definitions
of Morwani et al. as "from memory, not verified"; check the paper before quoting its numbers side by
side (the second-hand report there for MNIST-CIFAR: rank 1, P_perp-pC 5.41 %, P-pC 45.15 %).
The rank rule (explained squared singular values) is sbjax's choice, documented here.

Keys: one key shared by the models (same pairs for all) or keys [M] (model i pairs with
`key[i]`; its result equals a call on model i alone with `key[i]`).
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbjax.eval.checks import (
    check_batch_size,
    check_finite_inputs,
    check_model_chunk,
    check_model_keys,
    num_models,
    per_model_keys,
)
from sbjax.eval.coords import as_basis, basis_arrays, flat_features
from sbjax.eval.metrics import checked_jit, map_batches, map_models_keys
from sbjax.models.features import first_layer_kernel
from sbjax.models.registry import Model
from sbjax.validate import check_int, check_range, fail

_HI = jax.lax.Precision.HIGHEST

DEFAULT_LDSB_THRESHOLD = 0.9

__all__ = ["DEFAULT_LDSB_THRESHOLD", "ldsb_projection", "ldsb_report"]


def ldsb_projection(
    kernel: jax.Array,
    threshold: float | jax.Array = DEFAULT_LDSB_THRESHOLD,
    rank: int | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Top right singular directions of one first layer and the explained-energy rank; traceable.

    Args:
        kernel: float32 [D, width] first-layer kernel (Flax layout; W1 = kernel.T).
        threshold: keep the smallest r with sum_{i<=r} sigma_i^2 >= threshold * sum sigma^2.
        rank: a fixed r (static) instead of the threshold rule.

    Returns:
        (v, mask, r, sigma): v float32 [K, D] right singular vectors of W1 (rows, model basis,
        K = min(D, width), descending sigma); mask float32 [K], 1 for the kept r directions;
        r int32 []; sigma float32 [K] singular values.
    """
    # W1 = kernel.T = U S Vt, so W1's right singular vectors are the left ones of the kernel.
    u, sigma, _ = jnp.linalg.svd(kernel, full_matrices=False)  # u [D, K]
    v = u.T
    k = sigma.shape[0]
    if rank is not None:
        r = jnp.int32(min(rank, k))
    else:
        energy = jnp.cumsum(sigma**2)
        total = energy[-1]
        # Relative slack: a rank-r matrix's energy hits the threshold at r even when float
        # rounding leaves the cumulative sum a hair below threshold * total.
        r = jnp.sum(energy < threshold * total * (1 - 1e-6)) + 1
        r = jnp.where(total > 0, jnp.minimum(r, k), 0).astype(jnp.int32)
    mask = (jnp.arange(k) < r).astype(jnp.float32)
    return v, mask, r, sigma


def _ldsb_one(logits_fn, kernel_fn, v_vars, x, perm, idx_s, w, threshold, rank, batch_size):
    kern = kernel_fn(v_vars)
    if kern.ndim != 2 or kern.shape[0] != flat_features(x).shape[1]:
        fail("first-layer kernel", kern.shape, f"[D={flat_features(x).shape[1]}, width]")
    v, mask, r, sigma = ldsb_projection(kern, threshold, rank)
    vm = v * mask[:, None]  # kept directions (others zeroed)
    xf = flat_features(x)
    xp = xf[perm]

    def proj(t):  # P t for rows t [b, D]
        return jnp.matmul(jnp.matmul(t, vm.T, precision=_HI), vm, precision=_HI)

    def logits_of(rows):
        return map_batches(
            lambda xb: logits_fn(v_vars, xb.reshape((-1, *x.shape[1:]))), rows, batch_size
        )

    # x_perp = P x + P_perp x' = x' + P (x - x');  x_p = P x' + P_perp x = x - P (x - x').
    diff_p = proj(xf - xp)
    f0 = logits_of(xf)
    f_perp = logits_of(xp + diff_p)
    f_p = logits_of(xf - diff_p)
    pred0 = jnp.argmax(f0, -1)
    norm0 = jnp.linalg.norm(f0, axis=-1)

    def changes(f):
        pc = jnp.mean((jnp.argmax(f, -1) != pred0).astype(jnp.float32))
        # Ratio of means, not mean of ratios: a point with f(x) = 0 (dead units, zero bias)
        # would make a per-point ratio infinite.
        lc = jnp.mean(jnp.linalg.norm(f - f0, axis=-1)) / jnp.maximum(jnp.mean(norm0), 1e-30)
        return pc, lc

    pperp_pc, pperp_lc = changes(f_perp)
    p_pc, p_lc = changes(f_p)
    v_can = vm if w is None else jnp.matmul(vm, w.T, precision=_HI)  # [K, D] canonical
    on_s = jnp.sum(v_can[:, idx_s] ** 2)
    energy = jnp.cumsum(sigma**2)
    explained = jnp.where(r > 0, energy[jnp.maximum(r - 1, 0)] / energy[-1], 0.0)
    return {
        "ldsb_rank": r,
        "ldsb_explained": explained,
        "ldsb_pperp_pc": pperp_pc,
        "ldsb_p_pc": p_pc,
        "ldsb_pperp_lc": pperp_lc,
        "ldsb_p_lc": p_lc,
        "ldsb_overlap_s": on_s / idx_s.shape[0],
        "ldsb_p_in_s": on_s / jnp.maximum(r, 1),
        "ldsb_singular_values": sigma,
    }


def _check_ldsb_report(a: types.SimpleNamespace) -> None:
    if isinstance(a.model, Model):
        logits_fn = a.model.logits
        if a.kernel_fn is None:
            a.kernel_fn = first_layer_kernel(a.model)
    elif callable(a.model):
        logits_fn = a.model
        if a.kernel_fn is None:
            fail(
                "kernel_fn", None, "a kernel_fn(variables) -> [D, width] when model is a logits_fn"
            )
    else:
        fail("model", type(a.model).__name__, "a Model or a logits_fn(variables, x) -> [n, 2]")
    if not callable(a.kernel_fn):
        fail("kernel_fn", a.kernel_fn, "a callable kernel_fn(variables) -> [D, width]")
    check_model_keys(a.key, num_models(a.variables))
    if np.ndim(a.x) < 2 or np.shape(a.x)[0] < 2:
        fail("x.shape", np.shape(a.x), "a batch of at least 2 inputs [n, ...]")
    b = as_basis(a.basis)
    dim = int(np.prod(np.shape(a.x)[1:]))
    if dim != b.dim:
        fail("x.shape", np.shape(a.x), f"inputs with {b.dim} features to match the basis")
    if a.rank is not None:
        check_int("rank", a.rank, min_value=1)
    check_range("threshold", a.threshold, 0.0, 1.0, lo_open=True)
    check_batch_size(a.batch_size)
    check_model_chunk(a.model_chunk)
    a.model = logits_fn
    check_finite_inputs("x", a.x)
    a.x = jnp.asarray(a.x, jnp.float32)
    a.basis = basis_arrays(b)
    a.threshold = jnp.float32(a.threshold)
    a.rank = None if a.rank is None else int(a.rank)


@checked_jit(
    _check_ldsb_report,
    static_argnames=("model", "kernel_fn", "rank", "batch_size", "model_chunk"),
)
def ldsb_report(
    model: Model | Callable[[Any, jax.Array], jax.Array],
    variables: Any,
    x: jax.Array,
    key: jax.Array,
    basis: Any,
    *,
    kernel_fn: Callable[[Any], jax.Array] | None = None,
    threshold: float = DEFAULT_LDSB_THRESHOLD,
    rank: int | None = None,
    batch_size: int | None = None,
    model_chunk: int | None = None,
) -> dict[str, jax.Array]:
    """LD-SB metrics of every model (Morwani et al. 2023; definitions in the module docstring).

    Args:
        model: a `Model` of the FCN family (`fcn`, `linear`), or a hashable
            `logits_fn(variables, x) -> [n, 2]` together with `kernel_fn`.
        variables: stacked variables [M, ...].
        x: float32 [n, ...] test inputs (model basis); pairs are drawn among them.
        key: one PRNG key (the pairing permutation, shared by the models) or keys [M].
        basis: a dataset or `Basis` (rotation and S for the overlap).
        kernel_fn: `kernel_fn(variables) -> [D, width]` first-layer kernel of one model (Flax
            layout); default `sbjax.models.features.first_layer_kernel(model)`.
        threshold: explained squared-singular-value share that fixes r (0 < threshold <= 1).
        rank: a fixed r >= 1 for every model instead of the threshold rule.
        batch_size, model_chunk: memory controls, as in `sbjax.eval.stacked_logits`.

    Returns:
        dict of [M] arrays: `ldsb_rank` (int32 r), `ldsb_explained` (energy share of the kept
        directions), `ldsb_pperp_pc`, `ldsb_p_pc` (prediction-change fractions), `ldsb_pperp_lc`,
        `ldsb_p_lc` (relative logit changes), `ldsb_overlap_s`, `ldsb_p_in_s` (subspace
        overlaps with S in the canonical basis), and `ldsb_singular_values` [M, K].

    Raises:
        ValueError: naming `model` for families without a dense first layer; bad arguments.
    """
    logits_fn = model  # checked: the model's logits_fn
    w, idx_s = basis.rotation, basis.simple_coords  # checked: `BasisArrays`
    n = x.shape[0]

    def one(v, k):
        perm = jax.random.permutation(k, n)
        return _ldsb_one(logits_fn, kernel_fn, v, x, perm, idx_s, w, threshold, rank, batch_size)

    return map_models_keys(one, variables, key, per_model_keys(key), model_chunk=model_chunk)
