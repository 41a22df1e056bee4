"""The per-model stop rules: convergence (train accuracy or loss) with patience, and divergence.

A rule fires once, on a model still under its budget; after it, `stop_step` masks further
updates (REFERENCE.md Sec. 3.2). Codes are int32 so they live in the traced `TrainState`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from sbjax.train.config import TrainConfig

# stop_reason codes.
RUNNING, CONVERGED, DIVERGED = 0, 1, 2
STOP_REASONS = {RUNNING: "max_steps", CONVERGED: "converged", DIVERGED: "diverged"}


def stop_decision(
    cfg: TrainConfig,
    step: jax.Array,
    stop_step: jax.Array,
    stop_reason: jax.Array,
    was_live: jax.Array,
    train_acc: jax.Array,
    train_loss: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The stop rule at one evaluation of one model (all scalars).

    Args:
      step: updates so far; stop_step, stop_reason: the model's current stop state.
      was_live: whether the model was updating during the period that just ended.
      train_acc, train_loss: this evaluation's train metrics.

    Returns:
      (stop_step, stop_reason, diverged): a converged model stops `patience - 1` updates later,
      a diverged one (non-finite loss or above `cfg.diverge_loss`) now.
    """
    undecided = (stop_reason == RUNNING) & was_live
    diverged = undecided & (~jnp.isfinite(train_loss) | (train_loss > cfg.diverge_loss))
    if cfg.stop_rule == "acc":
        met = train_acc >= 1.0 - cfg.stop_eps
    elif cfg.stop_rule == "loss":
        met = train_loss < cfg.stop_eps
    else:
        met = jnp.asarray(False)
    converged = undecided & ~diverged & met
    new_stop = jnp.where(
        converged,
        jnp.minimum(stop_step, step + cfg.patience - 1),
        jnp.where(diverged, jnp.minimum(stop_step, step), stop_step),
    )
    reason = jnp.where(converged, CONVERGED, jnp.where(diverged, DIVERGED, stop_reason))
    return new_stop, reason, diverged
