"""The paper's figures (Shah et al. 2020, Fig. 3 and Fig. 4, plus diagnostics).

Every function takes plain arrays / dicts (what the experiments save as JSON or NPZ), draws one
`matplotlib.figure.Figure` with the Agg renderer (no pyplot, no global state, no display needed),
writes it as PNG when `path` is given (atomically: temporary file, then rename), and returns it.

* `logit_histograms` -- Fig. 3(a): score (logit1 - logit0) histograms, standard vs S-randomized vs
  S^c-randomized, for true positives and true negatives (`logit_panels` builds the panels from
  `randomization_report(..., return_scores=True)`).
* `randomized_auc_vs_sc` -- Fig. 3(b): standard / S- / S^c-randomized AUC against |S^c|.
* `decision_boundary` -- Fig. 3(c): a `BoundaryGrid` (prediction map over S and an S^c
  coordinate) with the data overlaid.
* `uap_heatmaps` -- Fig. 4: |u| / max |u| over the canonical coordinates, one row per model.
* `uap_image_heatmap` -- Fig. 4 for MNIST-CIFAR (64 x 32 x 3): per-pixel |u| and the rescaled
  perturbation, MNIST block on top.
* `coordinate_accuracy` -- coordinate-wise randomized accuracy bars (mean +- std over seeds).
* `transfer_matrix` -- UAP transfer accuracies (UAP of model i on model j).
"""

from __future__ import annotations

import io as _io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from sbjax.io import atomic_write_bytes
from sbjax.validate import fail

__all__ = [
    "coordinate_accuracy",
    "coordinate_heatmap",
    "decision_boundary",
    "logit_histograms",
    "logit_panels",
    "randomized_auc_vs_sc",
    "save_figure",
    "transfer_matrix",
    "uap_heatmaps",
    "uap_image_heatmap",
]

