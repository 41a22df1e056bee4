"""Evaluation shared by the synthetic-data experiments: per-model keys and one `evaluate_stack`.

* `eval_keys(seed, cells, seed_index)` -- one PRNG key per model [M]:
  fold_in(fold_in(key(seed), stable_tag("eval", cell_m)), seed_index[m]). A model's
  randomizations depend only on its own (cell, seed index): cells never share a draw and seed s
  of a cell gets the same key in any sweep size, so reruns reproduce. `sweep_eval_keys` makes
  each grid point of a traced grid its own cell (`<cell>/<grid point>`).
* `evaluate_stack` -- standard, S-randomized and S^c-randomized accuracy / AUC of every model of
  a stack in one compiled call, the Table 1 verdict, logit KS distances, train accuracy and
  (optionally) coordinate-wise randomized accuracy and the scores behind Fig. 3(a).
* `metric_test_sizes`, `stop_metrics`, `split_by_grid` -- record helpers.

Nothing here imports JAX at module level.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from experiments.synthetic import class_sizes, stable_tag

# Metric names of `evaluate_stack` (coordinate-wise ones only with per_coordinate=True).
COORD_METRICS = ("coord0_rand_acc", "min_sc_coord_rand_acc")


def eval_key(seed: int, *tags: Any):
    """The evaluation key of a cell (e.g. a sweep name): fold_in(key(seed), stable_tag(...))."""
    import jax

    return jax.random.fold_in(jax.random.key(seed), stable_tag("eval", *tags))


def eval_keys(seed: int, cells: str | Sequence[str], seed_index: Any):
    """Evaluation keys [M], one per model, each from its own (cell, seed index).

    Model m gets fold_in(fold_in(key(seed), stable_tag("eval", cell_m)), seed_index[m]).

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
    if len(cells) != seed_index.size:
        raise ValueError(f"eval_keys: {len(cells)} cells for {seed_index.size} models")
    tags = jnp.asarray([stable_tag("eval", c) for c in cells], jnp.uint32)
    root = jax.random.key(seed)
    return jax.vmap(lambda t, s: jax.random.fold_in(jax.random.fold_in(root, t), s))(
        tags, jnp.asarray(seed_index, jnp.uint32)
    )


def grid_point_tag(point: Mapping[str, Any]) -> str:
    """A grid point as stable text, e.g. "dropout_rate=0.1,weight_decay=0.0001"."""
    return ",".join(f"{k}={float(v)!r}" for k, v in sorted(point.items()))


def sweep_eval_keys(seed: int, cell: str, r) -> Any:
    """`eval_keys` of a sweep's models [M]: the cell is the sweep, and with a traced grid each
    grid point is its own cell (`cell/<grid point>`), so grid cells do not share draws.

    Args:
      seed: the run's root seed. cell: the sweep's name.
      r: the `SweepResult` (seed_index, grid_index, grid_points).
    """
    if len(r.grid_points) > 1:
        cells = [f"{cell}/{grid_point_tag(r.grid_points[int(g)])}" for g in r.grid_index]
    else:
        cells = cell
    return eval_keys(seed, cells, r.seed_index)


def coords_basis(
    rotation: Any, simple_coords: Sequence[int], complex_coords: Sequence[int] | None, d: int
):
    """A `sbjax.eval.randomize.Basis` with explicit S / S^c (None: every coordinate not in S)."""
    from sbjax.eval import randomize as R

    return R.as_basis(
        rotation=rotation,
        simple_coords=tuple(simple_coords),
        complex_coords=None if complex_coords is None else tuple(complex_coords),
        dim=int(d),
    )


