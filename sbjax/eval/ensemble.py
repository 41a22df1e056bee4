"""Ensembles as models: every metric of `sbjax.eval` applies to an ensemble as to a single model.

An ensemble of K members is a `logits_fn` over the members' variables stacked along a member axis
[K, ...]; a stack of E ensembles is therefore variables [E, K, ...] and any stacked function
(`evaluate`, `randomization_report`, `pgd_attack`, `svd_uap`, ...) returns [E, ...] results:

    from sbjax.eval import ensemble_logits_fn, group_members, evaluate
    ens = ensemble_logits_fn(model.logits, aggregation="logits")
    groups = group_members(result.best_params, n_members=3)     # [M, ...] -> [M // 3, 3, ...]
    evaluate(ens, groups, x_test, y_test)["roc_auc"]             # [M // 3]

Aggregations (REFERENCE 6):

* `"logits"` (default, the reference nb04): the plain mean of the members' raw logits.
* `"probs"`: the mean of the members' softmax probabilities, returned as log-probabilities
  `log(mean_k softmax(l_k))` (computed with logsumexp), which are valid logits: argmax and the score
  `logit1 - logit0 = log(p1 / p0)` keep their meaning, and gradients (PGD, UAPs) flow through it.

Failed members: an ensemble is only as sound as its members. `ensemble_stop_reasons` turns the
members' stop reasons (`SweepResult.stop_reason`) into one per ensemble -- "diverged" if any member
diverged, else "max_steps" if any member ran out of budget, else "converged" -- so a record of
ensembles can exclude every ensemble with a failed member (`experiments.common.Run.add_result`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbjax.eval.checks import check_logits_fn, num_models
from sbjax.eval.metrics import LogitsFn
from sbjax.validate import check_choice, check_int, fail

AGGREGATIONS = ("logits", "probs")

__all__ = [
    "AGGREGATIONS",
    "EnsembleLogits",
    "aggregate_logits",
    "ensemble_logits_fn",
    "ensemble_stop_reasons",
    "worst_stop_reason",
    "group_members",
]

# Member stop reasons (`sbjax.train.SweepResult.stop_reason`), worst first: an ensemble takes the
# worst reason of its members.
_STOP_ORDER = ("diverged", "max_steps", "converged")


@dataclasses.dataclass(frozen=True)
class EnsembleLogits:
    """`logits_fn` of an ensemble: `(member_variables [K, ...], x [n, ...]) -> logits [n, 2]`.

    Frozen and hashable (equal for equal `logits_fn` and `aggregation`), so it can be a static
    argument of `jit` like any other `logits_fn` and is compiled once.

    Attributes:
        logits_fn: one member's `logits_fn(variables, x) -> [n, 2]`.
        aggregation: "logits" (mean of raw logits, reference) or "probs" (mean probability,
            returned as log-probabilities).
    """

    logits_fn: LogitsFn
    aggregation: str = "logits"

    def __call__(self, member_variables: Any, x: jax.Array) -> jax.Array:
        member_logits = jax.vmap(self.logits_fn, in_axes=(0, None))(member_variables, x)
        return aggregate_logits(member_logits, self.aggregation)


def aggregate_logits(member_logits: jax.Array, aggregation: str = "logits") -> jax.Array:
    """Combines member logits [..., K, n, C] into ensemble logits [..., n, C].

    Args:
        member_logits: logits of K members (member axis third from last).
        aggregation: "logits" (mean of raw logits) or "probs" (log of the mean softmax).

    Returns:
        float32 [..., n, C].
    """
    check_choice("aggregation", aggregation, AGGREGATIONS)
    lg = jnp.asarray(member_logits, jnp.float32)
    if aggregation == "logits":
        return jnp.mean(lg, axis=-3)
    k = lg.shape[-3]
    logp = jax.nn.log_softmax(lg, axis=-1)
    return jax.nn.logsumexp(logp, axis=-3) - jnp.log(jnp.float32(k))


def ensemble_logits_fn(logits_fn: LogitsFn, aggregation: str = "logits") -> EnsembleLogits:
    """Wraps one member's `logits_fn` into an ensemble `logits_fn` over stacked members.

    Args:
        logits_fn: `logits_fn(variables, x) -> [n, 2]` of one member.
        aggregation: "logits" (default, reference nb04) or "probs".

    Returns:
        An `EnsembleLogits`; pass ensembles stacked as [E, K, ...] wherever a stack of models
        [M, ...] is expected.
    """
    check_logits_fn(logits_fn)
    check_choice("aggregation", aggregation, AGGREGATIONS)
    return EnsembleLogits(logits_fn, aggregation)


def group_members(
    variables: Any, n_members: int, *, n_ensembles: int | None = None, drop_remainder: bool = False
) -> Any:
    """Reshapes a stack of M models [M, ...] into ensembles [E, K, ...] of consecutive models.

    Ensemble e holds models e K, ..., e K + K - 1 (with seed-major sweeps, order the models so
    that the ones to combine are adjacent first, e.g. by selecting one grid point).

    Args:
        variables: stacked variables [M, ...].
        n_members: K, members per ensemble.
        n_ensembles: E (default M // K).
        drop_remainder: allow M > E K and drop the trailing models (otherwise an error).

    Returns:
        Variables stacked [E, K, ...].
    """
    m = num_models(variables)
    check_int("n_members", n_members, min_value=1)
    e = m // n_members if n_ensembles is None else n_ensembles
    check_int("n_ensembles", e, min_value=1)
    if e * n_members > m or (e * n_members < m and not drop_remainder):
        fail(
            "n_members",
            n_members,
            f"a grouping of the {m} models (n_ensembles * n_members = {e * n_members}; set "
            "drop_remainder=True to drop trailing models)",
        )
    used = e * n_members
    return jax.tree.map(
        lambda a: jnp.reshape(jnp.asarray(a)[:used], (e, n_members, *np.shape(a)[1:])), variables
    )


def ensemble_stop_reasons(stop_reason: Any, n_members: int, size: int | None = None) -> list[str]:
    """Stop reason of each ensemble, from its members' (a failed member fails its ensemble).

    Members are grouped as `group_members` groups variables: ensemble e holds models
    e K, ..., e K + K - 1 of a seed-major sweep, of which the first `size` form the ensemble
    (ensembles of members 0..size-1, as in `experiments.ensembles`).

    Args:
        stop_reason: the members' stop reasons, M = E K strings "converged" | "diverged" |
            "max_steps" (or a `SweepResult`, whose `stop_reason` is used).
        n_members: K, members per seed.
        size: members 0..size-1 of each group form the ensemble (default K).

    Returns:
        E strings: "diverged" if any of the ensemble's members diverged, else "max_steps" if any
        ran out of budget, else "converged". Pass them as `status=` to
        `experiments.common.Run.add_result`, which excludes diverged ensembles (and, with
        `require_converged=True`, unconverged ones) from every mean.
    """
    reasons = list(getattr(stop_reason, "stop_reason", stop_reason))
    check_int("n_members", n_members, min_value=1)
    k = n_members if size is None else size
    check_int("size", k, min_value=1)
    if k > n_members:
        fail("size", k, f"an ensemble size <= n_members = {n_members}")
    if len(reasons) % n_members:
        fail("n_members", n_members, f"a divisor of the number of members ({len(reasons)})")
    groups = [reasons[e * n_members : e * n_members + k] for e in range(len(reasons) // n_members)]
    return [worst_stop_reason(*g) for g in groups]


def worst_stop_reason(*reasons: str) -> str:
    """The worst of stop reasons ("diverged" < "max_steps" < "converged"): the status of anything
    built from several trained models (an ensemble, a two-stage method)."""
    for r in reasons:
        check_choice("stop_reason", r, _STOP_ORDER)
    return min(reasons, key=_STOP_ORDER.index)
