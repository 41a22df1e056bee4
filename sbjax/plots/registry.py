"""Figures as data: every figure of a run is saved with the arrays it was drawn from.

An experiment calls `save_and_draw(run_dir, "fig3a_logits.png", "logit_histograms", panels=...,
title=...)`: the arguments go to `<run>/figures/fig3a_logits.{json,npz}` (`sbjax.io.save_tree`, no
pickle) and the PNG is drawn from them. `redraw(run_dir)` (or `python -m sbjax.plots RUN_DIR`)
draws every figure of a run again from those files, so a figure can be restyled without retraining.

A figure kind is a drawing function `fn(**args, path=...) -> Figure` registered with
`@figure_kind`; the paper's figures (`sbjax.plots.paper`) and each experiment's own figures
(`sbjax.plots.<experiment group>`) register themselves on import.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sbjax import io
from sbjax.validate import fail

FIGURE_DIR = "figures"
FIGURES: dict[str, Callable[..., Any]] = {}


def figure_kind(fn: Callable[..., Any] | None = None, *, name: str | None = None):
    """Registers a drawing function `fn(**args, path=None) -> Figure` under `name` (its own)."""

    def register(f: Callable[..., Any]) -> Callable[..., Any]:
        FIGURES[name or f.__name__] = f
        return f

    return register(fn) if fn is not None else register


PAPER_KINDS = (
    "coordinate_accuracy",
    "coordinate_heatmap",
    "decision_boundary",
    "logit_histograms",
    "randomized_auc_vs_sc",
    "transfer_matrix",
    "uap_heatmaps",
    "uap_image_heatmap",
)
# Experiment-specific figure kinds (sbjax/plots/<experiment>.py) register themselves on import.
KIND_MODULES = (
    "adversarial",
    "atlas",
    "data",
    "diagnostics",
    "mitigation",
    "ensembles",
    "robustness",
    "search",
    "suboptimal",
)
_loaded = False


def load_kinds() -> None:
    """Imports the drawing modules (matplotlib loads here, on first use) and registers every
    figure kind, once."""
    global _loaded
    if _loaded:
        return
    import importlib

    from sbjax.plots import paper

    for name in PAPER_KINDS:
        figure_kind(getattr(paper, name))
    for module in KIND_MODULES:
        importlib.import_module(f"sbjax.plots.{module}")
    _loaded = True


def draw(kind: str, path: str | os.PathLike | None, **args: Any):
    """Draws figure `kind` from its arguments (and writes it to `path` when given)."""
    load_kinds()
    if kind not in FIGURES:
        fail("kind", kind, "a registered figure kind: " + ", ".join(sorted(FIGURES)))
    return FIGURES[kind](**args, path=path)


def save_and_draw(run_dir: str | os.PathLike, filename: str, kind: str, **args: Any) -> Path:
    """Saves a figure's arguments in `<run_dir>/figures/` and draws `<run_dir>/<filename>`.

    Args:
      run_dir: the run folder.
      filename: the PNG's file name inside the run folder.
      kind: a registered figure kind (see `FIGURES`).
      args: the drawing function's arguments: arrays, dicts, lists, numbers, strings.

    Returns:
      The PNG's path.
    """
    load_kinds()
    if kind not in FIGURES:
        fail("kind", kind, "a registered figure kind: " + ", ".join(sorted(FIGURES)))
    run_dir = Path(run_dir)
    stem = run_dir / FIGURE_DIR / Path(filename).stem
    io.save_tree(stem, {"kind": kind, "file": filename, "args": args})
    path = run_dir / filename
    draw(kind, path, **args)
    return path


class RedrawError(ValueError):
    """Some figures of a run could not be redrawn; the others were.

    Attributes:
      written: the PNG paths that were drawn. problems: one line per figure that was not, naming
        its file and what to do.
    """

    def __init__(self, written: list[Path], problems: list[str]) -> None:
        self.written, self.problems = written, problems
        super().__init__(
            f"{len(problems)} figure(s) could not be redrawn ({len(written)} were):\n  "
            + "\n  ".join(problems)
        )


def redraw(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Draws every saved figure of a run again (into `out_dir`, default the run folder).

    Every figure whose data is intact is drawn, whatever happens to the others; a figure whose
    data is missing or damaged (including one that summary.json lists but whose data file is
    gone) is reported afterwards.

    Returns:
      The PNG paths written.

    Raises:
      ValueError: `run_dir` has no saved figure data. RedrawError: after drawing the rest, one
        line per figure that could not be drawn (its file, the reason, what to do).
    """
    run_dir = Path(run_dir)
    fig_dir = run_dir / FIGURE_DIR
    if not fig_dir.is_dir():
        fail(
            "run_dir",
            str(run_dir),
            f"a run folder with saved figure data in {FIGURE_DIR}/ "
            "(written by the experiment commands)",
        )
    out = Path(out_dir) if out_dir is not None else run_dir
    written, problems, found = [], [], set()
    for spec_path in sorted(fig_dir.glob("*.json")):
        try:
            spec = io.load_tree(spec_path.with_suffix(""))
            if not isinstance(spec, dict) or not {"kind", "file", "args"} <= set(spec):
                raise ValueError(f"{str(spec_path)!r} lacks 'kind', 'file' or 'args'")
            found.add(spec["file"])
            path = out / spec["file"]
            draw(spec["kind"], path, **spec["args"])
        except Exception as e:  # one damaged figure must not stop the others
            problems.append(f"{spec_path.name}: {e}; rerun the experiment to rewrite it")
            continue
        written.append(path)
    listed = _listed_figures(run_dir)
    for name in listed:
        stem = Path(name).stem
        if name not in found and not any(p.startswith(f"{stem}.json:") for p in problems):
            problems.append(
                f"{FIGURE_DIR}/{stem}.json: missing (summary.json lists {name!r}); rerun the "
                "experiment to rewrite it"
            )
    if problems:
        raise RedrawError(written, problems)
    return written


def _listed_figures(run_dir: Path) -> list[str]:
    """The figure files summary.json says the run drew with saved data (top-level PNGs; none if it
    has no summary)."""
    try:
        summary = io.read_json(run_dir / "summary.json")
    except (OSError, ValueError):
        return []
    names = summary.get("figures") if isinstance(summary, dict) else None
    if not isinstance(names, list):
        return []
    return [n for n in names if isinstance(n, str) and "/" not in n]
