"""Extreme simplicity bias is robust to the training recipe (Shah et al. 2020, App. C.4-C.7).

Parts (select with ``--parts``, comma-separated; default all):

* ``activations`` -- Table 6: (100,2)-FCNs with ReLU / LeakyReLU / PReLU / Tanh trained with SGD,
  Adam or RMSProp on LMS-7 and MS-(5,7). One sweep per (dataset, activation, optimizer).
* ``regularization`` -- Table 7: (100,1)- and (100,2)-FCNs on LMS-7 with dropout x L2. Dropout
  rate and weight decay are traced hyperparameters: one sweep (one compile) per model shape.
* ``dimension`` -- Table 8: (100,1)-FCN on LMS-7 with input dimension d and |S^c| 7-slabs; the
  d - 1 - |S^c| remaining coordinates are U[0, B) noise (the reference generator's fill,
  REFERENCE.md Sec. 11 item 21; ``--noise-fill`` changes it).
* ``init`` -- Table 9: (100,1)-FCN on LMS-7, init scheme (static: one sweep each) x init scale
  (traced: a grid inside the sweep).
* ``complex_first`` -- Fig. 5 / App. C.7: train M_slab on MS-7, pick the 7-slab coordinate c it
  depends on least (coordinate-randomized AUC), build LMS-7 by putting the linear coordinate at c,
  and train M_alpha = alpha * M_slab + (1 - alpha) * M_rand on it. The engine draws initial
  parameters from each model's key, so a model wrapper (`mixed_init_model`) whose ``init`` draws
  M_rand from that key (the ordinary init) and mixes in the fixed M_slab is passed to
  `train_sweep`; alpha is static, one sweep per alpha. Every seed shares M_slab (the best seed of
  the MS-7 sweep) and has its own M_rand and batch order.

Every cell reports the standard, S-randomized and S^c-randomized ROC-AUC (plus accuracies) of the
final models on a held-out test set, mean +- std over seeds. Under extreme SB: standard AUC 1,
S-randomized AUC 0.5, S^c-randomized AUC 1. Each model's randomizations use its own key, derived
from its (cell, seed index) (`eval_keys`: a cell is a sweep and, for traced grids, a grid point),
so no two cells share a permutation; all models of a sweep are evaluated in one compiled call.

Failed models: a model that diverged is excluded from every mean and std of its cell and counted
(``n_diverged``, ``seed_status``); a cell whose models all diverged says "all models failed".
Convergence is NOT required (``REQUIRE_CONVERGED = False``): App. C has no reference notebook,
and the paper's stated procedure (App. B; REFERENCE.md Sec. 3.4) trains to a budget with an early
stop, so a model that used its whole budget is still a trained model of the table; it is used and
counted in ``n_unconverged`` (in the quick preset e.g. Table 9's x2 / x10 inits end at train
accuracy 0.994-0.9999, one error short of the stop rule). M_slab of Fig. 5 ("trained on MS-7 to
100 %") is the best converged seed, else the best unconverged one (logged); a diverged seed is
never selected.

    python -m experiments.robustness_of_sb --preset quick --out runs/robustness_of_sb
    python -m experiments.robustness_of_sb --preset paper --parts init,dimension --out DIR
"""

from __future__ import annotations

import copy
import hashlib
import logging
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments.common import (
    SEED_OK,
    SEED_UNCONVERGED,
    SEED_UNCONVERGED_USED,
    make_parser,
    start_run,
)
from sbjax.validate import fail

NAME = "robustness_of_sb"
PARTS = ("activations", "regularization", "dimension", "init", "complex_first")
# App. C follows the paper's budgeted procedure (no reference notebook): a model that used its
# whole budget is a trained model of the table, used and counted; diverged models always fail.
REQUIRE_CONVERGED = False
log = logging.getLogger(f"sbjax.experiments.{NAME}")

# Standard SGD recipe of the synthetic experiments: the reference's nb01 values (lr 0.1, no
# momentum, coupled L2 5e-5, batch 256, stop at train accuracy 1 - 1e-4; REFERENCE.md Sec. 3.3 and
# Sec. 11 item 1 -- the paper's App. B says L2 5e-7).
_SGD = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 5e-5, "batch_size": 256,
        "stop_rule": "acc", "stop_eps": 1e-4}

