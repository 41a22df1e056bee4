"""Scale benchmark: how many (100, 1)-FCNs one `train_sweep` program trains, and how fast.

    python -m benchmarks.scale --out runs/scale                       # K = 1, 2, 4, ..., 4096
    python -m benchmarks.scale --max-models 256 --updates 100 --out runs/scale_cpu
    python -m benchmarks.scale --n-train 10000,50000,200000 --out runs/scale_n

Workload: K models (seeds) of Linear(d, 100) -> ReLU -> Linear(100, 2) (PyTorch-style init) on
LMS-5 (d = 50 by default; NumPy sampler of `benchmarks.train_throughput`), SGD lr 0.1, batch 256,
a fixed number of updates (`--updates`) and one evaluation at the end on the first
`--eval-size` training points. K doubles from 1 up to `--max-models` on whatever backend JAX finds
(every CPU core as a device, or all GPUs / TPU cores); the model axis is sharded over all devices
as in every sbjax sweep. For each data size N (`--n-train`, ascending) and K (ascending):

* `wall_s`: wall time of a second `train_sweep` call with the same arguments (its programs are
  cached: steady state; includes data transfer and the final evaluation); `first_call_s` the first
  call's total; `compile_s` the first call's compile time (`SweepResult.compile_s`; JAX's
  persistent compilation cache is not enabled here, so it is a real compile).
* `model_samples_per_s` = updates x batch x K / wall_s; `gflops` = 6 x parameters x that / 1e9.
* `peak_device_mb`: the largest `peak_bytes_in_use` over this process's devices
  (`Device.memory_stats()`; GPU and TPU report it, XLA:CPU does not: then None, and
  `peak_rss_mb`, the process's peak resident memory, is the memory figure). Both are high-water
  marks since the process started (JAX cannot reset them): as K and N only grow, a point's value is
  its own peak unless an earlier point was larger (`peak_grew` is False then).
* `status`: "ok", "oom" (RESOURCE_EXHAUSTED / out of memory: K stops doubling for this N) or
  "time" (the point took longer than `--max-point-s`: K stops doubling for this N).

The largest K that fits is reported per N (`largest_k`): limited by "oom", or "max_models" /
"time" when no allocation failed. The JSON (`scale.json`) and a Markdown table (`scale.md`) go to
`--out` (rewritten after every point, so a run cut short keeps its rows); the table is also
printed. With `--distributed` (`jax.distributed.initialize()`, see docs/multihost.md) the model
axis spans every process's devices and only process 0 prints and writes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import sys
import time

BATCH = 256
LR = 0.1
WIDTH = 100
OOM_MARKERS = ("RESOURCE_EXHAUSTED", "out of memory", "Out of memory", "OOM")


def _powers_of_two(lo: int, hi: int) -> list[int]:
    ks, k = [], 1
    while k <= hi:
        if k >= lo:
            ks.append(k)
        k *= 2
    if not ks or ks[-1] != hi:
        ks.append(hi)  # --max-models that is not a power of two is measured too
    return ks


def _int_list(text: str, name: str) -> list[int]:
    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{name}={text!r} is invalid: expected comma-separated integers") from None
    if not vals:
        raise ValueError(f"{name}={text!r} is invalid: expected at least one integer")
    return vals


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--max-models", type=int, default=4096, help="largest K (models per sweep)")
    p.add_argument("--min-models", type=int, default=1, help="smallest K")
    p.add_argument("--n-train", default="50000", help="comma-separated training-set sizes N")
    p.add_argument("--d", type=int, default=50, help="input dimension of LMS-5")
    p.add_argument("--updates", type=int, default=200, help="SGD updates per model")
    p.add_argument("--batch-size", type=int, default=BATCH, help="minibatch size")
    p.add_argument("--eval-size", type=int, default=4096, help="training points evaluated at end")
    p.add_argument(
        "--max-point-s",
        type=float,
        default=None,
        help="stop doubling K (for this N) after a point whose two calls took longer (s)",
    )
    p.add_argument(
        "--no-warm",
        action="store_true",
        help="one call per point: wall_s = first call minus compile (halves the run time)",
    )
    p.add_argument(
        "--devices",
        type=int,
        default=None,
        help="CPU devices (default: $SBJAX_CPU_DEVICES, else one per core); ignored on GPU/TPU",
    )
    p.add_argument(
        "--distributed", action="store_true", help="call jax.distributed.initialize() first"
    )
    p.add_argument("--out", default=None, help="folder for scale.json and scale.md")
    args = p.parse_args(argv)
    args.n_train = sorted(_int_list(args.n_train, "n-train"))
    if not 1 <= args.min_models <= args.max_models:
        raise ValueError(
            f"min-models={args.min_models}, max-models={args.max_models} are invalid: "
            "expected 1 <= min-models <= max-models"
        )
    for name in ("updates", "batch_size", "eval_size", "d"):
        if getattr(args, name) < (2 if name == "d" else 1):
            raise ValueError(f"{name.replace('_', '-')}={getattr(args, name)} is invalid")
    if min(args.n_train) < args.batch_size:
        raise ValueError(
            f"n-train={min(args.n_train)} is invalid: expected >= batch-size ({args.batch_size})"
        )
    return args


def is_oom(err: BaseException) -> bool:
    """Whether an exception is XLA's allocation failure (RESOURCE_EXHAUSTED)."""
    return any(m in str(err) for m in OOM_MARKERS)


