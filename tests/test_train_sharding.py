"""Sharded sweeps on 8 simulated CPU devices equal unsharded ones (run in a subprocess, because
the device count must be fixed before JAX starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "sharding_check.py"


def _run(n_seeds: int) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), str(n_seeds)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def result():
    return _run(5)  # 5 seeds on 8 devices: padding is exercised


def test_sharded_equals_unsharded(result):
    assert result["n_devices"] == 8
    assert result["n_models"] == 5
    assert result["max_abs_diff"] < 1e-5
    assert result["history_equal"] and result["stop_equal"]
    assert result["map_max_abs_diff"] < 1e-5  # lax.map inside shard_map == vmap, unsharded


def test_no_two_models_share_a_parameter_value(result):
    assert result["shared_values"] == 0


def test_compiled_program_has_no_collectives_and_stays_sharded(result):
    assert result["collectives"] == []
    assert result["map_collectives"] == []
    # Every state leaf is split along the model axis (printed as P('model',)).
    assert len(result["state_specs"]) == 1 and "'model'" in result["state_specs"][0]
    assert result["n_shards"] == 8
