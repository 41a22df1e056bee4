"""Extreme simplicity bias makes models vulnerable to small UAPs on S (Shah et al. 2020, Sec. 4.3,
Fig. 4).

For FCN, 1-D CNN and GRU models trained on LMS-5 and MS-(5,7) (nb06 recipe), on the test set:

* instance-specific L2 PGD (eps = 0.5 drange, step 0.05 drange, 20 iterations, box = the rotated
  data's [min, max]): accuracy under attack (``pgd_acc``) and the mean fraction of each
  perturbation's L2 norm on S, |P_can[:, 0]| / ||P_can|| in the canonical basis
  (``pgd_frac_on_s``; the reference prints 0.99732 / 0.99094);
* SVD-UAP (top right singular vector of the PGD perturbations of a larger attack: eps 1.0 drange /
  30 iterations on LMS-5, 0.5 drange / 50 on MS-(5,7)) applied label-signed, (2y - 1) u, with an
  absolute L2 norm 1.0 (LMS-5) / 0.5 (MS-(5,7)), the worse of +-u (``uap_acc``), and its
  concentration on S, |u_can[0]| / ||u_can|| (``uap_frac_on_s``; paper: 99.6 % / 99.9 %);
* AS-UAP (iterative label-signed UAP, lr 0.05, 2 passes over the test set in batches of 256,
  30 / 50 iterations per batch, same norms): ``as_uap_acc``, ``as_uap_frac_on_s``;
* the transfer matrix: the SVD-UAP of architecture i applied to the model of architecture j of
  the same seed (``transfer`` in summary.json, mean over seeds; the diagonal is ``uap_acc``);
* heatmaps of |u_can| / max |u_can| over the canonical coordinates (Fig. 4).

As in the reference (REFERENCE.md Sec. 5, Sec. 11 rows 16-17) UAPs are fit and evaluated on the
same test set; ``--uap-fit-split train`` fits them on (a prefix of) the training set instead.

Training (REFERENCE.md Sec. 3.3, nb06): SGD, lr 0.1, no momentum, coupled L2 5e-4, batch 256;
LMS-5 stops at train loss < 0.01 (evaluated every 1000 updates, patience 1), MS-(5,7) at train
accuracy >= 0.99 (every 5000 updates, patience 1000). nb06 trains only (200,1)-FCNs; the CNN and
GRU use the same recipe (the paper gives no other).

Failed models (``REQUIRE_CONVERGED``): nb06 trains every model to its stop rule (LMS-5: train
loss < 0.01; MS-(5,7): train accuracy >= 0.99) and Fig. 4 attacks those trained models, so a
model that diverged or hit its update budget is excluded from every mean and std of its record,
from the transfer matrix's means and from the figures, and counted (``n_diverged``,
``n_unconverged``, ``seed_status``); a record whose models all failed says "all models failed".

Keys: each model's PGD and SVD-UAP random starts come from its own (sweep, seed index) key
(`eval_keys`, one [M] key array vmapped with the models), so no two models share a draw.

Records: ``part`` "fig4", ``dataset``, ``model``, ``uap_fit_split``, ``expect`` and, where the
paper or nb06 gives a value, ``paper`` with ``paper_source`` (Fig. 4: the UAP's share on S,
99.6 % / 99.9 %; nb06's (200,1)-FCN: PGD / UAP accuracy and PGD budget fraction on S).

Presets are data (the ``Preset`` dataclass; config.json's ``preset_config`` lists every key); change
any value with ``--set``, e.g. ``--set train.lr=0.05``, ``--set max_steps.lms5=5000``, ``--set
attacks.lms5.pgd_steps=40``, ``--set n_test.ms57=5000`` (recorded in config.json). ``python -m
sbjax.plots RUN_DIR`` redraws the figures from the data saved with them.

    python -m experiments.uaps --preset quick --out runs/uaps
    python -m experiments.uaps --preset paper --out runs/uaps_paper   # GPU/TPU
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
    check_train_fields,
    run_sweep,
    used_mask,
)
from experiments.evaluation import eval_keys
from experiments.synthetic import (
    MODELS,
    STOP_RULES,
    Recipe,
    check_names,
    check_per_dataset,
    check_positive_int,
    check_recipe,
    class_sizes,
    make_data,
    per_dataset,
    select_models,
    train_config,
)
from sbjax.validate import check_choice, check_range, fail

NAME = "uaps"
# nb06 trains to its stop rule and Fig. 4 attacks those models (module docstring).
REQUIRE_CONVERGED = True
log = logging.getLogger(f"sbjax.experiments.{NAME}")

DATASETS = ("lms5", "ms57")
ARCHITECTURES = ("fcn_200x1", "cnn1d_32x7x1", "gru_100x10x1")

# nb06 (REFERENCE.md Sec. 3.3): SGD lr 0.1, no momentum, wd 5e-4, batch 256; LMS-5 loss rule
# 0.01 / gap 1000 / patience 1; MS-(5,7) accuracy rule 0.99 / gap 5000 / patience 1000.
NB06 = Recipe(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=5e-4, batch_size=256)


@dataclasses.dataclass(frozen=True)
class Attack:
    """Attack settings of nb06 (REFERENCE.md Sec. 5.4-5.6). *_eps of PGD relative to drange;
    uap_eps absolute (L2)."""

    pgd_eps: float
    pgd_lr: float
    pgd_steps: int
    svd_pgd_eps: float
    svd_pgd_steps: int
    uap_eps: float
    as_lr: float
    as_iters: int
    as_epochs: int
    as_batch: int


ATTACKS: dict[str, Attack] = {
    "lms5": Attack(
        pgd_eps=0.5,
        pgd_lr=0.05,
        pgd_steps=20,
        svd_pgd_eps=1.0,
        svd_pgd_steps=30,
        uap_eps=1.0,
        as_lr=0.05,
        as_iters=30,
        as_epochs=2,
        as_batch=256,
    ),
    "ms57": Attack(
        pgd_eps=0.5,
        pgd_lr=0.05,
        pgd_steps=20,
        svd_pgd_eps=0.5,
        svd_pgd_steps=50,
        uap_eps=0.5,
        as_lr=0.05,
        as_iters=50,
        as_epochs=2,
        as_batch=256,
    ),
}


@dataclasses.dataclass(frozen=True)
class Preset:
    """uaps preset.

    Attributes:
      n_seeds, n_train, d: sizes; n_test: {dataset: test points}.
      eval_every, max_steps: {dataset: updates}.
      datasets: datasets run. models: {dataset: architectures}.
      as_iters_scale: multiplies the AS-UAP iterations per batch.
      train: nb06's optimizer recipe; stop_rule, stop_eps, patience: {dataset: value} (nb06).
      attacks: {dataset: Attack}.
    """

    n_seeds: int
    n_train: int
    n_test: Any
    d: int
    eval_every: dict
    max_steps: dict
    datasets: tuple[str, ...]
    models: Any
    as_iters_scale: float = 1.0
    train: Recipe = NB06
    stop_rule: dict = dataclasses.field(default_factory=lambda: {"lms5": "loss", "ms57": "acc"})
    stop_eps: dict = dataclasses.field(default_factory=lambda: {"lms5": 0.01, "ms57": 0.01})
    patience: dict = dataclasses.field(default_factory=lambda: {"lms5": 1, "ms57": 1000})
    attacks: dict = dataclasses.field(default_factory=lambda: dict(ATTACKS))


PRESETS: dict[str, Preset] = {
    # LMS-5 reaches nb06's loss rule (< 0.01) after ~1000-1200 updates at this size: the smoke
    # models converge, as the experiment requires.
    "smoke": Preset(
        n_seeds=2,
        n_train=2000,
        n_test={"lms5": 500, "ms57": 500},
        d=50,
        eval_every={"lms5": 200, "ms57": 200},
        max_steps={"lms5": 2000, "ms57": 400},
        datasets=("lms5",),
        models={"lms5": ("fcn_200x1",), "ms57": ("fcn_200x1",)},
        as_iters_scale=0.1,
    ),
    # 20k training points (nb06: 100k), 2k test points (nb06: 10k / 5k), 3 seeds, evaluation
    # every 1000 updates (nb06: 1000 / 5000); CNN and GRU on LMS-5 only (on MS-(5,7) they need
    # >= 10k updates at 20-30x the FCN's cost per update).
    "quick": Preset(
        n_seeds=3,
        n_train=20000,
        n_test={"lms5": 2000, "ms57": 2000},
        d=50,
        eval_every={"lms5": 1000, "ms57": 1000},
        max_steps={"lms5": 10000, "ms57": 30000},
        datasets=("lms5", "ms57"),
        models={"lms5": ARCHITECTURES, "ms57": ("fcn_200x1",)},
    ),
    "paper": Preset(
        n_seeds=5,
        n_train=100000,
        n_test={"lms5": 10000, "ms57": 5000},
        d=50,
        eval_every={"lms5": 1000, "ms57": 5000},
        max_steps={"lms5": 100000, "ms57": 200000},
        datasets=("lms5", "ms57"),
        models={"lms5": ARCHITECTURES, "ms57": ARCHITECTURES},
    ),
}

PRESET_HELP = {
    "smoke": "seconds: LMS-5, (200,1)-FCN, 2k points, 2 seeds, AS-UAP at 1/10 of its "
    "iterations (plumbing only)",
    "quick": "CPU minutes: 20k points, 2k test points, 3 seeds; FCN/CNN/GRU on LMS-5, FCN on "
    "MS-(5,7)",
    "paper": "nb06 sizes (100k points; 10k / 5k test points), 5 seeds, FCN/CNN/GRU on both "
    "datasets (GPU/TPU)",
}

# Published values (REFERENCE.md Sec. 9.1 Fig. 4; Sec. 9.5 nb06, the (200,1)-FCN, one run).
FIG4_FRAC_ON_S = {"lms5": 0.996, "ms57": 0.999}
NB06_PAPER = {
    "lms5": {"pgd_acc": 0.0, "pgd_frac_on_s": 0.99732, "uap_acc": 0.0066, "as_uap_acc": 0.0066},
    "ms57": {"pgd_acc": 0.0, "pgd_frac_on_s": 0.99094, "uap_acc": 0.0656, "as_uap_acc": 0.0656},
}


def paper_values(dataset: str, model: str) -> dict[str, Any]:
    """`add_result` arguments citing the published values of a (dataset, model) record."""
    paper: dict[str, float] = {}
    sources = []
    if dataset in FIG4_FRAC_ON_S:
        paper["uap_frac_on_s"] = FIG4_FRAC_ON_S[dataset]
        sources.append("Fig. 4 (UAP share on S)")
    if model == "fcn_200x1" and dataset in NB06_PAPER:
        paper.update(NB06_PAPER[dataset])
        sources.append("nb06 (REFERENCE.md 9.5, one (200,1)-FCN)")
    return {"paper": paper, "paper_source": "; ".join(sources)} if paper else {}


# Training settings given per dataset (a value or a {dataset: value} map).
PER_DATASET_TRAIN = ("stop_rule", "stop_eps", "patience", "eval_every", "max_steps")


def dataset_config(p: Preset, dataset: str):
    """The `TrainConfig` of `dataset`: nb06's recipe with the dataset's budget and stop rule,
    checked by TrainConfig (errors name the --set key, e.g. max_steps.lms5)."""
    per = {f: per_dataset(getattr(p, f), dataset) for f in PER_DATASET_TRAIN}
    keys = {f: f"{f}.{dataset}" if isinstance(getattr(p, f), Mapping) else f for f in per}
    check_train_fields("train", keys=keys, **{**dataclasses.asdict(p.train), **per})
    return train_config(
        p.train,
        stop_rule=per["stop_rule"],
        stop_eps=float(per["stop_eps"]),
        patience=int(per["patience"]),
        eval_every=int(per["eval_every"]),
        max_steps=int(per["max_steps"]),
    )


def check_preset(p: Preset) -> None:
    """Validates a preset after --set overrides, before any work (errors name the key)."""
    check_positive_int("n_seeds", p.n_seeds)
    check_positive_int("n_train", p.n_train)
    check_positive_int("d", p.d, 2)
    check_names("datasets", p.datasets, DATASETS)
    ds = list(p.datasets)
    check_per_dataset("n_test", p.n_test, ds, lambda k, v: check_positive_int(k, v, 2))
    check_per_dataset("models", p.models, ds, lambda k, v: check_names(k, v, ARCHITECTURES))
    check_range("as_iters_scale", p.as_iters_scale, 0.0, None, lo_open=True)
    check_recipe("train", p.train)
    for f in PER_DATASET_TRAIN:  # a value, or a map with an entry for every dataset
        check_per_dataset(f, getattr(p, f), ds, lambda k, v: None)
    # a convergence rule: every model must converge (REQUIRE_CONVERGED)
    check_per_dataset("stop_rule", p.stop_rule, ds, lambda k, v: check_choice(k, v, STOP_RULES))
    for name in ds:
        dataset_config(p, name)  # TrainConfig's rules; errors name e.g. max_steps.lms5
    for name in ds:
        if name not in p.attacks or not isinstance(p.attacks[name], Attack):
            fail("attacks", p.attacks, f"an Attack for dataset {name!r}")
        a = p.attacks[name]
        for f in ("pgd_eps", "pgd_lr", "svd_pgd_eps", "uap_eps", "as_lr"):
            check_range(f"attacks.{name}.{f}", getattr(a, f), 0.0, None, lo_open=True)
        for f in ("pgd_steps", "svd_pgd_steps", "as_iters", "as_epochs", "as_batch"):
            check_positive_int(f"attacks.{name}.{f}", getattr(a, f))


# ------------------------------------------------------------------------------------------------


def _fold(key, data: int):
    """fold_in of one key, or of each key of a per-model stack [M]."""
    import jax

    from sbjax.eval.metrics import fold_in_keys

    return fold_in_keys(key, data, per_model=jax.numpy.ndim(key) == 1)


def attack_stack(
    model, params, ds, fit, evaluation, bounds, a: Attack, key, as_iters_scale: float = 1.0
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """PGD, SVD-UAP and AS-UAP of every model of a stack (nb06, REFERENCE.md Sec. 5.4-5.7).

    Args:
      model: `sbjax.models.Model`; params: stacked variables [M, ...].
      ds: the dataset (rotation, S).
      fit: (x, y) the UAPs are fit on; evaluation: (x, y) PGD and the UAPs are evaluated on (the
        reference: both the test set).
      bounds: (lo, hi) box of the attacked inputs. a: the dataset's `Attack`.
      key: PRNG key of the PGD / SVD-UAP random starts, or typed keys [M], one per model.
      as_iters_scale: multiplies the AS-UAP iterations per batch.

    Returns:
      (per-model metrics name -> float [M], arrays: `svd_uap`, `as_uap` [M, d] (model basis,
      applied scale and sign), `pgd_delta_can_abs_mean` [M, d]).
    """
    from sbjax.eval import attacks as A
    from sbjax.eval import uap as U

    drange = bounds[1] - bounds[0]
    x_ev, y_ev = evaluation
    pgd = A.pgd_attack(
        model.logits,
        params,
        x_ev,
        y_ev,
        _fold(key, 0),
        norm="l2",
        eps=a.pgd_eps * drange,
        step_size=a.pgd_lr * drange,
        n_iter=a.pgd_steps,
        bounds=bounds,
    )
    svd = U.uap_report(
        model.logits,
        params,
        fit,
        evaluation,
        ds,
        _fold(key, 1),
        kind="svd",
        eps=a.uap_eps,
        pgd_eps=a.svd_pgd_eps * drange,
        step_size=a.pgd_lr * drange,
        n_iter=a.svd_pgd_steps,
        bounds=bounds,
    )
    n_as = max(1, int(round(a.as_iters * as_iters_scale)))
    asu = U.uap_report(
        model.logits,
        params,
        fit,
        evaluation,
        ds,
        _fold(key, 2),
        kind="as",
        eps=a.uap_eps,
        step_size=a.as_lr,
        n_iter=n_as,
        batch_size=a.as_batch,
        bounds=bounds,
    )
    metrics = {
        "test_acc": pgd.clean_accuracy,
        "pgd_acc": pgd.accuracy,
        "pgd_frac_on_s": A.mean_budget_fraction(pgd.delta, ds),
        "uap_acc": svd["accuracy"],
        "uap_frac_on_s": svd["fraction_on_s"],
        "uap_energy_on_s": svd["energy_on_s"],
        "as_uap_acc": asu["accuracy"],
        "as_uap_frac_on_s": asu["fraction_on_s"],
    }
    delta_can = np.abs(np.asarray(ds.to_canonical(pgd.delta)))  # [M, n, d]
    arrays = {
        "svd_uap": np.asarray(svd["uap"]),
        "as_uap": np.asarray(asu["uap"]),
        "pgd_delta_can_abs_mean": delta_can.mean(axis=1),
    }
    return {k: np.asarray(v, np.float64) for k, v in metrics.items()}, arrays


def transfer_matrix(
    stacks: Mapping[str, tuple[Any, Any]],
    uaps: Mapping[str, np.ndarray],
    evaluation,
    bounds,
    used: Mapping[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """SVD-UAP transfer across architectures: accuracy of model j under the UAP of model i.

    Args:
      stacks: architecture -> (model, stacked params [S, ...]) (S seeds each).
      uaps: architecture -> applied SVD-UAPs [S, d] (scale and sign included).
      evaluation: (x, y).
      used: architecture -> bool [S], the models that did not fail (default: all). Means skip
        pairs with a failed source or target model.

    Returns:
      dict with `archs` (order), `per_model` [K, K] (K = total models; rows = UAP source,
      columns = attacked model; failed models included), `mean` [A, A] (mean over all source /
      target seed pairs of used models; None where no pair is left), `same_seed` [A, A] (mean
      over used pairs with equal seed index; None where none), `used` per architecture.
    """
    from sbjax.eval import uap as U

    archs = list(stacks)
    all_u = np.concatenate([uaps[a] for a in archs], axis=0)
    mat = np.asarray(
        U.uap_transfer_matrix_multi(
            [(stacks[a][0].logits, stacks[a][1]) for a in archs],
            evaluation[0],
            evaluation[1],
            all_u,
            both_signs=True,
            bounds=bounds,
        )
    )
    sizes = [uaps[a].shape[0] for a in archs]
    edges = np.concatenate([[0], np.cumsum(sizes)])
    ok = {
        a: (np.ones(n, bool) if used is None else np.asarray(used[a], bool))
        for a, n in zip(archs, sizes, strict=True)
    }
    mean = [[None] * len(archs) for _ in archs]
    same = [[None] * len(archs) for _ in archs]
    for i, ai in enumerate(archs):
        for j, aj in enumerate(archs):
            blk = mat[edges[i] : edges[i + 1], edges[j] : edges[j + 1]]
            pair = ok[ai][:, None] & ok[aj][None, :]
            if pair.any():
                mean[i][j] = float(blk[pair].mean())
            k = min(blk.shape)
            diag = [blk[s, s] for s in range(k) if pair[s, s]]
            if diag:
                same[i][j] = float(np.mean(diag))
    return {
        "archs": archs,
        "per_model": mat.tolist(),
        "mean": mean,
        "same_seed": same,
        "used": {a: ok[a].tolist() for a in archs},
    }


def add_options(parser) -> None:
    parser.add_argument(
        "--uap-fit-split",
        choices=("test", "train"),
        default="test",
        help="test: fit and evaluate UAPs on the test set (the reference); train: "
        "fit on the first n_test training points, evaluate on the test set",
    )
    parser.add_argument(
        "--models",
        default=None,
        help="'all' or a comma-separated subset of the preset's architectures (default: all)",
    )


def run_datasets(ctx: Context) -> None:
    """Every dataset: train each architecture, attack it (PGD, SVD-UAP, AS-UAP), the transfer
    matrix; then the figures and summary.json's extras."""
    run, preset, args = ctx.run, ctx.preset, ctx.args
    from sbjax.eval import attacks as A
    from sbjax.eval import metrics as M
    from sbjax.models import make_model

    extra: dict[str, Any] = {
        "transfer": {},
        "bounds": {},
        "sweep_wall_s": {},
        "uap_fit_split": args.uap_fit_split,
    }
    heat: dict[str, dict[str, np.ndarray]] = {}  # "<ds>/<kind>" -> model -> [d] (one seed)
    heat_seed: dict[str, dict[str, int]] = {}  # dataset -> model -> the seed shown
    for ds_name in preset.datasets:
        n_test = int(per_dataset(preset.n_test, ds_name))
        ds, train, test = make_data(ds_name, preset.d, preset.n_train, n_test, run.seed)
        bounds = A.data_bounds(train[0], test[0])
        extra["bounds"][ds_name] = {
            "lo": bounds[0],
            "hi": bounds[1],
            "drange": bounds[1] - bounds[0],
        }
        fit = test if args.uap_fit_split == "test" else (train[0][:n_test], train[1][:n_test])
        tcfg = dataset_config(preset, ds_name)
        models = list(per_dataset(preset.models, ds_name))
        if not models:
            continue
        stacks, svd_uaps, used = {}, {}, {}
        for m_name in models:
            model = make_model(MODELS[m_name])
            sweep = f"{ds_name}_{m_name}"
            timings: dict[str, Any] = {}
            # One evaluation period per chunk, so a converged sweep stops at once.
            r = run_sweep(
                run, sweep, tcfg, model, train, test, timings=timings, periods_per_chunk=1
            )
            extra["sweep_wall_s"][sweep] = timings[sweep]["call_s"]
            metrics, arrays = attack_stack(
                model,
                r.params,
                ds,
                fit,
                test,
                bounds,
                preset.attacks[ds_name],
                eval_keys(run.seed, sweep, r.seed_index),
                preset.as_iters_scale,
            )
            metrics["train_acc"] = np.asarray(
                M.accuracy(model.logits, r.params, train[0], train[1], batch_size=8192), np.float64
            )
            metrics["stop_step"] = np.asarray(r.stop_step, np.float64)
            metrics["converged"] = np.asarray([s == "converged" for s in r.stop_reason], np.float64)
            rec = run.add_result(
                dataset=ds_name,
                model=m_name,
                metrics=metrics,
                part="fig4",
                expect="relies on S: PGD and UAP accuracy ~0, perturbations on S (frac ~1)",
                **paper_values(ds_name, m_name),
                status=r.stop_reason,
                require_converged=REQUIRE_CONVERGED,
                test_size=class_sizes(test[1]),
                uap_fit_split=args.uap_fit_split,
            )
            ok = used_mask(rec)
            stacks[m_name] = (model, r.params)
            svd_uaps[m_name] = arrays["svd_uap"]
            used[m_name] = ok
            if not ok.any():
                log.warning("%s: every model failed; no Fig. 4 heatmap", sweep)
                continue
            # Figures show the first seed that did not fail.
            first = int(np.flatnonzero(ok)[0])
            for kind in ("svd_uap", "as_uap"):
                u_can = np.asarray(ds.to_canonical(arrays[kind]))
                heat.setdefault(f"{ds_name}/{kind}", {})[m_name] = u_can[first]
            heat.setdefault(f"{ds_name}/pgd", {})[m_name] = arrays["pgd_delta_can_abs_mean"][first]
            heat_seed.setdefault(ds_name, {})[m_name] = int(r.seed_index[first])
        extra["transfer"][ds_name] = transfer_matrix(stacks, svd_uaps, test, bounds, used)
    _figures(run, extra, heat)
    # The heatmaps' vectors: the first seed of each model that did not fail (`uap_heatmap_seed`).
    extra["uap_heatmap"] = {
        k: {m: np.abs(v).tolist() for m, v in d.items()} for k, d in heat.items()
    }
    extra["uap_heatmap_seed"] = heat_seed
    ctx.extra.update(extra)


