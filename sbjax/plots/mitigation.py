"""Figures of the mitigation testbed (`python -m experiments.mitigation`).

* `mitigation_heatmap` -- methods x datasets, colour = mean S-randomized accuracy (0.5: the
  method's reported model relies on S alone; near the test accuracy: it does not need S).
* `mitigation_s_vs_sc` -- one dataset: each method's S-randomized accuracy against its
  S^c-randomized accuracy (mean +- sample std over seeds). "Uses S only" sits at (0.5, 1) and
  "uses S^c only" at (1, 0.5).
* `mitigation_vs_correlation` -- one dataset: S-randomized and worst-group accuracy of each method
  against the training correlation (mean and 95 % t-interval over seeds).
* `mitigation_delta` -- one dataset: each method's paired difference from ERM (mean and 95 %
  t-interval over seeds), one marker per selection rule; rows that are not numbers ("did not
  fit", "n/a: ceiling not reached") are named instead of drawn.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from sbjax.plots.paper import finish_figure
from sbjax.plots.registry import figure_kind
from sbjax.validate import fail

__all__ = [
    "mitigation_delta",
    "mitigation_heatmap",
    "mitigation_s_vs_sc",
    "mitigation_vs_correlation",
]


@figure_kind
def mitigation_heatmap(
    values: Sequence[Sequence[float]],
    methods: Sequence[str],
    datasets: Sequence[str],
    path: str | os.PathLike | None = None,
    *,
    metric: str = "s_rand_acc",
    title: str | None = None,
) -> Figure:
    """Heat-map of one metric, rows = methods, columns = datasets (NaN: not run / all failed).

    Args:
        values: float [n_methods, n_datasets] means.
        methods, datasets: row / column labels.
        path: PNG path or None.
        metric: the metric's name (colour-bar label).
        title: figure title.
    """
    v = np.asarray(values, np.float64).reshape(len(methods), len(datasets))
    if v.size == 0:
        fail("values", values, "a non-empty [methods, datasets] table")
    fig = Figure(
        figsize=(1.6 + 1.4 * len(datasets), 0.9 + 0.42 * len(methods)), layout="constrained"
    )
    ax = fig.subplots()
    im = ax.imshow(np.ma.masked_invalid(v), vmin=0.5, vmax=1.0, cmap="viridis", aspect="auto")
    for i in range(v.shape[0]):
        for j in range(v.shape[1]):
            text = "n/a" if not np.isfinite(v[i, j]) else f"{v[i, j]:.3f}"
            dark = np.isfinite(v[i, j]) and v[i, j] < 0.8
            ax.text(
                j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black"
            )
    ax.set_xticks(range(len(datasets)), list(datasets))
    ax.set_yticks(range(len(methods)), list(methods))
    fig.colorbar(im, ax=ax, label=f"{metric} (mean over seeds)")
    return finish_figure(fig, path, title or f"{metric}: 0.5 = relies on S only")


@figure_kind
def mitigation_s_vs_sc(
    points: Mapping[str, Sequence[float]],
    dataset: str,
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """S-randomized (x) against S^c-randomized (y) accuracy, one marker per method.

    Args:
        points: method -> [x mean, x std, y mean, y std] (std 0: one seed).
        dataset: the dataset's name (title).
        path: PNG path or None.
        title: figure title.
    """
    if not points:
        fail("points", points, "a non-empty {method: [x, x_std, y, y_std]} map")
    fig = Figure(figsize=(5.2, 4.6), layout="constrained")
    ax = fig.subplots()
    ax.plot([0.5, 1.0], [1.0, 0.5], color="gray", ls=":", lw=1)
    ax.scatter([0.5], [1.0], marker="s", color="gray")
    ax.annotate("uses S only", (0.5, 1.0), textcoords="offset points", xytext=(4, -12), fontsize=8)
    ax.scatter([1.0], [0.5], marker="s", color="gray")
    ax.annotate(
        "uses S$^c$ only", (1.0, 0.5), textcoords="offset points", xytext=(-62, 6), fontsize=8
    )
    cmap = [f"C{i}" for i in range(10)]
    for i, (m, (x, xe, y, ye)) in enumerate(points.items()):
        ax.errorbar([x], [y], xerr=[xe], yerr=[ye], fmt="o", capsize=3, color=cmap[i % 10], label=m)
    ax.set_xlim(0.45, 1.03)
    ax.set_ylim(0.45, 1.03)
    ax.set_xlabel("S-randomized accuracy")
    ax.set_ylabel("S$^c$-randomized accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    return finish_figure(
        fig, path, title or f"{dataset}: where each method sits (mean ± sample std)"
    )


@figure_kind
def mitigation_vs_correlation(
    curves: Mapping[str, Mapping[str, Sequence[Sequence[float]]]],
    correlations: Sequence[float],
    dataset: str,
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """Metrics against the training correlation, one line per method, one panel per metric.

    Args:
        curves: metric -> method -> [[mean, lo, hi] per correlation] (None / NaN: no usable
            models; lo = hi = mean: one seed).
        correlations: the x values.
        dataset: the dataset's name (title).
        path: PNG path or None.
        title: figure title.
    """
    if not curves or not correlations:
        fail("curves", curves, "a non-empty {metric: {method: [[mean, lo, hi], ...]}} map")
    fig = Figure(figsize=(4.4 * len(curves), 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(curves)))
    x = np.asarray(correlations, float)
    for ax, (metric, by_method) in zip(axes, curves.items(), strict=True):
        for i, (m, rows) in enumerate(by_method.items()):
            a = np.asarray(
                [[np.nan if v is None else v for v in (r or [None] * 3)] for r in rows], float
            )
            mean, lo, hi = a[:, 0], a[:, 1], a[:, 2]
            ax.errorbar(
                x + 0.0015 * (i - len(by_method) / 2),
                mean,
                yerr=[mean - lo, hi - mean],
                fmt="o-",
                capsize=3,
                lw=1,
                ms=4,
                color=f"C{i % 10}",
                label=m,
            )
        ax.axhline(0.5, color="gray", ls=":", lw=1)
        ax.set_xlabel("training correlation (fraction of rows whose S agrees)")
        ax.set_ylabel(metric.replace("_", " "))
        ax.invert_xaxis()
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    return finish_figure(fig, path, title or f"{dataset}: mean and 95 % t-interval over seeds")


@figure_kind
def mitigation_delta(
    rows: Sequence[Mapping],
    dataset: str,
    path: str | os.PathLike | None = None,
    *,
    metric: str = "s_rand_acc",
    title: str | None = None,
) -> Figure:
    """Forest plot of paired differences from ERM, one line per method.

    Args:
        rows: [{"method", "selection", "report", "mean", "lo", "hi"}] (lo / hi None: fewer than
            two seeds; report other than "ok": written at the method's line, nothing drawn).
        dataset: the dataset's name (title). metric: the difference's metric (axis label).
        path: PNG path or None. title: figure title.
    """
    if not rows:
        fail("rows", rows, "a non-empty list of {method, selection, report, mean, lo, hi}")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    selections = list(dict.fromkeys(r["selection"] for r in rows))
    fig = Figure(figsize=(6.4, 0.9 + 0.38 * len(methods)), layout="constrained")
    ax = fig.subplots()
    ax.axvline(0.0, color="gray", lw=1)
    for r in rows:
        y = methods.index(r["method"]) + 0.28 * (selections.index(r["selection"]) - 0.5)
        color = f"C{selections.index(r['selection']) % 10}"
        if r.get("report", "ok") != "ok" or r.get("mean") is None:
            ax.text(0.0, y, f"  {r.get('report') or 'no usable model'}", va="center", fontsize=7)
            continue
        lo = r["mean"] if r.get("lo") is None else r["lo"]
        hi = r["mean"] if r.get("hi") is None else r["hi"]
        ax.errorbar(
            [r["mean"]], [y], xerr=[[r["mean"] - lo], [hi - r["mean"]]], fmt="o", capsize=3,
            color=color, ms=4,
        )  # fmt: skip
    for i, sel in enumerate(selections):
        ax.plot([], [], "o", color=f"C{i % 10}", label=f"selected by {sel}")
    ax.set_yticks(range(len(methods)), methods)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric.replace('_', ' ')} minus ERM's (paired over seeds)")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=7, loc="best")
    return finish_figure(fig, path, title or f"{dataset}: difference from ERM, 95 % t-interval")
