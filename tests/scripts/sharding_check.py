"""Run in a subprocess by tests/test_train_sharding.py: 8 simulated CPU devices.

    python tests/scripts/sharding_check.py N_SEEDS        # sharded vs unsharded, compiled program
    python tests/scripts/sharding_check.py const N_SEEDS  # constant-initialised parameters
    python tests/scripts/sharding_check.py unit N_SEEDS   # coupled units (K = 2) with penalties

Prints one JSON line (``RESULT {...}``) with the comparisons; XLA_FLAGS must be set before JAX
starts, which is why this is not an in-process test.

The ``const`` mode targets the shard_map trap of DESIGN.md: ``shard_map(vmap(train))`` with
``check_vma=True`` sums the gradients of *key-independent* parameters over the models of a device,
so models that start with the same value of a parameter (a zero bias, a PReLU slope of 0.25, a
BatchNorm scale of 1) would keep sharing it. With more seeds than devices (two models per device),
it trains models whose parameters include such constants through the public `train_sweep` API and
counts, leaf by leaf, the values two models share after training.
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
from sbjax.train.plan import make_mesh  # noqa: E402
from sbjax.train.sweep import model_keys, sharded_programs  # noqa: E402


def _leaves(tree) -> list[tuple[str, np.ndarray]]:
    return [
        ("/".join(str(getattr(k, "key", k)) for k in path), np.asarray(leaf))
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    ]


def _shared_per_leaf(stacked) -> dict[str, int]:
    """Leaf -> number of (model pair, element) with exactly equal values, over the model axis."""
    out = {}
    for name, leaf in _leaves(stacked):
        flat = leaf.reshape(leaf.shape[0], -1)
        out[name] = int(
            sum(
                np.sum(flat[i] == flat[j])
                for i in range(len(flat))
                for j in range(i + 1, len(flat))
            )
        )
    return out


def constant_init_main(n_seeds: int) -> None:
    """Models with key-independent (constant) initial parameters, trained as one sharded sweep."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(384, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    xi = rng.normal(size=(128, 8, 8, 1)).astype(np.float32)  # tiny images for the BN model
    yi = (xi[:, :4].mean(axis=(1, 2, 3)) > 0).astype(np.int32)
    cfg = TrainConfig(
        lr=0.1,
        batch_size=32,
        max_steps=20,
        eval_every=10,
        stop_rule="acc",
        stop_eps=1e-6,
        momentum=0.9,
    )
    cases = {
        # zero biases everywhere (init="kaiming"): every bias leaf starts at 0 in every model
        "fcn_kaiming": ({"name": "fcn", "width": 16, "depth": 1, "init": "kaiming"}, (x, y)),
        # PReLU slopes start at 0.25 in every model (the kernels and biases are key-dependent)
        "fcn_prelu": ({"name": "fcn", "width": 16, "depth": 2, "activation": "prelu"}, (x, y)),
        # BatchNorm scale 1 / bias 0 and running mean 0 / var 1 in every model
        "small_cnn_bn": ({"name": "small_cnn", "filters": 4}, (xi, yi)),
    }
    out = {"n_devices": len(jax.devices()), "n_seeds": n_seeds, "models": {}}
    for name, (mcfg, data) in cases.items():
        model = make_model(mcfg)
        a = model.init(jax.random.key(0), data[0][:2])
        b = model.init(jax.random.key(1), data[0][:2])
        constant = [
            p for (p, u), (_, v) in zip(_leaves(a), _leaves(b), strict=True) if np.array_equal(u, v)
        ]
        keys = jax.random.split(jax.random.key(2), n_seeds)
        init = _shared_per_leaf(jax.vmap(model.init, in_axes=(0, None))(keys, data[0][:2]))
        res = train_sweep(cfg, model, data, n_seeds=n_seeds, progress=False)
        shared = _shared_per_leaf(res.params)
        rec = {
            "constant_leaves": constant,
            # what the count would be if training had not moved them apart (the control)
            "init_shared_in_constant_leaves": sum(init[p] for p in constant),
            "init_constant_values": sum(np.asarray(v).size for p, v in _leaves(a) if p in constant),
            "shared_values": sum(shared.values()),
            "shared_in_constant_leaves": sum(shared[p] for p in constant),
            "n_models": res.n_models,
            "final_train_acc_min": float(np.min(res.history["train_acc"][:, -1])),
        }
        if name == "fcn_kaiming":  # the same check with lax.map over a device's models
            mapped = train_sweep(cfg, model, data, n_seeds=n_seeds, progress=False, vectorize="map")
            rec["map_shared_values"] = sum(_shared_per_leaf(mapped.params).values())
            rec["map_max_abs_diff"] = max(
                float(np.max(np.abs(u - v)))
                for (_, u), (_, v) in zip(_leaves(res.params), _leaves(mapped.params), strict=True)
            )
        out["models"][name] = rec
    print("RESULT " + json.dumps(out))


