"""Training configuration: static settings (shapes, rules) and traced hyperparameters.

Static settings change the compiled program (batch size, optimizer family, stop rule, number of
steps); they live in `TrainConfig`, a frozen dataclass. Hyperparameters that do not change shapes
(learning rate, momentum, weight decay, init scale, dropout rate) are traced scalars: their values
in `TrainConfig` are only defaults, and a sweep passes arrays of them, so a grid over them is one more
`vmap` axis and never a recompile.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sbjax.validate import check_choice, check_int, check_range, fail, is_real_number

HPARAM_NAMES = ("lr", "momentum", "weight_decay", "init_scale", "dropout_rate", "adv_eps")
OPTIMIZERS = ("sgd", "adam", "rmsprop")
LOSSES = ("ce", "hinge")
STOP_RULES = ("acc", "loss", "none")
SELECT_METRICS = ("val_acc", "val_robust_acc")
BATCH_ORDERS = ("per_model", "shared")
COMPUTE_DTYPES = ("float32", "bfloat16")


ADV_NORMS = ("none", "l2", "linf")  # TrainConfig.adv_norm: no attack, L2 or Linf PGD


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything about a training run except the model, the data and the seeds.

    Attributes:
      optimizer: "sgd" (heavy-ball momentum, PyTorch semantics), "adam" or "rmsprop" (PyTorch
        defaults: betas (0.9, 0.999), alpha 0.99, eps 1e-8 outside the square root).
      lr, momentum, weight_decay, init_scale, dropout_rate: default values of the traced
        hyperparameters. Weight decay is coupled L2 on all parameters (`g += wd * theta`), as in the
        reference (REFERENCE.md Sec. 3.1); momentum is ignored by Adam.
      batch_size: minibatch size; the epoch order is reshuffled per seed and epoch.
      drop_last: drop the last partial batch of an epoch (the reference keeps it).
      loss: "ce" (2-logit cross-entropy, the reference) or "hinge" (on logit1 - logit0).
      max_steps: update budget per model.
      eval_every: evaluate train / validation metrics and the stop rule every this many updates.
      stop_rule: "acc" (stop once train accuracy >= 1 - stop_eps), "loss" (train loss < stop_eps) or
        "none".
      stop_eps: threshold of the stop rule.
      patience: updates between meeting the stop rule and stopping, counted as in the reference
        (patience 1 stops right away; patience 1000 takes 999 more updates).
      diverge_loss: a train loss above this (or non-finite) marks a model as diverged and stops it
        (the reference uses 1e6, REFERENCE.md Sec. 3.2); must be > 0, and inf keeps only the
        non-finite test.
      train_eval_size: evaluate train metrics on the first this-many training points (None: all).
      eval_batch_size: chunk size of the evaluation passes (bounds memory, not results).
      lr_boundaries: strictly increasing epochs (integers >= 1) at which the learning rate is
        multiplied by `lr_decay` (step schedule, e.g. (30,) with lr_decay 0.2 for the reference's
        MNIST-CIFAR runs).
      lr_decay: multiplicative factor at each boundary.
      adv_norm: adversarial training: "none", "l2" or "linf" PGD on every training batch
        (`sbjax.train.adversarial`); the budget is the traced hyperparameter `adv_eps`.
      adv_eps: default PGD budget.
      adv_steps, adv_step_frac, adv_rand_init: PGD steps, step size as a fraction of eps, and
        random-start half-width (reference MNIST-CIFAR: 7 steps, 0.4, 1e-3).
      adv_bounds: (lo, hi) box for adversarial inputs ((0, 1) for images), or None.
      adv_bn_mode: BatchNorm mode during attack generation: "train" (the reference: batch
        statistics, running statistics updated by the attack passes) or "eval".
      select_metric: best-model selection on "val_acc" or, with adversarial training,
        "val_robust_acc" (PGD accuracy on the validation set, the reference's nb05 choice).
      sam: wrap the optimizer in sharpness-aware minimisation (`optax.contrib.sam`, opaque mode,
        `sbjax.train.optim`); each update then costs two gradient evaluations.
      sam_rho: default SAM radius, the traced hyperparameter "sam_rho" (only with sam=True).
      batch_order: "per_model" (the reference: every model reshuffles with its own key) or
        "shared" (every model of a sweep sees the same batch at each update, from a key of the
        sweep's seed: common random numbers for comparing grid points, and one wide first-layer
        matmul for all models; `train_sweep` with vectorize="vmap", loop="scan").
      compute_dtype: "float32" (default) or "bfloat16": mixed precision for the training
        forward and backward pass (parameters and inputs are cast to bfloat16 there, so matmuls
        take bfloat16 operands, which GPUs and TPUs multiply with float32 accumulation); the
        master parameters, gradients, optimizer state, loss, stop rule and every evaluation stay
        float32. For accelerators: XLA:CPU has no fast bfloat16 matmul, so it is slower there.
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    init_scale: float = 1.0
    dropout_rate: float = 0.0
    batch_size: int = 256
    drop_last: bool = False
    loss: str = "ce"
    max_steps: int = 10_000
    eval_every: int = 1000
    stop_rule: str = "acc"
    stop_eps: float = 1e-4
    patience: int = 1
    diverge_loss: float = 1e6
    train_eval_size: int | None = None
    eval_batch_size: int = 4096
    lr_boundaries: tuple[int, ...] = ()
    lr_decay: float = 0.1
    adv_norm: str = "none"
    adv_eps: float = 0.0
    adv_steps: int = 7
    adv_step_frac: float = 0.4
    adv_rand_init: float = 1e-3
    adv_bounds: tuple[float, float] | None = None
    adv_bn_mode: str = "train"
    select_metric: str = "val_acc"
    sam: bool = False
    sam_rho: float = 0.05
    batch_order: str = "per_model"
    compute_dtype: str = "float32"

    def __post_init__(self) -> None:
        # Every check runs here, in milliseconds, before anything is traced (DESIGN.md "Errors
        # and data safety"); numeric fields refuse bools, strings, NaN and (except diverge_loss)
        # inf, which would otherwise pass `float()` and fail, or silently train, much later.
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("loss", self.loss, LOSSES)
        check_choice("stop_rule", self.stop_rule, STOP_RULES)
        check_range("lr", self.lr, 0.0, None, lo_open=True)
        check_range("momentum", self.momentum, 0.0, 1.0, hi_open=True)
        check_range("weight_decay", self.weight_decay, 0.0, None)
        check_range("init_scale", self.init_scale, 0.0, None, lo_open=True)
        check_range("dropout_rate", self.dropout_rate, 0.0, 1.0, hi_open=True)
        check_int("batch_size", self.batch_size, min_value=1)
        if not isinstance(self.drop_last, bool | np.bool_):
            fail("drop_last", self.drop_last, "True or False")
        check_int("max_steps", self.max_steps, min_value=1)
        check_int("eval_every", self.eval_every, min_value=1)
        check_int("patience", self.patience, min_value=1)
        check_int("eval_batch_size", self.eval_batch_size, min_value=1)
        check_range("stop_eps", self.stop_eps, 0.0, None)
        check_range("diverge_loss", self.diverge_loss, 0.0, None, lo_open=True, finite=False)
        if self.train_eval_size is not None:
            check_int("train_eval_size", self.train_eval_size, min_value=1)
        _check_boundaries(self.lr_boundaries)
        check_range("lr_decay", self.lr_decay, 0.0, None, lo_open=True)
        check_choice("adv_norm", self.adv_norm, ADV_NORMS)
        check_range("adv_eps", self.adv_eps, 0.0, None)
        check_int("adv_steps", self.adv_steps, min_value=1)
        check_range("adv_step_frac", self.adv_step_frac, 0.0, None, lo_open=True)
        check_range("adv_rand_init", self.adv_rand_init, 0.0, None)
        check_choice("adv_bn_mode", self.adv_bn_mode, ("train", "eval"))
        check_choice("select_metric", self.select_metric, SELECT_METRICS)
        if not isinstance(self.sam, bool | np.bool_):
            fail("sam", self.sam, "True or False")
        check_range("sam_rho", self.sam_rho, 0.0, None)
        check_choice("batch_order", self.batch_order, BATCH_ORDERS)
        check_choice("compute_dtype", self.compute_dtype, COMPUTE_DTYPES)
        if self.select_metric == "val_robust_acc" and self.adv_norm == "none":
            fail("select_metric", self.select_metric, "'val_acc' unless adv_norm is 'l2' or 'linf'")
        if self.adv_bounds is not None:
            ab = self.adv_bounds
            ok = (
                isinstance(ab, tuple | list)
                and len(ab) == 2
                and all(is_real_number(b) and not math.isnan(float(b)) for b in ab)
                and float(ab[0]) < float(ab[1])
            )
            if not ok:
                fail("adv_bounds", ab, "None or a pair (lo, hi) of real numbers with lo < hi")

    def default_hparams(self, objective: Any = None) -> dict[str, float]:
        """Default values of every traced hyperparameter (see `hparam_names`)."""
        extra = objective.hparam_defaults if objective is not None else {}
        return {
            name: float(getattr(self, name)) if hasattr(self, name) else float(extra[name])
            for name in hparam_names(self, objective)
        }


def hparam_names(cfg: TrainConfig, objective: Any = None) -> tuple[str, ...]:
    """Traced hyperparameters of a run: HPARAM_NAMES, "sam_rho" with SAM, and the objective's
    (lambda_<penalty> for each penalty, and those of its batch transform)."""
    names = list(HPARAM_NAMES) + (["sam_rho"] if cfg.sam else [])
    if objective is not None:
        names += [n for n in objective.hparam_defaults if n not in names]
    return tuple(names)


def _check_boundaries(bounds: Any) -> None:
    """lr_boundaries: a tuple/list of strictly increasing integers >= 1 (epochs)."""
    allowed = "a tuple of strictly increasing integers >= 1 (epochs), e.g. (30,) or ()"
    if not isinstance(bounds, tuple | list):
        fail("lr_boundaries", bounds, allowed)
    for b in bounds:
        check_int("lr_boundaries", b, min_value=1)
    if any(int(a) >= int(b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)):
        fail("lr_boundaries", bounds, allowed)


def expand_grid(
    grid: Mapping[str, Sequence[float]] | None, names: Sequence[str] = HPARAM_NAMES
) -> list[dict[str, float]]:
    """Cartesian product of a hyperparameter grid, in row-major order of the given keys.

    Args:
      grid: e.g. {"lr": [0.01, 0.1], "weight_decay": [0, 5e-4]}; keys must be in `names` and
        each value a non-empty list (tuple, or 1-D array) of finite real numbers. Ranges are checked
        by `hparam_arrays` with the rules of the matching `TrainConfig` field.
      names: the allowed names (`hparam_names(cfg, objective)` for runs with SAM or an objective).

    Returns:
      A list of points (dicts); [{}] for an empty grid.

    Raises:
      ValueError: an unknown name, a scalar or empty value list, or a non-numeric, NaN or infinite
        value (named as ``grid['lr']`` with the offending value).
    """
    if not grid:
        return [{}]
    if not isinstance(grid, Mapping):
        fail("grid", grid, "a dict {hyperparameter name: list of values}")
    lists = {}
    for name, values in grid.items():
        if name not in names:
            fail("grid", name, "hyperparameter names among " + ", ".join(names))
        arg = f"grid[{name!r}]"
        allowed = "a non-empty list of finite real numbers, e.g. [0.01, 0.1]"
        # A bare scalar (grid={"lr": 0.1}) is the common slip; strings are sequences too.
        if isinstance(values, str | bytes | Mapping) or not (
            isinstance(values, Sequence) or getattr(values, "ndim", None) == 1
        ):
            fail(arg, values, allowed)
        values = list(values)
        if not values:
            fail(arg, values, allowed)
        for v in values:
            if not is_real_number(v) or not math.isfinite(float(v)):
                fail(arg, v, allowed)
        lists[name] = values
    names = list(lists)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*lists.values())]


def hparam_arrays(
    cfg: TrainConfig,
    points: Sequence[Mapping[str, float]],
    repeat: int,
    objective: Any = None,
    extra: Mapping[str, float] | None = None,
) -> dict:
    """Hyperparameters as float32 arrays [n_points * repeat], point-minor (model index = r * P + p).

    Every value that overrides a `TrainConfig` field is validated with that field's rules; the
    objective's strengths (lambda_*) must be finite real numbers (any sign).
    """
    out: dict[str, Any] = {}
    more = dict(extra or {})
    extra = {**(objective.hparam_defaults if objective is not None else {}), **more}
    for name in hparam_names(cfg, objective) + tuple(
        n for n in more if n not in hparam_names(cfg, objective)
    ):
        vals = []
        for p in points:
            if hasattr(cfg, name):
                v = p.get(name, getattr(cfg, name))
                # Validate the raw value: float() first would let a string such as "0.1" through.
                dataclasses.replace(cfg, **{name: v})
            else:
                v = p.get(name, extra[name])
                if not is_real_number(v) or not math.isfinite(float(v)):
                    fail(f"grid[{name!r}]", v, "a finite real number")
                if name == "unlabeled_mix" and not 0.0 <= float(v) <= 1.0:
                    fail(f"grid[{name!r}]", v, "a fraction in [0, 1]")
            vals.append(float(v))
        out[name] = np.tile(np.asarray(vals, np.float32), repeat)
    return out
