"""Diagnostics beyond the paper (issue 14; BEYOND.md Sec. 1.1, 1.2, 1.6 and margins along subspaces).

The paper's randomized metrics say what the logits depend on. These parts ask more, on LMS-5,
MS-(5,7) and MNIST-CIFAR (the real subset), every diagnostic one compiled call over the stacked
models of a sweep:

* ``probe`` -- learned but unused? (`sbjax.eval.last_layer_probe`, Kirichenko et al. 2023): freeze
  each model's penultimate features, refit a linear head on S-randomized data (a FRESH sample of
  the dataset, not the model's training set; MNIST-CIFAR's subset has no spare images, so its
  probe is fitted on the training images) and score it on S-randomized test data
  (`probe_s_rand_acc` / `_auc`: high = S^c is encoded; chance = not learned), and the probe for S
  alone (`probe_sc_rand_*`). `head_*` is the model's own head on the same sets.
* ``ldsb`` -- low-dimensional SB (`sbjax.eval.ldsb_report`, Morwani et al. 2023): the rank r of
  the first layer at 90 % explained squared singular values, prediction changes when the P_perp
  / P component of x is swapped with another input's, overlap of span(P) with S; the same at
  r = 1 (`ldsb_r1_*`), since r at 0.9 is several directions for trained FCNs. FCN family only.
* ``timeline`` -- when is each feature learned? The training sweep records, at every evaluation
  period and inside the compiled program (`train_sweep(monitor=...)`), the accuracy on a fixed
  test subset and on its S-randomized and S^c-randomized copies. Metrics: reliance on S / S^c
  (test accuracy - randomized accuracy) at the end and at its maximum, the first update at which
  each reaches 0.25 (dropped from a record when a seed never gets there; `never_reached` counts
  them), and `sc_picked_then_dropped` (reliance on S^c once >= 0.1, at the end < 0.05).
* ``margin`` -- margins along subspaces (`sbjax.eval.subspace_margins`): the smallest L2 flip
  restricted to span(S) and to span(S^c), median over test points, censored at max_radius =
  sqrt(D) (a point with no flip within it counts as max_radius; `flipped_frac_*` says how many
  flipped), and their ratio (a lower bound where S^c is censored).
* ``phase`` -- the shortcut phase diagram (`sbjax.train.phase`): noisy LMS-k with the noise p on
  S (predictivity; sign flips), the linear margin of S (availability) and the slab count k of
  S^c (3, 5, 7), sampled inside one `jit(vmap)` program over cells x seeds; S- / S^c-randomized
  accuracy per cell and, per (margin, k), the first p where reliance on S^c exceeds reliance on
  S by more than 0.05; compared with the LSN crossover of theory/ (SB breaks for linear margin
  <= 0.25).

Controls (records whose ``model`` ends in ``_s_removed`` / ``_abandoned`` / ``_init``): the same
architecture trained with S randomized in its training set (S carries no label information, so
the model must learn S^c: its probe should be near 1); learned-then-abandoned, the S-removed
models trained further on the full data for `abandon_steps` updates (S^c is encoded at the start,
so the probe is calibrated on a feature that is learned but may become unused); and at its random
initialisation (the initial parameters of the main models; no timeline). The probe, LD-SB and
margins are measured on the same clean test and probe sets for all of them.

Records: ``experiment`` "diagnostics", ``dataset`` (lms5, ms57, mnist_cifar_a, noisy_lms for the
phase diagram), ``model``, ``part`` (probe, ldsb, timeline, margin, phase), ``metrics``
{name: {mean, std, per_seed, ...}}; phase records carry ``p``, ``margin``, ``k``. Seeds whose
model diverged are excluded and counted; models that hit their budget are used (counted as
unconverged): the diagnostics describe whatever the recipe trained.

Figures (kinds of `sbjax.plots.diagnostics`, redrawn by ``python -m sbjax.plots RUN_DIR``):
``timeline_<dataset>.png``, ``phase_diagram.png``, ``probe_bars.png``.

    python -m experiments.diagnostics --preset quick --out runs/diagnostics
    python -m experiments.diagnostics --preset quick --parts phase --set phase.n_seeds=3 --out DIR
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments.common import Context, Experiment, run_sweep
from experiments.evaluation import eval_key, eval_keys
from experiments.synthetic import (
    MODELS,
    NB01,
    NB03_MS7,
    Recipe,
    check_names,
    check_positive_int,
    check_recipe,
    class_sizes,
    make_data,
    stable_tag,
    train_config,
)
from sbjax.validate import check_range, fail

NAME = "diagnostics"
PARTS = ("probe", "ldsb", "timeline", "margin", "phase")
DATASETS = ("lms5", "ms57", "mnist_cifar")
LDSB_MODELS = ("fcn", "linear")  # families with one dense first layer
MNIST_CIFAR_MODELS = {
    "fcn_100x1": {"name": "fcn", "width": 100, "depth": 1},
    "small_cnn_16": {"name": "small_cnn", "filters": 16, "bn_unbiased": True},
}
RELIANCE_LEARNED = 0.25  # reliance (test - randomized accuracy) that counts as "feature used"
PHASE_MIN_GAP = 0.05  # S^c "wins" a phase cell when its reliance exceeds S's by more than this
LEARNABLE_ACC = 0.9  # clean test accuracy at the largest p that counts as "S^c learned"
log = logging.getLogger(f"sbjax.experiments.{NAME}")

# theory/README.md, grid G5 (LSN, one-hidden-layer ReLU net of Theorem 1): SB holds for linear
# margin gamma >= 0.35 and breaks for gamma <= 0.25 (d = 64 / 128).
THEORY_LSN = {
    "source": "theory/README.md, G5 (LSN, Theorem 1's network)",
    "sb_holds_from_margin": 0.35,
    "sb_breaks_up_to_margin": 0.25,
}


@dataclasses.dataclass(frozen=True)
class Study:
    """One dataset's models and recipes.

    Attributes:
      models: architectures (names of `experiments.synthetic.MODELS`, or of
        `MNIST_CIFAR_MODELS` for mnist_cifar).
      n_train, n_test: training / test points (mnist_cifar: None = everything the source gives).
      n_probe: fresh probe training points (synthetic data; mnist_cifar uses its training set).
      train: recipe of the main models (max_steps, eval_every and patience required).
      s_removed_train: recipe of the S-removed control (same fields required).
      s_removed_n_train: the control's training points (None: n_train).
      n_monitor: test points of the timeline's monitor sets.
      n_margin: test points whose subspace margins are searched.
      abandon_steps: fixed budget (no stop rule) of the `_abandoned` control on the full data:
        its S-removed start already fits the data through S^c, so a stop rule would end it at
        once; a fixed budget lets the loss keep pulling it towards S.
    """

    models: tuple[str, ...]
    n_train: int | None
    n_test: int | None
    n_probe: int
    train: Recipe
    s_removed_train: Recipe
    s_removed_n_train: int | None = None
    n_monitor: int = 1000
    n_margin: int = 500
    abandon_steps: int = 5000


@dataclasses.dataclass(frozen=True)
class Phase:
    """The phase diagram: grid axes, data sizes and the recipe (fixed budget, no stop rule)."""

    p: tuple[float, ...]
    margin: tuple[float, ...]
    k: tuple[int, ...]
    n_seeds: int
    n_train: int
    n_test: int
    train: Recipe


@dataclasses.dataclass(frozen=True)
class Preset:
    """diagnostics preset.

    Attributes:
      n_seeds: seeds of every study sweep (the phase diagram has its own).
      d: input dimension of the synthetic datasets.
      studies: {dataset: Study} (a subset of lms5, ms57, mnist_cifar).
      phase: the phase diagram.
      mnist_cifar_source: `load_mnist_cifar` source ("subset": the real subset in
        ../shared/data or $SBJAX_MNIST_CIFAR_SUBSET).
      ldsb_threshold: explained squared-singular-value share fixing the LD-SB rank.
      probe_batch: rows per feature pass of the probe (memory).
    """

    n_seeds: int
    d: int
    studies: dict
    phase: Phase
    mnist_cifar_source: str = "subset"
    ldsb_threshold: float = 0.9
    probe_batch: int = 4096


_MC_RECIPE = Recipe(
    optimizer="sgd",
    lr=0.05,
    momentum=0.0,
    weight_decay=5e-5,
    batch_size=64,
    stop_rule="loss",
    stop_eps=0.01,
    patience=1,
)
# Phase diagram: a fixed budget for every cell (no stop rule: noisy cells never reach 100 %),
# momentum 0.9 so that slab features can be learned within it (nb01's plain SGD needs ~10x the
# updates on 5-/7-slabs).
_PHASE_RECIPE = Recipe(
    optimizer="sgd",
    lr=0.1,
    momentum=0.9,
    weight_decay=5e-5,
    batch_size=256,
    stop_rule="acc",
    stop_eps=1e-4,
    max_steps=4000,
    eval_every=500,
)

PRESETS: dict[str, Preset] = {
    # Plumbing only: tiny sizes, one dataset, a 2 x 1 x 1 phase grid.
    "smoke": Preset(
        n_seeds=2,
        d=20,
        studies={
            "lms5": Study(
                models=("fcn_100x1",),
                n_train=1000,
                n_test=400,
                n_probe=600,
                train=NB01.replace(max_steps=300, eval_every=100, patience=1),
                s_removed_train=NB01.replace(max_steps=300, eval_every=100, patience=1),
                n_monitor=200,
                n_margin=50,
                abandon_steps=300,
            ),
        },
        phase=Phase(
            p=(0.0, 0.5),
            margin=(0.3,),
            k=(3,),
            n_seeds=1,
            n_train=1000,
            n_test=400,
            train=_PHASE_RECIPE.replace(max_steps=300, eval_every=100, batch_size=128),
        ),
    ),
    # CPU minutes: 20k points, 3 seeds, (100,1)-FCNs on all three datasets; nb01 on LMS-5 and
    # MS-(5,7) (extreme_sb's quick budgets), nb03's MS-7 recipe for the MS-(5,7) control; the
    # phase diagram 6 p x 5 margins x 3 k x 2 seeds = 180 models in one program.
    "quick": Preset(
        n_seeds=3,
        d=50,
        studies={
            "lms5": Study(
                models=("fcn_100x1",),
                n_train=20000,
                n_test=5000,
                n_probe=10000,
                train=NB01.replace(max_steps=10000, eval_every=20, patience=1),
                s_removed_train=NB01.replace(max_steps=40000, eval_every=500, patience=1),
            ),
            "ms57": Study(
                models=("fcn_100x1",),
                n_train=20000,
                n_test=5000,
                n_probe=10000,
                train=NB01.replace(max_steps=30000, eval_every=250, patience=1000),
                s_removed_train=NB03_MS7.replace(max_steps=30000, eval_every=500),
                s_removed_n_train=40000,
            ),
            "mnist_cifar": Study(
                models=("fcn_100x1",),
                n_train=None,
                n_test=None,
                n_probe=0,
                train=_MC_RECIPE.replace(max_steps=2000, eval_every=5),
                s_removed_train=_MC_RECIPE.replace(max_steps=2000, eval_every=100),
                n_monitor=1000,
                n_margin=100,
                abandon_steps=2000,
            ),
        },
        phase=Phase(
            p=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5),
            margin=(0.0, 0.1, 0.2, 0.3, 0.5),
            k=(3, 5, 7),
            n_seeds=2,
            n_train=10000,
            n_test=2000,
            train=_PHASE_RECIPE,
        ),
    ),
    # Larger: 5 seeds, 100k points, the 1-D CNN on LMS-5 and the small CNN on MNIST-CIFAR too,
    # a finer phase grid with 3 seeds and twice the budget (GPU / TPU).
    "paper": Preset(
        n_seeds=5,
        d=50,
        studies={
            "lms5": Study(
                models=("fcn_100x1", "cnn1d_32x7x1"),
                n_train=100000,
                n_test=10000,
                n_probe=20000,
                train=NB01.replace(max_steps=100000, eval_every=250, patience=1),
                s_removed_train=NB01.replace(max_steps=200000, eval_every=1000, patience=1),
                n_monitor=2000,
                n_margin=1000,
            ),
            "ms57": Study(
                models=("fcn_100x1",),
                n_train=100000,
                n_test=10000,
                n_probe=20000,
                train=NB01.replace(max_steps=200000, eval_every=1000, patience=1000),
                s_removed_train=NB03_MS7.replace(max_steps=200000),
                n_monitor=2000,
                n_margin=1000,
            ),
            "mnist_cifar": Study(
                models=("fcn_100x1", "small_cnn_16"),
                n_train=None,
                n_test=None,
                n_probe=0,
                train=_MC_RECIPE.replace(max_steps=5000, eval_every=50),
                s_removed_train=_MC_RECIPE.replace(max_steps=5000, eval_every=100),
                n_monitor=2000,
                n_margin=200,
            ),
        },
        phase=Phase(
            p=(0.0, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5),
            margin=(0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8),
            k=(3, 5, 7),
            n_seeds=3,
            n_train=20000,
            n_test=5000,
            train=_PHASE_RECIPE.replace(max_steps=8000),
        ),
    ),
}

# The quick studies with 5 seeds, and the phase diagram with 5 seeds per cell and a p grid refined
# where quick's crossovers sit (0.05 for 3-slabs, 0.1 for 5-slabs): the intervals README's
# diagnostic claims rest on.
PRESETS["standard"] = dataclasses.replace(
    PRESETS["quick"],
    n_seeds=5,
    phase=dataclasses.replace(
        PRESETS["quick"].phase,
        p=(0.0, 0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.5),
        n_seeds=5,
    ),
)

PRESET_HELP = {
    "smoke": "seconds: LMS-5 only, one (100,1)-FCN, 1k points, 2 seeds, a 2-cell phase grid",
    "quick": "CPU minutes: (100,1)-FCNs on LMS-5, MS-(5,7), MNIST-CIFAR (subset); 3 seeds; "
    "phase diagram 6 p x 5 margins x 3 k x 2 seeds in one program",
    "standard": "the quick studies with 5 seeds; phase diagram 9 p (refined near the "
    "crossovers) x 5 margins x 3 k x 5 seeds (CPU, about half an hour)",
    "paper": "100k points, 5 seeds, also the 1-D CNN on LMS-5 and the small CNN on MNIST-CIFAR, "
    "an 11 x 8 x 3 phase grid (GPU/TPU)",
}


def check_preset(p: Preset) -> None:
    """Validates a preset after --set overrides, before any work (errors name the key)."""
    check_positive_int("n_seeds", p.n_seeds)
    check_positive_int("d", p.d, 2)
    if not isinstance(p.studies, Mapping):
        fail("studies", p.studies, "a {dataset: Study} map")
    check_names("studies", list(p.studies), DATASETS)
    for ds, st in p.studies.items():
        allowed = MNIST_CIFAR_MODELS if ds == "mnist_cifar" else MODELS
        check_names(f"studies.{ds}.models", list(st.models), allowed)
        for f in ("n_train", "n_test"):
            v = getattr(st, f)
            if v is not None or ds != "mnist_cifar":
                check_positive_int(f"studies.{ds}.{f}", v, 2)
        if ds != "mnist_cifar":
            check_positive_int(f"studies.{ds}.n_probe", st.n_probe, 10)
        check_positive_int(f"studies.{ds}.n_monitor", st.n_monitor)
        check_positive_int(f"studies.{ds}.n_margin", st.n_margin)
        check_positive_int(f"studies.{ds}.abandon_steps", st.abandon_steps)
        need = ("max_steps", "eval_every", "patience")
        check_recipe(f"studies.{ds}.train", st.train, need=need)
        check_recipe(f"studies.{ds}.s_removed_train", st.s_removed_train, need=need)
        if st.s_removed_n_train is not None:
            check_positive_int(f"studies.{ds}.s_removed_n_train", st.s_removed_n_train, 2)
    ph = p.phase
    for name, vals, hi, hi_open in (("p", ph.p, 1.0, False), ("margin", ph.margin, 1.0, True)):
        if isinstance(vals, str) or not isinstance(vals, Sequence) or not vals:
            fail(f"phase.{name}", vals, "a non-empty list of numbers")
        for v in vals:
            check_range(f"phase.{name}", v, 0.0, hi, hi_open=hi_open)
    if isinstance(ph.k, str) or not isinstance(ph.k, Sequence) or not ph.k:
        fail("phase.k", ph.k, "a non-empty list of odd slab counts >= 3")
    for k in ph.k:
        if isinstance(k, bool) or not isinstance(k, int) or k < 3 or k % 2 == 0:
            fail("phase.k", ph.k, "odd slab counts >= 3")
    check_positive_int("phase.n_seeds", ph.n_seeds)
    check_positive_int("phase.n_train", ph.n_train, 2)
    check_positive_int("phase.n_test", ph.n_test, 2)
    check_recipe("phase.train", ph.train, need=("max_steps", "eval_every"))
    check_range("ldsb_threshold", p.ldsb_threshold, 0.0, 1.0, lo_open=True)
    check_positive_int("probe_batch", p.probe_batch)


# ------------------------------------------------------------------------------------------------
# Data of one study: train / test / probe sets, the basis (rotation, S, S^c) and monitor sets.


@dataclasses.dataclass
class StudyData:
    dataset: str  # record name
    basis: Any  # a Dataset or a Basis
    dim: int
    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    probe: tuple[np.ndarray, np.ndarray]
    s_removed_train: tuple[np.ndarray, np.ndarray]
    monitor: dict[str, tuple[np.ndarray, np.ndarray]]
    note: str = ""


def _randomize(key, x, coords, basis) -> np.ndarray:
    from sbjax.eval import randomize as R

    b = R.as_basis(basis)
    return np.asarray(R.randomize_block(key, x, coords, b.rotation))


def _monitor_sets(run, name, test, basis, n) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The timeline's fixed sets: a test subset and its S- / S^c-randomized copies."""
    from sbjax.eval import randomize as R

    b = R.as_basis(basis)
    x, y = test[0][:n], test[1][:n]
    k = eval_key(run.seed, "monitor", name)
    return {
        "test": (x, y),
        "s_rand": (_randomize(_fold(k, 0), x, b.simple_coords, basis), y),
        "sc_rand": (_randomize(_fold(k, 1), x, b.complex_coords, basis), y),
    }


