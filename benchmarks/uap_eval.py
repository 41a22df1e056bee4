"""UAP evaluation of many models at once: wall time of SVD-UAP fitting and UAP accuracy.

    python -m benchmarks.uap_eval                       # 64 (100,1)-FCNs, LMS-5 quick sizes
    python -m benchmarks.uap_eval --models 256 --json runs/uap_eval.json

Workload (issue 15, "UAP evaluation of 64 models"): K (100, 1)-FCNs trained together by one
`train_sweep` (SGD lr 0.1, batch 256, `--train-updates` updates; not timed) on LMS-5 at the quick
preset's sizes of `experiments.uaps` (d = 50, 20,000 training and 2,000 test points), then, as
the experiment does with the reference's LMS-5 settings (REFERENCE nb06: L2 PGD radius 1.0 x
drange, step 0.05 x drange, 30 iterations, UAP norm 1.0):

* `svd_uap`: the PGD perturbations of every model on the 2,000 test points and the top right
  singular vector of each model's [2000, 50] perturbation matrix;
* `uap_accuracy`: every model's accuracy under its UAP (both signs, the lower kept);
* `uap_report`: both plus the fraction of each UAP on S (what `experiments.uaps` calls).

Each is called 1 + `--repeats` times on the stacked [K, ...] parameters; `first_s` is the first call (with its
compilation), `wall_s` the best of `--repeats` further calls (steady state; the best, because
other jobs on a shared machine only ever add time), each until the results are ready.
Evaluation functions run on JAX's default device (one CPU core), not sharded over devices.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

N_TRAIN, N_TEST, D, WIDTH = 20_000, 2_000, 50, 100


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.uap_eval",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", type=int, default=64, help="K, stacked models evaluated together")
    p.add_argument("--n-train", type=int, default=N_TRAIN, help="training points")
    p.add_argument("--n-test", type=int, default=N_TEST, help="test points (UAP fit and eval)")
    p.add_argument("--train-updates", type=int, default=1500, help="SGD updates per model")
    p.add_argument("--pgd-steps", type=int, default=30, help="PGD iterations of the SVD-UAP")
    p.add_argument("--repeats", type=int, default=2, help="timed calls after the first (best kept)")
    p.add_argument("--devices", type=int, default=None, help="CPU devices for the training")
    p.add_argument("--json", default=None, help="write the results JSON here")
    args = p.parse_args(argv)
    for name in ("models", "n_train", "n_test", "train_updates", "pgd_steps", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"{name.replace('_', '-')}={getattr(args, name)} is invalid: >= 1")
    return args


def _timed(fn, repeats: int) -> tuple[float, float, object]:
    """(first call s, best of `repeats` further calls s, output)."""
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return first, best, out


def main(argv=None) -> dict:
    args = parse_args(argv)
    from sbjax.runtime import configure_cpu_devices

    configure_cpu_devices(args.devices)
    import jax
    import numpy as np

    from benchmarks.train_throughput import machine_info, versions
    from sbjax.data import make_dataset
    from sbjax.eval import attacks as A
    from sbjax.eval import uap as U
    from sbjax.models import make_model
    from sbjax.train import TrainConfig, train_sweep

    load_start = os.getloadavg()[0]
    ds = make_dataset("lms", k=5, d=D)
    (x, y), (xt, yt) = ds.sample_split(jax.random.key(0), args.n_train, args.n_test)
    model = make_model({"name": "fcn", "width": WIDTH, "depth": 1})
    cfg = TrainConfig(
        lr=0.1,
        batch_size=256,
        max_steps=args.train_updates,
        eval_every=args.train_updates,
        stop_rule="none",
        train_eval_size=4096,
    )
    res = train_sweep(
        cfg, model, (np.asarray(x), np.asarray(y)), n_seeds=args.models, progress=False
    )
    params = jax.device_put(res.params)  # default device, like the experiment's evaluation
    lo, hi = A.data_bounds(x, xt)
    drange = hi - lo
    key = jax.random.key(1)
    settings = dict(eps=1.0 * drange, step_size=0.05 * drange, n_iter=args.pgd_steps)
    settings["bounds"] = (lo, hi)

    rows = {}

    def fit():
        return U.svd_uap(model.logits, params, xt, yt, key, **settings)

    first, wall, u = _timed(
        fit, args.repeats
    )  # unit-norm directions [K, d]; eps=1.0 below scales them
    rows["svd_uap"] = {"first_s": first, "wall_s": wall}

    def acc():
        return U.uap_accuracy(
            model.logits, params, xt, yt, u, eps=1.0, both_signs=True, bounds=(lo, hi)
        )

    first, wall, a = _timed(acc, args.repeats)
    rows["uap_accuracy"] = {"first_s": first, "wall_s": wall}

    def report():
        return U.uap_report(
            model.logits,
            params,
            (xt, yt),
            (xt, yt),
            ds,
            key,
            kind="svd",
            eps=1.0,
            pgd_eps=settings["eps"],
            step_size=settings["step_size"],
            n_iter=args.pgd_steps,
            bounds=(lo, hi),
        )

    first, wall, rep = _timed(report, args.repeats)
    rows["uap_report"] = {"first_s": first, "wall_s": wall}
    out = {
        "command": "python -m benchmarks.uap_eval "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "models": args.models,
        "n_test": args.n_test,
        "pgd_steps": args.pgd_steps,
        "train_acc_mean": float(np.asarray(res.history["train_acc"])[:, -1].mean()),
        "clean_acc_mean": float(np.mean(rep["clean_accuracy"])),
        "uap_acc_mean": float(np.mean(np.asarray(a))),
        "uap_frac_on_s_mean": float(np.mean(rep["fraction_on_s"])),
        "timings": rows,
        "load_1m_start": load_start,
        "load_1m_end": os.getloadavg()[0],
        "backend": jax.default_backend(),
        "machine": machine_info(),
        "versions": versions(),
    }
    print(json.dumps({k: v for k, v in out.items() if k not in ("machine",)}, indent=2))
    if args.json:
        from sbjax import io

        io.write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