def evaluate_stack(
    logits_fn,
    params,
    basis,
    test,
    key,
    *,
    train=None,
    mode: str = "permute",
    auc_kind: str = "roc",
    per_coordinate: bool = False,
    coord_n_test: int | None = None,
    scores: bool = False,
    batch_size: int | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Metrics of every model of a stack, one compiled call per kind (keys vmapped with models).

    Args:
      logits_fn: `model.logits`; params: variables stacked [M, ...].
      basis: a dataset (rotation, S, S^c) or a `Basis` (`coords_basis`).
      test: (x, y) NumPy arrays. train: (x, y) for train_acc, or None.
      key: PRNG keys [M], one per model (`eval_keys`), or one key shared by every model. Model
        i's coordinate-wise randomizations use fold_in(key[i], 7).
      mode, auc_kind: see `sbjax.eval.randomize.randomization_report` (reference: permute / roc;
        "both" adds *_pr_auc metrics).
      per_coordinate: also the coordinate-wise randomized accuracy [M, d] (every canonical
        coordinate) on the first `coord_n_test` test points (None: all), and its summaries
        coord0_rand_acc (mean over S) and min_sc_coord_rand_acc.
      scores: return the standard / randomized scores [M, n] (Fig. 3(a)).
      batch_size: evaluation chunk (None: the library's default).

    Returns:
      (metrics: name -> float64 [M]: train_acc (with `train`), test_acc, test_auc, s_rand_acc,
      s_rand_auc, sc_rand_acc, sc_rand_auc, logit_ks_s, logit_ks_sc, exclusive_s_invariant_sc
      (1.0 where `reliance_summary` finds exclusive reliance on S and invariance to S^c, paper
      Table 1), [coordinate metrics]; arrays: y_test, checks (Table 1), [scores],
      [coord_rand_acc [M, d]]).

    Note:
      One randomization draw per model (its own key): the spread over seeds then includes the
      permutation's sampling noise, as independent runs of the reference would.
    """
    import jax

    from sbjax.eval import metrics as M
    from sbjax.eval import randomize as R

    x_te, y_te = test
    per_model = M.check_model_keys(key, M.num_models(params))
    rep = R.randomization_report(
        logits_fn,
        params,
        x_te,
        y_te,
        key,
        basis,
        mode=mode,
        auc_kind=auc_kind,
        return_scores=scores,
        batch_size=batch_size,
    )
    rep = jax.tree.map(np.asarray, rep)
    verdict = R.reliance_summary(rep)
    auc = "pr_auc" if auc_kind == "pr" else "roc_auc"
    out: dict[str, Any] = {}
    if train is not None:
        out["train_acc"] = M.evaluate(logits_fn, params, train[0], train[1], batch_size=batch_size)[
            "accuracy"
        ]
    for short, name in (
        ("test", "standard"),
        ("s_rand", "s_randomized"),
        ("sc_rand", "sc_randomized"),
    ):
        out[f"{short}_acc"] = rep[name]["accuracy"]
        out[f"{short}_auc"] = rep[name][auc]
    out["logit_ks_s"] = rep["logit_ks"]["s_randomized_vs_all"]
    out["logit_ks_sc"] = rep["logit_ks"]["sc_randomized_vs_same_class"]
    out["exclusive_s_invariant_sc"] = np.asarray(verdict["exclusive_s_invariant_sc"])
    if auc_kind == "both":
        for short, name in (
            ("test", "standard"),
            ("s_rand", "s_randomized"),
            ("sc_rand", "sc_randomized"),
        ):
            out[f"{short}_pr_auc"] = rep[name]["pr_auc"]
    arrays: dict[str, Any] = {
        "y_test": np.asarray(y_te),
        "checks": {k: np.asarray(v) for k, v in verdict["checks"].items()},
    }
    if scores:
        arrays["scores"] = {k: np.asarray(v) for k, v in rep["scores"].items()}
    if per_coordinate:
        b = R.as_basis(basis)
        n_c = x_te.shape[0] if coord_n_test is None else min(int(coord_n_test), x_te.shape[0])
        acc = np.asarray(
            R.per_coordinate_randomized(
                logits_fn,
                params,
                x_te[:n_c],
                y_te[:n_c],
                M.fold_in_keys(key, 7, per_model),
                basis,
                mode=mode,
                batch_size=batch_size,
            )["accuracy"]
        )  # [M, d]
        out["coord0_rand_acc"] = acc[:, list(b.simple_coords)].mean(axis=1)
        out["min_sc_coord_rand_acc"] = acc[:, list(b.complex_coords)].min(axis=1)
        arrays["coord_rand_acc"] = acc
    return {k: np.asarray(v, np.float64) for k, v in out.items()}, arrays


def metric_test_sizes(
    metrics: Mapping[str, Any],
    y_test: Any,
    coord_n_test: int | None = None,
    other_sets: Mapping[str, Any] | None = None,
) -> dict[str, tuple[int, int]]:
    """{metric: (n_pos, n_neg)} of the set each metric is measured on: the test set, except the
    coordinate-wise metrics (its first `coord_n_test` points) and `other_sets` ({metric: labels
    y} of metrics measured on another set)."""
    n_c = None if coord_n_test is None else int(coord_n_test)
    coord = class_sizes(np.asarray(y_test)[:n_c])
    full = class_sizes(y_test)
    other = {k: class_sizes(v) for k, v in (other_sets or {}).items()}
    return {k: other.get(k, coord if k in COORD_METRICS else full) for k in metrics}


def stop_metrics(r) -> dict[str, np.ndarray]:
    """Per-model stop_step and converged (1.0 / 0.0) of a `SweepResult`."""
    return {
        "stop_step": np.asarray(r.stop_step, np.float64),
        "converged": np.asarray([s == "converged" for s in r.stop_reason], np.float64),
    }


def split_by_grid(r, metrics: Mapping[str, np.ndarray]) -> list[tuple[dict, np.ndarray]]:
    """[M] metric arrays of a traced-grid sweep -> per grid point ({name: [n_seeds]}, mask [M])."""
    out = []
    for g in range(len(r.grid_points)):
        mask = np.asarray(r.grid_index) == g
        out.append(({k: np.asarray(v)[mask] for k, v in metrics.items()}, mask))
    return out