def _fold(key, i):
    import jax

    return jax.random.fold_in(key, i)


def _synthetic_data(run, p: Preset, name: str, st: Study) -> StudyData:
    import jax

    ds, train, test = make_data(name, p.d, st.n_train, st.n_test, run.seed)
    # The probe's own fresh sample (the "train the probe on a fresh sample"), from a
    # stream of its own so the training and test sets are those of every other experiment.
    kp = jax.random.fold_in(jax.random.key(run.seed), stable_tag("probe", name, p.d))
    xp, yp = ds.sample(kp, st.n_probe)
    n_srem = st.s_removed_n_train or st.n_train
    if n_srem == st.n_train:
        base = train
    else:
        _, base, _ = make_data(name, p.d, n_srem, st.n_test, run.seed)
    ks = jax.random.fold_in(jax.random.key(run.seed), stable_tag("s_removed", name))
    x_sr = _randomize(ks, base[0], ds.simple_coords, ds)
    return StudyData(
        dataset=name,
        basis=ds,
        dim=ds.d,
        train=train,
        test=test,
        probe=(np.asarray(xp), np.asarray(yp)),
        s_removed_train=(x_sr, base[1]),
        monitor=_monitor_sets(run, name, test, ds, st.n_monitor),
    )


def _mnist_cifar_data(run, p: Preset, st: Study) -> StudyData | None:
    import jax

    from sbjax.data.mnist_cifar import IMAGE_SHAPE, load_mnist_cifar
    from sbjax.data.sources import DataNotFoundError
    from sbjax.eval.randomize import image_basis

    try:
        data = load_mnist_cifar(
            version="A",
            source=p.mnist_cifar_source,
            seed=run.seed,
            n_train=st.n_train,
            n_test=st.n_test,
        )
    except DataNotFoundError as e:
        log.warning("mnist_cifar: skipped, no data (%s)", str(e).splitlines()[0])
        return None
    name = data.metadata["dataset"]
    basis = image_basis(IMAGE_SHAPE)
    train = (np.asarray(data.train.x, np.float32), np.asarray(data.train.y, np.int32))
    test = (np.asarray(data.test.x, np.float32), np.asarray(data.test.y, np.int32))
    ks = jax.random.fold_in(jax.random.key(run.seed), stable_tag("s_removed", name))
    x_sr = _randomize(ks, train[0], basis.simple_coords, basis)
    return StudyData(
        dataset=name,
        basis=basis,
        dim=basis.dim,
        train=train,
        test=test,
        probe=train,
        s_removed_train=(x_sr, train[1]),
        monitor=_monitor_sets(run, name, test, basis, st.n_monitor),
        note=f"{data.metadata.get('source')} data, {len(train[1])} train / {len(test[1])} test; "
        "probe fitted on the training images (no spare images)",
    )


