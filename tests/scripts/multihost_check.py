"""One process of a multi-process sweep on this machine (jax.distributed over localhost).

    python tests/scripts/multihost_check.py PROCESS_ID NUM_PROCESSES OUT_DIR MAX_CHUNKS PORT

NUM_PROCESSES = 1 runs the reference: one process with two CPU devices (the same two-device mesh
as two processes with one device each). Every process other than 0 refuses to write any file, so
a write outside process 0 crashes the run. Process 0 saves the final parameters to OUT_DIR.npy.
"""

import os
import sys

import numpy as np

from sbjax.runtime import configure_cpu_devices

pid, n_proc, out, max_chunks, port = sys.argv[1:6]
pid, n_proc = int(pid), int(n_proc)
configure_cpu_devices(1 if n_proc > 1 else 2)

import jax  # noqa: E402

# jax 0.10 on CPU needs gloo for cross-process collectives (the gather of the state).
jax.config.update("jax_cpu_collectives_implementation", "gloo")
if n_proc > 1:
    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}", num_processes=n_proc, process_id=pid
    )
if jax.process_index() != 0:
    from sbjax import io

    def refuse(*args, **kwargs):
        raise RuntimeError(f"process {jax.process_index()} tried to write {args[0]}")

    io.atomic_write_bytes = io.append_jsonl = refuse

from sbjax.data import make_dataset  # noqa: E402
from sbjax.models import make_model  # noqa: E402
from sbjax.train import TrainConfig, train_sweep  # noqa: E402

ds = make_dataset("lms", k=5, d=10)
(x, y), _ = ds.sample_split(jax.random.key(0), 2000, 100)
cfg = TrainConfig(lr=0.1, max_steps=200, eval_every=50, batch_size=64, stop_rule="none")
r = train_sweep(
    cfg,
    make_model({"name": "fcn", "width": 16, "init": "kaiming"}),
    (np.asarray(x), np.asarray(y)),
    n_seeds=4,
    out_dir=out,
    progress=False,
    periods_per_chunk=2,
    max_chunks=None if max_chunks == "none" else int(max_chunks),
    resume=os.path.exists(os.path.join(out, "checkpoint.json")),
)
if jax.process_index() == 0:
    leaves = [np.asarray(a).reshape(4, -1) for a in jax.tree_util.tree_leaves(r.params)]
    np.save(out + ".npy", np.concatenate(leaves, axis=1))
print("done", jax.process_index(), jax.process_count(), int(r.stop_step.max()), flush=True)
