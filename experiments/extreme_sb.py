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
* ``recipe_search`` (``--preset search``) -- Table 4's MS-(5,7) CNN / GRU, whose recipe the paper
  does not give: at paper size, SGD over lr x momentum and Adam over lr, each optimizer ONE
  traced-grid sweep; a record per recipe and the recipe the table uses (docs/results/
  extreme_sb_search_recipes: the CNN converges with SGD lr 0.01 / momentum 0.9 and Adam 3e-4, the
  GRU with none of the five).
* ``sc_search`` (``--preset search``) -- Fig. 3(b) at |S^c| = 249, where nb01's recipe memorises:
  (2000,1)-FCNs over training-set size x learning rate as one program whose models sample their
  data inside it (`sbjax.train.sample_size`), with an answer per cell (generalises? SB holds?).

Without ``--parts`` a preset runs its own parts (quick / paper / smoke: the first three; search:
the two searches, best one at a time, each <= 30 min on a 2-core CPU).

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
``seed_status``); a record whose models all failed says "all models failed". Figures show, per
model, the first seed that did not fail (named in each panel).

Records in summary.json: ``part`` (table4 | sc_sweep | s_removed), ``dataset`` (lms5 | ms57),
``model`` (fcn_100x1, fcn_100x2, cnn1d_32x7x1, cnn1d_32x7x2, gru_100x10x1, gru_100x10x2,
fcn_<w>x1), ``n_complex`` and ``d``; metrics per seed: train_acc, test_acc, test_auc,
s_rand_acc, s_rand_auc, sc_rand_acc, sc_rand_auc, plus the extras documented in
experiments/README.md (coord0_rand_acc, min_sc_coord_rand_acc, exclusive_s_invariant_sc,
logit_ks_s, logit_ks_sc, stop_step, converged); ``expect`` (what the record should show: the
S-removed control is expected to rely on S^c) and, where the paper gives a value, ``paper``
(metric -> value) with ``paper_source`` (the table or figure cited).