# ------------------------------------------------------------------------------------------------
# Training: the main models, the S-removed control and the initial parameters.


def _model_config(dataset: str, name: str) -> dict:
    return dict(MNIST_CIFAR_MODELS[name] if dataset.startswith("mnist_cifar") else MODELS[name])


def _sweep_kwargs(model_cfg: dict) -> dict:
    """CPU: convolutional models train faster from a host loop on one device (see mnist_cifar)."""
    import jax

    if model_cfg["name"] in ("fcn", "linear") or jax.default_backend() != "cpu":
        return {}
    return {"loop": "host", "devices": jax.devices()[:1]}


def _train_study(run, p: Preset, st: Study, data: StudyData, m_name: str, extra: dict):
    """Trains the main models, the S-removed control and the learned-then-abandoned control;
    returns {variant: (params, result)}."""
    from sbjax.models import make_model
    from sbjax.train import initial_variables

    mcfg = _model_config(data.dataset, m_name)
    model = make_model(mcfg)
    kw = _sweep_kwargs(mcfg)
    out = {}
    for variant, recipe, train in (
        ("", st.train, data.train),
        ("_s_removed", st.s_removed_train, data.s_removed_train),
    ):
        name = f"{data.dataset}_{m_name}{variant}"
        timings: dict[str, Any] = {}
        r = run_sweep(
            run,
            name,
            train_config(recipe),
            model,
            train,
            None,
            timings=timings,
            monitor=data.monitor,
            **kw,
        )
        extra["sweep_wall_s"][name] = timings[name]["call_s"]
        out[variant] = (r.params, r)
    # Learned, then abandoned: the S-removed models (S^c learned) trained on the full data with
    # the main recipe. Their probe calibrates "encoded but maybe unused" on a known case.
    name = f"{data.dataset}_{m_name}_abandoned"
    timings = {}
    abandon = train_config(
        st.train,
        stop_rule="none",
        max_steps=st.abandon_steps,
        eval_every=min(st.train.eval_every, st.abandon_steps),
    )
    r = run_sweep(
        run,
        name,
        abandon,
        model,
        data.train,
        None,
        timings=timings,
        monitor=data.monitor,
        init_variables=out["_s_removed"][0],
        **kw,
    )
    extra["sweep_wall_s"][name] = timings[name]["call_s"]
    out["_abandoned"] = (r.params, r)
    out["_init"] = (initial_variables(model, data.train[0], run.seed, range(run.n_seeds)), None)
    return model, out


