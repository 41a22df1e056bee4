"""Writes a verification run: raw logs, per-step records, figures, `summary.json` and `report.md`.

Layout of a run folder::

    config.json   env.json   summary.json   report.md   metrics.csv   steps.jsonl
    logs/<grid>/<point>.npz      raw per-step, per-unit, per-seed arrays of every point
    figures/<grid>_*.png

`steps.jsonl` has one record per (point, logged step) with statistics split by sign(v_j) (median
over seeds of the median / RMS / max over units); `metrics.csv` one row per (point, seed) with final
values.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sbjax.io import append_jsonl, atomic_write_bytes, write_csv, write_json
from theory.claims import (
    MEDIAN_ABS_Z,
    _finite,
    count_verdicts,
    g5_phase_table,
    judge,
    per_seed_final,
    verdict,
)

if TYPE_CHECKING:  # theory.grids and theory.setting import JAX; `--help` must not
    from theory.grids import Point

__all__ = ["write_figures", "write_logs", "write_report", "PROTOTYPE"]

# THEORY.md Sec. 7 (single-seed NumPy prototype), for side-by-side tables
PROTOTYPE = {
    "d_sweep": {  # d: (|w1|, median|w2|, pred, ||w_bar||, init, margin mean, std, acc, S, S^c)
        64: (0.3756, 0.0035, 0.0042, 0.037, 0.014, 0.752, 0.065, 1.0, 0.501, 1.0),
        128: (0.3755, 0.0028, 0.0030, 0.029, 0.010, 0.751, 0.050, 1.0, 0.499, 1.0),
        256: (0.3752, 0.0021, 0.0021, 0.020, 0.008, 0.750, 0.034, 1.0, 0.499, 1.0),
        512: (0.3754, 0.0014, 0.0015, 0.015, 0.006, 0.751, 0.026, 1.0, 0.500, 1.0),
        1024: (0.3752, 0.0011, 0.0011, 0.020, 0.005, 0.750, 0.035, 1.0, 0.500, 1.0),
    },
    "gamma_sweep": {
        1.0: (0.499, 1.000, 0.0028),
        0.5: (0.499, 1.000, 0.0013),
        0.25: (0.547, 0.952, 0.20),
        0.125: (1.000, 0.499, 1.18),
    },
    "g4": {
        64: {8: 0.25, 20: 0.14, 40: 0.10, 122: 0.005},
        256: {131: 0.099, 327: 0.020, 655: 0.003, 1966: 0.000},
    },
    "g1_slope": -0.47,
    "g2": {16: 0.375, 64: 0.187},
    "g6": "d = 64 logistic, fixed m = d^2, 1e4 steps: median|w2| ~ 0.0017 from step 3 to 1e4; "
    "|w1| 0.18 -> 3.9; S-rand 0.50, S^c-rand 1.00",
}


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool | np.bool_):
        return str(bool(x))
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


# ---------------------------------------------------------------------------------------------
# logs


def _point_arrays(p: Point) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if p.sim is not None:
        out.update(p.sim.flat())
    for name, val in p.extra.items():
        out[f"extra/{name}"] = np.asarray(val)
    for name, val in p.params.items():
        out[f"params/{name}"] = np.asarray(val)
    return out


def _unit_agg(arr: np.ndarray, sl: slice) -> dict[str, np.ndarray]:
    """median / RMS / max over units of |arr| ``[S, T+1, k]`` -> ``[S, T+1]`` each."""
    a = np.abs(arr[..., sl])
    return {"med": np.median(a, -1), "rms": np.sqrt(np.mean(a * a, -1)), "max": np.max(a, -1)}


def step_records(p: Point, max_all_steps: int = 64) -> list[dict[str, Any]]:
    """Per-step records of an empirical point (medians over seeds), split by sign(v_j)."""
    r = p.sim
    k, steps = r.config.k, r.config.steps
    groups = {"pos": slice(0, k // 2), "neg": slice(k // 2, k)}
    agg = {
        g: {q: _unit_agg(r.units[q], sl) for q in ("w1", "w2", "wbar")} for g, sl in groups.items()
    }
    logged = range(steps + 1) if steps <= max_all_steps else [int(s) for s in r.eval_steps]
    ev_index = {int(s): i for i, s in enumerate(r.eval_steps)}
    recs = []
    for t in logged:
        rec: dict[str, Any] = {"grid": p.grid, "point": p.pid, **p.params, "step": t}
        for g in groups:
            for q in ("w1", "w2", "wbar"):
                for stat, arr in agg[g][q].items():
                    rec[f"{q}_{stat}_{g}"] = float(np.median(arr[:, t]))
            rec[f"ratio_{g}"] = float(
                np.median(agg[g]["w1"]["med"][:, t] / agg[g]["w2"]["med"][:, t])
            )
        if t < steps:
            for name, arr in r.train.items():
                rec[f"train_{name}"] = float(np.median(arr[:, t]))
        if t in ev_index:
            for name, arr in r.eval.items():
                rec[f"eval_{name}"] = float(np.median(arr[:, ev_index[t]]))
            rec["eval_test_err_mean"] = float(np.mean(r.eval["test_err"][:, ev_index[t]]))
        recs.append(rec)
    return recs


def write_logs(out: Path, points: list[Point]) -> None:
    """Raw npz per point, per-step records (steps.jsonl) and per-seed finals (metrics.csv)."""
    rows = []
    for p in points:
        buf = io.BytesIO()
        np.savez_compressed(buf, **_point_arrays(p))
        atomic_write_bytes(out / "logs" / p.grid / f"{p.pid}.npz", buf.getvalue())
        if p.sim is None:
            continue
        append_jsonl(out / "steps.jsonl", step_records(p))
        f = per_seed_final(p)
        for s in range(p.sim.units["w1"].shape[0]):
            rows.append(
                {
                    "grid": p.grid,
                    "point": p.pid,
                    **p.params,
                    "seed": s,
                    **{name: float(val[s]) for name, val in f.items()},
                }
            )
    if rows:
        existing = []
        path = out / "metrics.csv"
        if path.exists():
            import csv

            with open(path) as fh:
                existing = list(csv.DictReader(fh))
        write_csv(path, existing + rows)


# ---------------------------------------------------------------------------------------------
# figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _seed_med(arr):
    return np.median(arr, axis=0)


def _fig_G1(pts, figdir, plt):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ds = np.array([p.params["d"] for p in pts], float)
    fin = [per_seed_final(p) for p in pts]
    ax = axes[0]
    for key, lab, mk in (
        ("w1_pos", "|w1| v>0", "o"),
        ("w1_neg", "|w1| v<0", "s"),
        ("w2_pos", "|w2| v>0", "^"),
        ("w2_neg", "|w2| v<0", "v"),
        ("wbar_all", "||w_3:d||", "D"),
    ):
        y = np.array([np.median(f[key]) for f in fin])
        lo = np.array([np.min(f[key]) for f in fin])
        hi = np.array([np.max(f[key]) for f in fin])
        ax.errorbar(ds, y, yerr=[y - lo, hi - y], marker=mk, label=lab, capsize=3)
    k, eta = pts[0].params["k"], pts[0].params["eta"]
    dd = np.geomspace(ds.min(), ds.max(), 50)
    ax.plot(
        dd, 0.2 * eta * MEDIAN_ABS_Z / np.sqrt(dd * k), "k--", lw=1, label="0.2 eta 0.674/sqrt(dk)"
    )
    ax.plot(dd, 1 / np.sqrt(dd * k * np.log(dd)), "k:", lw=1, label="1/sqrt(dk log d) (theorem)")
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="d",
        ylabel="final weight (median over units)",
        title="G1: weights vs d (bars: seed range)",
    )
    ax.legend(fontsize=7)
    ax = axes[1]
    for p in pts:
        r = p.sim
        t = np.arange(r.config.steps + 1)
        k = r.config.k
        ax.plot(
            t,
            _seed_med(np.median(np.abs(r.units["w2"][..., : k // 2]), -1)),
            "-o",
            label=f"d={p.params['d']} v>0",
        )
        ax.plot(
            t,
            _seed_med(np.median(np.abs(r.units["w2"][..., k // 2 :]), -1)),
            "--s",
            label=f"d={p.params['d']} v<0",
        )
    ax.set(
        yscale="log",
        xlabel="step t",
        ylabel="median |w2|",
        title="slab weight per step, by sign(v)",
    )
    ax.legend(fontsize=6, ncol=2)
    ax = axes[2]
    for p in pts:
        r = p.sim
        ax.plot(
            r.eval_steps, _seed_med(r.eval["test_margin_mean"]), "-o", label=f"d={p.params['d']}"
        )
        ax.fill_between(
            r.eval_steps,
            _seed_med(r.eval["test_margin_mean"] - r.eval["test_margin_std"]),
            _seed_med(r.eval["test_margin_mean"] + r.eval["test_margin_std"]),
            alpha=0.15,
        )
    t = np.arange(pts[0].sim.config.steps + 1)
    ax.plot(t, t * pts[0].params["eta"] / 4, "k--", lw=1, label="t eta / 4")
    ax.set(xlabel="step t", ylabel="test margin y f(x) (mean +- std)", title="margins")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figdir / "G1_d_scaling.png", dpi=110)
    plt.close(fig)


def _fig_simple(pts, figdir, plt, grid, xkey, xlabel):
    fig, ax = plt.subplots(1, 1, figsize=(6, 4.2))
    x = np.array([p.params[xkey] for p in pts], float)
    fin = [per_seed_final(p) for p in pts]
    for key, lab, mk in (
        ("w1_all", "|w1|", "o"),
        ("w2_pos", "|w2| v>0", "^"),
        ("w2_neg", "|w2| v<0", "v"),
        ("wbar_all", "||w_3:d||", "D"),
        ("test_margin_std", "test margin std", "x"),
    ):
        ax.plot(x, [np.median(f[key]) for f in fin], marker=mk, label=lab)
    ax.set(
        xscale="log",
        yscale="log",
        xlabel=xlabel,
        ylabel="final value (median)",
        title=f"{grid}: final weights vs {xlabel}",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figdir / f"{grid}_{xkey}.png", dpi=110)
    plt.close(fig)


def _fig_G4(pts, figdir, plt):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for d in sorted({p.params["d"] for p in pts}):
        sub = sorted([p for p in pts if p.params["d"] == d], key=lambda p: p.params["n"])
        n = np.array([p.params["n"] for p in sub], float)
        err = np.array([np.mean(per_seed_final(p)["test_err"]) for p in sub])
        floor = 1.0 / sub[0].sim.config.n_test
        e = np.maximum(err, floor)
        axes[0].plot(n / d, e, "-o", label=f"d={d}")
        axes[1].plot(n / d**2, e, "-o", label=f"d={d}")
        steps = sub[0].params["steps"]
        nn = np.geomspace(n.min(), n.max(), 60)
        guide = [0.5 * math.erfc(math.sqrt(steps * x / (2 * d)) / math.sqrt(2)) for x in nn]
        axes[0].plot(nn / d, np.maximum(guide, floor), ":", color="gray")
        srand = np.array([np.median(per_seed_final(p)["s_rand_acc"]) for p in sub])
        axes[0].plot(n / d, 1 - srand, "x", color="k", alpha=0.4)
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="n / d",
        ylabel="test error (floor 1/n_test)",
        title="G4: error collapses on n/d (dotted: guide; x: 1 - S-rand acc)",
    )
    axes[1].set(xscale="log", yscale="log", xlabel="c = n / d^2", title="same data vs n/d^2")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(figdir / "G4_sample_size.png", dpi=110)
    plt.close(fig)


def _fig_G5(pts, figdir, plt):
    rows, cross = g5_phase_table(pts)
    slices = sorted({(r["c"], r["eta"]) for r in rows})
    fig, axes = plt.subplots(
        1, len(slices) + 1, figsize=(4.6 * (len(slices) + 1), 4.2), squeeze=False
    )
    axes = axes[0]
    for ax, (c, eta) in zip(axes, slices, strict=False):
        sub = [r for r in rows if r["c"] == c and r["eta"] == eta]
        gam = sorted({r["gamma"] for r in sub}, reverse=True)
        ds = sorted({r["d"] for r in sub})
        grid = np.full((len(gam), len(ds)), np.nan)
        for r in sub:
            grid[gam.index(r["gamma"]), ds.index(r["d"])] = r["sc_rand"]
        im = ax.imshow(grid, vmin=0.5, vmax=1.0, cmap="viridis", aspect="auto")
        for i in range(len(gam)):
            for j in range(len(ds)):
                if np.isfinite(grid[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{grid[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="w" if grid[i, j] < 0.8 else "k",
                    )
        ax.set_xticks(range(len(ds)), [str(d) for d in ds])
        ax.set_yticks(range(len(gam)), [str(g) for g in gam])
        ax.set(xlabel="d", ylabel="gamma (x1 = gamma y)", title=f"S^c-rand acc (c={c}, eta={eta})")
        fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[-1]
    a0 = np.array([r["a0_step1"] for r in rows])
    sc = np.array([r["sc_rand"] for r in rows])
    ax.scatter(a0, sc, c=[r["gamma"] for r in rows], cmap="plasma", norm=None)
    ax.axhline(0.99, color="gray", ls=":")
    for c in cross:
        if c["a0_star"]:
            ax.axvline(c["a0_star"], color="k", alpha=0.2)
    ax.set(
        xscale="log",
        xlabel="a0 = gamma |w1(1)| / ||w_bar(1)|| after step 1",
        ylabel="S^c-randomised accuracy",
        title="crossover vs a0 (colour: gamma)",
    )
    fig.tight_layout()
    fig.savefig(figdir / "G5_phase_diagram.png", dpi=110)
    plt.close(fig)


def _fig_G6(pts, figdir, plt):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for p in pts:
        r = p.sim
        t = np.arange(1, r.config.steps + 1)
        lab = f"d={p.params['d']} {p.params['variant']}"
        (line,) = axes[0].plot(t, _seed_med(np.median(np.abs(r.units["w1"][:, 1:]), -1)), label=lab)
        axes[0].plot(
            t, _seed_med(np.median(np.abs(r.units["w2"][:, 1:]), -1)), "--", color=line.get_color()
        )
        sel = r.eval_steps >= 1
        axes[1].plot(
            r.eval_steps[sel],
            _seed_med(r.eval["sc_rand_acc"][:, sel]),
            "-o",
            ms=3,
            color=line.get_color(),
            label=f"{lab} S^c",
        )
        axes[1].plot(
            r.eval_steps[sel],
            _seed_med(r.eval["s_rand_acc"][:, sel]),
            ":x",
            ms=3,
            color=line.get_color(),
        )
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="step",
        ylabel="median |w1| (solid), |w2| (dashed)",
        title="G6: beyond the theorem",
    )
    axes[1].set(
        xscale="log",
        xlabel="step",
        ylabel="accuracy",
        title="S^c-randomised (o) and S-randomised (x)",
    )
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(figdir / "G6_beyond.png", dpi=110)
    plt.close(fig)


def _fig_G7(pts, figdir, plt):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    k = pts[0].params["k"]
    for eta in sorted({p.params["eta"] for p in pts}):
        sub = sorted([p for p in pts if p.params["eta"] == eta], key=lambda p: p.params["d"])
        d = np.array([p.params["d"] for p in sub])
        for pref, ls in (("det", "-o"), ("noisy", ":")):
            y = [np.median(np.median(np.abs(p.extra[f"{pref}_w2"][:, -1]), -1)) for p in sub]
            y = np.array(y) * np.sqrt(d * k) / (0.2 * eta)
            axes[0].plot(d, y, ls, ms=3, label=f"eta={eta} {pref}")
        wb = [np.median(p.extra["noisy_s"][:, -1]) for p in sub]
        axes[1].plot(
            d, np.array(wb) * np.sqrt(k) * np.log(d), "-o", ms=3, label=f"eta={eta} (n = d^2)"
        )
    dd = np.geomspace(min(p.params["d"] for p in pts), max(p.params["d"] for p in pts), 50)
    ref = MEDIAN_ABS_Z * np.sqrt(np.log(dd[0]) / np.log(dd))
    axes[0].plot(dd, ref, "k--", lw=1, label="theorem's 1/sqrt(log d) shape")
    axes[0].axhline(MEDIAN_ABS_Z, color="gray", ls=":", lw=1)
    axes[0].set(
        xscale="log",
        xlabel="d",
        ylabel="median|w2| sqrt(dk) / (0.2 eta)",
        title="G7: slab weight after T steps (population)",
    )
    axes[1].set(
        xscale="log",
        xlabel="d",
        ylabel="median ||w_3:d|| sqrt(k) log d",
        title="noise norm vs Lemma 1 (4) scale (bound: c0 e = 5.4)",
    )
    for ax in axes:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(figdir / "G7_population.png", dpi=110)
    plt.close(fig)


def write_figures(out: Path, points: list[Point]) -> list[str]:
    """Draws every figure whose grid is present; returns the relative paths written."""
    plt = _plt()
    figdir = out / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    by: dict[str, list[Point]] = {}
    for p in points:
        by.setdefault(p.grid, []).append(p)
    if "G1" in by:
        _fig_G1(by["G1"], figdir, plt)
    if "G2" in by and len(by["G2"]) > 1:
        _fig_simple(by["G2"], figdir, plt, "G2", "k", "k")
    if "G3" in by and len(by["G3"]) > 1:
        _fig_simple(by["G3"], figdir, plt, "G3", "eta", "eta")
    if "G4" in by:
        _fig_G4(by["G4"], figdir, plt)
    if "G5" in by:
        _fig_G5(by["G5"], figdir, plt)
    if "G6" in by:
        _fig_G6(by["G6"], figdir, plt)
    if "G7" in by:
        _fig_G7(by["G7"], figdir, plt)
    return sorted(str(p.relative_to(out)) for p in figdir.glob("*.png"))


# ---------------------------------------------------------------------------------------------
# report.md


_RESULT = {"PASS": "PASS", "INCONCLUSIVE": "*INCONCLUSIVE*", "FAIL": "**FAIL**"}


def _band_text(band) -> str:
    lo, hi = band
    if lo is None:
        return f"(-∞, {_fmt(hi)}]"
    return f"[{_fmt(lo)}, {_fmt(hi) if hi is not None else '∞'}]"


def _ci_text(c: dict) -> str:
    return f"95% CI {_fmt(c['ci'][0], 3)}..{_fmt(c['ci'][1], 3)}" if "ci" in c else ""


def _claims_table(claims: list[dict]) -> list[str]:
    lines = ["| # | grid | claim | value | band | result | kind |", "|---|---|---|---|---|---|---|"]
    for i, c in enumerate(claims, 1):
        ci = f" ({_ci_text(c)})" if "ci" in c else ""
        name = c["name"].replace("|", "\\|")  # a literal | would split the table cell
        lines.append(
            f"| {i} | {c['grid']} | {name} | {_fmt(c['value'])}{ci} | "
            f"{_band_text(c['band'])} | {_RESULT[c['verdict']]} | {c['kind']} |"
        )
    return lines


def _counts_sentence(claims: list[dict]) -> str:
    n = count_verdicts(claims)
    gap_fails = sum(c["verdict"] == "FAIL" and c["kind"] == "gap" for c in claims)
    extra = (
        f" ({gap_fails} of the FAILs {'is a' if gap_fails == 1 else 'are'} 'gap' claim"
        f"{'' if gap_fails == 1 else 's'}, where FAIL is the expected outcome)"
        if gap_fails
        else ""
    )
    return (
        f"Verdicts of the {len(claims)} claims: **{n['PASS']} PASS, {n['INCONCLUSIVE']} "
        f"INCONCLUSIVE, {n['FAIL']} FAIL**{extra}. A claim with a fitted 95 % confidence "
        "interval passes only if the whole interval lies inside its band; it fails only if the "
        "interval lies entirely outside; otherwise it is inconclusive."
    )


def _criteria_lines(claims: list[dict]) -> list[str]:
    """Plain statement of which of THEORY.md's own pass criteria / fail signals hold."""
    crit = [(i, c) for i, c in enumerate(claims, 1) if c.get("criterion")]
    if not crit:
        return []
    n = count_verdicts(c for _, c in crit)
    lines = [
        f"THEORY.md's stated pass criteria and fail signals (Sec. 6.3-6.5) are checked by "
        f"{len(crit)} of these claims: {n['PASS']} met, {n['INCONCLUSIVE']} not established, "
        f"{n['FAIL']} not met.",
        "",
    ]
    for verdict_, head in (("FAIL", "**Not met**"), ("INCONCLUSIVE", "**Not established**")):
        for i, c in crit:
            if c["verdict"] != verdict_:
                continue
            ci = f", {_ci_text(c)}" if "ci" in c else ""
            what = (
                "the criterion fails in this run"
                if verdict_ == "FAIL"
                else "the interval straddles the band, so this run neither confirms nor refutes it"
            )
            lines.append(
                f"* {head} (#{i}, {c['grid']}): {c['criterion']}. Measured "
                f"{c['name']} = {_fmt(c['value'])}{ci}, required {_band_text(c['band'])}: "
                f"{what}."
            )
    return lines


