"""Figures of the synthetic data (Shah et al. 2020, Fig. 2 style; `python -m experiments.show_data`).

* `data_preview` -- top row: each 1-D block's two class-conditional histograms; bottom row: scatter
  plots of S (canonical coordinate 0) against one S^c coordinate (canonical coordinate 1) per
  dataset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from sbjax.plots.paper import finish_figure
from sbjax.plots.registry import figure_kind
from sbjax.validate import fail

__all__ = ["data_preview"]

CLASS_COLORS = ("tab:blue", "tab:orange")  # label 0 (paper's -1), label 1 (paper's +1)


@figure_kind
def data_preview(
    blocks: Mapping[str, Mapping[str, Any]],
    datasets: Mapping[str, Mapping[str, Any]],
    path: str | os.PathLike | None = None,
    *,
    width: float = 1.0,
    d: int | None = None,
    bins: int = 216,
    title: str | None = None,
) -> Figure:
    """Histograms of 1-D blocks over scatter plots of datasets in the canonical basis.

    Args:
        blocks: panel title -> {"x": float [n] (one canonical coordinate), "y": int [n]}.
        datasets: panel title -> {"z": float [n, >= 2] (canonical coordinates), "y": int [n]};
            column 0 (S) is drawn against column 1 (one of S^c).
        path: PNG path or None.
        width: the data width B (axis limits +-1.08 B).
        d: the datasets' dimension, named in the panel titles (None: not named).
        bins: histogram bins over [-1.08 B, 1.08 B].
        title: figure title.
    """
    if not blocks and not datasets:
        fail("blocks", blocks, "at least one block or dataset to draw")
    n_top, n_bottom = max(len(blocks), 1), max(len(datasets), 1)
    cols = int(np.lcm(n_top, n_bottom))
    fig = Figure(figsize=(15, 6.6), layout="constrained")
    gs = fig.add_gridspec(2, cols, height_ratios=[1, 1.35])
    lim = 1.08 * width
    edges = np.linspace(-lim, lim, bins + 1)
    step = cols // n_top
    for i, (name, blk) in enumerate(blocks.items()):
        ax = fig.add_subplot(gs[0, step * i : step * (i + 1)])
        x = np.asarray(blk["x"], np.float64).reshape(-1)
        y = np.asarray(blk["y"]).reshape(-1)
        top = 0.0
        for c in (0, 1):
            counts, _, _ = ax.hist(
                x[y == c],
                bins=edges,
                color=CLASS_COLORS[c],
                alpha=0.75,
                label=f"y={c} (paper {'-1' if c == 0 else '+1'})",
            )
            top = max(top, float(np.max(counts, initial=0.0)))
        ax.set_ylim(0, 1.3 * top if top > 0 else 1.0)  # head room for the legend
        ax.set_title(str(name))
        ax.set_xlim(-lim, lim)
        ax.set_yticks([])
        ax.set_xlabel("x (one canonical coordinate)")
        if i == 0:
            ax.set_ylabel("count")
            ax.legend(loc="upper center", fontsize=8, frameon=False, ncol=2)
    step = cols // n_bottom
    for i, (name, ds) in enumerate(datasets.items()):
        ax = fig.add_subplot(gs[1, step * i : step * (i + 1)])
        z = np.asarray(ds["z"], np.float64)
        y = np.asarray(ds["y"]).reshape(-1)
        for c in (0, 1):
            ax.scatter(
                z[y == c, 0],
                z[y == c, 1],
                s=3,
                color=CLASS_COLORS[c],
                alpha=0.6,
                linewidths=0,
                label=f"y={c}",
            )
        ax.set_title(
            f"{name}, d={d} (canonical basis)" if d is not None else f"{name} (canonical basis)"
        )
        ax.set_xlabel("coordinate 0 (S)")
        ax.set_ylabel("coordinate 1 (one of S^c)")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    return finish_figure(fig, path, title)
