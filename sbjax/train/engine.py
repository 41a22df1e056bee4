"""The pure training program of ONE model; sweeps are `vmap`s of it.

`make_trainer(cfg, model, train, val)` does the Python-side work once (shapes, padding, optimizer
structure) and returns a `Trainer` whose functions are pure in (key, hparams, state):

* `init(key, hp) -> TrainState`
* `run(state, hp, data, n_periods) -> (TrainState, history)`: `n_periods` evaluation periods, each
  `eval_every` updates in a `lax.scan` followed by one evaluation (train / validation metrics, the
  stop rule, best-model selection). Evaluating only at period ends keeps the full-dataset passes
  out of the per-step loop: under `vmap` a `lax.cond` on the step would run both branches.
* `train(key, hp, data)`: init + the whole budget, the one-seed program of DESIGN.md.

Stopping is per model: a rule that fires sets `stop_step`; updates at or after it are masked, so a
converged model stops changing while the others go on (REFERENCE.md Sec. 3.2 semantics). Best-model
selection considers the evaluations the reference makes: those inside the patience window, never
the evaluation of the frozen model after it. The padded last batch of an epoch carries zero loss
weight and, for BatchNorm models, is masked out of the batch statistics.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sbjax.models.initializers import scale_params
from sbjax.train.adversarial import pgd_perturb
from sbjax.train.config import TrainConfig
from sbjax.train.optim import make_optimizer
from sbjax.train.shuffle import epoch_round_keys, permute_positions
from sbjax.validate import fail

# Named PRNG streams inside one model's key (fold_in(key, STREAM)).
STREAM_INIT, STREAM_SHUFFLE, STREAM_DROPOUT = 0, 1, 2

# stop_reason codes.
RUNNING, CONVERGED, DIVERGED = 0, 1, 2
STOP_REASONS = {RUNNING: "max_steps", CONVERGED: "converged", DIVERGED: "diverged"}

HISTORY_KEYS = (
    "step", "updates", "train_acc", "train_loss", "val_acc", "val_loss", "val_robust_acc",
)
STREAM_ADV, STREAM_ADV_EVAL = 3, 4


class TrainState(NamedTuple):
    """Carry of one model (every leaf gains a leading model axis under vmap).

    Attributes:
      variables: Flax variables {"params", optionally "batch_stats"}.
      opt_state: optax state.
      best_variables: the variables at the best evaluation so far (by `best_metric`), among the
        evaluations the reference would make: never the frozen parameters evaluated after the
        patience window (see `Trainer.end_period`).
      best_metric: float32 []; validation accuracy (train accuracy without a validation set).
      best_step: int32 []; update count of the best variables (0: the initial variables).
      step: int32 []; position in the shared step loop.
      stop_step: int32 []; updates at or after this step are masked out.
      stop_reason: int32 []; RUNNING (budget), CONVERGED or DIVERGED.
      key: the model's PRNG key.
    """

    variables: Any
    opt_state: Any
    best_variables: Any
    best_metric: jax.Array
    best_step: jax.Array
    step: jax.Array
    stop_step: jax.Array
    stop_reason: jax.Array
    key: jax.Array


@dataclasses.dataclass(frozen=True)
class TrainData:
    """Device-ready arrays shared by every model of a sweep (replicated, never vmapped).

    Attributes:
      x, y: training set, float32 [N, ...] and int32 [N], indexed by minibatches.
      x_train_eval, m_train_eval: train-metric set, [C, E, ...] chunks and float32 [C, E] validity.
      x_val, y_val, m_val: validation set in chunks (None when there is none).
    """

    x: jax.Array
    y: jax.Array
    x_train_eval: jax.Array
    y_train_eval: jax.Array
    m_train_eval: jax.Array
    x_val: jax.Array | None
    y_val: jax.Array | None
    m_val: jax.Array | None


jax.tree_util.register_dataclass(
    TrainData,
    data_fields=[f.name for f in dataclasses.fields(TrainData)],
    meta_fields=[],
)


def _chunk(x: np.ndarray, y: np.ndarray, size: int):
    """Pads (x, y) to a multiple of `size` and reshapes to [C, size, ...] with a validity mask."""
    n = x.shape[0]
    size = min(size, n)
    c = math.ceil(n / size)
    pad = c * size - n
    xp = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
    yp = np.concatenate([y, np.zeros((pad,), y.dtype)]) if pad else y
    m = np.concatenate([np.ones(n, np.float32), np.zeros(pad, np.float32)])
    return (
        xp.reshape((c, size) + x.shape[1:]),
        yp.reshape(c, size),
        m.reshape(c, size),
    )


def _check_xy(name: str, x: np.ndarray, y: np.ndarray) -> None:
    """Refuses non-finite inputs and labels outside {0, 1}, on the host, before any cast.

    Labels are checked on their raw values because `astype(int32)` would truncate 0.5 to 0 and the
    run would "converge" on labels nobody meant; a NaN/inf input would otherwise train for the whole
    budget and be reported as a diverged model.
    """
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        fail(f"{name} x", x.dtype, "a real-valued array")
    # min/max propagate NaN and expose +-inf without a full-size boolean temporary.
    if np.issubdtype(x.dtype, np.inexact) and x.size and not (
        np.isfinite(np.min(x)) and np.isfinite(np.max(x))
    ):
        bad = ~np.isfinite(x)
        rows = np.flatnonzero(bad.reshape(x.shape[0], -1).any(axis=1))
        fail(
            f"{name} x",
            f"<{int(bad.sum())} NaN/inf value(s) in {rows.size} row(s), first row {rows[0]}>",
            "finite inputs (clean or drop those rows)",
        )
    ok = np.isin(y, (0, 1))
    if not ok.all():
        fail(f"{name} labels", np.unique(y[~ok])[:5].tolist(),
             "labels in {0, 1} (integers, or floats exactly 0.0 / 1.0)")


def _to_float32(name: str, x: np.ndarray) -> np.ndarray:
    """Casts to float32, refusing finite float64 values that the cast would turn into inf."""
    wide = np.issubdtype(x.dtype, np.floating) and x.dtype.itemsize > 4
    with np.errstate(over="ignore"):  # reported below as a ValueError instead
        x = x.astype(np.float32)
    if wide and x.size and not (np.isfinite(np.min(x)) and np.isfinite(np.max(x))):
        fail(name, "<values beyond the float32 range>", "finite float32 inputs (|x| < 3.4e38)")
    return x


def prepare_data(cfg: TrainConfig, train, val=None) -> TrainData:
    """Validates and packs host arrays into `TrainData` (float32 inputs, int32 labels).

    Args:
      cfg: the training configuration (batch and evaluation sizes).
      train: (x [N, ...] real, y [N] with values in {0, 1}).
      val: optional (x [M, ...], y [M]) with the same per-example shape as the training inputs.

    Returns:
      `TrainData` with x float32, y int32, and the evaluation sets in padded chunks.

    Raises:
      ValueError: mismatched shapes, an empty set, a batch larger than the training set, NaN/inf
        inputs or labels outside {0, 1} (in either set), before anything is compiled.
    """
    x, y = (np.asarray(a) for a in train)
    if x.ndim < 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        fail("train", (x.shape, y.shape), "(x [N, ...], y [N]) with matching N")
    if x.shape[0] == 0:
        fail("train", x.shape, "a non-empty training set")
    if cfg.batch_size > x.shape[0]:
        fail("batch_size", cfg.batch_size, f"at most the training-set size {x.shape[0]}")
    _check_xy("train", x, y)
    x = _to_float32("train x", x)
    y = y.astype(np.int32)
    n_te = x.shape[0] if cfg.train_eval_size is None else min(cfg.train_eval_size, x.shape[0])
    xe, ye, me = _chunk(x[:n_te], y[:n_te], cfg.eval_batch_size)
    xv = yv = mv = None
    if val is not None:
        vx, vy = (np.asarray(a) for a in val)
        if vx.shape[1:] != x.shape[1:] or vy.ndim != 1 or vx.shape[0] != vy.shape[0]:
            fail("val", (vx.shape, vy.shape), f"(x [M, {', '.join(map(str, x.shape[1:]))}], y [M])")
        if vx.shape[0] == 0:
            fail("val", vx.shape, "a non-empty validation set (or val=None)")
        _check_xy("val", vx, vy)
        vx = _to_float32("val x", vx)
        xv, yv, mv = _chunk(vx, vy.astype(np.int32), cfg.eval_batch_size)
    return TrainData(x, y, xe, ye, me, xv, yv, mv)


def per_example_loss(cfg: TrainConfig, logits: jax.Array, y: jax.Array) -> jax.Array:
    """float32 [n]: 2-logit cross-entropy, or hinge on the score logit1 - logit0 with y in {-1, 1}."""
    if cfg.loss == "ce":
        return optax.softmax_cross_entropy_with_integer_labels(logits, y)
    score = logits[:, 1] - logits[:, 0]
    return optax.hinge_loss(score, 2.0 * y - 1.0)


@dataclasses.dataclass(frozen=True)
class Trainer:
    """Pure functions of one model's training, built once per (config, model, data shapes)."""

    cfg: TrainConfig
    model: Any
    n_train: int
    steps_per_epoch: int
    has_val: bool

    # ---------------------------------------------------------------- init
    def init(self, key: jax.Array, hp: dict, data: TrainData) -> TrainState:
        """Initial state of one model: variables (times init_scale), optimizer state, counters."""
        variables = self.model.init(jax.random.fold_in(key, STREAM_INIT), data.x[:1])
        # Paper Table 9's init scale: kernels and biases only (not BN scales or PReLU slopes).
        variables = scale_params(dict(variables), hp["init_scale"])
        tx = make_optimizer(self.cfg, hp, self.steps_per_epoch)
        return TrainState(
            variables=variables,
            opt_state=tx.init(variables["params"]),
            best_variables=variables,
            best_metric=jnp.asarray(-jnp.inf, jnp.float32),
            best_step=jnp.asarray(0, jnp.int32),
            step=jnp.asarray(0, jnp.int32),
            stop_step=jnp.asarray(self.cfg.max_steps, jnp.int32),
            stop_reason=jnp.asarray(RUNNING, jnp.int32),
            key=key,
        )

    # ---------------------------------------------------------------- one update
    @property
    def pads_last_batch(self) -> bool:
        """Whether the last batch of an epoch is padded (n not a multiple of the batch size)."""
        return self.steps_per_epoch * self.cfg.batch_size > self.n_train

    def _bn_mask(self, variables, w: jax.Array) -> dict:
        """`apply` keyword that keeps padded rows out of BatchNorm batch statistics.

        The last partial batch of an epoch is padded with copies of one real example (weight 0 in
        the loss); without the mask those copies would still shift the batch mean and variance,
        which the reference's smaller last batch never sees (REFERENCE.md Sec. 3.1 and Sec. 12,
        "BatchNorm"). Models without "batch_stats" have no coupling between rows, and without
        padding every weight is 1, so both are called as before (bit-identical programs).
        """
        if "batch_stats" not in variables or not self.pads_last_batch:
            return {}
        return {"mask": w}

    def _batch_indices(self, key: jax.Array, step: jax.Array):
        b, n = self.cfg.batch_size, self.n_train
        epoch = step // self.steps_per_epoch
        positions = (step % self.steps_per_epoch) * b + jnp.arange(b, dtype=jnp.int32)
        valid = positions < n
        round_keys = epoch_round_keys(jax.random.fold_in(key, STREAM_SHUFFLE), epoch)
        idx = permute_positions(jnp.minimum(positions, n - 1), round_keys, n)
        return idx, valid.astype(jnp.float32)

    def _update(self, state: TrainState, hp: dict, data: TrainData) -> TrainState:
        cfg = self.cfg
        idx, w = self._batch_indices(state.key, state.step)
        xb, yb = data.x[idx], data.y[idx]
        dkey = jax.random.fold_in(jax.random.fold_in(state.key, STREAM_DROPOUT), state.step)
        variables = state.variables
        if cfg.adv_norm != "none":
            akey = jax.random.fold_in(jax.random.fold_in(state.key, STREAM_ADV), state.step)
            xb, variables = self._attack(variables, xb, yb, akey, hp["adv_eps"], w,
                                         train_mode=cfg.adv_bn_mode == "train")

        def loss_fn(params):
            logits, mutated = self.model.apply(
                {**variables, "params": params}, xb, train=True, key=dkey,
                dropout_rate=hp["dropout_rate"], **self._bn_mask(variables, w),
            )
            loss = jnp.sum(per_example_loss(cfg, logits, yb) * w) / jnp.sum(w)
            return loss, mutated

        grads, mutated = jax.grad(loss_fn, has_aux=True)(variables["params"])
        tx = make_optimizer(cfg, hp, self.steps_per_epoch)
        updates, opt_state = tx.update(grads, state.opt_state, variables["params"])
        new_vars = {**variables, **mutated, "params": optax.apply_updates(variables["params"], updates)}
        active = state.step < state.stop_step
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(active, a, b), new, old)
        return state._replace(
            variables=keep(new_vars, variables),
            opt_state=keep(opt_state, state.opt_state),
            step=state.step + 1,
        )

    def _attack(self, variables, x, y, key, eps, w, *, train_mode: bool):
        """PGD on one batch; in train mode BatchNorm statistics are threaded through the passes."""
        cfg = self.cfg
        has_stats = "batch_stats" in variables

        def loss_fn(xa, stats):
            v = {**variables, "batch_stats": stats} if has_stats else variables
            if train_mode and has_stats:
                logits, mutated = self.model.apply(v, xa, train=True, **self._bn_mask(v, w))
                stats = mutated.get("batch_stats", stats)
            else:
                logits = self.model.logits(v, xa)
            return jnp.sum(per_example_loss(cfg, logits, y) * w), stats

        x_adv, stats = pgd_perturb(
            loss_fn, x, key, eps, norm=cfg.adv_norm, steps=cfg.adv_steps,
            step_frac=cfg.adv_step_frac, bounds=cfg.adv_bounds, rand_init=cfg.adv_rand_init,
            aux=variables.get("batch_stats"),
        )
        if has_stats:
            variables = {**variables, "batch_stats": stats}
        return x_adv, variables

    def robust_accuracy(self, variables, key, eps, xs, ys, ms):
        """PGD accuracy of one model (eval-mode BatchNorm) over chunked data [C, E, ...]."""

        def body(acc, chunk):
            i, x, y, m = chunk
            xa, _ = self._attack(variables, x, y, jax.random.fold_in(key, i), eps, m,
                                 train_mode=False)
            logits = self.model.logits(variables, xa)
            return acc + jnp.sum((jnp.argmax(logits, -1) == y).astype(jnp.float32) * m), None

        idx = jnp.arange(xs.shape[0])
        n_correct, _ = jax.lax.scan(body, 0.0, (idx, xs, ys, ms))
        return n_correct / jnp.sum(ms)

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, variables, xs: jax.Array, ys: jax.Array, ms: jax.Array):
        """(accuracy, mean loss) of one model over chunked data [C, E, ...] with mask [C, E]."""

        def body(acc, chunk):
            x, y, m = chunk
            logits = self.model.logits(variables, x)
            correct = (jnp.argmax(logits, -1) == y).astype(jnp.float32)
            loss = per_example_loss(self.cfg, logits, y)
            return (acc[0] + jnp.sum(correct * m), acc[1] + jnp.sum(loss * m)), None

        (n_correct, loss_sum), _ = jax.lax.scan(body, (0.0, 0.0), (xs, ys, ms))
        n = jnp.sum(ms)
        return n_correct / n, loss_sum / n

    def _period(self, state: TrainState, hp: dict, data: TrainData):
        state, _ = jax.lax.scan(
            lambda s, _: (self._update(s, hp, data), None), state, None,
            length=self.cfg.eval_every,
        )
        return self.end_period(state, hp, data)

    def update(self, state: TrainState, hp: dict, data: TrainData) -> TrainState:
        """One (masked) update: the body of a period, for host-driven loops."""
        return self._update(state, hp, data)

    def end_period(self, state: TrainState, hp: dict, data: TrainData):
        """Evaluation, stop rules and best-model selection after `eval_every` updates.

        Args:
          state: one model's state at a period end (`state.step` a multiple of `eval_every`).
          hp: the model's traced hyperparameters.
          data: the shared `TrainData`.

        Returns:
          (state, row): the state with stop rule and best model updated, and the history row
          (`HISTORY_KEYS`, float32/int32 scalars) of this evaluation.
        """
        cfg = self.cfg
        # Whether the model was updating during the period that just ended (stop_step only
        # changes here, so it can be read after the updates).
        was_live = state.step - cfg.eval_every < state.stop_step
        tr_acc, tr_loss = self.evaluate(
            state.variables, data.x_train_eval, data.y_train_eval, data.m_train_eval
        )
        nan = jnp.asarray(jnp.nan, jnp.float32)
        va_rob = nan
        if self.has_val:
            va_acc, va_loss = self.evaluate(state.variables, data.x_val, data.y_val, data.m_val)
            if cfg.adv_norm != "none":
                rkey = jax.random.fold_in(jax.random.fold_in(state.key, STREAM_ADV_EVAL), state.step)
                va_rob = self.robust_accuracy(state.variables, rkey, hp["adv_eps"], data.x_val,
                                              data.y_val, data.m_val)
            metric = va_rob if cfg.select_metric == "val_robust_acc" else va_acc
        else:
            va_acc = va_loss = nan
            metric = tr_acc

        # Stop rules fire once, on a model still under its budget.
        undecided = (state.stop_reason == RUNNING) & was_live
        diverged = undecided & (~jnp.isfinite(tr_loss) | (tr_loss > cfg.diverge_loss))
        if cfg.stop_rule == "acc":
            met = tr_acc >= 1.0 - cfg.stop_eps
        elif cfg.stop_rule == "loss":
            met = tr_loss < cfg.stop_eps
        else:
            met = jnp.asarray(False)
        converged = undecided & ~diverged & met
        stop_step = jnp.where(
            converged,
            jnp.minimum(state.stop_step, state.step + cfg.patience - 1),
            jnp.where(diverged, jnp.minimum(state.stop_step, state.step), state.stop_step),
        )
        reason = jnp.where(converged, CONVERGED, jnp.where(diverged, DIVERGED, state.stop_reason))

        # Best model: only evaluations the reference also makes (REFERENCE.md Sec. 3.2, step 3):
        # those of a model that moved during this period and, once the stop rule has fired, whose
        # parameters are from inside the patience window (step <= stop_step). A period that runs
        # past stop_step evaluates the frozen final parameters, i.e. the reference's "final
        # patience evaluation", which it never considers. The budget end (stop_reason still
        # RUNNING) stays selectable: the reference has no such evaluation to exclude, and a budget
        # shorter than eval_every would otherwise never select trained parameters. Ties -> later,
        # like the reference's `>=`; a diverged model is never selected.
        in_window = (state.stop_reason == RUNNING) | (state.step <= state.stop_step)
        better = (
            was_live & in_window & ~diverged & jnp.isfinite(tr_loss)
            & (metric >= state.best_metric)
        )
        best_vars = jax.tree_util.tree_map(
            lambda a, b: jnp.where(better, a, b), state.variables, state.best_variables
        )
        updates = jnp.minimum(state.step, state.stop_step)  # updates actually applied so far
        state = state._replace(
            best_variables=best_vars,
            best_metric=jnp.where(better, metric, state.best_metric),
            best_step=jnp.where(better, updates, state.best_step),
            stop_step=stop_step.astype(jnp.int32),
            stop_reason=reason.astype(jnp.int32),
        )
        row = {
            "step": state.step,
            "updates": jnp.minimum(state.step, state.stop_step),
            "train_acc": tr_acc,
            "train_loss": tr_loss,
            "val_acc": va_acc,
            "val_loss": va_loss,
            "val_robust_acc": va_rob,
        }
        return state, row

    def run(self, state: TrainState, hp: dict, data: TrainData, n_periods: int):
        """Runs `n_periods` evaluation periods; returns the state and a history of [n_periods] rows."""
        return jax.lax.scan(lambda s, _: self._period(s, hp, data), state, None, length=n_periods)

    @property
    def total_periods(self) -> int:
        return math.ceil(self.cfg.max_steps / self.cfg.eval_every)

    def train(self, key: jax.Array, hp: dict, data: TrainData):
        """The whole budget for one model: pure, so `jit(vmap(train))` trains a sweep."""
        return self.run(self.init(key, hp, data), hp, data, self.total_periods)


