"""Random orthogonal rotations of the synthetic datasets' input space.

Shah et al. 2020, Sec. 3.1: the synthetic datasets are "rotated by a random rotation matrix" so that
no model sees the features axis-aligned. Row-vector convention (REFERENCE.md Sec. 1.6):
``x_model = z @ W`` and ``z = x_model @ W.T``, with z in the canonical basis where S and S^c are
defined.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sbjax import validate

__all__ = ["ROTATIONS", "make_rotation"]

ROTATIONS = ("haar", "reference_qr")


def make_rotation(d: int, seed: int = 0, kind: str = "haar") -> np.ndarray:
    """Draws a random d x d orthogonal matrix, deterministically from ``seed``.

    Args:
      d: dimension.
      seed: integer seed (``jax.random.key(seed)``).
      kind: ``"haar"`` (default): exactly Haar-distributed, via `jax.random.orthogonal`.
        ``"reference_qr"``: the reference code's rule, Q of the QR decomposition of a standard
        Gaussian matrix *without* sign correction (orthogonal, but not exactly Haar).

    Returns:
      float32 NumPy array ``[d, d]`` with orthonormal rows and columns.

    Note:
      The reference uses the QR rule (REFERENCE.md Sec. 1.6, Sec. 11 item 20); sbjax defaults to
      the exact Haar draw because nothing in the paper depends on the bias of the QR rule, and keeps
      the QR rule behind ``rotation="reference_qr"``. The reference redraws the Gaussian if a
      singular value is <= 1e-7, which has probability ~0; sbjax does not. Both rules run in
      float32, so ``W W^T = I`` to ~1e-6.
    """
    validate.check_int("d", d, min_value=1)
    validate.check_int("rotation_seed", seed, min_value=0)
    validate.check_choice("rotation", kind, ROTATIONS)
    key = jax.random.key(seed)
    if kind == "haar":
        w = jax.random.orthogonal(key, d, dtype=jnp.float32)
    else:
        q, _ = jnp.linalg.qr(jax.random.normal(key, (d, d), jnp.float32))
        w = q
    return np.asarray(w, np.float32)
