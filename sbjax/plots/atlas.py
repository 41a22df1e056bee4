"""Figures of the shortcut atlas (`python -m experiments.shortcut_atlas`; Hermann et al. 2024).

* `atlas_heatmap` -- Fig. 2 style: mean shortcut bias over (availability of z_s, predictivity of
  z_s), one panel per architecture, on one diverging colour scale centred at 0 (red: more reliance
  on the shortcut than the Bayes-optimal classifier).
* `atlas_depth` -- shortcut bias against ReLU depth with 95 % intervals (and the linear model's
  value as depth 0 when given).
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

__all__ = ["atlas_depth", "atlas_heatmap"]


@figure_kind
def atlas_heatmap(
    panels: Mapping[str, Any],
    predictivity: Sequence[float],
    availability: Sequence[str],
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """Mean shortcut bias per cell, one panel per architecture.

    Args:
        panels: architecture -> float [P, A] mean bias (rows: predictivity, columns: availability).
        predictivity: the P rho_s values. availability: the A availability labels.
        path: PNG path or None. title: figure title.
    """
    if not panels:
        fail("panels", panels, "a non-empty map architecture -> [P, A] mean bias")
    mats = {k: np.asarray(v, np.float64) for k, v in panels.items()}
    shape = (len(predictivity), len(availability))
    for k, v in mats.items():
        if v.shape != shape:
            fail(f"panels[{k!r}]", v.shape, f"shape {shape} (predictivity x availability)")
    vmax = max(0.05, float(np.nanmax([np.nanmax(np.abs(v)) for v in mats.values()])))
    n = len(mats)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(4.4 * cols, 3.6 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    im = None
    for ax, (name, v) in zip(axes, mats.items(), strict=False):
        im = ax.imshow(v, cmap="RdBu_r", vmin=-vmax, vmax=vmax, origin="lower", aspect="auto")
        for i in range(shape[0]):
            for j in range(shape[1]):
                if np.isfinite(v[i, j]):
                    ax.text(j, i, f"{v[i, j]:.2f}", ha="center", va="center", fontsize=7)
        ax.set_xticks(range(shape[1]), list(availability), rotation=30, fontsize=7)
        ax.set_yticks(range(shape[0]), [f"{p:g}" for p in predictivity], fontsize=7)
        ax.set_xlabel("availability of z_s", fontsize=8)
        ax.set_ylabel("predictivity of z_s (rho_s)", fontsize=8)
        ax.set_title(name, fontsize=9)
    for ax in axes[n:]:
        ax.set_visible(False)
    if im is not None:
        fig.colorbar(im, ax=axes[:n].tolist(), shrink=0.8, label="shortcut bias")
    return finish_figure(fig, path, title)


@figure_kind
def atlas_depth(
    depth: Sequence[int],
    mean: Sequence[float],
    ci95: Sequence[Sequence[float] | None],
    path: str | os.PathLike | None = None,
    *,
    linear: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> Figure:
    """Shortcut bias against ReLU depth, with 95 % intervals.

    Args:
        depth: hidden layers per point. mean: mean bias per depth. ci95: [lo, hi] per depth (or
            None). linear: optional {"mean", "ci95"} of the linear model, drawn at depth 0.
        path: PNG path or None. title: figure title.
    """
    if len(depth) != len(mean) or len(depth) != len(ci95) or not len(depth):
        fail("depth", depth, "non-empty depth, mean and ci95 lists of one length")
    fig = Figure(figsize=(5.2, 3.8), layout="constrained")
    ax = fig.subplots()
    d = np.asarray(depth, np.float64)
    m = np.asarray(mean, np.float64)
    lo = np.asarray([c[0] if c is not None else np.nan for c in ci95], np.float64)
    hi = np.asarray([c[1] if c is not None else np.nan for c in ci95], np.float64)
    ax.errorbar(d, m, yerr=[m - lo, hi - m], marker="o", capsize=4, color="tab:red", label="ReLU")
    if linear and linear.get("mean") is not None:
        ci = linear.get("ci95") or [linear["mean"]] * 2
        lm = float(linear["mean"])
        ax.errorbar(
            [0],
            [lm],
            yerr=[[lm - ci[0]], [ci[1] - lm]],
            marker="s",
            capsize=4,
            color="black",
            label="linear",
        )
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xticks(sorted({0, *d.astype(int).tolist()}) if linear else d.astype(int).tolist())
    ax.set_xlabel("hidden layers")
    ax.set_ylabel("shortcut bias")
    ax.legend(fontsize=8)
    return finish_figure(fig, path, title)
