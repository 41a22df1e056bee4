"""sbjax.runtime.init_distributed: what it passes to jax.distributed.initialize (no cluster here;
the real two-process path is tests/test_multihost.py)."""

import jax
import pytest

from sbjax import runtime


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: seen.append(kw))
    for var in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SBJAX_DISTRIBUTED"):
        monkeypatch.delenv(var, raising=False)
    return seen


def test_off_by_default(calls):
    assert runtime.init_distributed() is False and calls == []


def test_cluster_detection_when_no_process_variables(calls, monkeypatch):
    monkeypatch.setenv("SBJAX_DISTRIBUTED", "1")
    assert runtime.init_distributed() is True
    assert calls == [{}]  # SLURM / TPU / Open MPI detection is left to JAX


def test_hand_launched_processes_pass_count_and_index(calls, monkeypatch):
    # jax.distributed.initialize reads JAX_COORDINATOR_ADDRESS itself, but not these two
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert runtime.init_distributed(True) is True
    assert calls == [{"num_processes": 2, "process_id": 1}]


def test_bad_process_variable_names_itself(calls, monkeypatch):
    monkeypatch.setenv("JAX_PROCESS_ID", "first")
    with pytest.raises(ValueError, match="JAX_PROCESS_ID='first'"):
        runtime.init_distributed(True)
    assert calls == []
