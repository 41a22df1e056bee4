"""Figures from saved results: Agg-rendered matplotlib figures drawn from plain arrays and dicts.

* `sbjax.plots.paper` -- the paper's figures (Fig. 3(a, b, c), Fig. 4, coordinate bars, transfer
  matrices).
* `sbjax.plots.registry` -- figures as data: `save_and_draw` stores a figure's arguments in the
  run folder and draws it; `redraw` / `python -m sbjax.plots RUN_DIR` draws a run's figures again.

Every drawing function takes plain arrays / dicts, draws one `matplotlib.figure.Figure` (no pyplot,
no global state, no display), writes it as PNG when `path` is given (atomically) and returns it.
"""

# `python -m sbjax.plots --help` imports this package: matplotlib (and the drawing modules) load on
# first use of a name below, not at import time (PEP 562 module __getattr__).
_PAPER = (
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
)
_REGISTRY = ("FIGURES", "draw", "figure_kind", "redraw", "save_and_draw")


def load_figure_kinds() -> None:
    """Imports the drawing modules, registers every figure kind and binds the names above."""
    from sbjax.plots import paper, registry

    registry.load_kinds()
    for name in _PAPER:
        globals()[name] = getattr(paper, name)
    for name in _REGISTRY:
        globals()[name] = getattr(registry, name)


def __getattr__(name: str):
    if name in _PAPER or name in _REGISTRY:
        load_figure_kinds()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


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
