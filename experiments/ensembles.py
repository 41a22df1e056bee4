"""App. E.1 (Fig. 6) and the reference's ensemble notebook: ensembles do not mitigate simplicity bias.

Three studies, all with (100,2)-FCNs whose ensemble members are trained as ONE vmapped program
(`train_sweep(n_seeds=S, n_members=K)`: S independent ensembles of K members, each member with its
own initialisation and minibatch order, all on the same training set):

* ``lms5`` -- LMS-5 (reference nb04): ensembles of 3 members. The ensemble is still invariant to
  the 5-slabs S^c: S-randomized AUC ~0.5 and S^c-randomized AUC 1 (paper App. E.1; nb04: 1.000 /
  0.507 / 1.000).
* ``ms5`` -- MS-5 (every coordinate a 5-slab, all equally simple) with a training set small enough
  that single models overfit (~75 % test accuracy). Independent members latch on to different
  slabs, so ensembles of 5 and 10 improve test accuracy (paper: by ~15 % and ~20 %).
* ``noisy_lms7`` -- noisy LMS-7 with 50 % linear noise (best linear accuracy 0.75; the 7-slabs
  would give 100 %). Every member relies on the noisy linear coordinate and makes the same errors,
  so ensembles of 3, 5 and 10 stay at ~75 %.

An ensemble of size k is members 0..k-1 of a seed's K trained members. Aggregation: the mean of the
members' raw logits (the reference's choice) and, as a second record, the mean of the members'
softmax probabilities (`aggregation` field of each record: "logits" | "probs").

Records (summary.json): one per (dataset, ensemble_size, aggregation) with metrics
``test_acc`` (mean test accuracy of the ensemble's k members), ``train_acc`` (members' mean),
``ensemble_test_acc``, ``test_auc`` (ensemble ROC-AUC), ``s_rand_acc``, ``s_rand_auc``,
``sc_rand_acc``, ``sc_rand_auc`` (ensemble, S = canonical coordinate 0, S^c = the rest; the
reference's one-permutation randomization), each per seed (= per independent ensemble), and the
ensemble's gain in test accuracy:

* ``gain_vs_members_mean`` = ensemble_test_acc - test_acc: the ensemble against the mean of ITS OWN
  k members -- the honest gain of ensembling, and the one to quote.
* ``gain_vs_member0`` = ensemble_test_acc - member 0's test accuracy: the ensemble against the
  single model of the k = 1 record (one draw of a member, not the members' mean; Fig. 6's
  "ensemble vs single model" reading). Quoted alone it mixes the ensembling gain with member 0's
  luck; it is kept only to read the figure against.

Quick preset (docs/results/ensembles_quick, 3 seeds x 10 members, 4500 MS-5 training points):
logit-averaged MS-5 ensembles gain +5.5 (k = 5) and +6.6 (k = 10) points over their own members'
mean (+6.2 / +7.2 with probability averaging); the paper's +15 / +20 points are NOT reached (the
paper does not give its sample size).

Failed models (REFERENCE.md Sec. 3.2-3.3, nb04: every member trains until train accuracy >= 0.9999):
an ensemble with a diverged member is a failed ensemble, and so is one with a member that ran out
of its budget before meeting the stop rule (`REQUIRE_CONVERGED`): App. E.1's premise is members
that fit their training set yet overfit, and a member that never fitted is not such a model
(its `best_params` may even be its initial weights). Each record's seed (ensemble) status is the
worst of its k members' (`sbjax.eval.ensemble.ensemble_stop_reasons`); failed ensembles are
excluded from every mean and std of the record and counted (`n_seeds` used, `n_diverged`,
`n_unconverged`, `seed_status`; "status": "all models failed" with mean None when none is left).
The members' stop reasons are in summary["stop_reason"].

    python -m experiments.ensembles --preset quick --out runs/ensembles
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from experiments.common import SEED_OK, SEED_UNCONVERGED_USED, make_parser, seed_status, start_run

log = logging.getLogger("sbjax.experiments.ensembles")

NAME = "ensembles"
# Members must meet the stop rule (train accuracy >= 1 - stop_eps) to count: see the docstring.
REQUIRE_CONVERGED = True
# sbjax.eval.ensemble.AGGREGATIONS (imported lazily: JAX must not start before `start_run`).
AGGREGATIONS = ("logits", "probs")


@dataclasses.dataclass(frozen=True)
class Study:
    """One dataset of the ensemble experiment.

    Attributes:
      key: record name of the dataset ("lms5", "ms5", "noisy_lms7").
      dataset: `sbjax.data.make_dataset` name.
      dataset_params: its parameters, as (name, value) pairs.
      n_train, n_test: training / test set sizes.
      n_val: size of an independent validation set used to pick each member's best evaluation;
        0 selects on the test set as the reference does (nb04; REFERENCE.md Sec. 11 item 10).
      n_members: members trained per seed (the largest ensemble).
      ensemble_sizes: ensemble sizes evaluated (members 0..k-1); 1 = single models.
      lr, weight_decay, batch_size, max_steps, eval_every, stop_eps, patience: training
        (SGD, accuracy stop rule, REFERENCE.md Sec. 3.3).
    """

    key: str
    dataset: str
    dataset_params: tuple[tuple[str, Any], ...]
    n_train: int
    n_test: int
    n_val: int
    n_members: int
    ensemble_sizes: tuple[int, ...]
    lr: float = 0.1
    weight_decay: float = 5e-5
    batch_size: int = 256
    max_steps: int = 10_000
    eval_every: int = 1000
    stop_eps: float = 1e-4
    patience: int = 1


@dataclasses.dataclass(frozen=True)
class Preset:
    """Experiment preset: seeds, model and the studies to run."""

    n_seeds: int
    width: int
    depth: int
    studies: tuple[Study, ...]


def _studies(*, lms_train: int, lms_test: int, small_train: int, test: int, val: int,
             lms_members: int, members: int, sizes: tuple[int, ...], lms_steps: int,
             small_steps: int, eval_every: int, lms_eval_every: int) -> tuple[Study, ...]:
    return (
        # nb04: LMS-5, 100k/10k, lr 0.1, wd 5e-5, gap 5000, acc >= 0.9999, patience 1000,
        # best member on the test set, ENS_SIZE 3.
        Study("lms5", "lms", (("k", 5), ("d", 50)), lms_train, lms_test, 0, lms_members,
              tuple(s for s in (1, 3, 5, 10) if s <= lms_members), max_steps=lms_steps,
              eval_every=lms_eval_every, patience=1000 if lms_steps > 5000 else 1),
        # App. E.1: sample size chosen so single models overfit (the paper does not give it;
        # 4500 points give ~75 % single-model accuracy here).
        Study("ms5", "ms", (("k", 5), ("d", 50)), small_train, test, val, members, sizes,
              max_steps=small_steps, eval_every=eval_every),
        # App. E.1: noisy LMS-7 with 50 % linear noise (margin noise model: the best linear
        # classifier gets 1 - 0.5 / 2 = 0.75), same sample size.
        Study("noisy_lms7", "noisy_lms", (("k", 7), ("d", 50), ("p", 0.5)), small_train, test,
              val, members, sizes, max_steps=small_steps, eval_every=eval_every),
    )


PRESETS: dict[str, Preset] = {
    # Seconds: LMS-5 only (4000 points, 2 seeds of 3 members); checks the plumbing and the
    # ensemble's invariance to S^c.
    "smoke": Preset(n_seeds=2, width=100, depth=2, studies=_studies(
        lms_train=4000, lms_test=2000, small_train=1000, test=1000, val=500, lms_members=3,
        members=3, sizes=(1, 3), lms_steps=600, small_steps=200, eval_every=100,
        lms_eval_every=200)[:1]),
    # CPU minutes: LMS-5 with 20k training points instead of 100k, 3 seeds; MS-5 / noisy LMS-7
    # at the paper's sizes for App. E.1 (which does not state them) with 3 seeds of 10 members.
    "quick": Preset(n_seeds=3, width=100, depth=2, studies=_studies(
        lms_train=20_000, lms_test=10_000, small_train=4500, test=10_000, val=2000,
        lms_members=3, members=10, sizes=(1, 3, 5, 10), lms_steps=5000, small_steps=6000,
        eval_every=600, lms_eval_every=1000)),
    # Reference / paper sizes: LMS-5 100k/10k, 5 seeds of 10 members (ensembles 1, 3, 5, 10).
    "paper": Preset(n_seeds=5, width=100, depth=2, studies=_studies(
        lms_train=100_000, lms_test=10_000, small_train=4500, test=10_000, val=2000,
        lms_members=10, members=10, sizes=(1, 3, 5, 10), lms_steps=50_000, small_steps=20_000,
        eval_every=500, lms_eval_every=5000)),
}


def run_study(run, preset: Preset, study: Study, index: int) -> dict[str, Any]:
    """Trains one study's S x K members, evaluates every ensemble size, adds the records."""
    import jax

    from sbjax.data import make_dataset
    from sbjax.eval.metrics import accuracy_from_logits, stacked_logits
    from sbjax.eval.randomize import as_basis, randomize_block
    from sbjax.models import make_model
    from sbjax.train import TrainConfig, train_sweep

    t0 = time.perf_counter()
    ds = make_dataset(study.dataset, **dict(study.dataset_params))
    key = jax.random.fold_in(jax.random.key(run.seed), 1000 + index)
    train, test = ds.sample_split(jax.random.fold_in(key, 0), study.n_train, study.n_test)
    val = ds.sample(jax.random.fold_in(key, 1), study.n_val) if study.n_val else test
    model_name = f"fcn_{preset.width}x{preset.depth}"
    model = make_model({"name": "fcn", "width": preset.width, "depth": preset.depth})
    cfg = TrainConfig(lr=study.lr, weight_decay=study.weight_decay, batch_size=study.batch_size,
                      max_steps=study.max_steps, eval_every=study.eval_every, stop_rule="acc",
                      stop_eps=study.stop_eps, patience=study.patience)
    n_s, n_k = run.n_seeds, study.n_members
    r = train_sweep(cfg, model, train, val, n_seeds=n_s, n_members=n_k, seed=run.seed,
                    **run.sweep_kwargs(f"{study.key}_{model_name}_x{n_k}"))
    run.save_params(f"{study.key}_{model_name}", r.best_params)
    params = r.best_params  # the reference keeps each member's best evaluation

    x_tr, y_tr = train
    x_te, y_te = test
    member_train = np.asarray(accuracy_from_logits(
        stacked_logits(model.logits, params, x_tr, batch_size=4096), y_tr)).reshape(n_s, n_k)

    # Member logits on the test set and on ONE S- and ONE S^c-randomized copy of it (reference
    # permutation, shared by all members and ensembles: paired comparisons), computed once;
    # every ensemble size then aggregates slices of them.
    basis = as_basis(ds)
    rkey = jax.random.fold_in(key, 2)
    sets = {
        "standard": x_te,
        "s_rand": randomize_block(jax.random.fold_in(rkey, 0), x_te, basis.simple_coords,
                                  basis.rotation),
        "sc_rand": randomize_block(jax.random.fold_in(rkey, 1), x_te, basis.complex_coords,
                                   basis.rotation),
    }
    logits = {
        name: np.asarray(stacked_logits(model.logits, params, xs, batch_size=4096)).reshape(
            (n_s, n_k) + (x_te.shape[0], 2))
        for name, xs in sets.items()
    }
    member_test = np.asarray(accuracy_from_logits(logits["standard"], y_te))  # [S, K]
    curves = add_records(run, study, model_name, r.stop_reason, member_train, member_test, logits,
                         np.asarray(y_te))
    member_used = np.asarray([s in (SEED_OK, SEED_UNCONVERGED_USED) for s in seed_status(
        r.stop_reason, require_converged=REQUIRE_CONVERGED)]).reshape(n_s, n_k)
    return {
        "dataset": study.key,
        "member_test_acc": member_test,
        "member_used": member_used,
        "curves": curves,
        "stop_step": np.asarray(r.stop_step).reshape(n_s, n_k),
        "stop_reason": np.asarray(r.stop_reason).reshape(n_s, n_k).tolist(),
        "runtime_s": time.perf_counter() - t0,
    }


