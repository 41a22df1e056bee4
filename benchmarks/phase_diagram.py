"""Shortcut phase diagram: one compiled program for the whole grid vs a Python loop over its cells.

    python -m benchmarks.phase_diagram [--p 0,0.05,...] [--margins ...] [--k 3,5,7] [--seeds 2]
                                       [--steps 4000] [--json OUT.json]

Workload (defaults = `python -m experiments.diagnostics --preset quick`'s phase part): noisy
LMS-k (d = 50, 10,000 training and 2 x 2,000 test points per model, sampled inside the program),
a (100, 1)-FCN per (p, linear margin, k, seed), SGD lr 0.1, momentum 0.9, wd 5e-5, batch 256,
4000 updates, an evaluation of four monitor sets every 500. Three ways to run the same
one-model program (`sbjax.train.phase.make_cell_program`, same steps, same numbers):

* ``program``: the grid as one `jit(vmap)` sharded over every CPU device (one per core);
* ``program_1dev``: the same on one device;
* ``loop``: the one-model program compiled once and called per (cell, seed) from Python (one
  device), the reference code's shape.

Wall times exclude compilation (reported separately); the load average before and after each
case is printed, since other jobs on the machine change the times.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--p", default="0,0.05,0.1,0.2,0.3,0.5")
    ap.add_argument("--margins", default="0,0.1,0.2,0.3,0.5")
    ap.add_argument("--k", default="3,5,7")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--n-train", type=int, default=10000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--d", type=int, default=50)
    ap.add_argument("--cases", default="program,program_1dev,loop")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from sbjax.runtime import configure_cpu_devices

    configure_cpu_devices()
    import jax
    import numpy as np

    from sbjax.models import make_model
    from sbjax.train import TrainConfig
    from sbjax.train.phase import PhaseData, phase_diagram

    cfg = TrainConfig(
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-5,
        batch_size=256,
        max_steps=args.steps,
        eval_every=args.eval_every,
        stop_rule="none",
    )
    data = PhaseData(d=args.d, n_train=args.n_train, n_test=args.n_test)
    model = make_model({"name": "fcn", "width": 100, "depth": 1})
    grid = dict(
        p=_floats(args.p),
        margin=_floats(args.margins),
        k=[int(v) for v in _floats(args.k)],
        n_seeds=args.seeds,
    )
    rows, ref = [], None
    for case in args.cases.split(","):
        kw = {"strategy": "loop"} if case == "loop" else {"strategy": "program"}
        if case == "program_1dev":
            kw["devices"] = jax.devices()[:1]
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        r = phase_diagram(cfg, model, data, **grid, **kw)
        total = time.perf_counter() - t0
        n = int(np.prod(r.metrics["test_acc"].shape))
        diff = (
            0.0
            if ref is None
            else max(float(np.max(np.abs(r.metrics[k] - ref.metrics[k]))) for k in r.metrics)
        )
        ref = ref or r
        rows.append(
            {
                "case": case,
                "models": n,
                "devices": r.n_devices,
                "run_s": round(r.run_s, 2),
                "compile_s": round(r.compile_s, 2),
                "total_s": round(total, 2),
                "s_per_model": round(r.run_s / n, 3),
                "max_metric_diff_vs_first": round(diff, 4),
                "load_before": round(load0, 2),
                "load_after": round(os.getloadavg()[0], 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print("| case | models | devices | run s | s / model | compile s | load before / after |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print(
            f"| {row['case']} | {row['models']} | {row['devices']} | {row['run_s']} | "
            f"{row['s_per_model']} | {row['compile_s']} | {row['load_before']} / "
            f"{row['load_after']} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
