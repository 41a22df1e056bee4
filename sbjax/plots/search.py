"""Figures of the searches behind the paper's open gaps (issue #22).

* `search_grid` -- one panel per group (an architecture, a data set), one column of points per
  searched setting (a recipe, an (n_train, lr) pair): every seed's value of each metric, hollow
  where that seed did not converge, and the mean of the converged seeds as a bar.
* `ensemble_gain_curve` -- App. E.1: the ensemble's gain over its own members against the
  training-set size, one line per ensemble size with its 95 % t-interval over seeds, the paper's
  +15 / +20 points as reference lines; beside it the single models' test accuracy (every seed)
  against the size, with the paper's ~75 % band.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from sbjax.plots.paper import finish_figure
from sbjax.plots.registry import figure_kind
from sbjax.validate import fail

__all__ = ["ensemble_gain_curve", "search_grid"]

_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


@figure_kind
def search_grid(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike | None = None,
    *,
    metrics: Sequence[str] = ("test_acc", "s_rand_auc", "sc_rand_auc"),
    title: str | None = None,
) -> Figure:
    """Every seed of every searched setting.

    Args:
        rows: one per setting: {"group": panel name, "label": tick label, "per_seed": {metric:
            [S] values}, "converged": [S] 1.0 / 0.0}.
        path: PNG path or None.
        metrics: the per-seed metrics to draw (one colour each, side by side per setting).
        title: figure title.
    """
    if not rows:
        fail("rows", rows, "a non-empty sequence of searched settings")
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row["group"]), []).append(row)
    width = max(len(g) for g in groups.values())
    fig = Figure(figsize=(max(5.0, 1.3 * width + 1.5), 3.4 * len(groups)), layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    offsets = np.linspace(-0.25, 0.25, len(metrics)) if len(metrics) > 1 else np.zeros(1)
    for ax, (name, grows) in zip(axes, groups.items(), strict=True):
        for j, metric in enumerate(metrics):
            color = _COLORS[j % len(_COLORS)]
            for i, row in enumerate(grows):
                vals = np.asarray(row["per_seed"].get(metric, []), np.float64)
                ok = np.asarray(row.get("converged", np.ones(vals.size)), np.float64) > 0
                x = np.full(vals.size, i + offsets[j])
                ax.scatter(x[ok], vals[ok], color=color, s=22, label=metric if i == 0 else None)
                ax.scatter(x[~ok], vals[~ok], facecolors="none", edgecolors=color, s=22)
                if ok.any():
                    m = float(np.nanmean(vals[ok]))
                    ax.hlines(m, i + offsets[j] - 0.08, i + offsets[j] + 0.08, color=color)
        ax.axhline(0.5, color="0.6", lw=0.8, ls=":")
        ax.set_xticks(range(len(grows)))
        ax.set_xticklabels([str(r["label"]) for r in grows], rotation=20, ha="right", fontsize=8)
        ax.set_ylim(0.4, 1.03)
        ax.set_title(name)
        ax.legend(fontsize=7, loc="center right")
    return finish_figure(fig, path, title)


@figure_kind
def ensemble_gain_curve(
    curves: Mapping[str, Mapping[str, Any]],
    singles: Mapping[str, Any],
    path: str | os.PathLike | None = None,
    *,
    paper_gain: Mapping[str, float] | None = None,
    title: str | None = None,
) -> Figure:
    """Ensemble gain and single-model accuracy against the training-set size.

    Args:
        curves: "<k>, <aggregation>" -> {"n_train": [N], "mean": [N], "lo": [N], "hi": [N]}
            (the gain over the ensemble's own members; None where no ensemble counts).
        singles: {"n_train": [N], "per_seed": [N][S] single-model test accuracies (None: a failed
            model)}.
        path: PNG path or None.
        paper_gain: "<k>" -> the paper's gain (reference lines).
        title: figure title.
    """
    if not curves:
        fail("curves", curves, "a non-empty mapping of ensemble curves")
    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    ax_g, ax_s = fig.subplots(1, 2)
    sizes = sorted({name.split(" ")[0] for name in curves}, key=lambda t: (len(t), t))
    for i, (name, c) in enumerate(curves.items()):
        xs = np.asarray(c["n_train"], np.float64)
        mean = np.asarray([np.nan if v is None else v for v in c["mean"]], np.float64)
        lo = np.asarray([np.nan if v is None else v for v in c["lo"]], np.float64)
        hi = np.asarray([np.nan if v is None else v for v in c["hi"]], np.float64)
        # colour = ensemble size ("<k> members, ..."), line style = aggregation
        style = "-" if "logits" in name else "--"
        color = _COLORS[sizes.index(name.split(" ")[0]) % len(_COLORS)]
        ax_g.errorbar(
            xs * (1 + 0.01 * (i - len(curves) / 2)),
            mean,
            yerr=[mean - lo, hi - mean],
            ls=style,
            marker="o",
            ms=4,
            capsize=3,
            color=color,
            label=name,
        )
    for k, v in (paper_gain or {}).items():
        ax_g.axhline(v, color="0.5", ls=":", lw=1)
        ax_g.annotate(f"paper, k = {k}", (0.01, v), xycoords=("axes fraction", "data"), fontsize=7)
    ax_g.axhline(0.0, color="0.7", lw=0.8)
    ax_g.set_xlabel("training points (n_train)")
    ax_g.set_ylabel("ensemble acc. - its members' mean")
    ax_g.legend(fontsize=7)
    ax_g.set_title("gain, mean and 95 % t-interval over seeds", fontsize=9)
    xs = np.asarray(singles["n_train"], np.float64)
    for x, vals in zip(xs, singles["per_seed"], strict=True):
        v = np.asarray([np.nan if a is None else a for a in vals], np.float64)
        ax_s.scatter(np.full(v.size, x), v, s=10, color=_COLORS[0], alpha=0.6)
        if np.isfinite(v).any():
            ax_s.hlines(np.nanmean(v), x * 0.97, x * 1.03, color="k")
    ax_s.axhspan(0.70, 0.80, color="0.85", zorder=0, label="paper ~75 % (band 0.70-0.80)")
    ax_s.set_xlabel("training points (n_train)")
    ax_s.set_ylabel("single-model test accuracy")
    ax_s.set_title("every member (bar: mean)", fontsize=9)
    ax_s.legend(fontsize=7)
    return finish_figure(fig, path, title)