def _head_lines(meta: dict[str, Any], claims: list[dict]) -> list[str]:
    """The summary paragraph(s) under the title (also rewritten by `rejudge`)."""
    lines = [
        f"Preset `{meta['preset']}`, grids {', '.join(meta['grids'])}, seed {meta['seed']}; "
        f"wall time {meta['seconds']:.0f} s on {meta.get('device', 'cpu')}. "
        + _counts_sentence(claims),
        "",
    ]
    crit = _criteria_lines(claims)
    if crit:
        lines += [*crit, ""]
    return lines


def _claims_section(claims: list[dict]) -> list[str]:
    """From "## Claims" to the end of the FAIL / INCONCLUSIVE explanations (also rewritten by
    `rejudge`)."""
    lines = [
        "## Claims",
        "",
        "kind: theorem = the paper's statement or proof; derivation = THEORY.md Sec. 4/6.4; "
        "gap = a statement of the proof found to be wrong (FAIL expected, see note); finding "
        "= reported result; check = simulator self-check. result: PASS = inside the band "
        "(the whole 95 % CI, where the claim has one); FAIL = outside (the whole CI); "
        "INCONCLUSIVE = the CI straddles an edge of the band (or nothing was measured).",
        "",
        *_claims_table(claims),
        "",
    ]
    if any(c.get("note") for c in claims):
        lines += ["Notes:", ""]
        for i, c in enumerate(claims, 1):
            if c.get("note"):
                lines.append(f"* #{i} ({c['grid']}): {c['note']}")
        lines.append("")
    for verdict_, title in (
        ("FAIL", "### What the FAILs mean"),
        ("INCONCLUSIVE", "### What the INCONCLUSIVEs mean"),
    ):
        sel = [(i, c) for i, c in enumerate(claims, 1) if c["verdict"] == verdict_]
        if not sel:
            continue
        lines += [title, ""]
        for i, c in sel:
            ci = f", {_ci_text(c)}" if "ci" in c else ""
            lines.append(
                f"* #{i} {c['grid']} — {c['name']}: value {_fmt(c['value'])}{ci}, band "
                f"{_band_text(c['band'])}. " + _explain(c)
            )
        lines.append("")
    return lines