PRESETS: dict[str, dict[str, Any]] = {
    # Tiny: seconds per part; the default test suite runs it end to end.
    "smoke": {
        "n_seeds": 2, "n_train": 2000, "n_test": 1000, "d": 50,
        "train": {**_SGD, "max_steps": 300, "eval_every": 150},
        "adaptive_lr": 1e-3,
        "t6_datasets": ["lms7"], "t6_activations": ["tanh"],
        "t6_optimizers": ["adam"], "ms_max_steps": 300,
        "t7_depths": [1], "t7_dropouts": [0.0, 0.1], "t7_l2": [1e-4],
        "t8_dims": [[5, 2]],
        "t9_inits": ["xavier"], "t9_scales": [0.5, 2.0],
        "f5_width": 100, "f5_depth": 1, "f5_n_train": 2000,
        "f5_slab_train": {"optimizer": "sgd", "lr": 0.3, "momentum": 0.9, "weight_decay": 5e-4,
                          "batch_size": 256, "stop_rule": "acc", "stop_eps": 5e-3,
                          "max_steps": 300, "eval_every": 150},
        "f5_alphas": [0.5],
    },
    # CPU minutes: 3 seeds, 10k training points (paper: 50k), Table 6 on LMS-7 only (MS-(5,7)
    # needs ~15k updates per cell), short budgets (LMS-7 converges in a few hundred updates).
    "quick": {
        "n_seeds": 3, "n_train": 10000, "n_test": 5000, "d": 50,
        "train": {**_SGD, "max_steps": 3000, "eval_every": 250},
        "adaptive_lr": 1e-3,
        "t6_datasets": ["lms7"], "t6_activations": ["relu", "leaky_relu", "prelu", "tanh"],
        "t6_optimizers": ["sgd", "adam", "rmsprop"], "ms_max_steps": 20000,
        "t7_depths": [1, 2], "t7_dropouts": [0.0, 0.05, 0.1], "t7_l2": [1e-2, 1e-4],
        "t8_dims": [[2, 1], [5, 1], [5, 3], [10, 1], [10, 3], [10, 6]],
        "t9_inits": ["kaiming", "xavier"], "t9_scales": [0.1, 0.5, 2.0, 10.0],
        "f5_width": 100, "f5_depth": 2, "f5_n_train": 40000,
        "f5_slab_train": {"optimizer": "sgd", "lr": 0.3, "momentum": 0.9, "weight_decay": 5e-4,
                          "batch_size": 256, "stop_rule": "acc", "stop_eps": 5e-3,
                          "max_steps": 20000, "eval_every": 1000},
        "f5_alphas": [0.0, 0.5, 0.75, 1.0],
    },
    # Paper sizes (App. B: 50k training points), 5 seeds, both Table 6 datasets; for a GPU/TPU.
    "paper": {
        "n_seeds": 5, "n_train": 50000, "n_test": 10000, "d": 50,
        "train": {**_SGD, "max_steps": 20000, "eval_every": 500},
        "adaptive_lr": 1e-3,
        "t6_datasets": ["lms7", "ms57"], "t6_activations": ["relu", "leaky_relu", "prelu", "tanh"],
        "t6_optimizers": ["sgd", "adam", "rmsprop"], "ms_max_steps": 60000,
        "t7_depths": [1, 2], "t7_dropouts": [0.0, 0.05, 0.1], "t7_l2": [1e-2, 1e-4],
        "t8_dims": [[2, 1], [5, 1], [5, 3], [10, 1], [10, 3], [10, 6]],
        "t9_inits": ["kaiming", "xavier"], "t9_scales": [0.1, 0.5, 2.0, 10.0],
        "f5_width": 100, "f5_depth": 2, "f5_n_train": 40000,
        "f5_slab_train": {"optimizer": "sgd", "lr": 0.3, "momentum": 0.9, "weight_decay": 5e-4,
                          "batch_size": 256, "stop_rule": "acc", "stop_eps": 5e-3,
                          "max_steps": 60000, "eval_every": 1000},
        "f5_alphas": [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0],
    },
}

DATASETS = {  # record name -> make_dataset arguments (d filled in from the preset)
    "lms7": ("lms", {"k": 7}),
    "ms57": ("ms", {"k_simple": 5, "k_complex": 7}),
    "ms7": ("ms", {"k": 7}),
}


# ------------------------------------------------------------------------------------------------
# Helpers.


def parse_parts(text: str) -> list[str]:
    """'all' or a comma-separated subset of `PARTS` -> list in canonical order."""
    if text.strip() == "all":
        return list(PARTS)
    wanted = [p.strip() for p in text.split(",") if p.strip()]
    for p in wanted:
        if p not in PARTS:
            fail("parts", text, "'all' or a comma-separated subset of " + ", ".join(PARTS))
    if not wanted:
        fail("parts", text, "'all' or a comma-separated subset of " + ", ".join(PARTS))
    return [p for p in PARTS if p in wanted]


def model_name(width: int, depth: int) -> str:
    return f"fcn_{width}x{depth}"