def _status(r) -> list[str] | None:
    """Stop reasons of a sweep's models (None for the initial parameters: nothing trained)."""
    return None if r is None else list(r.stop_reason)


# ------------------------------------------------------------------------------------------------
# Parts on trained stacks.


def _probe_metrics(run, p: Preset, data: StudyData, model, params, cell: str) -> dict:
    from sbjax import eval as E

    keys = eval_keys(run.seed, f"probe/{cell}", np.arange(_n_models(params)))
    res = E.last_layer_probe(
        model,
        params,
        data.probe[0],
        data.probe[1],
        data.test[0],
        data.test[1],
        keys,
        data.basis,
        batch_size=p.probe_batch,
    )
    names = (
        "probe_s_rand_acc",
        "probe_s_rand_auc",
        "probe_sc_rand_acc",
        "probe_sc_rand_auc",
        "head_s_rand_acc",
        "head_sc_rand_acc",
    )
    out = {k: np.asarray(res[k], np.float64) for k in names}
    ev = E.evaluate(model.logits, params, data.test[0], data.test[1], batch_size=p.probe_batch)
    out["test_acc"] = np.asarray(ev["accuracy"], np.float64)
    out["probe_s_rand_l2"] = np.asarray(res["probe_s_rand_l2"], np.float64)
    return out


