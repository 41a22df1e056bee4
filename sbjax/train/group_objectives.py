"""Group-robust objectives on the objective seam: Group DRO and LfF (a `LossRule` each), and the
generalized cross-entropy LfF's biased model trains with.

* **Group DRO** (Sagawa, Koh, Hashimoto, Liang, ICLR 2020; repository kohpangwei/group_DRO,
  `loss.py`): per update, the batch's mean loss of each group g, loss_g (0 for a group absent from
  the batch), moves the group weights q <- q * exp(eta * (loss_g + C / sqrt(n_g))), q <- q / sum q,
  and the model minimises sum_g q_g loss_g with the moved q (no gradient through q). q starts
  uniform. eta is the traced hyperparameter "dro_step" (the repository's default 0.01), C the
  static `adjustment` (default 0) over the group's training count n_g.
* **LfF, "Learning from Failure"** (Nam, Cha, Ahn, Lee, Shin, NeurIPS 2020; alinlab/LfF,
  `train.py`): a unit of K = 2 members trained on the same batches: member 0, the biased model,
  minimises GCE; member 1, the debiased model, minimises cross-entropy weighted per example by the
  relative difficulty W = l_b / (l_b + l_d + 1e-8), where l_b, l_d are the two models'
  per-example cross-entropies averaged over updates (EMA with `ema_alpha`, the repository's
  update rule: l <- alpha l + (1 - alpha * seen) ce), each divided by its class's largest average.
  GCE's q is the traced hyperparameter "lff_q" (default 0.7).

Both rules take the unweighted per-row losses (example weights are not applied) and average over
the real rows of the batch (padded rows carry no weight), as the engine's data loss does.
docs/mitigation.md lists every difference from the papers' code.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from sbjax.train.data import TrainData
from sbjax.train.objective import Context, LossRule, Objective
from sbjax.validate import check_int, check_range


def gce_loss(logits: jax.Array, y: jax.Array, q: jax.Array | float) -> jax.Array:
    """Generalized cross-entropy (Zhang & Sabuncu 2018) per row: (1 - p_y^q) / q, float32 [B].

    Its gradient is p_y^q times the cross-entropy's, so easy rows (p_y near 1) dominate. (LfF's
    repository trains with ce * q * p_y^q, detached weight: the same gradient times q.)
    """
    p_y = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), y[:, None], axis=-1)[:, 0]
    return (1.0 - p_y**q) / q


def group_losses(data_loss: jax.Array, groups: jax.Array, valid: jax.Array, n_groups: int):
    """(mean loss per group [..., G], real rows per group [G]) of a batch; 0 for absent groups.

    Args:
      data_loss: float32 [..., B] per-row losses; groups: int32 [B]; valid: float32 [B].
    """
    onehot = (groups[:, None] == jnp.arange(n_groups)).astype(jnp.float32) * valid[:, None]
    counts = jnp.sum(onehot, axis=0)
    return (data_loss @ onehot) / jnp.where(counts == 0, 1.0, counts), counts


def dro_weights(q: jax.Array, losses: jax.Array, step: jax.Array | float) -> jax.Array:
    """One exponentiated-gradient step of the group weights: q exp(step * losses), normalised."""
    q = q * jnp.exp(step * losses)
    return q / jnp.sum(q, axis=-1, keepdims=True)


def group_dro(n_groups: int, step_size: float = 0.01, adjustment: float = 0.0) -> Objective:
    """Group DRO as an `Objective` (pass `groups` to the sweep; every member has its own q).

    Args:
      n_groups: G, groups are 0..G-1 (`sbjax.data.groups.spurious_groups` gives 4).
      step_size: default of the traced hyperparameter "dro_step" (eta).
      adjustment: C of the generalization adjustment C / sqrt(n_g) (0: none).
    """
    check_int("n_groups", n_groups, min_value=1)
    check_range("step_size", step_size, 0.0, None)
    check_range("adjustment", adjustment, 0.0, None)

    def init(data: TrainData, k: int):
        return {"q": jnp.full((k, n_groups), 1.0 / n_groups, jnp.float32)}

    def fn(ctx: Context, state, data: TrainData):
        losses, _ = group_losses(ctx.data_loss, ctx.groups, ctx.valid, n_groups)  # [K, G]
        adjusted = jax.lax.stop_gradient(losses)
        if adjustment:
            n_g = jnp.sum(data.groups[:, None] == jnp.arange(n_groups), axis=0)
            adjusted = adjusted + adjustment / jnp.sqrt(jnp.maximum(n_g, 1).astype(jnp.float32))
        q = dro_weights(state["q"], adjusted, ctx.hp["dro_step"])
        return jnp.sum(q * losses), {"q": q}

    rule = LossRule(
        "group_dro",
        fn,
        init,
        hparams=("dro_step",),
        defaults=(("dro_step", float(step_size)),),
        needs_groups=True,
        n_groups=int(n_groups),
    )
    return Objective(loss_rule=rule)


def relative_difficulty(
    ema_b: jax.Array, ema_d: jax.Array, y_all: jax.Array, idx: jax.Array
) -> jax.Array:
    """LfF's weights W [B] of rows `idx`: class-normalised l_b / (l_b + l_d + 1e-8).

    Args:
      ema_b, ema_d: float32 [N] the averaged losses of the biased / debiased model.
      y_all: int32 [N] labels of the training set (the class maxima run over all of it).
    """
    y = y_all[idx]
    lb, ld = ema_b[idx], ema_d[idx]
    for c in (0, 1):
        in_c = y_all == c
        max_b = jnp.max(jnp.where(in_c, ema_b, -jnp.inf))
        max_d = jnp.max(jnp.where(in_c, ema_d, -jnp.inf))
        # A class whose averages are all 0 (a perfectly fit class) keeps its raw values.
        lb = jnp.where(y == c, lb / jnp.where(max_b > 0, max_b, 1.0), lb)
        ld = jnp.where(y == c, ld / jnp.where(max_d > 0, max_d, 1.0), ld)
    return lb / (lb + ld + 1e-8)


def lff(q: float = 0.7, ema_alpha: float = 0.7) -> Objective:
    """LfF as an `Objective` for a unit of K = 2 (`unit_size=2`): member 0 biased, member 1 the
    debiased model that is reported.

    Args:
      q: default of the traced GCE exponent "lff_q".
      ema_alpha: the per-example loss average's factor (static).
    """
    check_range("q", q, 0.0, 1.0, lo_open=True)
    check_range("ema_alpha", ema_alpha, 0.0, 1.0, hi_open=True)

    def init(data: TrainData, k: int):
        n = data.y.shape[0]
        return {"ema": jnp.zeros((k, n), jnp.float32), "seen": jnp.zeros((n,), jnp.float32)}

    def fn(ctx: Context, state, data: TrainData):
        n = data.y.shape[0]
        ce = optax.softmax_cross_entropy_with_integer_labels(ctx.logits, ctx.y[None])  # [2, B]
        fixed = jax.lax.stop_gradient(ce)
        seen = state["seen"][ctx.idx]
        new = ema_alpha * state["ema"][:, ctx.idx] + (1.0 - ema_alpha * seen) * fixed
        # Padded rows repeat a real row's index: they write nowhere (index n is dropped).
        rows = jnp.where(ctx.valid > 0, ctx.idx, n)
        ema = state["ema"].at[:, rows].set(new, mode="drop")
        seen_all = state["seen"].at[rows].set(1.0, mode="drop")
        w = relative_difficulty(ema[0], ema[1], data.y, ctx.idx)
        loss_b = ctx.batch_mean(gce_loss(ctx.logits[0], ctx.y, ctx.hp["lff_q"]))
        loss_d = ctx.batch_mean(ce[1] * w)
        return loss_b + loss_d, {"ema": ema, "seen": seen_all}

    rule = LossRule(
        "lff", fn, init, hparams=("lff_q",), defaults=(("lff_q", float(q)),), unit_size=2
    )
    return Objective(loss_rule=rule)
