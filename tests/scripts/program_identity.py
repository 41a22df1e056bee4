"""Refactor guard: runs a fixed set of sweeps and writes every output, so two checkouts can be
compared bit for bit (the refactor of issue 20 changes no program).

    PYTHONPATH=CHECKOUT python tests/scripts/program_identity.py OUT_DIR
    python tests/scripts/program_identity.py --compare DIR_A DIR_B

Each case writes `<case>.npz` (parameters, best parameters, history, stop steps, hyperparameter
arrays) and `<case>.json` (stop reasons, grid points, checkpoint fingerprint, metrics rows).
Covers: a plain FCN sweep, grids, members, units of K = 2 with penalties, example weights, an
unlabeled stream, init / frozen variables, monitors, map / host loops, the shared batch order,
adversarial training, SAM, checkpoint + resume, and the phase / atlas grids (both strategies).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def _data(n=96, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).astype(np.int32)
    return x, y


def _flat(prefix, tree, out):
    import jax

    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out[prefix + jax.tree_util.keystr(path)] = np.asarray(leaf)


def _save_sweep(out: Path, name: str, r, ckpt: Path | None = None) -> None:
    arrays: dict[str, np.ndarray] = {}
    _flat("params", r.params, arrays)
    _flat("best", r.best_params, arrays)
    _flat("best_step", r.best_step, arrays)
    for k, v in r.history.items():
        arrays["hist/" + k] = np.asarray(v)
    for k, v in r.hparams.items():
        arrays["hp/" + k] = np.asarray(v)
    arrays["stop_step"] = np.asarray(r.stop_step)
    np.savez(out / f"{name}.npz", **arrays)
    meta = {"stop_reason": list(r.stop_reason), "grid_points": r.grid_points}
    if ckpt is not None:
        manifest = json.loads((ckpt / "checkpoint.json").read_text())
        meta["fingerprint"] = manifest["fingerprint"]
        meta["updates_done"] = manifest["updates_done"]
        meta["metrics"] = (ckpt / "metrics.jsonl").read_text()
    (out / f"{name}.json").write_text(json.dumps(meta, sort_keys=True, default=str))


def run_all(out: Path) -> None:
    from sbjax.models import make_model
    from sbjax.train import TrainConfig, train_sweep
    from sbjax.train import objective as obj

    out.mkdir(parents=True, exist_ok=True)
    x, y = _data()
    xv, yv = _data(48, seed=1)
    fcn = {"name": "fcn", "width": 8, "depth": 1}
    cfg = TrainConfig(lr=0.1, batch_size=32, max_steps=60, eval_every=20, stop_rule="none")
    model = make_model(fcn)
    kw = dict(progress=False)
    cases = {
        "plain": lambda: train_sweep(cfg, model, (x, y), (xv, yv), n_seeds=2, **kw),
        "grid_members": lambda: train_sweep(
            cfg, model, (x, y), n_seeds=2, n_members=2, grid={"lr": [0.05, 0.2]}, **kw
        ),
        "seed_indices": lambda: train_sweep(cfg, model, (x, y), seed_indices=[3, 1], seed=7, **kw),
        "units_penalties": lambda: train_sweep(
            cfg,
            model,
            (x, y),
            n_members=2,
            unit_size=2,
            unlabeled=xv,
            objective=obj.Objective(
                penalties=(obj.divdis_mutual_information(1.0), obj.spectral_decoupling())
            ),
            grid={"lambda_divdis_mi": [0.0, 1.0], "lambda_spectral_decoupling": [0.01]},
            **kw,
        ),
        "weights": lambda: train_sweep(
            cfg,
            model,
            (x, y),
            n_seeds=2,
            example_weights=np.linspace(0.5, 2.0, len(y)).astype(np.float32),
            **kw,
        ),
        "unlabeled_dbat": lambda: train_sweep(
            cfg,
            model,
            (x, y),
            unlabeled=xv,
            unlabeled_batch_size=16,
            frozen=_frozen(model, x),
            objective=obj.Objective(penalties=(obj.dbat_disagreement(0.5),)),
            **kw,
        ),
        "init_vars": lambda: train_sweep(
            cfg, model, (x, y), n_seeds=2, init_variables=_init_vars(model, x, 2), **kw
        ),
        "monitor": lambda: train_sweep(
            cfg, model, (x, y), monitor={"v": (xv, yv), "w": (x[:20], y[:20])}, **kw
        ),
        "map": lambda: train_sweep(cfg, model, (x, y), n_seeds=2, vectorize="map", **kw),
        "host": lambda: train_sweep(cfg, model, (x, y), n_seeds=2, loop="host", **kw),
        "shared_order": lambda: train_sweep(
            TrainConfig(**{**cfg.__dict__, "batch_order": "shared"}), model, (x, y), n_seeds=3, **kw
        ),
        "adversarial": lambda: train_sweep(
            TrainConfig(**{**cfg.__dict__, "adv_norm": "l2", "adv_eps": 0.3, "adv_steps": 2}),
            model,
            (x, y),
            (xv, yv),
            **kw,
        ),
        "sam_adam_stop": lambda: train_sweep(
            TrainConfig(
                optimizer="adam",
                lr=1e-2,
                batch_size=32,
                max_steps=100,
                eval_every=20,
                sam=True,
                stop_rule="acc",
                stop_eps=0.05,
            ),
            model,
            (x, y),
            grid={"sam_rho": [0.01, 0.05]},
            **kw,
        ),
    }
    for name, fn in cases.items():
        _save_sweep(out, name, fn())
        print("done", name, flush=True)

    # Checkpoint, fingerprint, resume: two calls of one chunk each, then the rest.
    with tempfile.TemporaryDirectory() as tmp:
        ck = Path(tmp) / "ck"
        args = (cfg, model, (x, y), (xv, yv))
        train_sweep(*args, n_seeds=2, out_dir=ck, periods_per_chunk=1, max_chunks=1, **kw)
        r = train_sweep(*args, n_seeds=2, out_dir=ck, resume=True, periods_per_chunk=2, **kw)
        _save_sweep(out, "resume", r, ck)
    print("done resume", flush=True)
    _phase_atlas(out)


def _frozen(model, x):
    import jax

    v = model.init(jax.random.key(5), x[:1])
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[None], v)


def _init_vars(model, x, m):
    import jax

    vs = [model.init(jax.random.key(10 + i), x[:1]) for i in range(m)]
    return jax.tree_util.tree_map(lambda *a: np.stack([np.asarray(b) for b in a]), *vs)


def _phase_atlas(out: Path) -> None:
    from sbjax.data.atlas import AtlasData
    from sbjax.train import TrainConfig
    from sbjax.train.atlas import atlas_sweep
    from sbjax.train.phase import PhaseData, phase_diagram

    cfg = TrainConfig(
        optimizer="adam", lr=1e-2, batch_size=16, max_steps=40, eval_every=20, stop_rule="none"
    )
    pdata = PhaseData(d=6, n_train=64, n_test=32, ks=(3, 5))
    adata = AtlasData(embed_dim=3, max_nesting=1, n_train=64, n_test=32, n_probe=64)
    for strategy in ("program", "loop"):
        r = phase_diagram(
            cfg,
            {"name": "fcn", "width": 8, "depth": 1},
            pdata,
            p=[0.0, 0.2],
            margin=[0.1],
            n_seeds=2,
            strategy=strategy,
        )
        _save_obj(out, f"phase_{strategy}", r)
        a = atlas_sweep(
            cfg,
            {"name": "fcn", "width": 8, "depth": 1},
            adata,
            [{"rho_s": 0.9, "alpha_s": 2.0}, {"rho_c": 0.7}],
            n_seeds=2,
            strategy=strategy,
        )
        _save_obj(out, f"atlas_{strategy}", a)
        print("done grids", strategy, flush=True)


def _save_obj(out: Path, name: str, r) -> None:
    import dataclasses

    arrays, meta = {}, {}
    for f in dataclasses.fields(r):
        v = getattr(r, f.name)
        if f.name in ("wall_s", "compile_s", "run_s"):
            continue
        if isinstance(v, dict):
            for k, vk in v.items():
                arrays[f"{f.name}/{k}"] = np.asarray(vk)
            continue
        try:
            a = np.asarray(v)
            if a.dtype == object:
                raise TypeError
            arrays[f.name] = a
        except (TypeError, ValueError):
            meta[f.name] = v
    np.savez(out / f"{name}.npz", **arrays)
    (out / f"{name}.json").write_text(json.dumps(meta, sort_keys=True, default=str))


def _same_bits(x: np.ndarray, y: np.ndarray) -> bool:
    """Bitwise equality (NaN rows of an absent validation set compare equal to themselves)."""
    return x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


def compare(a: Path, b: Path) -> int:
    bad = 0
    names = sorted(p.name for p in a.iterdir())
    for name in names:
        pa, pb = a / name, b / name
        if not pb.exists():
            print("missing", name)
            bad += 1
            continue
        if name.endswith(".npz"):
            za, zb = np.load(pa), np.load(pb)
            keys = set(za.files) | set(zb.files)
            diff = [k for k in keys if k not in za or k not in zb or not _same_bits(za[k], zb[k])]
            if diff:
                print(name, "differs:", sorted(diff)[:8])
                bad += 1
        elif pa.read_text() != pb.read_text():
            print(name, "differs")
            bad += 1
    print(f"{len(names)} files compared, {bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    run_all(Path(sys.argv[1]))