@dataclasses.dataclass(frozen=True)
class TrainedLogits:
    """logits of variables {"trained": v, "init": v0}: the trained model's (hashable)."""

    logits: Any

    def __call__(self, variables, x):
        return self.logits(variables["trained"], x)


@dataclasses.dataclass(frozen=True)
class LearnedChange:
    """The first-layer change W - W0 of variables {"trained": v, "init": v0} (hashable)."""

    kernel: Any

    def __call__(self, variables):
        return self.kernel(variables["trained"]) - self.kernel(variables["init"])


def _ldsb_metrics(run, p: Preset, data: StudyData, model, params, cell: str, init=None) -> dict:
    """LD-SB of the full first layer W (`ldsb_*`, `ldsb_r1_*`) and, given the initial variables,
    of the learned change W - W0 (`ldsb_delta_*`): with a short budget most of W is still its
    random initialisation, so the rank of W alone overstates what was learned."""
    from sbjax import eval as E
    from sbjax.models import first_layer_kernel

    keys = eval_keys(run.seed, f"ldsb/{cell}", np.arange(_n_models(params)))
    x = data.test[0]
    names = ("pperp_pc", "p_pc", "pperp_lc", "p_lc", "overlap_s", "p_in_s")
    res = E.ldsb_report(model, params, x, keys, data.basis, threshold=p.ldsb_threshold)
    out = {f"ldsb_{k}": np.asarray(res[f"ldsb_{k}"], np.float64) for k in names}
    out["ldsb_rank"] = np.asarray(res["ldsb_rank"], np.float64)
    out["ldsb_explained"] = np.asarray(res["ldsb_explained"], np.float64)
    r1 = E.ldsb_report(model, params, x, keys, data.basis, rank=1)
    out.update({f"ldsb_r1_{k}": np.asarray(r1[f"ldsb_{k}"], np.float64) for k in names})
    out["ldsb_r1_explained"] = np.asarray(r1["ldsb_explained"], np.float64)
    if init is not None:
        both = {"trained": params, "init": init}
        fns = (TrainedLogits(model.logits), LearnedChange(first_layer_kernel(model)))
        d = E.ldsb_report(
            fns[0], both, x, keys, data.basis, kernel_fn=fns[1], threshold=p.ldsb_threshold
        )
        out.update({f"ldsb_delta_{k}": np.asarray(d[f"ldsb_{k}"], np.float64) for k in names})
        out["ldsb_delta_rank"] = np.asarray(d["ldsb_rank"], np.float64)
        out["ldsb_delta_explained"] = np.asarray(d["ldsb_explained"], np.float64)
    return out


