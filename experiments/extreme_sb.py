"""Simplicity bias is extreme (Shah et al. 2020, Sec. 4.2, Fig. 3(a, b, c), App. C Table 4).

Parts (select with ``--parts``, comma-separated; default all):

* ``table4`` -- Table 4 / Fig. 3(a, c): FCN, 1-D CNN and GRU trained with SGD on LMS-5 and
  MS-(5,7). For every model: train / test accuracy, standard, S-randomized and S^c-randomized
  ROC-AUC and accuracy, the Table 1 verdict ("relies exclusively on S and is invariant to S^c",
  `sbjax.eval.randomize.reliance_summary`), coordinate-wise randomized accuracy (every canonical
  coordinate), logit histograms of the true positives (Fig. 3a) and a 2-D decision-boundary
  projection on S and the most influential S^c coordinate (Fig. 3c).
* ``sc_sweep`` -- Fig. 3(b): (w,1)-FCNs on LMS-5 and MS-(5,7) with |S^c| in {49, 249}
  (d = |S^c| + 1); S- and S^c-randomized AUC against |S^c|. The paper uses w = 2000.
* ``s_removed`` -- the control of Sec. 4.2 ("if S is removed from the dataset, SGD-trained models
  with the same sample size indeed rely on S^c to attain 100% accuracy"): the same training and
  test sets with the S block randomized (one row permutation of the canonical S column, so S is
  independent of the label while the dimension, the rotation and S^c are unchanged). On LMS-5
  that leaves 49 informative 5-slabs (MS-5 plus one uninformative coordinate), on MS-(5,7) 49
  7-slabs (MS-7 plus one uninformative coordinate). Reports test accuracy on the S-removed test set
  and its S^c-randomized AUC (chance: the model now relies on S^c).

Training (REFERENCE.md Sec. 3.3, nb01): SGD, lr 0.1, no momentum, coupled L2 5e-5 on all
parameters (the paper's App. B says 5e-7: ``--weight-decay 5e-7``), batch 256, stop once train
accuracy >= 0.9999 at an evaluation (every ``eval_every`` updates; nb01 uses 5000), patience 1
(LMS-5) / 1000 updates (MS-(5,7)); the final model is evaluated. Seeds differ in initialisation
and minibatch order; the training and test sets are one draw per dataset shared by all seeds and
models (the reference trains every notebook model on one draw). Randomized metrics follow the
reference (one within-test-set row permutation of the block, ROC-AUC; ``--randomize-mode
resample`` and ``--auc-kind pr`` give the paper's Definitions 1-2). Each model draws its own
permutations from a key derived from its (sweep, seed index) (`eval_keys`), all models of a sweep
in one compiled call.

Failed models: every record requires convergence (``REQUIRE_CONVERGED``): the reference trains
every model here until its train-accuracy stop rule (nb01: >= 0.9999; nb03's MS-7 recipe: 0.995)
and Table 4 / Fig. 3 describe those models, so a model that diverged or hit its update budget is
excluded from every mean and std of its record and counted (``n_diverged``, ``n_unconverged``,
``seed_status``); a record whose models all failed says "all models failed". Figures show the
first used seed.

Records in summary.json: ``part`` (table4 | sc_sweep | s_removed), ``dataset`` (lms5 | ms57),
``model`` (fcn_100x1, fcn_100x2, cnn1d_32x7x1, cnn1d_32x7x2, gru_100x10x1, gru_100x10x2,
fcn_<w>x1), ``n_complex`` and ``d``; metrics per seed: train_acc, test_acc, test_auc,
s_rand_acc, s_rand_auc, sc_rand_acc, sc_rand_auc, plus the extras documented in
experiments/README.md (coord0_rand_acc, min_sc_coord_rand_acc, exclusive_s_invariant_sc,
logit_ks_s, logit_ks_sc, stop_step, converged).

    python -m experiments.extreme_sb --preset quick --out runs/extreme_sb
    python -m experiments.extreme_sb --preset paper --out runs/extreme_sb_paper   # GPU/TPU
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments.common import SEED_OK, SEED_UNCONVERGED_USED, make_parser, start_run
from sbjax.validate import check_choice, check_range, fail

NAME = "extreme_sb"
PARTS = ("table4", "sc_sweep", "s_removed")
# Every model of this experiment is trained to its train-accuracy stop rule in the reference
# (nb01 / nb03, REFERENCE.md Sec. 3.3) and the paper's Table 4 / Fig. 3 report those converged
# models: a model that hit its budget is a failure, not a data point.
REQUIRE_CONVERGED = True
log = logging.getLogger(f"sbjax.experiments.{NAME}")

# Architectures of Table 4 (App. B): record name -> sbjax.models config.
MODELS: dict[str, dict[str, Any]] = {
    "fcn_100x1": {"name": "fcn", "width": 100, "depth": 1},
    "fcn_100x2": {"name": "fcn", "width": 100, "depth": 2},
    "cnn1d_32x7x1": {"name": "cnn1d", "filters": 32, "kernel": 7, "depth": 1},
    "cnn1d_32x7x2": {"name": "cnn1d", "filters": 32, "kernel": 7, "depth": 2},
    "gru_100x10x1": {"name": "gru", "hidden": 100, "chunk": 10, "depth": 1},
    "gru_100x10x2": {"name": "gru", "hidden": 100, "chunk": 10, "depth": 2},
}

# record name -> (make_dataset name, arguments); d / n_complex are filled in per part.
DATASETS: dict[str, tuple[str, dict[str, Any]]] = {
    "lms5": ("lms", {"k": 5}),
    "ms57": ("ms", {"k_simple": 5, "k_complex": 7}),
}

# nb01 recipe (REFERENCE.md Sec. 3.3): lr 0.1, no momentum, wd 5e-5, batch 256, acc rule 1e-4.
_SGD = {"optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "weight_decay": 5e-5, "batch_size": 256,
        "stop_rule": "acc", "stop_eps": 1e-4}
# nb03's MS-7 recipe (the reference's own "S removed" control): lr 0.3, momentum 0.9, wd 5e-4,
# train accuracy >= 0.995, evaluation every 2000 updates, patience 1000. Used for the MS-(5,7)
# control, where plain nb01 SGD (lr 0.1, no momentum) overfits 20k points without escaping the
# 7-slab plateau.
_MS7 = {"optimizer": "sgd", "lr": 0.3, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 256,
        "stop_rule": "acc", "stop_eps": 5e-3, "eval_every": 2000, "patience": 1000}
# nb01: patience 1 on LMS-5, 1000 updates on MS-(5,7).
_PATIENCE = {"lms5": 1, "ms57": 1000}

PRESETS: dict[str, dict[str, Any]] = {
    # Tiny: the default test suite runs it end to end in well under a minute.
    "smoke": {
        "n_seeds": 2, "n_train": 2000, "n_test": 1000, "d": 50,
        "train": {**_SGD, "eval_every": 200},
        "max_steps": {"lms5": 400, "ms57": 400},
        "datasets": ["lms5"], "models": ["fcn_100x1"],
        "coord_n_test": 1000,
        # Same shapes as the table4 sweep, so the persistent compilation cache serves it.
        "sc_sweep": {"width": 100, "n_complex": [49], "datasets": ["lms5"], "max_steps": 400},
        "s_removed": {"lms5": {"model": "fcn_100x1", "train": {**_SGD, "eval_every": 200,
                                                              "max_steps": 400}}},
        "boundary_grid": 30,
        "hist_model": "fcn_100x1",
    },
    # A few CPU minutes: 20k training points (nb01: 100k), 3 seeds, evaluation every 1000 updates
    # (nb01: 5000), depth-1 architectures only; the CNN and GRU on LMS-5 only (on MS-(5,7) they
    # need >= 10k updates at 20-30x the FCN's cost); the |S^c| sweep with (100,1)-FCNs (paper:
    # 2000) on LMS-5 only.
    "quick": {
        "n_seeds": 3, "n_train": 20000, "n_test": 10000, "d": 50,
        "train": {**_SGD, "eval_every": 1000},
        "max_steps": {"lms5": 10000, "ms57": 30000},
        "datasets": ["lms5", "ms57"],
        "models": {"lms5": ["fcn_100x1", "cnn1d_32x7x1", "gru_100x10x1"], "ms57": ["fcn_100x1"]},
        "coord_n_test": 5000,
        "sc_sweep": {"width": 100, "n_complex": [49, 249], "datasets": ["lms5"],
                     "max_steps": 10000},
        "s_removed": {"lms5": {"model": "fcn_100x1", "train": {**_SGD, "eval_every": 1000,
                                                              "max_steps": 40000}},
                      # nb03's MS-7 size (40k): at 20k one seed in three memorizes the training
                      # set instead of learning the 7-slabs.
                      "ms57": {"model": "fcn_100x2", "n_train": 40000,
                               "train": {**_MS7, "max_steps": 30000}}},
        "boundary_grid": 50,
        "hist_model": "fcn_100x1",
    },
    # nb01 sizes (100k train; 10k test on LMS-5, 50k on MS-(5,7)), 5 seeds, all six Table 4
    # architectures plus nb01's (100,2)-FCN, (2000,1)-FCNs for Fig. 3(b); for a GPU/TPU.
    "paper": {
        "n_seeds": 5, "n_train": 100000, "n_test": {"lms5": 10000, "ms57": 50000}, "d": 50,
        "train": {**_SGD, "eval_every": 5000},
        "max_steps": {"lms5": 100000, "ms57": 200000},
        "datasets": ["lms5", "ms57"],
        "models": ["fcn_100x1", "fcn_100x2", "cnn1d_32x7x1", "cnn1d_32x7x2", "gru_100x10x1",
                   "gru_100x10x2"],
        "coord_n_test": None,
        "sc_sweep": {"width": 2000, "n_complex": [49, 249], "datasets": ["lms5", "ms57"],
                     "max_steps": 200000},
        "s_removed": {"lms5": {"model": "fcn_100x1", "train": {**_SGD, "eval_every": 5000,
                                                              "max_steps": 200000}},
                      "ms57": {"model": "fcn_100x2", "train": {**_MS7, "max_steps": 200000}}},
        "boundary_grid": 100,
        "hist_model": "fcn_100x1",
    },
}


# ------------------------------------------------------------------------------------------------
# Helpers shared with experiments.uaps.


def parse_parts(text: str, parts: Sequence[str] = PARTS) -> list[str]:
    """'all' or a comma-separated subset of `parts` -> list in canonical order."""
    if text.strip() == "all":
        return list(parts)
    wanted = [p.strip() for p in text.split(",") if p.strip()]
    if not wanted or any(p not in parts for p in wanted):
        fail("parts", text, "'all' or a comma-separated subset of " + ", ".join(parts))
    return [p for p in parts if p in wanted]


def select_models(cfg: Mapping[str, Any], models: str | None) -> dict[str, Any]:
    """The preset with its "models" restricted to a comma-separated subset (None: unchanged)."""
    cfg = dict(cfg)
    if models is None:
        return cfg
    wanted = [m.strip() for m in models.split(",") if m.strip()]
    per = cfg["models"]
    available = sorted({m for v in per.values() for m in v} if isinstance(per, Mapping)
                       else set(per))
    if not wanted or any(m not in available for m in wanted):
        fail("models", models, "a comma-separated subset of " + ", ".join(available))
    if isinstance(per, Mapping):
        cfg["models"] = {k: [m for m in v if m in wanted] for k, v in per.items()}
    else:
        cfg["models"] = [m for m in per if m in wanted]
    return cfg


def fcn_name(width: int, depth: int) -> str:
    return f"fcn_{width}x{depth}"


def per_dataset(value: Any, dataset: str) -> Any:
    """A preset value that is either global or a {dataset: value} map."""
    return value[dataset] if isinstance(value, Mapping) else value


def stable_tag(*parts: Any) -> int:
    """A stable 31-bit integer for PRNG streams (crc32 of the parts' text)."""
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def make_data(name: str, d: int, n_train: int, n_test: int, seed: int, n_complex: int | None = None):
    """Builds dataset `name` and draws one train / test split from a stream fixed by its name.

    Returns:
      (dataset, (x_train, y_train), (x_test, y_test)) with NumPy float32 [n, d] / int32 [n].
    """
    import jax

    from sbjax.data import make_dataset

    check_choice("dataset", name, tuple(DATASETS))
    kind, kw = DATASETS[name]
    kw = {**kw, "d": d}
    if n_complex is not None:
        kw["n_complex"] = n_complex
    ds = make_dataset(kind, **kw)
    key = jax.random.fold_in(jax.random.key(seed), stable_tag("data", name, d, n_complex))
    (xtr, ytr), (xte, yte) = ds.sample_split(key, n_train, n_test)
    return ds, (np.asarray(xtr), np.asarray(ytr)), (np.asarray(xte), np.asarray(yte))


def train_cfg(base: Mapping[str, Any], **over: Any):
    from sbjax.train import TrainConfig

    return TrainConfig(**{**dict(base), **over})


def eval_key(seed: int, *tags: Any):
    """The evaluation key of a cell (e.g. a sweep name): fold_in(key(seed), stable_tag(...))."""
    import jax

    return jax.random.fold_in(jax.random.key(seed), stable_tag("eval", *tags))


def eval_keys(seed: int, cell: str, seed_index: Any):
    """One evaluation key per model [M]: fold_in(eval_key(seed, cell), seed_index[m]).

    Model m's randomizations depend only on its own (cell, seed index), so cells never share a
    draw and seed s of a cell gets the same key in any sweep size.
    """
    import jax
    import jax.numpy as jnp

    base = eval_key(seed, cell)
    return jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.asarray(seed_index, jnp.int32))


