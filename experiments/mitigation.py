"""Mitigation testbed: published ways around simplicity bias, side by side on the paper's data.

Every method trains the same architecture with its dataset's recipe (`Budget`: LMS-5 Adam; MS-(5,7)
the paper's momentum SGD on 40k points, under which its S^c-only ceiling is learned) on the same
draw of LMS-5, MS-(5,7) (d = 50) and MNIST-CIFAR (version A, the real subset), and is scored with
the paper's randomized metrics. Methods (``--methods``; docs/mitigation.md has each one's formula
and source):

* ``erm`` -- the baseline (Adam, the same budget as every other method).
* ``spectral_decoupling`` -- CE + lambda mean(logits^2) (Pezeshki et al. 2021); grid: lambda.
* ``sam`` -- sharpness-aware minimisation, `optax.contrib.sam` (Foret et al. 2021; Springer et
  al. 2024); grid: rho.
* ``jtt`` -- Just Train Twice (Liu et al. 2021): a short ERM run, then retraining from a fresh
  initialisation with its training errors up-weighted; grid: the up-weight.
* ``grad_diversity`` -- two members trained together with the squared cosine similarity of their
  input gradients penalised (Teney et al. 2022); grid: lambda.
* ``dbat`` -- D-BAT (Pagliardini et al. 2023): member 2 (fresh initialisation; the reported
  model) agrees with the labels and disagrees with member 1 (the ERM model) on unlabeled inputs;
  grid: alpha (x the unlabeled mixing ratio).
* ``divdis`` -- DivDis (Lee et al. 2023): two heads, mutual information between them on
  unlabeled inputs plus KL(mean prediction || label marginal); grid: the MI weight (x mix).
  sbjax's heads are two coupled networks (no shared trunk; see docs/mitigation.md).
* ``dfr`` -- DFR (Kirichenko et al. 2023): the ERM model's features are frozen and a new last
  layer is fitted from scratch (exact L2 logistic regression on standardized features, averaged
  over group-balanced subsets) on labelled S-randomized data; grid: the L2.
* ``orthop`` -- OrthoP (Morwani et al. 2023): model 2 (the reported model) is trained on the
  inputs projected onto the orthogonal complement of the top singular directions of the ERM
  model's learned first-layer change W - W0 (rank by an explained-variance threshold); grid: the
  threshold.
* ``ceiling`` -- the same model trained with S randomized (S^c alone): what "uses S^c" looks like.

Data and protocol. The unlabeled pool of D-BAT / DivDis holds S-randomized inputs: on the
synthetic datasets a fresh draw (``n_unlabeled`` points, never the test sets); on MNIST-CIFAR the
training images re-paired with a permuted MNIST block. A small labelled S-randomized validation
set (``n_val`` = 64 points; synthetic: a fresh draw, MNIST-CIFAR: training pairs held out of
training) picks, for DivDis and gradient diversity, the better of their own two heads (highest
validation accuracy) and, for every method, the grid point (highest mean validation accuracy over
the used seeds, among the points with the most usable seeds); a second rule with no target
labels (``source_val``: 64 labelled points from the training distribution) gives every method a
second row. The test sets never choose anything.
Test sets: standard, S-randomized and S^c-randomized (one within-test-set permutation of the
block per model, as the reference) and "reversed" (each point's S block taken from a point of
the other class, so S points to the wrong label; accuracy against the S^c label: 0 for a model
that uses S only, 1 for one that uses S^c only). ``--correlation c`` < 1 makes S disagree with
the label on a fraction 1 - c of the training points (follow-up work's "MC-Dominoes" with c =
0.95).

Every method x dataset trains seeds x strengths in one compiled program (`train_sweep`; members
of DivDis / gradient diversity are units of K = 2). Failed models (diverged or non-finite metrics)
are excluded from every mean and counted (``n_failed``, ``seed_status``); a multi-member cell
fails when any member fails. ``±`` is the sample std over seeds; ``sampling_se`` is the test
set's own sampling error. Every model of a seed is scored with one evaluation key per (dataset,
seed) (common random numbers), and each row's ``delta_vs_erm`` is its paired difference from ERM
with a 95 % t-interval. A dataset whose ceiling stays below its ``ceiling_min`` and a row whose
training accuracy stays below ``fit_min`` are reported as such (``report``), not as numbers.

    python -m experiments.mitigation --preset quick --out runs/mitigation
    python -m experiments.mitigation --preset quick --methods erm,dbat --datasets lms5 --out DIR
    python -m experiments.mitigation --preset quick --correlation 0.95 --out DIR
    python -m experiments.mitigation --preset paper --out runs/mitigation_paper   # GPU / TPU

Any preset value can be changed with --set (e.g. ``--set grids.dbat=[0.1,1.0]``, ``--set
ms57.max_steps=20000``, ``--set unlabeled_mix=[1.0,0.5]``). Figures: a methods x datasets
heat-map of S-randomized accuracy and, per dataset, S- against S^c-randomized accuracy per method
and each method's paired difference from ERM with its interval (``mitigation_delta_<dataset>``);
`python -m sbjax.plots RUN_DIR` redraws them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from experiments.common import (
    SEED_DIVERGED,
    SEED_OK,
    Context,
    Experiment,
    check_train_fields,
    run_sweep,
    stats,
    t_interval,
    train_field,
    used_mask,
)
from experiments.evaluation import eval_keys, evaluate_stack, metric_test_sizes
from experiments.synthetic import (
    MODELS,
    NB03_MS7,
    check_names,
    check_positive_int,
    make_data,
    stable_tag,
)
from sbjax.validate import check_range, fail

NAME = "mitigation"
DATASETS = ("lms5", "ms57", "mnist_cifar")
METHODS = (
    "erm",
    "group_dro",
    "lff",
    "spectral_decoupling",
    "sam",
    "jtt",
    "grad_diversity",
    "dbat",
    "divdis",
    "dfr",
    "orthop",
    "ceiling",
)
MULTI_MEMBER = ("grad_diversity", "dbat", "divdis", "orthop")
METRICS = (  # the first four are the closing table's columns
    "test_acc",
    "s_rand_acc",
    "sc_rand_acc",
    "reversed_acc",
    "test_auc",
    "s_rand_auc",
    "sc_rand_auc",
    "val_acc",
    "source_val_acc",
    "worst_group_acc",
    "train_acc",
)
DELTA_METRICS = ("s_rand_acc", "worst_group_acc")  # delta_vs_erm, paired over seeds
# Selection rules (`--set selections=[...]`): the validation metric that picks the reported
# head of a two-head method and the grid point (highest mean over used seeds; ties -> the first).
SELECTIONS = ("target_val", "source_val")
SELECTION_METRIC = {"target_val": "val_acc", "source_val": "source_val_acc"}
SELECTION_RULE = {
    "target_val": "highest accuracy on the labelled S-randomized validation set (target labels)",
    "source_val": "highest accuracy on a validation set from the training distribution "
    "(no target labels)",
}
# What a method's grid axis is called in records. The traced hyperparameter it sweeps is not
# typed here: `grid_hparam` reads it from the method's objective (`Penalty.hparam`).
GRID_AXIS = {
    "spectral_decoupling": "lambda",
    "group_dro": "eta",
    "lff": "q",
    "sam": "rho",
    "jtt": "upweight",  # the traced strength is upweight - 1
    "grad_diversity": "lambda",
    "dbat": "alpha",
    "divdis": "lambda_mi",
    "dfr": "l2",  # DFR's logistic-regression penalty (`dfr_refit` vmaps over it): no hparam
    "orthop": "threshold",  # rides on the member axis (a different U per model): no hparam
}
# Traced hyperparameters that are not penalty strengths (`sbjax.train.config.hparam_names`,
# `train_sweep`'s unlabeled batches).
SAM_RHO = "sam_rho"
CORRELATION = "correlation"  # the traced axis of `SweepSpec.decorrelation`
# Methods that take --correlations (the axis runs inside their sweeps); the others are refused.
CORRELATION_METHODS = ("erm", "group_dro", "lff", "jtt", "dfr", "ceiling")
N_GROUPS = 4  # sbjax.data.groups.N_SPURIOUS_GROUPS (kept here: importing sbjax.data loads JAX)
UNLABELED_MIX = "unlabeled_mix"
log = logging.getLogger(f"sbjax.experiments.{NAME}")


@dataclasses.dataclass(frozen=True)
class Budget:
    """Training recipe and sizes of one dataset (the same for every method on it).

    ceiling_min: the S-randomized accuracy the ceiling (S^c alone) must reach for the dataset's
    rows to be reported (below it the recipe does not learn S^c, so no method can be judged).
    fit_min: the mean training accuracy below which a method's row "did not fit".
    """

    n_train: int | None  # None (MNIST-CIFAR): every training pair the source allows
    n_test: int | None
    batch_size: int
    lr: float
    max_steps: int
    eval_every: int
    jtt_steps: int  # JTT's first (short ERM) stage
    optimizer: str = "adam"
    momentum: float = 0.0
    weight_decay: float = 0.0
    ceiling_min: float = 0.95
    fit_min: float = 0.9


@dataclasses.dataclass(frozen=True)
class Grids:
    """Each method's strength grid (traced: one compiled program per method x dataset)."""

    spectral_decoupling: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    group_dro: tuple[float, ...] = (0.01, 0.1, 1.0)
    lff: tuple[float, ...] = (0.5, 0.7, 0.9)
    sam: tuple[float, ...] = (0.01, 0.05, 0.2)
    jtt: tuple[float, ...] = (5.0, 20.0, 100.0, 500.0)
    grad_diversity: tuple[float, ...] = (1.0, 10.0, 100.0)
    dbat: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)
    divdis: tuple[float, ...] = (1.0, 10.0, 100.0)
    dfr: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
    orthop: tuple[float, ...] = (0.9, 0.99)


