"""A model that sees only the component of its input orthogonal to a stored subspace.

OrthoP (Morwani, Batra, Jain, Netrapalli, NeurIPS 2023) trains a second model on the inputs
projected onto the orthogonal complement of the first model's low-rank input subspace P:
`f2(x) = g(x - U U^T x)` with U [D, r] an orthonormal basis of P. `orthogonal_complement(model,
max_rank)` wraps a registry `Model` so that U is part of each model's variables (collection
"projection", entry "basis" float32 [D, max_rank]; zero columns are unused directions). The
optimizer only updates "params", so U stays fixed during training, and every consumer of the model
(training, its evaluation and stop rule, the randomized metrics, attacks) sees the projected
network. Different models of a stack carry different U, so one sweep trains every seed's second
model against its own first model (`train_sweep(init_variables=...)`).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbjax.models.registry import Model
from sbjax.validate import check_int, fail

PROJECTION = "projection"

__all__ = ["PROJECTION", "orthogonal_complement", "project_out", "with_basis"]

_CACHE: dict[tuple[Any, int], Model] = {}


def project_out(x: jax.Array, basis: jax.Array) -> jax.Array:
    """x - (x U) U^T on the flattened features: x [n, ...], basis U [D, r] (orthonormal or zero
    columns) -> x's component orthogonal to span(U), same shape as x."""
    flat = x.reshape(x.shape[0], -1)
    hi = jax.lax.Precision.HIGHEST
    flat = flat - jnp.matmul(jnp.matmul(flat, basis, precision=hi), basis.T, precision=hi)
    return flat.reshape(x.shape)


def _split(variables: Any) -> tuple[dict, jax.Array]:
    v = dict(variables)
    if PROJECTION not in v:
        fail("variables", sorted(v), f"variables with a {PROJECTION!r} collection (with_basis)")
    basis = v.pop(PROJECTION)["basis"]
    return v, basis


def orthogonal_complement(model: Model, max_rank: int) -> Model:
    """`model` applied to x - U U^T x, with U [D, max_rank] stored in the variables.

    Args:
      model: a registry `Model` (any family; inputs are flattened for the projection).
      max_rank: columns of U (directions removed at most).

    Returns:
      A `Model` with the same config and module; `init` adds a zero U (the identity projection);
      set each model's U with `with_basis`. Cached per (model, max_rank), so compiled programs
      that take the model as a static argument are reused.
    """
    if not isinstance(model, Model):
        fail("model", type(model).__name__, "a sbjax.models.Model from make_model(...)")
    check_int("max_rank", max_rank, min_value=1)
    key = (model.apply, int(max_rank))
    if key in _CACHE:
        return _CACHE[key]

    def init(rng: jax.Array, x_example: jax.Array) -> dict:
        variables = dict(model.init(rng, x_example))
        dim = math.prod(jnp.shape(x_example)[1:])
        variables[PROJECTION] = {"basis": jnp.zeros((dim, int(max_rank)), jnp.float32)}
        return variables

    def apply(variables, x, train: bool = False, **kw):
        base, basis = _split(variables)
        return model.apply(base, project_out(jnp.asarray(x, jnp.float32), basis), train, **kw)

    def logits(variables, x):
        return apply(variables, x, train=False)[0]

    out = Model(
        init=init,
        apply=apply,
        logits=logits,
        config=model.config,
        module=model.module,
        has_batch_stats=model.has_batch_stats,
    )
    _CACHE[key] = out
    return out


def with_basis(variables: Any, basis: Any) -> dict:
    """Variables (one model, or stacked [M, ...]) with their projection basis replaced.

    Args:
      variables: variables of an `orthogonal_complement` model (from its `init`).
      basis: float [D, r] or [M, D, r] (r <= max_rank; padded with zero columns); its columns
        must be orthonormal or zero.
    """
    v = dict(variables)
    old = v.get(PROJECTION, {}).get("basis")
    if old is None:
        fail("variables", sorted(v), f"variables with a {PROJECTION!r} collection")
    b = np.asarray(basis, np.float32)
    if b.ndim != np.ndim(old) or b.shape[:-1] != tuple(np.shape(old))[:-1]:
        fail("basis.shape", b.shape, f"{tuple(np.shape(old))[:-1]} + (r,)")
    pad = np.shape(old)[-1] - b.shape[-1]
    if pad < 0:
        fail("basis.shape", b.shape, f"at most max_rank = {np.shape(old)[-1]} columns")
    b = np.concatenate([b, np.zeros(b.shape[:-1] + (pad,), np.float32)], axis=-1)
    v[PROJECTION] = {"basis": jnp.asarray(b)}
    return v
