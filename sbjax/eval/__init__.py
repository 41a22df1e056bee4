"""Evaluation: accuracy, AUC, randomized metrics, attacks, UAPs, ensembles, boundaries.

Every function takes `logits_fn(variables, x) -> logits [n, 2]` for ONE model (the probe and LD-SB,
which look inside the network, take the `Model` or a features / first-layer function) and variables
stacked along a leading model axis [M, ...], and returns per-model results [M, ...] from one compiled
`jit(vmap(...))` call. Functions with randomness (randomized metrics, decision boundaries) take
`key` as ONE key shared by the models (paired draws) or as keys [M], one per model, vmapped with
the variables (independent draws; model i's result equals a call on model i alone with `key[i]`;
see `check_model_keys`). Score = logit1 - logit0. S / S^c operations happen in the canonical basis
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
    pgd_accuracy,
    pgd_attack,
    pgd_perturb,
)
from sbjax.eval.boundary import (
    BOUNDARY_FILLS,
    BoundaryGrid,
    boundary_projection,
    most_influential,
)
from sbjax.eval.ensemble import (
    AGGREGATIONS,
    EnsembleLogits,
    aggregate_logits,
    ensemble_logits_fn,
    group_members,
)
from sbjax.eval.ldsb import DEFAULT_LDSB_THRESHOLD, ldsb_projection, ldsb_report
from sbjax.eval.metrics import (
    AUC_KINDS,
    accuracy,
    accuracy_from_logits,
    auc,
    check_model_keys,
    evaluate,
    fold_in_keys,
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
from sbjax.eval.probe import (
    DEFAULT_L2_GRID,
    PROBE_SELECTION,
    LogisticFit,
    fit_logistic,
    last_layer_probe,
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
from sbjax.eval.subspace_margin import subspace_basis, subspace_margins
from sbjax.eval.uap import (
    UAP_KINDS,
    apply_uap,
    as_uap,
    svd_uap,
    uap_accuracy,
    uap_report,
    uap_transfer_matrix,
    uap_transfer_matrix_multi,
)

__all__ = [
    "AGGREGATIONS",
    "BOUNDARY_FILLS",
    "BoundaryGrid",
    "EnsembleLogits",
    "aggregate_logits",
    "boundary_projection",
    "ensemble_logits_fn",
    "group_members",
    "most_influential",
    "UAP_KINDS",
    "apply_uap",
    "as_uap",
    "svd_uap",
    "uap_accuracy",
    "uap_report",
    "uap_transfer_matrix",
    "uap_transfer_matrix_multi",
    "ATTACK_NORMS",
    "FRACTION_KINDS",
    "STEP_SCHEDULES",
    "PGDResult",
    "budget_fraction",
    "data_bounds",
    "mean_budget_fraction",
    "pgd_accuracy",
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
    "check_model_keys",
    "evaluate",
    "fold_in_keys",
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
    "DEFAULT_L2_GRID",
    "DEFAULT_LDSB_THRESHOLD",
    "PROBE_SELECTION",
    "LogisticFit",
    "fit_logistic",
    "last_layer_probe",
    "ldsb_projection",
    "ldsb_report",
    "subspace_basis",
    "subspace_margins",
]