def mixed_init_model(model: Any, slab_variables: Any, alpha: float, tag: str) -> Any:
    """Wraps a `Model` so that its init returns alpha * M_slab + (1 - alpha) * M_rand.

    M_rand is the model's ordinary random init drawn from the key the trainer passes (so seeds
    differ in M_rand and batch order); M_slab (`slab_variables`, one model's unstacked variables)
    is fixed. Everything else (apply, logits) is the wrapped model's. Weight decay and the
    optimizer act on the mixed parameters exactly as on a random init: this is training from a
    given initial point, nothing more.

    Args:
      model: an `sbjax.models.Model`.
      slab_variables: variables of the trained MS-7 model (same architecture), unstacked.
      alpha: mixing weight in [0, 1]; 1 starts exactly at M_slab.
      tag: a deterministic description of M_slab (e.g. a hash) for the sweep's resume
        fingerprint, which reads `model.config`.

    Returns:
      A `Model` (same NamedTuple type) with a new `init` and a string `config`.
    """
    import jax
    import jax.numpy as jnp

    if not 0.0 <= float(alpha) <= 1.0:
        fail("alpha", alpha, "a float in [0, 1]")
    a = float(alpha)
    slab = jax.tree_util.tree_map(jnp.asarray, slab_variables)
    base_init = model.init

    def init(key, x_example):
        rand = base_init(key, x_example)
        return jax.tree_util.tree_map(lambda s, r: a * s + (1.0 - a) * r, slab, rand)

    return model._replace(init=init, config=f"{model.config!r}|alpha_mix={a!r}|slab={tag}")


