"""Per-seed, per-epoch minibatch order as a keyed pseudo-random permutation computed on the fly.

`jax.random.permutation` inside the compiled loop is a sort of the whole dataset per epoch and seed
(DESIGN.md measured 1.3 s per epoch for 64 seeds, more than the training). Instead, the position
`p` of an epoch is mapped to a data index by a 4-round Feistel network on the smallest even number of
bits covering N, with cycle-walking to stay inside [0, N). That is an exact bijection of [0, N) for
every (key, epoch), costs a few integer operations per example, and needs only the indices of the
current batch, so a resumed run draws exactly the same batches as an uninterrupted one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_ROUNDS = 4


def _mix(x: jax.Array) -> jax.Array:
    """A 32-bit integer hash (murmur3 finaliser): good avalanche, cheap, vectorised."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _half_bits(n: int) -> int:
    bits = max(int(n - 1).bit_length(), 2)
    return (bits + 1) // 2


def _feistel(x: jax.Array, round_keys: jax.Array, half: int) -> jax.Array:
    mask = jnp.uint32((1 << half) - 1)
    left, right = x >> half, x & mask
    for r in range(_ROUNDS):
        f = _mix(right ^ round_keys[r]) & mask
        left, right = right, left ^ f
    return (left << half) | right


def epoch_round_keys(key: jax.Array, epoch: jax.Array) -> jax.Array:
    """Round keys uint32 [4] of the permutation used in `epoch` by the model with PRNG `key`."""
    return jax.random.bits(jax.random.fold_in(key, epoch), (_ROUNDS,), jnp.uint32)


def permute_positions(positions: jax.Array, round_keys: jax.Array, n: int) -> jax.Array:
    """Maps epoch positions to data indices through a keyed bijection of [0, n).

    Args:
      positions: int32 [...] positions in the epoch, each in [0, n).
      round_keys: uint32 [4] from `epoch_round_keys`.
      n: dataset size (static).

    Returns:
      int32 [...] data indices; distinct positions give distinct indices.
    """
    half = _half_bits(n)
    x = _feistel(positions.astype(jnp.uint32), round_keys, half)
    # Cycle-walking: re-encrypt until inside [0, n). Each cycle of the permutation of [0, 4^half)
    # passes through the start point, so this terminates; the expected number of walks is < 4.
    x = jax.lax.while_loop(
        lambda v: jnp.any(v >= n),
        lambda v: jnp.where(v >= n, _feistel(v, round_keys, half), v),
        x,
    )
    return x.astype(jnp.int32)