def add_records(run, study: Study, model_name: str, stop_reason: Sequence[str],
                member_train: np.ndarray, member_test: np.ndarray,
                logits: dict[str, np.ndarray], y_test: np.ndarray) -> dict[str, dict[int, dict]]:
    """Adds one record per (ensemble size, aggregation) of a study from its members' results.

    Args:
      run: the `experiments.common.Run`.
      study: the study (key, n_train, ensemble_sizes).
      model_name: record model name.
      stop_reason: the S K members' stop reasons, seed-major (`SweepResult.stop_reason`).
      member_train, member_test: float [S, K] members' train / test accuracy.
      logits: "standard" / "s_rand" / "sc_rand" -> float [S, K, n_test, 2] member logits.
      y_test: int [n_test] labels.

    Returns:
      aggregation -> ensemble size -> the record added (mean / std over used ensembles only).
    """
    from sbjax.eval.ensemble import aggregate_logits, ensemble_stop_reasons
    from sbjax.eval.metrics import metrics_from_logits

    n_k = member_test.shape[1]
    n_pos = int(np.sum(y_test == 1))
    test_size = (n_pos, int(y_test.size) - n_pos)
    curves: dict[str, dict[int, dict]] = {a: {} for a in AGGREGATIONS}
    for k in study.ensemble_sizes:
        # Ensemble e = members 0..k-1 of seed e: failed if any of them failed.
        status = ensemble_stop_reasons(list(stop_reason), n_k, size=k)
        members_mean = member_test[:, :k].mean(axis=1)
        for agg in AGGREGATIONS:
            m = {name: metrics_from_logits(aggregate_logits(lg[:, :k], agg), y_test)
                 for name, lg in logits.items()}
            ens_acc = np.asarray(m["standard"]["accuracy"], np.float64)
            metrics = {
                "test_acc": members_mean,
                "train_acc": member_train[:, :k].mean(axis=1),
                "ensemble_test_acc": ens_acc,
                "gain_vs_members_mean": ens_acc - members_mean,
                "gain_vs_member0": ens_acc - member_test[:, 0],
                "test_auc": np.asarray(m["standard"]["roc_auc"]),
                "s_rand_acc": np.asarray(m["s_rand"]["accuracy"]),
                "s_rand_auc": np.asarray(m["s_rand"]["roc_auc"]),
                "sc_rand_acc": np.asarray(m["sc_rand"]["accuracy"]),
                "sc_rand_auc": np.asarray(m["sc_rand"]["roc_auc"]),
            }
            curves[agg][k] = run.add_result(
                dataset=study.key, model=model_name, metrics=metrics, status=status,
                require_converged=REQUIRE_CONVERGED, test_size=test_size, ensemble_size=k,
                aggregation=agg, n_train=study.n_train)
    return curves