def _memory() -> tuple[float | None, float]:
    """(largest peak_bytes_in_use over local devices in MB or None, peak RSS of the process MB)."""
    import jax

    peaks = []
    for dev in jax.local_devices():
        try:
            stats = dev.memory_stats()
        except Exception:  # some backends raise instead of returning None
            stats = None
        if stats and "peak_bytes_in_use" in stats:
            peaks.append(stats["peak_bytes_in_use"] / 2**20)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return (max(peaks) if peaks else None), rss


def _setup(args, n: int):
    from sbjax.models import make_model
    from sbjax.train import TrainConfig

    cfg = TrainConfig(
        optimizer="sgd",
        lr=LR,
        batch_size=args.batch_size,
        drop_last=False,
        loss="ce",
        max_steps=args.updates,
        eval_every=args.updates,
        stop_rule="none",
        train_eval_size=min(args.eval_size, n),
    )
    model = make_model(
        {"name": "fcn", "width": WIDTH, "depth": 1, "activation": "relu", "init": "torch"}
    )
    return cfg, model


def measure_point(args, x, y, k: int) -> dict:
    """Trains K models twice (compile, then steady state) and returns the point's row."""
    import numpy as np

    from sbjax.train import train_sweep

    n, d = x.shape
    n_params = d * WIDTH + WIDTH + WIDTH * 2 + 2
    cfg, model = _setup(args, n)
    row = {"n_train": n, "k": k, "updates": args.updates, "batch": args.batch_size}
    before, _ = _memory()
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        first = train_sweep(cfg, model, (x, y), n_seeds=k, seed=0, progress=False)
        res = first
        if not args.no_warm:
            res = train_sweep(cfg, model, (x, y), n_seeds=k, seed=0, progress=False)
    except Exception as err:  # XlaRuntimeError (jax.errors.JaxRuntimeError) on OOM
        if not is_oom(err):
            raise
        row.update(status="oom", error=str(err).splitlines()[0][:300])
        row["peak_device_mb"], row["peak_rss_mb"] = _memory()
        return row
    total = time.perf_counter() - t0
    wall = res.wall_s if not args.no_warm else first.wall_s - first.compile_s
    rate = args.updates * args.batch_size * k / wall
    peak_dev, rss = _memory()
    acc = np.asarray(res.history["train_acc"])[:, -1]
    row.update(
        status="ok",
        wall_s=wall,
        first_call_s=first.wall_s,
        compile_s=first.compile_s,
        point_s=total,
        model_samples_per_s=rate,
        gflops=6 * n_params * rate / 1e9,
        peak_device_mb=peak_dev,
        peak_grew=None if peak_dev is None else (before is None or peak_dev > before),
        peak_rss_mb=rss,
        train_acc_mean=float(acc.mean()),
        load_1m=load,
    )
    if args.max_point_s is not None and total > args.max_point_s:
        row["status"] = "time"
    return row


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown_table(report: dict) -> str:
    """The results as Markdown: one row per (N, K), then the largest K per N."""
    mem_note = (
        "peak device MB = max over devices of `memory_stats()['peak_bytes_in_use']`"
        if report["memory_stats_available"]
        else "this backend reports no device memory statistics (`memory_stats()` is None): "
        "peak device MB is '-', peak RSS MB is the process's resident-memory high-water mark"
    )
    lines = [
        f"Backend {report['backend']} ({report['n_devices']} device(s): {report['device_kind']}), "
        f"{report['process_count']} process(es); {mem_note}.",
        "",
        "| N | K | wall s | compile s | first call s | model-samples/s | GFLOP/s | peak device MB "
        "| peak RSS MB | train acc | load | status |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['n_train']} | {r['k']} | {_fmt(r.get('wall_s'), '.2f')} "
            f"| {_fmt(r.get('compile_s'), '.2f')} | {_fmt(r.get('first_call_s'), '.2f')} "
            f"| {_fmt(r.get('model_samples_per_s'), '.3g')} | {_fmt(r.get('gflops'), '.1f')} "
            f"| {_fmt(r.get('peak_device_mb'), '.0f')} | {_fmt(r.get('peak_rss_mb'), '.0f')} "
            f"| {_fmt(r.get('train_acc_mean'), '.3f')} | {_fmt(r.get('load_1m'), '.1f')} "
            f"| {r['status']} |"
        )
    lines += ["", "| N | largest K that ran | limited by |", "|---:|---:|---|"]
    for n, v in report["largest_k"].items():
        lines.append(f"| {n} | {_fmt(v['k'], 'd')} | {v['limited_by']} |")
    return "\n".join(lines)


