"""Test-suite set-up: CPU devices and a persistent XLA compilation cache.

Most of the suite's time is XLA compiling small programs; identical programs (the same sampler or
sweep in several tests, or a rerun of the suite) then load from the cache instead of recompiling.
Set SBJAX_TEST_JAX_CACHE=0 to disable it.
"""

import os
import tempfile

from sbjax.runtime import configure_cpu_devices

# Importing sbjax sets no XLA flags; the suite runs as the experiment commands do, with one CPU
# device per core (SBJAX_CPU_DEVICES=N picks N), so sharded code paths are exercised.
configure_cpu_devices()

import jax  # noqa: E402

if os.environ.get("SBJAX_TEST_JAX_CACHE", "1") != "0":
    cache = os.path.join(tempfile.gettempdir(), "sbjax-test-jax-cache")
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.3)
