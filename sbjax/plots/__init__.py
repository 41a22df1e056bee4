"""Figures from saved results: Agg-rendered matplotlib figures drawn from plain arrays and dicts.

* `sbjax.plots.paper` -- the paper's figures (Fig. 3(a, b, c), Fig. 4, coordinate bars, transfer
  matrices).
* `sbjax.plots.registry` -- figures as data: `save_and_draw` stores a figure's arguments in the
  run folder and draws it; `redraw` / `python -m sbjax.plots RUN_DIR` draws a run's figures again.

Every drawing function takes plain arrays / dicts, draws one `matplotlib.figure.Figure` (no pyplot,
no global state, no display), writes it as PNG when `path` is given (atomically) and returns it.
"""

from sbjax.plots.paper import (
    coordinate_accuracy,
    coordinate_heatmap,
    decision_boundary,
    logit_histograms,
    logit_panels,
    randomized_auc_vs_sc,
    save_figure,
    transfer_matrix,
    uap_heatmaps,
    uap_image_heatmap,
)
from sbjax.plots.registry import FIGURES, draw, figure_kind, redraw, save_and_draw

for _fn in (
    coordinate_accuracy,
    coordinate_heatmap,
    decision_boundary,
    logit_histograms,
    randomized_auc_vs_sc,
    transfer_matrix,
    uap_heatmaps,
    uap_image_heatmap,
):
    figure_kind(_fn)

# Experiment-specific figure kinds (sbjax/plots/<experiment>.py) register themselves on import.
import sbjax.plots.adversarial  # noqa: E402,F401
import sbjax.plots.data  # noqa: E402,F401
import sbjax.plots.diagnostics  # noqa: E402,F401
import sbjax.plots.mitigation  # noqa: E402,F401
import sbjax.plots.ensembles  # noqa: E402,F401
import sbjax.plots.robustness  # noqa: E402,F401
import sbjax.plots.suboptimal  # noqa: E402,F401

__all__ = [
    "FIGURES",
    "coordinate_accuracy",
    "coordinate_heatmap",
    "decision_boundary",
    "draw",
    "figure_kind",
    "logit_histograms",
    "logit_panels",
    "randomized_auc_vs_sc",
    "redraw",
    "save_and_draw",
    "save_figure",
    "transfer_matrix",
    "uap_heatmaps",
    "uap_image_heatmap",
]