def _write(out: str, report: dict) -> None:
    from sbjax import io

    io.write_json(os.path.join(out, "scale.json"), report)
    io.atomic_write_bytes(os.path.join(out, "scale.md"), (markdown_table(report) + "\n").encode())


def main(argv=None) -> dict:
    """Runs the sweep over (N, K) and returns the report (also written to `--out`)."""
    args = parse_args(argv)
    from sbjax.runtime import configure_cpu_devices, init_distributed

    configure_cpu_devices(args.devices)  # before JAX starts; only affects the CPU backend
    init_distributed(args.distributed or None)
    import jax

    from benchmarks.train_throughput import machine_info, make_lms5, versions

    main_process = jax.process_index() == 0
    devices = jax.devices()
    mem_available = _memory()[0] is not None
    report = {
        "command": "python -m benchmarks.scale "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "backend": jax.default_backend(),
        "n_devices": len(devices),
        "device_kind": devices[0].device_kind,
        "process_count": jax.process_count(),
        "memory_stats_available": mem_available,
        "machine": machine_info(),
        "versions": versions(),
        "workload": {
            "model": f"FCN Linear({args.d},{WIDTH})-ReLU-Linear({WIDTH},2), torch init",
            "n_params": args.d * WIDTH + WIDTH + WIDTH * 2 + 2,
            "data": f"LMS-5, d={args.d}",
            "optimizer": f"SGD lr {LR}",
            "batch": args.batch_size,
            "updates": args.updates,
            "eval_size": args.eval_size,
            "warm": not args.no_warm,
        },
        "results": [],
        "largest_k": {},
    }
    x_all, y_all = make_lms5(max(args.n_train), d=args.d)
    for n in args.n_train:
        x, y = x_all[:n], y_all[:n]
        largest = {"k": None, "limited_by": "max_models"}
        for k in _powers_of_two(args.min_models, args.max_models):
            row = measure_point(args, x, y, k)
            report["results"].append(row)
            if main_process:
                print(json.dumps(row), file=sys.stderr, flush=True)
            if row["status"] != "oom":
                largest["k"] = k
            if row["status"] != "ok":
                largest["limited_by"] = row["status"]
            report["largest_k"][str(n)] = dict(largest)
            if args.out and main_process:
                _write(args.out, report)
            if row["status"] != "ok":
                break
    if main_process:
        print(markdown_table(report))
    return report


if __name__ == "__main__":
    main()
