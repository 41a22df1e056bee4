"""Run in a subprocess by tests/test_train_sharding.py: 8 simulated CPU devices.

Prints one JSON line with the comparisons; XLA_FLAGS must be set before JAX starts, which is why
this is not an in-process test.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from sbjax.models import make_model  # noqa: E402
from sbjax.train import TrainConfig, make_trainer, prepare_data, train_sweep  # noqa: E402
from sbjax.train.sweep import _mesh, model_keys, sharded_programs  # noqa: E402


def main() -> None:
    n_seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    rng = np.random.default_rng(0)
    x = rng.normal(size=(384, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = make_model({"name": "fcn", "width": 16, "depth": 1})
    cfg = TrainConfig(lr=0.1, batch_size=64, max_steps=30, eval_every=10, stop_rule="acc",
                      stop_eps=0.02, momentum=0.9)
    out = {"n_devices": len(jax.devices())}
    sharded = train_sweep(cfg, model, (x, y), n_seeds=n_seeds, progress=False)
    single = train_sweep(cfg, model, (x, y), n_seeds=n_seeds, progress=False,
                         devices=jax.devices()[:1])
    la = jax.tree_util.tree_leaves(sharded.params)
    lb = jax.tree_util.tree_leaves(single.params)
    out["max_abs_diff"] = max(float(np.max(np.abs(a - b))) for a, b in zip(la, lb, strict=True))
    out["history_equal"] = all(
        np.allclose(sharded.history[k], single.history[k], atol=1e-6, equal_nan=True)
        for k in sharded.history
    )
    out["stop_equal"] = bool(np.array_equal(sharded.stop_step, single.stop_step))
    out["n_models"] = sharded.n_models
    mapped = train_sweep(cfg, model, (x, y), n_seeds=n_seeds, progress=False, vectorize="map")
    lm = jax.tree_util.tree_leaves(mapped.params)
    out["map_max_abs_diff"] = max(float(np.max(np.abs(a - b))) for a, b in zip(lm, lb, strict=True))
    # No two models of the sweep share a parameter value.
    shared = 0
    for leaf in la:
        flat = np.asarray(leaf).reshape(n_seeds, -1)
        for i in range(n_seeds):
            for j in range(i + 1, n_seeds):
                shared += int(np.sum(flat[i] == flat[j]))
    out["shared_values"] = shared

    # The compiled program: outputs stay sharded over the model axis, no collectives.
    data = prepare_data(cfg, (x, y))
    trainer = make_trainer(cfg, model, data)
    mesh = _mesh(None)
    init_fn, run_fn = sharded_programs(trainer, mesh, 2)
    m = n_seeds + (-n_seeds % 8)
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from sbjax.train.config import hparam_arrays

    sh = NamedSharding(mesh, P("model"))
    hp_np = hparam_arrays(cfg, [{}], m)
    hp = jax.device_put({k: jnp.asarray(v) for k, v in hp_np.items()}, sh)
    dd = jax.device_put(jax.tree_util.tree_map(jnp.asarray, data), NamedSharding(mesh, P()))
    keys = jax.device_put(model_keys(0, range(m), 1, 1), sh)
    state = init_fn(keys, hp, dd)
    compiled = run_fn.lower(state, hp, dd).compile()
    text = compiled.as_text()
    out["collectives"] = [op for op in ("all-reduce", "all-gather", "all-to-all",
                                        "collective-permute", "reduce-scatter") if op in text]
    new_state, hist = compiled(state, hp, dd)
    specs = {str(leaf.sharding.spec) for leaf in jax.tree_util.tree_leaves(new_state)
             if hasattr(leaf, "sharding")}
    out["state_specs"] = sorted(specs)
    out["n_shards"] = len(jax.tree_util.tree_leaves(new_state)[0].addressable_shards)
    _, run_map = sharded_programs(trainer, mesh, 2, "map")
    text = run_map.lower(state, hp, dd).compile().as_text()
    out["map_collectives"] = [op for op in ("all-reduce", "all-gather", "all-to-all",
                                            "collective-permute", "reduce-scatter") if op in text]
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
