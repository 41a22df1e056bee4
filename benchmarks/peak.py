"""Measured float32 matmul peak of this machine, the denominator of "% of peak" in the benchmark.

A large square float32 matmul is the most FLOP-efficient thing a CPU does, so its rate is a fair
ceiling for a training loop that is made of matmuls. We time it with every backend that the
benchmark uses (JAX/XLA, NumPy's BLAS, PyTorch) and report each rate plus the maximum; the
maximum is the number the benchmark divides by, so no backend looks better than it is.

Run as ``python -m benchmarks.peak`` to print the numbers as JSON.
"""

from __future__ import annotations

import json
import time

import numpy as np


def _best_rate(fn, n: int, repeats: int) -> float:
    """Best GFLOP/s of ``fn()`` (one n x n x n matmul, blocking) over ``repeats`` timed calls."""
    fn()  # warm-up: compilation, thread-pool start, page faults
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def jax_matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """float32 GFLOP/s of a jitted ``a @ b`` with a, b of shape [n, n] on JAX's default device."""
    import jax
    import jax.numpy as jnp

    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32)
    b = jax.random.normal(kb, (n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    return _best_rate(lambda: f(a, b).block_until_ready(), n, repeats)


def numpy_matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """float32 GFLOP/s of ``np.matmul`` on [n, n] arrays (NumPy's BLAS, its default threads)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    return _best_rate(lambda: np.matmul(a, b, out=out), n, repeats)


def torch_matmul_gflops(n: int = 2048, repeats: int = 10, threads: int | None = None) -> float:
    """float32 GFLOP/s of ``torch.mm`` on [n, n] tensors (CPU); ``threads`` sets torch's pool."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g)
    b = torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    return _best_rate(lambda: torch.mm(a, b, out=out), n, repeats)


def measure_peak(n: int = 2048, repeats: int = 10) -> dict:
    """All available backends' matmul rates and their maximum.

    Args:
      n: matrix size; 2048 (17 GFLOP per matmul) is large enough to be compute bound on CPUs.
      repeats: timed calls per backend; the best is kept (the peak, not the mean).

    Returns:
      ``{"matmul_peak_gflops": float, "by_backend": {"jax": float, "numpy": float, "torch": float},
      "n": int}``; a backend that is not installed is missing from ``by_backend``.
    """
    import os

    rates = {"jax": jax_matmul_gflops(n, repeats), "numpy": numpy_matmul_gflops(n, repeats)}
    try:
        rates["torch"] = torch_matmul_gflops(n, repeats, threads=os.cpu_count())
    except ImportError:
        pass
    return {"matmul_peak_gflops": max(rates.values()), "by_backend": rates, "n": n}


def main(argv: list[str] | None = None) -> dict:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.peak",
        description="Prints this machine's float32 matmul rate (GFLOP/s) per backend (JAX, NumPy, "
        "PyTorch if installed) and their maximum, as JSON.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--n", type=int, default=2048, help="matrix size")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per backend (best kept)")
    args = p.parse_args(argv)
    report = measure_peak(args.n, args.repeats)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