# The MS-(5,7) recipe: nb03's MS-7 control (momentum SGD, lr 0.3; REFERENCE.md Sec. 3.3) on 40k
# points. Under Adam 1e-3 for 6,000 updates on 20k points its ceiling stays at chance (test
# 0.508). Pilots of the ceiling (8 seeds, 40k points): lr 0.3 reaches >= 0.98 S-randomized
# validation accuracy in 8 of 8 seeds by 15,000 updates; lr 0.1 in 7 of 8 by 20,000 (2 of 3 seeds
# in the first quick run).
MS57_QUICK = Budget(
    n_train=40_000,
    n_test=5000,
    batch_size=NB03_MS7.batch_size,
    lr=NB03_MS7.lr,
    max_steps=15_000,
    eval_every=1500,
    jtt_steps=500,
    optimizer=NB03_MS7.optimizer,
    momentum=NB03_MS7.momentum,
    weight_decay=NB03_MS7.weight_decay,
)
LMS5_QUICK = Budget(20_000, 5000, 256, 1e-3, 6000, 1000, 200)
# MNIST-CIFAR: an FCN on the CIFAR block alone reaches ~0.66-0.68 S-randomized and ~0.79 training
# accuracy on the subset in this budget (the ceiling row of every stored run): 0.95 / 0.9 are out
# of reach for any row that uses CIFAR, so the bars are set below what S^c alone gives.
MC_QUICK = Budget(None, None, 64, 1e-3, 300, 150, 40, ceiling_min=0.6, fit_min=0.75)


@dataclasses.dataclass(frozen=True)
class Preset:
    n_seeds: int
    lms5: Budget
    ms57: Budget
    mnist_cifar: Budget
    datasets: tuple[str, ...] = DATASETS
    methods: tuple[str, ...] = METHODS
    model: str = "fcn_100x1"
    d: int = 50
    correlation: float = 1.0
    correlations: tuple[float, ...] = ()  # a traced axis (empty: off); see CORRELATION_METHODS
    grids: Grids = Grids()
    selections: tuple[str, ...] = SELECTIONS
    unlabeled_mix: tuple[float, ...] = (1.0,)  # D-BAT / DivDis: P(unlabeled row from the pool)
    n_unlabeled: int = 5000  # synthetic pool size (MNIST-CIFAR: every training pair, re-paired)
    unlabeled_batch_size: int = 128
    divdis_marginal: float = 1.0  # DivDis's KL-to-prior weight
    n_val: int = 64  # each validation set (target: S-randomized; source: training distribution)
    n_dfr: int = 2000  # synthetic DFR set (MNIST-CIFAR: the S-randomized training pairs)
    dfr_subsets: int = 10  # DFR's group-balanced subsets, each refit from scratch, averaged
    mc_holdout: int = 128  # MNIST-CIFAR training pairs held out for the two validation sets
    mc_source: str = "auto"


PRESETS = {
    "smoke": Preset(
        n_seeds=2,
        datasets=("lms5",),
        lms5=Budget(2000, 1000, 128, 1e-3, 60, 30, 20, ceiling_min=0.5, fit_min=0.5),
        ms57=Budget(2000, 1000, 128, 1e-3, 60, 30, 20, ceiling_min=0.5, fit_min=0.5),
        mnist_cifar=Budget(None, None, 32, 1e-3, 20, 10, 10, ceiling_min=0.5, fit_min=0.5),
        grids=Grids(
            spectral_decoupling=(0.1,),
            group_dro=(0.1,),
            lff=(0.7,),
            sam=(0.05,),
            jtt=(20.0,),
            grad_diversity=(1.0,),
            dbat=(0.1,),
            divdis=(1.0,),
            dfr=(1e-2,),
            orthop=(0.9,),
        ),
        n_unlabeled=500,
        n_dfr=500,
        dfr_subsets=3,
        mc_holdout=128,
    ),
    "quick": Preset(n_seeds=3, lms5=LMS5_QUICK, ms57=MS57_QUICK, mnist_cifar=MC_QUICK),
    "standard": Preset(
        n_seeds=10,
        lms5=LMS5_QUICK,
        ms57=MS57_QUICK,
        mnist_cifar=MC_QUICK,
    ),
    "paper": Preset(
        n_seeds=10,
        lms5=Budget(100_000, 10_000, 256, 1e-3, 10_000, 1000, 500),
        ms57=dataclasses.replace(MS57_QUICK, n_train=100_000, n_test=10_000, max_steps=20_000),
        mnist_cifar=Budget(None, None, 256, 1e-3, 5000, 500, 300, ceiling_min=0.6, fit_min=0.75),
        grids=Grids(
            spectral_decoupling=(0.001, 0.01, 0.1, 1.0, 10.0),
            group_dro=(0.001, 0.01, 0.1, 1.0),
            lff=(0.3, 0.5, 0.7, 0.9),
            sam=(0.01, 0.05, 0.1, 0.2, 0.5),
            jtt=(5.0, 20.0, 50.0, 100.0, 500.0),
            grad_diversity=(0.1, 1.0, 10.0, 100.0, 1000.0),
            dbat=(0.01, 0.1, 0.3, 1.0, 10.0),
            divdis=(0.1, 1.0, 10.0, 100.0, 1000.0),
            dfr=(1e-5, 1e-4, 1e-3, 1e-2, 1e-1),
            orthop=(0.5, 0.9, 0.99),
        ),
        unlabeled_mix=(1.0, 0.5),
        n_unlabeled=20_000,
        mc_holdout=256,
    ),
}
PRESET_HELP = {
    "smoke": "seconds: LMS-5 only, 2k points, 2 seeds, 60 updates, one grid point per method "
    "(plumbing only)",
    "quick": "CPU minutes: LMS-5 (20k points, Adam), MS-(5,7) (40k points, momentum SGD, 15k "
    "updates) and the MNIST-CIFAR subset, 3 seeds, (100,1)-FCN: a smoke of the protocol",
    "standard": "the quick recipes with 10 seeds: the intervals README's claims rest on",
    "paper": "100k synthetic points, 10 seeds, 5-point grids, two mixing ratios (GPU / TPU)",
}


def check_budget(name: str, b: Budget) -> None:
    """One dataset's recipe, every training setting checked by TrainConfig (errors name
    `<dataset>.<field>`)."""
    if not isinstance(b, Budget):
        fail(name, b, "a Budget")
    check_train_fields(
        name,
        optimizer=b.optimizer,
        lr=b.lr,
        momentum=b.momentum,
        weight_decay=b.weight_decay,
        batch_size=b.batch_size,
        max_steps=b.max_steps,
        eval_every=b.eval_every,
    )
    train_field("max_steps")(f"{name}.jtt_steps", b.jtt_steps)  # JTT's first stage
    for f in ("n_train", "n_test"):
        if getattr(b, f) is not None or name != "mnist_cifar":
            check_positive_int(f"{name}.{f}", getattr(b, f), 2)
    check_range(f"{name}.ceiling_min", b.ceiling_min, 0.0, 1.0)
    check_range(f"{name}.fit_min", b.fit_min, 0.0, 1.0)


def check_preset(p: Preset) -> None:
    """Validates a preset after --set overrides, before any work (errors name the key)."""
    check_positive_int("n_seeds", p.n_seeds)
    check_names("datasets", p.datasets, DATASETS)
    check_names("methods", p.methods, METHODS)
    check_names("selections", p.selections, SELECTIONS)
    if p.model not in MODELS:
        fail("model", p.model, "one of " + ", ".join(MODELS))
    check_positive_int("d", p.d, 2)
    check_range("correlation", p.correlation, 0.5, 1.0)
    if p.correlations:
        if not isinstance(p.correlations, tuple | list):
            fail(
                "correlations",
                p.correlations,
                "a list of correlations in [0.5, 1], e.g. [1.0, 0.95]",
            )
        for c in p.correlations:
            check_range("correlations", c, 0.5, 1.0)
        if len(set(p.correlations)) != len(p.correlations):
            fail("correlations", list(p.correlations), "distinct values")
        if p.correlation != 1.0:
            fail("correlation", p.correlation, "1.0 with --correlations (the axis replaces it)")
        other = [m for m in p.methods if m not in CORRELATION_METHODS]
        if other:
            fail(
                "methods",
                ",".join(other),
                "methods that take --correlations: " + ", ".join(CORRELATION_METHODS),
            )
    for ds in DATASETS:
        check_budget(ds, getattr(p, ds))
    for m in GRID_AXIS:  # every method with a strength grid
        grid = getattr(p.grids, m)
        if not isinstance(grid, (tuple, list)) or not grid:
            fail(f"grids.{m}", grid, "a non-empty list of numbers")
        for v in grid:
            lo = 1.0 if m == "jtt" else 0.0
            check_range(
                f"grids.{m}",
                v,
                lo,
                1.0 if m == "orthop" else None,
                lo_open=m == "dfr",  # DFR's logistic regression needs a penalty > 0
            )
    if not p.unlabeled_mix:
        fail("unlabeled_mix", p.unlabeled_mix, "a non-empty list of ratios in (0, 1]")
    for v in p.unlabeled_mix:
        check_range("unlabeled_mix", v, 0.0, 1.0, lo_open=True)
    for f in ("n_unlabeled", "unlabeled_batch_size", "n_val", "n_dfr", "mc_holdout"):
        check_positive_int(f, getattr(p, f), 2)
    check_positive_int("dfr_subsets", p.dfr_subsets)
    if 2 * p.n_val > p.mc_holdout and "mnist_cifar" in p.datasets:
        fail("n_val", p.n_val, f"at most mc_holdout / 2 = {p.mc_holdout // 2} on MNIST-CIFAR")
    check_range("divdis_marginal", p.divdis_marginal, 0.0, None)


