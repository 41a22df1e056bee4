"""Process-level runtime set-up: CPU cores as devices, multi-host initialisation, device meshes.

Note: XLA runs one CPU device on one core. Exposing every core as a device and sharding the model
axis over them is what makes CPU sweeps use the whole machine (2.0-2.3x on 2 cores in DESIGN.md's
measurements). The flag must be set before JAX initialises its backends, so entry points call
`configure_cpu_devices()` before their first JAX computation; importing sbjax sets nothing.
"""

from __future__ import annotations

import logging
import os
import re

log = logging.getLogger(__name__)

_FLAG = "--xla_force_host_platform_device_count"
DEVICES_ENV = "SBJAX_CPU_DEVICES"


def _backends_initialized() -> bool:
    try:
        import jax._src.xla_bridge as xb

        return bool(xb.backends_are_initialized())
    except Exception:  # private API moved: assume JAX has not started
        return False


def resolve_cpu_devices(n: int | None = None) -> int:
    """The CPU device count asked for: `n`, else $SBJAX_CPU_DEVICES, else one per core.

    Raises:
      ValueError: a count that is not an integer in [1, os.cpu_count()] (more devices than cores
        would time-share a core and only add overhead).
    """
    cores = os.cpu_count() or 1
    name = "devices"
    if n is None and os.environ.get(DEVICES_ENV, "").strip():
        name, n = DEVICES_ENV, os.environ[DEVICES_ENV].strip()
    if n is None:
        return cores
    try:
        value = int(n)
        if isinstance(n, bool) or str(value) != str(n).strip():
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(
            f"{name}={n!r} is invalid: expected an integer in [1, {cores}] (this machine's cores)"
        ) from None
    if not 1 <= value <= cores:
        raise ValueError(
            f"{name}={value!r} is invalid: expected an integer in [1, {cores}] "
            "(this machine's cores)"
        )
    return value


def configure_cpu_devices(n: int | None = None) -> int:
    """Asks XLA for exactly `n` CPU devices; call before the first JAX computation.

    Importing sbjax changes nothing in a user's JAX program: CLI entry points call this (with
    `--devices`, else $SBJAX_CPU_DEVICES, else one device per core), and library users may call it
    themselves. A device count already in XLA_FLAGS is replaced by the one asked for.

    Args:
      n: number of CPU devices (None: $SBJAX_CPU_DEVICES, else `os.cpu_count()`).

    Returns:
      The CPU device count in effect.

    Raises:
      ValueError: `n` outside [1, cores], or JAX already started with another CPU device count
        (the flag is read once, when JAX initialises its backends).
    """
    n = resolve_cpu_devices(n)
    if _backends_initialized():
        import jax

        have = len(jax.local_devices(backend="cpu"))  # this process's (multi-host: not all)
        if have != n:
            raise ValueError(
                f"devices={n} is invalid here: JAX already started with {have} CPU device(s); "
                "configure devices before the first JAX computation"
            )
        return have
    flags = re.sub(_FLAG + r"=\S+", "", os.environ.get("XLA_FLAGS", "")).split()
    os.environ["XLA_FLAGS"] = " ".join([*flags, f"{_FLAG}={n}"])
    log.debug("asking XLA for %d CPU device(s) (%s=%d)", n, _FLAG, n)
    return n


def use_all_cpu_cores(n: int | None = None) -> int:
    """Deprecated name of `configure_cpu_devices` (one CPU device per core by default)."""
    return configure_cpu_devices(n)


def init_distributed(enabled: bool | None = None) -> bool:
    """Initialises multi-host JAX (TPU pods, multi-node GPU) when asked to.

    Enabled by `enabled=True` or the environment variable `SBJAX_DISTRIBUTED=1`; then
    `jax.distributed.initialize()` reads the cluster from the environment: SLURM or Open MPI
    variables, Cloud TPU metadata, or, for a hand-launched job (e.g. two processes on one machine),
    JAX_COORDINATOR_ADDRESS (host:port of process 0) with JAX_NUM_PROCESSES and JAX_PROCESS_ID.

    Note: jax.distributed.initialize itself reads only JAX_COORDINATOR_ADDRESS (and
    JAX_LOCAL_DEVICE_IDS); the process count and index are passed from JAX_NUM_PROCESSES /
    JAX_PROCESS_ID here when set, and left to cluster detection otherwise. See docs/multihost.md.

    Returns:
      Whether distributed mode was initialised.
    """
    if enabled is None:
        enabled = os.environ.get("SBJAX_DISTRIBUTED", "0") not in ("", "0", "false", "False")
    if not enabled:
        return False
    import jax

    kwargs = {}
    for var, arg in (("JAX_NUM_PROCESSES", "num_processes"), ("JAX_PROCESS_ID", "process_id")):
        text = os.environ.get(var, "").strip()
        if text:
            try:
                kwargs[arg] = int(text)
            except ValueError:
                raise ValueError(f"{var}={text!r} is invalid: expected an integer") from None
    jax.distributed.initialize(**kwargs)
    log.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())
    return True


def is_main_process() -> bool:
    import jax

    return jax.process_index() == 0
