"""Shortcut atlas: shortcut bias over availability x predictivity (Hermann et al., ICLR 2024).

Hermann, Mobahi, Fel, Mozer, "On the Foundations of Shortcut Learning" (arXiv 2310.16228;
BEYOND.md Sec. 1.6) build tasks from a shortcut latent z_s and a core latent z_c whose
predictivity (rho_i = corr(z_i, y)) and availability (amplification alpha_i, nesting eta_i) are set
independently, and measure a model's shortcut bias: its reliance on z_s beyond the Bayes-optimal
classifier's. Their claims, checked here:

1. linear models are nearly unbiased (|bias| small in every cell);
2. one hidden layer of ReLU or Tanh units is biased toward the more available feature at equal
   predictivity;
3. the bias grows with depth (ReLU depth 1-4).

Every architecture's whole grid (availability x predictivity cells x seeds) trains as ONE
compiled program with its data sampled inside it from traced parameters (`sbjax.train.atlas`;
sampler `sbjax.data.atlas`, metric `sbjax.eval.shortcut_bias`; definitions and equations:
docs/atlas.md). The availability axis varies the shortcut's amplification alpha_s (core alpha_c =
1; entries may also set nesting eta_s / eta_c); the predictivity axis varies rho_s at a fixed core
rho_c. A bridge part trains the same architectures on cells whose core is Shah et al.'s k-slab
block (LMS-k's S^c) and whose shortcut is a linear Gaussian coordinate: the paper's extreme SB as
one corner of the map.

Intervals: 95 % t-intervals over seeds (mean +- t_{0.975, n-1} s / sqrt(n)). A claim passes when
its interval lies inside its band, fails when it lies outside, and is "inconclusive" otherwise
(the summary's "claims" gives bands, intervals and verdicts). Diverged models (and models whose
score is constant on the probe, so that no reliance is defined) are excluded from every mean and
counted per record (n_diverged / n_failed).

Records (summary.json "results"): ``part`` "atlas" or "bridge", ``architecture``,
``availability`` (label) with ``alpha_s``, ``alpha_c``, ``eta_s``, ``eta_c``, ``predictivity``
(rho_s) and ``rho_c``, ``shortcut_bias`` {mean, ci95, n}, and ``metrics`` {shortcut_bias,
share_s, reference_share, r_s, r_c, test_acc, train_acc, bayes_acc} per seed. Figures (kinds of
`sbjax.plots.atlas`, redrawn by ``python -m sbjax.plots RUN_DIR``): ``atlas_heatmap.png`` (one
panel per architecture, Fig. 2 style), ``atlas_depth.png`` (bias vs depth with intervals).

    python -m experiments.shortcut_atlas --preset quick --out runs/shortcut_atlas
    python -m experiments.shortcut_atlas --preset standard --out runs/shortcut_atlas_std
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments.common import Context, Experiment, t_interval
from experiments.synthetic import Recipe, check_names, check_positive_int, check_recipe
from sbjax.validate import check_range, fail

NAME = "shortcut_atlas"
log = logging.getLogger(__name__)

# Architecture name -> model config (input dimension from the data). Depth d = hidden layers.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "linear": {"name": "linear"},
    "relu_d1": {"name": "fcn", "depth": 1, "activation": "relu"},
    "tanh_d1": {"name": "fcn", "depth": 1, "activation": "tanh"},
    "relu_d2": {"name": "fcn", "depth": 2, "activation": "relu"},
    "relu_d3": {"name": "fcn", "depth": 3, "activation": "relu"},
    "relu_d4": {"name": "fcn", "depth": 4, "activation": "relu"},
    "relu_d1_w16": {"name": "fcn", "depth": 1, "activation": "relu", "width": 16},
    "relu_d1_w256": {"name": "fcn", "depth": 1, "activation": "relu", "width": 256},
}
DEPTH_ARCHS = ("relu_d1", "relu_d2", "relu_d3", "relu_d4")
LINEAR_BAND = 0.1  # claim 1: |bias| <= this in every cell
NONLINEAR_BAND = 0.05  # claim 2: bias >= this at equal predictivity, more available shortcut
AVAIL_KEYS = ("alpha_s", "alpha_c", "eta_s", "eta_c")


@dataclasses.dataclass(frozen=True)
class Bridge:
    """The bridge cells: Gaussian linear shortcut (rho_s, alpha_s) vs a k-slab core (LMS-k)."""

    slab_k: int
    rho_s: tuple[float, ...]
    alpha_s: tuple[float, ...]
    architectures: tuple[str, ...]
    n_seeds: int


@dataclasses.dataclass(frozen=True)
class Preset:
    """An atlas preset.

    Attributes:
      n_seeds: seeds per cell (>= 5 for the claims).
      width: hidden width of the FCNs (architectures with their own width keep it).
      embed_dim, max_nesting: `AtlasData` fields (x has 2 embed_dim coordinates).
      n_train, n_test, n_probe: points per training / test / probe set of every model.
      rho_c: the core's predictivity (fixed); predictivity: the shortcut's rho_s axis.
      availability: the availability axis: dicts with some of alpha_s, alpha_c, eta_s, eta_c
        (defaults 1, 1, 0, 0).
      architectures: names from `ARCHITECTURES`, one compiled sweep each.
      train: the recipe (fixed budget: no stop rule).
      bridge: the bridge part (None: skipped).
    """

    n_seeds: int
    width: int
    embed_dim: int
    max_nesting: int
    n_train: int
    n_test: int
    n_probe: int
    rho_c: float
    predictivity: tuple[float, ...]
    availability: tuple[dict, ...]
    architectures: tuple[str, ...]
    train: Recipe
    bridge: Bridge | None = None


_RECIPE = Recipe(
    optimizer="adam",
    lr=1e-3,
    momentum=0.0,
    weight_decay=0.0,
    batch_size=64,
    stop_rule="acc",  # not used: the atlas trains every model for max_steps (stop_rule "none")
    max_steps=1000,
    eval_every=500,
)
_AMP = tuple({"alpha_s": a} for a in (0.5, 1.0, 2.0, 4.0, 8.0))
_ALL6 = ("linear", "relu_d1", "tanh_d1", "relu_d2", "relu_d3", "relu_d4")

PRESETS: dict[str, Preset] = {
    # Plumbing only: two cells, two seeds, tiny sets and budget.
    "smoke": Preset(
        n_seeds=2,
        width=8,
        embed_dim=3,
        max_nesting=1,
        n_train=64,
        n_test=32,
        n_probe=64,
        rho_c=0.7,
        predictivity=(0.7,),
        availability=({"alpha_s": 1.0}, {"alpha_s": 4.0}),
        architectures=("linear", "relu_d1", "relu_d2"),
        train=_RECIPE.replace(max_steps=20, eval_every=10, batch_size=16),
        bridge=Bridge(
            slab_k=3, rho_s=(0.7,), alpha_s=(1.0,), architectures=("relu_d1",), n_seeds=2
        ),
    ),
    # CPU minutes: 5 availability x 5 predictivity cells x 7 seeds x 6 architectures = 1050 models,
    # one compiled program per architecture; the bridge adds 2 x 3 cells x 5 seeds x 2 archs.
    "quick": Preset(
        n_seeds=7,
        width=64,
        embed_dim=10,
        max_nesting=2,
        n_train=2000,
        n_test=1000,
        n_probe=2000,
        rho_c=0.7,
        predictivity=(0.3, 0.4, 0.5, 0.6, 0.7),
        availability=_AMP,
        architectures=_ALL6,
        train=_RECIPE,
        bridge=Bridge(
            slab_k=5,
            rho_s=(0.7, 0.9),
            alpha_s=(0.5, 1.0, 4.0),
            architectures=("linear", "relu_d1"),
            n_seeds=5,
        ),
    ),
    # Larger: 6 x 6 cells x 10 seeds x 8 architectures (the six above and ReLU depth 1 at widths
    # 16 and 256) = 2880 models; a nested-core availability entry (alpha_s = 1, eta_c = 2).
    "standard": Preset(
        n_seeds=10,
        width=64,
        embed_dim=10,
        max_nesting=2,
        n_train=2000,
        n_test=1000,
        n_probe=2000,
        rho_c=0.7,
        predictivity=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8),
        availability=_AMP + ({"alpha_s": 1.0, "eta_c": 2},),
        architectures=(*_ALL6, "relu_d1_w16", "relu_d1_w256"),
        train=_RECIPE,
        bridge=Bridge(
            slab_k=5,
            rho_s=(0.7, 0.9),
            alpha_s=(0.5, 1.0, 4.0),
            architectures=("linear", "relu_d1", "relu_d4"),
            n_seeds=10,
        ),
    ),
}
PRESET_HELP = {
    "smoke": "seconds: 2 cells x 2 seeds x 3 architectures, tiny sets (plumbing only)",
    "quick": "CPU minutes: 5 x 5 cells x 7 seeds x 6 architectures = 1050 models + bridge",
    "standard": "CPU half hour: 6 x 6 cells x 10 seeds x 8 architectures = 2880 models + bridge",
}


def avail_label(a: Mapping[str, Any]) -> str:
    """A short label of an availability entry, e.g. "a_s=4" or "a_s=1,eta_c=2"."""
    parts = [f"a_s={a.get('alpha_s', 1.0):g}"]
    if a.get("alpha_c", 1.0) != 1.0:
        parts.append(f"a_c={a['alpha_c']:g}")
    for k in ("eta_s", "eta_c"):
        if a.get(k, 0):
            parts.append(f"{k}={a[k]}")
    return ",".join(parts)


def check_preset(p: Preset) -> None:
    """Raises ValueError naming the preset key (before anything compiles)."""
    check_positive_int("n_seeds", p.n_seeds)
    check_positive_int("width", p.width)
    check_positive_int("embed_dim", p.embed_dim)
    check_positive_int("max_nesting", p.max_nesting, 0)
    for k in ("n_train", "n_test"):
        check_positive_int(k, getattr(p, k), 2)
    check_positive_int("n_probe", p.n_probe, 4)
    check_range("rho_c", p.rho_c, 0.0, 0.999)
    if isinstance(p.predictivity, str) or not isinstance(p.predictivity, Sequence):
        fail("predictivity", p.predictivity, "a non-empty list of rho_s values in [0, 0.999]")
    if not p.predictivity:
        fail("predictivity", p.predictivity, "a non-empty list of rho_s values in [0, 0.999]")
    for v in p.predictivity:
        check_range("predictivity", v, 0.0, 0.999)
    if not isinstance(p.availability, Sequence) or not p.availability:
        fail(
            "availability", p.availability, "a non-empty list of dicts of " + ", ".join(AVAIL_KEYS)
        )
    for a in p.availability:
        if not isinstance(a, Mapping) or set(a) - set(AVAIL_KEYS):
            fail("availability", a, "dicts with keys from " + ", ".join(AVAIL_KEYS))
    check_names("architectures", p.architectures, ARCHITECTURES)
    check_recipe("train", p.train, need=("max_steps", "eval_every"))
    if p.bridge is not None:
        b = p.bridge
        check_names("bridge.architectures", b.architectures, ARCHITECTURES)
        check_positive_int("bridge.n_seeds", b.n_seeds)
        for v in b.rho_s:
            check_range("bridge.rho_s", v, 0.0, 0.999)
        for v in b.alpha_s:
            check_range("bridge.alpha_s", v, 0.0, None, lo_open=True)


def verdict(ci: Sequence[float] | None, lo: float, hi: float) -> str:
    """ "pass" if the interval lies inside [lo, hi], "fail" if it lies outside, else inconclusive."""
    if ci is None:
        return "inconclusive"
    a, b = ci
    if a >= lo and b <= hi:
        return "pass"
    if b < lo or a > hi:
        return "fail"
    return "inconclusive"


def model_config(preset: Preset, arch: str) -> dict[str, Any]:
    cfg = dict(ARCHITECTURES[arch])
    if cfg["name"] == "fcn":
        cfg.setdefault("width", preset.width)
    return cfg


def run_part(run, preset: Preset, part: str, cells, archs, n_seeds, data, bar) -> dict:
    """Trains every architecture on the cells (one compiled program each); adds the records.

    Returns:
      {arch: (per-seed bias [C, S] with NaN where a model failed, AtlasResult timings)}.
    """
    from experiments.synthetic import train_config
    from sbjax.models import make_model
    from sbjax.train.atlas import atlas_sweep

    cfg = train_config(preset.train, stop_rule="none")
    out = {}
    for arch in archs:
        t0 = time.perf_counter()
        res = atlas_sweep(
            cfg,
            make_model(model_config(preset, arch)),
            data,
            [c for c, _ in cells],
            n_seeds=n_seeds,
            seed=run.seed,
        )
        wall = time.perf_counter() - t0
        failed = res.failed()
        bias = np.where(failed, np.nan, res.metrics["shortcut_bias"])
        for i, (cell, meta) in enumerate(cells):
            status = [
                "diverged" if res.metrics["diverged"][i, s] > 0 else "ok" for s in range(n_seeds)
            ]
            met = {k: res.metrics[k][i] for k in res.metrics if k != "diverged"}
            run.add_result(
                dataset="atlas" if data.core == "gaussian" else f"atlas_slab{data.slab_k}",
                model=arch,
                metrics=met,
                status=status,
                part=part,
                architecture=arch,
                shortcut_bias=t_interval(bias[i]),
                expect=f"{meta['availability']}, rho_s={cell['rho_s']:g}",
                **meta,
            )
        out[arch] = {
            "bias": bias,
            "compile_s": res.compile_s,
            "run_s": res.run_s,
            "wall_s": wall,
            "n_models": int(bias.size),
            "n_failed": int(failed.sum()),
        }
        if bar is not None:
            bar.set_postfix_str(f"{part}:{arch} {wall:.0f}s")
            bar.update(1)
    return out


def claims(preset: Preset, avail: list[dict], atlas: dict) -> dict[str, Any]:
    """The paper's three claims as measured (bands, intervals, verdicts)."""
    P, A = len(preset.predictivity), len(avail)

    def grid(arch):  # [P, A, S]
        return atlas[arch]["bias"].reshape(P, A, -1)

    out: dict[str, Any] = {"interval": "95 % t-interval over seeds"}
    if "linear" in atlas:
        g = grid("linear")
        cells = [
            {
                "predictivity": preset.predictivity[i],
                "availability": avail_label(avail[j]),
                **t_interval(g[i, j]),
            }
            for i in range(P)
            for j in range(A)
        ]
        vs = [verdict(c["ci95"], -LINEAR_BAND, LINEAR_BAND) for c in cells]
        v = "fail" if "fail" in vs else "pass" if all(x == "pass" for x in vs) else "inconclusive"
        worst = max(cells, key=lambda c: abs(c["mean"]) if c["mean"] is not None else -1)
        out["linear_unbiased"] = {
            "claim": f"linear models: |shortcut bias| <= {LINEAR_BAND:.2f} in every cell",
            "band": [-LINEAR_BAND, LINEAR_BAND],
            "verdict": v,
            "n_cells": len(cells),
            "n_pass": vs.count("pass"),
            "n_fail": vs.count("fail"),
            "worst_cell": worst,
        }
    # Equal predictivity cells, shortcut more available than the core (alpha_s > alpha_c).
    eq = [i for i, r in enumerate(preset.predictivity) if abs(r - preset.rho_c) < 1e-9]
    more = [
        j
        for j, a in enumerate(avail)
        if a.get("alpha_s", 1.0) > a.get("alpha_c", 1.0) and not a.get("eta_s", 0)
    ]
    if eq and more:
        i = eq[0]
        j_max = max(more, key=lambda j: avail[j].get("alpha_s", 1.0) / avail[j].get("alpha_c", 1.0))
        nl = {}
        for arch in ("relu_d1", "tanh_d1", "linear"):
            if arch not in atlas:
                continue
            g = grid(arch)
            ci = t_interval(g[i, j_max])
            nl[arch] = {
                **ci,
                "verdict": verdict(ci["ci95"], NONLINEAR_BAND, 1.0) if arch != "linear" else None,
                "per_availability": {avail_label(avail[j]): t_interval(g[i, j]) for j in more},
            }
        vs = [nl[a]["verdict"] for a in ("relu_d1", "tanh_d1") if a in nl]
        v = (
            "fail"
            if "fail" in vs
            else "pass"
            if vs and all(x == "pass" for x in vs)
            else "inconclusive"
        )
        out["nonlinear_biased"] = {
            "claim": f"1-hidden-layer ReLU and Tanh: bias >= {NONLINEAR_BAND:.2f} toward the more "
            "available shortcut at equal predictivity",
            "band": [NONLINEAR_BAND, 1.0],
            "cell": {
                "predictivity": preset.predictivity[i],
                "availability": avail_label(avail[j_max]),
            },
            "verdict": v,
            "by_architecture": nl,
        }
        depth_archs = [a for a in DEPTH_ARCHS if a in atlas]
        if len(depth_archs) >= 2:
            depths = np.asarray([int(a[-1]) for a in depth_archs], np.float64)
            # per seed: mean bias over the equal-predictivity, more-available cells
            with warnings.catch_warnings():  # a seed failed in every cell: NaN, excluded below
                warnings.simplefilter("ignore", RuntimeWarning)
                per = np.stack([np.nanmean(grid(a)[i][more], axis=0) for a in depth_archs])
            ok = np.all(np.isfinite(per), axis=0)
            x = depths - depths.mean()
            slopes = (x @ per[:, ok]) / (x @ x)
            ci = t_interval(slopes)
            out["bias_grows_with_depth"] = {
                "claim": "ReLU: shortcut bias increases with depth (least-squares slope per "
                f"seed over depths {depths.astype(int).tolist()}, on the equal-predictivity "
                "cells with a more available shortcut)",
                "band": [0.0, math.inf],
                "slope_per_layer": ci,
                "verdict": verdict(ci["ci95"], 0.0, math.inf) if ci["ci95"] else "inconclusive",
                "n_seeds_excluded": int((~ok).sum()),
                "mean_by_depth": {a: t_interval(per[k][ok]) for k, a in enumerate(depth_archs)},
            }
    return out