def used_mask(rec: Mapping[str, Any]) -> np.ndarray:
    """bool [n_total]: the seeds of a summary record that enter its means (not failed)."""
    return np.asarray([s in (SEED_OK, SEED_UNCONVERGED_USED) for s in rec["seed_status"]], bool)


def class_sizes(y: Any) -> tuple[int, int]:
    """(n_pos, n_neg) of labels y [n] (for `Run.add_result(test_size=...)`)."""
    n_pos = int(np.sum(np.asarray(y) == 1))
    return n_pos, int(np.size(y)) - n_pos


def metric_test_sizes(metrics: Mapping[str, Any], y_test: Any,
                      coord_n_test: int | None) -> dict[str, tuple[int, int]]:
    """{metric: (n_pos, n_neg)} of the set each metric of `evaluate_stack` is measured on: the
    test set, except the coordinate-wise metrics (its first `coord_n_test` points)."""
    n_c = None if coord_n_test is None else int(coord_n_test)
    coord = class_sizes(np.asarray(y_test)[:n_c])
    full = class_sizes(y_test)
    return {k: coord if k in ("coord0_rand_acc", "min_sc_coord_rand_acc") else full
            for k in metrics}


# ------------------------------------------------------------------------------------------------
# Evaluation of one stack of models.


def evaluate_stack(model, params, ds, train, test, key, *, mode: str, auc_kind: str,
                   coord_n_test: int | None, per_coordinate: bool = True,
                   batch_size: int = 8192) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Standard / S- / S^c-randomized metrics, the Table 1 verdict and coordinate-wise accuracy.

    Args:
      model: the `sbjax.models.Model`; params: its variables stacked [M, ...].
      ds: the dataset (rotation, S, S^c). train, test: (x, y) NumPy arrays.
      key: PRNG keys [M] of the randomizations, one per model (`eval_keys`), or one key shared
        by every model. Model i's coordinate-wise randomizations use fold_in(key[i], 7).
      mode, auc_kind: see `sbjax.eval.randomize.randomization_report`.
      coord_n_test: evaluate the coordinate-wise randomized accuracy on the first this-many test
        points (None: all).

    Returns:
      (metrics: name -> float [M] per-seed arrays, arrays: scores [M, n] of the three sets,
      coordinate-wise accuracy [M, d] and the Table 1 checks).
    """
    import jax

    from sbjax.eval import metrics as M
    from sbjax.eval import randomize as R

    x_te, y_te = test
    # One randomization draw per model (its own key): the spread over seeds then includes the
    # permutation's sampling noise, as independent runs of the reference would. All models in
    # one compiled call (the keys are vmapped with the parameters).
    per_model = M.check_model_keys(key, M.num_models(params))
    rep = R.randomization_report(model.logits, params, x_te, y_te, key, ds, mode=mode,
                                 auc_kind=auc_kind, return_scores=True, batch_size=batch_size)
    rep = jax.tree.map(np.asarray, rep)
    verdict = R.reliance_summary(rep)
    tr = M.evaluate(model.logits, params, train[0], train[1], batch_size=batch_size)
    auc = "pr_auc" if auc_kind == "pr" else "roc_auc"
    out = {
        "train_acc": tr["accuracy"],
        "test_acc": rep["standard"]["accuracy"],
        "test_auc": rep["standard"][auc],
        "s_rand_acc": rep["s_randomized"]["accuracy"],
        "s_rand_auc": rep["s_randomized"][auc],
        "sc_rand_acc": rep["sc_randomized"]["accuracy"],
        "sc_rand_auc": rep["sc_randomized"][auc],
        "logit_ks_s": rep["logit_ks"]["s_randomized_vs_all"],
        "logit_ks_sc": rep["logit_ks"]["sc_randomized_vs_same_class"],
        "exclusive_s_invariant_sc": verdict["exclusive_s_invariant_sc"].astype(np.float64),
    }
    if auc_kind == "both":
        for name in ("standard", "s_randomized", "sc_randomized"):
            short = {"standard": "test", "s_randomized": "s_rand",
                     "sc_randomized": "sc_rand"}[name]
            out[f"{short}_pr_auc"] = rep[name]["pr_auc"]
    arrays: dict[str, Any] = {
        "scores": {k: np.asarray(v) for k, v in rep["scores"].items()},
        "y_test": np.asarray(y_te),
        "checks": {k: np.asarray(v) for k, v in verdict["checks"].items()},
    }
    if per_coordinate:
        n_c = x_te.shape[0] if coord_n_test is None else min(coord_n_test, x_te.shape[0])
        acc = np.asarray(R.per_coordinate_randomized(
            model.logits, params, x_te[:n_c], y_te[:n_c], M.fold_in_keys(key, 7, per_model), ds,
            mode=mode, batch_size=batch_size)["accuracy"])  # [M, d]
        s = list(ds.simple_coords)
        sc = list(ds.complex_coords)
        out["coord0_rand_acc"] = acc[:, s].mean(axis=1)
        out["min_sc_coord_rand_acc"] = acc[:, sc].min(axis=1)
        arrays["coord_rand_acc"] = acc
    return {k: np.asarray(v, np.float64) for k, v in out.items()}, arrays


def stop_metrics(r) -> dict[str, np.ndarray]:
    return {
        "stop_step": np.asarray(r.stop_step, np.float64),
        "converged": np.asarray([s == "converged" for s in r.stop_reason], np.float64),
    }


# ------------------------------------------------------------------------------------------------
# Parts.


class _Ctx:
    """What every part needs: the run, the preset, the CLI options."""

    def __init__(self, run, cfg: Mapping[str, Any], args):
        self.run = run
        self.cfg = cfg
        self.args = args
        self.base = dict(cfg["train"])
        if args.weight_decay is not None:
            self.base["weight_decay"] = float(args.weight_decay)
        self.extra: dict[str, Any] = {"figures": [], "sweep_wall_s": {}}

    def sweep(self, name: str, tcfg, model, train, val):
        from sbjax.train import train_sweep

        t0 = time.perf_counter()
        # One evaluation period per compiled chunk: the host loop checks "all seeds stopped"
        # between chunks, so converged sweeps (LMS-5: ~1000 updates) stop right away.
        r = train_sweep(tcfg, model, train, val, n_seeds=self.run.n_seeds, seed=self.run.seed,
                        periods_per_chunk=1, **self.run.sweep_kwargs(name))
        self.extra["sweep_wall_s"][name] = time.perf_counter() - t0
        not_conv = [i for i, s in enumerate(r.stop_reason) if s != "converged"]
        if not_conv:
            log.warning("%s: seeds %s did not converge (%s)", name, not_conv,
                        [r.stop_reason[i] for i in not_conv])
        return r

    def n_test(self, ds_name: str) -> int:
        return int(per_dataset(self.cfg["n_test"], ds_name))

    def figure(self, filename: str) -> str:
        self.extra["figures"].append(filename)
        return str(self.run.path(filename))


def part_table4(ctx: _Ctx) -> dict[str, Any]:
    """Table 4 and Fig. 3(a, c): every (dataset, architecture) pair."""
    from sbjax.models import make_model

    cfg, run, args = ctx.cfg, ctx.run, ctx.args
    per_coord: dict[str, Any] = {}  # every model (summary.json)
    coord_used: dict[str, Any] = {}  # models that did not fail (the figure's mean +- std)
    hist: dict[str, Any] = {}
    for ds_name in cfg["datasets"]:
        ds, train, test = make_data(ds_name, cfg["d"], cfg["n_train"], ctx.n_test(ds_name),
                                    run.seed)
        tcfg = train_cfg(ctx.base, max_steps=int(per_dataset(cfg["max_steps"], ds_name)),
                         patience=_PATIENCE[ds_name])
        for m_name in per_dataset(cfg["models"], ds_name):
            model = make_model(MODELS[m_name])
            sweep = f"table4_{ds_name}_{m_name}"
            r = ctx.sweep(sweep, tcfg, model, train, test)
            run.save_params(sweep, r.params)
            metrics, arrays = evaluate_stack(
                model, r.params, ds, train, test, eval_keys(run.seed, sweep, r.seed_index),
                mode=args.randomize_mode, auc_kind=args.auc_kind,
                coord_n_test=cfg["coord_n_test"],
            )
            metrics.update(stop_metrics(r))
            rec = run.add_result(dataset=ds_name, model=m_name, metrics=metrics, part="table4",
                                 status=r.stop_reason, require_converged=REQUIRE_CONVERGED,
                                 test_size=metric_test_sizes(metrics, test[1],
                                                             cfg["coord_n_test"]),
                                 n_complex=len(ds.complex_coords), d=ds.d)
            used = used_mask(rec)
            per_coord[f"{ds_name}/{m_name}"] = arrays["coord_rand_acc"].tolist()
            if used.any():
                coord_used[f"{ds_name}/{m_name}"] = arrays["coord_rand_acc"][used]
            if m_name == cfg["hist_model"] and used.any():
                # Figures show one model: the first seed that did not fail.
                i = int(np.flatnonzero(used)[0])
                hist[ds_name] = {**arrays, "model_index": i, "seed": int(r.seed_index[i])}
                _boundary_figure(ctx, ds_name, ds, model, r.params, train, test,
                                 arrays["coord_rand_acc"], i, np.asarray(r.seed_index))
            elif m_name == cfg["hist_model"]:
                log.warning("%s: every model failed; no Fig. 3(a, c) panels", sweep)
    if hist:
        _logit_figure(ctx, hist)
    if coord_used:
        _coord_figure(ctx, coord_used)
    return {"coord_rand_acc": per_coord}


def part_sc_sweep(ctx: _Ctx) -> None:
    """Fig. 3(b): randomized AUCs of (w,1)-FCNs against the number of complex features."""
    from sbjax.models import make_model

    cfg, run, args = ctx.cfg, ctx.run, ctx.args
    sc = cfg["sc_sweep"]
    m_name = fcn_name(sc["width"], 1)
    model = make_model({"name": "fcn", "width": sc["width"], "depth": 1})
    rows = []
    for ds_name in sc["datasets"]:
        tcfg = train_cfg(ctx.base, max_steps=int(sc["max_steps"]), patience=_PATIENCE[ds_name])
        for n_c in sc["n_complex"]:
            d = n_c + 1
            ds, train, test = make_data(ds_name, d, cfg["n_train"], ctx.n_test(ds_name),
                                        run.seed)
            sweep = f"sc_sweep_{ds_name}_{m_name}_sc{n_c}"
            r = ctx.sweep(sweep, tcfg, model, train, test)
            run.save_params(sweep, r.params)
            metrics, _ = evaluate_stack(model, r.params, ds, train, test,
                                        eval_keys(run.seed, sweep, r.seed_index),
                                        mode=args.randomize_mode, auc_kind=args.auc_kind,
                                        coord_n_test=None, per_coordinate=False)
            metrics.update(stop_metrics(r))
            rec = run.add_result(dataset=ds_name, model=m_name, metrics=metrics, part="sc_sweep",
                                 status=r.stop_reason, require_converged=REQUIRE_CONVERGED,
                                 test_size=class_sizes(test[1]), n_complex=n_c, d=d)
            rows.append(rec)
    _sc_sweep_figure(ctx, rows)


def part_s_removed(ctx: _Ctx) -> None:
    """Control: S randomized in the training and test sets -> the model learns S^c.

    LMS-5 uses the nb01 recipe with a (100,1)-FCN; MS-(5,7) uses nb03's MS-7 recipe with a
    (100,2)-FCN (momentum 0.9 gets through the 7-slab plateau; see `_MS7`).
    """
    import jax

    from sbjax.eval import randomize as R
    from sbjax.models import make_model

    cfg, run, args = ctx.cfg, ctx.run, ctx.args
    for ds_name, spec in cfg["s_removed"].items():
        ds, train, test = make_data(ds_name, cfg["d"], int(spec.get("n_train", cfg["n_train"])),
                                    ctx.n_test(ds_name), run.seed)
        k = jax.random.fold_in(jax.random.key(run.seed), stable_tag("s_removed", ds_name))
        # One row permutation of the canonical S column of each split: S keeps its marginal but
        # carries no label information (the reference's S-randomization applied to the data).
        x_tr = np.asarray(R.randomize_block(jax.random.fold_in(k, 0), train[0],
                                            ds.simple_coords, ds.rotation))
        x_te = np.asarray(R.randomize_block(jax.random.fold_in(k, 1), test[0],
                                            ds.simple_coords, ds.rotation))
        train_r, test_r = (x_tr, train[1]), (x_te, test[1])
        # The control keeps its preset recipe (--weight-decay applies to table4 / sc_sweep).
        base = dict(spec["train"])
        tcfg = train_cfg({"patience": _PATIENCE[ds_name], **base})
        m_name = spec["model"]
        model = make_model(MODELS[m_name])
        sweep = f"s_removed_{ds_name}_{m_name}"
        r = ctx.sweep(sweep, tcfg, model, train_r, test_r)
        run.save_params(sweep, r.params)
        metrics, _ = evaluate_stack(model, r.params, ds, train_r, test_r,
                                    eval_keys(run.seed, sweep, r.seed_index),
                                    mode=args.randomize_mode, auc_kind=args.auc_kind,
                                    coord_n_test=cfg["coord_n_test"])
        metrics.update(stop_metrics(r))
        # The Table 1 verdict (exclusive reliance on S) is meaningless once S is noise.
        metrics.pop("exclusive_s_invariant_sc", None)
        # The control's claim is about models trained to 100 % train accuracy ("rely on S^c to
        # attain 100% accuracy"): an unconverged model (e.g. stuck on the slab plateau) fails.
        run.add_result(dataset=ds_name, model=m_name, metrics=metrics, part="s_removed",
                       status=r.stop_reason, require_converged=REQUIRE_CONVERGED,
                       test_size=metric_test_sizes(metrics, test_r[1], cfg["coord_n_test"]),
                       n_complex=len(ds.complex_coords), d=ds.d, n_train=len(train_r[1]),
                       recipe={k: base[k] for k in ("lr", "momentum", "weight_decay")})


# ------------------------------------------------------------------------------------------------
# Figures (sbjax.plots).


def _logit_figure(ctx: _Ctx, hist: Mapping[str, Mapping[str, Any]]) -> None:
    from sbjax import plots

    panels = {}
    for ds_name, arrays in hist.items():
        for title, panel in plots.logit_panels(arrays["scores"], arrays["y_test"],
                                               model_index=arrays["model_index"]).items():
            panels[f"{ds_name} (seed {arrays['seed']}): {title}"] = panel
    plots.logit_histograms(panels, ctx.figure("fig3a_logits.png"),
                           title=f"Fig. 3(a): logits (logit1 - logit0), {ctx.cfg['hist_model']}, "
                           "first seed that did not fail")


def _coord_figure(ctx: _Ctx, per_coord: Mapping[str, Any]) -> None:
    from sbjax import plots

    plots.coordinate_accuracy(
        {k: np.asarray(v) for k, v in per_coord.items()}, ctx.figure("coord_rand_acc.png"),
        title="Coordinate-wise randomized accuracy (coordinate 0 = S; seeds that did not fail)",
    )


def _boundary_figure(ctx: _Ctx, ds_name, ds, model, params, train, test, coord_acc,
                     model_index: int, seed_index: np.ndarray) -> None:
    """Fig. 3(c) of model `model_index` of the stack (the boundaries of every model are computed
    in one call, each with its own key; the figure shows one)."""
    from sbjax import plots
    from sbjax.eval import boundary as Bd

    n = 5000  # data rows for ranges, fillers and the overlay (train and test halves)
    data = (np.concatenate([train[0][:n], test[0][:n]]), np.concatenate([train[1][:n],
                                                                         test[1][:n]]))
    c2 = "most_influential" if ctx.args.boundary_c2 == "auto" else int(ctx.args.boundary_c2)
    grid = Bd.boundary_projection(
        model.logits, params, ds, eval_keys(ctx.run.seed, f"boundary/{ds_name}", seed_index),
        data=data, c2=c2, fill=ctx.args.boundary_fill, coord_acc=coord_acc,
        n_grid=int(ctx.cfg["boundary_grid"]),
    )
    plots.decision_boundary(grid, ctx.figure(f"fig3c_boundary_{ds_name}.png"),
                            model_index=model_index,
                            title=f"Fig. 3(c): {ds_name}, {ctx.cfg['hist_model']} "
                            f"(seed {int(seed_index[model_index])})")


def _sc_sweep_figure(ctx: _Ctx, rows: Sequence[Mapping[str, Any]]) -> None:
    from sbjax import plots

    plots.randomized_auc_vs_sc(plot_rows(rows), ctx.figure("fig3b_sc_sweep.png"),
                               title="Fig. 3(b): randomized AUC vs $|S^c|$ (mean ± std over "
                               "seeds that did not fail)")


def plot_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Records with each metric as {"mean", "std"} floats for plotting: a record whose models
    all failed (mean None) plots as NaN (no point), one seed (std None) without an error bar."""
    out = []
    for r in rows:
        met = {k: {"mean": np.nan if v["mean"] is None else float(v["mean"]),
                   "std": 0.0 if v["std"] is None else float(v["std"])}
               for k, v in r["metrics"].items()}
        out.append({**r, "metrics": met})
    return out


