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


def _load_kinds() -> None:
    # Importing the modules registers their kinds (the package's _load imports them all).
    import sbjax.plots

    sbjax.plots._load()


def draw(kind: str, path: str | os.PathLike | None, **args: Any):
    """Draws figure `kind` from its arguments (and writes it to `path` when given)."""
    _load_kinds()
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
    _load_kinds()
    if kind not in FIGURES:
        fail("kind", kind, "a registered figure kind: " + ", ".join(sorted(FIGURES)))
    run_dir = Path(run_dir)
    stem = run_dir / FIGURE_DIR / Path(filename).stem
    io.save_tree(stem, {"kind": kind, "file": filename, "args": args})
    path = run_dir / filename
    draw(kind, path, **args)
    return path


def redraw(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Draws every saved figure of a run again (into `out_dir`, default the run folder).

    Returns:
      The PNG paths written.
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
    written = []
    for spec_path in sorted(fig_dir.glob("*.json")):
        spec = io.load_tree(spec_path.with_suffix(""))
        path = out / spec["file"]
        draw(spec["kind"], path, **spec["args"])
        written.append(path)
    return written
