"""Sharded sweeps on 8 simulated CPU devices equal unsharded ones, and no two models of a sweep
share a parameter, constant-initialised ones (zero biases, PReLU slopes, BatchNorm) included (run
in a subprocess, because the device count must be fixed before JAX starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "sharding_check.py"


def _run(*args) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


@pytest.fixture(scope="module")
def result():
    return _run(5)  # 5 seeds on 8 devices: padding is exercised


N_CONST = 11  # 11 seeds padded to 16 on 8 devices: two models on most devices, padding too


@pytest.fixture(scope="module")
def const_result():
    return _run("const", N_CONST)


def test_sharded_equals_unsharded(result):
    assert result["n_devices"] == 8
    assert result["n_models"] == 5
    # sharded and single-device runs are different programs: equal to float rounding, amplified
    # a little by 30 updates
    assert result["max_abs_diff"] < 1e-5
    assert result["history_equal"] and result["stop_equal"]
    assert result["map_max_abs_diff"] < 1e-5  # lax.map inside shard_map == vmap, unsharded


def test_no_two_models_share_a_parameter_value(result):
    assert result["shared_values"] == 0  # PyTorch init: every parameter depends on the key


# Leaves that start equal in every model (key-independent init): where the shard_map trap of
# DESIGN.md (gradients of key-independent parameters summed over a device's models) would show.
CONSTANT_LEAVES = {
    "fcn_kaiming": ["params/head/bias", "params/hidden_0/bias"],  # zero biases
    "fcn_prelu": ["params/prelu_0", "params/prelu_1"],  # slope 0.25
    "small_cnn_bn": sorted(
        [f"params/bn_{i}/{p}" for i in range(4) for p in ("scale", "bias")]
        + [f"batch_stats/bn_{i}/{p}" for i in range(4) for p in ("mean", "var")]
    ),
}


@pytest.mark.parametrize("name", sorted(CONSTANT_LEAVES))
def test_constant_initialised_parameters_are_not_shared_after_training(const_result, name):
    assert const_result["n_devices"] == 8 and const_result["n_seeds"] == N_CONST
    rec = const_result["models"][name]
    assert rec["n_models"] == N_CONST
    # the premise: these leaves (and only these) are identical across keys at init, so before
    # training every pair of models shares every one of their values ...
    assert sorted(rec["constant_leaves"]) == CONSTANT_LEAVES[name]
    n_pairs = N_CONST * (N_CONST - 1) // 2
    assert rec["init_shared_in_constant_leaves"] == n_pairs * rec["init_constant_values"] > 0
    # ... and after training (two models per device) no two models share any parameter value
    assert rec["shared_in_constant_leaves"] == 0
    assert rec["shared_values"] == 0


def test_constant_init_model_with_lax_map_over_models(const_result):
    rec = const_result["models"]["fcn_kaiming"]
    assert rec["map_shared_values"] == 0
    assert rec["map_max_abs_diff"] < 1e-5  # lax.map == vmap to float rounding


def test_compiled_program_has_no_collectives_and_stays_sharded(result):
    assert result["collectives"] == []
    assert result["map_collectives"] == []
    # Every state leaf is split along the model axis (printed as P('model',)).
    assert len(result["state_specs"]) == 1 and "'model'" in result["state_specs"][0]
    assert result["n_shards"] == 8


def test_coupled_units_sharded_equal_unsharded_no_sharing_no_collectives():
    # 5 seeds x 2 grid points = 10 units of K = 2 members (20 models) on 8 devices: padding and
    # two units on some devices; zero-initialised biases in every member.
    res = _run("unit", 5)
    assert res["n_devices"] == 8 and res["n_models"] == 20
    assert res["max_abs_diff"] < 1e-5 and res["history_equal"]
    assert res["shared_values"] == 0 and res["shared_in_biases"] == 0
    assert res["collectives"] == []
    # Every state leaf is split along the unit axis (member-axis leaves print P('model', None)).
    assert res["state_specs"] and all(s.startswith("P('model'") for s in res["state_specs"])