def _figures(run, extra: dict[str, Any], heat: Mapping[str, Mapping[str, np.ndarray]]) -> None:
    for key, per_model in heat.items():
        if not key.endswith("uap"):
            continue
        ds_name, kind = key.split("/")
        run.figure(
            f"fig4_{kind}_{ds_name}.png",
            "uap_heatmaps",
            uaps={m: np.abs(u) for m, u in per_model.items()},
            title=f"Fig. 4: |{kind.replace('_', '-').upper()}| in the canonical basis, "
            f"{ds_name} (first seed that did not fail)",
        )
    for ds_name, tr in extra["transfer"].items():
        # None (no used pair: every model of an architecture failed) -> NaN, an empty cell.
        mean = np.asarray([[np.nan if v is None else v for v in row] for row in tr["mean"]])
        run.figure(
            f"uap_transfer_{ds_name}.png",
            "transfer_matrix",
            matrix=mean,
            labels=list(tr["archs"]),
            title=f"SVD-UAP transfer accuracy, {ds_name}",
        )


EXPERIMENT = Experiment(
    NAME,
    __doc__,
    PRESETS,
    preset_help=PRESET_HELP,
    options=add_options,
    prepare=lambda ctx: select_models(ctx.preset, ctx.args.models),
    check=check_preset,
    config=lambda ctx: {"uap_fit_split": ctx.args.uap_fit_split},
    body=run_datasets,
)
main = EXPERIMENT.main


if __name__ == "__main__":
    main()