Presets are data (the ``Preset`` dataclass; config.json's ``preset_config`` lists every key); change
any value with ``--set``, e.g. ``--set train.lr=0.05``, ``--set n_train=50000``, ``--set
max_steps.lms5=5000``, ``--set sc_sweep.width=2000``, ``--set s_removed.lms5.train.max_steps=80000``
(recorded in config.json). Figures are saved with their data: ``python -m sbjax.plots RUN_DIR``
redraws them.

    python -m experiments.extreme_sb --preset quick --out runs/extreme_sb
    python -m experiments.extreme_sb --preset paper --out runs/extreme_sb_paper   # GPU/TPU
    python -m experiments.extreme_sb --preset quick --set train.weight_decay=5e-7 --out DIR
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from experiments.common import (
    Context,
    Experiment,
    parse_parts,
    run_sweep,
    train_field,
    used_mask,
)
from experiments.evaluation import (
    eval_keys,
    evaluate_stack,
    metric_test_sizes,
    split_by_grid,
    stop_metrics,
)
from experiments.synthetic import (
    MODELS,
    NB01,
    NB03_MS7,
    Recipe,
    check_names,
    check_per_dataset,
    check_positive_int,
    check_recipe,
    class_sizes,
    fcn_config,
    fcn_name,
    make_data,
    make_dataset,
    per_dataset,
    select_models,
    stable_tag,
    train_config,
)
from sbjax.validate import check_range, fail

NAME = "extreme_sb"
PARTS = ("table4", "sc_sweep", "s_removed", "recipe_search", "sc_search")
# Every model of this experiment is trained to its train-accuracy stop rule in the reference
# (nb01 / nb03, REFERENCE.md Sec. 3.3) and the paper's Table 4 / Fig. 3 report those converged
# models: a model that hit its budget is a failure, not a data point.
REQUIRE_CONVERGED = True
log = logging.getLogger(f"sbjax.experiments.{NAME}")

DATASETS = ("lms5", "ms57")
TABLE4_MODELS = (
    "fcn_100x1",
    "fcn_100x2",
    "cnn1d_32x7x1",
    "cnn1d_32x7x2",
    "gru_100x10x1",
    "gru_100x10x2",
)

# Recipes: `NB01` (nb01) for Table 4 / Fig. 3(b); `NB03_MS7` (nb03's MS-7 recipe) for the MS-(5,7)
# control, where plain nb01 SGD (lr 0.1, no momentum) overfits 20k points without escaping the
# 7-slab plateau. Both live in experiments.synthetic.

# Published values (REFERENCE.md Sec. 9): Table 4 (App. C) S-/S^c-randomized AUC per model, and
# Fig. 3(b) ((2000,1)-FCNs) per |S^c|.
TABLE4_PAPER: dict[str, dict[str, float]] = {
    "lms5": {
        "fcn_100x1": 0.50,
        "fcn_100x2": 0.49,
        "cnn1d_32x7x1": 0.50,
        "cnn1d_32x7x2": 0.50,
        "gru_100x10x1": 0.51,
        "gru_100x10x2": 0.50,
    },
    "ms57": {
        "fcn_100x1": 0.50,
        "fcn_100x2": 0.50,
        "cnn1d_32x7x1": 0.50,
        "cnn1d_32x7x2": 0.50,
        "gru_100x10x1": 0.50,
        "gru_100x10x2": 0.50,
    },
}
FIG3B_PAPER: dict[tuple[str, int], float] = {
    ("lms5", 49): 0.50,
    ("lms5", 249): 0.50,
    ("ms57", 49): 0.49,
    ("ms57", 249): 0.50,
}


@dataclasses.dataclass(frozen=True)
class SCSweep:
    """Fig. 3(b): (width,1)-FCNs on `datasets` with |S^c| in `n_complex` (d = |S^c| + 1)."""

    width: int
    n_complex: tuple[int, ...]
    datasets: tuple[str, ...]
    max_steps: int


@dataclasses.dataclass(frozen=True)
class RecipeSearch:
    """Table 4's MS-(5,7) CNN / GRU: a recipe grid at paper size (issue: nb01's SGD leaves chance
    in 1 of 4 CNN seeds and 0 of 4 GRU seeds in 100k updates).

    Every (architecture, optimizer) is ONE traced-grid sweep: SGD over `sgd_lr` x
    `sgd_momentum`, Adam over `adam_lr` (an empty tuple skips that optimizer), `n_seeds` seeds
    per grid point, coupled L2 `weight_decay`, nb01's stop rule (train accuracy >= 0.9999,
    `patience` updates) within `max_steps`.
    """

    models: tuple[str, ...]
    n_train: int
    n_test: int
    n_seeds: int
    sgd_lr: tuple[float, ...]
    sgd_momentum: tuple[float, ...]
    adam_lr: tuple[float, ...]
    max_steps: int
    eval_every: int
    weight_decay: float = 5e-5
    patience: int = 1000


@dataclasses.dataclass(frozen=True)
class SCSearch:
    """Fig. 3(b) at |S^c| = `n_complex` on MS-(5,7): (width,1)-FCNs over training-set size x
    learning rate, as ONE program (`sbjax.train.sample_size`: each model samples its training set
    inside the program and trains on its first n_train rows; the sizes are nested, the seeds'
    draws independent). nb01's recipe otherwise (SGD, no momentum, L2 5e-5, stop at train
    accuracy >= 0.9999); `train_eval_size` rows measure train accuracy."""

    width: int
    n_complex: int
    n_train: tuple[int, ...]
    lr: tuple[float, ...]
    n_seeds: int
    n_test: int
    max_steps: int
    eval_every: int
    train_eval_size: int = 10_000
    patience: int = 1000
    # models per call of the one compiled program: each holds its own max(n_train)-point draw
    # (300k x 250 floats, ~3 GB at its sampling peak), so 8 at once exceed a 23 GB machine
    models_per_call: int = 2


@dataclasses.dataclass(frozen=True)
class SRemoved:
    """The S-removed control on one dataset: the architecture, its recipe (max_steps and
    eval_every required; patience None: the dataset's) and its training-set size (None: the
    preset's n_train)."""

    model: str
    train: Recipe
    n_train: int | None = None


@dataclasses.dataclass(frozen=True)
class Preset:
    """extreme_sb preset.

    Attributes:
      n_seeds: seeds per sweep. n_train: training points. n_test: {dataset: test points}.
        d: input dimension of table4 and s_removed.
      train: the table4 / sc_sweep recipe (nb01); eval_every required.
      max_steps, patience: {dataset: updates} of table4 (nb01: patience 1 on LMS-5, 1000 on
        MS-(5,7)); patience also applies to sc_sweep.
      datasets: table4's datasets. models: {dataset: table4's architectures}.
      coord_n_test: coordinate-wise randomized accuracy on the first this-many test points
        (None: all).
      sc_sweep: Fig. 3(b). s_removed: {dataset: SRemoved} control.
      boundary_grid: Fig. 3(c) grid size; boundary_model: its architecture.
      more_models: {dataset: architectures} that ``--models`` can add (``--models all``: every
        one), kept out of the default list for time.
      recipe_search, sc_search: the searches (None: the preset has none).
      parts: the parts run without ``--parts``.
    """

    n_seeds: int
    n_train: int
    n_test: Any
    d: int
    train: Recipe
    max_steps: dict
    datasets: tuple[str, ...]
    models: Any
    coord_n_test: int | None
    sc_sweep: SCSweep
    s_removed: dict
    boundary_grid: int
    boundary_model: str = "fcn_100x1"
    more_models: Any = None
    patience: dict = dataclasses.field(default_factory=lambda: {"lms5": 1, "ms57": 1000})
    recipe_search: RecipeSearch | None = None
    sc_search: SCSearch | None = None
    parts: tuple[str, ...] = ("table4", "sc_sweep", "s_removed")


PRESETS: dict[str, Preset] = {
    # Tiny: the default test suite runs it end to end in well under a minute.
    "smoke": Preset(
        n_seeds=2,
        n_train=2000,
        n_test={"lms5": 1000, "ms57": 1000},
        d=50,
        train=NB01.replace(eval_every=200),
        max_steps={"lms5": 400, "ms57": 400},
        datasets=("lms5",),
        models={"lms5": ("fcn_100x1",), "ms57": ("fcn_100x1",)},
        coord_n_test=1000,
        # Same shapes as the table4 sweep, so the persistent compilation cache serves it.
        sc_sweep=SCSweep(width=100, n_complex=(49,), datasets=("lms5",), max_steps=400),
        s_removed={"lms5": SRemoved("fcn_100x1", NB01.replace(eval_every=200, max_steps=400))},
        boundary_grid=30,
    ),
    # A few CPU minutes: 20k training points (nb01: 100k), 3 seeds, evaluation every 1000 updates
    # (nb01: 5000), depth-1 architectures only; the CNN on LMS-5 only (on MS-(5,7) it needs
    # >= 10k updates at 20-30x the FCN's cost) and the GRU one option away (`--models all`:
    # +85 s, nearly half of the first run on the 2-core CPU); the |S^c| sweep with
    # (100,1)-FCNs (paper: 2000) on LMS-5 only.
    "quick": Preset(
        n_seeds=3,
        n_train=20000,
        n_test={"lms5": 10000, "ms57": 10000},
        d=50,
        train=NB01.replace(eval_every=1000),
        max_steps={"lms5": 10000, "ms57": 30000},
        datasets=("lms5", "ms57"),
        models={"lms5": ("fcn_100x1", "cnn1d_32x7x1"), "ms57": ("fcn_100x1",)},
        more_models={"lms5": ("gru_100x10x1",)},
        coord_n_test=5000,
        sc_sweep=SCSweep(width=100, n_complex=(49, 249), datasets=("lms5",), max_steps=10000),
        s_removed={
            "lms5": SRemoved("fcn_100x1", NB01.replace(eval_every=1000, max_steps=40000)),
            # nb03's MS-7 size (40k): at 20k one seed in three memorizes the training set
            # instead of learning the 7-slabs.
            "ms57": SRemoved("fcn_100x2", NB03_MS7.replace(max_steps=30000), n_train=40000),
        },
        boundary_grid=50,
    ),
    # nb01 sizes (100k train; 10k test on LMS-5, 50k on MS-(5,7)), 5 seeds, all six Table 4
    # architectures plus nb01's (100,2)-FCN, (2000,1)-FCNs for Fig. 3(b); for a GPU/TPU.
    "paper": Preset(
        n_seeds=5,
        n_train=100000,
        n_test={"lms5": 10000, "ms57": 50000},
        d=50,
        train=NB01.replace(eval_every=5000),
        max_steps={"lms5": 100000, "ms57": 200000},
        datasets=("lms5", "ms57"),
        models={"lms5": TABLE4_MODELS, "ms57": TABLE4_MODELS},
        coord_n_test=None,
        sc_sweep=SCSweep(
            width=2000, n_complex=(49, 249), datasets=("lms5", "ms57"), max_steps=200000
        ),
        s_removed={
            "lms5": SRemoved("fcn_100x1", NB01.replace(eval_every=5000, max_steps=200000)),
            "ms57": SRemoved("fcn_100x2", NB03_MS7.replace(max_steps=200000)),
        },
        boundary_grid=100,
    ),
}
# The paper's open gaps searched on the 2-core CPU (each part <= 30 min): Table 4's MS-(5,7) CNN /
# GRU over optimizer x learning rate (x momentum), and Fig. 3(b)'s |S^c| = 249 over training-set
# size x learning rate. Run one part at a time: --parts recipe_search, --parts sc_search.
PRESETS["search"] = dataclasses.replace(
    PRESETS["quick"],
    n_train=100_000,
    n_test={"lms5": 10000, "ms57": 50000},
    recipe_search=RecipeSearch(
        models=("cnn1d_32x7x1", "gru_100x10x1"),
        n_train=100_000,
        n_test=50_000,
        n_seeds=2,
        sgd_lr=(0.01, 0.03, 0.1),
        sgd_momentum=(0.9,),
        adam_lr=(3e-4, 1e-3),
        max_steps=12_000,
        eval_every=1000,
    ),
    sc_search=SCSearch(
        width=2000,
        n_complex=249,
        n_train=(100_000, 300_000),
        lr=(0.03, 0.1),
        n_seeds=2,
        n_test=20_000,
        max_steps=15_000,
        eval_every=1000,
    ),
    parts=("recipe_search", "sc_search"),
)

PRESET_HELP = {
    "smoke": "seconds: LMS-5, one (100,1)-FCN, 2k points, 2 seeds, 400 updates (plumbing only)",
    "quick": "CPU minutes: 20k points, 3 seeds; FCN/CNN on LMS-5 (+GRU with --models all), FCN "
    "on MS-(5,7); |S^c| sweep with (100,1)-FCNs",
    "paper": "nb01 sizes (100k points), 5 seeds, all six Table 4 architectures, (2000,1)-FCNs "
    "for Fig. 3(b) (GPU/TPU)",
    "search": "the paper's open gaps, one part at a time (<= 30 CPU min each): --parts "
    "recipe_search (MS-(5,7) CNN / GRU, optimizer x lr grid) or sc_search (Fig. 3(b) at "
    "|S^c| = 249, n_train x lr)",
}


def _paper(s_rand_auc: float | None, source: str) -> dict[str, Any]:
    """`add_result` arguments citing a published S-/S^c-randomized AUC (none without one)."""
    if s_rand_auc is None:
        return {}
    return {"paper": {"s_rand_auc": s_rand_auc, "sc_rand_auc": 1.00}, "paper_source": source}


def table4_models(preset: Preset, dataset: str) -> list[str]:
    return list(per_dataset(preset.models, dataset))


def check_preset(p: Preset) -> None:
    """Validates a preset after --set overrides, before any work (errors name the key)."""
    check_positive_int("n_seeds", p.n_seeds)
    check_positive_int("n_train", p.n_train)
    check_positive_int("d", p.d, 2)
    check_names("datasets", p.datasets, DATASETS)
    check_names("sc_sweep.datasets", p.sc_sweep.datasets, DATASETS)
    if not isinstance(p.s_removed, Mapping):
        fail("s_removed", p.s_removed, "a {dataset: SRemoved} map")
    check_names("s_removed", list(p.s_removed), DATASETS)
    used = set(p.datasets) | set(p.sc_sweep.datasets) | set(p.s_removed)
    # two points at least: a one-point test set has one class, so no AUC
    check_per_dataset("n_test", p.n_test, sorted(used), lambda k, v: check_positive_int(k, v, 2))
    check_recipe("train", p.train, need=("eval_every",))
    check_per_dataset("max_steps", p.max_steps, p.datasets, train_field("max_steps"))
    check_per_dataset("patience", p.patience, sorted(used), train_field("patience"))
    check_per_dataset("models", p.models, p.datasets, lambda k, v: check_names(k, v, TABLE4_MODELS))
    if p.more_models is not None:
        if not isinstance(p.more_models, Mapping):
            fail("more_models", p.more_models, "a {dataset: [architectures]} map")
        for ds, names in p.more_models.items():
            check_names(f"more_models.{ds}", names, TABLE4_MODELS)
    if p.coord_n_test is not None:
        check_positive_int("coord_n_test", p.coord_n_test)
    sc = p.sc_sweep
    check_positive_int("sc_sweep.width", sc.width)
    train_field("max_steps")("sc_sweep.max_steps", sc.max_steps)
    if isinstance(sc.n_complex, str) or not isinstance(sc.n_complex, (list, tuple)):
        fail("sc_sweep.n_complex", sc.n_complex, "a list of integers >= 1")
    for v in sc.n_complex:
        check_positive_int("sc_sweep.n_complex", v)
    for ds, spec in p.s_removed.items():
        if spec.model not in MODELS:
            fail(f"s_removed.{ds}.model", spec.model, "one of " + ", ".join(MODELS))
        check_recipe(f"s_removed.{ds}.train", spec.train, need=("max_steps", "eval_every"))
        if spec.n_train is not None:
            check_positive_int(f"s_removed.{ds}.n_train", spec.n_train)
    check_positive_int("boundary_grid", p.boundary_grid, 2)
    check_names("boundary_model", [p.boundary_model], TABLE4_MODELS)
    check_names("parts", p.parts, PARTS)
    if p.recipe_search is not None:
        check_recipe_search(p.recipe_search)
    if p.sc_search is not None:
        check_sc_search(p.sc_search)


def _check_values(name: str, values: Any, lo: float, hi: float | None, *, empty_ok=False):
    """A list of numbers in [lo, hi) (lo = 0: (0, hi)); an empty list only where `empty_ok`."""
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        fail(name, values, "a list of numbers")
    if not values and not empty_ok:
        fail(name, values, "a non-empty list of numbers")
    for v in values:
        check_range(name, v, lo, hi, lo_open=lo == 0.0 and hi is None, hi_open=hi is not None)


def check_recipe_search(rs: RecipeSearch, at: str = "recipe_search") -> None:
    """Validates the recipe search (errors name `recipe_search.<field>`)."""
    check_names(f"{at}.models", rs.models, TABLE4_MODELS)
    for name in ("n_train", "n_seeds", "max_steps", "eval_every", "patience"):
        check_positive_int(f"{at}.{name}", getattr(rs, name))
    check_positive_int(f"{at}.n_test", rs.n_test, 2)
    _check_values(f"{at}.sgd_lr", rs.sgd_lr, 0.0, None, empty_ok=True)
    if rs.sgd_lr:
        if not isinstance(rs.sgd_momentum, (list, tuple)) or not rs.sgd_momentum:
            fail(f"{at}.sgd_momentum", rs.sgd_momentum, "a non-empty list of numbers in [0, 1)")
        for v in rs.sgd_momentum:
            check_range(f"{at}.sgd_momentum", v, 0.0, 1.0, hi_open=True)
    _check_values(f"{at}.adam_lr", rs.adam_lr, 0.0, None, empty_ok=True)
    if not rs.sgd_lr and not rs.adam_lr:
        fail(f"{at}.sgd_lr", rs.sgd_lr, "at least one learning rate (sgd_lr or adam_lr)")
    check_range(f"{at}.weight_decay", rs.weight_decay, 0.0, None)


def check_sc_search(sc: SCSearch, at: str = "sc_search") -> None:
    """Validates the Fig. 3(b) search (errors name `sc_search.<field>`)."""
    for name in ("width", "n_complex", "n_seeds", "max_steps", "eval_every", "patience"):
        check_positive_int(f"{at}.{name}", getattr(sc, name))
    check_positive_int(f"{at}.n_test", sc.n_test, 2)
    check_positive_int(f"{at}.train_eval_size", sc.train_eval_size)
    check_positive_int(f"{at}.models_per_call", sc.models_per_call)
    if isinstance(sc.n_train, str) or not isinstance(sc.n_train, (list, tuple)) or not sc.n_train:
        fail(f"{at}.n_train", sc.n_train, "a non-empty list of training-set sizes >= 256")
    for n in sc.n_train:
        check_positive_int(f"{at}.n_train", n, NB01.batch_size)
    _check_values(f"{at}.lr", sc.lr, 0.0, None)


# ------------------------------------------------------------------------------------------------
# Parts. Each takes the run, the preset, the CLI options and the `extra` dict of summary.json.


def _n_test(p: Preset, dataset: str) -> int:
    return int(per_dataset(p.n_test, dataset))


def _sweep(run, extra, name, tcfg, model, train, val, **kwargs):
    # One evaluation period per compiled chunk: the host loop checks "all seeds stopped"
    # between chunks, so converged sweeps (LMS-5: ~1000 updates) stop right away. kwargs: more
    # of run_sweep's (n_seeds, grid, save).
    timings: dict[str, Any] = {}
    r = run_sweep(
        run, name, tcfg, model, train, val, timings=timings, periods_per_chunk=1, **kwargs
    )
    extra["sweep_wall_s"][name] = timings[name]["call_s"]
    return r


def part_table4(ctx: Context) -> None:
    """Table 4 and Fig. 3(a, c): every (dataset, architecture) pair."""
    run, p, args, extra = ctx.run, ctx.preset, ctx.args, ctx.extra
    from sbjax.models import make_model

    per_coord: dict[str, Any] = {}  # every model (summary.json)
    coord_used: dict[str, Any] = {}  # models that did not fail (the figure)
    hist: dict[str, Any] = {}  # "<dataset>/<model>" -> first used model's scores (Fig. 3a)
    for ds_name in p.datasets:
        ds, train, test = make_data(ds_name, p.d, p.n_train, _n_test(p, ds_name), run.seed)
        tcfg = train_config(
            p.train,
            max_steps=int(per_dataset(p.max_steps, ds_name)),
            patience=int(per_dataset(p.patience, ds_name)),
        )
        for m_name in table4_models(p, ds_name):
            model = make_model(MODELS[m_name])
            sweep = f"table4_{ds_name}_{m_name}"
            r = _sweep(run, extra, sweep, tcfg, model, train, test)
            metrics, arrays = evaluate_stack(
                model.logits,
                r.params,
                ds,
                test,
                eval_keys(run.seed, sweep, r.seed_index),
                train=train,
                mode=args.randomize_mode,
                auc_kind=args.auc_kind,
                per_coordinate=True,
                coord_n_test=p.coord_n_test,
                scores=True,
                batch_size=8192,
            )
            metrics.update(stop_metrics(r))
            paper = TABLE4_PAPER.get(ds_name, {}).get(m_name)
            rec = run.add_result(
                dataset=ds_name,
                model=m_name,
                metrics=metrics,
                part="table4",
                expect="relies on S only: S-rand AUC ~0.5, S^c-rand AUC ~ test AUC ~1",
                **_paper(paper, "Table 4 (App. C)"),
                status=r.stop_reason,
                require_converged=REQUIRE_CONVERGED,
                test_size=metric_test_sizes(metrics, test[1], p.coord_n_test),
                n_complex=len(ds.complex_coords),
                d=ds.d,
            )
            used = used_mask(rec)
            per_coord[f"{ds_name}/{m_name}"] = arrays["coord_rand_acc"].tolist()
            if not used.any():
                log.warning("%s: every model failed; no Fig. 3(a, c) panels", sweep)
                continue
            coord_used[f"{ds_name}/{m_name}"] = arrays["coord_rand_acc"][used]
            # Figures show one model per architecture: its first seed that did not fail.
            i = int(np.flatnonzero(used)[0])
            hist[f"{ds_name}/{m_name}"] = {
                "scores": {k: v[i] for k, v in arrays["scores"].items()},
                "y_test": arrays["y_test"],
                "seed": int(r.seed_index[i]),
            }
            if m_name == p.boundary_model:
                _boundary_figure(
                    run,
                    p,
                    args,
                    ds_name,
                    ds,
                    model,
                    r.params,
                    train,
                    test,
                    arrays["coord_rand_acc"],
                    i,
                    np.asarray(r.seed_index),
                )
    if hist:
        _logit_figure(run, hist)
    if coord_used:
        run.figure(
            "coord_rand_acc.png",
            "coordinate_heatmap",
            values=coord_used,
            title="Coordinate-wise randomized accuracy (mean over the seeds that did not "
            "fail; coordinate 0 = S)",
        )
    extra["coord_rand_acc"] = per_coord


def part_sc_sweep(ctx: Context) -> None:
    """Fig. 3(b): randomized AUCs of (w,1)-FCNs against the number of complex features."""
    run, p, args, extra = ctx.run, ctx.preset, ctx.args, ctx.extra
    from sbjax.models import make_model

    sc = p.sc_sweep
    m_name = fcn_name(sc.width, 1)
    model = make_model(fcn_config(sc.width, 1))
    rows = []
    for ds_name in sc.datasets:
        tcfg = train_config(
            p.train, max_steps=int(sc.max_steps), patience=int(per_dataset(p.patience, ds_name))
        )
        for n_c in sc.n_complex:
            d = int(n_c) + 1
            ds, train, test = make_data(ds_name, d, p.n_train, _n_test(p, ds_name), run.seed)
            sweep = f"sc_sweep_{ds_name}_{m_name}_sc{n_c}"
            r = _sweep(run, extra, sweep, tcfg, model, train, test)
            metrics, _ = evaluate_stack(
                model.logits,
                r.params,
                ds,
                test,
                eval_keys(run.seed, sweep, r.seed_index),
                train=train,
                mode=args.randomize_mode,
                auc_kind=args.auc_kind,
                batch_size=8192,
            )
            metrics.update(stop_metrics(r))
            paper = FIG3B_PAPER.get((ds_name, int(n_c)))
            rec = run.add_result(
                dataset=ds_name,
                model=m_name,
                metrics=metrics,
                part="sc_sweep",
                expect=f"|S^c| = {n_c} complex features: still S only, S-rand AUC ~0.5, "
                "S^c-rand AUC ~1",
                **_paper(paper, "Fig. 3(b), (2000,1)-FCNs"),
                status=r.stop_reason,
                require_converged=REQUIRE_CONVERGED,
                test_size=class_sizes(test[1]),
                n_complex=int(n_c),
                d=d,
            )
            rows.append(
                {
                    "dataset": rec["dataset"],
                    "n_complex": rec["n_complex"],
                    "metrics": {
                        k: rec["metrics"][k] for k in ("test_auc", "s_rand_auc", "sc_rand_auc")
                    },
                }
            )
    if rows:
        run.figure(
            "fig3b_sc_sweep.png",
            "randomized_auc_vs_sc",
            rows=rows,
            title="Fig. 3(b): randomized AUC vs $|S^c|$ (mean ± std over seeds that did not fail)",
        )


def _recipe_label(optimizer: str, point: Mapping[str, float]) -> str:
    """ "SGD lr 0.03, momentum 0.9" / "Adam lr 0.001" (records, figure ticks)."""
    if optimizer == "adam":
        return f"Adam lr {point['lr']:g}"
    return f"SGD lr {point['lr']:g}, momentum {point['momentum']:g}"


def search_choice(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The recipe a table should use: the most converged seeds, then the fewest updates (mean
    stop step of the converged ones); None when no seed converged. Ties keep the first."""
    best, key_best = None, None
    for rec in records:
        n_ok = int(rec["n_seeds"])
        if n_ok == 0:
            continue
        steps = rec["metrics"]["stop_step"]["mean"]
        key = (n_ok, -float(steps))
        if key_best is None or key > key_best:
            best, key_best = rec, key
    return best


def part_recipe_search(ctx: Context) -> None:
    """Table 4, MS-(5,7) CNN / GRU at paper size: one traced-grid sweep per (architecture,
    optimizer); one record per recipe with its converged seeds' metrics (unconverged seeds are
    counted, not averaged), the chosen recipe per architecture and a figure of the grid."""
    run, p, args, extra = ctx.run, ctx.preset, ctx.args, ctx.extra
    from sbjax.models import make_model

    rs = p.recipe_search
    if rs is None:
        fail("parts", "recipe_search", "a preset with a recipe_search (--preset search)")
    ds, train, test = make_data("ms57", p.d, rs.n_train, rs.n_test, run.seed)
    base = train_config(
        NB01,
        weight_decay=rs.weight_decay,
        max_steps=rs.max_steps,
        eval_every=rs.eval_every,
        patience=rs.patience,
    )
    grids = {
        "sgd": {"lr": list(rs.sgd_lr), "momentum": list(rs.sgd_momentum)},
        "adam": {"lr": list(rs.adam_lr)},
    }
    rows, chosen = [], {}
    for m_name in rs.models:
        model = make_model(MODELS[m_name])
        recs = []
        for opt, grid in grids.items():
            if not grid["lr"]:
                continue
            tcfg = dataclasses.replace(base, optimizer=opt, momentum=0.0)
            sweep = f"recipe_search_ms57_{m_name}_{opt}"
            r = _sweep(
                run,
                extra,
                sweep,
                tcfg,
                model,
                train,
                test,
                n_seeds=rs.n_seeds,
                grid=grid,
                save=None,
            )
            metrics, _ = evaluate_stack(
                model.logits,
                r.params,
                ds,
                test,
                eval_keys(run.seed, sweep, r.seed_index),
                train=train,
                mode=args.randomize_mode,
                auc_kind=args.auc_kind,
                batch_size=8192,
            )
            metrics.update(stop_metrics(r))
            for g, (point_metrics, mask) in enumerate(split_by_grid(r, metrics)):
                point = r.grid_points[g]
                rec = run.add_result(
                    dataset="ms57",
                    model=m_name,
                    metrics=point_metrics,
                    part="recipe_search",
                    expect=f"{_recipe_label(opt, point)}: converges? relies on S only?",
                    **_paper(TABLE4_PAPER["ms57"].get(m_name), "Table 4 (App. C)"),
                    status=[
                        reason for reason, used in zip(r.stop_reason, mask, strict=True) if used
                    ],
                    require_converged=REQUIRE_CONVERGED,
                    test_size=class_sizes(test[1]),
                    recipe={
                        "optimizer": opt,
                        "lr": float(point["lr"]),
                        "momentum": float(point.get("momentum", 0.0)),
                        "weight_decay": float(rs.weight_decay),
                    },
                    recipe_label=_recipe_label(opt, point),
                    n_train=int(rs.n_train),
                    max_steps=int(rs.max_steps),
                )
                recs.append(rec)
                rows.append(
                    {
                        "group": m_name,
                        "label": rec["recipe_label"],
                        "per_seed": {
                            k: point_metrics[k].tolist()
                            for k in ("test_acc", "s_rand_auc", "sc_rand_auc")
                        },
                        "converged": point_metrics["converged"].tolist(),
                    }
                )
        best = search_choice(recs)
        chosen[m_name] = (
            None
            if best is None
            else {
                "recipe": best["recipe"],
                "recipe_label": best["recipe_label"],
                "n_converged": int(best["n_seeds"]),
                "n_total": int(best["n_total"]),
            }
        )
        for rec in recs:
            rec["selected"] = best is not None and rec is best
    extra["recipe_search_choice"] = chosen
    if rows:
        run.figure(
            "recipe_search_ms57.png",
            "search_grid",
            rows=rows,
            metrics=["test_acc", "s_rand_auc", "sc_rand_auc"],
            title=f"MS-(5,7) at {rs.n_train:,} points, {rs.max_steps:,} updates: every seed "
            "(hollow: did not converge)",
        )


def part_sc_search(ctx: Context) -> None:
    """Fig. 3(b) at |S^c| = 249 on MS-(5,7): (2000,1)-FCNs over n_train x lr as one program
    (`sbjax.train.sample_size`); one record per (n_train, lr) and the answer: where (if
    anywhere) the models generalise and whether SB holds there."""
    run, p, args, extra = ctx.run, ctx.preset, ctx.args, ctx.extra
    import jax

    from sbjax.models import make_model
    from sbjax.train.sample_size import sample_size_sweep

    sc = p.sc_search
    if sc is None:
        fail("parts", "sc_search", "a preset with an sc_search (--preset search)")
    d = int(sc.n_complex) + 1
    ds = make_dataset("ms57", d, int(sc.n_complex))
    key = jax.random.fold_in(jax.random.key(run.seed), stable_tag("sc_search_test", d))
    x_te, y_te = ds.sample(key, sc.n_test)
    test = (np.asarray(x_te), np.asarray(y_te))
    m_name = fcn_name(sc.width, 1)
    model = make_model(fcn_config(sc.width, 1))
    tcfg = train_config(
        NB01,
        max_steps=int(sc.max_steps),
        eval_every=int(sc.eval_every),
        patience=int(sc.patience),
        train_eval_size=int(sc.train_eval_size),
    )
    sizes = tuple(int(n) for n in sc.n_train)
    log.info(
        "sc_search: %d sizes x %d lr x %d seeds = %d (%d,1)-FCNs in one program, %d updates "
        "each (no progress bar inside one compiled call)",
        len(sizes),
        len(sc.lr),
        sc.n_seeds,
        len(sizes) * len(sc.lr) * sc.n_seeds,
        sc.width,
        sc.max_steps,
    )
    r = sample_size_sweep(
        tcfg,
        model,
        ds,
        n_train=sizes,
        grid={"lr": list(sc.lr)},
        n_seeds=sc.n_seeds,
        seed=run.seed,
        models_per_call=sc.models_per_call,
    )
    extra["sweep_wall_s"]["sc_search"] = r.compile_s + r.run_s
    shape = r.shape  # [N, L, S, 1]
    n_models = int(np.prod(shape))
    names = [f"sc_search/n{n}/lr{pt['lr']:g}" for n in sizes for pt in r.grid_points]
    # One evaluation key per seed, shared by every cell: all cells are scored on the same
    # randomized draws (common random numbers along the searched axes).
    metrics, _ = evaluate_stack(
        model.logits,
        r.variables,
        ds,
        test,
        eval_keys(run.seed, "sc_search", np.tile(np.arange(sc.n_seeds), len(names))),
        mode=args.randomize_mode,
        auc_kind=args.auc_kind,
        batch_size=8192,
    )
    metrics["train_acc"] = r.train_acc.reshape(n_models)
    metrics["stop_step"] = r.stop_step.reshape(n_models).astype(np.float64)
    reasons = r.stop_reason.reshape(n_models)
    metrics["converged"] = (reasons == "converged").astype(np.float64)
    rows, answer = [], []
    for c in range(len(names)):
        sl = slice(c * sc.n_seeds, (c + 1) * sc.n_seeds)
        n, pt = sizes[c // len(r.grid_points)], r.grid_points[c % len(r.grid_points)]
        cm = {k: np.asarray(v)[sl] for k, v in metrics.items()}
        rec = run.add_result(
            dataset="ms57",
            model=m_name,
            metrics=cm,
            part="sc_search",
            expect=f"n_train {n:,}, lr {pt['lr']:g}: generalises? then S only (S-rand AUC ~0.5)",
            **_paper(FIG3B_PAPER.get(("ms57", int(sc.n_complex))), "Fig. 3(b), (2000,1)-FCNs"),
            status=list(reasons[sl]),
            require_converged=REQUIRE_CONVERGED,
            test_size=class_sizes(test[1]),
            n_complex=int(sc.n_complex),
            d=d,
            n_train=int(n),
            lr=float(pt["lr"]),
        )
        rows.append(
            {
                "group": f"MS-(5,7), |S^c| = {sc.n_complex}, ({sc.width},1)-FCN",
                "label": f"n {n // 1000}k, lr {pt['lr']:g}",
                "per_seed": {
                    k: cm[k].tolist()
                    for k in ("train_acc", "test_acc", "s_rand_auc", "sc_rand_auc")
                },
                "converged": cm["converged"].tolist(),
            }
        )
        answer.append(sc_verdict(rec))
    extra["sc_search_answer"] = answer
    run.figure(
        "sc_search_ms57.png",
        "search_grid",
        rows=rows,
        # train accuracy (first train_eval_size rows) shows memorisation beside test accuracy
        metrics=["train_acc", "test_acc", "s_rand_auc", "sc_rand_auc"],
        title=f"Fig. 3(b) searched: |S^c| = {sc.n_complex}, {sc.max_steps:,} updates, every seed "
        "(hollow: did not converge)",
    )


# A model "generalises" when its test accuracy reaches this (MS-(5,7) is separable: the
# paper's models reach ~1.0); SB then holds when its S-randomized AUC is within 0.05 of chance
# and its S^c-randomized AUC within 0.05 of its test AUC.
GENERALISES_MIN = 0.95
SB_TOLERANCE = 0.05


def sc_verdict(rec: Mapping[str, Any]) -> dict[str, Any]:
    """One searched cell's answer from its record: {"n_train", "lr", "n_converged", "n_total",
    "generalises" (every converged seed's test accuracy >= GENERALISES_MIN; None without one),
    "sb_holds" (among those: S-rand AUC within SB_TOLERANCE of 0.5 and S^c-rand AUC within it of
    the test AUC; None where it does not generalise), test_acc / s_rand_auc / sc_rand_auc means}."""
    m = rec["metrics"]
    used = used_mask(rec)
    acc = np.asarray(m["test_acc"]["per_seed"], np.float64)[used]
    out: dict[str, Any] = {
        "n_train": rec["n_train"],
        "lr": rec["lr"],
        "n_converged": int(used.sum()),
        "n_total": int(rec["n_total"]),
        **{k: m[k]["mean"] for k in ("test_acc", "s_rand_auc", "sc_rand_auc", "train_acc")},
        # every seed, converged or not (a model still short of the stop rule may generalise)
        "test_acc_every_seed": m["test_acc"]["per_seed"],
        "train_acc_every_seed": m["train_acc"]["per_seed"],
        "seed_status": rec["seed_status"],
    }
    gen = bool(acc.size and np.all(acc >= GENERALISES_MIN)) if acc.size else None
    out["generalises"] = gen
    if gen:
        s_rand = np.asarray(m["s_rand_auc"]["per_seed"], np.float64)[used]
        sc_rand = np.asarray(m["sc_rand_auc"]["per_seed"], np.float64)[used]
        auc = np.asarray(m["test_auc"]["per_seed"], np.float64)[used]
        out["sb_holds"] = bool(
            np.all(np.abs(s_rand - 0.5) <= SB_TOLERANCE)
            and np.all(np.abs(sc_rand - auc) <= SB_TOLERANCE)
        )
    else:
        out["sb_holds"] = None
    return out


def part_s_removed(ctx: Context) -> None:
    """Control: S randomized in the training and test sets -> the model learns S^c.

    LMS-5 uses the nb01 recipe with a (100,1)-FCN; MS-(5,7) uses nb03's MS-7 recipe with a
    (100,2)-FCN (momentum 0.9 gets through the 7-slab plateau; see `NB03_MS7`).
    """
    run, p, args, extra = ctx.run, ctx.preset, ctx.args, ctx.extra
    import jax

    from sbjax.eval import randomize as R
    from sbjax.models import make_model

    for ds_name, spec in p.s_removed.items():
        n_train = int(spec.n_train if spec.n_train is not None else p.n_train)
        ds, train, test = make_data(ds_name, p.d, n_train, _n_test(p, ds_name), run.seed)
        k = jax.random.fold_in(jax.random.key(run.seed), stable_tag("s_removed", ds_name))
        # One row permutation of the canonical S column of each split: S keeps its marginal but
        # carries no label information (the reference's S-randomization applied to the data).
        x_tr = np.asarray(
            R.randomize_block(jax.random.fold_in(k, 0), train[0], ds.simple_coords, ds.rotation)
        )
        x_te = np.asarray(
            R.randomize_block(jax.random.fold_in(k, 1), test[0], ds.simple_coords, ds.rotation)
        )
        train_r, test_r = (x_tr, train[1]), (x_te, test[1])
        # The control keeps its preset recipe (--weight-decay applies to table4 / sc_sweep).
        patience = spec.train.patience or int(per_dataset(p.patience, ds_name))
        tcfg = train_config(spec.train, patience=patience)
        model = make_model(MODELS[spec.model])
        sweep = f"s_removed_{ds_name}_{spec.model}"
        r = _sweep(run, extra, sweep, tcfg, model, train_r, test_r)
        metrics, _ = evaluate_stack(
            model.logits,
            r.params,
            ds,
            test_r,
            eval_keys(run.seed, sweep, r.seed_index),
            train=train_r,
            mode=args.randomize_mode,
            auc_kind=args.auc_kind,
            per_coordinate=True,
            coord_n_test=p.coord_n_test,
            batch_size=8192,
        )
        metrics.update(stop_metrics(r))
        # The Table 1 verdict (exclusive reliance on S) is meaningless once S is noise.
        metrics.pop("exclusive_s_invariant_sc", None)
        # The control's claim is about models trained to 100 % train accuracy ("rely on S^c to
        # attain 100% accuracy"): an unconverged model (e.g. stuck on the slab plateau) fails.
        run.add_result(
            dataset=ds_name,
            model=spec.model,
            metrics=metrics,
            part="s_removed",
            expect="control, S is noise here: the model must rely on S^c, so S^c-rand AUC ~0.5 "
            "and S-rand ~ test is the EXPECTED outcome (not SB failing)",
            paper={"test_acc": 1.0},
            paper_source="Sec. 4.2 text ('rely on S^c to attain 100% accuracy')",
            status=r.stop_reason,
            require_converged=REQUIRE_CONVERGED,
            test_size=metric_test_sizes(metrics, test_r[1], p.coord_n_test),
            n_complex=len(ds.complex_coords),
            d=ds.d,
            n_train=len(train_r[1]),
            recipe={k: getattr(spec.train, k) for k in ("lr", "momentum", "weight_decay")},
        )


# ------------------------------------------------------------------------------------------------
# Figures (kinds of sbjax.plots; their data is saved in <run>/figures/).


def _logit_figure(run, hist: Mapping[str, Mapping[str, Any]]) -> None:
    """Fig. 3(a): one row per architecture (dataset / model), true positives and negatives."""
    from sbjax.plots.paper import logit_panels

    panels = {}
    for name, h in hist.items():
        for title, panel in logit_panels(h["scores"], h["y_test"], model_index=None).items():
            short = title.replace("true positives", "TP").replace("true negatives", "TN")
            panels[f"{name} (seed {h['seed']}): {short}"] = panel
    run.figure(
        "fig3a_logits.png",
        "logit_histograms",
        panels=panels,
        ncols=2,
        title="Fig. 3(a): logits (logit1 - logit0), one row per architecture, its first "
        "seed that did not fail",
    )


def _boundary_figure(
    run,
    p: Preset,
    args,
    ds_name,
    ds,
    model,
    params,
    train,
    test,
    coord_acc,
    model_index: int,
    seed_index: np.ndarray,
) -> None:
    """Fig. 3(c) of model `model_index` of the stack (the boundaries of every model are computed
    in one call, each with its own key; the figure shows one)."""
    from sbjax.eval import boundary as Bd

    n = 5000  # data rows for ranges, fillers and the overlay (train and test halves)
    data = (
        np.concatenate([train[0][:n], test[0][:n]]),
        np.concatenate([train[1][:n], test[1][:n]]),
    )
    c2 = "most_influential" if args.boundary_c2 == "auto" else int(args.boundary_c2)
    grid = Bd.boundary_projection(
        model.logits,
        params,
        ds,
        eval_keys(run.seed, f"boundary/{ds_name}", seed_index),
        data=data,
        c2=c2,
        fill=args.boundary_fill,
        coord_acc=coord_acc,
        n_grid=int(p.boundary_grid),
    )
    run.figure(
        f"fig3c_boundary_{ds_name}.png",
        "decision_boundary",
        grid={k: np.asarray(v) for k, v in grid._asdict().items()},
        model_index=int(model_index),
        title=f"Fig. 3(c): {ds_name}, {p.boundary_model} (seed {int(seed_index[model_index])})",
    )


# ------------------------------------------------------------------------------------------------


def add_options(parser) -> None:
    """extreme_sb's own flags."""
    parser.add_argument(
        "--parts",
        default=None,
        help="comma-separated subset of " + ", ".join(PARTS) + " (or all); default: the "
        "preset's parts (table4, sc_sweep, s_removed; the search preset: recipe_search, "
        "sc_search)",
    )
    parser.add_argument(
        "--models",
        default=None,
        help="table4 architectures: 'all' (the preset's list and its optional ones, e.g. the "
        "quick preset's GRU) or a comma-separated subset, e.g. fcn_100x1 on a busy CPU "
        "(default: the preset's list)",
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help="coupled L2 of table4 / sc_sweep, the same as --set "
        "train.weight_decay=X (default: the reference's 5e-5; the paper says "
        "5e-7)",
    )
    parser.add_argument(
        "--randomize-mode",
        choices=("permute", "resample"),
        default="permute",
        help="permute: the reference's within-test-set permutation; resample: "
        "the paper's independent draw (bootstrap from the test set)",
    )
    parser.add_argument(
        "--auc-kind",
        choices=("roc", "pr", "both"),
        default="roc",
        help="roc: the reference's AUC; pr: the paper's Definition 2",
    )
    parser.add_argument(
        "--boundary-fill",
        choices=("data", "uniform"),
        default="data",
        help="Fig. 3(c) filler coordinates: data rows, or the reference's U[0, 1) probes",
    )
    parser.add_argument(
        "--boundary-c2",
        default="auto",
        help="second axis of Fig. 3(c): 'auto' = the S^c coordinate with the "
        "lowest coordinate-wise randomized accuracy, or a canonical index "
        "(the reference hard-codes 1)",
    )


def apply_options(ctx: Context) -> Preset:
    """--models and --weight-decay applied to the preset."""
    preset = select_models(ctx.preset, ctx.args.models)
    if ctx.args.weight_decay is not None:
        check_range("weight_decay", ctx.args.weight_decay, 0.0, None)
        wd = float(ctx.args.weight_decay)
        preset = dataclasses.replace(preset, train=preset.train.replace(weight_decay=wd))
    return preset


def select_parts(ctx: Context) -> list[str]:
    """--parts, or the preset's parts; a search part needs its preset entry."""
    parts = parse_parts(ctx.args.parts, PARTS) if ctx.args.parts else list(ctx.preset.parts)
    for name in ("recipe_search", "sc_search"):
        if name in parts and getattr(ctx.preset, name) is None:
            fail("parts", name, f"parts whose settings the preset has (--preset search has {name})")
    return parts


def run_config(ctx: Context) -> dict[str, Any]:
    """config.json's flags; Fig. 3(c)'s second axis is checked here, before any training (an
    S^c coordinate: S is 0)."""
    args, d = ctx.args, int(ctx.preset.d)
    if args.boundary_c2 != "auto" and not (
        args.boundary_c2.isdigit() and 1 <= int(args.boundary_c2) < d
    ):
        fail(
            "boundary_c2",
            args.boundary_c2,
            f"'auto' or a canonical S^c coordinate index in [1, {d - 1}]",
        )
    return {
        "parts": ctx.parts,
        "weight_decay": args.weight_decay,
        "randomize_mode": args.randomize_mode,
        "auc_kind": args.auc_kind,
        "boundary_c2": args.boundary_c2,
        "boundary_fill": args.boundary_fill,
    }


EXPERIMENT = Experiment(
    NAME,
    __doc__,
    PRESETS,
    preset_help=PRESET_HELP,
    parts={
        "table4": part_table4,
        "sc_sweep": part_sc_sweep,
        "s_removed": part_s_removed,
        "recipe_search": part_recipe_search,
        "sc_search": part_sc_search,
    },
    select=select_parts,
    options=add_options,
    prepare=apply_options,
    check=check_preset,
    config=run_config,
    setup=lambda ctx: ctx.extra.update(sweep_wall_s={}, parts=ctx.parts),
)
main = EXPERIMENT.main


if __name__ == "__main__":
    main()
