"""Command line: run THEORY.md's verification grids for Theorem 1 and write a report.

    python -m theory.theorem1 --preset quick --out runs/theorem1
    python -m theory.theorem1 --preset full --out runs/theorem1_full
    python -m theory.theorem1 --preset quick --grids G1,G7 --out runs/t1_g1g7

The run folder gets `report.md`, `summary.json` (with the list `claims`), `config.json`,
`env.json`, `metrics.csv`, `steps.jsonl`, raw per-step logs under `logs/` and figures under
`figures/` (see `theory.report`). Population sweeps run in float64 inside `jax.enable_x64`; the
empirical simulators are float32 like the prototype. The exit status is 0 when the run completes,
whatever the claims say (FAILs are results); 2 for a bad command line or an existing run folder.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

from sbjax import validate
from sbjax.io import (
    RunLock,
    check_run_dir,
    environment_info,
    prepare_run_dir,
    record_owned,
    write_json,
)
from theory.presets import GRID_NAMES, PRESETS, preset  # plain data: --help starts no JAX

log = logging.getLogger("theory.theorem1")

_EMPIRICAL_WITH_METHOD = ("G1", "G2", "G3", "G4")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m theory.theorem1",
        description="Numerical verification of Theorem 1 (Shah et al. 2020, Sec. 4.1, App. F) on "
        "LSN: grids G1-G7 of THEORY.md, scaling-law fits, claims with PASS / "
        "INCONCLUSIVE / FAIL.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default="quick",
        help="grid sizes: quick (a few minutes on a 2-core CPU), full (THEORY.md's "
        "sizes), smoke (seconds, for tests)",
    )
    p.add_argument("--out", required=True, help="run folder (must be empty or absent)")
    p.add_argument(
        "--grids",
        default=",".join(GRID_NAMES),
        help="comma-separated subset of " + ", ".join(GRID_NAMES),
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="base seed (seed i of a grid point is fold_in(key(seed), i))",
    )
    p.add_argument(
        "--method",
        choices=("preset", "full", "projected"),
        default="preset",
        help="sampler for G1-G4: the preset's choice, the literal 'full' one, or the "
        "exact-in-law 'projected' one (G5 always uses projected, G6 full)",
    )
    p.add_argument(
        "--init",
        choices=("log4", "log2"),
        default="log4",
        help="init variance 1/(dk log^4 d) (theorem) or 1/(dk log^2 d) (Lemma 1)",
    )
    p.add_argument(
        "--stop",
        choices=("practical", "theorem"),
        default="practical",
        help="steps of the hinge runs in G1-G4 and M: THEORY.md's T = floor(4/eta) - 1, "
        "or the theorem's t_hat = floor((4/eta)(1 - c_n/sqrt(log d))) (needs "
        "--c-n: with the proof's constant t_hat <= 0 at every d)",
    )
    p.add_argument("--c-n", type=float, default=None, help="c_n for --stop theorem")
    p.add_argument(
        "--seeds",
        type=int,
        default=0,
        help="override the number of seeds of every grid (0 = preset's)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="disable the progress bar")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def resolve_specs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The grid specs a command line asks for (validated)."""
    grids = [g.strip() for g in args.grids.split(",") if g.strip()]
    if not grids:
        validate.fail("grids", args.grids, "a non-empty comma-separated list")
    for g in grids:
        validate.check_choice("grids", g, GRID_NAMES)
    validate.check_int("seed", args.seed, min_value=0)
    validate.check_int("seeds", args.seeds, min_value=0)
    if args.seeds == 1:
        validate.fail("seeds", 1, "0 (preset) or >= 2 (fits and spreads need two seeds)")
    specs = preset(args.preset)
    out = {}
    for g in GRID_NAMES:  # keep the canonical order
        if g not in grids:
            continue
        spec = specs[g]
        if args.method != "preset" and g in _EMPIRICAL_WITH_METHOD:
            spec["method"] = args.method
        if args.seeds and "seeds" in spec:
            spec["seeds"] = args.seeds
        spec["init"] = args.init
        if g in (*_EMPIRICAL_WITH_METHOD, "M"):
            spec["stop"] = args.stop
            if args.c_n is not None:
                spec["c_n"] = args.c_n
        out[g] = spec
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the grids and writes the run folder; returns the summary dict."""
    specs = resolve_specs(args)
    if args.stop == "theorem":  # fail before any work if t_hat is vacuous somewhere
        from theory.grids import steps_for

        for spec in specs.values():
            for d in spec.get("ds", [spec.get("d")]):
                if d is not None and "stop" in spec:
                    steps_for(spec, d, spec.get("eta", 1.0))
    from sbjax.runtime import configure_cpu_devices

    configure_cpu_devices()  # one CPU device per core, or $SBJAX_CPU_DEVICES (before JAX starts)
    check_run_dir(args.out, experiment="theorem1", overwrite=args.overwrite)
    with RunLock(args.out, "theorem1"):  # one run per folder, for the life of the run
        return _run_locked(args, specs)


# Every top-level name a theorem1 run writes (`--overwrite` replaces only these).
OUTPUTS = (
    "config.json",
    "env.json",
    "logs",
    "steps.jsonl",
    "metrics.csv",
    "figures",
    "report.md",
    "summary.json",
)


def _run_locked(args: argparse.Namespace, specs: dict) -> dict[str, Any]:
    from tqdm import tqdm

    from theory.claims import compute_claims, count_verdicts, g5_phase_table
    from theory.grids import count_points, run_grid
    from theory.report import write_figures, write_logs, write_report

    out = prepare_run_dir(args.out, experiment="theorem1", overwrite=args.overwrite)
    record_owned(out, *OUTPUTS)
    t0 = time.perf_counter()
    write_json(
        out / "config.json",
        {
            "experiment": "theorem1",
            "preset": args.preset,
            "seed": args.seed,
            "grids": specs,
            "argv": sys.argv[1:],
        },
    )
    env = environment_info()
    write_json(out / "env.json", env)
    total = sum(count_points(g, s) for g, s in specs.items())
    bar = tqdm(total=total, disable=args.no_progress, unit="pt", dynamic_ncols=True)
    started = {"any": False}

    def tick(desc: str) -> None:
        if started["any"]:
            bar.update(1)
        started["any"] = True
        bar.set_description(desc)

    points = []
    timings = {}
    for g, spec in specs.items():
        tg = time.perf_counter()
        pts = run_grid(g, spec, seed=args.seed, callback=tick)
        timings[g] = time.perf_counter() - tg
        write_logs(out, pts)  # partial results survive an interrupted run
        points.extend(pts)
        log.info("grid %s: %d points in %.1fs", g, len(pts), timings[g])
    if started["any"]:
        bar.update(1)
    bar.close()
    claims = compute_claims(points)
    counts = count_verdicts(claims)
    figures = write_figures(out, points)
    seconds = time.perf_counter() - t0
    meta = {
        "preset": args.preset,
        "grids": list(specs),
        "seed": args.seed,
        "seconds": seconds,
        "device": ", ".join(env.get("devices", [])) or "cpu",
    }
    summary: dict[str, Any] = {
        **meta,
        "seconds_per_grid": timings,
        "n_claims": len(claims),
        "n_pass": counts["PASS"],
        "n_inconclusive": counts["INCONCLUSIVE"],
        "n_fail": counts["FAIL"],
        "claims": claims,
        "figures": figures,
    }
    g5 = [p for p in points if p.grid == "G5"]
    if g5:
        rows, cross = g5_phase_table(g5)
        summary["g5_phase_diagram"] = {"rows": rows, "crossovers": cross}
    write_report(out, points, claims, meta, figures)
    write_json(out / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("jax").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        summary = run(args)
    except (FileExistsError, ValueError) as e:
        parser.exit(2, f"error: {e}\n")
    width = max(len(c["name"]) for c in summary["claims"]) if summary["claims"] else 10
    for c in summary["claims"]:
        log.info(
            "%-4s %-*s %12.5g  %s",
            c["grid"],
            min(width, 90),
            c["name"][:90],
            c["value"],
            c["verdict"],
        )
    log.info(
        "%d claims: %d PASS, %d INCONCLUSIVE, %d FAIL; report: %s (%.0f s)",
        summary["n_claims"],
        summary["n_pass"],
        summary["n_inconclusive"],
        summary["n_fail"],
        Path(args.out) / "report.md",
        summary["seconds"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