def _margin_metrics(p: Preset, st: Study, data: StudyData, model, params) -> dict:
    from sbjax import eval as E

    radius = math.sqrt(data.dim)
    res = E.subspace_margins(
        model.logits, params, data.test[0][: st.n_margin], data.basis, max_radius=radius
    )
    out = {}
    for sub in ("s", "sc"):
        med = np.asarray(res[f"margin_median_{sub}"], np.float64)
        out[f"margin_{sub}_median"] = np.minimum(med, radius)  # censored at max_radius
        out[f"flipped_frac_{sub}"] = np.asarray(res[f"flipped_frac_{sub}"], np.float64)
    out["margin_ratio_sc_s"] = out["margin_sc_median"] / out["margin_s_median"]
    return out


def _timeline_metrics(r) -> tuple[dict, dict, dict]:
    """Per-seed timeline summaries, the curves for the figure, and never-reached counts."""
    h = r.history
    upd = np.asarray(h["step"][0], np.float64)
    test, s_rand, sc_rand = (
        np.asarray(h[f"monitor_{n}_acc"], np.float64) for n in ("test", "s_rand", "sc_rand")
    )
    rel_s, rel_sc = test - s_rand, test - sc_rand
    # Evaluations after a model stopped repeat its final parameters: summaries use the live part.
    stop = np.asarray(r.stop_step, np.float64)
    live = upd[None, :] <= stop[:, None] + 1e-9
    last = np.maximum(np.sum(live, axis=1) - 1, 0)
    rows = np.arange(len(stop))
    out = {
        "reliance_s_final": rel_s[rows, last],
        "reliance_sc_final": rel_sc[rows, last],
        "reliance_s_max": np.max(np.where(live, rel_s, -np.inf), axis=1),
        "reliance_sc_max": np.max(np.where(live, rel_sc, -np.inf), axis=1),
        "stop_step": stop,
    }
    out["sc_picked_then_dropped"] = (
        (out["reliance_sc_max"] >= 0.1) & (out["reliance_sc_final"] < 0.05)
    ).astype(np.float64)
    never = {}
    for name, rel in (("updates_to_s", rel_s), ("updates_to_sc", rel_sc)):
        hit = live & (rel >= RELIANCE_LEARNED)
        first = np.where(hit.any(axis=1), upd[np.argmax(hit, axis=1)], np.nan)
        n_never = int(np.sum(np.isnan(first)))
        if n_never:
            never[name] = n_never
        else:
            out[name] = first
    curves = {"updates": upd, "test": test, "s_rand": s_rand, "sc_rand": sc_rand, "stop": stop}
    return out, curves, never


def _n_models(params) -> int:
    import jax

    return int(jax.tree_util.tree_leaves(params)[0].shape[0])


EXPECT = {
    ("probe", ""): "learned but unused? probe_s_rand high = S^c encoded though head_s_rand ~0.5",
    ("probe", "_s_removed"): "control: S is noise, S^c learned: probe_s_rand and head ~1",
    ("probe", "_init"): "control: random features, probe_s_rand = what random features carry",
    ("probe", "_abandoned"): "control: S^c learned first, then full data: is it still encoded?",
    ("ldsb", "_abandoned"): "control: S^c learned first, then full data",
    ("timeline", "_abandoned"): "control: starts on S^c; does S take over?",
    ("margin", "_abandoned"): "control: S^c learned first, then full data",
    ("ldsb", ""): "LD-SB: small P_perp-pC, large P-pC; span(P) overlaps S",
    ("ldsb", "_s_removed"): "control: P should not align with S",
    ("ldsb", "_init"): "control: random first layer, high rank",
    ("timeline", ""): "S learned early (reliance_s -> ~0.5); is S^c ever picked up?",
    ("timeline", "_s_removed"): "control: only S^c can be learned",
    ("margin", ""): "O(1) margin along S, much larger (or none) along S^c",
    ("margin", "_s_removed"): "control: margin along S^c finite, S margin large",
    ("margin", "_init"): "control: random initialisation",
}


def run_study(run, p: Preset, ds_key: str, parts: list[str], extra: dict, figs: dict) -> None:
    st = p.studies[ds_key]
    if ds_key == "mnist_cifar":
        data = _mnist_cifar_data(run, p, st)
        if data is None:
            extra["skipped"]["mnist_cifar"] = (
                "no MNIST-CIFAR data found (set $SBJAX_MNIST_CIFAR_SUBSET to the folder of "
                "mnist01.npz / cifar10_auto_truck.npz, or --set mnist_cifar_source=files)"
            )
            return
        extra["data_notes"][data.dataset] = data.note
    else:
        data = _synthetic_data(run, p, ds_key, st)
    test_size = class_sizes(data.test[1])
    for m_name in st.models:
        model, stacks = _train_study(run, p, st, data, m_name, extra)
        mcfg = _model_config(data.dataset, m_name)
        for variant, (params, r) in stacks.items():
            label = f"{m_name}{variant}"
            cell = f"{data.dataset}/{label}"
            common = dict(dataset=data.dataset, model=label, status=_status(r))
            if "probe" in parts:
                met = _probe_metrics(run, p, data, model, params, cell)
                rec = run.add_result(
                    metrics=met,
                    part="probe",
                    expect=EXPECT[("probe", variant)],
                    test_size=test_size,
                    **common,
                )
                figs["probe"].append(rec)
            if "ldsb" in parts:
                if mcfg["name"] in LDSB_MODELS:
                    init = None if variant == "_init" else stacks["_init"][0]
                    met = _ldsb_metrics(run, p, data, model, params, cell, init)
                    run.add_result(
                        metrics=met,
                        part="ldsb",
                        expect=EXPECT[("ldsb", variant)],
                        threshold=p.ldsb_threshold,
                        **common,
                    )
                else:
                    log.info("ldsb: %s has no dense first layer; skipped", label)
            if "margin" in parts:
                met = _margin_metrics(p, st, data, model, params)
                run.add_result(
                    metrics=met,
                    part="margin",
                    expect=EXPECT[("margin", variant)],
                    max_radius=math.sqrt(data.dim),
                    n_points=min(st.n_margin, len(data.test[1])),
                    **common,
                )
            if "timeline" in parts and r is not None:
                met, curves, never = _timeline_metrics(r)
                rec = run.add_result(
                    metrics=met,
                    part="timeline",
                    expect=EXPECT[("timeline", variant)],
                    n_monitor=len(data.monitor["test"][1]),
                    reliance_learned=RELIANCE_LEARNED,
                    never_reached=never,
                    **common,
                )
                figs["timeline"].setdefault(data.dataset, {})[label] = curves


