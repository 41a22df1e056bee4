"""Figures of `experiments.robustness_of_sb` (Shah et al. 2020, App. C Tables 6-9, Fig. 5).

* `randomized_auc_tables` -- Tables 6-9 as heat maps of S- and S^c-randomized AUC (mean ± sample
  std over the seeds that did not fail), one row of two panels per table / dataset / model.
* `complex_first_init` -- Fig. 5: MS-7 accuracy of the alpha-mixed init M_alpha (a) and the
  randomized AUCs after training M_alpha on LMS-7 (b), against alpha.

Both draw from plain data: summary records (dicts as in summary.json) and lists of numbers.
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

# (part, title, row field, column field, record filter field, filter values)
_PANELS = (
    ("table6", "Table 6, {v}, (100,2)-FCN", "activation", "optimizer", "dataset", ("lms7", "ms57")),
    (
        "table7",
        "Table 7, lms7, {v}",
        "dropout",
        "weight_decay",
        "model",
        ("fcn_100x1", "fcn_100x2"),
    ),
    ("table8", "Table 8, lms7, (100,1)-FCN", "d", "n_complex", None, (None,)),
    ("table9", "Table 9, lms7, (100,1)-FCN", "init", "init_scale", None, (None,)),
)


def _grid_of(records: Sequence[Mapping[str, Any]], row_key: str, col_key: str, metric: str):
    rows = list(dict.fromkeys(r[row_key] for r in records))
    cols = list(dict.fromkeys(r[col_key] for r in records))
    mean = np.full((len(rows), len(cols)), np.nan)
    std = np.full_like(mean, np.nan)
    failed = np.zeros(mean.shape, bool)
    for r in records:
        i, j = rows.index(r[row_key]), cols.index(r[col_key])
        st = r["metrics"][metric]
        # mean None: every model of the cell failed; std None: one seed left.
        mean[i, j] = np.nan if st["mean"] is None else st["mean"]
        std[i, j] = np.nan if st["std"] is None else st["std"]
        failed[i, j] = r.get("status") == "all models failed"
    return mean, std, [str(v) for v in rows], [str(v) for v in cols], failed


def _heatmap(ax, values, stds, rows, cols, title, failed, vmin=0.4, vmax=1.0):
    im = ax.imshow(values, vmin=vmin, vmax=vmax, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(values[i, j]):
                sd = f"±{stds[i, j]:.3f}" if np.isfinite(stds[i, j]) else "(1 seed)"
                ax.text(
                    j,
                    i,
                    f"{values[i, j]:.3f}\n{sd}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="w" if values[i, j] < 0.75 else "k",
                )
            elif failed[i, j]:
                ax.text(j, i, "all\nfailed", ha="center", va="center", fontsize=7, color="r")
    ax.set_title(title, fontsize=9)
    return im


@figure_kind
def randomized_auc_tables(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike | None = None,
    *,
    metrics: Sequence[str] = ("s_rand_auc", "sc_rand_auc"),
    title: str | None = None,
) -> Figure:
    """Tables 6-9 as heat maps: per table (and dataset / model) one row of panels, one panel per
    metric; cells are mean ± sample std over the seeds that did not fail ("all failed" where
    none is left, "(1 seed)" where one is).

    Args:
        records: summary records with "part" (table6 ... table9), the table's row / column
            fields (activation x optimizer, dropout x weight_decay, d x n_complex, init x
            init_scale) and "metrics" {name: {"mean", "std"}}.
        path: PNG path or None.
        metrics: the metrics drawn (one panel column each).
        title: figure title.
    """
    panels = []
    for part, ptitle, rk, ck, fk, fvals in _PANELS:
        for v in fvals:
            recs = [r for r in records if r.get("part") == part and (fk is None or r[fk] == v)]
            if recs:
                panels.append((ptitle.format(v=v), recs, rk, ck))
    if not panels:
        fail("records", len(records), "records of table6 ... table9")
    fig = Figure(figsize=(4.5 * len(metrics), 2.6 * len(panels)), layout="constrained")
    axes = fig.subplots(len(panels), len(metrics), squeeze=False)
    for (ptitle, recs, rk, ck), ax_row in zip(panels, axes, strict=True):
        for metric, ax in zip(metrics, ax_row, strict=True):
            mean, std, rows, cols, failed = _grid_of(recs, rk, ck, metric)
            _heatmap(
                ax,
                mean,
                std,
                rows,
                cols,
                f"{ptitle}\n{metric} (mean±std over seeds that did not fail)",
                failed,
            )
            ax.set_ylabel(rk)
            ax.set_xlabel(ck)
    return finish_figure(fig, path, title)


def _mean_std_rows(rows: Sequence[Any]) -> np.ndarray:
    """[mean, std] per alpha; mean None (all failed) -> NaN, std None (one seed) -> 0."""
    return np.asarray(
        [[np.nan if mu is None else mu, 0.0 if sd is None else sd] for mu, sd in rows], np.float64
    ).reshape(-1, 2)


@figure_kind
def complex_first_init(
    curves: Mapping[str, Any],
    path: str | os.PathLike | None = None,
    *,
    linear_coord: int | None = None,
    title: str | None = None,
) -> Figure:
    """Fig. 5 (App. C.7): (a) MS-7 test accuracy of M_alpha at init; (b) standard, S- and
    S^c-randomized AUC after training M_alpha on LMS-7; both against alpha.

    Args:
        curves: {"alpha": [A], "init_ms7_acc" | "s_rand_auc" | "sc_rand_auc" | "test_auc":
            [[mean, std], ...] per alpha (None where all models failed / one seed)}.
        path: PNG path or None.
        linear_coord: the canonical coordinate holding the linear feature (legend).
        title: figure title.
    """
    a = np.asarray(curves["alpha"], np.float64)
    if a.size == 0:
        fail("curves.alpha", curves["alpha"], "at least one alpha")
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    ax0, ax1 = fig.subplots(1, 2)
    m = _mean_std_rows(curves["init_ms7_acc"])
    ax0.errorbar(a, m[:, 0], m[:, 1], marker="o")
    ax0.set(
        xlabel="alpha",
        ylabel="MS-7 test accuracy of M_alpha (at init)",
        title="Fig. 5(a): alpha-mixed init",
        ylim=(0.4, 1.02),
    )
    lin = "" if linear_coord is None else f" (linear coord {linear_coord})"
    for (k, lab), (marker, ls) in zip(
        (
            ("s_rand_auc", f"S-randomized{lin}"),
            ("sc_rand_auc", "S^c-randomized (7-slabs)"),
            ("test_auc", "standard"),
        ),
        (("o", "-"), ("s", "--"), ("^", ":")),
        strict=True,
    ):
        m = _mean_std_rows(curves[k])
        # A small x offset per curve keeps coinciding curves (S^c-randomized and standard AUC)
        # visible.
        off = {"s_rand_auc": -0.008, "sc_rand_auc": 0.0, "test_auc": 0.008}[k]
        ax1.errorbar(a + off, m[:, 0], m[:, 1], marker=marker, ls=ls, label=lab, capsize=3)
    ax1.axhline(0.5, color="gray", lw=0.8, ls=":")
    ax1.set(
        xlabel="alpha",
        ylabel="AUC after training on LMS-7",
        title="Fig. 5(b): reliance after training",
        ylim=(0.4, 1.02),
    )
    ax1.legend(fontsize=8)
    for ax in (ax0, ax1):
        ax.set_xlim(-0.05, 1.05)
    return finish_figure(fig, path, title)
