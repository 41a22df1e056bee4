"""Worst-group accuracy, the group-robustness literature's headline metric, vectorized over models."""

from __future__ import annotations

from typing import Any

import numpy as np

from sbjax.validate import fail


def group_accuracies(predictions: Any, y: Any, groups: Any, n_groups: int) -> np.ndarray:
    """Accuracy of each model on each group, float64 [M, G] (NaN for a group with no rows).

    Args:
      predictions: int [M, N] (or [N]) predicted labels; y: int [N] labels; groups: int [N].
    """
    pred = np.asarray(predictions)
    pred = pred[None] if pred.ndim == 1 else pred
    y, g = np.asarray(y), np.asarray(groups)
    if pred.ndim != 2 or y.shape != (pred.shape[1],) or g.shape != y.shape:
        fail(
            "predictions",
            (pred.shape, y.shape, g.shape),
            "predictions [M, N] with labels [N] and groups [N]",
        )
    if g.size and (g.min() < 0 or g.max() >= n_groups):
        fail("groups", (int(g.min()), int(g.max())), f"group indices in [0, {n_groups})")
    correct = (pred == y[None]).astype(np.float64)
    out = np.full((pred.shape[0], n_groups), np.nan)
    for k in range(n_groups):
        rows = g == k
        if rows.any():
            out[:, k] = correct[:, rows].mean(axis=1)
    return out


def worst_group_accuracy(predictions: Any, y: Any, groups: Any, n_groups: int) -> np.ndarray:
    """float64 [M]: each model's lowest accuracy over the groups that have rows."""
    acc = group_accuracies(predictions, y, groups, n_groups)
    if np.isnan(acc).all():
        fail("groups", "<no rows>", "at least one row")
    return np.nanmin(acc, axis=1)
