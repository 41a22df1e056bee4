"""Projected gradient descent (PGD) attacks and the share of a perturbation spent on S.

delta-robust accuracy (Shah et al. 2020, Sec. 3) is `E_D[min_{||x' - x|| <= delta} 1{f(x') = y}]`;
PGD lower-bounds the inner minimum. The attack follows the reference (REFERENCE 5.1-5.3):

* untargeted: every step ascends the cross-entropy CE(model(x + delta), y)
  (`optax.softmax_cross_entropy_with_integer_labels`);
* L2: start from a random direction of norm `rand_init` (uniform on [-r, r] per coordinate,
  rescaled per example to norm r); step `delta += lr * g / (||g||_2 + 1e-10)` per example; project
  onto the L2 ball of radius eps (`optax.projections.projection_l2_ball`);
* Linf: start uniform on [-r, r]; step `delta += lr * sign(g)`; project onto the Linf ball
  (`optax.projections.projection_linf_ball`);
* after every step (and at the start) clamp `x + delta` into the value box `bounds = (B0, B1)`;
  always project, no early stop; with `restarts > 1` keep, per example, the perturbation with the
  highest final loss.

Because each step is normalised per example, the result does not depend on how the data are
batched (`batch_size`), unlike a loss averaged over a batch would suggest.

The budget holds exactly when every x lies inside the box (as with the reference's bounds, the
min / max over the whole rotated dataset): the box clamp then only shrinks |delta_i|.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sbjax.eval.checks import (
    check_batch_size,
    check_logits_fn,
    check_model_chunk,
    check_model_keys,
    check_xy,
    num_models,
    per_model_keys,
)
from sbjax.eval.coords import Basis, as_basis, as_coords
from sbjax.eval.metrics import (
    LogitsFn,
    accuracy_from_logits,
    checked_jit,
    map_batches,
    map_models_keys,
)
from sbjax.validate import check_choice, check_int, check_range, fail

ATTACK_NORMS = ("l2", "linf")
STEP_SCHEDULES = ("constant", "cosine", "linear")
FRACTION_KINDS = ("abs_cos", "energy")
_HI = jax.lax.Precision.HIGHEST

__all__ = [
    "ATTACK_NORMS",
    "FRACTION_KINDS",
    "STEP_SCHEDULES",
    "PGDResult",
    "budget_fraction",
    "data_bounds",
    "mean_budget_fraction",
    "pgd_accuracy",
    "pgd_attack",
    "pgd_perturb",
]


class PGDResult(NamedTuple):
    """Output of `pgd_attack`.

    Attributes:
        delta: float32 [M, n, ...] perturbations (model basis); x_adv = x + delta.
        accuracy: float32 [M] accuracy on x + delta (the PGD estimate of robust accuracy).
        loss: float32 [M, n] cross-entropy at x + delta.
        clean_accuracy: float32 [M] accuracy on x.
    """

    delta: jax.Array
    accuracy: jax.Array
    loss: jax.Array
    clean_accuracy: jax.Array


def data_bounds(*arrays: Any) -> tuple[float, float]:
    """Scalar value box (min, max) over all given arrays (the reference: rotated train + test)."""
    if not arrays:
        fail("arrays", "()", "at least one array")
    lo = min(float(np.min(np.asarray(a))) for a in arrays)
    hi = max(float(np.max(np.asarray(a))) for a in arrays)
    return lo, hi


def _per_example_norm(g: jax.Array) -> jax.Array:
    """L2 norm over all but the leading axis, broadcastable against g."""
    axes = tuple(range(1, g.ndim))
    return jnp.sqrt(jnp.sum(g * g, axis=axes, keepdims=True))


def _schedule(step_schedule: str | Callable, step_size: float, n_iter: int) -> Callable:
    if callable(step_schedule):
        return step_schedule
    if step_schedule == "constant":
        return optax.constant_schedule(step_size)
    if step_schedule == "cosine":
        return optax.cosine_decay_schedule(step_size, n_iter)
    return optax.linear_schedule(step_size, 0.0, n_iter)


def _project(delta: jax.Array, norm: str, eps: jax.Array) -> jax.Array:
    if norm == "l2":
        return jax.vmap(lambda d: optax.projections.projection_l2_ball(d, eps))(delta)
    return optax.projections.projection_linf_ball(delta, eps)


def clip_to_box(x: jax.Array, delta: jax.Array, bounds) -> jax.Array:
    """`delta` [b, ...] cut so that `x + delta` lies in the box (B0, B1); unchanged for None."""
    if bounds is None:
        return delta
    return optax.projections.projection_box(x + delta, bounds[0], bounds[1]) - x


def _init_noise(key: jax.Array, idx: jax.Array, shape: tuple[int, ...], norm: str, r) -> jax.Array:
    """Per-example random start drawn from fold_in(key, example index): batching-invariant."""
    u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i), shape, minval=-1.0))(idx)
    u = r * u
    if norm == "l2":
        u = r * u / jnp.maximum(_per_example_norm(u), 1e-30)
    return u


def pgd_perturb(
    logits_of_x: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    *,
    norm: str = "l2",
    eps: float,
    step_size: float,
    n_iter: int,
    bounds: tuple[float, float] | None = None,
    rand_init: float = 1e-3,
    restarts: int = 1,
    step_schedule: str | Callable = "constant",
    example_index: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Untargeted PGD against ONE model; pure and traceable (no validation, no jit).

    The building block of `pgd_attack`; also usable inside a training step (adversarial
    training) with `logits_of_x = lambda x: model.apply(v, x, ...)[0]`.

    Args:
        logits_of_x: x [b, ...] -> logits [b, 2].
        x: clean inputs [b, ...]. y: int labels [b].
        key: PRNG key for the random starts (restart r uses fold_in(key, r)).
        norm: "l2" or "linf". eps: radius. step_size: lr (absolute). n_iter: steps per restart.
        bounds: (B0, B1) value box or None.
        rand_init: scale r of the random start (reference 1e-3; 0 for a zero start).
        restarts: number of random restarts (the highest-loss perturbation is kept per example).
        step_schedule: "constant" (reference), "cosine", "linear" (decay to 0) or an optax
            schedule `t -> lr`.
        example_index: int [b] global indices of the examples (seeds each start; default arange).

    Returns:
        (delta [b, ...], loss [b]): the kept perturbations and their cross-entropy.
    """
    idx = jnp.arange(x.shape[0]) if example_index is None else example_index
    sched = _schedule(step_schedule, step_size, n_iter)

    def ce(d):
        return optax.softmax_cross_entropy_with_integer_labels(logits_of_x(x + d), y)

    grad_fn = jax.grad(lambda d: jnp.sum(ce(d)))

    def one_restart(r):
        delta = _init_noise(jax.random.fold_in(key, r), idx, x.shape[1:], norm, rand_init)
        delta = clip_to_box(x, _project(delta, norm, eps), bounds)

        def step(t, delta):
            g = grad_fn(delta)
            lr = sched(t)
            if norm == "l2":
                delta = delta + lr * g / (_per_example_norm(g) + 1e-10)
            else:
                delta = delta + lr * jnp.sign(g)
            return clip_to_box(x, _project(delta, norm, eps), bounds)

        delta = jax.lax.fori_loop(0, n_iter, step, delta)
        return delta, ce(delta)

    def keep_best(carry, r):
        best, best_loss = carry
        delta, loss = one_restart(r)
        better = loss > best_loss
        mask = better.reshape((-1,) + (1,) * (x.ndim - 1))
        return (jnp.where(mask, delta, best), jnp.where(better, loss, best_loss)), None

    first = one_restart(0)
    if restarts == 1:
        return first
    (delta, loss), _ = jax.lax.scan(keep_best, first, jnp.arange(1, restarts))
    return delta, loss


