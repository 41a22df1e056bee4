"""Figures of the ensemble experiment (Shah et al. 2020, App. E.1, Fig. 6; reference nb04).

Both kinds draw from the experiment's summary records (`python -m experiments.ensembles`), so a
run folder's `figures/` data is enough to redraw them:

* `ensembles_accuracy_vs_size` -- Fig. 6: ensemble test accuracy against the ensemble size, one
  panel per dataset, one line per aggregation, the mean accuracy of the used members as a
  reference line.
* `ensembles_randomized_auc` -- standard / S- / S^c-randomized AUC of the ensembles, one group
  of bars per (dataset, ensemble size).
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

__all__ = ["ensembles_accuracy_vs_size", "ensembles_randomized_auc"]

_AGG_STYLE = {"logits": "o-", "probs": "s--"}


def _datasets(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Datasets in the order of their first record."""
    out: list[str] = []
    for r in records:
        if r["dataset"] not in out:
            out.append(r["dataset"])
    return out


@figure_kind
def ensembles_accuracy_vs_size(
    records: Sequence[Mapping[str, Any]],
    member_acc: Mapping[str, Any],
    path: str | os.PathLike | None = None,
    *,
    metric: str = "ensemble_test_acc",
    title: str | None = None,
) -> Figure:
    """Ensemble test accuracy against ensemble size (paper Fig. 6), mean +- std over ensembles.

    Args:
        records: summary records with "dataset", "ensemble_size", "aggregation" and
            `metrics[metric]` = {"mean", "std"} (mean None where every ensemble failed: no point;
            std None with one ensemble: no error bar).
        member_acc: dataset -> test accuracies of the members that count (members of failed
            ensembles left out); their mean is drawn as a reference line.
        path: PNG path or None.
        metric: the accuracy to draw.
        title: figure title.
    """
    if not records:
        fail("records", records, "a non-empty sequence of ensemble records")
    datasets = _datasets(records)
    fig = Figure(figsize=(4.2 * len(datasets), 3.6), layout="constrained")
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, ds in zip(axes, datasets, strict=True):
        recs = [r for r in records if r["dataset"] == ds]
        sizes = sorted({int(r["ensemble_size"]) for r in recs})
        aggs = []
        for r in recs:
            if r.get("aggregation", "logits") not in aggs:
                aggs.append(r.get("aggregation", "logits"))
        for agg in aggs:
            by_size = {
                int(r["ensemble_size"]): r for r in recs if r.get("aggregation", "logits") == agg
            }
            ms = np.array(
                [
                    mean_std(by_size[k]["metrics"][metric]) if k in by_size else (np.nan, 0.0)
                    for k in sizes
                ]
            )
            ax.errorbar(
                sizes,
                ms[:, 0],
                yerr=ms[:, 1],
                fmt=_AGG_STYLE.get(agg, "^-."),
                capsize=3,
                label=f"ensemble ({agg} averaged)",
            )
        single = np.asarray(member_acc.get(ds, []), np.float64).reshape(-1)
        single = single[np.isfinite(single)]
        if single.size:
            ax.axhline(
                single.mean(), color="gray", ls=":", label=f"mean of the {single.size} used members"
            )
        lo = min(0.45, float(single.min()) - 0.02) if single.size else 0.45
        ax.set_xticks(sizes)
        ax.set_xlabel("ensemble size")
        ax.set_ylabel("test accuracy")
        ax.set_title(str(ds))
        ax.set_ylim(lo, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return finish_figure(fig, path, title)


@figure_kind
def ensembles_randomized_auc(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike | None = None,
    *,
    metrics: Sequence[str] = ("test_auc", "s_rand_auc", "sc_rand_auc"),
    title: str | None = None,
) -> Figure:
    """Bars of the ensembles' standard / S- / S^c-randomized AUC per (dataset, ensemble size).

    Args:
        records: summary records with "dataset", "ensemble_size" and `metrics[name]` =
            {"mean", "std"} for each of `metrics` (mean None: no bar).
        path: PNG path or None.
        metrics: the AUCs to draw, one bar each.
        title: figure title.
    """
    if not records:
        fail("records", records, "a non-empty sequence of ensemble records")
    labels = {
        "test_auc": "standard",
        "s_rand_auc": "S-randomized",
        "sc_rand_auc": "S$^c$-randomized",
    }
    xs = np.arange(len(records))
    fig = Figure(figsize=(max(6.0, 0.7 * len(records)), 3.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(metrics)
    for j, key in enumerate(metrics):
        ms = np.array([mean_std(r["metrics"][key]) for r in records]).reshape(-1, 2)
        ax.bar(
            xs + (j - (len(metrics) - 1) / 2) * width,
            ms[:, 0],
            width,
            yerr=ms[:, 1],
            capsize=2,
            label=labels.get(key, key),
        )
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.set_xticks(xs, [f"{r['dataset']}\nk={r['ensemble_size']}" for r in records], fontsize=7)
    ax.set_ylabel("ensemble AUC")
    ax.set_ylim(0, 1.15)
    ax.legend(fontsize=7, ncol=len(metrics), loc="upper center")
    return finish_figure(fig, path, title)