def unit_main(n_seeds: int) -> None:
    """Coupled units of K = 2 members (a coupling penalty and spectral decoupling with a grid over
    its strength), constant-initialised (zero biases), sharded over 8 devices vs one device."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from sbjax.train import objective as obj
    from sbjax.train.config import hparam_arrays
    from sbjax.train.units import UnitLayout, unit_keys

    rng = np.random.default_rng(0)
    x = rng.normal(size=(384, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    xu = rng.normal(size=(64, 8)).astype(np.float32)
    model = make_model({"name": "fcn", "width": 16, "depth": 1, "init": "kaiming"})
    cfg = TrainConfig(
        lr=0.1,
        batch_size=32,
        max_steps=20,
        eval_every=10,
        stop_rule="acc",
        stop_eps=1e-6,
        momentum=0.9,
    )
    o = obj.Objective(penalties=(obj.member_agreement(default=0.1), obj.spectral_decoupling()))
    kw = dict(
        n_seeds=n_seeds,
        n_members=2,
        unit_size=2,
        objective=o,
        progress=False,
        grid={"lambda_spectral_decoupling": [0.0, 0.01]},
        unlabeled=xu,
        unlabeled_batch_size=16,
        example_weights=np.ones(len(x), np.float32),
    )
    sharded = train_sweep(cfg, model, (x, y), **kw)
    single = train_sweep(cfg, model, (x, y), devices=jax.devices()[:1], **kw)
    la, lb = _leaves(sharded.params), _leaves(single.params)
    out = {
        "n_devices": len(jax.devices()),
        "n_models": sharded.n_models,
        "max_abs_diff": max(
            float(np.max(np.abs(a - b))) for (_, a), (_, b) in zip(la, lb, strict=True)
        ),
        "history_equal": all(
            np.allclose(sharded.history[k], single.history[k], atol=1e-6, equal_nan=True)
            for k in sharded.history
        ),
    }
    shared = _shared_per_leaf(sharded.params)
    out["shared_values"] = sum(shared.values())
    out["shared_in_biases"] = sum(v for k, v in shared.items() if k.endswith("bias"))
    # The compiled unit program: no collectives, state sharded over the unit axis.
    data = prepare_data(cfg, (x, y))
    trainer = make_trainer(cfg, model, data, objective=o, unit_size=2)
    mesh = make_mesh(None)
    init_fn, run_fn = sharded_programs(trainer, mesh, 2)
    n_units = n_seeds * 2
    pad = -n_units % 8
    sh = NamedSharding(mesh, P("model"))
    hp_np = hparam_arrays(
        cfg, [{"lambda_spectral_decoupling": 0.0}, {"lambda_spectral_decoupling": 0.01}], n_seeds, o
    )
    hp_np = {k: np.concatenate([v, np.repeat(v[-1:], pad)]) for k, v in hp_np.items()}
    hp = jax.device_put({k: jnp.asarray(v) for k, v in hp_np.items()}, sh)
    dd = jax.device_put(jax.tree_util.tree_map(jnp.asarray, data), NamedSharding(mesh, P()))
    keys = jax.device_put(unit_keys(0, range(n_seeds), UnitLayout(n_seeds, 1, 2, 2), pad), sh)
    state = init_fn(keys, hp, dd)
    text = run_fn.lower(state, hp, dd).compile().as_text()
    out["collectives"] = [
        op
        for op in ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")
        if op in text
    ]
    out["state_specs"] = sorted(
        {
            str(leaf.sharding.spec)
            for leaf in jax.tree_util.tree_leaves(state)
            if hasattr(leaf, "sharding")
        }
    )
    print("RESULT " + json.dumps(out))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "unit":
        unit_main(int(sys.argv[2]) if len(sys.argv) > 2 else 5)
        return
    if len(sys.argv) > 1 and sys.argv[1] == "const":
        constant_init_main(int(sys.argv[2]) if len(sys.argv) > 2 else 11)
        return
    n_seeds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    rng = np.random.default_rng(0)
    x = rng.normal(size=(384, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = make_model({"name": "fcn", "width": 16, "depth": 1})
    cfg = TrainConfig(
        lr=0.1,
        batch_size=64,
        max_steps=30,
        eval_every=10,
        stop_rule="acc",
        stop_eps=0.02,
        momentum=0.9,
    )
    out = {"n_devices": len(jax.devices())}
    sharded = train_sweep(cfg, model, (x, y), n_seeds=n_seeds, progress=False)
    single = train_sweep(
        cfg, model, (x, y), n_seeds=n_seeds, progress=False, devices=jax.devices()[:1]
    )
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
    mesh = make_mesh(None)
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
    out["collectives"] = [
        op
        for op in ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")
        if op in text
    ]
    new_state, hist = compiled(state, hp, dd)
    specs = {
        str(leaf.sharding.spec)
        for leaf in jax.tree_util.tree_leaves(new_state)
        if hasattr(leaf, "sharding")
    }
    out["state_specs"] = sorted(specs)
    out["n_shards"] = len(jax.tree_util.tree_leaves(new_state)[0].addressable_shards)
    _, run_map = sharded_programs(trainer, mesh, 2, "map")
    text = run_map.lower(state, hp, dd).compile().as_text()
    out["map_collectives"] = [
        op
        for op in ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")
        if op in text
    ]
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