def make_trainer(cfg: TrainConfig, model: Any, data: TrainData) -> Trainer:
    """Builds the `Trainer` of one model for this configuration and data shapes.

    Args:
      cfg: static training settings.
      model: an `sbjax.models.Model` (pure init / apply / logits).
      data: from `prepare_data`.
    """
    n = int(data.x.shape[0])
    b = cfg.batch_size
    spe = n // b if cfg.drop_last else math.ceil(n / b)
    return Trainer(cfg=cfg, model=model, n_train=n, steps_per_epoch=spe, has_val=data.x_val is not None)


def make_train(cfg: TrainConfig, model: Any, train, val=None):
    """DESIGN.md's core shape: returns a pure `train(key, hparams) -> (state, history)`.

    The data are closed over as device arrays. `jax.jit(jax.vmap(train))(keys, hparams)` trains a
    whole sweep; `train_sweep` adds sharding, chunking, checkpoints and progress on top of the same
    `Trainer` (and passes the data as arguments, so large datasets never become program constants).
    """
    data = prepare_data(cfg, train, val)
    trainer = make_trainer(cfg, model, data)
    data = jax.tree_util.tree_map(jnp.asarray, data)

    def train_fn(key: jax.Array, hparams: dict):
        return trainer.train(key, hparams, data)

    return train_fn
