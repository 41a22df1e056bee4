"""App. E.2.1 (Fig. 7): L2 adversarial training on AdvMS-(5,7) does not mitigate simplicity bias.

AdvMS-(5,7) (REFERENCE.md Sec. 1.9): d = 20, ten 5-slabs with margin 0.05 (S, the simple features)
and ten 7-slabs with margin 0.15 (S^c), rotated; 6000 training points. Standard SGD already reaches
~100 % test accuracy. The paper trains (200,2)-, (1000,2)- and (2000,2)-FCNs with L2 PGD
adversarial training over a range of budgets eps and reports, against eps: standard accuracy,
eps-robust accuracy, and S- / S^c-randomized accuracy. Finding: for eps <= gamma_S = 0.30 (the
maximum margin of a classifier on S alone) the robust models rely only on the ten 5-slabs
(S-randomized accuracy ~50 %, S^c-randomized unchanged); for larger eps training fails (~50 %),
although the data margin (~0.62) would allow a classifier robust at eps > 0.3 that uses the
7-slabs. (200,2): 100 % standard and robust for eps <= 0.1, fails for eps >= 0.2; (1000,2):
100 % for eps <= 0.25, fails for eps >= 0.3; width 2000 does not help.

Implementation: per width ONE compiled `train_sweep` over seeds x the eps grid (eps is a traced
hyperparameter, `TrainConfig(adv_norm="l2")`, PGD inside every training step); each model keeps
its best evaluation by PGD accuracy on an independent validation set (`select_metric=
"val_robust_acc"`, the reference's nb05 choice, on a validation set rather than the test set).
Then on the test set: standard accuracy, ``robust_acc`` = accuracy under L2 PGD at the model's
own training eps (`sbjax.eval` attacks, more steps than in training), and S- / S^c-randomized
accuracy and AUC (S = the ten 5-slab coordinates, S^c = the ten 7-slabs).

Records: one per (width, eps): dataset ``adv_ms57``, model ``fcn_<w>x2``, fields ``width``,
``eps``; metrics ``train_acc``, ``test_acc``, ``robust_acc``, ``s_rand_acc``, ``s_rand_auc``,
``sc_rand_acc``, ``sc_rand_auc``, ``test_auc``.

Failed models: a diverged model is excluded from every mean and std of its record and counted
(``n_diverged``, ``seed_status``; "status": "all models failed" with mean None when no seed is
left). Convergence is NOT required (`REQUIRE_CONVERGED = False`): the paper trains every model for
a fixed budget (4000 epochs) with no stop rule (`stop_rule="none"`), and a model that fails to
train at a large eps is the finding (Fig. 7: ~50 % for eps >= gamma_S), not a failed run. Every
model therefore ends on its budget and is recorded as "unconverged_used" (used, and counted in
``n_unconverged``, which equals ``n_total`` by design).

Records name their part (the model and its training eps) and what the paper expects there
(App. E.2.1: 100 % standard and robust accuracy with S-randomized accuracy 0.5 up to eps 0.1 for
width 200 and eps 0.25 for widths 1000 / 2000; training fails, ~50 %, from eps 0.2 / 0.3 on), with
those values in `paper`.

Any preset value can be changed with --set, e.g.::

    python -m experiments.adversarial_training --preset quick --out runs/adversarial_training
    python -m experiments.adversarial_training --preset quick --set epochs=50 \
        --set "eps_grid=(0.0, 0.1, 0.3)" --out runs/adv_short

Fig. 7 is saved with its data (`figures/`); `python -m sbjax.plots RUN_DIR` redraws it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from experiments.common import (
    Context,
    Experiment,
    check_train_fields,
    run_sweep,
    train_field,
)
from sbjax.validate import check_int, check_range, fail

log = logging.getLogger("sbjax.experiments.adversarial_training")

NAME = "adversarial_training"
GAMMA_S = 0.30  # paper App. E.2.1: max margin of a classifier using the 5-slabs only (stated)
GAMMA_DATA = 0.62  # paper App. E.2.1: stated data margin
# Fixed training budget, no stop rule (paper App. E.2.1): only divergence fails a model.
REQUIRE_CONVERGED = False


@dataclasses.dataclass(frozen=True)
class Preset:
    """Settings of the adversarial-training experiment.

    Attributes:
      n_seeds: seeds per (width, eps).
      widths: FCN widths (depth `depth`), one compiled sweep each.
      depth: hidden layers.
      eps_grid: L2 training budgets (a traced grid: one compile per width).
      n_train, n_val, n_test: AdvMS-(5,7) set sizes (paper: 6000 training points).
      epochs: training epochs; lr_boundaries_epochs: epochs where the lr is multiplied by
        `lr_decay` (paper: 4000 epochs, x0.1 every 1000).
      lr, momentum, weight_decay, batch_size: SGD settings.
      adv_steps, adv_step_frac: PGD in training (steps, step size as a fraction of eps).
      eval_steps, eval_step_frac: PGD of the robust-accuracy evaluation.
      evals: number of evaluations (validation robust accuracy for model selection) per run.
    """

    n_seeds: int
    widths: tuple[int, ...]
    eps_grid: tuple[float, ...]
    epochs: int
    lr_boundaries_epochs: tuple[int, ...]
    depth: int = 2
    n_train: int = 6000
    n_val: int = 2000
    n_test: int = 5000
    lr: float = 0.1
    lr_decay: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 5e-5
    batch_size: int = 256
    adv_steps: int = 40
    adv_step_frac: float = 0.1
    eval_steps: int = 40
    eval_step_frac: float = 0.1
    evals: int = 20


PRESETS: dict[str, Preset] = {
    # Seconds: a tiny width, 2 budgets, a handful of epochs (plumbing only).
    "smoke": Preset(
        n_seeds=1,
        widths=(32,),
        eps_grid=(0.0, 0.3),
        epochs=6,
        lr_boundaries_epochs=(),
        n_train=1000,
        n_val=500,
        n_test=1000,
        momentum=0.9,
        adv_steps=3,
        adv_step_frac=0.5,
        eval_steps=5,
        eval_step_frac=0.4,
        evals=2,
    ),
    # CPU minutes: width 200 only, 100 epochs instead of 4000 with momentum 0.9 (plain SGD at lr 0.1
    # needs ~100 epochs just to leave the 50 % plateau), lr x0.1 at epochs 60 and 85, 5-step PGD
    # in training (step 0.5 eps), 10-step PGD (step 0.25 eps) for robust accuracy, 2 seeds.
    "quick": Preset(
        n_seeds=2,
        widths=(200,),
        eps_grid=(0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4),
        epochs=100,
        lr_boundaries_epochs=(60, 85),
        momentum=0.9,
        adv_steps=5,
        adv_step_frac=0.5,
        eval_steps=10,
        eval_step_frac=0.25,
        evals=10,
    ),
    # Paper App. E.2.1 / App. B: widths 200/1000/2000, 4000 epochs, lr 0.1 x0.1 every 1000
    # epochs, PGD 40 steps with step 0.1 eps, 5 seeds (GPU/TPU).
    "paper": Preset(
        n_seeds=5,
        widths=(200, 1000, 2000),
        eps_grid=(0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6),
        epochs=4000,
        lr_boundaries_epochs=(1000, 2000, 3000),
        evals=40,
    ),
}

PRESET_HELP = {
    "smoke": "seconds; width 32, eps {0, 0.3}, 6 epochs on 1000 points (plumbing only)",
    "quick": "CPU minutes; width 200, 7 budgets eps 0..0.4, 100 epochs with momentum, 2 seeds",
    "paper": "App. E.2.1: widths 200 / 1000 / 2000, 11 budgets, 4000 epochs, 5 seeds (GPU / TPU)",
}


def check_preset(p: Preset) -> None:
    """Checks a preset (after --set overrides) before any work; the SGD and PGD settings by
    `TrainConfig` itself.

    Raises:
      ValueError: naming the preset key (as --set spells it), the value and what is allowed.
    """
    check_int("n_seeds", p.n_seeds, min_value=1)
    if not p.widths:
        fail("widths", p.widths, "at least one FCN width")
    for w in p.widths:
        check_int("widths", w, min_value=1)
    check_int("depth", p.depth, min_value=1)
    if not p.eps_grid:
        fail("eps_grid", p.eps_grid, "at least one L2 budget")
    for e in p.eps_grid:
        train_field("adv_eps")("eps_grid", e)
    check_int("epochs", p.epochs, min_value=1)
    for name in ("n_train", "n_val", "n_test"):
        check_int(name, getattr(p, name), min_value=2)
    check_train_fields(
        keys={"lr_boundaries": "lr_boundaries_epochs"},
        lr=p.lr,
        momentum=p.momentum,
        weight_decay=p.weight_decay,
        batch_size=p.batch_size,
        lr_boundaries=p.lr_boundaries_epochs,
        lr_decay=p.lr_decay,
        adv_steps=p.adv_steps,
        adv_step_frac=p.adv_step_frac,
    )
    bounds = list(p.lr_boundaries_epochs)
    if bounds and bounds[-1] >= p.epochs:
        fail(
            "lr_boundaries_epochs",
            p.lr_boundaries_epochs,
            f"increasing epochs in 1..epochs - 1 = {p.epochs - 1}",
        )
    if p.batch_size > p.n_train:
        fail("batch_size", p.batch_size, f"at most n_train = {p.n_train}")
    for name in ("eval_steps", "evals"):
        check_int(name, getattr(p, name), min_value=1)
    check_range("eval_step_frac", p.eval_step_frac, 0.0, None, lo_open=True)
    steps = p.epochs * -(-p.n_train // p.batch_size)
    if p.evals > steps:
        fail("evals", p.evals, f"at most the number of updates, {steps}")


# App. E.2.1 (REFERENCE.md Sec. 9.4): the largest eps with 100 % standard and robust accuracy and
# the smallest eps where training fails (~50 %), per width; widths the paper did not train have none.
PAPER_REGIMES = {200: (0.1, 0.2), 1000: (0.25, 0.3), 2000: (0.25, 0.3)}


def expectation(width: int, eps: float) -> tuple[str | None, dict[str, float]]:
    """What the (width, eps) record should show per App. E.2.1, and the paper's values.

    Returns:
      (expect phrase or None, {metric: paper value}); between the two regimes (e.g. eps 0.15 at
      width 200) the paper states nothing.
    """
    if width not in PAPER_REGIMES:
        return None, {}
    ok, fails = PAPER_REGIMES[width]
    if eps <= ok + 1e-9:
        return (
            f"eps <= {ok:g}: ~100 % standard and robust accuracy, relies on the 5-slabs only "
            "(S-rand acc 0.5, S^c-rand acc unchanged)",
            {"test_acc": 1.0, "robust_acc": 1.0, "s_rand_acc": 0.5, "sc_rand_acc": 1.0},
        )
    if eps >= fails - 1e-9:
        return (
            f"eps >= {fails:g}: training fails, ~50 % standard and robust accuracy",
            {"test_acc": 0.5, "robust_acc": 0.5},
        )
    return f"between the paper's working (eps <= {ok:g}) and failing (eps >= {fails:g}) regimes", {}


def _data(run, preset: Preset):
    import jax

    from sbjax.data import make_dataset
    from sbjax.eval.attacks import data_bounds

    ds = make_dataset("adv_ms")
    key = jax.random.fold_in(jax.random.key(run.seed), 2000)
    train, test = ds.sample_split(jax.random.fold_in(key, 0), preset.n_train, preset.n_test)
    val = ds.sample(jax.random.fold_in(key, 1), preset.n_val)
    # Attack box: the range of the rotated data (train + val + test), as the reference does.
    bounds = data_bounds(train[0], val[0], test[0])
    return ds, train, val, test, bounds, key


def run_width(run, preset: Preset, width: int, ds, train, val, test, bounds, key) -> dict:
    """Adversarially trains every (seed, eps) of one width in one sweep; evaluates; adds records."""
    import jax

    from sbjax.eval import attacks as A
    from sbjax.eval.metrics import accuracy_from_logits, stacked_logits
    from sbjax.eval.randomize import randomization_report
    from sbjax.models import make_model
    from sbjax.train import TrainConfig

    t0 = time.perf_counter()
    steps_per_epoch = -(-preset.n_train // preset.batch_size)
    max_steps = preset.epochs * steps_per_epoch
    eval_every = max(1, max_steps // preset.evals)
    max_steps = eval_every * (max_steps // eval_every)
    cfg = TrainConfig(
        lr=preset.lr,
        momentum=preset.momentum,
        weight_decay=preset.weight_decay,
        batch_size=preset.batch_size,
        max_steps=max_steps,
        eval_every=eval_every,
        stop_rule="none",
        lr_boundaries=tuple(preset.lr_boundaries_epochs),
        lr_decay=preset.lr_decay,
        adv_norm="l2",
        adv_steps=preset.adv_steps,
        adv_step_frac=preset.adv_step_frac,
        adv_bounds=bounds,
        select_metric="val_robust_acc",
    )
    model_name = f"fcn_{width}x{preset.depth}"
    model = make_model({"name": "fcn", "width": width, "depth": preset.depth})
    r = run_sweep(
        run,
        f"adv_ms57_{model_name}",
        cfg,
        model,
        train,
        val,
        save="best_params",
        grid={"adv_eps": list(preset.eps_grid)},
    )
    params = r.best_params
    x_tr, y_tr = train
    x_te, y_te = test
    train_acc = np.asarray(
        accuracy_from_logits(stacked_logits(model.logits, params, x_tr, batch_size=4096), y_tr)
    )
    rep = randomization_report(
        model.logits, params, x_te, y_te, jax.random.fold_in(key, 3), ds, batch_size=4096
    )
    # Robust accuracy: L2 PGD at each model's own training eps (eps = 0: the clean accuracy).
    # eps is traced in `pgd_attack`, so the grid points share one compiled attack.
    robust = np.asarray(rep["standard"]["accuracy"], np.float64).copy()
    for g, eps in enumerate(preset.eps_grid):
        sel = np.asarray(r.grid_index) == g
        if eps > 0:
            res = A.pgd_attack(
                model.logits,
                r.select(params, sel),
                x_te,
                y_te,
                jax.random.fold_in(key, 4),
                norm="l2",
                eps=float(eps),
                step_size=preset.eval_step_frac * float(eps),
                n_iter=preset.eval_steps,
                bounds=bounds,
                batch_size=4096,
            )
            robust[sel] = np.asarray(res.accuracy)

    def by_grid(a):  # [M] -> [n_grid, n_seeds]
        return np.asarray(r.by_grid(np.asarray(a)))

    cols = {
        "train_acc": train_acc,
        "test_acc": rep["standard"]["accuracy"],
        "test_auc": rep["standard"]["roc_auc"],
        "robust_acc": robust,
        "s_rand_acc": rep["s_randomized"]["accuracy"],
        "s_rand_auc": rep["s_randomized"]["roc_auc"],
        "sc_rand_acc": rep["sc_randomized"]["accuracy"],
        "sc_rand_auc": rep["sc_randomized"]["roc_auc"],
    }
    grids = {k: by_grid(v) for k, v in cols.items()}
    reasons = by_grid(np.asarray(r.stop_reason))  # [n_grid, n_seeds]
    records = add_records(run, model_name, width, preset.eps_grid, grids, reasons, np.asarray(y_te))
    return {
        "width": width,
        "grids": grids,
        "records": records,
        "runtime_s": time.perf_counter() - t0,
        "compile_s": r.compile_s,
        "best_step": by_grid(r.best_step),
        "stop_reason": reasons.tolist(),
    }


def add_records(
    run,
    model_name: str,
    width: int,
    eps_grid: Sequence[float],
    grids: dict[str, np.ndarray],
    reasons: Any,
    y_test: np.ndarray,
) -> list[dict]:
    """Adds one record per eps of one width; diverged models are excluded and counted.

    Args:
      grids: metric -> float [n_grid, n_seeds] per model.
      reasons: [n_grid, n_seeds] stop reasons ("converged" | "diverged" | "max_steps").
      y_test: test labels (for each metric's sampling error).

    Returns:
      The records, in eps order.
    """
    y = np.asarray(y_test)
    test_size = (int(np.sum(y == 1)), int(np.sum(y != 1)))
    records = []
    for g, eps in enumerate(eps_grid):
        expect, paper = expectation(width, float(eps))
        extra = {"expect": expect} if expect else {}
        records.append(
            run.add_result(
                dataset="adv_ms57",
                model=model_name,
                metrics={k: v[g] for k, v in grids.items()},
                status=[str(x) for x in reasons[g]],
                require_converged=REQUIRE_CONVERGED,
                test_size=test_size,
                paper=paper,
                part=f"width {width}, eps {float(eps):g}",
                **extra,
                width=width,
                eps=float(eps),
            )
        )
    return records


def draw_figure(run, preset: Preset, records: Sequence[dict[str, Any]]) -> None:
    """Fig. 7 (accuracies vs training eps, one panel per width) from the records, with its data."""
    labels = {r["model"]: f"({r['width']},{preset.depth})-FCN" for r in records}
    run.figure(
        "fig7_adversarial_training.png",
        "adversarial_accuracy_vs_eps",
        records=records,
        gamma_s=GAMMA_S,
        labels=labels,
        title="L2 adversarial training on AdvMS-(5,7) (paper App. E.2.1, Fig. 7)\n"
        "mean ± std over non-diverged seeds; S-randomized ~0.5 = reliance on the 5-slabs "
        "only",
    )


def run_widths(ctx: Context) -> None:
    """Every width (one sweep over seeds x eps each), Fig. 7 and summary.json's extras."""
    run, preset = ctx.run, ctx.preset
    ds, train, val, test, bounds, key = _data(run, preset)
    outcomes = [run_width(run, preset, w, ds, train, val, test, bounds, key) for w in preset.widths]
    draw_figure(run, preset, [r for oc in outcomes for r in oc["records"]])
    ctx.extra.update(
        attack_bounds=list(bounds),
        gamma_s=GAMMA_S,
        gamma_data=GAMMA_DATA,
        width_runtime_s={str(oc["width"]): oc["runtime_s"] for oc in outcomes},
        best_step={str(oc["width"]): oc["best_step"] for oc in outcomes},
        stop_reason={str(oc["width"]): oc["stop_reason"] for oc in outcomes},
    )


EXPERIMENT = Experiment(
    NAME, __doc__, PRESETS, preset_help=PRESET_HELP, check=check_preset, body=run_widths
)
main = EXPERIMENT.main


if __name__ == "__main__":
    main()