def tree_digest(tree: Any) -> str:
    """Short SHA-256 of a pytree of arrays (values and shapes)."""
    import jax

    h = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(tree):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(repr(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def tree_index(tree: Any, i: int) -> Any:
    import jax

    return jax.tree_util.tree_map(lambda v: np.asarray(v)[i], tree)


def stable_tag(*parts: Any) -> int:
    """A stable 31-bit integer for PRNG streams (crc32 of the parts' text)."""
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def grid_point_tag(point: Mapping[str, Any]) -> str:
    """A grid point as stable text, e.g. "dropout_rate=0.1,weight_decay=0.0001"."""
    return ",".join(f"{k}={float(v)!r}" for k, v in sorted(point.items()))


def eval_keys(seed: int, cells: str | Sequence[str], seed_index: Any) -> Any:
    """Evaluation keys [M], one per model, each from its own (cell, seed index).

    Model m gets fold_in(fold_in(key(seed), stable_tag("eval", cell_m)), seed_index[m]): cells
    never share a randomization, and seed s of a cell gets the same key whatever the sweep size.

    Args:
      seed: the run's root seed.
      cells: one cell name for every model, or one per model [M].
      seed_index: int [M] seed index of each model.
    """
    import jax
    import jax.numpy as jnp

    seed_index = np.asarray(seed_index).reshape(-1)
    if isinstance(cells, str):
        cells = [cells] * seed_index.size
    tags = jnp.asarray([stable_tag("eval", c) for c in cells], jnp.uint32)
    root = jax.random.key(seed)
    return jax.vmap(lambda t, s: jax.random.fold_in(jax.random.fold_in(root, t), s))(
        tags, jnp.asarray(seed_index, jnp.uint32))


def sweep_eval_keys(seed: int, cell: str, r) -> Any:
    """`eval_keys` of a sweep's models [M]: the cell is the sweep, and with a traced grid each
    grid point is its own cell (`cell/<grid point>`), so Table 7 / 9 cells do not share draws.

    Args:
      seed: the run's root seed. cell: the sweep's name.
      r: the `SweepResult` (seed_index, grid_index, grid_points).
    """
    if len(r.grid_points) > 1:
        cells = [f"{cell}/{grid_point_tag(r.grid_points[int(g)])}" for g in r.grid_index]
    else:
        cells = cell
    return eval_keys(seed, cells, r.seed_index)


def class_sizes(y: Any) -> tuple[int, int]:
    """(n_pos, n_neg) of labels y [n] (for `Run.add_result(test_size=...)`)."""
    n_pos = int(np.sum(np.asarray(y) == 1))
    return n_pos, int(np.size(y)) - n_pos


# ------------------------------------------------------------------------------------------------
# Evaluation of a stack of models: standard / S-randomized / S^c-randomized metrics.


def evaluate_stack(logits_fn, variables, *, test, train, rotation, s_coords, sc_coords=None,
                   key) -> dict[str, np.ndarray]:
    """Per-model metrics of stacked `variables` [M, ...] (float64 numpy [M] each), one call.

    `key`: PRNG keys [M], one per model (each model its own permutations, e.g. `eval_keys`), or
    one key shared by every model.

    Keys: test_acc, test_auc, s_rand_acc, s_rand_auc, sc_rand_acc, sc_rand_auc, train_acc (when
    `train` is given) and exclusive_s_invariant_sc (1.0 where `sbjax.eval.randomize.
    reliance_summary` finds the model relies exclusively on S and is invariant to S^c: paper
    Table 1 with its default tolerances, logit-distribution KS tests included).
    Randomization follows the reference (REFERENCE.md Sec. 4.3): one row permutation of the test
    set moves the chosen canonical block jointly. `sc_coords` None: every coordinate not in S
    (the reference's S^c = {1, ..., d - 1}, noise coordinates included).
    """
    from sbjax.eval import metrics as M
    from sbjax.eval import randomize as R

    x_te, y_te = test
    d = int(np.shape(x_te)[1])
    basis = R.as_basis(rotation=rotation, simple_coords=tuple(s_coords),
                       complex_coords=None if sc_coords is None else tuple(sc_coords), dim=d)
    # With per-model keys each model gets its own permutation, so the spread over seeds includes
    # the randomization's own sampling noise (one shared permutation would shift every model of
    # the run by the same amount); the keys are vmapped with the parameters.
    rep = R.randomization_report(logits_fn, variables, x_te, y_te, key, basis)
    verdict = R.reliance_summary(rep)
    f = lambda v: np.asarray(v, np.float64)  # noqa: E731
    out = {}
    for name, src in (("test", "standard"), ("s_rand", "s_randomized"),
                      ("sc_rand", "sc_randomized")):
        out[f"{name}_acc"] = f(rep[src]["accuracy"])
        out[f"{name}_auc"] = f(rep[src]["roc_auc"])
    out["exclusive_s_invariant_sc"] = f(verdict["exclusive_s_invariant_sc"])
    if train is not None:
        out["train_acc"] = f(M.evaluate(logits_fn, variables, train[0], train[1])["accuracy"])
    return out


def _train_cfg(base: Mapping[str, Any], **over: Any):
    from sbjax.train import TrainConfig

    kw = {**base, **over}
    return TrainConfig(**kw)


# ------------------------------------------------------------------------------------------------
# Parts.


class _Ctx:
    """What every part needs: the run, the preset, data caches and a record helper."""

    def __init__(self, run, cfg: Mapping[str, Any], noise_fill: str):
        import jax

        self.run = run
        self.cfg = cfg
        self.noise_fill = noise_fill
        self.root = jax.random.key(run.seed)
        self.timings: dict[str, float] = {}

    def key(self, *tags: int):
        import jax

        k = self.root
        for t in tags:
            k = jax.random.fold_in(k, t)
        return k

    def dataset(self, name: str, d: int | None = None, n_complex: int | None = None):
        from sbjax.data import make_dataset

        kind, kw = DATASETS[name]
        kw = dict(kw, d=int(d or self.cfg["d"]))
        if n_complex is not None:
            kw.update(n_complex=int(n_complex), noise_fill=self.noise_fill)
        return make_dataset(kind, **kw)

    def data(self, ds, tag: int, n_train: int | None = None):
        (xtr, ytr), (xte, yte) = ds.sample_split(
            self.key(1000 + tag), int(n_train or self.cfg["n_train"]), int(self.cfg["n_test"]))
        return (np.asarray(xtr), np.asarray(ytr)), (np.asarray(xte), np.asarray(yte))

    def sweep(self, name: str, tcfg, model, train, val, grid=None):
        from sbjax.train import train_sweep

        r = train_sweep(tcfg, model, train, val, n_seeds=self.run.n_seeds, seed=self.run.seed,
                        grid=grid, **self.run.sweep_kwargs(name))
        self.run.save_params(name, r.params)
        self.timings[name] = {"compile_s": float(r.compile_s), "wall_s": float(r.wall_s)}
        n_div = sum(s == "diverged" for s in r.stop_reason)
        if n_div:
            log.warning("%s: %d of %d models diverged", name, n_div, r.n_models)
        return r

    def record(self, part: str, dataset: str, model: str, metrics: Mapping[str, np.ndarray],
               r, test, mask=None, other_sets: Mapping[str, Any] | None = None,
               **settings) -> dict:
        """One summary record of the models `mask` [M] (default all) of sweep `r`.

        `metrics` are already the selected rows; the models' stop reasons (selected the same way)
        decide which seeds are used (diverged models are excluded and counted; unconverged ones
        only counted, since `REQUIRE_CONVERGED` is False). `test` = (x, y) of the evaluation set (its class sizes give each
        metric's sampling SE); `other_sets`: {metric: labels y} of metrics measured on another
        set (e.g. Fig. 5's MS-7 accuracy at init).
        """
        sel = np.ones(r.n_models, bool) if mask is None else np.asarray(mask, bool)
        reasons = [s for s, m in zip(r.stop_reason, sel, strict=True) if m]
        extra = {"stop_updates": np.asarray(r.stop_step, np.float64)[sel]}
        sizes = {k: class_sizes((other_sets or {}).get(k, test[1])) for k in metrics}
        return self.run.add_result(dataset=dataset, model=model, part=part,
                                   metrics={**metrics, **extra}, status=reasons,
                                   require_converged=REQUIRE_CONVERGED,
                                   test_size=sizes, **settings)


def _cell_metrics(ctx: _Ctx, cell: str, r, model, params, ds, train, test, s=None, sc=None):
    """Metrics [M] of a sweep's models, each with its own (cell, seed) evaluation key."""
    return evaluate_stack(
        model.logits, params, test=test, train=train, rotation=ds.rotation,
        s_coords=tuple(ds.simple_coords if s is None else s),
        sc_coords=sc, key=sweep_eval_keys(ctx.run.seed, cell, r))


def _split_by_grid(r, metrics: Mapping[str, np.ndarray]):
    """[M] metric arrays -> list over grid points of ({name: [n_seeds]}, mask [M])."""
    out = []
    for g in range(len(r.grid_points)):
        mask = r.grid_index == g
        out.append(({k: np.asarray(v)[mask] for k, v in metrics.items()}, mask))
    return out


def part_activations(ctx: _Ctx) -> list[dict]:
    """Table 6: activation x optimizer, (100,2)-FCN."""
    from sbjax.models import make_model

    cfg, recs = ctx.cfg, []
    for di, dname in enumerate(cfg["t6_datasets"]):
        ds = ctx.dataset(dname)
        train, test = ctx.data(ds, tag=60 + di)
        steps = cfg["train"]["max_steps"] if dname.startswith("lms") else cfg["ms_max_steps"]
        for act in cfg["t6_activations"]:
            model = make_model({"name": "fcn", "width": 100, "depth": 2, "activation": act})
            for opt in cfg["t6_optimizers"]:
                over = {"optimizer": opt, "max_steps": steps}
                if opt != "sgd":
                    over["lr"] = cfg["adaptive_lr"]
                tcfg = _train_cfg(cfg["train"], **over)
                cell = f"t6_{dname}_{act}_{opt}"
                r = ctx.sweep(cell, tcfg, model, train, test)
                met = _cell_metrics(ctx, cell, r, model, r.params, ds, train, test)
                recs.append(ctx.record("table6", dname, "fcn_100x2", met, r, test,
                                       activation=act, optimizer=opt, lr=float(tcfg.lr)))
    return recs


def part_regularization(ctx: _Ctx) -> list[dict]:
    """Table 7: dropout x L2 (both traced: one sweep per depth)."""
    from sbjax.models import make_model

    cfg, recs = ctx.cfg, []
    ds = ctx.dataset("lms7")
    train, test = ctx.data(ds, tag=70)
    grid = {"dropout_rate": [float(v) for v in cfg["t7_dropouts"]],
            "weight_decay": [float(v) for v in cfg["t7_l2"]]}
    for depth in cfg["t7_depths"]:
        model = make_model({"name": "fcn", "width": 100, "depth": int(depth), "dropout": True})
        tcfg = _train_cfg(cfg["train"])
        cell = f"t7_lms7_{model_name(100, depth)}"
        r = ctx.sweep(cell, tcfg, model, train, test, grid=grid)
        met = _cell_metrics(ctx, cell, r, model, r.params, ds, train, test)
        for (m, mask), pt in zip(_split_by_grid(r, met), r.grid_points, strict=True):
            recs.append(ctx.record("table7", "lms7", model_name(100, depth), m, r, test, mask,
                                   dropout=pt["dropout_rate"], weight_decay=pt["weight_decay"]))
    return recs


def part_dimension(ctx: _Ctx) -> list[dict]:
    """Table 8: input dimension d x number of 7-slabs |S^c| (rest: noise fill)."""
    from sbjax.models import make_model

    cfg, recs = ctx.cfg, []
    model = make_model({"name": "fcn", "width": 100, "depth": 1})
    for i, (d, nc) in enumerate(cfg["t8_dims"]):
        ds = ctx.dataset("lms7", d=d, n_complex=nc)
        train, test = ctx.data(ds, tag=80 + i)
        cell = f"t8_lms7_d{d}_c{nc}"
        r = ctx.sweep(cell, _train_cfg(cfg["train"]), model, train, test)
        met = _cell_metrics(ctx, cell, r, model, r.params, ds, train, test)
        recs.append(ctx.record("table8", "lms7", "fcn_100x1", met, r, test, d=int(d),
                               n_complex=int(nc), noise_fill=ctx.noise_fill))
    return recs


def part_init(ctx: _Ctx) -> list[dict]:
    """Table 9: init scheme (static) x init scale (traced grid)."""
    from sbjax.models import make_model

    cfg, recs = ctx.cfg, []
    ds = ctx.dataset("lms7")
    train, test = ctx.data(ds, tag=90)
    for init in cfg["t9_inits"]:
        model = make_model({"name": "fcn", "width": 100, "depth": 1, "init": init})
        grid = {"init_scale": [float(v) for v in cfg["t9_scales"]]}
        cell = f"t9_lms7_{init}"
        r = ctx.sweep(cell, _train_cfg(cfg["train"]), model, train, test, grid=grid)
        met = _cell_metrics(ctx, cell, r, model, r.params, ds, train, test)
        for (m, mask), pt in zip(_split_by_grid(r, met), r.grid_points, strict=True):
            recs.append(ctx.record("table9", "lms7", "fcn_100x1", m, r, test, mask, init=init,
                                   init_scale=pt["init_scale"]))
    return recs


def lms7_with_linear_at(ds_lms, ds_ms, key, n: int, coord: int):
    """LMS-7 points whose linear coordinate sits at canonical coordinate `coord`.

    Draws canonical LMS-7 points (coordinate 0 linear, 1..d-1 7-slabs), moves column 0 to
    `coord` (the 7-slab column there moves to 0, a relabelling of i.i.d. slab columns), and
    rotates with MS-7's rotation, so a model trained on MS-7 sees the same basis.

    Returns:
      (x float32 [n, d] model basis, y int32 [n]).
    """
    z, y = ds_lms.sample_canonical(key, n)
    z = np.asarray(z).copy()
    z[:, [0, coord]] = z[:, [coord, 0]]
    return np.asarray(ds_ms.from_canonical(z)), np.asarray(y)


def part_complex_first(ctx: _Ctx) -> dict[str, Any]:
    """Fig. 5: complex-first initialisation by alpha-mixing a model trained on MS-7."""
    import jax

    from sbjax.eval import metrics as M
    from sbjax.eval import randomize as R
    from sbjax.models import make_model

    cfg = ctx.cfg
    width, depth = int(cfg["f5_width"]), int(cfg["f5_depth"])
    mname = model_name(width, depth)
    model = make_model({"name": "fcn", "width": width, "depth": depth})
    d = int(cfg["d"])
    ds_ms = ctx.dataset("ms7")
    ds_lms = ctx.dataset("lms7")
    if not np.allclose(ds_ms.rotation, ds_lms.rotation):
        raise RuntimeError("MS-7 and LMS-7 must share the rotation (same d and rotation_seed)")
    n_tr, n_te = int(cfg["f5_n_train"]), int(cfg["n_test"])
    ms_train, ms_test = ctx.data(ds_ms, tag=50, n_train=n_tr)

    # 1. M_slab: trained on MS-7 (all coordinates 7-slabs).
    slab_cell = f"f5_ms7_{mname}"
    r_slab = ctx.sweep(slab_cell, _train_cfg(cfg["f5_slab_train"]), model, ms_train, ms_test)
    ms_met = _cell_metrics(ctx, slab_cell, r_slab, model, r_slab.params, ds_ms, ms_train,
                           ms_test, s=(0,), sc=tuple(range(1, d)))
    rec_slab = ctx.record("fig5", "ms7", mname, ms_met, r_slab, ms_test, role="m_slab")
    best, slab_status = select_m_slab(ms_met["test_acc"], rec_slab["seed_status"])
    if best is None:
        log.error("Fig. 5: every M_slab model diverged; no complex-first runs")
        return {"records": [rec_slab], "status": "all M_slab models failed",
                "curves": {"alpha": []}}
    slab_vars = tree_index(r_slab.params, best)
    slab_acc = float(ms_met["test_acc"][best])
    if slab_acc < 0.99:
        log.warning("M_slab reached only %.4f test accuracy on MS-7 (paper: 100%%)", slab_acc)

    # 2. The coordinate M_slab depends on least: highest coordinate-randomized AUC on MS-7.
    one = jax.tree_util.tree_map(lambda v: v[None], slab_vars)
    coord_auc = np.asarray(R.per_coordinate_randomized(
        model.logits, one, ms_test[0], ms_test[1], ctx.key(51), ds_ms.rotation,
        auc_kind="roc")["roc_auc"])[0]
    coord = int(np.argmax(coord_auc))

    # 3. LMS-7 with its linear coordinate at `coord`.
    k_tr, k_te = jax.random.split(ctx.key(52))
    lms_train = lms7_with_linear_at(ds_lms, ds_ms, k_tr, n_tr, coord)
    lms_test = lms7_with_linear_at(ds_lms, ds_ms, k_te, n_te, coord)
    s_c, sc_c = (coord,), tuple(i for i in range(d) if i != coord)

    # 4. For each alpha: MS-7 accuracy of M_alpha at init (Fig. 5a), then train on LMS-7.
    tag = tree_digest(slab_vars)
    curves: dict[str, list] = {"alpha": [], "init_ms7_acc": [], "s_rand_auc": [],
                               "sc_rand_auc": [], "test_auc": []}
    recs = [rec_slab]
    for alpha in cfg["f5_alphas"]:
        mixed = mixed_init_model(model, slab_vars, float(alpha), tag)
        from sbjax.train import model_keys
        from sbjax.train.engine import STREAM_INIT

        # Initial params exactly as the trainer builds them (init_scale 1): key -> fold_in init.
        keys = model_keys(ctx.run.seed, list(range(ctx.run.n_seeds)), 1, 1)
        init_vars = jax.vmap(lambda k, m=mixed: m.init(jax.random.fold_in(k, STREAM_INIT),
                                                       ms_train[0][:1]))(keys)
        init_ms = M.evaluate(model.logits, init_vars, ms_test[0], ms_test[1])
        init_lms = M.evaluate(model.logits, init_vars, lms_test[0], lms_test[1])
        cell = f"f5_lms7_alpha{float(alpha):.2f}"
        r = ctx.sweep(cell, _train_cfg(cfg["train"]), mixed, lms_train, lms_test)
        met = evaluate_stack(model.logits, r.params, test=lms_test, train=lms_train,
                             rotation=ds_ms.rotation, s_coords=s_c, sc_coords=sc_c,
                             key=sweep_eval_keys(ctx.run.seed, cell, r))
        met["init_ms7_acc"] = np.asarray(init_ms["accuracy"], np.float64)
        met["init_lms7_acc"] = np.asarray(init_lms["accuracy"], np.float64)
        rec = ctx.record("fig5", "lms7", mname, met, r, lms_test, alpha=float(alpha),
                         linear_coord=coord, role="m_alpha",
                         other_sets={"init_ms7_acc": ms_test[1]})
        recs.append(rec)
        curves["alpha"].append(float(alpha))
        # Mean and std over the seeds that did not fail (None when all failed / one seed).
        for k in ("init_ms7_acc", "s_rand_auc", "sc_rand_auc", "test_auc"):
            curves[k].append([rec["metrics"][k]["mean"], rec["metrics"][k]["std"]])
    return {"records": recs, "linear_coord": coord, "coord_auc": coord_auc.tolist(),
            "m_slab_seed": int(r_slab.seed_index[best]), "m_slab_status": slab_status,
            "m_slab_test_acc": slab_acc, "curves": curves}


def select_m_slab(test_acc: Any, status: Sequence[str]) -> tuple[int | None, str | None]:
    """Index of M_slab: the highest test accuracy among the converged seeds (status "ok").

    Fig. 5's M_slab is "trained on MS-7 to 100 %". A diverged model is never selected. If no seed
    converged but some only ran out of budget, the best of those is taken (status
    "unconverged", logged), so Fig. 5 still runs. All diverged: (None, None).

    Returns:
      (index into the sweep's models or None, "ok" | "unconverged" | None).
    """
    acc = np.asarray(test_acc, np.float64)
    finite = np.isfinite(acc)
    pool, how = np.asarray([s == SEED_OK for s in status], bool) & finite, "ok"
    if not pool.any():
        pool = np.asarray([s in (SEED_UNCONVERGED, SEED_UNCONVERGED_USED) for s in status],
                          bool) & finite
        how = "unconverged"
        if pool.any():
            log.warning("Fig. 5: no M_slab seed converged; using the best unconverged one")
    if not pool.any():
        return None, None
    return int(np.flatnonzero(pool)[np.argmax(acc[pool])]), how


# ------------------------------------------------------------------------------------------------
# Figures.


def _heatmap(ax, values, stds, rows, cols, title, vmin=0.4, vmax=1.0, failed=None):
    im = ax.imshow(values, vmin=vmin, vmax=vmax, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(values[i, j]):
                sd = f"±{stds[i, j]:.3f}" if np.isfinite(stds[i, j]) else "(1 seed)"
                ax.text(j, i, f"{values[i, j]:.3f}\n{sd}", ha="center", va="center",
                        fontsize=7, color="w" if values[i, j] < 0.75 else "k")
            elif failed is not None and failed[i, j]:
                ax.text(j, i, "all\nfailed", ha="center", va="center", fontsize=7, color="r")
    ax.set_title(title, fontsize=9)
    return im


def _grid_of(records, row_key, col_key, metric="s_rand_auc"):
    rows = list(dict.fromkeys(r[row_key] for r in records))
    cols = list(dict.fromkeys(r[col_key] for r in records))
    mean = np.full((len(rows), len(cols)), np.nan)
    std = np.full_like(mean, np.nan)
    failed = np.zeros(mean.shape, bool)
    for r in records:
        i, j = rows.index(r[row_key]), cols.index(r[col_key])
        st = r["metrics"][metric]
        # mean None: every model of the cell failed; std None: one seed left.
        mean[i, j] = np.nan if st["mean"] is None else st["mean"]
        std[i, j] = np.nan if st["std"] is None else st["std"]
        failed[i, j] = r.get("status") == "all models failed"
    return mean, std, [str(v) for v in rows], [str(v) for v in cols], failed


def make_figures(run, results: Sequence[dict], f5: dict | None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    panels = []
    for ds in ("lms7", "ms57"):
        recs = [r for r in results if r.get("part") == "table6" and r["dataset"] == ds]
        if recs:
            panels.append((f"Table 6, {ds}, (100,2)-FCN", recs, "activation", "optimizer"))
    for mdl in ("fcn_100x1", "fcn_100x2"):
        recs = [r for r in results if r.get("part") == "table7" and r["model"] == mdl]
        if recs:
            panels.append((f"Table 7, lms7, {mdl}", recs, "dropout", "weight_decay"))
    recs = [r for r in results if r.get("part") == "table8"]
    if recs:
        panels.append(("Table 8, lms7, (100,1)-FCN", recs, "d", "n_complex"))
    recs = [r for r in results if r.get("part") == "table9"]
    if recs:
        panels.append(("Table 9, lms7, (100,1)-FCN", recs, "init", "init_scale"))
    if panels:
        fig, axes = plt.subplots(len(panels), 2, figsize=(9, 2.6 * len(panels)), squeeze=False)
        for (title, recs, rk, ck), ax_row in zip(panels, axes, strict=True):
            for metric, ax in zip(("s_rand_auc", "sc_rand_auc"), ax_row, strict=True):
                mean, std, rows, cols, failed = _grid_of(recs, rk, ck, metric)
                _heatmap(ax, mean, std, rows, cols,
                         f"{title}\n{metric} (mean±std over seeds that did not fail)",
                         failed=failed)
                ax.set_ylabel(rk)
                ax.set_xlabel(ck)
        fig.tight_layout()
        p = run.path("tables6to9_randomized_auc.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        files.append(p.name)
    if f5 is not None and f5["curves"]["alpha"]:
        c = f5["curves"]
        a = np.asarray(c["alpha"])

        def mean_std(rows):
            # [mean, std] per alpha; mean None (all failed) -> NaN, std None (one seed) -> 0.
            return np.asarray([[np.nan if mu is None else mu, 0.0 if sd is None else sd]
                               for mu, sd in rows], np.float64)

        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        m = mean_std(c["init_ms7_acc"])
        axes[0].errorbar(a, m[:, 0], m[:, 1], marker="o")
        axes[0].set(xlabel="alpha", ylabel="MS-7 test accuracy of M_alpha (at init)",
                    title="Fig. 5(a): alpha-mixed init", ylim=(0.4, 1.02))
        for k, lab in (("s_rand_auc", f"S-randomized (linear coord {f5['linear_coord']})"),
                       ("sc_rand_auc", "S^c-randomized (7-slabs)"), ("test_auc", "standard")):
            m = mean_std(c[k])
            axes[1].errorbar(a, m[:, 0], m[:, 1], marker="o", label=lab, capsize=3)
        axes[1].axhline(0.5, color="gray", lw=0.8, ls=":")
        axes[1].set(xlabel="alpha", ylabel="AUC after training on LMS-7",
                    title="Fig. 5(b): reliance after training", ylim=(0.4, 1.02))
        axes[1].legend(fontsize=8)
        fig.tight_layout()
        p = run.path("fig5_complex_first_init.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        files.append(p.name)
    return files


# ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict:
    parser = make_parser(NAME, __doc__, PRESETS)
    parser.add_argument("--parts", default="all",
                        help="'all' or comma-separated subset of " + ", ".join(PARTS))
    parser.add_argument("--noise-fill", default="uniform_0B",
                        choices=("uniform_0B", "uniform_sym", "gaussian"),
                        help="Table 8: fill of coordinates beyond the features (REFERENCE 11.21)")
    args = parser.parse_args(argv)
    parts = parse_parts(args.parts)
    cfg = copy.deepcopy(PRESETS[args.preset])
    run = start_run(NAME, args, cfg, extra_config={"parts": parts, "noise_fill": args.noise_fill})
    import time

    ctx = _Ctx(run, cfg, args.noise_fill)
    f5 = None
    timings = {}
    for part in parts:
        t0 = time.perf_counter()
        if part == "complex_first":
            f5 = part_complex_first(ctx)
        else:
            globals()[f"part_{part}"](ctx)
        timings[part] = time.perf_counter() - t0
        log.info("part %s done in %.1f s", part, timings[part])
    figures = make_figures(run, run.results, f5)
    extra: dict[str, Any] = {"parts": parts, "part_runtime_s": timings, "figures": figures,
                             "noise_fill": args.noise_fill, "sweep_runtime_s": ctx.timings}
    if f5 is not None:
        extra["complex_first"] = {k: v for k, v in f5.items() if k != "records"}
    return run.finish(extra=extra)


if __name__ == "__main__":
    main()
