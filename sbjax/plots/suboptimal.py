"""Figures of `experiments.suboptimal_generalization` (Shah et al. 2020, Sec. 5, Table 2).

* `table2_accuracies` -- train / test / S^c-randomized / S-randomized accuracy bars per model,
  one panel per mode (reference configuration, App. D.1 grid, MS-7 control), mean ± sample std
  over the seeds that did not fail, with the Bayes accuracy of the noisy linear coordinate
  (0.95) and chance (0.5) marked.
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

_BARS = (
    ("train_acc", "train"),
    ("test_acc", "test"),
    ("sc_rand_acc", "S^c-rand"),
    ("s_rand_acc", "S-rand"),
)


@figure_kind
def table2_accuracies(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike | None = None,
    *,
    modes: Sequence[str] = ("reference", "grid", "control"),
    bayes_acc: float = 0.95,
    title: str | None = None,
) -> Figure:
    """Accuracy bars of Table 2 (and the MS-7 control), one panel per mode.

    Args:
        records: summary records with "mode", "model", "dataset" and "metrics" {name: {"mean",
            "std"}} for train_acc, test_acc, sc_rand_acc, s_rand_acc; "status" marks a record
            whose models all failed (no bar); "paper" {metric: value} (optional) is drawn as a
            black tick.
        path: PNG path or None.
        modes: the modes drawn, in order (those without records are skipped).
        bayes_acc: the dashed line (the noisy linear coordinate's Bayes accuracy).
        title: figure title.
    """
    groups = [(m, [r for r in records if r.get("mode") == m]) for m in modes]
    groups = [(m, rs) for m, rs in groups if rs]
    if not groups:
        fail("records", len(records), "records with mode " + " / ".join(modes))
    fig = Figure(figsize=(4.2 * len(groups) + 1.5, 3.6), layout="constrained")
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (mode, rs) in zip(axes, groups, strict=True):
        xs = np.arange(len(rs))
        wbar = 0.8 / len(_BARS)
        for j, (k, lab) in enumerate(_BARS):
            # mean None: every model of the record failed (no bar); std None: one seed.
            mean = [
                np.nan if r["metrics"][k]["mean"] is None else r["metrics"][k]["mean"] for r in rs
            ]
            std = [0.0 if r["metrics"][k]["std"] is None else r["metrics"][k]["std"] for r in rs]
            ax.bar(xs + (j - 1.5) * wbar, mean, wbar, yerr=std, label=lab, capsize=2)
            # The paper's value (Table 2) where the record cites one: a black tick on the bar.
            ref = [np.nan if (r.get("paper") or {}).get(k) is None else r["paper"][k] for r in rs]
            if np.isfinite(ref).any():
                ax.plot(
                    xs + (j - 1.5) * wbar,
                    ref,
                    ls="none",
                    marker="_",
                    ms=14,
                    mew=2.5,
                    color="k",
                    label="paper" if j == 0 else None,
                )
        ax.axhline(bayes_acc, color="k", ls="--", lw=0.8)
        ax.axhline(0.5, color="gray", ls=":", lw=0.8)
        ax.set_xticks(
            xs,
            [
                f"{r['model']}\n{r['dataset']}" + ("\n(all failed)" if r.get("status") else "")
                for r in rs
            ],
            fontsize=7,
        )
        ax.set_ylim(0.4, 1.02)
        ax.set_title(f"{mode}: accuracy (mean±std over seeds that did not fail)", fontsize=9)
    axes[-1].legend(fontsize=7, loc="lower right")
    return finish_figure(fig, path, title)
