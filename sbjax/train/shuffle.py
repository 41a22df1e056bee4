"""Per-seed, per-epoch minibatch order as a keyed pseudo-random permutation computed on the fly.

`jax.random.permutation` inside the compiled loop is a sort of the whole dataset per epoch and seed
(DESIGN.md measured 1.3 s per epoch for 64 seeds, more than the training). Instead, the position
`p` of an epoch is mapped to a data index by a "swap-or-not" shuffle (Hoang, Morris & Rogaway,
CRYPTO 2012) on Z_N: each round pairs x with K_r - x (mod N) and swaps the pair when a keyed bit of
the pair is set. Every round is an involution, so the whole map is an exact bijection of [0, N) for
every (key, epoch), works for any N without cycle-walking (a data-dependent loop would make the
model axis of a sharded sweep synchronise), costs a few integer operations per example, and needs
only the indices of the current batch, so a resumed run draws exactly the same batches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

ROUNDS = 24  # mixing for SGD batch order, not cryptographic strength


def _mix(x: jax.Array) -> jax.Array:
    """A 32-bit integer hash (murmur3 finaliser): good avalanche, cheap, vectorised."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def epoch_round_keys(key: jax.Array, epoch: jax.Array) -> jax.Array:
    """Round keys uint32 [2, ROUNDS] of the permutation used in `epoch` by the model with `key`."""
    return jax.random.bits(jax.random.fold_in(key, epoch), (2, ROUNDS), jnp.uint32)


def permute_positions(positions: jax.Array, round_keys: jax.Array, n: int) -> jax.Array:
    """Maps epoch positions to data indices through a keyed bijection of [0, n).

    Args:
      positions: int32 [...] positions in the epoch, each in [0, n).
      round_keys: uint32 [2, ROUNDS] from `epoch_round_keys`.
      n: dataset size (a Python int, or an int32 scalar that may be traced).

    Returns:
      int32 [...] data indices; distinct positions give distinct indices.
    """
    x = positions.astype(jnp.uint32)
    nn = jnp.asarray(n, jnp.uint32)
    for r in range(ROUNDS):
        k = round_keys[0, r] % nn  # scalar
        # partner = (k - x) mod n without a vector modulo (slow on CPU): k + n - x is in [1, 2n).
        partner = k + nn - x
        partner = jnp.where(partner >= nn, partner - nn, partner)
        hi = jnp.maximum(x, partner)
        swap = (_mix(hi ^ round_keys[1, r]) & jnp.uint32(1)) == 1
        x = jnp.where(swap, partner, x)
    return x.astype(jnp.int32)