_LABELS = {
    "standard": "standard",
    "s_randomized": "S-randomized",
    "sc_randomized": "S$^c$-randomized",
}
_COLORS = {"standard": "tab:blue", "s_randomized": "tab:red", "sc_randomized": "tab:green"}
# (marker, line style, marker size) of the i-th metric of a line plot.
_METRIC_STYLES = (("o", "-", 9), ("s", "--", 6), ("^", ":", 5))
_METRIC_LABELS = {
    "test_auc": "standard AUC",
    "s_rand_auc": "S-randomized AUC",
    "sc_rand_auc": "S$^c$-randomized AUC",
}


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 120) -> Path:
    """Writes `fig` as PNG to `path` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def finish_figure(fig: Figure, path, title: str | None) -> Figure:
    """Adds the suptitle (if any), writes the PNG when `path` is given; returns `fig`."""
    if title:
        fig.suptitle(title)
    if path is not None:
        save_figure(fig, path)
    return fig


def _field(obj: Any, name: str) -> Any:
    """Attribute or key access (NamedTuple results and dicts loaded from JSON / NPZ alike)."""
    if isinstance(obj, Mapping):
        return obj[name]
    return getattr(obj, name)


# ----------------------------------------------------------------------------------------------
# Fig. 3(a).
# ----------------------------------------------------------------------------------------------


def logit_panels(
    scores: Mapping[str, Any], y: Any, *, model_index: int | None = 0
) -> dict[str, dict[str, np.ndarray]]:
    """Splits scores into "true positives" / "true negatives" panels for `logit_histograms`.

    Args:
        scores: {"standard", "s_randomized", "sc_randomized"} -> scores [M, n] (or [n]), e.g.
            `randomization_report(..., return_scores=True)["scores"]`.
        y: labels [n].
        model_index: which model of the stack (None: pool all models).

    Returns:
        {"true positives (y = 1)": {name: scores}, "true negatives (y = 0)": {name: scores}}.
    """
    y = np.asarray(y)
    out: dict[str, dict[str, np.ndarray]] = {}
    for label, cls in (("true positives (y = 1)", 1), ("true negatives (y = 0)", 0)):
        panel = {}
        for name, s in scores.items():
            s = np.asarray(s)
            if s.ndim == 2:
                s = s[model_index] if model_index is not None else s
            panel[name] = (s[..., y == cls]).reshape(-1)
        out[label] = panel
    return out


def logit_histograms(
    panels: Mapping[str, Mapping[str, Any]],
    path: str | os.PathLike | None = None,
    *,
    bins: int = 20,
    density: bool = True,
    ncols: int | None = None,
    title: str | None = None,
) -> Figure:
    """Overlaid score histograms per panel (paper Fig. 3a; reference: 20 bins, normalised).

    Under extreme SB the S^c-randomized histogram overlaps the standard one and the S-randomized
    one is the scores shuffled across the classes (Table 1; the Fig. 3 caption swaps the two).

    Args:
        panels: panel title -> {"standard" | "s_randomized" | "sc_randomized" | any: scores [n]}.
        path: PNG path or None.
        bins: histogram bins (shared within a panel). density: normalise each histogram.
        ncols: panels per row (None: all in one row), e.g. 2 for one row per model with its
            true-positive and true-negative panels.
        title: figure title.
    """
    if not panels:
        fail("panels", panels, "a non-empty mapping of panel title -> {name: scores}")
    ncols = len(panels) if ncols is None else max(1, min(int(ncols), len(panels)))
    nrows = -(-len(panels) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows + 0.4), layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False)
    axes = grid.reshape(-1)[: len(panels)]
    for ax in grid.reshape(-1)[len(panels) :]:
        ax.set_visible(False)
    for ax, (ptitle, series) in zip(axes, panels.items(), strict=True):
        arrays = {k: np.asarray(v, np.float64).reshape(-1) for k, v in series.items()}
        finite = np.concatenate([a[np.isfinite(a)] for a in arrays.values()] or [np.zeros(1)])
        lo, hi = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        for name, a in arrays.items():
            ax.hist(
                a[np.isfinite(a)],
                bins=edges,
                density=density,
                histtype="stepfilled",
                alpha=0.35,
                label=_LABELS.get(name, name),
                color=_COLORS.get(name),
                edgecolor=_COLORS.get(name),
            )
        ax.set_title(str(ptitle))
        ax.set_xlabel("logit$_1$ - logit$_0$")
        ax.set_ylabel("density" if density else "count")
        ax.legend(fontsize=8)
    return finish_figure(fig, path, title)


# ----------------------------------------------------------------------------------------------
# Fig. 3(b).
# ----------------------------------------------------------------------------------------------


def mean_std(value: Any) -> tuple[float, float]:
    """(mean, std) of a summary metric {"mean", "std", ...} or of per-seed values.

    A record whose models all failed (mean None) gives NaN, which plots as a gap; a single seed
    (std None) gives no error bar.
    """
    if isinstance(value, Mapping):
        if "mean" in value:
            mean, std = value["mean"], value.get("std")
            return (
                float("nan") if mean is None else float(mean),
                0.0 if std is None else float(std),
            )
        value = value["per_seed"]
    a = np.asarray(value, np.float64).reshape(-1)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return float("nan"), 0.0
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def _row_metric(row: Mapping[str, Any], name: str) -> Any:
    if name in row:
        return row[name]
    if "metrics" in row and name in row["metrics"]:
        return row["metrics"][name]
    return None


def randomized_auc_vs_sc(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike | None = None,
    *,
    metrics: Sequence[str] = ("test_auc", "s_rand_auc", "sc_rand_auc"),
    x_key: str = "n_complex",
    group_key: str | None = "dataset",
    title: str | None = None,
) -> Figure:
    """AUCs against the number of complex features |S^c| (paper Fig. 3b), mean +- std.

    Args:
        rows: records with `x_key` (|S^c|) and each metric either at top level or under
            `"metrics"`; a metric value may be a scalar, per-seed values, or a
            {"mean", "std"[, "per_seed"]} dict (the experiments' summary records).
        path: PNG path or None.
        metrics: metric names to draw (missing ones are skipped).
        x_key: the |S^c| field. group_key: one panel per value of this field (None: one panel).
        title: figure title.
    """
    if not rows:
        fail("rows", rows, "a non-empty sequence of result records")
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        g = str(row.get(group_key, "")) if group_key else ""
        groups.setdefault(g, []).append(row)
    fig = Figure(figsize=(4.2 * len(groups), 3.4), layout="constrained")
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (g, grows) in zip(axes, groups.items(), strict=True):
        grows = sorted(grows, key=lambda r: float(r[x_key]))
        xs = np.array([float(r[x_key]) for r in grows])
        drawn: dict[str, np.ndarray] = {}
        span = float(np.ptp(xs)) if xs.size > 1 and np.ptp(xs) > 0 else max(1.0, abs(xs[0]))
        for i, name in enumerate(metrics):
            vals = [_row_metric(r, name) for r in grows]
            if all(v is None for v in vals):
                continue
            ms = np.array([mean_std(v) if v is not None else (np.nan, 0.0) for v in vals])
            drawn[name] = ms[:, 0]
            # Curves that coincide (standard and S^c-randomized AUC under extreme SB) stay
            # visible: each metric has its own marker and line style and a small x offset.
            marker, ls, size = _METRIC_STYLES[i % len(_METRIC_STYLES)]
            ax.errorbar(
                xs + (i - (len(metrics) - 1) / 2) * 0.012 * span,
                ms[:, 0],
                yerr=ms[:, 1],
                marker=marker,
                ls=ls,
                markersize=size,
                markerfacecolor="none" if i == 0 else None,
                capsize=3,
                label=_METRIC_LABELS.get(name, name),
            )
        ax.axhline(0.5, color="gray", lw=0.8, ls=":")
        ax.set_ylim(0.4, 1.05)
        ax.set_xlim(xs.min() - 0.12 * span, xs.max() + 0.12 * span)
        ax.set_xticks(xs, [f"{x:g}" for x in xs])
        ax.set_xlabel("|S$^c|$ (number of complex features)")
        ax.set_ylabel("AUC")
        if g:
            ax.set_title(g)
        names = list(drawn)
        same = [
            (a, b)
            for j, a in enumerate(names)
            for b in names[j + 1 :]
            if np.all(np.abs(drawn[a] - drawn[b]) < 0.005)
        ]
        note = "; ".join(
            f"{_METRIC_LABELS.get(a, a)} = {_METRIC_LABELS.get(b, b)} (coincide)" for a, b in same
        )
        ax.legend(fontsize=7, title=note or None, title_fontsize=7)
    return finish_figure(fig, path, title)


# ----------------------------------------------------------------------------------------------
# Fig. 3(c).
# ----------------------------------------------------------------------------------------------


def decision_boundary(
    grid: Any,
    path: str | os.PathLike | None = None,
    *,
    model_index: int = 0,
    max_points: int = 4000,
    seed: int = 0,
    title: str | None = None,
) -> Figure:
    """Prediction map over (S, an S^c coordinate) with the data overlaid (paper Fig. 3c).

    Args:
        grid: a `sbjax.eval.BoundaryGrid` or a dict with its fields (c1, c2, u, v, prob, data_u,
            data_v, data_y).
        path: PNG path or None.
        model_index: which model of the stack.
        max_points: at most this many data points are overlaid (a fixed random subset).
        seed: subset seed. title: figure title.
    """
    c1 = int(np.asarray(_field(grid, "c1")))
    c2 = np.atleast_1d(np.asarray(_field(grid, "c2")))[model_index]
    u = np.asarray(_field(grid, "u"))
    v = np.atleast_2d(np.asarray(_field(grid, "v")))[model_index]
    prob = np.asarray(_field(grid, "prob"))
    prob = prob[model_index] if prob.ndim == 3 else prob
    du = np.asarray(_field(grid, "data_u"))
    dv = np.atleast_2d(np.asarray(_field(grid, "data_v")))[model_index]
    dy = np.asarray(_field(grid, "data_y"))
    fig = Figure(figsize=(4.6, 4.0), layout="constrained")
    ax = fig.subplots()
    mesh = ax.pcolormesh(
        u, v, prob, cmap="binary", vmin=0.0, vmax=1.0, alpha=0.35, shading="nearest"
    )
    if len(du) > max_points:
        idx = np.random.default_rng(seed).choice(len(du), max_points, replace=False)
        du, dv, dy = du[idx], dv[idx], dy[idx]
    for cls, color in ((0, "tab:blue"), (1, "tab:orange")):
        sel = dy == cls
        ax.scatter(
            du[sel], dv[sel], s=3, alpha=0.5, color=color, label=f"class {cls}", rasterized=True
        )
    fig.colorbar(mesh, ax=ax, label="fraction predicted class 1")
    ax.set_xlabel(f"S: canonical coordinate {c1}")
    ax.set_ylabel(f"S$^c$: canonical coordinate {int(c2)}")
    ax.legend(fontsize=8, loc="upper right", markerscale=3)
    return finish_figure(fig, path, title)


# ----------------------------------------------------------------------------------------------
# Fig. 4.
# ----------------------------------------------------------------------------------------------


def uap_heatmaps(
    uaps: Mapping[str, Any] | Any,
    path: str | os.PathLike | None = None,
    *,
    rotation: Any = None,
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """|u| / max |u| over the canonical coordinates, one row per model (paper Fig. 4).

    Args:
        uaps: name -> UAP [D], or an array [K, D] (with `labels`).
        path: PNG path or None.
        rotation: W [D, D]; when given the UAPs are in the model basis and are rotated back
            (`u @ W.T`) first; None means they are already canonical.
        labels: row labels for an array input.
        title: figure title.
    """
    if isinstance(uaps, Mapping):
        labels = [str(k) for k in uaps]
        mat = np.stack([np.asarray(v, np.float64).reshape(-1) for v in uaps.values()])
    else:
        mat = np.atleast_2d(np.asarray(uaps, np.float64))
        mat = mat.reshape(mat.shape[0], -1)
        labels = [str(i) for i in range(mat.shape[0])] if labels is None else list(labels)
    if mat.size == 0 or len(labels) != mat.shape[0]:
        fail("uaps", np.shape(mat), "one UAP per label")
    if rotation is not None:
        mat = mat @ np.asarray(rotation, np.float64).T
    mat = np.abs(mat)
    mat = mat / np.maximum(mat.max(axis=1, keepdims=True), 1e-30)
    fig = Figure(
        figsize=(max(4.0, 0.12 * mat.shape[1] + 2), 0.45 * len(labels) + 1.4), layout="constrained"
    )
    ax = fig.subplots()
    im = ax.imshow(mat, aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("canonical coordinate")
    fig.colorbar(im, ax=ax, label="|u| / max |u|")
    return finish_figure(fig, path, title)


def uap_image_heatmap(
    uap: Any,
    path: str | os.PathLike | None = None,
    *,
    split_row: int | None = 32,
    title: str | None = None,
) -> Figure:
    """A UAP of an image model: per-pixel |u| and the rescaled perturbation (paper Fig. 4).

    Args:
        uap: [H, W, C] (NHWC without batch; MNIST-CIFAR: 64 x 32 x 3, MNIST rows 0-31) or [H, W].
        path: PNG path or None.
        split_row: draw a line above this row (the MNIST / CIFAR boundary); None for none.
        title: figure title.
    """
    u = np.asarray(uap, np.float64)
    if u.ndim == 2:
        u = u[..., None]
    if u.ndim != 3:
        fail("uap.shape", np.shape(uap), "an image [H, W, C] or [H, W]")
    mag = np.sqrt((u**2).sum(-1))
    mag = mag / max(mag.max(), 1e-30)
    span = max(np.abs(u).max(), 1e-30)
    vis = 0.5 + 0.5 * u / span  # zero perturbation -> mid grey
    if vis.shape[-1] == 1:
        vis = np.repeat(vis, 3, axis=-1)
    fig = Figure(figsize=(5.0, 5.0 * u.shape[0] / (2 * u.shape[1]) + 0.8), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    im = ax1.imshow(mag, cmap="hot", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax1.set_title("|u| per pixel (normalised)", fontsize=9)
    fig.colorbar(im, ax=ax1, fraction=0.08)
    ax2.imshow(vis[..., :3], interpolation="nearest")
    ax2.set_title("u (rescaled)", fontsize=9)
    for ax in (ax1, ax2):
        if split_row is not None and 0 < split_row < u.shape[0]:
            ax.axhline(split_row - 0.5, color="cyan", lw=1.0)
        ax.set_xticks([])
        ax.set_yticks([])
    return finish_figure(fig, path, title)


# ----------------------------------------------------------------------------------------------
# Diagnostics.
# ----------------------------------------------------------------------------------------------


def coordinate_accuracy(
    values: Mapping[str, Any] | Any,
    path: str | os.PathLike | None = None,
    *,
    coords: Sequence[int] | None = None,
    highlight: Sequence[int] = (0,),
    ylabel: str = "coordinate-randomized accuracy",
    title: str | None = None,
) -> Figure:
    """Bars of coordinate-wise randomized accuracy (mean +- std over seeds) per coordinate.

    Args:
        values: name -> [C] or [M, C] (seeds x coordinates), or one such array.
        path: PNG path or None.
        coords: the coordinate of each column (default 0 .. C - 1).
        highlight: coordinates to mark (S); their tick labels are drawn in red.
        ylabel, title: labels.
    """
    if not isinstance(values, Mapping):
        values = {"": values}
    series = {k: np.atleast_2d(np.asarray(v, np.float64)) for k, v in values.items()}
    n_cols = {a.shape[-1] for a in series.values()}
    if len(n_cols) != 1:
        fail("values", sorted(n_cols), "the same number of coordinates in every series")
    c = n_cols.pop()
    cols = np.arange(c) if coords is None else np.asarray(coords)
    fig = Figure(figsize=(max(5.0, 0.22 * c * max(1, len(series)) + 2), 3.4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(series)
    pos = np.arange(c)
    for i, (name, a) in enumerate(series.items()):
        ax.bar(
            pos + (i - (len(series) - 1) / 2) * width,
            np.nanmean(a, 0),
            width,
            yerr=np.nanstd(a, 0) if a.shape[0] > 1 else None,
            label=name or None,
            capsize=1.5,
        )
    ax.axhline(0.5, color="gray", lw=0.8, ls=":")
    ax.set_xticks(pos, [str(int(t)) for t in cols], fontsize=7, rotation=90 if c > 30 else 0)
    for lbl, t in zip(ax.get_xticklabels(), cols, strict=True):
        if int(t) in set(int(h) for h in highlight):
            lbl.set_color("red")
    ax.set_xlabel("canonical coordinate")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0.0, 1.05)
    if any(series):
        ax.legend(fontsize=8)
    return finish_figure(fig, path, title)


def coordinate_heatmap(
    values: Mapping[str, Any],
    path: str | os.PathLike | None = None,
    *,
    highlight: Sequence[int] = (0,),
    max_cols: int = 60,
    label: str = "coordinate-randomized accuracy",
    title: str | None = None,
) -> Figure:
    """Coordinate-wise randomized accuracy as a heat map: one row per model, one column per
    canonical coordinate (mean over the model's seeds), S columns marked.

    Readable at any d: with more than `max_cols` coordinates only S (`highlight`) and the S^c
    coordinates with the lowest accuracy (over all rows) are drawn. Cells below 0.99 (and the S
    columns) carry their value.

    Args:
        values: row name -> [M, C] (seeds x coordinates) or [C].
        path: PNG path or None.
        highlight: the S coordinates (drawn first, labelled in red).
        max_cols: most columns drawn.
        label: colour-bar label. title: figure title.
    """
    if not values:
        fail("values", values, "a non-empty mapping of row name -> [M, C] accuracies")
    rows = {str(k): np.atleast_2d(np.asarray(v, np.float64)) for k, v in values.items()}
    n_cols = {a.shape[-1] for a in rows.values()}
    if len(n_cols) != 1:
        fail("values", sorted(n_cols), "the same number of coordinates in every row")
    c = n_cols.pop()
    mean = np.stack([np.nanmean(a, axis=0) for a in rows.values()])  # [R, C]
    hl = [int(h) for h in highlight if 0 <= int(h) < c]
    cols = np.arange(c)
    note = ""
    if c > max_cols:
        rest = np.setdiff1d(cols, hl)
        k = max(1, max_cols - len(hl))
        low = rest[np.argsort(np.nanmin(mean[:, rest], axis=0), kind="stable")[:k]]
        cols = np.concatenate([hl, np.sort(low)]).astype(int)
        note = (
            f" (S and the {len(low)} S$^c$ coordinates with the lowest accuracy of {c - len(hl)})"
        )
    mat = mean[:, cols]
    fig = Figure(
        figsize=(min(13.0, 0.2 * len(cols) + 3.0), 0.42 * len(rows) + 1.6), layout="constrained"
    )
    ax = fig.subplots()
    im = ax.imshow(mat, aspect="auto", cmap="viridis", vmin=0.4, vmax=1.0, interpolation="nearest")
    ax.set_yticks(range(len(rows)), [f"{k} (n={a.shape[0]})" for k, a in rows.items()], fontsize=8)
    ax.set_xticks(
        range(len(cols)),
        [str(int(t)) for t in cols],
        fontsize=6,
        rotation=90 if len(cols) > 30 else 0,
    )
    for lbl, t in zip(ax.get_xticklabels(), cols, strict=True):
        if int(t) in hl:
            lbl.set_color("red")
    for i in range(mat.shape[0]):
        for j, t in enumerate(cols):
            v = mat[i, j]
            if np.isfinite(v) and (v < 0.99 or int(t) in hl):
                ax.text(
                    j,
                    i,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if v < 0.75 else "black",
                )
    ax.set_xlabel("canonical coordinate" + note + "; red: S")
    fig.colorbar(im, ax=ax, label=label, fraction=0.04, pad=0.01)
    return finish_figure(fig, path, title)


def transfer_matrix(
    matrix: Any,
    labels: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
    *,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Heatmap of UAP transfer accuracies: entry (i, j) = accuracy of model j under UAP i.

    Args:
        matrix: [K, M] (e.g. `uap_transfer_matrix`).
        labels: row labels (UAP sources); also the column labels when `col_labels` is None and
            the matrix is square.
        path: PNG path or None.
        col_labels: column labels (target models).
        title: figure title.
    """
    mat = np.asarray(matrix, np.float64)
    if mat.ndim != 2:
        fail("matrix.shape", mat.shape, "[K, M]")
    rows = [str(i) for i in range(mat.shape[0])] if labels is None else [str(t) for t in labels]
    if col_labels is None:
        col_labels = (
            rows
            if (labels is not None and mat.shape[0] == mat.shape[1])
            else [str(j) for j in range(mat.shape[1])]
        )
    if len(rows) != mat.shape[0] or len(col_labels) != mat.shape[1]:
        fail("labels", (len(rows), len(col_labels)), f"{mat.shape} labels")
    fig = Figure(figsize=(0.6 * mat.shape[1] + 2.5, 0.5 * mat.shape[0] + 1.6), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(mat, cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks(range(mat.shape[1]), list(col_labels), rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(mat.shape[0]), rows, fontsize=8)
    ax.set_xlabel("evaluated model")
    ax.set_ylabel("UAP of model")
    if mat.size <= 400:
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                ax.text(
                    j,
                    i,
                    f"{mat[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if mat[i, j] < 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, label="accuracy under UAP")
    return finish_figure(fig, path, title)
