"""Figures of adversarial training (Shah et al. 2020, App. E.2.1, Fig. 7).

* `adversarial_accuracy_vs_eps` -- Fig. 7: standard, eps-robust, S- and S^c-randomized accuracy
  against the training budget eps, one panel per model, drawn from the summary records of
  `python -m experiments.adversarial_training`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from sbjax.plots.paper import finish_figure, mean_std
from sbjax.plots.registry import figure_kind
from sbjax.validate import fail

__all__ = ["adversarial_accuracy_vs_eps"]

_SERIES = (
    ("test_acc", "standard", "o-"),
    ("robust_acc", "eps-robust (L2 PGD)", "s-"),
    ("s_rand_acc", "S-randomized (5-slabs)", "v--"),
    ("sc_rand_acc", "S$^c$-randomized (7-slabs)", "^--"),
)


@figure_kind
def adversarial_accuracy_vs_eps(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike | None = None,
    *,
    gamma_s: float | None = None,
    x_key: str = "eps",
    group_key: str = "model",
    labels: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Figure:
    """Accuracies against the training budget eps, one panel per model (paper Fig. 7).

    Args:
        records: summary records with `x_key`, `group_key` and `metrics[name]` = {"mean", "std"}
            for test_acc, robust_acc, s_rand_acc, sc_rand_acc (missing ones are skipped; mean
            None, where every model failed, is a gap; std None, one seed, no error bar).
        path: PNG path or None.
        gamma_s: draws a vertical line at gamma_S (the max margin of a classifier on S alone).
        x_key: the budget field. group_key: one panel per value of this field.
        labels: panel titles by group value (default: the value itself).
        title: figure title.
    """
    if not records:
        fail("records", records, "a non-empty sequence of result records")
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault(str(r[group_key]), []).append(r)
    fig = Figure(figsize=(max(6.5, 4.6 * len(groups)), 4.0), layout="constrained")
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (name, recs) in zip(axes, groups.items(), strict=True):
        recs = sorted(recs, key=lambda r: float(r[x_key]))
        eps = np.array([float(r[x_key]) for r in recs])
        for key, label, style in _SERIES:
            if not all(key in r["metrics"] for r in recs):
                continue
            ms = np.array([mean_std(r["metrics"][key]) for r in recs]).reshape(-1, 2)
            ax.errorbar(eps, ms[:, 0], yerr=ms[:, 1], fmt=style, capsize=3, label=label)
        if gamma_s is not None:
            ax.axvline(gamma_s, color="gray", ls=":", lw=1)
            ax.text(gamma_s, 0.42, r" $\gamma_S$", color="gray", fontsize=8)
        ax.set_ylim(0.4, 1.03)
        ax.set_xlabel("L2 training budget eps")
        ax.set_ylabel("test accuracy")
        ax.set_title((labels or {}).get(name, name))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center right")
    return finish_figure(fig, path, title)
