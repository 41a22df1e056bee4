"""Argument checks shared by the evaluation package (`sbjax.eval`).

Each check raises `ValueError` naming the parameter (`sbjax.validate.fail`) and returns nothing,
except `num_models` (M), `key_batch_shape`, `check_model_keys` and `per_model_keys`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbjax.validate import check_int, fail

__all__ = [
    "check_batch_size",
    "check_finite_inputs",
    "check_logits_fn",
    "check_model_chunk",
    "check_model_keys",
    "check_xy",
    "key_batch_shape",
    "num_models",
    "per_model_keys",
]


def num_models(variables: Any) -> int:
    """Returns M, the common leading (model) axis of every leaf of stacked `variables`.

    Raises:
        ValueError: if there are no array leaves or their leading axes differ.
    """
    leaves = jax.tree.leaves(variables)
    if not leaves:
        fail("variables", type(variables).__name__, "a pytree of arrays stacked along axis 0")
    sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) > 0 else -1 for leaf in leaves}
    if len(sizes) != 1 or -1 in sizes:
        fail(
            "variables",
            f"leading axes {sorted(sizes)}",
            "every leaf stacked along a common leading model axis [M, ...]",
        )
    return sizes.pop()


def check_logits_fn(logits_fn: Any) -> None:
    """Refuses a `logits_fn` that is not callable."""
    if not callable(logits_fn):
        fail("logits_fn", logits_fn, "a callable logits_fn(variables, x) -> [n, 2]")


def check_finite_inputs(name: str, x: Any) -> None:
    """Refuses NaN / inf in a concrete input array (a traced one is left to its caller).

    A NaN input row gives a NaN logit, which argmax reads as class 0 and a rank AUC as NaN:
    silently wrong accuracies. Every public evaluation function checks its inputs with this.

    Raises:
      ValueError: naming `name`, the count of non-finite values and the first bad row.
    """
    if x is None or isinstance(x, jax.core.Tracer):
        return
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.inexact) or arr.size == 0:
        return
    # min/max propagate NaN and expose +-inf without a full-size boolean temporary
    if np.isfinite(np.min(arr)) and np.isfinite(np.max(arr)):
        return
    bad = ~np.isfinite(arr)
    rows = np.flatnonzero(bad.reshape(arr.shape[0], -1).any(axis=1)) if arr.ndim else [0]
    fail(
        name,
        f"<{int(bad.sum())} NaN/inf value(s) in {len(rows)} row(s), first row {int(rows[0])}>",
        "finite inputs (clean or drop those rows)",
    )


def check_xy(x: Any, y: Any) -> None:
    """Checks x [n, ...] (finite) and y [n] with labels in {0, 1} (labels checked when
    concrete)."""
    if np.ndim(x) < 2:
        fail("x.shape", np.shape(x), "a batch of inputs [n, ...] with at least 2 axes")
    check_finite_inputs("x", x)
    if np.ndim(y) != 1:
        fail("y.shape", np.shape(y), "a label vector [n]")
    if np.shape(x)[0] != np.shape(y)[0]:
        fail("y.shape", np.shape(y), f"[{np.shape(x)[0]}] to match x.shape={np.shape(x)}")
    if not isinstance(y, jax.core.Tracer):
        vals = np.unique(np.asarray(y))
        if not np.all(np.isin(vals, (0, 1))):
            fail("y", f"values {vals[:5].tolist()}", "integer labels in {0, 1}")


def check_batch_size(batch_size: int | None) -> None:
    """`batch_size`: None or an integer >= 1."""
    if batch_size is not None:
        check_int("batch_size", batch_size, min_value=1)


def check_model_chunk(model_chunk: int | None) -> None:
    """`model_chunk`: None or an integer >= 1."""
    if model_chunk is not None:
        check_int("model_chunk", model_chunk, min_value=1)


def key_batch_shape(key: Any) -> tuple[int, ...]:
    """Batch shape of a PRNG key array: typed keys (`jax.random.key`) or raw uint32 key data
    (`jax.random.PRNGKey`, trailing axis = the key data)."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return tuple(key.shape)
    shape = np.shape(key)
    if dtype is None or np.dtype(dtype) != np.uint32 or len(shape) < 1:
        fail(
            "key",
            f"an array of shape {shape} and dtype {dtype}",
            "a PRNG key (jax.random.key) or a stack of keys, one per model",
        )
    return tuple(shape[:-1])


def check_model_keys(key: Any, n_models: int) -> bool:
    """Validates the `key` argument of a stacked evaluation; True when it is one key per model.

    Every key-taking function of `sbjax.eval.randomize` (and `boundary_projection`) accepts
    either ONE key, shared by all M models (every model sees the same random draw: paired
    comparisons), or a stacked key array [M] (model i uses `key[i]`, vmapped together with the
    stacked variables: independent draws, e.g. each model's key derived from its own
    (cell, seed)). Typed keys (`jax.random.key`) and raw uint32 keys (`jax.random.PRNGKey`) both
    work.

    Args:
        key: a PRNG key (shape ()) or keys [M].
        n_models: M, the leading axis of the stacked variables.

    Returns:
        False for one shared key, True for per-model keys.

    Raises:
        ValueError: naming `key` if it is neither one key nor exactly M keys.
    """
    batch = key_batch_shape(key)
    if batch == ():
        return False
    if len(batch) == 1 and batch[0] == n_models:
        return True
    fail(
        "key",
        f"a key array of batch shape {batch}",
        f"one PRNG key (shape ()) or one key per model, shape [{n_models}]",
    )


def per_model_keys(key: Any) -> bool:
    """True for keys [M] (one per model), False for one shared key.

    `check_model_keys`'s answer for a key it accepted, read from the shape alone, so a jitted
    body (`checked_jit`) derives it from its traced `key` instead of taking a flag.
    """
    return key_batch_shape(key) != ()
