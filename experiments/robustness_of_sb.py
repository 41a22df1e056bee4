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

Records: ``part`` (table6 ... table9, fig5), the cell's settings, ``expect`` (what the cell should
show) and, where App. C prints a value, ``paper`` (S-randomized AUC of the cell; S^c-randomized
and standard AUC 1.00) with ``paper_source``.

Presets are data (the ``Preset`` dataclass; config.json's ``preset_config`` lists every key); change
any value with ``--set``, e.g. ``--set train.lr=0.05``, ``--set table6.optimizers=['adam']``,
``--set table9.scales=[0.5,2.0]``, ``--set fig5.alphas=[0.0,1.0]`` (recorded in config.json).
``python -m sbjax.plots RUN_DIR`` redraws the figures from the data saved with them.

    python -m experiments.robustness_of_sb --preset quick --out runs/robustness_of_sb
    python -m experiments.robustness_of_sb --preset paper --parts init,dimension --out DIR
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments.common import (
    SEED_OK,
    SEED_UNCONVERGED,
    SEED_UNCONVERGED_USED,
    Context,
    Experiment,
    run_sweep,
    train_field,
)
from experiments.evaluation import (
    coords_basis,
    evaluate_stack,
    metric_test_sizes,
    split_by_grid,
    sweep_eval_keys,
)
from experiments.synthetic import (
    NB01,
    NB03_MS7,
    OPTIMIZERS,
    Recipe,
    check_names,
    check_positive_int,
    check_recipe,
    fcn_config,
    fcn_name,
    make_dataset,
    train_config,
    tree_index,
)
from sbjax.validate import check_range, fail

NAME = "robustness_of_sb"
PARTS = ("activations", "regularization", "dimension", "init", "complex_first")
# App. C follows the paper's budgeted procedure (no reference notebook): a model that used its
# whole budget is a trained model of the table, used and counted; diverged models always fail.
REQUIRE_CONVERGED = False
log = logging.getLogger(f"sbjax.experiments.{NAME}")

ACTIVATIONS = ("relu", "leaky_relu", "prelu", "tanh")
INITS = ("kaiming", "xavier")
T6_DATASETS = ("lms7", "ms57")

# Standard SGD recipe: the reference's nb01 values (`experiments.synthetic.NB01`).
SGD = NB01
# M_slab of Fig. 5: nb03's MS-7 recipe (lr 0.3, momentum 0.9, wd 5e-4, train accuracy 0.995) with
# this experiment's own evaluation period and the default patience.
SLAB = NB03_MS7.replace(eval_every=None, patience=None)


@dataclasses.dataclass(frozen=True)
class Table6:
    """Activation x optimizer, (100,2)-FCN; Adam / RMSProp use `adaptive_lr`; MS-(5,7) sweeps
    get `ms_max_steps` updates."""

    datasets: tuple[str, ...]
    activations: tuple[str, ...]
    optimizers: tuple[str, ...]
    adaptive_lr: float = 1e-3
    ms_max_steps: int = 20000


@dataclasses.dataclass(frozen=True)
class Table7:
    """Dropout x L2 (traced grid) for (100, depth)-FCNs."""

    depths: tuple[int, ...]
    dropouts: tuple[float, ...]
    l2: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Table8:
    """(d, |S^c|) pairs of LMS-7 with a (100,1)-FCN."""

    dims: tuple[tuple[int, int], ...]


@dataclasses.dataclass(frozen=True)
class Table9:
    """Init scheme (static) x init scale (traced), (100,1)-FCN."""

    inits: tuple[str, ...]
    scales: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Fig5:
    """Complex-first init: (width, depth)-FCN, M_slab trained on `n_train` MS-7 points with
    `slab_train` (max_steps and eval_every required), one sweep per alpha."""

    width: int
    depth: int
    n_train: int
    slab_train: Recipe
    alphas: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Preset:
    """robustness_of_sb preset: sizes, the shared recipe (`train`, max_steps and eval_every
    required) and one entry per table / figure."""

    n_seeds: int
    n_train: int
    n_test: int
    d: int
    train: Recipe
    table6: Table6
    table7: Table7
    table8: Table8
    table9: Table9
    fig5: Fig5


PRESETS: dict[str, Preset] = {
    # Tiny: seconds per part; the default test suite runs it end to end.
    "smoke": Preset(
        n_seeds=2,
        n_train=2000,
        n_test=1000,
        d=50,
        train=SGD.replace(max_steps=300, eval_every=150),
        table6=Table6(
            datasets=("lms7",),
            activations=("tanh",),
            optimizers=("adam",),
            adaptive_lr=1e-3,
            ms_max_steps=300,
        ),
        table7=Table7(depths=(1,), dropouts=(0.0, 0.1), l2=(1e-4,)),
        table8=Table8(dims=((5, 2),)),
        table9=Table9(inits=("xavier",), scales=(0.5, 2.0)),
        fig5=Fig5(
            width=100,
            depth=1,
            n_train=2000,
            slab_train=SLAB.replace(max_steps=300, eval_every=150),
            alphas=(0.5,),
        ),
    ),
    # CPU minutes: 3 seeds, 10k training points (paper: 50k), Table 6 on LMS-7 only (MS-(5,7)
    # needs ~15k updates per cell), short budgets (LMS-7 converges in a few hundred updates).
    "quick": Preset(
        n_seeds=3,
        n_train=10000,
        n_test=5000,
        d=50,
        train=SGD.replace(max_steps=3000, eval_every=250),
        table6=Table6(
            datasets=("lms7",),
            activations=ACTIVATIONS,
            optimizers=OPTIMIZERS,
            adaptive_lr=1e-3,
            ms_max_steps=20000,
        ),
        table7=Table7(depths=(1, 2), dropouts=(0.0, 0.05, 0.1), l2=(1e-2, 1e-4)),
        table8=Table8(dims=((2, 1), (5, 1), (5, 3), (10, 1), (10, 3), (10, 6))),
        table9=Table9(inits=INITS, scales=(0.1, 0.5, 2.0, 10.0)),
        fig5=Fig5(
            width=100,
            depth=2,
            n_train=40000,
            slab_train=SLAB.replace(max_steps=20000, eval_every=1000),
            alphas=(0.0, 0.5, 0.75, 1.0),
        ),
    ),
    # Paper sizes (App. B: 50k training points), 5 seeds, both Table 6 datasets; for a GPU/TPU.
    "paper": Preset(
        n_seeds=5,
        n_train=50000,
        n_test=10000,
        d=50,
        train=SGD.replace(max_steps=20000, eval_every=500),
        table6=Table6(
            datasets=T6_DATASETS,
            activations=ACTIVATIONS,
            optimizers=OPTIMIZERS,
            adaptive_lr=1e-3,
            ms_max_steps=60000,
        ),
        table7=Table7(depths=(1, 2), dropouts=(0.0, 0.05, 0.1), l2=(1e-2, 1e-4)),
        table8=Table8(dims=((2, 1), (5, 1), (5, 3), (10, 1), (10, 3), (10, 6))),
        table9=Table9(inits=INITS, scales=(0.1, 0.5, 2.0, 10.0)),
        fig5=Fig5(
            width=100,
            depth=2,
            n_train=40000,
            slab_train=SLAB.replace(max_steps=60000, eval_every=1000),
            alphas=(0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0),
        ),
    ),
}

PRESET_HELP = {
    "smoke": "seconds per part: one or two cells per table, 2k points, 2 seeds, 300 updates "
    "(plumbing only)",
    "quick": "CPU minutes: 10k points, 3 seeds, every cell of Tables 6 (LMS-7 only) - 9, Fig. 5 "
    "with 4 alphas",
    "paper": "App. B sizes (50k points), 5 seeds, Table 6 on LMS-7 and MS-(5,7), Fig. 5 with 7 "
    "alphas (GPU/TPU)",
}

# Published S-randomized AUCs (REFERENCE.md Sec. 9.2; App. C). S^c-randomized and standard AUC
# are 1.00 in every cell of Tables 6-9.
TABLE6_PAPER = {  # (dataset, activation) -> SGD / Adam / RMSProp
    ("lms7", "relu"): (0.499, 0.497, 0.502),
    ("lms7", "leaky_relu"): (0.501, 0.497, 0.501),
    ("lms7", "prelu"): (0.500, 0.500, 0.501),
    ("lms7", "tanh"): (0.495, 0.502, 0.495),
    ("ms57", "relu"): (0.499, 0.499, 0.496),
    ("ms57", "leaky_relu"): (0.499, 0.498, 0.498),
    ("ms57", "prelu"): (0.501, 0.496, 0.499),
    ("ms57", "tanh"): (0.498, 0.499, 0.498),
}
TABLE8_PAPER = {
    (2, 1): 0.51,
    (5, 1): 0.50,
    (5, 3): 0.50,
    (10, 1): 0.50,
    (10, 3): 0.50,
    (10, 6): 0.50,
}
TABLE9_PAPER = {
    ("kaiming", 0.1): 0.50,
    ("kaiming", 0.5): 0.49,
    ("kaiming", 2.0): 0.50,
    ("kaiming", 10.0): 0.50,
    ("xavier", 0.1): 0.50,
    ("xavier", 0.5): 0.50,
    ("xavier", 2.0): 0.49,
    ("xavier", 10.0): 0.51,
}
EXPECT_SB = "extreme SB: S-rand AUC ~0.5, S^c-rand AUC ~ test AUC ~1"


def _paper(s_rand_auc: float | None, source: str, sc: bool = False) -> dict[str, Any]:
    """`add_result` arguments citing a cell's published S-randomized AUC (none without one)."""
    if s_rand_auc is None:
        return {}
    paper = {"s_rand_auc": s_rand_auc, "sc_rand_auc": 1.00}
    if not sc:
        paper["test_auc"] = 1.00
    return {"paper": paper, "paper_source": source}


def check_preset(p: Preset) -> None:
    """Validates a preset after --set overrides, before any work (errors name the key)."""
    check_positive_int("n_seeds", p.n_seeds)
    check_positive_int("n_train", p.n_train)
    check_positive_int("n_test", p.n_test, 2)
    check_positive_int("d", p.d, 2)
    check_recipe("train", p.train, need=("max_steps", "eval_every"))
    t6 = p.table6
    check_names("table6.datasets", t6.datasets, T6_DATASETS)
    check_names("table6.activations", t6.activations, ACTIVATIONS)
    check_names("table6.optimizers", t6.optimizers, OPTIMIZERS)
    train_field("lr")("table6.adaptive_lr", t6.adaptive_lr)
    train_field("max_steps")("table6.ms_max_steps", t6.ms_max_steps)
    for v in p.table7.depths:
        check_positive_int("table7.depths", v)
    for v in p.table7.dropouts:
        train_field("dropout_rate")("table7.dropouts", v)
    for v in p.table7.l2:
        train_field("weight_decay")("table7.l2", v)
    for pair in p.table8.dims:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            fail("table8.dims", p.table8.dims, "a list of (d, n_complex) pairs")
        d, nc = pair
        check_positive_int("table8.dims (d)", d, 2)
        check_positive_int("table8.dims (n_complex)", nc)
        if nc > d - 1:
            fail("table8.dims", pair, "n_complex <= d - 1 (coordinate 0 is the linear one)")
    check_names("table9.inits", p.table9.inits, INITS)
    for v in p.table9.scales:
        train_field("init_scale")("table9.scales", v)
    f5 = p.fig5
    check_positive_int("fig5.width", f5.width)
    check_positive_int("fig5.depth", f5.depth)
    check_positive_int("fig5.n_train", f5.n_train)
    check_recipe("fig5.slab_train", f5.slab_train, need=("max_steps", "eval_every"))
    for a in f5.alphas:
        check_range("fig5.alphas", a, 0.0, 1.0)


# ------------------------------------------------------------------------------------------------
# Helpers.


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


def _key(run, *tags: int):
    """fold_in(key(run.seed), tags[0], tags[1], ...): the experiment's named streams."""
    import jax

    k = jax.random.key(run.seed)
    for t in tags:
        k = jax.random.fold_in(k, t)
    return k


def _dataset(
    p: Preset,
    name: str,
    d: int | None = None,
    n_complex: int | None = None,
    noise_fill: str = "uniform_0B",
):
    kw = {} if n_complex is None else {"noise_fill": noise_fill}
    return make_dataset(name, int(d or p.d), n_complex, **kw)


def _data(run, p: Preset, ds, tag: int, n_train: int | None = None):
    """One train / test draw of `ds` from the stream fold_in(key(seed), 1000 + tag)."""
    (xtr, ytr), (xte, yte) = ds.sample_split(
        _key(run, 1000 + tag), int(n_train or p.n_train), int(p.n_test)
    )
    return (np.asarray(xtr), np.asarray(ytr)), (np.asarray(xte), np.asarray(yte))


def record(
    run,
    part: str,
    dataset: str,
    model: str,
    metrics: Mapping[str, np.ndarray],
    r,
    test,
    mask=None,
    other_sets: Mapping[str, Any] | None = None,
    **settings,
) -> dict:
    """One summary record of the models `mask` [M] (default all) of sweep `r`.

    `metrics` are already the selected rows; the models' stop reasons (selected the same way)
    decide which seeds are used (diverged models are excluded and counted; unconverged ones only
    counted, since `REQUIRE_CONVERGED` is False). `test` = (x, y) of the evaluation set (its class
    sizes give each metric's sampling SE); `other_sets`: {metric: labels y} of metrics measured
    on another set (e.g. Fig. 5's MS-7 accuracy at init).
    """
    sel = np.ones(r.n_models, bool) if mask is None else np.asarray(mask, bool)
    reasons = [s for s, m in zip(r.stop_reason, sel, strict=True) if m]
    extra = {"stop_updates": np.asarray(r.stop_step, np.float64)[sel]}
    met = {**metrics, **extra}
    return run.add_result(
        dataset=dataset,
        model=model,
        part=part,
        metrics=met,
        status=reasons,
        require_converged=REQUIRE_CONVERGED,
        test_size=metric_test_sizes(met, test[1], other_sets=other_sets),
        **settings,
    )


def cell_metrics(run, cell: str, r, model, params, ds, train, test, s=None, sc=None):
    """Metrics [M] of a sweep's models, each with its own (cell, seed) evaluation key.

    S = `s` (default the dataset's), S^c = `sc` (default every other coordinate, noise
    coordinates included: the reference's S^c = {1, ..., d - 1})."""
    basis = coords_basis(
        ds.rotation, ds.simple_coords if s is None else s, sc, int(np.shape(test[0])[1])
    )
    met, _ = evaluate_stack(
        model.logits, params, basis, test, sweep_eval_keys(run.seed, cell, r), train=train
    )
    return met


# ------------------------------------------------------------------------------------------------
# Parts: each takes the `Context` (run, preset, sweep timings, --noise-fill) and adds its records.


def part_activations(ctx: Context) -> list[dict]:
    """Table 6: activation x optimizer, (100,2)-FCN."""
    run, p, timings = ctx.run, ctx.preset, ctx.state["sweeps"]
    from sbjax.models import make_model

    t6, recs = p.table6, []
    for di, dname in enumerate(t6.datasets):
        ds = _dataset(p, dname)
        train, test = _data(run, p, ds, tag=60 + di)
        steps = p.train.max_steps if dname.startswith("lms") else t6.ms_max_steps
        for act in t6.activations:
            model = make_model(fcn_config(100, 2, activation=act))
            for opt in t6.optimizers:
                over = {"optimizer": opt, "max_steps": steps}
                if opt != "sgd":
                    over["lr"] = t6.adaptive_lr
                tcfg = train_config(p.train, **over)
                cell = f"t6_{dname}_{act}_{opt}"
                r = run_sweep(run, cell, tcfg, model, train, test, timings=timings)
                met = cell_metrics(run, cell, r, model, r.params, ds, train, test)
                ref = TABLE6_PAPER.get((dname, act))
                paper = None if ref is None or opt not in OPTIMIZERS else ref[OPTIMIZERS.index(opt)]
                recs.append(
                    record(
                        run,
                        "table6",
                        dname,
                        "fcn_100x2",
                        met,
                        r,
                        test,
                        expect=f"{act}, {opt}: {EXPECT_SB}",
                        **_paper(paper, "Table 6 (App. C.4)", sc=True),
                        activation=act,
                        optimizer=opt,
                        lr=float(tcfg.lr),
                    )
                )
    return recs


def part_regularization(ctx: Context) -> list[dict]:
    """Table 7: dropout x L2 (both traced: one sweep per depth)."""
    run, p, timings = ctx.run, ctx.preset, ctx.state["sweeps"]
    from sbjax.models import make_model

    recs = []
    ds = _dataset(p, "lms7")
    train, test = _data(run, p, ds, tag=70)
    grid = {
        "dropout_rate": [float(v) for v in p.table7.dropouts],
        "weight_decay": [float(v) for v in p.table7.l2],
    }
    for depth in p.table7.depths:
        model = make_model(fcn_config(100, int(depth), dropout=True))
        cell = f"t7_lms7_{fcn_name(100, depth)}"
        r = run_sweep(
            run, cell, train_config(p.train), model, train, test, grid=grid, timings=timings
        )
        met = cell_metrics(run, cell, r, model, r.params, ds, train, test)
        for (m, mask), pt in zip(split_by_grid(r, met), r.grid_points, strict=True):
            recs.append(
                record(
                    run,
                    "table7",
                    "lms7",
                    fcn_name(100, depth),
                    m,
                    r,
                    test,
                    mask,
                    expect=f"dropout {float(pt['dropout_rate']):g}, L2 "
                    f"{float(pt['weight_decay']):g}: {EXPECT_SB}",
                    **_paper(0.50, "Table 7 (App. C.5)"),
                    dropout=pt["dropout_rate"],
                    weight_decay=pt["weight_decay"],
                )
            )
    return recs


def part_dimension(ctx: Context) -> list[dict]:
    """Table 8: input dimension d x number of 7-slabs |S^c| (rest: noise fill)."""
    run, p, timings, noise_fill = ctx.run, ctx.preset, ctx.state["sweeps"], ctx.args.noise_fill
    from sbjax.models import make_model

    recs = []
    model = make_model(fcn_config(100, 1))
    for i, (d, nc) in enumerate(p.table8.dims):
        ds = _dataset(p, "lms7", d=d, n_complex=nc, noise_fill=noise_fill)
        train, test = _data(run, p, ds, tag=80 + i)
        cell = f"t8_lms7_d{d}_c{nc}"
        r = run_sweep(run, cell, train_config(p.train), model, train, test, timings=timings)
        met = cell_metrics(run, cell, r, model, r.params, ds, train, test)
        recs.append(
            record(
                run,
                "table8",
                "lms7",
                "fcn_100x1",
                met,
                r,
                test,
                expect=f"d {d}, |S^c| {nc}: {EXPECT_SB}",
                **_paper(TABLE8_PAPER.get((int(d), int(nc))), "Table 8 (App. C.6)"),
                d=int(d),
                n_complex=int(nc),
                noise_fill=noise_fill,
            )
        )
    return recs


def part_init(ctx: Context) -> list[dict]:
    """Table 9: init scheme (static) x init scale (traced grid)."""
    run, p, timings = ctx.run, ctx.preset, ctx.state["sweeps"]
    from sbjax.models import make_model

    recs = []
    ds = _dataset(p, "lms7")
    train, test = _data(run, p, ds, tag=90)
    for init in p.table9.inits:
        model = make_model(fcn_config(100, 1, init=init))
        grid = {"init_scale": [float(v) for v in p.table9.scales]}
        cell = f"t9_lms7_{init}"
        r = run_sweep(
            run, cell, train_config(p.train), model, train, test, grid=grid, timings=timings
        )
        met = cell_metrics(run, cell, r, model, r.params, ds, train, test)
        for (m, mask), pt in zip(split_by_grid(r, met), r.grid_points, strict=True):
            scale = float(pt["init_scale"])
            recs.append(
                record(
                    run,
                    "table9",
                    "lms7",
                    "fcn_100x1",
                    m,
                    r,
                    test,
                    mask,
                    expect=f"{init} init x{scale:g}: {EXPECT_SB}",
                    **_paper(TABLE9_PAPER.get((init, round(scale, 6))), "Table 9 (App. C.6)"),
                    init=init,
                    init_scale=pt["init_scale"],
                )
            )
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


def _alpha_expect(alpha: float) -> str:
    if alpha < 0.5:
        return "alpha < 0.5: relies exclusively on the linear coordinate (S-rand AUC ~0.5)"
    if alpha == 0.5:
        return "alpha = 0.5: the paper's boundary: S-rand AUC ~0.5 or reliance on slabs starting"
    return (
        "alpha > 0.5: reliance on the 7-slabs considerably reduced, still some on S "
        "(S-rand AUC between 0.5 and 1)"
    )


def part_complex_first(ctx: Context) -> dict[str, Any]:
    """Fig. 5: complex-first initialisation by alpha-mixing a model trained on MS-7."""
    run, p, timings = ctx.run, ctx.preset, ctx.state["sweeps"]
    import jax

    from sbjax.eval import metrics as M
    from sbjax.eval import randomize as R
    from sbjax.models import make_model
    from sbjax.train import model_keys
    from sbjax.train.engine import STREAM_INIT

    f5 = p.fig5
    width, depth = int(f5.width), int(f5.depth)
    mname = fcn_name(width, depth)
    model = make_model(fcn_config(width, depth))
    d = int(p.d)
    ds_ms = _dataset(p, "ms7")
    ds_lms = _dataset(p, "lms7")
    if not np.allclose(ds_ms.rotation, ds_lms.rotation):
        raise RuntimeError("MS-7 and LMS-7 must share the rotation (same d and rotation_seed)")
    n_tr, n_te = int(f5.n_train), int(p.n_test)
    ms_train, ms_test = _data(run, p, ds_ms, tag=50, n_train=n_tr)

    # 1. M_slab: trained on MS-7 (all coordinates 7-slabs).
    slab_cell = f"f5_ms7_{mname}"
    r_slab = run_sweep(
        run, slab_cell, train_config(f5.slab_train), model, ms_train, ms_test, timings=timings
    )
    ms_met = cell_metrics(
        run,
        slab_cell,
        r_slab,
        model,
        r_slab.params,
        ds_ms,
        ms_train,
        ms_test,
        s=(0,),
        sc=tuple(range(1, d)),
    )
    rec_slab = record(
        run,
        "fig5",
        "ms7",
        mname,
        ms_met,
        r_slab,
        ms_test,
        role="m_slab",
        expect="M_slab: MS-7 learned from the 7-slabs, test accuracy ~1",
    )
    best, slab_status = select_m_slab(ms_met["test_acc"], rec_slab["seed_status"])
    if best is None:
        log.error("Fig. 5: every M_slab model diverged; no complex-first runs")
        return {
            "records": [rec_slab],
            "status": "all M_slab models failed",
            "curves": {"alpha": []},
        }
    slab_vars = tree_index(r_slab.params, best)
    slab_acc = float(ms_met["test_acc"][best])
    if slab_acc < 0.99:
        log.warning("M_slab reached only %.4f test accuracy on MS-7 (paper: 100%%)", slab_acc)

    # 2. The coordinate M_slab depends on least: highest coordinate-randomized AUC on MS-7.
    one = jax.tree_util.tree_map(lambda v: v[None], slab_vars)
    coord_auc = np.asarray(
        R.per_coordinate_randomized(
            model.logits, one, ms_test[0], ms_test[1], _key(run, 51), ds_ms.rotation, auc_kind="roc"
        )["roc_auc"]
    )[0]
    coord = int(np.argmax(coord_auc))

    # 3. LMS-7 with its linear coordinate at `coord`.
    k_tr, k_te = jax.random.split(_key(run, 52))
    lms_train = lms7_with_linear_at(ds_lms, ds_ms, k_tr, n_tr, coord)
    lms_test = lms7_with_linear_at(ds_lms, ds_ms, k_te, n_te, coord)
    s_c, sc_c = (coord,), tuple(i for i in range(d) if i != coord)

    # 4. For each alpha: MS-7 accuracy of M_alpha at init (Fig. 5a), then train on LMS-7.
    tag = tree_digest(slab_vars)
    curves: dict[str, list] = {
        "alpha": [],
        "init_ms7_acc": [],
        "s_rand_auc": [],
        "sc_rand_auc": [],
        "test_auc": [],
    }
    recs = [rec_slab]
    for alpha in f5.alphas:
        mixed = mixed_init_model(model, slab_vars, float(alpha), tag)
        # Initial params exactly as the trainer builds them (init_scale 1): key -> fold_in init.
        keys = model_keys(run.seed, list(range(run.n_seeds)), 1, 1)
        init_vars = jax.vmap(
            lambda k, m=mixed: m.init(jax.random.fold_in(k, STREAM_INIT), ms_train[0][:1])
        )(keys)
        init_ms = M.evaluate(model.logits, init_vars, ms_test[0], ms_test[1])
        init_lms = M.evaluate(model.logits, init_vars, lms_test[0], lms_test[1])
        cell = f"f5_lms7_alpha{float(alpha):.2f}"
        r = run_sweep(run, cell, train_config(p.train), mixed, lms_train, lms_test, timings=timings)
        met = cell_metrics(
            run, cell, r, model, r.params, ds_ms, lms_train, lms_test, s=s_c, sc=sc_c
        )
        met["init_ms7_acc"] = np.asarray(init_ms["accuracy"], np.float64)
        met["init_lms7_acc"] = np.asarray(init_lms["accuracy"], np.float64)
        rec = record(
            run,
            "fig5",
            "lms7",
            mname,
            met,
            r,
            lms_test,
            alpha=float(alpha),
            linear_coord=coord,
            role="m_alpha",
            expect=_alpha_expect(float(alpha)),
            other_sets={"init_ms7_acc": ms_test[1]},
        )
        recs.append(rec)
        curves["alpha"].append(float(alpha))
        # Mean and std over the seeds that did not fail (None when all failed / one seed).
        for k in ("init_ms7_acc", "s_rand_auc", "sc_rand_auc", "test_auc"):
            curves[k].append([rec["metrics"][k]["mean"], rec["metrics"][k]["std"]])
    return {
        "records": recs,
        "linear_coord": coord,
        "coord_auc": coord_auc.tolist(),
        "m_slab_seed": int(r_slab.seed_index[best]),
        "m_slab_status": slab_status,
        "m_slab_test_acc": slab_acc,
        "curves": curves,
    }


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
        pool = (
            np.asarray([s in (SEED_UNCONVERGED, SEED_UNCONVERGED_USED) for s in status], bool)
            & finite
        )
        how = "unconverged"
        if pool.any():
            log.warning("Fig. 5: no M_slab seed converged; using the best unconverged one")
    if not pool.any():
        return None, None
    return int(np.flatnonzero(pool)[np.argmax(acc[pool])]), how


# ------------------------------------------------------------------------------------------------
# Figures (kinds of sbjax.plots.robustness; their data is saved in <run>/figures/).

_TABLE_FIELDS = (
    "part",
    "dataset",
    "model",
    "status",
    "activation",
    "optimizer",
    "dropout",
    "weight_decay",
    "d",
    "n_complex",
    "init",
    "init_scale",
)


def make_figures(run, results: Sequence[Mapping[str, Any]], f5: Mapping[str, Any] | None) -> None:
    """Tables 6-9 heat maps and Fig. 5, from summary records."""
    tables = [
        {
            **{k: r[k] for k in _TABLE_FIELDS if k in r},
            "metrics": {
                m: {"mean": r["metrics"][m]["mean"], "std": r["metrics"][m]["std"]}
                for m in ("s_rand_auc", "sc_rand_auc")
            },
        }
        for r in results
        if r.get("part") in ("table6", "table7", "table8", "table9")
    ]
    if tables:
        run.figure(
            "tables6to9_randomized_auc.png",
            "randomized_auc_tables",
            records=tables,
            title="App. C Tables 6-9: randomized AUC (S-rand ~0.5, S^c-rand ~1 under extreme SB)",
        )
    if f5 is not None and f5["curves"]["alpha"]:
        run.figure(
            "fig5_complex_first_init.png",
            "complex_first_init",
            curves=f5["curves"],
            linear_coord=int(f5["linear_coord"]),
        )


# ------------------------------------------------------------------------------------------------


def add_options(parser) -> None:
    parser.add_argument(
        "--noise-fill",
        default="uniform_0B",
        choices=("uniform_0B", "uniform_sym", "gaussian"),
        help="Table 8: fill of coordinates beyond the features (REFERENCE 11.21)",
    )


def finish(ctx: Context) -> None:
    """The figures and summary.json's timings (per part and per sweep) and Fig. 5's numbers."""
    f5 = ctx.outputs.get("complex_first")
    make_figures(ctx.run, ctx.run.results, f5)
    ctx.extra.update(
        part_runtime_s=ctx.part_s,
        noise_fill=ctx.args.noise_fill,
        sweep_runtime_s=ctx.state["sweeps"],
    )
    if f5 is not None:
        ctx.extra["complex_first"] = {k: v for k, v in f5.items() if k != "records"}


EXPERIMENT = Experiment(
    NAME,
    __doc__,
    PRESETS,
    preset_help=PRESET_HELP,
    parts={
        "activations": part_activations,
        "regularization": part_regularization,
        "dimension": part_dimension,
        "init": part_init,
        "complex_first": part_complex_first,
    },
    select="flag",
    options=add_options,
    check=check_preset,
    config=lambda ctx: {"noise_fill": ctx.args.noise_fill},
    setup=lambda ctx: ctx.state.update(sweeps={}),
    finish=finish,
)
main = EXPERIMENT.main


if __name__ == "__main__":
    main()