# ------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict:
    parser = make_parser(NAME, __doc__, PRESETS)
    parser.add_argument("--parts", default="all",
                        help="comma-separated subset of " + ", ".join(PARTS) + " (or all)")
    parser.add_argument("--models", default=None,
                        help="comma-separated subset of the preset's table4 architectures "
                        "(default: all of them), e.g. fcn_100x1 on a busy CPU")
    parser.add_argument("--weight-decay", type=float, default=None,
                        help="coupled L2 (default: the reference's 5e-5; the paper says 5e-7)")
    parser.add_argument("--randomize-mode", choices=("permute", "resample"), default="permute",
                        help="permute: the reference's within-test-set permutation; resample: "
                        "the paper's independent draw (bootstrap from the test set)")
    parser.add_argument("--auc-kind", choices=("roc", "pr", "both"), default="roc",
                        help="roc: the reference's AUC; pr: the paper's Definition 2")
    parser.add_argument("--boundary-fill", choices=("data", "uniform"), default="data",
                        help="Fig. 3(c) filler coordinates: data rows, or the reference's "
                        "U[0, 1) probes")
    parser.add_argument("--boundary-c2", default="auto",
                        help="second axis of Fig. 3(c): 'auto' = the S^c coordinate with the "
                        "lowest coordinate-wise randomized accuracy, or a canonical index "
                        "(the reference hard-codes 1)")
    args = parser.parse_args(argv)
    parts = parse_parts(args.parts)

    if args.weight_decay is not None:
        check_range("weight_decay", args.weight_decay, 0.0, None)
    cfg = select_models(PRESETS[args.preset], args.models)
    # Checked before any training: Fig. 3(c)'s second axis is an S^c coordinate (S is 0).
    d = int(cfg["d"])
    if args.boundary_c2 != "auto" and not (args.boundary_c2.isdigit()
                                           and 1 <= int(args.boundary_c2) < d):
        fail("boundary_c2", args.boundary_c2,
             f"'auto' or a canonical S^c coordinate index in [1, {d - 1}]")
    run = start_run(NAME, args, cfg, extra_config={
        "parts": parts, "weight_decay": args.weight_decay, "randomize_mode": args.randomize_mode,
        "auc_kind": args.auc_kind, "boundary_c2": args.boundary_c2,
        "boundary_fill": args.boundary_fill,
    })
    ctx = _Ctx(run, cfg, args)
    extra: dict[str, Any] = {"parts": parts}
    if "table4" in parts:
        extra.update(part_table4(ctx))
    if "sc_sweep" in parts:
        part_sc_sweep(ctx)
    if "s_removed" in parts:
        part_s_removed(ctx)
    extra.update(ctx.extra)
    return run.finish(extra=extra)


if __name__ == "__main__":
    main()