# ------------------------------------------------------------------------------------------------
# Data: the training set and the sets every method is scored on.


@dataclasses.dataclass
class Data:
    """One dataset's arrays (NumPy; x in the model basis).

    x_train/y_train: training set (with --correlation < 1: S disagrees on a fraction of rows).
    x_ceiling: the training inputs with S randomized (the ceiling row's training set).
    x_unlabeled: S-randomized inputs for D-BAT / DivDis. x_val/y_val: labelled S-randomized
    validation set. x_dfr/y_dfr: labelled S-randomized set of the last-layer refit.
    test: (x, y). reversed: (x, y): test points with S from the other class, S^c's label.
    basis: a `sbjax.eval.randomize.Basis` (rotation, S, S^c). budget: the dataset's `Budget`.
    train_groups: int32 [N] groups of the training rows, 2 y + [S agrees with y]
    (`sbjax.data.groups`): Group DRO's input and every record's `group_sizes`.
    decorrelation: with --correlations, (x_alt, order) of `SweepSpec.decorrelation`: each
    training row with S from an opposite-class row, and the order in which rows flip.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_ceiling: np.ndarray
    x_unlabeled: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_dfr: np.ndarray
    y_dfr: np.ndarray
    dfr_groups: np.ndarray
    source_val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    reversed: tuple[np.ndarray, np.ndarray]
    basis: Any
    budget: Budget
    info: dict
    train_groups: np.ndarray | None = None
    decorrelation: tuple[np.ndarray, np.ndarray] | None = None  # (x_alt, order), --correlations
    source_decorrelation: tuple[np.ndarray, np.ndarray] | None = None  # the same for source_val

    def training_set(self, correlation: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) the methods train on (with --correlations: as the program builds it at c)."""
        if correlation is None or self.decorrelation is None:
            return self.x_train, self.y_train
        return flipped_train(self, correlation)[0], self.y_train

    def source_val_set(self, correlation: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The source validation set (training distribution) at the training correlation."""
        x, y = self.source_val
        if correlation is None or self.source_decorrelation is None:
            return x, y
        from sbjax.train.data import flip_count, flip_rows

        x_alt, order = self.source_decorrelation
        return np.asarray(flip_rows(x, x_alt, order, flip_count(correlation, len(order)))[0]), y


def _canonical(x: np.ndarray, basis) -> np.ndarray:
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    return flat if basis.rotation is None else flat @ np.asarray(basis.rotation, np.float64).T


def _model_basis(z: np.ndarray, like: np.ndarray, basis) -> np.ndarray:
    x = z if basis.rotation is None else z @ np.asarray(basis.rotation, np.float64)
    return x.reshape(like.shape).astype(np.float32)


def set_s_from(x: np.ndarray, basis, rows: np.ndarray, donors: np.ndarray) -> np.ndarray:
    """x with the S block (canonical basis) of rows[i] replaced by that of donors[i]."""
    z = _canonical(x, basis)
    s = np.asarray(basis.simple_coords)
    z[np.ix_(rows, s)] = z[np.ix_(donors, s)]
    return _model_basis(z, x, basis)


def randomize_s(x: np.ndarray, basis, rng: np.random.Generator) -> np.ndarray:
    """S block permuted across the rows (S independent of the label; S^c and marginals kept)."""
    return randomize_s_rows(x, np.zeros(len(x), np.int32), basis, rng)[0]


def randomize_s_rows(x, y, basis, rng, s_label=None) -> tuple[np.ndarray, np.ndarray]:
    """(`randomize_s`'s x, agrees bool [N]: whether each row's new S points to its label).
    s_label [N]: the label each row's own S points to (default y: S agrees everywhere)."""
    y = np.asarray(y)
    s_label = y if s_label is None else np.asarray(s_label)
    perm = rng.permutation(len(x))
    return set_s_from(x, basis, np.arange(len(x)), perm), s_label[perm] == y


def opposite_donors(y: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each of `rows`, a random row of the other class."""
    y = np.asarray(y)
    pools = {c: np.flatnonzero(y != c) for c in (0, 1)}
    return np.asarray([rng.choice(pools[int(y[r])]) for r in rows], np.int64)


def reverse_s(x: np.ndarray, y: np.ndarray, basis, rng: np.random.Generator) -> np.ndarray:
    """Every point's S block taken from a point of the other class (S points to the wrong label)."""
    rows = np.arange(len(x))
    return set_s_from(x, basis, rows, opposite_donors(y, rows, rng))


def decorrelate(x, y, basis, correlation: float, rng: np.random.Generator) -> np.ndarray:
    """S taken from the other class on round((1 - correlation) n) random rows."""
    return decorrelate_rows(x, y, basis, correlation, rng)[0]


def decorrelate_rows(x, y, basis, correlation: float, rng: np.random.Generator):
    """(`decorrelate`'s x, s_agrees bool [N]: False on the rows whose S came from the other
    class)."""
    n_flip = int(round((1.0 - correlation) * len(x)))
    agrees = np.ones(len(x), bool)
    if n_flip == 0:
        return x, agrees
    rows = rng.choice(len(x), n_flip, replace=False)
    agrees[rows] = False
    return set_s_from(x, basis, rows, opposite_donors(y, rows, rng)), agrees


def decorrelation_inputs(x, y, basis, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(x_alt, order) for `SweepSpec.decorrelation`: every row with S taken from an
    opposite-class row, and a random order of the rows (at correlation c the first
    round((1 - c) N) of it train on x_alt, so the flipped sets are nested in c)."""
    rows = np.arange(len(x))
    order = rng.permutation(len(x)).astype(np.int32)
    return set_s_from(x, basis, rows, opposite_donors(y, rows, rng)), order


def flipped_train(d: Data, correlation: float) -> tuple[np.ndarray, np.ndarray]:
    """(x, s_agrees) of the training set as the program builds it at `correlation`."""
    from sbjax.train.data import flip_count, flip_rows  # the program's own rule

    x_alt, order = d.decorrelation
    x, flip = flip_rows(d.x_train, x_alt, order, flip_count(correlation, len(order)))
    return np.asarray(x), ~np.asarray(flip)


def _rng(seed: int, *tags: Any) -> np.random.Generator:
    return np.random.default_rng([seed, stable_tag(NAME, *tags)])


def synthetic_data(name: str, p: Preset, seed: int) -> Data:
    """Train / test from `make_data` (the draw every experiment uses); the extra sets are fresh
    draws from their own streams."""
    import jax

    from sbjax.data.groups import spurious_groups
    from sbjax.eval import randomize as R

    b = getattr(p, name)
    ds, (xtr, ytr), test = make_data(name, p.d, b.n_train, b.n_test, seed)
    basis = R.as_basis(ds)
    key = jax.random.fold_in(jax.random.key(seed), stable_tag(NAME, "extra", name, p.d))
    k_u, k_v, k_d = jax.random.split(key, 3)
    xu, _ = map(np.asarray, ds.sample(k_u, p.n_unlabeled))
    xv, yv = map(np.asarray, ds.sample(k_v, p.n_val))
    xd, yd = map(np.asarray, ds.sample(k_d, p.n_dfr))
    k_s = jax.random.fold_in(key, stable_tag(NAME, "source_val"))
    xs, ys = map(np.asarray, ds.sample(k_s, p.n_val))
    xtr, agrees = decorrelate_rows(xtr, ytr, basis, p.correlation, _rng(seed, "corr", name))
    xs, _ = decorrelate_rows(xs, ys, basis, p.correlation, _rng(seed, "src_corr", name))
    x_dfr, dfr_agrees = randomize_s_rows(xd, yd, basis, _rng(seed, "dfr", name))
    return Data(
        x_train=xtr,
        y_train=ytr,
        x_ceiling=randomize_s(xtr, basis, _rng(seed, "ceiling", name)),
        x_unlabeled=randomize_s(xu, basis, _rng(seed, "unlabeled", name)),
        x_val=randomize_s(xv, basis, _rng(seed, "val", name)),
        y_val=yv,
        x_dfr=x_dfr,
        y_dfr=yd,
        dfr_groups=spurious_groups(yd, dfr_agrees),
        source_val=(xs, ys),
        test=test,
        reversed=(reverse_s(test[0], test[1], basis, _rng(seed, "rev", name)), test[1]),
        basis=basis,
        budget=b,
        info={"n_train": len(ytr), "n_test": len(test[1]), "n_unlabeled": len(xu)},
        train_groups=spurious_groups(ytr, agrees),
        decorrelation=decorrelation_inputs(xtr, ytr, basis, _rng(seed, "corr_axis", name))
        if p.correlations
        else None,
        source_decorrelation=decorrelation_inputs(xs, ys, basis, _rng(seed, "src_axis", name))
        if p.correlations
        else None,
    )


def mnist_cifar_data(p: Preset, seed: int) -> Data:
    """MNIST-CIFAR version A. The first `mc_holdout` training pairs are held out (their CIFAR
    images never enter training) and give the two validation sets (target: S-randomized, the
    first n_val; source: as trained, the next n_val); S is the MNIST block (rows 0-31)."""
    from sbjax.data.groups import spurious_groups
    from sbjax.data.mnist_cifar import IMAGE_SHAPE, load_mnist_cifar
    from sbjax.eval import randomize as R

    b = p.mnist_cifar
    mc = load_mnist_cifar("A", source=p.mc_source, seed=seed, n_train=b.n_train, n_test=b.n_test)
    basis = R.image_basis(IMAGE_SHAPE, 32)
    x, y = mc.train.x, mc.train.y
    h, nv = p.mc_holdout, p.n_val
    if len(y) <= h + 2:
        fail("mc_holdout", h, f"fewer than the {len(y)} MNIST-CIFAR training pairs")
    xh, yh = x[:h], y[:h]
    xtr, ytr = x[h:], y[h:]
    tag = "mnist_cifar"
    xtr, agrees = decorrelate_rows(xtr, ytr, basis, p.correlation, _rng(seed, "corr", tag))
    xs, ys = xh[nv : 2 * nv], yh[nv : 2 * nv]
    xs, _ = decorrelate_rows(xs, ys, basis, p.correlation, _rng(seed, "src_corr", tag))
    s_label = np.where(agrees, ytr, 1 - ytr)  # the label each training row's S points to
    x_srand, srand_agrees = randomize_s_rows(
        xtr, ytr, basis, _rng(seed, "ceiling", tag), s_label=s_label
    )
    test = (mc.test.x, mc.test.y)
    return Data(
        x_train=xtr,
        y_train=ytr,
        x_ceiling=x_srand,
        x_unlabeled=randomize_s(xtr, basis, _rng(seed, "unlabeled", tag)),
        x_val=randomize_s(xh, basis, _rng(seed, "val", tag))[:nv],
        y_val=yh[:nv],
        x_dfr=x_srand,
        y_dfr=ytr,
        dfr_groups=spurious_groups(ytr, srand_agrees),
        source_val=(xs, ys),
        test=test,
        reversed=(reverse_s(test[0], test[1], basis, _rng(seed, "rev", tag)), test[1]),
        basis=basis,
        budget=b,
        info={
            "n_train": len(ytr),
            "n_test": len(test[1]),
            "n_unlabeled": len(ytr),
            "source": mc.source,
            "complete": mc.complete,
        },
        train_groups=spurious_groups(ytr, agrees),
        decorrelation=decorrelation_inputs(xtr, ytr, basis, _rng(seed, "corr_axis", tag))
        if p.correlations
        else None,
        source_decorrelation=decorrelation_inputs(xs, ys, basis, _rng(seed, "src_axis", tag))
        if p.correlations
        else None,
    )


# ------------------------------------------------------------------------------------------------
# Methods. Each returns a `Trained`: the members of every cell (seed x grid point).


@dataclasses.dataclass(frozen=True)
class MeanLogits:
    """Logits of an ensemble of possibly different models: mean of fns[i](variables[i], x).
    Frozen and hashable, so it is a static argument of the compiled evaluation."""

    fns: tuple[Callable, ...]

    def __call__(self, variables, x):
        out = self.fns[0](variables[0], x)
        for fn, v in zip(self.fns[1:], variables[1:], strict=True):
            out = out + fn(v, x)
        return out / len(self.fns)


@dataclasses.dataclass(frozen=True)
class RefitLogits:
    """Logits of an ERM model with its last layer replaced by a `DFRHead`: variables
    {"erm": the model's variables, "head": the head}. Hashable (a static argument)."""

    features: Callable

    def __call__(self, variables, x):
        from sbjax.eval import dfr_logits

        return dfr_logits(variables["head"], self.features(variables["erm"], x))


@dataclasses.dataclass
class Trained:
    """Cells in seed-major order (cell c = seed * G + grid point); each member a stack [C].

    members: list of (logits_fn, variables [C, ...]). points: the G grid points as shown in
    records ({axis name: value}). seed_index: int [C]. reasons: list of C stop reasons (the
    worst over the cell's members). reported: the members a row may report (None: any; D-BAT
    and OrthoP: their new model only, never the frozen ERM member). train_set: (x, y) the
    reported model was fitted on, where that is not the training set (ceiling, DFR).
    """

    members: list[tuple[Callable, Any]]
    points: list[dict]
    seed_index: np.ndarray
    reasons: list[str]
    extra: dict = dataclasses.field(default_factory=dict)
    reported: tuple[int, ...] | None = None
    train_set: tuple[np.ndarray, np.ndarray] | None = None

    def at_correlation(self, c: float) -> Trained:
        """The cells of grid points with correlation c (that key dropped from the points)."""
        g = max(len(self.points), 1)
        keep = [j for j, p in enumerate(self.points) if p.get(CORRELATION) == c]
        cells = np.asarray([s * g + j for s in range(len(self.seed_index) // g) for j in keep])
        return Trained(
            [(fn, take(v, cells)) for fn, v in self.members],
            [{k: v for k, v in self.points[j].items() if k != CORRELATION} for j in keep],
            np.asarray(self.seed_index)[cells],
            [self.reasons[i] for i in cells],
            {k: np.asarray(v)[cells] for k, v in self.extra.items()},
            self.reported,
            self.train_set,
        )


def worst_stop_reason(*reasons: str) -> str:
    """`sbjax.eval.ensemble.worst_stop_reason`, imported on use (--help stays jax-free)."""
    from sbjax.eval.ensemble import worst_stop_reason as worst

    return worst(*reasons)


def take(tree: Any, idx: Sequence[int]) -> Any:
    """Rows idx of stacked variables (NumPy)."""
    import jax

    idx = np.asarray(idx)
    return jax.tree.map(lambda a: np.asarray(a)[idx], tree)


class Methods:
    """Trains the methods of one dataset; stage-1 ERM models are shared by the methods that
    start from them (JTT's short run is its own)."""

    def __init__(self, run, dataset: str, data: Data, preset: Preset, timings: dict):
        from sbjax.models import make_model

        self.run, self.dataset, self.data, self.p = run, dataset, data, preset
        self.timings = timings
        self.model = make_model(MODELS[preset.model])
        self._erm = None

    # -- plumbing
    def cfg(self, **over):
        from sbjax.train import TrainConfig

        b = self.data.budget
        kw = {
            "optimizer": b.optimizer,
            "lr": b.lr,
            "momentum": b.momentum,
            "weight_decay": b.weight_decay,
            "batch_size": b.batch_size,
            "max_steps": b.max_steps,
            "eval_every": min(b.eval_every, over.get("max_steps", b.max_steps)),
            "stop_rule": "none",
        }
        kw.update(over)
        return TrainConfig(**kw)

    def sweep(self, method: str, cfg, train, model=None, fresh: bool = False, **kw):
        """`run_sweep` of one method; `fresh`: its own initialisation and batch order (a seed
        stream of the method's name) instead of the ERM models' (the papers train a second
        model from scratch)."""
        if fresh:
            kw["seed"] = stable_tag(NAME, "fresh", self.run.seed, method)
        return run_sweep(
            self.run,
            f"{self.dataset}_{method}",
            cfg,
            self.model if model is None else model,
            train,
            None,
            save=None,
            timings=self.timings,
            **kw,
        )

    @property
    def n_seeds(self) -> int:
        return self.run.n_seeds

    def grid_points(self, method: str, r) -> list[dict]:
        axis, hp = GRID_AXIS.get(method), grid_hparam(method)
        out = []
        for pt in r.grid_points:
            shown = (
                {} if axis is None else {axis: float(pt[hp]) + (1.0 if method == "jtt" else 0.0)}
            )
            if UNLABELED_MIX in pt and len(self.p.unlabeled_mix) > 1:
                shown[UNLABELED_MIX] = float(pt[UNLABELED_MIX])
            if CORRELATION in pt:
                shown[CORRELATION] = float(pt[CORRELATION])
            out.append(shown)
        return out

    def axis_kw(self, grid: dict | None = None) -> dict:
        """train_sweep's keywords for the --correlations axis: the (x_alt, order) view and the
        grid with "correlation" added (`grid` unchanged and no view without the axis)."""
        grid = dict(grid or {})
        if not self.p.correlations:
            return {"grid": grid} if grid else {}
        grid[CORRELATION] = list(self.p.correlations)
        return {"grid": grid, "decorrelation": self.data.decorrelation}

    def grid(self, method: str, values: Sequence[float] | None = None) -> dict[str, list]:
        """train_sweep's grid over a method's strength: {its traced hyperparameter: the preset's
        grid} (`values` instead where the traced value differs from the shown one)."""
        vals = getattr(self.p.grids, method) if values is None else values
        return {grid_hparam(method): list(vals)}

    def single(self, method: str, r, logits_fn=None) -> Trained:
        """A sweep of one member per cell (model order = cell order: seed-major, grid minor)."""
        g = len(r.grid_points)
        points = self.grid_points(method, r) if g > 1 or method in GRID_AXIS else [{}]
        return Trained(
            members=[(logits_fn or self.model.logits, r.params)],
            points=points,
            seed_index=np.asarray(r.seed_index),
            reasons=list(r.stop_reason),
        )

    def erm(self) -> Any:
        if self._erm is None:
            self._erm = self.sweep(
                "erm", self.cfg(), (self.data.x_train, self.data.y_train), **self.axis_kw()
            )
        return self._erm

    # -- methods
    def run_erm(self) -> Trained:
        r = self.erm()
        points = self.grid_points("erm", r) if self.p.correlations else [{}]
        return Trained([(self.model.logits, r.params)], points, r.seed_index, list(r.stop_reason))

    def run_ceiling(self) -> Trained:
        d = self.data
        r = self.sweep("ceiling", self.cfg(), (d.x_ceiling, d.y_train))
        t = Trained([(self.model.logits, r.params)], [{}], r.seed_index, list(r.stop_reason))
        t.train_set = (d.x_ceiling, d.y_train)
        return t

    def train(self, method: str) -> Trained:
        """`run_<method>`, or `run_penalty` for a method that has none."""
        fn = getattr(self, f"run_{method}", None)
        return fn() if fn is not None else self.run_penalty(method)

    def run_penalty(self, method: str) -> Trained:
        """One model per cell trained with the method's objective (`objectives`) over its
        strength grid (spectral decoupling; any one-model penalty method)."""
        r = self.sweep(
            method,
            self.cfg(),
            (self.data.x_train, self.data.y_train),
            objective=objectives()[method].objective,
            grid=self.grid(method),
        )
        return self.single(method, r)

    def run_group_dro(self) -> Trained:
        """Group DRO with the training rows' groups (label, S agrees): the group-labelled
        reference. At correlation 1.0 only the two agreeing groups have rows."""
        d = self.data
        r = self.sweep(
            "group_dro",
            self.cfg(),
            (d.x_train, d.y_train),
            objective=objectives()["group_dro"].objective,
            # with --correlations the program's flips define the groups
            **({} if self.p.correlations else {"groups": d.train_groups}),
            **self.axis_kw(self.grid("group_dro")),
        )
        return self.single("group_dro", r)

    def run_lff(self) -> Trained:
        """LfF: units of 2 (member 0 biased, GCE; member 1 debiased); the debiased member is
        the reported model, never selected between the two."""
        d = self.data
        r = self.sweep(
            "lff",
            self.cfg(),
            (d.x_train, d.y_train),
            objective=objectives()["lff"].objective,
            n_members=2,
            unit_size=2,
            **self.axis_kw(self.grid("lff")),
        )
        t = self._pairs("lff", r)
        t.members = t.members[1:]  # the debiased member only (reasons stay the unit's worst)
        return t

    def run_sam(self) -> Trained:
        r = self.sweep(
            "sam",
            self.cfg(sam=True),
            (self.data.x_train, self.data.y_train),
            grid=self.grid("sam"),
        )
        return self.single("sam", r)

    def run_jtt(self) -> Trained:

        d = self.data
        b = d.budget
        cs = list(self.p.correlations) or [None]
        stage1 = self.sweep(
            "jtt_stage1", self.cfg(max_steps=b.jtt_steps), (d.x_train, d.y_train), **self.axis_kw()
        )
        # error sets [S * C, N] (stage-1 model = seed * C + correlation index), each on the
        # training set as that model saw it
        errors = np.zeros((len(stage1.stop_reason), len(d.y_train)), bool)
        for j, c in enumerate(cs):
            rows = np.arange(self.n_seeds) * len(cs) + j
            x = d.x_train if c is None else flipped_train(d, c)[0]
            errors[rows] = training_errors(
                self.model.logits, take(stage1.params, rows), x, d.y_train
            )
        ups = list(self.p.grids.jtt)
        g = len(ups) * len(cs)
        # model m of the grid sweep: seed m // G, grid point (up-weight, correlation) row-major
        cells = np.arange(self.n_seeds * g)
        src = (cells // g) * len(cs) + cells % len(cs)
        r = self.sweep(
            "jtt",
            self.cfg(),
            (d.x_train, d.y_train),
            fresh=True,  # stage 2 from its own initialisation (Liu et al. retrain from scratch)
            objective=objectives()["jtt"].objective,
            example_weights=errors[src].astype(np.float32),
            **self.axis_kw(self.grid("jtt", [u - 1.0 for u in ups])),
        )
        t = self.single("jtt", r)
        t.extra["error_set_size"] = errors.sum(axis=1)[src]
        t.reasons = [
            worst_stop_reason(a, stage1.stop_reason[s]) for a, s in zip(t.reasons, src, strict=True)
        ]
        return t

    def _pairs(self, method: str, r) -> Trained:
        """A sweep of units of 2 members: model m = (seed * 2 + member) * G + g."""
        g = len(r.grid_points)
        cells = np.arange(self.n_seeds * g)
        s, gi = cells // g, cells % g
        idx = [(s * 2 + j) * g + gi for j in (0, 1)]
        members = [(self.model.logits, take(r.params, i)) for i in idx]
        reasons = [
            worst_stop_reason(r.stop_reason[a], r.stop_reason[b]) for a, b in zip(*idx, strict=True)
        ]
        return Trained(members, self.grid_points(method, r), s, reasons)

    def run_grad_diversity(self) -> Trained:
        r = self.sweep(
            "grad_diversity",
            self.cfg(),
            (self.data.x_train, self.data.y_train),
            objective=objectives()["grad_diversity"].objective,
            n_members=2,
            unit_size=2,
            grid=self.grid("grad_diversity"),
        )
        return self._pairs("grad_diversity", r)

    def run_divdis(self) -> Trained:
        d = self.data
        spec = objectives()["divdis"]
        # the other penalty, the KL to the label marginal, is held at the preset's weight
        (marginal,) = [q for q in spec.objective.penalties if q is not spec.axis]
        r = self.sweep(
            "divdis",
            self.cfg(),
            (d.x_train, d.y_train),
            objective=spec.objective,
            n_members=2,
            unit_size=2,
            unlabeled=d.x_unlabeled,
            unlabeled_batch_size=self.p.unlabeled_batch_size,
            grid={
                **self.grid("divdis"),
                marginal.hparam: [self.p.divdis_marginal],
                UNLABELED_MIX: list(self.p.unlabeled_mix),
            },
        )
        return self._pairs("divdis", r)

    def _with_erm(self, method: str, r, logits_fn, per_cell_seed) -> Trained:
        """Member 0: the ERM model of the cell's seed; member 1: the method's model."""
        erm = self.erm()
        members = [
            (self.model.logits, take(erm.params, per_cell_seed)),
            (logits_fn, r.params),
        ]
        reasons = [
            worst_stop_reason(erm.stop_reason[s], a)
            for s, a in zip(per_cell_seed, r.stop_reason, strict=True)
        ]
        return Trained(members, [], np.asarray(per_cell_seed), reasons)

    def run_dbat(self) -> Trained:
        import jax

        d = self.data
        erm = self.erm()
        g = len(self.p.grids.dbat) * len(self.p.unlabeled_mix)
        seeds = np.repeat(np.arange(self.n_seeds), g)
        frozen = jax.tree.map(lambda a: np.asarray(a)[seeds][:, None], erm.params)  # [M, 1, ...]
        r = self.sweep(
            "dbat",
            self.cfg(),
            (d.x_train, d.y_train),
            fresh=True,  # member 2 from its own initialisation and batch order
            objective=objectives()["dbat"].objective,
            unlabeled=d.x_unlabeled,
            unlabeled_batch_size=self.p.unlabeled_batch_size,
            frozen=frozen,
            grid={**self.grid("dbat"), UNLABELED_MIX: list(self.p.unlabeled_mix)},
        )
        t = self._with_erm("dbat", r, self.model.logits, seeds)
        t.points = self.grid_points("dbat", r)
        t.reported = (1,)  # the row is member 2; member 1 is the ERM model
        return t

    def run_dfr(self) -> Trained:
        """DFR: for each ERM model, a new last layer fitted from scratch by exact L2 logistic
        regression on its standardized frozen features of the S-randomized refit set, averaged
        over `dfr_subsets` group-balanced subsets (`sbjax.eval.dfr_refit`); grid: the L2."""
        import jax
        import jax.numpy as jnp

        from sbjax.eval import dfr_refit, group_balanced_subsets
        from sbjax.models.features import features_fn

        d, erm = self.data, self.erm()
        l2s = list(self.p.grids.dfr)
        cs = list(self.p.correlations) or [None]
        n_c, n_s = len(cs), self.n_seeds
        feats_of = features_fn(self.model)
        feats = jax.jit(jax.vmap(feats_of, in_axes=(0, None)))(erm.params, d.x_dfr)  # [S*C,n,h]
        subsets = jnp.asarray(
            np.stack(
                [
                    group_balanced_subsets(
                        d.dfr_groups,
                        self.p.dfr_subsets,
                        _rng(self.run.seed, "dfr", self.dataset, s),
                    )
                    for s in range(n_s)
                ]
            )
        )
        # cells (seed, strength, correlation), correlation fastest, as the other grids order them
        seed = np.repeat(np.arange(n_s), len(l2s) * n_c)
        k = np.tile(np.repeat(np.arange(len(l2s)), n_c), n_s)
        src = seed * n_c + np.tile(np.arange(n_c), n_s * len(l2s))  # the ERM model
        y = jnp.asarray(d.y_dfr, jnp.int32)
        fit = jax.jit(jax.vmap(lambda i, si, l2: dfr_refit(feats[i], y, subsets[si], l2)))(
            jnp.asarray(src), jnp.asarray(seed), jnp.asarray(np.asarray(l2s, np.float32)[k])
        )
        head = jax.tree.map(np.asarray, fit)
        points = [
            {"l2": float(v), **({} if c is None else {CORRELATION: float(c)})}
            for v in l2s
            for c in cs
        ]
        variables = {"erm": take(erm.params, src), "head": head}
        reasons = [erm.stop_reason[i] for i in src]
        t = Trained([(RefitLogits(feats_of), variables)], points, seed, reasons)
        t.extra["dfr_converged"] = head.converged.astype(np.float64)
        t.train_set = (d.x_dfr, d.y_dfr)
        return t

    def run_orthop(self) -> Trained:
        import jax

        from sbjax.models import first_layer_kernel
        from sbjax.models.projected import orthogonal_complement, with_basis
        from sbjax.train import initial_variables

        d = self.data
        erm = self.erm()
        thresholds = list(self.p.grids.orthop)
        t_n = len(thresholds)
        # directions of the learned change W - W0 (the ERM sweep's own initialisation)
        kernel = jax.vmap(first_layer_kernel(self.model))
        init = initial_variables(self.model, d.x_train, self.run.seed, range(self.n_seeds))
        delta = np.asarray(kernel(erm.params)) - np.asarray(kernel(init))
        bases, ranks = orthop_bases(delta, thresholds)
        # [S, T, D, K] -> model order (seed * T + threshold): the threshold rides on the member
        # axis, since each model needs its own U (init_variables), not a traced scalar.
        model2 = orthogonal_complement(self.model, bases.shape[-1])
        keys = jax.random.split(
            jax.random.fold_in(jax.random.key(self.run.seed), stable_tag(NAME, "orthop")),
            self.n_seeds * t_n,
        )
        init = jax.vmap(lambda k: model2.init(k, d.x_train[:1]))(keys)
        init = with_basis(init, bases.reshape((-1,) + bases.shape[2:]))
        r = self.sweep(
            "orthop",
            self.cfg(),
            (d.x_train, d.y_train),
            fresh=True,  # its own batch order (its initialisation has its own keys above)
            model=model2,
            n_members=t_n,
            init_variables=init,
        )
        seeds = np.repeat(np.arange(self.n_seeds), t_n)
        t = self._with_erm("orthop", r, model2.logits, seeds)
        t.points = [{"threshold": float(v)} for v in thresholds]
        t.extra["projection_rank"] = ranks.reshape(-1)
        t.reported = (1,)  # the row is model 2; model 1 is the ERM model
        return t


def training_errors(logits_fn, params, x, y) -> np.ndarray:
    """bool [M, N]: which training points each model misclassifies (JTT's error sets)."""
    from sbjax.eval import stacked_logits

    logits = np.asarray(stacked_logits(logits_fn, params, x))
    return logits.argmax(-1) != np.asarray(y)[None]


def orthop_bases(kernels, thresholds: Sequence[float]):
    """U [S, T, D, K] (zero columns past each rank) and ranks [S, T]: for every first-layer
    matrix [S, D, width] (OrthoP: the learned change W - W0 of each ERM model) and threshold, its
    top right singular directions (`ldsb_projection`)."""
    import jax

    from sbjax.eval import ldsb_projection

    kernels = np.asarray(kernels, np.float32)

    def one(kernel, thr):
        v, mask, r, _ = ldsb_projection(kernel, thr)
        return (v * mask[:, None]).T, r

    thr = np.asarray(thresholds, np.float32)
    u, r = jax.vmap(lambda k: jax.vmap(lambda t: one(k, t))(thr))(kernels)
    return np.asarray(u), np.asarray(r)


@dataclasses.dataclass(frozen=True)
class Strength:
    """A method's objective and the penalty its grid scales.

    objective: the `sbjax.train.objective.Objective` the method trains with. axis: the one
    `Penalty` of it whose strength (`axis.hparam`, "lambda_<name>") is the method's grid axis,
    or a `RuleAxis` naming a traced hyperparameter of its `LossRule`.
    """

    objective: Any
    axis: Any


@dataclasses.dataclass(frozen=True)
class RuleAxis:
    """The grid axis of a loss-rule method: one of its `LossRule.hparams`."""

    hparam: str


def _rule_strength(objective) -> Strength:
    """A method whose loss rule has one traced hyperparameter: that is the grid axis."""
    (hparam,) = objective.loss_rule.hparams
    return Strength(objective, RuleAxis(hparam))


def _strength(objective) -> Strength:
    """A method with one penalty: that penalty's strength is the grid axis."""
    (axis,) = objective.penalties
    return Strength(objective, axis)


@functools.cache
def objectives() -> dict[str, Strength]:
    """One `Objective` per penalty method and its grid axis (built at first use: importing JAX at
    module level would slow --help), so compiled programs are reused across datasets of the same
    shapes."""
    from sbjax.train import group_objectives as go
    from sbjax.train import objective as obj

    mi = obj.divdis_mutual_information()
    jtt = obj.jtt_objective()
    return {
        "spectral_decoupling": _strength(obj.Objective(penalties=(obj.spectral_decoupling(),))),
        "grad_diversity": _strength(obj.Objective(penalties=(obj.input_gradient_similarity(),))),
        "dbat": _strength(obj.Objective(penalties=(obj.dbat_disagreement(),))),
        "divdis": Strength(obj.Objective(penalties=(mi, obj.divdis_marginal())), mi),
        # groups (label, S agrees): sbjax.data.groups
        "group_dro": _rule_strength(go.group_dro(N_GROUPS)),
        "lff": _rule_strength(go.lff()),
        # JTT's up-weight term (the other is the plain loss at weight 1)
        "jtt": Strength(jtt, jtt.penalties[1]),
    }


def grid_hparam(method: str) -> str | None:
    """The traced hyperparameter a method's grid sweeps: its objective's `Penalty.hparam`, SAM's
    radius, or None (OrthoP: its threshold rides on the member axis; DFR: no training sweep)."""
    if method == "sam":
        return SAM_RHO
    spec = objectives().get(method)
    return None if spec is None else spec.axis.hparam


# ------------------------------------------------------------------------------------------------
# Evaluation, selection, records.


def evaluate_members(run, dataset: str, data: Data, t: Trained, correlation=None):
    """Metrics [C] of every member and of the members' mean-logit ensemble.

    Common random numbers: one evaluation key per (dataset, seed), shared by every method and
    member, so every model of a seed is scored on the same S- and S^c-randomized draws (the same
    ERM models give the same numbers in every row that contains them) and rows are paired.
    """
    from sbjax.eval import evaluate

    keys = eval_keys(run.seed, dataset, t.seed_index)
    candidates = list(t.members)
    if len(t.members) > 1:
        fns = tuple(fn for fn, _ in t.members)
        candidates.append((MeanLogits(fns), tuple(v for _, v in t.members)))
    x_tr, y_tr = t.train_set or data.training_set(correlation)
    x_sv, y_sv = data.source_val_set(correlation)
    out = []
    for fn, params in candidates:
        m, _ = evaluate_stack(fn, params, data.basis, data.test, keys)
        m = {k: m[k] for k in METRICS if k in m}

        def acc(x, y, fn=fn, params=params):
            return np.asarray(evaluate(fn, params, x, y)["accuracy"], np.float64)

        m["reversed_acc"] = acc(*data.reversed)
        m["val_acc"] = acc(data.x_val, data.y_val)
        m["source_val_acc"] = acc(x_sv, y_sv)
        m["train_acc"] = acc(x_tr, y_tr)
        m["worst_group_acc"] = worst_group_acc(fn, params, data)
        out.append({k: np.asarray(m[k], np.float64) for k in METRICS})
    return out  # members..., [ensemble]


def worst_group_acc(fn, params, data: Data) -> np.ndarray:
    """float64 [C]: the lowest accuracy over the four groups (label, S agrees) of the test set
    (S agrees on every row) joined with the reversed test set (S disagrees on every row)."""
    from sbjax.data.groups import N_SPURIOUS_GROUPS, spurious_groups
    from sbjax.eval import stacked_logits
    from sbjax.eval.groups import worst_group_accuracy

    (xt, yt), (xr, yr) = data.test, data.reversed
    pred = np.concatenate(
        [np.asarray(stacked_logits(fn, params, x)).argmax(-1) for x in (xt, xr)], axis=1
    )
    y = np.concatenate([yt, yr])
    agrees = np.concatenate([np.ones(len(yt), bool), np.zeros(len(yr), bool)])
    return worst_group_accuracy(pred, y, spurious_groups(y, agrees), N_SPURIOUS_GROUPS)


def select(
    per_member: list[dict],
    members: Sequence[int],
    failed: np.ndarray,
    by: str = "val_acc",
) -> tuple[np.ndarray, dict]:
    """The reported member of every cell among `members` (highest `by`; first on ties) and its
    metrics [C] (NaN where the cell failed)."""
    members = list(members)
    val = np.stack([per_member[j][by] for j in members])  # [J, C]
    pick = np.argmax(val, axis=0)
    cols = np.arange(val.shape[1])
    chosen = {k: np.stack([per_member[j][k] for j in members])[pick, cols] for k in METRICS}
    chosen = {k: np.where(failed, np.nan, v) for k, v in chosen.items()}
    return np.asarray(members)[pick], chosen


def grid_scores(chosen: dict, by: str, n_seeds: int, g: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_used int [G], mean float [G]): each grid point's usable seeds and its mean `by` over
    them (-1 where none is used)."""
    val = chosen[by].reshape(n_seeds, g)
    n_used = np.isfinite(val).sum(axis=0)
    means = [np.nanmean(val[:, j]) if n_used[j] else -1.0 for j in range(g)]
    return n_used, np.asarray(means)


def best_grid_point(n_used: np.ndarray, means: np.ndarray) -> int:
    """The selected grid point: among the points with the most usable seeds, the highest mean
    (first on ties), so a strength at which most seeds failed is never chosen on the few left."""
    full = n_used == n_used.max()
    return int(np.argmax(np.where(full, means, -np.inf)))


def at_grid_edge(method: str, points: list[dict], best: int, scores=None) -> bool | None:
    """Whether the chosen strength is the smallest or largest of the method's grid: a winner at an
    edge says the grid may be too short. None for a method without a grid, and where every grid
    point has the same selection score (`scores` [G]): no strength wins, the first is taken."""
    axis = GRID_AXIS.get(method)
    values = sorted({pt[axis] for pt in points if axis in pt})
    if axis is None or axis not in points[best] or len(values) < 2:
        return None
    if scores is not None and np.ptp(np.asarray(scores, np.float64)) == 0.0:
        return None
    return points[best][axis] in (values[0], values[-1])


def cell_failures(per_member: list[dict], t: Trained) -> np.ndarray:
    """bool [C]: a cell fails when a member diverged or has a non-finite metric."""
    failed = np.asarray([r == "diverged" for r in t.reasons])
    finite = np.all(
        [np.isfinite(pm[k]) for pm in per_member[: len(t.members)] for k in METRICS], axis=0
    )
    return failed | ~finite


def record(
    run,
    dataset: str,
    method: str,
    data: Data,
    t: Trained,
    model_name: str,
    correlation: float | None = None,
    selections: Sequence[str] = SELECTIONS,
) -> list[dict]:
    """Evaluates once, then per selection rule selects the member and grid point and adds a
    record (with --correlations: of one correlation's cells, selected within them)."""
    per_member = evaluate_members(run, dataset, data, t, correlation)
    failed = cell_failures(per_member, t)
    return [
        _record(run, dataset, method, data, t, model_name, correlation, sel, per_member, failed)
        for sel in selections
    ]


def _settings(method, data, t, correlation, selection, best, cols, choice) -> dict:
    """A record's fields besides its metrics."""
    # the part names the row in logs and the closing table (two rows per method: one per rule)
    part = method if selection == "target_val" else f"{method}, {selection}"
    settings: dict[str, Any] = {"method": method, "part": part, "selection": selection}
    if method in EXPECT:
        settings["expect"] = EXPECT[method]
    settings["hparams"] = t.points[best] if t.points else {}
    settings["selection_rule"] = SELECTION_RULE[selection]
    if correlation is not None:
        from sbjax.data.groups import group_sizes, spurious_groups

        settings[CORRELATION] = float(correlation)
        agrees = flipped_train(data, correlation)[1]
        settings["group_sizes"] = group_sizes(spurious_groups(data.y_train, agrees))
    elif data.train_groups is not None:
        from sbjax.data.groups import group_sizes

        settings["group_sizes"] = group_sizes(data.train_groups)
    if len(t.members) > 1:
        settings["selected_member"] = [int(choice[c]) for c in cols]
    for name, arr in t.extra.items():
        settings[name] = [float(v) for v in np.asarray(arr)[cols]]
    return settings


def _record(run, dataset, method, data, t, model_name, correlation, selection, per_member, failed):
    by = SELECTION_METRIC[selection]
    n_m, g = len(t.members), max(len(t.points), 1)
    choice, chosen = select(per_member, t.reported or range(n_m), failed, by)
    n_used, scores = grid_scores(chosen, by, run.n_seeds, g)
    best = best_grid_point(n_used, scores)
    cols = np.arange(run.n_seeds) * g + best
    # Fixed budgets (no stop rule): a model is used unless it diverged; non-finite metrics (NaN
    # here) are marked and excluded by add_result.
    status = [SEED_DIVERGED if t.reasons[c] == "diverged" else SEED_OK for c in cols]
    metrics = {k: chosen[k][cols] for k in METRICS}
    settings = _settings(method, data, t, correlation, selection, best, cols, choice)
    settings["at_grid_edge"] = at_grid_edge(method, t.points, best, scores) if t.points else None
    yt = np.asarray(data.test[1])
    smallest_group = yt[yt == np.argmin(np.bincount(yt, minlength=2))]  # a worst group's size
    test_sizes = metric_test_sizes(
        metrics,
        yt,
        other_sets={
            "val_acc": data.y_val,
            "source_val_acc": data.source_val[1],
            "worst_group_acc": smallest_group,
        },
    )
    rec = run.add_result(
        dataset=dataset,
        model=model_name,
        metrics=metrics,
        status=status,
        test_size=test_sizes,
        **settings,
    )
    used = used_mask(rec)
    if n_m > 1:
        names = [f"member_{j}" for j in range(n_m)] + ["ensemble"]
        rec["members"] = {
            nm: {k: stats(np.where(used, pm[k][cols], np.nan), used) for k in METRICS}
            for nm, pm in zip(names, per_member, strict=True)
        }
    if t.reported is not None and n_m > 1:  # beside the row: the best member, ERM allowed
        any_choice, any_chosen = select(per_member, range(n_m), failed, by)
        rec["best_member_erm_allowed"] = {
            "metrics": {
                k: stats(np.where(used, any_chosen[k][cols], np.nan), used) for k in METRICS
            },
            "erm_wins": int(np.sum((any_choice[cols] == 0) & used)),
            "n": int(used.sum()),
        }
    rec["grid"] = []
    for j in range(g):
        c = np.arange(run.n_seeds) * g + j
        ok = ~failed[c]
        rec["grid"].append(
            {
                "point": t.points[j] if t.points else {},
                "n_used": int(ok.sum()),
                **{
                    k: (float(np.mean(chosen[k][c][ok])) if ok.any() else None)
                    for k in (by, "test_acc", "s_rand_acc", "sc_rand_acc", "train_acc")
                },
            }
        )
    return rec


def paired_difference(rec: dict, ref: dict, metric: str) -> dict:
    """`rec` minus `ref` on one metric, paired over seeds (the same seed: same data and
    evaluation keys): {mean, ci95 (95 % t-interval), n, n_excluded (seeds where either failed)}."""
    a, b = used_values(rec, metric), used_values(ref, metric)
    d = a - b if a.shape == b.shape else np.full(1, np.nan)
    return {**t_interval(d), "n_excluded": int(np.sum(~np.isfinite(d)))}


def same_row(a: dict, b: dict) -> bool:
    """Two records of the same dataset, correlation and selection rule (comparable rows)."""
    return all(a.get(k) == b.get(k) for k in ("dataset", CORRELATION, "selection"))


def finish_dataset(recs: list[dict], budget: Budget) -> None:
    """Adds to every record of one dataset: `ceiling_reached` (the ceiling row's mean
    S-randomized accuracy >= the recipe's `ceiling_min`; None without a ceiling row), `fits`
    (mean training accuracy >= the recipe's `fit_min`), `report` ("ok", the record's failure
    status, "n/a: ceiling not reached" or "did not fit": only "ok" rows are numbers in a table)
    and `delta_vs_erm` (paired per-seed differences from the ERM row of the same correlation and
    selection, 95 % t-interval)."""
    ceil = [r for r in recs if r["method"] == "ceiling" and r["metrics"]["s_rand_acc"]["mean"]]
    ceiling_acc = ceil[0]["metrics"]["s_rand_acc"]["mean"] if ceil else None
    reached = None if ceiling_acc is None else bool(ceiling_acc >= budget.ceiling_min)
    for r in recs:
        train = r["metrics"]["train_acc"]["mean"]
        r["ceiling_s_rand_acc"], r["ceiling_reached"] = ceiling_acc, reached
        r["fits"] = None if train is None else bool(train >= budget.fit_min)
        if r.get("status"):  # e.g. "all models failed": no number at all
            r["report"] = r["status"]
        elif reached is False and r["method"] != "ceiling":
            r["report"] = "n/a: ceiling not reached"
        elif r["fits"] is False:
            r["report"] = "did not fit"
        else:
            r["report"] = "ok"
        erm = [e for e in recs if e["method"] == "erm" and same_row(e, r)]
        if r["method"] == "erm" or not erm:
            continue
        r["delta_vs_erm"] = {
            k: {
                **paired_difference(r, erm[0], k),
                "sampling_se": r["metrics"][k].get("sampling_se"),
            }
            for k in DELTA_METRICS
        }


EXPECT = {
    "erm": "relies on S: S-rand acc ~0.5",
    "ceiling": "S^c alone: S-rand acc ~ test acc",
}


def figures(run, results: list[dict]) -> None:
    """The heat-map of S-randomized accuracy and the S- vs S^c-randomized panels (with
    --correlations: at the highest correlation), and the metrics against the correlation."""
    delta_figures(run, results)
    # the rows a reader compares: target-label selection, reported (no "did not fit" numbers)
    results = [
        r
        for r in results
        if r.get("selection", "target_val") == "target_val" and r.get("report", "ok") == "ok"
    ]
    cs = sorted({r[CORRELATION] for r in results if r.get(CORRELATION) is not None})
    if len(cs) > 1:  # the --correlations axis (a fixed --correlation is one point: no curve)
        correlation_figures(run, results, cs)
        results = [r for r in results if r.get(CORRELATION) in (None, cs[-1])]
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in results)]
    methods = [m for m in METHODS if any(r["method"] == m for r in results)]

    def mean(ds, m, k):
        for r in results:
            if r["dataset"] == ds and r["method"] == m:
                st = r["metrics"][k]
                return st["mean"], st["std"]
        return None, None

    grid = [[mean(ds, m, "s_rand_acc")[0] for ds in datasets] for m in methods]
    if all(v is None for row in grid for v in row):  # every model failed: nothing to draw
        log.warning("no method has a usable model on any dataset: no figures drawn")
        return
    run.figure(
        "mitigation_s_rand_heatmap.png",
        "mitigation_heatmap",
        values=[[np.nan if v is None else v for v in row] for row in grid],
        methods=methods,
        datasets=datasets,
        metric="s_rand_acc",
    )
    for ds in datasets:
        pts = {}
        for m in methods:
            (sx, sxe), (sy, sye) = mean(ds, m, "s_rand_acc"), mean(ds, m, "sc_rand_acc")
            if sx is not None and sy is not None:
                pts[m] = [sx, sxe or 0.0, sy, sye or 0.0]
        if not pts:
            log.warning("%s: no method has a usable model: no S vs S^c figure", ds)
            continue
        run.figure(f"mitigation_s_vs_sc_{ds}.png", "mitigation_s_vs_sc", points=pts, dataset=ds)


def delta_figures(run, results: list[dict]) -> None:
    """Per dataset (at the highest correlation): every method's `delta_vs_erm` on S-randomized
    accuracy under each selection rule (`mitigation_delta_<dataset>.png`)."""
    cs = [r.get(CORRELATION) for r in results if r.get(CORRELATION) is not None]
    top = max(cs) if cs else None
    for ds in [d for d in DATASETS if any(r["dataset"] == d for r in results)]:
        rows = []
        for r in results:
            if r["dataset"] != ds or "delta_vs_erm" not in r:
                continue
            if r.get(CORRELATION) not in (None, top):
                continue
            d = r["delta_vs_erm"]["s_rand_acc"]
            lo, hi = d.get("ci95") or (None, None)
            rows.append(
                {
                    "method": r["method"],
                    "selection": r.get("selection", "target_val"),
                    "report": r.get("report", "ok"),
                    "mean": d["mean"],
                    "lo": lo,
                    "hi": hi,
                }
            )
        if rows:
            run.figure(f"mitigation_delta_{ds}.png", "mitigation_delta", rows=rows, dataset=ds)


CURVE_METRICS = ("s_rand_acc", "worst_group_acc")


def used_values(rec: dict, metric: str) -> np.ndarray:
    """float [n_seeds]: a record's per-seed values, NaN for the seeds it excluded (failed)."""
    v = np.asarray(rec["metrics"][metric]["per_seed"], np.float64)
    return np.where(used_mask(rec), v, np.nan)


def correlation_figures(run, results: list[dict], cs: list[float]) -> None:
    """Per dataset: S-randomized and worst-group accuracy against the correlation, per method."""
    for ds in [d for d in DATASETS if any(r["dataset"] == d for r in results)]:
        curves: dict = {k: {} for k in CURVE_METRICS}
        for m in METHODS:
            recs = {
                r.get(CORRELATION): r for r in results if r["dataset"] == ds and r["method"] == m
            }
            if not recs:
                continue
            for k in CURVE_METRICS:
                rows = []
                for c in cs:
                    r = recs.get(c, recs.get(None))  # the ceiling: one record for every c
                    ci = t_interval(used_values(r, k)) if r else {"mean": None}
                    lo_hi = ci.get("ci95") or [ci["mean"], ci["mean"]]
                    rows.append(None if ci["mean"] is None else [ci["mean"], *lo_hi])
                curves[k][m] = rows
        run.figure(
            f"mitigation_vs_correlation_{ds}.png",
            "mitigation_vs_correlation",
            curves=curves,
            correlations=cs,
            dataset=ds,
        )


def versus_reference(results: list[dict], reference: str = "group_dro") -> list[dict]:
    """Each method minus the reference (Group DRO) per dataset and correlation, paired over
    seeds (the same seed: same data, flips, initialisation and batch order): the mean and 95 %
    t-interval of the per-seed differences, for every curve metric. Seeds where either model
    failed are left out and counted."""
    out = []
    for ref in [r for r in results if r["method"] == reference]:
        for r in results:
            if not same_row(r, ref) or r["method"] == reference:
                continue
            row = {
                "dataset": r["dataset"],
                CORRELATION: r.get(CORRELATION),
                "selection": r.get("selection"),
                "method": r["method"],
                "report": r.get("report"),  # "did not fit" rows are not comparisons to quote
            }
            for k in CURVE_METRICS:
                row[k] = paired_difference(r, ref, k)
            out.append(row)
    return out


def add_options(parser) -> None:
    parser.add_argument(
        "--methods", default=None, help="comma-separated subset of " + ", ".join(METHODS)
    )
    parser.add_argument(
        "--datasets", default=None, help="comma-separated subset of " + ", ".join(DATASETS)
    )
    parser.add_argument(
        "--correlation",
        type=float,
        default=None,
        help="fraction of training points whose S agrees with the label (default: the "
        "preset's 1.0, as the paper; follow-up work uses 0.95)",
    )
    parser.add_argument(
        "--correlations",
        default=None,
        help="comma-separated correlations as a traced axis inside each method's sweep, e.g. "
        "1.0,0.99,0.95,0.9 (one record per correlation; methods: "
        + ", ".join(CORRELATION_METHODS)
        + ")",
    )


def apply_options(ctx: Context) -> Preset:
    """--methods, --datasets (kept in canonical order) and --correlation applied to the preset."""
    args, over = ctx.args, {}
    for opt, allowed in (("methods", METHODS), ("datasets", DATASETS)):
        text = getattr(args, opt)
        if text is not None:
            names = tuple(v.strip() for v in text.split(",") if v.strip())
            check_names(opt, list(names), allowed)
            over[opt] = tuple(v for v in allowed if v in names)
    if args.correlation is not None:
        over["correlation"] = float(args.correlation)
    if args.correlations is not None:
        try:
            over["correlations"] = tuple(
                float(v) for v in args.correlations.split(",") if v.strip()
            )
        except ValueError:
            fail("--correlations", args.correlations, "comma-separated numbers, e.g. 1.0,0.95")
    return dataclasses.replace(ctx.preset, **over)


def run_methods(ctx: Context) -> None:
    """Every dataset x method: train, select, record; then the figures and summary extras."""
    run, preset = ctx.run, ctx.preset
    timings: dict = {}
    data_info = {}
    for ds in preset.datasets:
        if ds == "mnist_cifar":
            from sbjax.data.sources import DataNotFoundError

            try:
                data = mnist_cifar_data(preset, run.seed)
            except DataNotFoundError as e:
                log.warning("mnist_cifar skipped: %s", str(e).splitlines()[0])
                data_info[ds] = {"skipped": str(e).splitlines()[0]}
                continue
        else:
            data = synthetic_data(ds, preset, run.seed)
        data_info[ds] = data.info
        log.info("%s: %s", ds, data.info)
        methods = Methods(run, ds, data, preset, timings)
        recs = []
        for m in preset.methods:
            trained = methods.train(m)
            sel = preset.selections
            if preset.correlations and m != "ceiling":  # one record per correlation
                for c in preset.correlations:
                    sub = trained.at_correlation(float(c))
                    recs += record(run, ds, m, data, sub, preset.model, c, sel)
            else:
                for rec in record(run, ds, m, data, trained, preset.model, selections=sel):
                    if not preset.correlations:  # the fixed --correlation (ceiling: none)
                        rec[CORRELATION] = float(preset.correlation)
                    recs.append(rec)
        finish_dataset(recs, data.budget)
    if run.results:
        figures(run, run.results)
        if "group_dro" in preset.methods:
            ctx.extra["versus_group_dro"] = versus_reference(run.results)
    ctx.extra.update(
        timings=timings,
        data=data_info,
        correlation=preset.correlation,
        correlations=list(preset.correlations),
    )


EXPERIMENT = Experiment(
    NAME,
    __doc__,
    PRESETS,
    preset_help=PRESET_HELP,
    options=add_options,
    prepare=apply_options,
    check=check_preset,
    body=run_methods,
)
main = EXPERIMENT.main


if __name__ == "__main__":
    main()