# ------------------------------------------------------------------------------------------------
# The phase diagram.


def part_phase(run, p: Preset, extra: dict) -> None:
    from sbjax.models import make_model
    from sbjax.train.phase import PhaseData, phase_diagram

    ph = p.phase
    data = PhaseData(d=p.d, n_train=ph.n_train, n_test=ph.n_test, ks=tuple(sorted(set(ph.k))))
    cfg = train_config(ph.train, stop_rule="none")
    res = phase_diagram(
        cfg,
        make_model(MODELS["fcn_100x1"]),
        data,
        p=ph.p,
        margin=ph.margin,
        k=ph.k,
        n_seeds=ph.n_seeds,
        seed=run.seed,
    )
    m = res.metrics
    n_te = ph.n_test
    for i, pv in enumerate(res.p):
        for j, g in enumerate(res.margin):
            for l_, k in enumerate(res.k):
                met = {name: m[name][i, j, l_] for name in m}
                met["reliance_s"] = m["test_acc"][i, j, l_] - m["s_rand_acc"][i, j, l_]
                met["reliance_sc"] = m["test_acc"][i, j, l_] - m["sc_rand_acc"][i, j, l_]
                run.add_result(
                    dataset="noisy_lms",
                    model="fcn_100x1",
                    metrics=met,
                    status=list(res.stop_reason[i, j, l_]),  # diverged models: excluded, counted
                    part="phase",
                    expect=f"p={pv:g}, margin={g:g}, k={k}: reliance moves from S to S^c as "
                    "p grows",
                    test_size=(n_te // 2, n_te - n_te // 2),  # balanced in expectation
                    p=pv,
                    margin=g,
                    k=k,
                    noise_model=data.noise_model,
                )
    cross = crossover_summary(res, PHASE_MIN_GAP, run.seed)
    rel = res.reliance()
    n_models = int(res.stop_reason.size)
    extra["phase"] = {
        "n_diverged": res.n_diverged,
        "crossover": cross,
        "compile_s": res.compile_s,
        "run_s": res.run_s,
        "n_models": n_models,
        "n_devices": res.n_devices,
        "theory_lsn": THEORY_LSN,
        "updates": [int(u) for u in res.updates],
        "learnable_acc": LEARNABLE_ACC,
        "noise_model": data.noise_model,
        "slab_margin": data.slab_margin,
        "min_gap": PHASE_MIN_GAP,
    }
    if res.n_diverged == n_models:
        extra["phase"]["status"] = "all models failed"
        log.warning(
            "phase: all %d models diverged: no phase diagram (lower phase.train.lr)", n_models
        )
        return
    if res.n_diverged:
        log.warning("phase: %d of %d models diverged (excluded)", res.n_diverged, n_models)
    for c in cross:
        failed = f" ({c['n_failed_cells']} p cell(s) without a usable model)"
        log.info(
            "phase: margin %.2f, k %d: %s%s",
            c["margin"],
            c["k"],
            c["verdict"],
            failed if c["n_failed_cells"] else "",
        )
    run.figure(
        "phase_diagram.png",
        "diagnostics_phase",
        p=list(res.p),
        margin=list(res.margin),
        k=list(res.k),
        reliance_s=rel["reliance_s"],
        reliance_sc=rel["reliance_sc"],
        min_gap=PHASE_MIN_GAP,
        title=f"Shortcut phase diagram: noisy LMS-k, (100,1)-FCN, {ph.n_seeds} seeds per cell, "
        f"{ph.train.max_steps} updates",
    )


def bootstrap_mean_ci(values, rng: np.random.Generator, n_boot: int = 2000) -> list | None:
    """95 % percentile bootstrap interval of the mean over seeds (None with < 2 values)."""
    v = np.asarray(values, np.float64)
    if v.size < 2:
        return None
    means = rng.choice(v, (n_boot, v.size), replace=True).mean(axis=1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def crossover_summary(res, min_gap: float, seed: int) -> list[dict]:
    """`PhaseResult.crossover` (of the seed means) with, per (margin, k): every seed's own
    crossover (`p_cross_per_seed`, None = never on the grid), their mean over the seeds that
    cross with a bootstrap interval over those seeds and `n_never`; the same at every evaluation
    period (`by_budget`: the crossover as a function of the update budget); the clean test
    accuracy per p (`clean_test_acc`) and whether S^c is learned at the largest p, where S
    carries the least (`sc_learned`: mean clean test accuracy >= LEARNABLE_ACC) -- a row whose
    S^c never wins and is not learned there shows a learnability limit of the recipe, not SB."""
    rng = np.random.default_rng([seed, stable_tag(NAME, "crossover_bootstrap")])
    final = res.crossover_per_seed(min_gap)  # [G, K, S]
    periods = [res.crossover_per_seed(min_gap, e) for e in range(len(res.updates))]
    ok = res.ok
    with np.errstate(invalid="ignore"):
        test = np.where(ok, res.metrics["test_acc"], np.nan)
        clean = np.nanmean(test, axis=-1)  # [P, G, K]
    out = []
    cells = itertools.product(range(len(res.margin)), range(len(res.k)))  # crossover's order
    for c, (j, l_) in zip(res.crossover(min_gap), cells, strict=True):
        per = final[j, l_]
        crossing = per[np.isfinite(per)]
        last = clean[-1, j, l_]  # NaN: every model of that cell failed
        learned = None if np.isnan(last) else bool(last >= LEARNABLE_ACC)
        c.update(
            p_cross_per_seed=[None if np.isnan(v) else float(v) for v in per],
            n_never=int(np.sum(~np.isfinite(per))),
            p_cross_seed_mean=float(crossing.mean()) if crossing.size else None,
            p_cross_ci95=bootstrap_mean_ci(crossing, rng),
            clean_test_acc=[None if np.isnan(v) else float(v) for v in clean[:, j, l_]],
            sc_learned=learned,
            by_budget=[
                {
                    "updates": int(u),
                    "p_cross_seed_mean": float(np.nanmean(pe[j, l_]))
                    if np.isfinite(pe[j, l_]).any()
                    else None,
                    "n_never": int(np.sum(~np.isfinite(pe[j, l_]))),
                }
                for u, pe in zip(res.updates, periods, strict=True)
            ],
        )
        c["verdict"] = crossover_verdict(c, float(res.p[-1]))
        out.append(c)
    return out


def crossover_verdict(c: Mapping[str, Any], p_max: float) -> str:
    """One sentence per (margin, k) row that says what its seeds support."""
    n = len(c["p_cross_per_seed"])
    acc = c["clean_test_acc"][-1]
    if c["n_never"] == n and acc is None:
        return f"S^c never wins; no usable model at p = {p_max:g}, so learnability is unknown"
    if c["n_never"] == n:
        if not c["sc_learned"]:
            return (
                f"S^c never wins, but it is not learned even at p = {p_max:g} (clean test "
                f"accuracy {acc:.3f}): a learnability limit of this recipe, not SB"
            )
        return f"S^c never wins on the p grid although it is learned at p = {p_max:g}: SB holds"
    ci = c["p_cross_ci95"]
    ci_text = f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else ""
    never = f"; {c['n_never']} of {n} seeds never cross" if c["n_never"] else ""
    n_cross = n - c["n_never"]
    return (
        f"S^c wins from p = {c['p_cross_seed_mean']:.3g}{ci_text} (mean of {n_cross} seeds){never}"
    )


# ------------------------------------------------------------------------------------------------


def add_options(parser) -> None:
    parser.add_argument(
        "--datasets",
        default=None,
        help="comma-separated subset of the preset's datasets (" + ", ".join(DATASETS) + ")",
    )


def select_datasets(ctx: Context) -> Preset:
    """--datasets: the preset's studies restricted to the named datasets."""
    preset, text = ctx.preset, ctx.args.datasets
    if text is None:
        return preset
    wanted = [d.strip() for d in text.split(",") if d.strip()]
    if not wanted or any(d not in preset.studies for d in wanted):
        fail("datasets", text, "a subset of " + ", ".join(preset.studies))
    return dataclasses.replace(
        preset, studies={k: v for k, v in preset.studies.items() if k in wanted}
    )


def run_parts(ctx: Context) -> None:
    """The studies' parts (probe, ldsb, timeline, margin: one training per study and model),
    the phase diagram, then the timeline and probe figures."""
    run, preset, parts, extra = ctx.run, ctx.preset, ctx.parts, ctx.extra
    extra.update(sweep_wall_s={}, skipped={}, data_notes={})
    figs: dict[str, Any] = {"probe": [], "timeline": {}}
    if any(part in parts for part in ("probe", "ldsb", "timeline", "margin")):
        for ds_key in preset.studies:
            run_study(run, preset, ds_key, parts, extra, figs)
    if "phase" in parts:
        part_phase(run, preset, extra)
    for ds, curves in figs["timeline"].items():
        run.figure(
            f"timeline_{ds}.png",
            "diagnostics_timeline",
            curves=curves,
            title=f"Feature timeline on {ds}: accuracy on a fixed test subset and its S- / "
            "S^c-randomized copies (each seed; dashed: stop)",
        )
    if figs["probe"]:
        run.figure(
            "probe_bars.png",
            "diagnostics_probe_bars",
            records=[
                {"dataset": r["dataset"], "model": r["model"], "metrics": r["metrics"]}
                for r in figs["probe"]
            ],
            title="Last-layer probes (mean ± std over seeds): the model's head vs a refitted "
            "linear head",
        )


EXPERIMENT = Experiment(
    NAME,
    __doc__,
    PRESETS,
    preset_help=PRESET_HELP,
    parts=PARTS,
    select="flag",
    options=add_options,
    prepare=select_datasets,
    check=check_preset,
    body=run_parts,
)
main = EXPERIMENT.main


if __name__ == "__main__":
    main()