def check_attack_params(norm, eps, step_size, n_iter, bounds, rand_init, restarts, schedule):
    """Validates the PGD settings shared by `pgd_attack` and the UAPs (`sbjax.eval.uap`)."""
    check_choice("norm", norm, ATTACK_NORMS)
    check_range("eps", eps, 0.0, None, lo_open=True)
    check_range("step_size", step_size, 0.0, None, lo_open=True)
    check_int("n_iter", n_iter, min_value=1)
    check_range("rand_init", rand_init, 0.0, None)
    check_int("restarts", restarts, min_value=1)
    if not callable(schedule):
        check_choice("step_schedule", schedule, STEP_SCHEDULES)
    if bounds is not None:
        if len(bounds) != 2 or not float(bounds[0]) < float(bounds[1]):
            fail("bounds", bounds, "None or (B0, B1) with B0 < B1")


def _check_pgd_attack(a: types.SimpleNamespace) -> None:
    check_logits_fn(a.logits_fn)
    check_model_keys(a.key, num_models(a.variables))
    check_xy(a.x, a.y)
    check_attack_params(
        a.norm, a.eps, a.step_size, a.n_iter, a.bounds, a.rand_init, a.restarts, a.step_schedule
    )
    check_batch_size(a.batch_size)
    check_model_chunk(a.model_chunk)
    a.x, a.y = jnp.asarray(a.x, jnp.float32), jnp.asarray(a.y)
    a.eps, a.step_size, a.rand_init = (jnp.float32(t) for t in (a.eps, a.step_size, a.rand_init))
    if a.bounds is not None:
        a.bounds = (jnp.float32(a.bounds[0]), jnp.float32(a.bounds[1]))
    a.n_iter, a.restarts = int(a.n_iter), int(a.restarts)


