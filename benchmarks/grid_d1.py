"""App. D.1's hyperparameter grid as one command vs one run per grid point (issue 15).

    python -m benchmarks.grid_d1 [--updates 500] [--models 100x1] [--seeds 1] [--sample 8]

Workload: App. D.1 at paper sizes: noisy LMS-7 (40,000 points, d = 50), the 180-point grid (lr
{0.001, 0.01, 0.05, 0.1, 0.3} x batch {4, 16, 64, 256} x weight decay {0, 5e-5, 5e-4} x
momentum {0, 0.9, 0.95}), SGD, `--updates` updates per model (no stop rule: every model does
the same work; the paper's budget is up to 10^7 updates, sbjax's paper preset 200,000).

* grid: what `experiments.suboptimal_generalization --grid` runs: one `train_sweep` per (FCN,
  batch size) with lr / weight decay / momentum traced (45 points x seeds per program).
* per point: the same `train_sweep` with a one-point grid, i.e. one command per grid point.
  `--sample` points (spread over the batch sizes) are timed after a warm-up call per batch size
  (so compilation is excluded, which favours this side), and the sum over 180 points is
  extrapolated from their mean per batch size.

Prints one JSON row per FCN and writes them to `--out` (if given).
"""

from __future__ import annotations

import argparse
import json
import time

LR = (0.001, 0.01, 0.05, 0.1, 0.3)
BATCH = (4, 16, 64, 256)
WD = (0.0, 5e-5, 5e-4)
MOMENTUM = (0.0, 0.9, 0.95)


def _fcn(spec: str) -> dict:
    try:
        w, d = (int(v) for v in spec.split("x"))
    except ValueError:
        raise SystemExit(f"--models: {spec!r} is not WIDTHxDEPTH, e.g. 100x1") from None
    return {"name": "fcn", "width": w, "depth": d}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.grid_d1", description=__doc__)
    p.add_argument("--updates", type=int, default=500, help="updates per model")
    p.add_argument("--models", default="100x1", help="comma-separated FCNs WIDTHxDEPTH")
    p.add_argument("--seeds", type=int, default=1, help="seeds per grid point")
    p.add_argument("--sample", type=int, default=8, help="per-point runs timed (>= 4)")
    p.add_argument("--n-train", type=int, default=40000)
    p.add_argument("--out", default=None, help="JSON file for the rows")
    args = p.parse_args(argv)
    if args.sample < len(BATCH):
        p.error(f"--sample must be >= {len(BATCH)} (one point per batch size at least)")

    import numpy as np

    from experiments.synthetic import make_data
    from sbjax.runtime import configure_cpu_devices

    configure_cpu_devices()
    from sbjax.train import TrainConfig, train_sweep

    _, (x, y), _ = make_data("noisy_lms7", 50, args.n_train, 100, 0)
    traced = {"lr": list(LR), "weight_decay": list(WD), "momentum": list(MOMENTUM)}
    n_points = len(LR) * len(BATCH) * len(WD) * len(MOMENTUM)
    rng = np.random.default_rng(0)
    every = max(1, args.updates // 2)

    def cfg(bs: int) -> TrainConfig:
        return TrainConfig(
            batch_size=bs, max_steps=args.updates, eval_every=every, stop_rule="none"
        )

    kw = dict(n_seeds=args.seeds, progress=False)
    rows = []
    for spec in args.models.split(","):
        model = _fcn(spec)
        t0 = time.perf_counter()
        grid_compile = 0.0
        for bs in BATCH:
            r = train_sweep(cfg(bs), model, (x, y), grid=traced, **kw)
            grid_compile += r.compile_s
        grid_s = time.perf_counter() - t0

        per_bs = {}
        n_each = args.sample // len(BATCH)
        for bs in BATCH:
            one = {k: [v[0]] for k, v in traced.items()}
            train_sweep(cfg(bs), model, (x, y), grid=one, **kw)  # warm-up: compile
            times = []
            for _ in range(n_each):
                pt = {k: [float(rng.choice(v))] for k, v in traced.items()}
                t = time.perf_counter()
                train_sweep(cfg(bs), model, (x, y), grid=pt, **kw)
                times.append(time.perf_counter() - t)
            per_bs[bs] = float(np.mean(times))
        per_point_sum = sum(per_bs.values()) * (n_points // len(BATCH))
        models = n_points * args.seeds
        row = {
            "model": f"fcn_{spec}",
            "grid_points": n_points,
            "seeds": args.seeds,
            "updates": args.updates,
            "grid_wall_s": round(grid_s, 2),
            "grid_compile_s": round(grid_compile, 2),
            "per_point_s": {str(k): round(v, 3) for k, v in per_bs.items()},
            "per_point_sum_s": round(per_point_sum, 1),
            "speedup": round(per_point_sum / grid_s, 2),
            "model_updates_per_s": round(models * args.updates / grid_s, 1),
            # The paper preset's budget (200k updates) at this rate, compile excluded.
            "paper_budget_h": round((grid_s - grid_compile) * 200_000 / args.updates / 3600, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        from sbjax import io

        io.write_json(args.out, rows)  # atomic: a killed run never leaves a truncated file
    return rows


if __name__ == "__main__":
    main()