def _mean_std(rec: dict, key: str) -> tuple[float, float]:
    """A record metric's mean and std as floats for plotting (NaN where None: no used seed /
    fewer than two)."""
    st = rec["metrics"][key]
    return (np.nan if st["mean"] is None else st["mean"],
            np.nan if st["std"] is None else st["std"])


def plot(outcomes: Sequence[dict[str, Any]], path) -> None:
    """Fig. 6-style figure: test accuracy vs ensemble size per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(outcomes), figsize=(4.2 * len(outcomes), 3.6), squeeze=False)
    for ax, oc in zip(axes[0], outcomes, strict=True):
        sizes = sorted(oc["curves"]["logits"])
        for agg, style in (("logits", "o-"), ("probs", "s--")):
            ms = np.array([_mean_std(oc["curves"][agg][k], "ensemble_test_acc") for k in sizes])
            ax.errorbar(sizes, ms[:, 0], yerr=np.nan_to_num(ms[:, 1]), fmt=style, capsize=3,
                        label=f"ensemble ({agg} averaged)")
        # Members of failed ensembles' seeds stay out: only members that trained (used) count.
        single = np.asarray(oc["member_test_acc"])[np.asarray(oc["member_used"], bool)]
        if single.size:
            ax.axhline(single.mean(), color="gray", ls=":",
                       label=f"mean of the {single.size} used members")
        lo = min(0.45, float(single.min()) - 0.02) if single.size else 0.45
        ax.set_xticks(sizes)
        ax.set_xlabel("ensemble size")
        ax.set_ylabel("test accuracy")
        ax.set_title(oc["dataset"])
        ax.set_ylim(lo, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Ensembles of (100,2)-FCNs (paper App. E.1, Fig. 6); mean ± std over the "
                 "ensembles without a failed member", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_randomized(run, path) -> None:
    """Bar chart of the ensembles' standard / S- / S^c-randomized AUC per dataset and size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [r for r in run.results if r["aggregation"] == "logits"]
    labels = [f"{r['dataset']}\nk={r['ensemble_size']}" for r in recs]
    xs = np.arange(len(recs))
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(recs)), 3.6))
    for j, (key, lab) in enumerate((("test_auc", "standard"), ("s_rand_auc", "S-randomized"),
                                    ("sc_rand_auc", "S^c-randomized"))):
        ms = np.array([_mean_std(r, key) for r in recs]).reshape(-1, 2)
        ax.bar(xs + (j - 1) * 0.27, ms[:, 0], 0.27, yerr=np.nan_to_num(ms[:, 1]), capsize=2,
               label=lab)
    ax.axhline(0.5, color="k", lw=0.8, ls=":")
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("ensemble AUC")
    ax.set_ylim(0, 1.15)
    ax.legend(fontsize=7, ncol=3, loc="upper center")
    ax.set_title("Randomized AUC of logit-averaged ensembles (S = coordinate 0)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict:
    parser = make_parser(NAME, __doc__, PRESETS)
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    run = start_run(NAME, args, preset)
    outcomes = [run_study(run, preset, st, i) for i, st in enumerate(preset.studies)]
    plot(outcomes, run.path("fig6_ensembles.png"))
    plot_randomized(run, run.path("ensembles_randomized_auc.png"))
    extra = {
        "study_runtime_s": {oc["dataset"]: oc["runtime_s"] for oc in outcomes},
        "stop_step": {oc["dataset"]: oc["stop_step"] for oc in outcomes},
        "stop_reason": {oc["dataset"]: oc["stop_reason"] for oc in outcomes},
        "figures": ["fig6_ensembles.png", "ensembles_randomized_auc.png"],
    }
    return run.finish(extra=extra)


if __name__ == "__main__":
    main()
