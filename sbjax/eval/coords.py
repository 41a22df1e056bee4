"""Canonical basis of an input space: coordinate sets S / S^c and the rotation W.

Model-basis inputs are `x = z @ W` for canonical `z` (W [D, D] orthogonal, None = identity);
non-vector inputs [n, ...] are flattened to [n, D] (`flat_features`) and coordinates index the
flattened features. Shared by `randomize`, `attacks`, `boundary`, `ldsb`, `probe` and
`subspace_margin`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sbjax.validate import fail

__all__ = [
    "Basis",
    "BasisArrays",
    "as_basis",
    "as_coords",
    "basis_arrays",
    "check_rotation",
    "flat_features",
    "image_basis",
]


class Basis(NamedTuple):
    """Canonical basis of an input space and its split into S and S^c.

    Attributes:
        rotation: float32 NumPy [D, D] orthogonal W (model basis x = z @ W), or None (identity).
        simple_coords: canonical indices of S (flattened features for non-vector inputs).
        complex_coords: canonical indices of S^c.
        dim: D, the number of (flattened) input features.
    """

    rotation: np.ndarray | None
    simple_coords: tuple[int, ...]
    complex_coords: tuple[int, ...]
    dim: int


def as_coords(name: str, coords: Any, dim: int) -> np.ndarray:
    """Validates a coordinate set -> sorted unique int array (static)."""
    try:
        arr = np.asarray(coords, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        fail(name, coords, "a sequence of integer coordinates")
    if arr.size == 0:
        fail(name, coords, "a non-empty set of coordinates")
    if arr.min() < 0 or arr.max() >= dim:
        fail(name, coords, f"coordinates in [0, {dim})")
    if np.unique(arr).size != arr.size:
        fail(name, coords, "distinct coordinates")
    return np.sort(arr)


def check_rotation(rotation: Any, dim: int) -> np.ndarray | None:
    """Validates W: None (identity) or [dim, dim] -> float32 NumPy (or None)."""
    if rotation is None:
        return None
    w = np.asarray(rotation, dtype=np.float32)
    if w.shape != (dim, dim):
        fail("rotation.shape", w.shape, f"a square [{dim}, {dim}] matrix matching the inputs")
    return w


def as_basis(
    basis: Any = None,
    *,
    rotation: Any = None,
    simple_coords: Sequence[int] | None = None,
    complex_coords: Sequence[int] | None = None,
    dim: int | None = None,
) -> Basis:
    """Builds a `Basis` from a dataset object, a `Basis`, or explicit arguments.

    Args:
        basis: a `Basis`, or a dataset with `.rotation`, `.simple_coords`, `.d` (and optionally
            `.rotate`, False meaning the identity), e.g. `sbjax.data.make_dataset(...)`.
        rotation: [D, D] W when `basis` is None (None: identity).
        simple_coords: S; overrides the dataset's.
        complex_coords: S^c; default every coordinate not in S. Note: this is the reference's
            S^c = {1, ..., d - 1}: pure-noise coordinates (a dataset's `noise_coords`) are included.
        dim: D when neither `basis` nor `rotation` gives it.

    Returns:
        A validated `Basis`.
    """
    if isinstance(basis, Basis):
        rotation, dim = basis.rotation, basis.dim
        simple_coords = basis.simple_coords if simple_coords is None else simple_coords
        complex_coords = basis.complex_coords if complex_coords is None else complex_coords
    elif basis is not None:
        if not hasattr(basis, "simple_coords"):
            fail("basis", type(basis).__name__, "a Basis or a dataset with .simple_coords")
        rotation = basis.rotation if getattr(basis, "rotate", True) else None
        dim = int(getattr(basis, "d", np.shape(basis.rotation)[0]))
        simple_coords = basis.simple_coords if simple_coords is None else simple_coords
    if dim is None:
        if rotation is None:
            fail("dim", dim, "the input dimension when no rotation or dataset is given")
        dim = int(np.shape(rotation)[0])
    if simple_coords is None:
        fail("simple_coords", simple_coords, "the canonical indices of S")
    w = check_rotation(rotation, dim)
    s = as_coords("simple_coords", simple_coords, dim)
    if complex_coords is None:
        sc = np.setdiff1d(np.arange(dim), s)
        if sc.size == 0:
            fail("simple_coords", tuple(s.tolist()), "a proper subset of the coordinates")
    else:
        sc = as_coords("complex_coords", complex_coords, dim)
        if np.intersect1d(s, sc).size:
            fail("complex_coords", tuple(sc.tolist()), "coordinates disjoint from simple_coords")
    return Basis(w, tuple(int(c) for c in s), tuple(int(c) for c in sc), int(dim))


def image_basis(shape: Sequence[int] = (64, 32, 3), simple_rows: int = 32) -> Basis:
    """Basis of MNIST-CIFAR-like images: S = the first `simple_rows` rows (the MNIST half).

    Args:
        shape: image shape (H, W, C), NHWC layout without the batch axis.
        simple_rows: rows 0 .. simple_rows - 1 form S (MNIST on top, CIFAR below).

    Returns:
        `Basis` with no rotation, D = H * W * C, S = flat indices of the top rows.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        fail("shape", shape, "an image shape (H, W, C) of positive sizes")
    if not 0 < simple_rows < shape[0]:
        fail("simple_rows", simple_rows, f"an integer in [1, {shape[0] - 1}]")
    dim = math.prod(shape)
    n_s = simple_rows * shape[1] * shape[2]
    return Basis(None, tuple(range(n_s)), tuple(range(n_s, dim)), dim)


def flat_features(x: jax.Array) -> jax.Array:
    """Inputs [n, ...] -> [n, D] (D = the flattened features)."""
    return jnp.reshape(x, (x.shape[0], -1))


class BasisArrays(NamedTuple):
    """A checked `Basis` as the arrays a jitted body takes (`basis_arrays`)."""

    rotation: jax.Array | None  # float32 W [D, D], or None for the identity
    simple_coords: jax.Array  # int S
    complex_coords: jax.Array  # int S^c


def basis_arrays(b: Basis) -> BasisArrays:
    """A checked `Basis` -> `BasisArrays` (jnp W or None, S, S^c)."""
    return BasisArrays(
        None if b.rotation is None else jnp.asarray(b.rotation),
        jnp.asarray(b.simple_coords),
        jnp.asarray(b.complex_coords),
    )
