"""Training-throughput benchmark: K seeds of a (100, 1)-FCN on LMS-5, five implementations.

Workload (issue 3, "Benchmark"): K seeds of Linear(50, 100) -> ReLU -> Linear(100, 2) with PyTorch's
default init on LMS-5 (d = 50, 50,000 training points), SGD lr 0.1, batch 256 (last partial batch
kept), 2-logit cross-entropy, 10 epochs. Implementations:

* ``sbjax``           -- ``sbjax.train.train_sweep`` with ``n_seeds=K``: one compiled program for
  all K seeds, seed axis sharded over one JAX CPU device per core.
* ``sbjax_shared``    -- the same with ``TrainConfig(batch_order="shared")``: all K models see the
  same batch at each update, so the first layer is one [B, 50] x [50, K*100] matmul.
* ``sbjax_loop``      -- the same library call with ``n_seeds=1``, made K times from Python
  (one compile, reused).
* ``torch_reference`` -- reference style: DataLoader(shuffle=True), one model at a time.
* ``torch_best``      -- batched [K, ...] weights, bmm/baddbmm, hand-written backward, no
  DataLoader.

Every (impl, K) pair runs in a fresh subprocess (so peak RSS is that pair's own, and XLA_FLAGS can
be set before JAX starts). Reported per pair: ``wall_s`` (steady-state training time; for JAX, the
second call of the already-compiled program), ``compile_s`` (first call minus second call; 0 for
eager torch), ``model_samples_per_s`` = K * epochs * N / wall_s, ``gflops`` = 6 * 5302 *
model_samples_per_s / 1e9 (forward + backward, 2 + 4 FLOPs per parameter per sample), and
``peak_rss_mb`` (``ru_maxrss`` of the worker process). Final train accuracy per seed is recorded as
a check that each implementation really trains.

Usage::

    python -m benchmarks.train_throughput --seeds 1,4,16,64 --epochs 10 --json OUT.json
    python -m benchmarks.train_throughput --quick
    python -m benchmarks.train_throughput --impl torch_best,sbjax --seeds 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time

import numpy as np

IMPLS = ("sbjax", "sbjax_shared", "sbjax_loop", "torch_reference", "torch_best")
# Not part of the default set: a self-contained jit(vmap(scan)) trainer used to validate the
# harness (and to see how far the library is from a hand-tuned program).
EXTRA_IMPLS = ("jax_proto",)
JAX_IMPLS = ("sbjax", "sbjax_shared", "sbjax_loop", "jax_proto")

D = 50
WIDTH = 100
N_PARAMS = D * WIDTH + WIDTH + WIDTH * 2 + 2  # 5302
LR = 0.1
BATCH = 256
RESULT_TAG = "BENCH_RESULT "


# ---------------------------------------------------------------------------------------------
# Data: LMS-5 in NumPy (Shah et al. 2020, Sec. 3.1; block geometry of REFERENCE.md 1.2). Timing
# only needs the right shape and distribution; a local generator keeps every impl on identical data
# and the benchmark independent of sbjax.data.
# ---------------------------------------------------------------------------------------------


def make_lms5(n: int, d: int = D, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """LMS-5 sample: 1 linear coordinate (margin 0.1) + (d - 1) five-slab coordinates, rotated.

    Args:
      n: number of points.
      d: input dimension (>= 2).
      seed: NumPy seed for the points and the rotation.

    Returns:
      x: float32 [n, d] in the model (rotated) basis, x = z @ W with W a random orthogonal matrix.
      y: int32 [n] labels in {0, 1} (1 = the paper's +1), balanced in expectation.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int32)
    s = 2.0 * y - 1.0  # +-1
    z = np.empty((n, d), np.float64)
    z[:, 0] = s * (0.1 + 0.9 * rng.random(n))
    # 5-slab, width 0.24: negatives at the centre [-0.12, 0.12] (p 3/4) or +-[0.76, 1] (1/8 each);
    # positives at +-[0.32, 0.56] (1/2 each).
    u = rng.random((n, d - 1))
    sign = rng.choice([-1.0, 1.0], (n, d - 1))
    pick = rng.random((n, d - 1))
    neg = np.where(pick < 0.75, -0.12 + 0.24 * u, sign * (0.76 + 0.24 * u))
    pos = sign * (0.32 + 0.24 * u)
    z[:, 1:] = np.where(y[:, None] == 1, pos, neg)
    w, r = np.linalg.qr(rng.standard_normal((d, d)))
    w = w * np.sign(np.diag(r))  # Haar-distributed orthogonal matrix
    return (z @ w).astype(np.float32), y


# ---------------------------------------------------------------------------------------------
# Workers (each runs in its own process)
# ---------------------------------------------------------------------------------------------


def _run_jax_proto(x, y, n_seeds, epochs):
    """Hand-written jit(vmap(scan)) trainer, seed axis sharded over all JAX devices."""
    import jax
    import jax.numpy as jnp
    import optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    n = x.shape[0]
    n_full = n // BATCH
    rem = n - n_full * BATCH
    n_dev = jax.device_count()
    k_pad = -(-n_seeds // n_dev) * n_dev
    mesh = Mesh(np.array(jax.devices()), ("seed",))
    shard = NamedSharding(mesh, PartitionSpec("seed"))
    repl = NamedSharding(mesh, PartitionSpec())

    def init(key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        b1, b2 = 1.0 / np.sqrt(D), 1.0 / np.sqrt(WIDTH)
        return {
            "w1": jax.random.uniform(k1, (D, WIDTH), jnp.float32, -b1, b1),
            "b1": jax.random.uniform(k2, (WIDTH,), jnp.float32, -b1, b1),
            "w2": jax.random.uniform(k3, (WIDTH, 2), jnp.float32, -b2, b2),
            "b2": jax.random.uniform(k4, (2,), jnp.float32, -b2, b2),
        }

    def logits_fn(p, xb):
        return jax.nn.relu(xb @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

    def loss_fn(p, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(logits_fn(p, xb), yb).mean()

    def sgd(p, idx, xs, ys):
        g = jax.grad(loss_fn)(p, xs[idx], ys[idx])
        return jax.tree.map(lambda a, b: a - LR * b, p, g)

    def epoch_one(p, perm, xs, ys):
        full = perm[: n_full * BATCH].reshape(n_full, BATCH)
        p = jax.lax.scan(lambda c, i: (sgd(c, i, xs, ys), None), p, full)[0]
        if rem:
            p = sgd(p, perm[n_full * BATCH :], xs, ys)
        return p

    @jax.jit
    def epoch(p, perms, xs, ys):
        return jax.vmap(epoch_one, in_axes=(0, 0, None, None))(p, perms, xs, ys)

    @jax.jit
    def accuracy(p, xs, ys):
        return jax.vmap(lambda q: (logits_fn(q, xs).argmax(-1) == ys).mean())(p)

    xs = jax.device_put(jnp.asarray(x), repl)
    ys = jax.device_put(jnp.asarray(y), repl)
    init_all = jax.jit(jax.vmap(init), out_shardings=shard)

    def run():
        p = init_all(jax.random.split(jax.random.key(0), k_pad))
        rng = np.random.default_rng(0)
        for _ in range(epochs):
            # Host-drawn permutations: an in-program sort costs more than the training itself.
            perms = np.argsort(rng.random((k_pad, n)), axis=1).astype(np.int32)
            p = epoch(p, jax.device_put(perms, shard), xs, ys)
        return jax.block_until_ready(p)

    t0 = time.perf_counter()
    run()
    cold = time.perf_counter() - t0
    c0 = time.process_time()
    t0 = time.perf_counter()
    p = run()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    acc = np.asarray(accuracy(p, xs, ys))[:n_seeds].tolist()
    return {"wall_s": wall, "compile_s": max(cold - wall, 0.0), "cpu_s": cpu, "train_acc": acc}


def _sbjax_setup(x, y, epochs, batch_order="per_model"):
    """TrainConfig + model for the workload: exactly ``epochs`` epochs, no early stop, one
    evaluation (the final train accuracy) so evaluation passes stay out of the timing."""
    import math

    from sbjax.models import make_model
    from sbjax.train import TrainConfig

    steps = epochs * math.ceil(x.shape[0] / BATCH)
    cfg = TrainConfig(
        optimizer="sgd",
        lr=LR,
        batch_size=BATCH,
        drop_last=False,
        loss="ce",
        max_steps=steps,
        eval_every=steps,
        stop_rule="none",
        batch_order=batch_order,
    )
    model = make_model(
        {"name": "fcn", "width": WIDTH, "depth": 1, "activation": "relu", "init": "torch"}
    )
    return cfg, model


def _run_sbjax(x, y, n_seeds, epochs, warm=True, batch_order="per_model"):
    """(a) The library's sweep: one ``train_sweep`` call trains all K seeds in one program.

    ``train_sweep`` reports its own compile time; it is called twice: compile_s is the first
    call's, and the second call's wall time (which includes data preparation, transfers and the
    final evaluation) is the steady-state training time (the first call also warms allocators and
    thread pools, as the torch impls' warm-ups do).
    """
    from sbjax.train import train_sweep

    cfg, model = _sbjax_setup(x, y, epochs, batch_order)
    compile_s = None
    for _ in range(2 if warm else 1):
        c0 = time.process_time()
        res = train_sweep(cfg, model, (x, y), n_seeds=n_seeds, seed=0, progress=False)
        cpu = time.process_time() - c0
        # The first call compiles; the second reuses the compiled programs (train_sweep caches
        # them per model object, config, shapes and devices), so its compile_s is ~0.
        compile_s = res.compile_s if compile_s is None else compile_s
    acc = np.asarray(res.history["train_acc"])[:, -1]
    # cpu_s is the measured call's CPU time (it includes compile CPU only without warm-up).
    return {
        "wall_s": res.wall_s - res.compile_s,
        "compile_s": compile_s,
        "cpu_s": cpu,
        "train_acc": acc.tolist(),
    }


def _run_sbjax_loop(x, y, n_seeds, epochs, warm=True):
    """(b) The library's single-seed program (``Trainer.train``, jitted once) called K times."""
    import jax
    import jax.numpy as jnp

    from sbjax.train import make_trainer, model_keys, prepare_data

    cfg, model = _sbjax_setup(x, y, epochs)
    data_host = prepare_data(cfg, (x, y))
    trainer = make_trainer(cfg, model, data_host)
    data = jax.tree_util.tree_map(jnp.asarray, data_host)
    hp = {k: jnp.float32(v) for k, v in cfg.default_hparams().items()}
    keys = model_keys(0, list(range(n_seeds)), 1, 1)
    t0 = time.perf_counter()
    train = jax.jit(trainer.train).lower(keys[0], hp, data).compile()
    compile_s = time.perf_counter() - t0
    if warm:  # a warm-up call, like the other impls'
        jax.block_until_ready(train(keys[0], hp, data))
    acc = []
    c0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(n_seeds):
        _, hist = train(keys[i], hp, data)
        acc.append(hist["train_acc"][-1])
    acc = [float(a) for a in jax.block_until_ready(acc)]
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return {"wall_s": wall, "compile_s": compile_s, "cpu_s": cpu, "train_acc": acc}


def worker(impl: str, n_seeds: int, epochs: int, n_train: int, warm: bool = True) -> dict:
    """Run one (impl, K) measurement in this process and return its result row.

    ``warm=False`` skips the JAX impls' warm-up call (tests only: timings are then not
    steady-state).
    """
    # Other work on a shared machine skews timings: record the load around the measurement.
    load_start = os.getloadavg()[0]
    x, y = make_lms5(n_train)
    if impl == "torch_reference":
        from benchmarks.torch_impls import train_reference

        out = train_reference(x, y, n_seeds, epochs, width=WIDTH, lr=LR, batch_size=BATCH)
    elif impl == "torch_best":
        from benchmarks.torch_impls import train_best

        out = train_best(x, y, n_seeds, epochs, width=WIDTH, lr=LR, batch_size=BATCH)
    elif impl == "jax_proto":
        out = _run_jax_proto(x, y, n_seeds, epochs)
    elif impl == "sbjax":
        out = _run_sbjax(x, y, n_seeds, epochs, warm)
    elif impl == "sbjax_shared":  # one batch order for all models (TrainConfig.batch_order)
        out = _run_sbjax(x, y, n_seeds, epochs, warm, batch_order="shared")
    elif impl == "sbjax_loop":
        out = _run_sbjax_loop(x, y, n_seeds, epochs, warm)
    else:
        raise ValueError(f"impl={impl!r} is invalid: expected one of {IMPLS + EXTRA_IMPLS}")
    samples_per_s = n_seeds * epochs * n_train / out["wall_s"]
    acc = np.asarray(out["train_acc"], np.float64)
    return {
        "impl": impl,
        "seeds": n_seeds,
        "epochs": epochs,
        "n_train": n_train,
        "wall_s": out["wall_s"],
        "compile_s": out["compile_s"],
        "model_samples_per_s": samples_per_s,
        "gflops": 6.0 * N_PARAMS * samples_per_s / 1e9,
        # Process CPU seconds (all threads) of the timed region: less sensitive than wall time to
        # other jobs on a shared machine. sbjax's includes its compile (see _run_sbjax).
        "cpu_s": out.get("cpu_s"),
        # Linux reports ru_maxrss in KiB.
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "train_acc_mean": float(acc.mean()),
        "train_acc_min": float(acc.min()),
        "frac_seeds_acc_gt_0.95": float((acc > 0.95).mean()),
        "loadavg_1m_start": load_start,
        "loadavg_1m_end": os.getloadavg()[0],
        **{k: v for k, v in out.items() if k.startswith("note")},
    }


# ---------------------------------------------------------------------------------------------
# Orchestrator
# ---------------------------------------------------------------------------------------------


def worker_env(impl: str, cores: int) -> dict:
    """Environment of a worker: JAX impls see one CPU device per core (set before JAX starts)."""
    env = dict(os.environ)
    if impl in JAX_IMPLS:
        flags = env.get("XLA_FLAGS", "")
        if "xla_force_host_platform_device_count" not in flags:
            flags = f"{flags} --xla_force_host_platform_device_count={cores}".strip()
        env["XLA_FLAGS"] = flags
        env.setdefault("JAX_PLATFORMS", "cpu")
    return env


def run_in_subprocess(impl, n_seeds, epochs, n_train, cores, timeout) -> dict:
    """Launch ``worker`` in a fresh interpreter and parse its tagged JSON line."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.train_throughput",
        "--worker",
        impl,
        "--seeds",
        str(n_seeds),
        "--epochs",
        str(epochs),
        "--n-train",
        str(n_train),
    ]
    try:
        proc = subprocess.run(
            cmd, env=worker_env(impl, cores), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"impl": impl, "seeds": n_seeds, "epochs": epochs, "error": f"timeout {timeout}s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"impl": impl, "seeds": n_seeds, "epochs": epochs, "error": tail[0]}


def machine_info() -> dict:
    """CPU model, core count, memory, OS."""
    info = {"platform": platform.platform(), "cores": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            key, _, val = line.partition(":")
            if key.strip() in ("Model name", "Thread(s) per core", "Core(s) per socket", "Flags"):
                val = val.strip()
                if key.strip() == "Flags":  # only the SIMD features that matter for matmul
                    val = " ".join(f for f in val.split() if f.startswith(("avx", "fma", "amx")))
                info[key.strip()] = val
    except OSError:
        pass
    try:
        import psutil

        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return info


def versions() -> dict:
    """Versions of Python and the numerical libraries, plus the git commit of this checkout."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "sbjax"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        out["git_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=os.path.dirname(__file__),
        ).stdout.strip()
    except OSError:
        pass
    return out


def peak_in_subprocess(cores: int) -> dict:
    """Matmul peak measured in a fresh process that sees every core as a JAX device."""
    cmd = [sys.executable, "-m", "benchmarks.peak"]
    out = subprocess.run(cmd, env=worker_env("sbjax", cores), capture_output=True, text=True)
    return json.loads(out.stdout)


def markdown_table(results: list[dict], peak: float) -> str:
    """Results as a Markdown table (one row per impl and K)."""
    head = (
        "| impl | K | wall s | compile s | model-samples/s | GFLOP/s | % of peak | peak RSS MB "
        "| train acc mean (min) |\n|---|---:|---:|---:|---:|---:|---:|---:|---|"
    )
    rows = [head]
    for r in results:
        if "error" in r:
            rows.append(f"| {r['impl']} | {r['seeds']} | error: {r['error']} |||||||")
            continue
        rows.append(
            f"| {r['impl']} | {r['seeds']} | {r['wall_s']:.2f} | {r['compile_s']:.2f} "
            f"| {r['model_samples_per_s']:.3g} | {r['gflops']:.1f} "
            f"| {100 * r['gflops'] / peak:.1f} | {r['peak_rss_mb']:.0f} "
            f"| {r['train_acc_mean']:.3f} ({r['train_acc_min']:.3f}) |"
        )
    return "\n".join(rows)


def _write_json(path: str, obj: dict) -> None:
    """Atomic write (temporary file + rename)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--seeds", default="1,4,16,64", help="comma-separated K values")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--n-train", type=int, default=50_000, help="training points N")
    p.add_argument(
        "--impl", default=",".join(IMPLS), help=f"comma-separated subset of {IMPLS + EXTRA_IMPLS}"
    )
    p.add_argument("--json", default=None, help="write the results JSON here")
    p.add_argument(
        "--quick",
        action="store_true",
        help="fast look: K in {1, 4}, 2 epochs, N = 10,000 (overrides those options)",
    )
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per (impl, K) worker")
    p.add_argument("--no-peak", action="store_true", help="skip the matmul-peak measurement")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> dict | None:
    args = parse_args(argv)
    if args.worker:
        row = worker(args.worker, int(args.seeds), args.epochs, args.n_train)
        print(RESULT_TAG + json.dumps(row), flush=True)
        return None
    if args.quick:
        args.seeds, args.epochs, args.n_train = "1,4", 2, 10_000
    seeds = [int(s) for s in args.seeds.split(",") if s]
    impls = [s.strip() for s in args.impl.split(",") if s.strip()]
    for impl in impls:
        if impl not in IMPLS + EXTRA_IMPLS:
            raise ValueError(f"impl={impl!r} is invalid: expected one of {IMPLS + EXTRA_IMPLS}")
    if any(k < 1 for k in seeds) or args.epochs < 1 or args.n_train < BATCH:
        raise ValueError(
            f"seeds={seeds}, epochs={args.epochs}, n_train={args.n_train} are "
            f"invalid: expected K >= 1, epochs >= 1, n_train >= {BATCH}"
        )
    cores = os.cpu_count() or 1
    peak = {"matmul_peak_gflops": float("nan"), "by_backend": {}}
    if not args.no_peak:
        peak = peak_in_subprocess(cores)
        print(
            f"matmul peak {peak['matmul_peak_gflops']:.0f} GFLOP/s {peak['by_backend']}",
            file=sys.stderr,
            flush=True,
        )
    report = {
        "matmul_peak_gflops": peak["matmul_peak_gflops"],
        "matmul_peak_by_backend": peak["by_backend"],
        "machine": machine_info(),
        "versions": versions(),
        "command": "python -m benchmarks.train_throughput "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "workload": {
            "model": f"FCN Linear({D},{WIDTH})-ReLU-Linear({WIDTH},2), torch init",
            "n_params": N_PARAMS,
            "data": f"LMS-5, d={D}, N={args.n_train}",
            "optimizer": f"SGD lr {LR}",
            "batch": BATCH,
            "last_partial_batch": "kept",
            "flops_per_sample": 6 * N_PARAMS,
        },
        "results": [],
    }
    for impl in impls:
        for k in seeds:
            row = run_in_subprocess(impl, k, args.epochs, args.n_train, cores, args.timeout)
            report["results"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            if args.json:  # after every row, so a long run that is cut short keeps its results
                _write_json(args.json, report)
    results = report["results"]
    print(markdown_table(results, report["matmul_peak_gflops"]))
    return report


if __name__ == "__main__":
    main()
