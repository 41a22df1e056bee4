"""Scan vs host loop, vmap vs map, per model family on this backend (why `loop="auto"` and
`vectorize="auto"` pick what they pick).

    python -m benchmarks.loop_choice --models cnn1d_32x7x1,gru_100x10x1 --steps 400
    python -m benchmarks.loop_choice --models cnn1d_32x7x1 --loops scan --vectorize vmap,map

Trains `--seeds` seeds of each model on LMS-5 (20k points, d = 50) for `--steps` updates with
every combination of `--loops` and `--vectorize` and prints the wall and compile seconds of each
`train_sweep` call (on one CPU device per core, as the experiments run; `--devices 1` for one).
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
    p.add_argument("--loops", default="scan,host", help="comma-separated: scan, host")
    p.add_argument("--vectorize", default="vmap", help="comma-separated: vmap, map")
    p.add_argument("--devices", type=int, default=None, help="CPU devices (default: one per core)")
    args = p.parse_args(argv)

    from sbjax.runtime import configure_cpu_devices

    configure_cpu_devices(args.devices)

    from experiments.synthetic import MODELS, make_data
    from sbjax.train import TrainConfig, train_sweep

    _, (x, y), _ = make_data("lms5", 50, args.n_train, 100, 0)
    cfg = TrainConfig(
        lr=0.1, batch_size=256, max_steps=args.steps, eval_every=args.steps // 2, stop_rule="none"
    )
    rows = []
    for name in args.models.split(","):
        for loop in args.loops.split(","):
            for vec in args.vectorize.split(","):
                t = time.perf_counter()
                r = train_sweep(
                    cfg,
                    MODELS[name],
                    (x, y),
                    n_seeds=args.seeds,
                    loop=loop,
                    vectorize=vec,
                    progress=False,
                )
                row = {
                    "model": name,
                    "loop": loop,
                    "vectorize": vec,
                    "call_s": round(time.perf_counter() - t, 2),
                    "compile_s": round(r.compile_s, 2),
                }
                rows.append(row)
                print(row, flush=True)
    return rows


if __name__ == "__main__":
    main()
