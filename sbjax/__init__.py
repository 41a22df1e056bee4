"""sbjax: simplicity bias in neural networks, in JAX.

A functional reimplementation of Shah et al. 2020, "The Pitfalls of Simplicity Bias in Neural
Networks" (NeurIPS 2020): pure samplers for the paper's datasets, Flax models, vmapped training
sweeps, vectorized S / S^c-randomized metrics and attacks, and a numerical check of Theorem 1.
"""

__version__ = "0.1.0"

# Importing sbjax has no side effect on a user's JAX program. The experiment commands expose one
# CPU device per core (or --devices N / SBJAX_CPU_DEVICES=N) through
# `sbjax.runtime.configure_cpu_devices`, which a library user may call before JAX starts.