def setup(ctx: Context) -> None:
    """One progress bar over every sweep of the selected parts; summary.json's timings."""
    from tqdm.auto import tqdm

    preset, parts = ctx.preset, ctx.parts
    ctx.extra["timing"] = {}
    n_sweeps = (len(preset.architectures) if "atlas" in parts else 0) + (
        len(preset.bridge.architectures) if preset.bridge and "bridge" in parts else 0
    )
    ctx.state["bar"] = tqdm(total=n_sweeps, desc="atlas sweeps", disable=not ctx.run.progress)


def _atlas_data(preset: Preset, **kw: Any):
    from sbjax.data.atlas import AtlasData

    return AtlasData(
        embed_dim=preset.embed_dim,
        max_nesting=preset.max_nesting,
        n_train=preset.n_train,
        n_test=preset.n_test,
        n_probe=preset.n_probe,
        **kw,
    )


def part_atlas(ctx: Context) -> None:
    """Every architecture over availability x predictivity, the claims and the figures."""
    run, preset, extra = ctx.run, ctx.preset, ctx.extra
    n_seeds = run.n_seeds
    avail = [dict(a) for a in preset.availability]
    data = _atlas_data(preset)
    cells = []
    for r in preset.predictivity:
        for a in avail:
            c = {"rho_s": r, "rho_c": preset.rho_c, **a}
            meta = {
                "availability": avail_label(a),
                "predictivity": r,
                "rho_c": preset.rho_c,
                **{k: a.get(k, 1.0 if k.startswith("alpha") else 0) for k in AVAIL_KEYS},
            }
            cells.append((c, meta))
    atlas = run_part(
        run, preset, "atlas", cells, preset.architectures, n_seeds, data, ctx.state["bar"]
    )
    extra["timing"]["atlas"] = {
        a: {k: v for k, v in d.items() if k != "bias"} for a, d in atlas.items()
    }
    extra["claims"] = claims(preset, avail, atlas)
    P, A = len(preset.predictivity), len(avail)
    with warnings.catch_warnings():  # a cell whose models all failed: NaN (drawn blank)
        warnings.simplefilter("ignore", RuntimeWarning)
        means = {a: np.nanmean(d["bias"], axis=1).reshape(P, A) for a, d in atlas.items()}
    run.figure(
        "atlas_heatmap.png",
        "atlas_heatmap",
        panels=means,
        predictivity=list(preset.predictivity),
        availability=[avail_label(a) for a in avail],
        title=f"Shortcut bias (mean of {n_seeds} seeds; core rho_c = {preset.rho_c:g}, "
        f"alpha_c = 1): availability of z_s x predictivity of z_s",
    )
    if "bias_grows_with_depth" in extra["claims"]:
        dep = extra["claims"]["bias_grows_with_depth"]["mean_by_depth"]
        run.figure(
            "atlas_depth.png",
            "atlas_depth",
            depth=[int(a[-1]) for a in dep],
            mean=[dep[a]["mean"] for a in dep],
            ci95=[dep[a]["ci95"] for a in dep],
            linear=extra["claims"]
            .get("nonlinear_biased", {})
            .get("by_architecture", {})
            .get("linear"),
            title="Shortcut bias vs ReLU depth, equal predictivity\n(mean over the cells with a "
            "more available shortcut; 95 % t-interval over seeds)",
        )


