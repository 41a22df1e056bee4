"""Scan vs host loop per model family on this backend (why `loop="auto"` picks what it picks).

    python -m benchmarks.loop_choice --models cnn1d_32x7x1,gru_100x10x1 --steps 400

Trains 3 seeds of each model on LMS-5 (20k points, d = 50) for `--steps` updates with
loop="scan" and loop="host" and prints wall, compile and training seconds of each.
"""

from __future__ import annotations

import argparse
import time


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.loop_choice", description=__doc__)
    p.add_argument("--models", default="cnn1d_32x7x1,gru_100x10x1,fcn_100x1")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n-train", type=int, default=20000)
    args = p.parse_args(argv)

    from experiments.synthetic import MODELS, make_data
    from sbjax.train import TrainConfig, train_sweep

    _, (x, y), _ = make_data("lms5", 50, args.n_train, 100, 0)
    cfg = TrainConfig(
        lr=0.1, batch_size=256, max_steps=args.steps, eval_every=args.steps // 2, stop_rule="none"
    )
    rows = []
    for name in args.models.split(","):
        for loop in ("scan", "host"):
            t = time.perf_counter()
            r = train_sweep(
                cfg, MODELS[name], (x, y), n_seeds=args.seeds, loop=loop, progress=False
            )
            row = {
                "model": name,
                "loop": loop,
                "call_s": round(time.perf_counter() - t, 2),
                "compile_s": round(r.compile_s, 2),
            }
            rows.append(row)
            print(row, flush=True)
    return rows


if __name__ == "__main__":
    main()
