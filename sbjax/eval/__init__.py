"""Evaluation: accuracy, AUC, randomized metrics, attacks, UAPs, ensembles, boundaries.

Every function takes `logits_fn(variables, x) -> logits [n, 2]` for ONE model and variables stacked
along a leading model axis [M, ...], and returns per-model results [M, ...] from one compiled
`jit(vmap(...))` call. Score = logit1 - logit0. S / S^c operations happen in the canonical basis
(`z = x @ W.T`, `x = z @ W`).
"""

from sbjax.eval.attacks import (
    ATTACK_NORMS,
    FRACTION_KINDS,
    STEP_SCHEDULES,
    PGDResult,
    budget_fraction,
    data_bounds,
    mean_budget_fraction,
    pgd_attack,
    pgd_perturb,
)
from sbjax.eval.metrics import (
    AUC_KINDS,
    accuracy,
    accuracy_from_logits,
    auc,
    evaluate,
    ks_statistic,
    map_models,
    metrics_from_logits,
    num_models,
    pr_auc,
    pr_auc_from_scores,
    roc_auc,
    roc_auc_from_scores,
    score_from_logits,
    stacked_logits,
)
from sbjax.eval.randomize import (
    RANDOMIZE_MODES,
    Basis,
    as_basis,
    image_basis,
    per_coordinate_randomized,
    randomization_report,
    randomize_block,
    randomized_logits,
    randomized_metrics,
    reliance_summary,
)

__all__ = [
    "ATTACK_NORMS",
    "FRACTION_KINDS",
    "STEP_SCHEDULES",
    "PGDResult",
    "budget_fraction",
    "data_bounds",
    "mean_budget_fraction",
    "pgd_attack",
    "pgd_perturb",
    "RANDOMIZE_MODES",
    "Basis",
    "as_basis",
    "image_basis",
    "per_coordinate_randomized",
    "randomization_report",
    "randomize_block",
    "randomized_logits",
    "randomized_metrics",
    "reliance_summary",
    "AUC_KINDS",
    "accuracy",
    "accuracy_from_logits",
    "auc",
    "evaluate",
    "ks_statistic",
    "map_models",
    "metrics_from_logits",
    "num_models",
    "pr_auc",
    "pr_auc_from_scores",
    "roc_auc",
    "roc_auc_from_scores",
    "score_from_logits",
    "stacked_logits",
]