def part_bridge(ctx: Context) -> None:
    """The LMS-5 bridge: a slab core (skipped when the preset has no bridge)."""
    run, preset = ctx.run, ctx.preset
    if preset.bridge is None:
        return
    b = preset.bridge
    data = _atlas_data(preset, core="slab", slab_k=b.slab_k)
    cells = []
    for r in b.rho_s:
        for a in b.alpha_s:
            c = {"rho_s": r, "alpha_s": a}
            meta = {
                "availability": avail_label({"alpha_s": a}),
                "predictivity": r,
                "rho_c": 1.0,
                "alpha_s": a,
                "alpha_c": 1.0,
                "eta_s": 0,
                "eta_c": 0,
                "core": f"{b.slab_k}-slab",
            }
            cells.append((c, meta))
    bridge = run_part(
        run, preset, "bridge", cells, b.architectures, b.n_seeds, data, ctx.state["bar"]
    )
    ctx.extra["timing"]["bridge"] = {
        a: {k: v for k, v in d.items() if k != "bias"} for a, d in bridge.items()
    }


EXPERIMENT = Experiment(
    NAME,
    __doc__,
    PRESETS,
    preset_help=PRESET_HELP,
    parts={"atlas": part_atlas, "bridge": part_bridge},
    select="flag",
    check=check_preset,
    setup=setup,
    finish=lambda ctx: ctx.state["bar"].close(),
)
main = EXPERIMENT.main


if __name__ == "__main__":
    main()
