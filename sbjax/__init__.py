"""sbjax: simplicity bias in neural networks, in JAX.

A functional reimplementation of Shah et al. 2020, "The Pitfalls of Simplicity Bias in Neural
Networks" (NeurIPS 2020): pure samplers for the paper's datasets, Flax models, vmapped training
sweeps, vectorized S / S^c-randomized metrics and attacks, and a numerical check of Theorem 1.
"""

__version__ = "0.1.0"

# One XLA CPU device runs on one core; expose every core so sweeps shard over all of them
# (DESIGN.md: 2.0-2.3x on 2 cores). Only effective before JAX starts its backends; a device count
# already in XLA_FLAGS wins, and SBJAX_CPU_DEVICES=N picks N (1 turns this off).
import os as _os

if _os.environ.get("SBJAX_CPU_DEVICES", "") != "1":
    from sbjax.runtime import use_all_cpu_cores as _use_all_cpu_cores

    _use_all_cpu_cores(int(_os.environ["SBJAX_CPU_DEVICES"]) if _os.environ.get("SBJAX_CPU_DEVICES") else None)
