"""The multi-host path (`--distributed`) exercised with two processes on this machine.

Two processes with one CPU device each form the same two-device mesh as one process with two
devices; `jax.distributed` connects them over localhost (gloo collectives). Checked: the sweep
equals the one-process sweep, only process 0 writes files (the other crashes if it tries), and a
two-process run killed after one chunk resumes to the uninterrupted result.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "scripts" / "multihost_check.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _launch(n_proc: int, out: Path, max_chunks: str) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "SBJAX_CPU_DEVICES")}
    env["PYTHONPATH"] = str(ROOT)
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), str(i), str(n_proc), str(out), max_chunks, port],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for i in range(n_proc)
    ]
    outputs = []
    for p in procs:
        try:
            text, _ = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("multi-process sweep timed out (a collective joined by one process only?)")
        assert p.returncode == 0, text[-3000:]
        outputs.append(text)
    return outputs


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores for 2 devices")
def test_two_process_sweep_equals_one_process_writes_once_and_resumes(tmp_path):
    single = tmp_path / "single"
    _launch(1, single, "none")
    multi = tmp_path / "multi"
    outs = _launch(2, multi, "1")  # "killed" after one chunk of two periods
    assert all("done" in o for o in outs)
    assert json.loads((multi / "checkpoint.json").read_text())["updates_done"] == 100
    outs = _launch(2, multi, "none")  # resume with both processes
    assert [o.strip().splitlines()[-1] for o in outs] == ["done 0 2 200", "done 1 2 200"]
    assert json.loads((multi / "checkpoint.json").read_text())["updates_done"] == 200
    a, b = np.load(f"{single}.npy"), np.load(f"{multi}.npy")
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)  # same mesh, same programs
    rows = [json.loads(line) for line in (multi / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * 4  # 4 models x 4 periods, each written once (by process 0)
