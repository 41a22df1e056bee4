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

__all__ = ["MAX_ROTATION_D", "ROTATIONS", "check_rotation_d", "make_rotation"]

ROTATIONS = ("haar", "reference_qr")

# Largest d with a dense rotation: W is a float32 [d, d] array (256 MiB at 8192, drawn by an
# O(d^3) QR); at d = 100000 it would be 37 GiB. The paper's datasets use d <= 100s.
MAX_ROTATION_D = 8192


def check_rotation_d(d: int, *, rotate: bool = True) -> None:
    """Refuses a d whose dense [d, d] rotation (or identity) would not fit in memory.

    Raises:
      ValueError: d > `MAX_ROTATION_D`, naming d, the limit and the memory it would need.
    """
    if d > MAX_ROTATION_D:
        gib = 4 * d * d / 2**30
        if rotate:
            why = (
                f"the dense d x d float32 rotation W would take {gib:.1f} GiB (and an O(d^3) "
                "QR draw)"
            )
        else:
            why = (
                f"even with rotate=False the dataset stores W = I as a dense d x d float32 "
                f"array ({gib:.1f} GiB)"
            )
        validate.fail("d", d, f"an integer <= MAX_ROTATION_D={MAX_ROTATION_D}: {why}")


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

    Raises:
      ValueError: bad ``d`` (including ``d > MAX_ROTATION_D``, which would need ``4 d^2`` bytes),
        seed or kind, before anything is allocated.

    Note:
      The reference uses the QR rule (REFERENCE.md Sec. 1.6, Sec. 11 item 20); sbjax defaults to
      the exact Haar draw because nothing in the paper depends on the bias of the QR rule, and keeps
      the QR rule behind ``rotation="reference_qr"``. The reference redraws the Gaussian if a
      singular value is <= 1e-7, which has probability ~0; sbjax does not. Both rules run in
      float32, so ``W W^T = I`` to ~1e-6.
    """
    validate.check_int("d", d, min_value=1)
    check_rotation_d(int(d))
    validate.check_int("rotation_seed", seed, min_value=0)
    validate.check_choice("rotation", kind, ROTATIONS)
    key = jax.random.key(seed)
    if kind == "haar":
        w = jax.random.orthogonal(key, d, dtype=jnp.float32)
    else:
        q, _ = jnp.linalg.qr(jax.random.normal(key, (d, d), jnp.float32))
        w = q
    return np.asarray(w, np.float32)