def _g1_table(pts: list[Point]) -> list[str]:
    lines = [
        "| d | c | \\|w1\\| | median \\|w2\\| (pred) | ‖w̄‖ (init) | margin mean ± std | acc | "
        "S-rand | S^c-rand | prototype: \\|w1\\|, \\|w2\\|, ‖w̄‖, margin, S, S^c |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in pts:
        f = per_seed_final(p)
        cfg = p.sim.config
        pred = 0.2 * cfg.eta * MEDIAN_ABS_Z / math.sqrt(cfg.d * cfg.k)
        init = float(np.median(p.sim.units["wbar"][:, 0]))
        proto = PROTOTYPE["d_sweep"].get(cfg.d)
        ptxt = (
            f"{proto[0]}, {proto[1]}, {proto[3]}, {proto[5]} ± {proto[6]}, {proto[8]}, {proto[9]}"
            if proto and cfg.k == 16 and cfg.eta == 1.0
            else "–"
        )
        lines.append(
            f"| {cfg.d} | {p.params['c']} | {_fmt(np.median(f['w1_all']))} | "
            f"{_fmt(np.median(f['w2_all']))} ({_fmt(pred)}) | {_fmt(np.median(f['wbar_all']))} "
            f"({_fmt(init)}) | {_fmt(np.median(f['test_margin_mean']))} ± "
            f"{_fmt(np.median(f['test_margin_std']))} | {_fmt(np.min(f['test_acc']))} | "
            f"{_fmt(np.median(f['s_rand_acc']))} | {_fmt(np.min(f['sc_rand_acc']))} | {ptxt} |"
        )
    return lines


def _g5_tables(pts: list[Point]) -> list[str]:
    rows, cross = g5_phase_table(pts)
    lines = [
        "| d | c | η | γ | T | S^c-rand | S-rand | test err | median\\|w1\\| | median\\|w2\\| "
        "| a0 after step 1 | SB holds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["d"], r["c"], r["eta"], -r["gamma"])):
        lines.append(
            f"| {r['d']} | {r['c']} | {r['eta']} | {r['gamma']} | {r['steps']} | "
            f"{_fmt(r['sc_rand'])} | {_fmt(r['s_rand'])} | {_fmt(r['test_err'])} | "
            f"{_fmt(r['w1'])} | {_fmt(r['w2'])} | {_fmt(r['a0_step1'])} | "
            f"{'yes' if r['sb_holds'] else '**no**'} |"
        )
    lines += [
        "",
        "Crossover γ* (geometric mean of the smallest γ where SB holds and the largest "
        "where it breaks) and a0 there:",
        "",
        "| d | c | η | γ (holds) | γ (breaks) | γ* | a0* |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in cross:
        lines.append(
            f"| {c['d']} | {c['c']} | {c['eta']} | {_fmt(c['gamma_hold'])} | "
            f"{_fmt(c['gamma_break'])} | {_fmt(c['gamma_star'])} | {_fmt(c['a0_star'])} |"
        )
    proto = [r for r in rows if r["d"] == 128 and r["eta"] == 1.0 and r["c"] == 1.0]
    if proto:
        lines += [
            "",
            "Against the prototype's γ-sweep (d = 128, η = 1, c = 1; prototype S-rand, "
            "S^c-rand, |w2|):",
            "",
            "| γ | S-rand | S^c-rand | median\\|w2\\| | prototype |",
            "|---|---|---|---|---|",
        ]
        for r in sorted(proto, key=lambda r: -r["gamma"]):
            pr = PROTOTYPE["gamma_sweep"].get(r["gamma"])
            lines.append(
                f"| {r['gamma']} | {_fmt(r['s_rand'])} | {_fmt(r['sc_rand'])} | "
                f"{_fmt(r['w2'])} | {', '.join(map(str, pr)) if pr else '–'} |"
            )
    return lines


def _g4_table(pts: list[Point]) -> list[str]:
    lines = [
        "| d | n | n/d | c = n/d² | test error (mean of seeds) | guide Φ(−√(Tn/2d)) | S-rand |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in sorted(pts, key=lambda p: (p.params["d"], p.params["n"])):
        f = per_seed_final(p)
        cfg = p.sim.config
        guide = 0.5 * math.erfc(math.sqrt(cfg.steps * cfg.n / (2 * cfg.d)) / math.sqrt(2))
        lines.append(
            f"| {cfg.d} | {cfg.n} | {_fmt(cfg.n / cfg.d)} | {_fmt(cfg.n / cfg.d**2)} | "
            f"{_fmt(np.mean(f['test_err']))} | {_fmt(guide)} | "
            f"{_fmt(np.median(f['s_rand_acc']))} |"
        )
    proto = PROTOTYPE["g4"]
    lines += [
        "",
        "Prototype (3 seeds): "
        + "; ".join(
            f"d = {d}: " + ", ".join(f"n = {n} → {e}" for n, e in v.items())
            for d, v in proto.items()
        ),
    ]
    return lines


def _g6_table(pts: list[Point]) -> list[str]:
    lines = [
        "| d | variant | steps | median\\|w1\\| at 3 → end | median\\|w2\\| at 3 → end | "
        "S-rand (end) | S^c-rand (end) | train hinge-active (end) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in pts:
        r = p.sim
        w1 = np.median(np.median(np.abs(r.units["w1"]), -1), 0)
        w2 = np.median(np.median(np.abs(r.units["w2"]), -1), 0)
        t3 = min(3, r.config.steps)
        lines.append(
            f"| {p.params['d']} | {p.params['variant']} | {r.config.steps} | "
            f"{_fmt(w1[t3])} → {_fmt(w1[-1])} | {_fmt(w2[t3])} → {_fmt(w2[-1])} | "
            f"{_fmt(np.median(r.eval['s_rand_acc'][:, -1]))} | "
            f"{_fmt(np.median(r.eval['sc_rand_acc'][:, -1]))} | "
            f"{_fmt(np.median(r.train['active_frac'][:, -1]))} |"
        )
    lines += ["", f"Prototype: {PROTOTYPE['g6']}."]
    return lines


def _g2_lines(pts: list[Point]) -> list[str]:
    lines = [
        "| k | median\\|w1\\| | T η/(2√k) | median\\|w2\\| | test margin std | prototype "
        "\\|w1\\| |",
        "|---|---|---|---|---|---|",
    ]
    for p in pts:
        f = per_seed_final(p)
        cfg = p.sim.config
        lines.append(
            f"| {cfg.k} | {_fmt(np.median(f['w1_all']))} | "
            f"{_fmt(cfg.steps * cfg.eta / (2 * math.sqrt(cfg.k)))} | "
            f"{_fmt(np.median(f['w2_all']))} | {_fmt(np.median(f['test_margin_std']))} | "
            f"{PROTOTYPE['g2'].get(cfg.k, '–')} |"
        )
    return lines


def _g3_lines(pts: list[Point]) -> list[str]:
    lines = [
        "| η | T | median\\|w1\\| | (4−η)/(2√k) | median\\|w2\\| v>0 | median\\|w2\\| v<0 | "
        "margin mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in pts:
        f = per_seed_final(p)
        cfg = p.sim.config
        lines.append(
            f"| {cfg.eta} | {cfg.steps} | {_fmt(np.median(f['w1_all']))} | "
            f"{_fmt(cfg.steps * cfg.eta / (2 * math.sqrt(cfg.k)))} | "
            f"{_fmt(np.median(f['w2_pos']))} | {_fmt(np.median(f['w2_neg']))} | "
            f"{_fmt(np.median(f['test_margin_mean']))} |"
        )
    return lines


def _g7_lines(pts: list[Point]) -> list[str]:
    from theory.setting import theorem_stop_time

    k = pts[0].params["k"]
    lines = [
        "| η | d | median\\|w2\\|·√(dk)/(0.2η) | median\\|w1\\|·2√k/(Tη) | median ‖w̄‖·√k log d "
        "(n = d²) | t̂ (theorem, c_n from α→2) |",
        "|---|---|---|---|---|---|",
    ]
    for p in sorted(pts, key=lambda p: (p.params["eta"], p.params["d"])):
        d, eta, steps = p.params["d"], p.params["eta"], p.params["steps"]
        w2 = np.median(np.median(np.abs(p.extra["det_w2"][:, -1]), -1))
        w1 = np.median(np.median(np.abs(p.extra["det_w1"][:, -1]), -1))
        wb = np.median(p.extra["noisy_s"][:, -1])
        lines.append(
            f"| {eta} | {d:.0e} | {_fmt(w2 * math.sqrt(d * k) / (0.2 * eta))} | "
            f"{_fmt(w1 * 2 * math.sqrt(k) / (steps * eta))} | "
            f"{_fmt(wb * math.sqrt(k) * math.log(d))} | {theorem_stop_time(d, eta)} |"
        )
    return lines


_SETTING = (
    "Setting (THEORY.md Sec. 1): LSN with x1 = γy, x2 = ((y+1)/2)ε, x3:d ~ N(0, I); "
    "f(x) = Σ v_j ReLU(w_j·x) with v_j = ±1/√k (k/2 of each sign, fixed); init "
    "N(0, 1/(dk log⁴ d)); hinge loss; GD on W with a fresh batch of n = c d² points per "
    "step for T = ⌊4/(ηγ²)⌋ − 1 steps (the theorem's t̂ is ≤ 0 at every d here: its "
    "c_n ≈ 27√α makes it vacuous, so THEORY.md's practical rule is used). Test metrics "
    "on 2·10⁵ fresh points at the last step (2·10⁴ at intermediate steps). Statistics "
    "are medians over units, then over seeds, unless stated."
)


def write_report(
    out: Path, points: list[Point], claims: list[dict], meta: dict[str, Any], figures: list[str]
) -> str:
    """Writes report.md and returns its text."""
    by: dict[str, list[Point]] = {}
    for p in points:
        by.setdefault(p.grid, []).append(p)
    lines = [
        "# Theorem 1 (Shah et al. 2020, Sec. 4.1 / App. F): numerical verification",
        "",
        *_head_lines(meta, claims),
        _SETTING,
        "",
        *_claims_section(claims),
    ]
    if "G1" in by:
        lines += [
            "## G1: d-sweep against the prototype (THEORY.md Sec. 7)",
            "",
            *_g1_table(by["G1"]),
            "",
            f"Prototype slope of log|w2| vs log d: {PROTOTYPE['g1_slope']} (d = 128..1024).",
            "",
        ]
    if "G2" in by:
        lines += ["## G2: k-sweep", "", *_g2_lines(by["G2"]), ""]
    if "G3" in by:
        lines += ["## G3: step size", "", *_g3_lines(by["G3"]), ""]
    if "G4" in by:
        lines += ["## G4: sample size", "", *_g4_table(by["G4"]), ""]
    if "G5" in by:
        lines += [
            "## G5: linear-margin phase diagram (finding)",
            "",
            "SB is said to hold when the S^c-randomised accuracy is ≥ 0.99 (the network "
            "ignores x2..d); it breaks when the network uses the slab. T = ⌊4/(ηγ²)⌋ − 1, "
            "batches of n = c d² fresh points (projected sampler).",
            "",
            *_g5_tables(by["G5"]),
            "",
        ]
    if "G6" in by:
        lines += ["## G6: beyond the theorem", "", *_g6_table(by["G6"]), ""]
    if "G7" in by:
        lines += [
            "## G7: population simulator (Lemmas 4–6 iterated, float64)",
            "",
            *_g7_lines(by["G7"]),
            "",
            "Deterministic flow from the theorem's init; ‖w̄‖ column adds the analytic "
            "finite-sample terms of a fresh batch of n = d² points. The slab weight settles "
            "at 0.2η|Z|/√(dk) (step-0 kick), not O(1/√(dk log d)): larger than the "
            "theorem's rate by √log d (THEORY.md Sec. 5.3).",
            "",
        ]
    if figures:
        lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    lines += [
        "## Files",
        "",
        "* `summary.json`: claims and metadata; `config.json`: the grid specs; `env.json`.",
        "* `steps.jsonl`: per (point, step) statistics split by sign(v_j): median/RMS/max "
        "over units of |w1|, |w2|, ‖w_3:d‖ (median over seeds), training-batch hinge-active "
        "fraction, margins, activation agreement, wrong-side firings, and test metrics at "
        "evaluated steps.",
        "* `metrics.csv`: one row per (point, seed) with final values.",
        "* `logs/<grid>/<point>.npz`: raw arrays `units/w1|w2|wbar` [seed, step, unit], "
        "`train/*` [seed, step], `eval/*` [seed, eval step], `eval_steps`, `config/*`, "
        "`params/*`, `extra/*` (population trajectories, lemma measurements).",
        "",
    ]
    text = "\n".join(lines)
    atomic_write_bytes(out / "report.md", text.encode())
    return text


def _seeds_factor(c: dict) -> str:
    """How many times the data a CI straddling the band would need to fit inside it (CI width
    shrinks like 1/sqrt(points)), when the point estimate is inside the band."""
    lo, hi = c["band"]
    v = float(c["value"])
    c_lo, c_hi = (float(x) for x in c["ci"])
    half = (c_hi - c_lo) / 2.0
    dist = min(abs(v - e) for e in (lo, hi) if e is not None)
    if not (half > 0 and dist > 0 and math.isfinite(half)) or verdict(v, c["band"]) != "PASS":
        return ""
    return (
        f" At this estimate, a CI inside the band needs about {(half / dist) ** 2:.0f}x the "
        "seeds (its half-width shrinks like 1/sqrt(seeds))."
    )


def _explain(c: dict) -> str:
    """Why a claim is FAIL or INCONCLUSIVE (for the report)."""
    name = c["name"]
    if c["verdict"] == "INCONCLUSIVE":
        if not _finite(c["value"]):
            return "Nothing could be measured for this claim in this run (value NaN)."
        if "ci" not in c or not all(_finite(x) for x in c["ci"]):
            return (
                "Its 95 % interval could not be computed (too few points), so a PASS cannot "
                "be established."
            )
        text = (
            "The 95 % interval straddles an edge of the band: the data neither establish nor "
            "exclude the claim." + _seeds_factor(c)
        )
        if c["grid"] in ("G1", "G2") and "slope" in name:
            text += (
                " A one-seed median over k = 16 units scatters by ~30 % (log sd 0.29), so a "
                "slope over a factor 4-8 in d or k has a seed-to-seed sd of ~0.03-0.07; "
                "the population simulator with finite-sample terms gives -0.52 over "
                "d = 64..512 and -0.50 over 128..1024."
            )
        if "slope of log median|w2| vs log eta" in name:
            text += (
                " Only 3 seeds per eta; at finite d the init term and the v>0 random walk "
                "also bend the slope (G7 at d = 1e8 isolates the kick: slope 1)."
            )
        return text
    crit = (
        f"This is a stated pass criterion of THEORY.md ({c['criterion']}), and this run does "
        "not meet it. "
        if c.get("criterion")
        else ""
    )
    if c["kind"] == "gap":
        return "Expected: this checks a statement of the proof that is wrong as printed. " + c.get(
            "note", ""
        )
    if "slope of log median|w2| vs log eta" in name:
        return crit + (
            "|w2| ∝ η assumes the step-0 kick dominates; at finite d the init term "
            "σ|Z| and the v>0 random walk (per-step std η/(√k√(2n)), T ∝ 1/η steps, so "
            "it grows like √η) flatten the slope; G7's population run at d = 1e8 "
            "isolates the kick and gives slope 1."
        )
    if "|w1| sqrt(k) / (t eta gamma / 2)" in name:
        return crit + (
            "Cause: the spread is largest at t = 1, where the step-0 increment is eta v "
            "times the fraction of the batch a unit fires on at init, 1/2 +- "
            "1/(2 sqrt n), a relative sd of 1/sqrt(n) (0.8 % at n = 128^2), plus the "
            "init sigma |Z|; over k x seeds units the extreme reaches ~2.5-3 sd, beyond "
            "the 2 % band. The ratio for t >= 2 and the exact per-step law (increment = "
            "eta gamma v_j times the fraction of the batch with y v_j > 0) are separate "
            "claims."
        )
    if c["grid"] in ("G1", "G2") and "slope" in name:
        return crit + ("The whole 95 % interval lies outside the band.")
    if "Lemma 1" in name:
        return crit + (
            "Lemma 1's bound is exceeded at this (small) d; the lemma needs astronomically large d."
        )
    if "S^c" in name or "S-rand" in name:
        return crit + "SB is weaker than claimed in this configuration."
    return crit + "Outside the band; see the grid's table below."


# ---------------------------------------------------------------------------------------------
# re-judging a saved run


def rejudge(run_dir: str | Path) -> dict[str, Any]:
    """Recomputes the verdicts of a saved run from the values, bands and CIs in its
    ``summary.json`` (no simulation): rewrites ``summary.json`` (``verdict``, ``pass``,
    ``criterion`` of every claim and the counts) and, in ``report.md``, the summary under the
    title and the "## Claims" section. Other sections (tables, figures) are kept as they are.

    Returns:
      ``{"counts": {...}, "changed": [(name, old, new), ...]}``; ``old`` is the saved verdict
      (``PASS`` / ``FAIL`` from a pre-verdict ``pass`` field).
    """
    out = Path(run_dir)
    summary = json.loads((out / "summary.json").read_text())
    claims = summary["claims"]
    changed = []
    for c in claims:
        old = c.get("verdict") or ("PASS" if c.get("pass") else "FAIL")
        judge(c)
        if c["verdict"] != old:
            changed.append((f"{c['grid']}: {c['name']}", old, c["verdict"]))
    counts = count_verdicts(claims)
    summary.update(
        n_claims=len(claims),
        n_pass=counts["PASS"],
        n_inconclusive=counts["INCONCLUSIVE"],
        n_fail=counts["FAIL"],
    )
    report = out / "report.md"
    if report.exists():
        text = report.read_text()
        head_at = text.index("Preset `")
        setting_at = text.index("Setting (THEORY.md Sec. 1)")
        claims_at = text.index("## Claims")
        nxt = text.find("\n## ", claims_at + 1)
        rest = text[nxt + 1 :] if nxt >= 0 else ""
        text = (
            text[:head_at]
            + "\n".join(_head_lines(summary, claims))
            + "\n"
            + text[setting_at:claims_at]
            + "\n".join(_claims_section(claims))
            + "\n"
            + rest
        )
        atomic_write_bytes(report, text.encode())
    write_json(out / "summary.json", summary)
    return {"counts": counts, "changed": changed}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m theory.report",
        description="Re-judge a saved verification run: recompute PASS / INCONCLUSIVE / FAIL from "
        "the values, bands and confidence intervals in its summary.json and rewrite "
        "summary.json and the claims section of report.md (no simulation).",
    )
    parser.add_argument(
        "--rejudge",
        required=True,
        metavar="RUN_DIR",
        help="run folder holding summary.json (e.g. docs/results/theorem1_quick)",
    )
    args = parser.parse_args(argv)
    if not (Path(args.rejudge) / "summary.json").exists():
        parser.exit(
            2,
            f"error: rejudge={args.rejudge!r} is invalid: expected a run folder with "
            "summary.json\n",
        )
    res = rejudge(args.rejudge)
    n = res["counts"]
    print(f"{n['PASS']} PASS, {n['INCONCLUSIVE']} INCONCLUSIVE, {n['FAIL']} FAIL")
    for name, old, new in res["changed"]:
        print(f"  {old} -> {new}: {name}")
    return 0


def prediction_wbar(d: int, k: int, n: int, steps: int, eta: float, init: str = "log4") -> float:
    """THEORY.md's ``sqrt(sigma^2 (d-2) + T eta^2 (d-2) / (2 k n))``."""
    from theory.setting import init_sigma

    s2 = init_sigma(d, k, init) ** 2
    return math.sqrt(s2 * (d - 2) + steps * eta**2 * (d - 2) / (2 * k * n))


__all__ += ["prediction_wbar", "rejudge"]


if __name__ == "__main__":
    import sys

    sys.exit(main())