@checked_jit(
    _check_pgd_attack,
    static_argnames=(
        "logits_fn",
        "norm",
        "n_iter",
        "restarts",
        "step_schedule",
        "batch_size",
        "model_chunk",
    ),
)
def pgd_attack(
    logits_fn: LogitsFn,
    variables: Any,
    x: jax.Array,
    y: jax.Array,
    key: jax.Array,
    *,
    norm: str = "l2",
    eps: float,
    step_size: float,
    n_iter: int = 20,
    bounds: tuple[float, float] | None = None,
    rand_init: float = 1e-3,
    restarts: int = 1,
    step_schedule: str | Callable = "constant",
    batch_size: int | None = None,
    model_chunk: int | None = None,
) -> PGDResult:
    """Instance-specific PGD against every model of a stack (REFERENCE 5.1-5.4).

    Reference settings on slab data (nb06): `norm="l2"`, `eps = 0.5 * drange`,
    `step_size = 0.05 * drange`, `n_iter = 20`, `bounds = data_bounds(x_train, x_test)`,
    `drange = B1 - B0`. MNIST-CIFAR (nb05): `norm="linf"`, eps 0.3, step 0.12, 7 iterations,
    bounds (0, 1).

    Args:
        logits_fn: `logits_fn(variables, x) -> [n, 2]` for one model (hashable).
        variables: stacked variables [M, ...].
        x: clean inputs [n, ...] (model basis). y: int labels [n] in {0, 1}.
        key: PRNG key of the random starts: one key shared by the models, or keys [M] (model i
            uses key[i]; its result equals a call on model i alone with key[i]).
        norm: "l2" (default) or "linf". eps: radius > 0. step_size: absolute step > 0.
        n_iter: iterations per restart. bounds: (B0, B1) or None (no box).
        rand_init: random-start scale (reference 1e-3; 0 = zero start; eps = start anywhere on
            the L2 sphere / in the Linf box of radius eps).
        restarts: random restarts, keeping the highest-loss perturbation per example.
        step_schedule: "constant" (reference), "cosine", "linear" or an optax schedule.
        batch_size: attack at most this many examples at once (results do not depend on it).
        model_chunk: vmap over groups of this many models inside `lax.map` (memory).

    Returns:
        `PGDResult` with per-model arrays [M, ...].
    """
    n = x.shape[0]

    def one(v, key):
        def attack_batch(batch):
            xb, yb, ib = batch
            delta, loss = pgd_perturb(
                lambda t: logits_fn(v, t),
                xb,
                yb,
                key,
                norm=norm,
                eps=eps,
                step_size=step_size,
                n_iter=n_iter,
                bounds=bounds,
                rand_init=rand_init,
                restarts=restarts,
                step_schedule=step_schedule,
                example_index=ib,
            )
            return delta, loss, logits_fn(v, xb + delta), logits_fn(v, xb)

        delta, loss, adv_logits, clean_logits = map_batches(
            attack_batch, (x, y, jnp.arange(n)), batch_size
        )
        return PGDResult(
            delta, accuracy_from_logits(adv_logits, y), loss, accuracy_from_logits(clean_logits, y)
        )

    return map_models_keys(one, variables, key, per_model_keys(key), model_chunk=model_chunk)


