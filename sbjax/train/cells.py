"""Grids of cells trained as one program: the shared driver of `sbjax.train.phase` and
`sbjax.train.atlas`, whose training data are sampled inside the program from each cell's traced
parameters.

Model order is cell-major, seed-minor (m = cell * S + seed); seed s of every cell has the key
`fold_in(key(seed), s)` (common random numbers across cells).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

STRATEGIES = ("program", "loop")
log = logging.getLogger(__name__)


def cell_keys(seed: int, n_cells: int, n_seeds: int) -> jax.Array:
    """PRNG keys [n_cells * n_seeds] in model order."""
    root = jax.random.key(seed)
    seed_keys = jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(n_seeds))
    return jnp.tile(seed_keys, n_cells)


def run_cells(
    run: Callable,
    cell: Mapping[str, np.ndarray],
    keys: jax.Array,
    hp0: Mapping[str, np.float32],
    strategy: str,
    devices: Sequence[Any] | None,
    models_per_call: int | None = None,
) -> tuple[Any, float, float, int]:
    """Trains every model: `run(key, cell, hp) -> outputs` of one model, over cells [M] each.

    Args:
      run: the one-model program (pure; data sampled inside from `cell`).
      cell: name -> [M] traced cell parameters in model order.
      keys: [M] PRNG keys in model order.
      hp0: the default traced hyperparameters (every model uses them).
      strategy: "program" (one sharded `jit(vmap)` over the models, padded to the device
        count) or "loop" (the same program compiled once and called per model: the baseline).
      devices: devices to shard over (default all; "loop" uses the first).
      models_per_call: "program" only: run the models in calls of this many (rounded up to a
        multiple of the device count) of ONE compiled program, for grids whose per-model data
        would not fit in memory at once (None: every model in one call). The outputs equal one
        call's (each model's program is the same; only the batching of calls differs).

    Returns:
      (outputs with a leading model axis [M] on the host, compile_s, run_s, n_devices).
    """
    devs = list(jax.devices() if devices is None else devices)
    m = int(keys.shape[0])
    if strategy == "program":
        per_call = m if models_per_call is None else min(int(models_per_call), m)
        per_call += -per_call % len(devs)
        pad = -m % per_call

        def padded(a):
            return np.concatenate([a, np.repeat(a[-1:], pad)]) if pad else a

        cell_p = {k: padded(v) for k, v in cell.items()}
        hp = {n: np.full(m + pad, v, np.float32) for n, v in hp0.items()}
        keys_p = jnp.concatenate([keys, jnp.tile(keys[-1:], pad)]) if pad else keys
        sh = NamedSharding(Mesh(np.asarray(devs), ("model",)), P("model"))
        prog = jax.jit(jax.vmap(run), in_shardings=(sh, sh, sh), out_shardings=sh)

        def call_args(i):
            sl = slice(i * per_call, (i + 1) * per_call)
            return jax.device_put(
                (
                    keys_p[sl],
                    {k: v[sl] for k, v in cell_p.items()},
                    {k: v[sl] for k, v in hp.items()},
                ),
                sh,
            )

        t0 = time.perf_counter()
        compiled = prog.lower(*call_args(0)).compile()
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        parts = []
        n_calls = (m + pad) // per_call
        for i in range(n_calls):
            out = jax.block_until_ready(compiled(*call_args(i)))
            parts.append(jax.tree_util.tree_map(np.asarray, out))
            if n_calls > 1:  # the only progress a compiled call can give
                log.info(
                    "call %d of %d done (%d models each, %.0f s so far)",
                    i + 1,
                    n_calls,
                    per_call,
                    time.perf_counter() - t0,
                )
        run_s = time.perf_counter() - t0
        outs = jax.tree_util.tree_map(lambda *a: np.concatenate(a), *parts)
        return (
            jax.tree_util.tree_map(lambda a: np.asarray(a)[:m], outs),
            compile_s,
            run_s,
            len(devs),
        )

    dev = devs[0]

    def args_of(i):
        return jax.device_put((keys[i], {k: v[i] for k, v in cell.items()}, dict(hp0)), dev)

    t0 = time.perf_counter()
    compiled = jax.jit(run).lower(*args_of(0)).compile()
    compile_s = time.perf_counter() - t0
    outs = []
    t0 = time.perf_counter()
    for i in range(m):
        outs.append(jax.block_until_ready(compiled(*args_of(i))))
    run_s = time.perf_counter() - t0
    stacked = jax.tree_util.tree_map(lambda *a: np.stack([np.asarray(v) for v in a]), *outs)
    return stacked, compile_s, run_s, 1
