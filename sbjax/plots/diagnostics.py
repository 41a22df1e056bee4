"""Figures of the diagnostics experiment (`python -m experiments.diagnostics`, issue 14).

* `diagnostics_timeline` -- the feature timeline: accuracy on a fixed test subset and on its S-
  and S^c-randomized copies against updates, one panel per model (each seed a line; a dashed
  vertical line where a seed stopped).
* `diagnostics_phase` -- the shortcut phase diagram: reliance on S^c minus reliance on S over
  (noise p on S, linear margin of S), one panel per slab count k; the cells where S^c wins are
  outlined.
* `diagnostics_probe_bars` -- last-layer probes: the model's own head vs the refitted linear head
  on S-randomized test data, and the probe for S alone, per (dataset, model) record.
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

__all__ = ["diagnostics_phase", "diagnostics_probe_bars", "diagnostics_timeline"]

_SETS = (("test", "standard", "black"), ("s_rand", "S-randomized", "tab:red"))
_SETS += (("sc_rand", "S^c-randomized", "tab:blue"),)


@figure_kind
def diagnostics_timeline(
    curves: Mapping[str, Mapping[str, Any]],
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """Accuracy on the monitor sets against updates, one panel per model.

    Args:
        curves: model label -> {"updates": [E], "test" / "s_rand" / "sc_rand": [S, E] accuracy
            of each seed at each evaluation, "stop": [S] update at which each seed stopped}.
        path: PNG path or None.
        title: figure title.
    """
    if not curves:
        fail("curves", curves, "a non-empty map model -> timeline arrays")
    fig = Figure(figsize=(4.6 * len(curves), 3.6), layout="constrained")
    axes = fig.subplots(1, len(curves), squeeze=False)[0]
    for ax, (label, c) in zip(axes, curves.items(), strict=True):
        upd = np.asarray(c["updates"], np.float64)
        stop = np.asarray(c.get("stop", []), np.float64).reshape(-1)
        last = float(stop.max()) if stop.size else float(upd[-1])
        shown = upd <= last + 1e-9
        for key, name, color in _SETS:
            a = np.asarray(c[key], np.float64).reshape(-1, upd.size)
            for i, row in enumerate(a):
                ax.plot(
                    upd[shown],
                    row[shown],
                    color=color,
                    lw=1.2,
                    alpha=0.8,
                    label=name if i == 0 else None,
                )
        for s in stop:
            ax.axvline(s, color="grey", ls="--", lw=0.7)
        ax.set_ylim(0.4, 1.02)
        ax.set_xlabel("updates")
        ax.set_ylabel("accuracy")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    return finish_figure(fig, path, title)


@figure_kind
def diagnostics_phase(
    p: Sequence[float],
    margin: Sequence[float],
    k: Sequence[int],
    reliance_s: Any,
    reliance_sc: Any,
    path: str | os.PathLike | None = None,
    *,
    min_gap: float = 0.05,
    title: str | None = None,
) -> Figure:
    """Heat maps of reliance on S^c minus reliance on S, one panel per slab count k.

    Args:
        p, margin, k: the grid axes.
        reliance_s, reliance_sc: [P, G, K] mean reliance (test accuracy - randomized accuracy).
        path: PNG path or None.
        min_gap: cells where S^c wins by more than this are outlined (`PhaseResult.crossover`).
        title: figure title.
    """
    rs = np.asarray(reliance_s, np.float64)
    rsc = np.asarray(reliance_sc, np.float64)
    shape = (len(p), len(margin), len(k))
    if rs.shape != shape or rsc.shape != shape:
        fail("reliance_s", rs.shape, f"arrays of shape {shape} (p, margin, k)")
    diff = rsc - rs
    fig = Figure(figsize=(3.8 * len(k) + 1.0, 3.4), layout="constrained")
    axes = fig.subplots(1, len(k), squeeze=False)[0]
    im = None
    for l_, (ax, kk) in enumerate(zip(axes, k, strict=True)):
        d = diff[:, :, l_].T  # rows = margin, columns = p
        im = ax.imshow(d, origin="lower", cmap="RdBu_r", vmin=-0.5, vmax=0.5, aspect="auto")
        for j in range(len(margin)):
            for i in range(len(p)):
                shade = "white" if abs(d[j, i]) > 0.3 else "black"
                ax.text(
                    i, j, f"{d[j, i]:+.2f}", ha="center", va="center", fontsize=6.5, color=shade
                )
                if d[j, i] > min_gap:  # S^c wins
                    ax.add_patch(
                        _rect(i, j, edgecolor="black", facecolor="none", lw=1.2),
                    )
        ax.set_xticks(range(len(p)), [f"{v:g}" for v in p], fontsize=8)
        ax.set_yticks(range(len(margin)), [f"{v:g}" for v in margin], fontsize=8)
        ax.set_xlabel("noise p on S (sign flips)")
        ax.set_ylabel("linear margin of S")
        ax.set_title(f"S^c = {kk}-slabs")
    fig.colorbar(im, ax=list(axes), label="reliance on S^c - reliance on S")
    return finish_figure(fig, path, title)


def _rect(i, j, **kw):
    from matplotlib.patches import Rectangle

    return Rectangle((i - 0.5, j - 0.5), 1.0, 1.0, **kw)


_PROBE_BARS = (
    ("head_s_rand_acc", "model's head, S-randomized", "tab:red"),
    ("probe_s_rand_acc", "refitted head, S-randomized (S^c probe)", "tab:blue"),
    ("probe_sc_rand_acc", "refitted head, S^c-randomized (S probe)", "tab:green"),
)


@figure_kind
def diagnostics_probe_bars(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike | None = None,
    *,
    title: str | None = None,
) -> Figure:
    """Grouped bars per (dataset, model) record: the head's and the probes' test accuracies.

    Args:
        records: summary records with "dataset", "model" and `metrics` holding
            head_s_rand_acc, probe_s_rand_acc and probe_sc_rand_acc ({"mean", "std"}).
        path: PNG path or None.
        title: figure title.
    """
    if not records:
        fail("records", records, "a non-empty sequence of probe records")
    n = len(records)
    fig = Figure(figsize=(max(5.0, 1.1 * n + 2.5), 3.8), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(_PROBE_BARS)
    x = np.arange(n)
    for b, (key, name, color) in enumerate(_PROBE_BARS):
        ms = np.array([mean_std(r["metrics"][key]) for r in records])
        ax.bar(x + (b - 1) * width, ms[:, 0], width, yerr=ms[:, 1], color=color, label=name)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xticks(x, [f"{r['dataset']}\n{r['model']}" for r in records], fontsize=7)
    ax.set_ylim(0.3, 1.05)
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return finish_figure(fig, path, title)
