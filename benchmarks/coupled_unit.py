"""Coupled training units vs independent models: wall time per sweep (issue 12).

    python -m benchmarks.coupled_unit [--seeds 4] [--k 4] [--epochs 2]

Workload: a (100, 1)-FCN on N = 50,000 Gaussian inputs (d = 50, label = sign of a linear score),
SGD lr 0.1, batch 256, `--epochs` epochs; S seeds x K members trained as
(a) K independent members (unit_size 1, today's sweep),
(b) units of K members without a coupling term (unit_size K),
(c) units of K members with a coupling penalty (member_agreement, lambda 0.1),
(d) (a) with spectral decoupling and a 4-point grid over its strength (one compiled program:
    compile counts are read from the program cache).
Each case is called twice; the second call's wall time is reported (compile time from the first).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()

    from sbjax.models import make_model
    from sbjax.train import TrainConfig, train_sweep
    from sbjax.train import objective as obj
    from sbjax.train import sweep as sweep_mod

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50_000, 50)).astype(np.float32)
    y = (x @ rng.normal(size=50) > 0).astype(np.int32)
    model = make_model({"name": "fcn", "width": 100, "depth": 1})
    steps = args.epochs * int(np.ceil(len(x) / 256))
    cfg = TrainConfig(
        lr=0.1,
        batch_size=256,
        max_steps=steps,
        eval_every=steps,
        stop_rule="none",
        train_eval_size=4096,
    )
    s, k = args.seeds, args.k
    cases = {
        "independent (unit_size 1)": dict(n_members=k),
        "unit, no coupling": dict(n_members=k, unit_size=k),
        "unit + member_agreement": dict(
            n_members=k,
            unit_size=k,
            objective=obj.Objective(penalties=(obj.member_agreement(default=0.1),)),
        ),
        "independent + SD grid x4": dict(
            n_members=k,
            objective=obj.Objective(penalties=(obj.spectral_decoupling(),)),
            grid={"lambda_spectral_decoupling": [0.0, 1e-3, 1e-2, 1e-1]},
        ),
    }
    rows = []
    for name, kw in cases.items():
        n0 = len(sweep_mod._PROGRAM_CACHE)
        first = train_sweep(cfg, model, (x, y), n_seeds=s, progress=False, **kw)
        compiled = len(sweep_mod._PROGRAM_CACHE) - n0
        t0 = time.perf_counter()
        r = train_sweep(cfg, model, (x, y), n_seeds=s, progress=False, **kw)
        wall = time.perf_counter() - t0
        n_models = r.n_models
        rows.append(
            {
                "case": name,
                "models": n_models,
                "wall_s": round(wall, 2),
                "compile_s": round(first.compile_s, 2),
                "programs_compiled": compiled,
                "s_per_model": round(wall / n_models, 3),
                "train_acc_min": float(np.min(r.history["train_acc"][:, -1])),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print("| case | models | wall s | s / model | compile s | programs compiled | min train acc |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['case']} | {r['models']} | {r['wall_s']} | {r['s_per_model']} | "
            f"{r['compile_s']} | {r['programs_compiled']} | {r['train_acc_min']:.3f} |"
        )


if __name__ == "__main__":
    main()