def pgd_accuracy(
    logits_fn: LogitsFn, variables: Any, x: jax.Array, y: jax.Array, key: jax.Array, **kw: Any
) -> jax.Array:
    """PGD estimate of delta-robust accuracy [M] (`pgd_attack(...).accuracy`; same arguments)."""
    return pgd_attack(logits_fn, variables, x, y, key, **kw).accuracy


# ----------------------------------------------------------------------------------------------
# Budget fraction on S (paper Fig. 4; REFERENCE 5.4, 5.7, row 17).
# ----------------------------------------------------------------------------------------------


def _feature_axes(shape: tuple[int, ...], dim: int) -> int:
    """Number of trailing axes whose sizes multiply to dim."""
    prod = 1
    for k in range(1, len(shape) + 1):
        prod *= shape[-k]
        if prod == dim:
            return k
        if prod > dim:
            break
    fail("delta.shape", shape, f"trailing axes holding the {dim} input features")


def budget_fraction(
    delta: jax.Array,
    basis: Any,
    coords: Any = None,
    *,
    kind: str = "abs_cos",
) -> jax.Array:
    """Share of each perturbation's norm that falls on S, in the canonical basis.

    `P_can = P @ W.T`; `abs_cos` (default, the reference's |P_can[0]| / ||P_can||) returns
    `||P_can[S]||_2 / ||P_can||_2`, which for |S| = 1 is the |cosine| with e_S; `energy` returns its
    square `||P_can[S]||^2 / ||P_can||^2`. For MNIST-CIFAR (no rotation) S is the MNIST half.

    Args:
        delta: perturbations [..., *features] in the model basis (e.g. [M, n, d] from PGD,
            [M, d] UAPs, or [M, n, 64, 32, 3] images).
        basis: a dataset / `Basis` (its rotation and S; `image_basis()` for MNIST-CIFAR), or a
            rotation [D, D] with `coords`.
        coords: S when `basis` is a rotation or None (default: the basis' simple coords).
        kind: "abs_cos" (default) or "energy".

    Returns:
        float32 [...]: one fraction per perturbation (NaN for a zero perturbation).
    """
    check_choice("kind", kind, FRACTION_KINDS)
    delta = jnp.asarray(delta, jnp.float32)
    if isinstance(basis, Basis) or hasattr(basis, "simple_coords"):
        b = as_basis(basis, simple_coords=coords)
        w, s, dim = b.rotation, np.asarray(b.simple_coords), b.dim
    else:
        if basis is None or np.ndim(basis) != 2:
            fail("basis", type(basis).__name__, "a dataset, a Basis or a rotation [D, D]")
        if coords is None:
            fail("coords", coords, "the canonical indices of S when basis is a rotation")
        w = np.asarray(basis, np.float32)
        dim = w.shape[0]
        s = as_coords("coords", coords, dim)
    k = _feature_axes(delta.shape, dim)
    lead = delta.shape[: delta.ndim - k]
    p = delta.reshape(*lead, dim)
    if w is not None:
        p = jnp.matmul(p, jnp.asarray(w).T, precision=_HI)
    on_s = jnp.sum(p[..., s] ** 2, axis=-1)
    total = jnp.sum(p**2, axis=-1)
    frac = jnp.where(total > 0, on_s / jnp.where(total > 0, total, 1.0), jnp.nan)
    return frac if kind == "energy" else jnp.sqrt(frac)


def mean_budget_fraction(
    delta: jax.Array, basis: Any, coords: Any = None, *, kind: str = "abs_cos"
) -> jax.Array:
    """Mean over examples (the second-to-last leading axis) of `budget_fraction`: [M, n, ...] -> [M].

    The reference prints this for PGD (nb06: 0.99732 on LMS-5, 0.99094 on MS-(5,7)).
    """
    frac = budget_fraction(delta, basis, coords, kind=kind)
    if frac.ndim < 1:
        fail("delta.shape", np.shape(delta), "[..., n, features] with an example axis")
    return jnp.nanmean(frac, axis=-1)
