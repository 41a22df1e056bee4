"""Process-level runtime set-up: CPU cores as devices, multi-host initialisation, device meshes.

Note: XLA runs one CPU device on one core. Exposing every core as a device and sharding the model
axis over them is what makes CPU sweeps use the whole machine (2.0-2.3x on 2 cores in DESIGN.md's
measurements). The flag must be set before JAX initialises its backends, so entry points call
`use_all_cpu_cores()` before their first JAX computation.
"""

from __future__ import annotations

import logging
import os
import re

log = logging.getLogger(__name__)

_FLAG = "--xla_force_host_platform_device_count"


def use_all_cpu_cores(n: int | None = None) -> int:
    """Asks XLA for one CPU device per core (no-op if the flag is already set or JAX is running).

    Args:
      n: number of CPU devices; defaults to `os.cpu_count()`.

    Returns:
      The device count requested (or already configured).
    """
    flags = os.environ.get("XLA_FLAGS", "")
    m = re.search(_FLAG + r"=(\d+)", flags)
    if m:
        return int(m.group(1))
    n = int(n or os.cpu_count() or 1)
    try:
        import jax._src.xla_bridge as xb

        if xb.backends_are_initialized():
            log.info("JAX backends already initialised; cannot expose %d CPU devices now", n)
            return len(__import__("jax").devices())
    except Exception:  # private API moved: fall through and set the flag anyway
        pass
    os.environ["XLA_FLAGS"] = (flags + f" {_FLAG}={n}").strip()
    log.info("exposing %d CPU cores as JAX devices (%s=%d)", n, _FLAG, n)
    return n


def init_distributed(enabled: bool | None = None) -> bool:
    """Initialises multi-host JAX (TPU pods, multi-node GPU) when asked to.

    Enabled by `enabled=True` or the environment variable `SBJAX_DISTRIBUTED=1`; then
    `jax.distributed.initialize()` reads the cluster from the environment (SLURM, TPU metadata, or
    JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).

    Returns:
      Whether distributed mode was initialised.
    """
    if enabled is None:
        enabled = os.environ.get("SBJAX_DISTRIBUTED", "0") not in ("", "0", "false", "False")
    if not enabled:
        return False
    import jax

    jax.distributed.initialize()
    log.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
    return True


def is_main_process() -> bool:
    import jax

    return jax.process_index() == 0
