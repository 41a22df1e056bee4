"""Shortcut atlas: one compiled program per architecture vs a Python loop over its models.

    python -m benchmarks.atlas [--archs relu_d1,relu_d4] [--seeds 7] [--steps 1000]
                               [--cases program,loop] [--json OUT.json]

Workload (defaults = `python -m experiments.shortcut_atlas --preset quick`'s atlas part): the
5 availability x 5 predictivity cells of the quick preset, 7 seeds each (175 models per
architecture), 2,000 training, 1,000 test and 2,000 probe points per model sampled inside the
program, (64, d)-FCNs, Adam lr 1e-3, batch 64, 1000 updates. Two ways to run the same one-model
program (`sbjax.train.atlas.make_cell_program`, same numbers):

* ``program``: every (cell, seed) model of one architecture as one `jit(vmap)` sharded over every
  CPU device (one per core);
* ``loop``: the one-model program compiled once and called per (cell, seed) from Python (one
  device): "the same cells trained one model at a time".

Wall times exclude compilation (reported separately); the load average before and after each case
is printed, since other jobs on the machine change the times.
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.atlas")
    ap.add_argument("--archs", default="relu_d1,relu_d4", help="architectures of the atlas")
    ap.add_argument("--seeds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--cases", default="program,loop")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from sbjax.runtime import configure_cpu_devices

    configure_cpu_devices()
    import numpy as np

    from experiments.shortcut_atlas import PRESETS, model_config
    from experiments.synthetic import train_config
    from sbjax.data.atlas import AtlasData
    from sbjax.models import make_model
    from sbjax.train.atlas import atlas_sweep

    p = PRESETS["quick"]
    cfg = train_config(
        p.train.replace(max_steps=args.steps, eval_every=args.steps), stop_rule="none"
    )
    data = AtlasData(
        embed_dim=p.embed_dim,
        max_nesting=p.max_nesting,
        n_train=p.n_train,
        n_test=p.n_test,
        n_probe=p.n_probe,
    )
    cells = [{"rho_s": r, "rho_c": p.rho_c, **a} for r in p.predictivity for a in p.availability]
    rows = []
    for arch in args.archs.split(","):
        model = make_model(model_config(p, arch))
        ref = None
        for case in args.cases.split(","):
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            r = atlas_sweep(
                cfg, model, data, cells, n_seeds=args.seeds, strategy=case.split("_")[0]
            )
            total = time.perf_counter() - t0
            n = int(r.metrics["shortcut_bias"].size)
            diff = (
                0.0 if ref is None else float(np.nanmax(np.abs(r.metrics["shortcut_bias"] - ref)))
            )
            ref = r.metrics["shortcut_bias"] if ref is None else ref
            rows.append(
                {
                    "arch": arch,
                    "case": case,
                    "models": n,
                    "devices": r.n_devices,
                    "run_s": round(r.run_s, 2),
                    "compile_s": round(r.compile_s, 2),
                    "total_s": round(total, 2),
                    "s_per_model": round(r.run_s / n, 4),
                    "max_bias_diff_vs_first": round(diff, 4),
                    "load_before": round(load0, 2),
                    "load_after": round(os.getloadavg()[0], 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    print(
        "| arch | case | models | devices | run s | s / model | compile s | load before / after |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print(
            f"| {row['arch']} | {row['case']} | {row['models']} | {row['devices']} | "
            f"{row['run_s']} | {row['s_per_model']} | {row['compile_s']} | "
            f"{row['load_before']} / {row['load_after']} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return rows


if __name__ == "__main__":
    main()
