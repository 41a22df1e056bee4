"""The pure training program of ONE model; sweeps are `vmap`s of it.

`make_trainer(cfg, model, train, val)` does the Python-side work once (shapes, padding, optimizer
structure) and returns a `Trainer` whose functions are pure in (key, hparams, state):

* `init(key, hp) -> TrainState`
* `run(state, hp, data, n_periods) -> (TrainState, history)`: `n_periods` evaluation periods, each
  `eval_every` updates in a `lax.scan` followed by one evaluation (train / validation metrics, the
  stop rule, best-model selection). Evaluating only at period ends keeps the full-dataset passes
  out of the per-step loop: under `vmap` a `lax.cond` on the step would run both branches.
* `train(key, hp, data)`: init + the whole budget, the one-seed program of DESIGN.md.

What an update minimises beyond the data loss (penalties with traced strengths, example weights,
an unlabeled stream, frozen members, a batch transform such as PGD) comes from an `Objective`
(`sbjax.train.objective`, docs/objective.md); a `Trainer` may train a unit of K coupled members.
`objective.per_example_loss` stays the one data loss of evaluation, the stop rule and the attacks.

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
import optax

from sbjax.models.initializers import scale_params
from sbjax.train.adversarial import attack, pgd_transform
from sbjax.train.config import TrainConfig
from sbjax.train.data import TrainData, flip_count, flip_rows, prepare_data
from sbjax.train.objective import Context, Objective, per_example_loss
from sbjax.train.optim import make_optimizer
from sbjax.train.shuffle import epoch_round_keys, permute_positions
from sbjax.train.stopping import RUNNING, stop_decision
from sbjax.validate import fail

# Named PRNG streams inside one model's key (fold_in(key, STREAM)).
STREAM_INIT, STREAM_SHUFFLE, STREAM_DROPOUT = 0, 1, 2


HISTORY_KEYS = (
    "step",
    "updates",
    "train_acc",
    "train_loss",
    "val_acc",
    "val_loss",
    "val_robust_acc",
)
STREAM_ADV, STREAM_ADV_EVAL = 3, 4  # STREAM_ADV: the batch transform's key (PGD's random start)
STREAM_UNLABELED, STREAM_PENALTY = 5, 6


def monitor_key(name: str) -> str:
    """History key of the accuracy on monitor set `name`: "monitor_<name>_acc"."""
    return f"monitor_{name}_acc"


def to_compute_dtype(tree: Any, dtype: str) -> Any:
    """`tree` with its floating leaves cast to `dtype` (TrainConfig.compute_dtype); the identity
    for "float32". The cast sits inside the differentiated function, so gradients reach the
    float32 master parameters in float32."""
    if dtype == "float32":
        return tree
    target = jnp.dtype(dtype)

    def cast(a):
        return a.astype(target) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a

    return jax.tree_util.tree_map(cast, tree)


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
      objective_state: the state of the objective's `LossRule` (Group DRO's group weights,
        LfF's loss averages), () without one; a unit of K > 1 keeps one copy per member.
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
    objective_state: Any = ()


def _stack1(tree: Any) -> Any:
    """Adds a member axis of size 1 (K = 1 units keep their state without one)."""
    return jax.tree_util.tree_map(lambda a: a[None], tree)


class StepInputs(NamedTuple):
    """What one update of a unit reads besides the parameters (K-stacked where K > 1).

    shared: scalar hyperparameters; yb int32 [B] labels and w float32 [B] row validity of the
    batch; xs the (transformed) inputs, dkeys the dropout keys and variables the (transformed)
    variables of each member; rw the example weights of the rows or None; xu, valid_u the
    unlabeled batch; frozen_logits(_u) the frozen members' logits; key0, step0 the unit's key
    and step; idx int32 [B] the rows, groups their groups (or None); objective_state the unit's
    loss-rule state (member 0's copy); data the shared `TrainData`.
    """

    shared: dict
    yb: jax.Array
    w: jax.Array
    xs: Any
    dkeys: Any
    variables: Any
    rw: Any
    xu: Any
    valid_u: Any
    frozen_logits: Any
    frozen_logits_u: Any
    key0: jax.Array
    step0: jax.Array
    idx: jax.Array
    groups: Any
    objective_state: Any
    data: TrainData


MEMBER_INPUTS = "members"  # hp[MEMBER_INPUTS]: per-member inputs (example weights, init variables)
FROZEN_INPUTS = "frozen"  # hp[FROZEN_INPUTS]: variables of frozen members [F, ...]


def split_hparams(hp: dict) -> tuple[dict, dict, Any]:
    """(scalar hyperparameters, per-member inputs, frozen variables or None) of one unit."""
    shared = {k: v for k, v in hp.items() if k not in (MEMBER_INPUTS, FROZEN_INPUTS)}
    return shared, hp.get(MEMBER_INPUTS, {}), hp.get(FROZEN_INPUTS)


@dataclasses.dataclass(frozen=True)
class Trainer:
    """Pure functions of one training unit, built once per (config, model, objective, shapes).

    A unit is K = `unit_size` members of one seed trained together on the same batches; their
    objective may couple them (`sbjax.train.objective`). K = 1 is one independent model: its state
    has no member axis and its program is today's (bit for bit without an objective). For K > 1
    every leaf of the state has a leading member axis [K, ...].

    Attributes beyond the shapes: `objective` (static), `n_unlabeled` / `unlabeled_batch_size`
    (size of the unlabeled pool and of its batches; 0 without one), `has_weights` (per-example
    weights in hp["members"]["example_weights"]), `n_frozen` (frozen members in hp["frozen"]),
    `has_init` (start from hp["members"]["init_variables"] instead of a fresh init),
    `monitor_names` (the monitor sets in `data.monitor`, whose accuracy each evaluation records),
    `traced_rows` (train on the first `data.n_rows` rows, a traced count: epochs of
    ceil(n_rows / B) batches over those rows),
    `tx` (the optimizer, built once; its hyperparameters are state).
    """

    cfg: TrainConfig
    model: Any
    n_train: int
    steps_per_epoch: int
    has_val: bool
    objective: Objective = Objective()
    unit_size: int = 1
    n_unlabeled: int = 0
    unlabeled_batch_size: int = 0
    has_weights: bool = False
    n_frozen: int = 0
    has_init: bool = False
    monitor_names: tuple[str, ...] = ()
    traced_rows: bool = False
    tx: Any = dataclasses.field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if self.tx is None:
            tx = make_optimizer(self.cfg, self.cfg.default_hparams(), self.steps_per_epoch)
            object.__setattr__(self, "tx", tx)

    @property
    def history_keys(self) -> tuple[str, ...]:
        """Names of a history row: `HISTORY_KEYS`, then `monitor_<name>_acc` per monitor set."""
        return HISTORY_KEYS + tuple(monitor_key(n) for n in self.monitor_names)

    @property
    def transform(self):
        """The batch transform in use: the objective's, or PGD when `cfg.adv_norm` asks for it."""
        if self.objective.batch_transform is not None:
            return self.objective.batch_transform
        if self.cfg.adv_norm != "none":
            return pgd_transform()
        return None

    def _map(self, fn, *args):
        """`fn` over the members of the unit (K = 1: called directly, no member axis)."""
        return fn(*args) if self.unit_size == 1 else jax.vmap(fn)(*args)

    # ---------------------------------------------------------------- init
    def init(self, key: jax.Array, hp: dict, data: TrainData) -> TrainState:
        """Initial state of one unit: variables (times init_scale, or hp["members"]
        ["init_variables"]), optimizer state, counters. `key` is [K] for K > 1."""
        shared, members, _ = split_hparams(hp)
        return self._map(lambda k, mem: self._init_one(k, shared, mem, data), key, members)

    def _init_one(self, key, hp, members, data) -> TrainState:
        if self.has_init:
            variables = dict(members["init_variables"])
        else:
            variables = self.model.init(jax.random.fold_in(key, STREAM_INIT), data.x[:1])
            # Paper Table 9's init scale: kernels and biases only (not BN scales or PReLU slopes).
            variables = scale_params(dict(variables), hp["init_scale"])
        tx = make_optimizer(self.cfg, hp, self.steps_per_epoch)  # initial hyperparameter values
        rule = self.objective.loss_rule
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
            objective_state=rule.init(data, self.unit_size) if rule is not None else (),
        )

    # ---------------------------------------------------------------- one update
    @property
    def pads_last_batch(self) -> bool:
        """Whether the last batch of an epoch may be padded (n not a multiple of the batch size;
        always with a traced row count)."""
        return self.traced_rows or self.steps_per_epoch * self.cfg.batch_size > self.n_train

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

    def _batch_indices(self, key: jax.Array, step: jax.Array, n_rows: jax.Array | None = None):
        b, n, spe = self.cfg.batch_size, self.n_train, self.steps_per_epoch
        if n_rows is not None:  # a traced training-set size: the same rule as make_trainer's
            n = n_rows
            spe = n // b if self.cfg.drop_last else (n + b - 1) // b
        epoch = step // spe
        positions = (step % spe) * b + jnp.arange(b, dtype=jnp.int32)
        valid = positions < n
        round_keys = epoch_round_keys(jax.random.fold_in(key, STREAM_SHUFFLE), epoch)
        idx = permute_positions(jnp.minimum(positions, n - 1), round_keys, n)
        return idx, valid.astype(jnp.float32)

    def _unlabeled_batch(self, key: jax.Array, step: jax.Array, hp: dict, data: TrainData):
        """(x_u [Bu, ...], valid_u [Bu]): the unlabeled batch of this step, in its own keyed epoch
        order over the pool (epochs of ceil(Nu / Bu) batches; the last batch of an epoch is padded
        with copies of one row, marked 0 in valid_u, as for labelled batches). With the traced
        mixing ratio hp["unlabeled_mix"] < 1, each row is drawn from the pool with that
        probability and otherwise from the labelled training inputs (in their own keyed order)."""
        bu, nu = self.unlabeled_batch_size, self.n_unlabeled
        spe = -(-nu // bu)
        positions = (step % spe) * bu + jnp.arange(bu, dtype=jnp.int32)
        kstream = jax.random.fold_in(key, STREAM_UNLABELED)
        rk = epoch_round_keys(kstream, step // spe)
        xu = data.x_u[permute_positions(jnp.minimum(positions, nu - 1), rk, nu)]
        n = self.n_train
        spe_t = -(-n // bu)
        pos_t = (step % spe_t) * bu + jnp.arange(bu, dtype=jnp.int32)
        rk_t = epoch_round_keys(jax.random.fold_in(kstream, 1), step // spe_t)
        xt = data.x[permute_positions(jnp.minimum(pos_t, n - 1), rk_t, n)]
        u = jax.random.uniform(jax.random.fold_in(jax.random.fold_in(kstream, 2), step), (bu,))
        pool = u < hp["unlabeled_mix"]
        take_pool = pool.reshape((bu,) + (1,) * (xu.ndim - 1))
        valid = jnp.where(pool, positions < nu, pos_t < n).astype(jnp.float32)
        return jnp.where(take_pool, xu, xt), valid

    def batch_indices(self, key: jax.Array, step: jax.Array):
        """(idx int32 [B], valid float32 [B]): the rows of update `step` in the epoch order of
        `key` (a model's own key, or the sweep's shared-order key, see `run_shared`)."""
        return self._batch_indices(key, step)

    def _update(self, state: TrainState, hp: dict, data: TrainData, batch=None) -> TrainState:
        """One update of the unit: gradients of `_loss_fn`, the optimizer (SAM included), the
        trainable mask, and masking of members that have stopped."""
        inp = self._step_inputs(state, hp, data, batch)
        loss_fn = self._loss_fn(inp)
        variables = inp.variables
        grads, (mutated, obj_state) = jax.grad(loss_fn, has_aux=True)(variables["params"])
        params = variables["params"]
        k_units = self.unit_size
        updates, opt_state = self._map(
            self._member_update(loss_fn, params),
            grads,
            state.opt_state,
            params,
            jnp.arange(k_units) if k_units > 1 else 0,
        )
        if self.objective.trainable is not None:
            trainable = self.objective.trainable

            def mask(path, u):
                name = jax.tree_util.keystr(path)
                return u if any(t in name for t in trainable) else jnp.zeros_like(u)

            updates = jax.tree_util.tree_map_with_path(mask, updates)
        new_vars = {**variables, **mutated, "params": optax.apply_updates(params, updates)}
        active = state.step < state.stop_step

        def keep(act, new, old):
            return jax.tree_util.tree_map(lambda a, b: jnp.where(act, a, b), new, old)

        if self.objective.loss_rule is not None:  # the unit's state moves while member 0 does
            unit_active = active if k_units == 1 else active[0]
            obj_state = keep(unit_active, obj_state, inp.objective_state)
            if k_units > 1:
                obj_state = jax.tree_util.tree_map(
                    lambda a: jnp.broadcast_to(a, (k_units,) + a.shape), obj_state
                )
            state = state._replace(objective_state=obj_state)
        return state._replace(
            variables=self._map(keep, active, new_vars, variables),
            opt_state=self._map(keep, active, opt_state, state.opt_state),
            step=state.step + 1,
        )

    def _step_inputs(self, state: TrainState, hp: dict, data: TrainData, batch) -> StepInputs:
        """The batch of this update and everything the loss reads besides the parameters."""
        k_units = self.unit_size
        shared, members, frozen = split_hparams(hp)
        # One batch order per unit: the members of a coupled unit see the same rows.
        key0 = state.key if k_units == 1 else state.key[0]
        step0 = state.step if k_units == 1 else state.step[0]
        # batch: the rows chosen outside the model map (a sweep-wide shared order), else the
        # model's own order.
        idx, w = self._batch_indices(key0, step0, data.n_rows) if batch is None else batch
        xb, yb = data.x[idx], data.y[idx]
        groups = None if data.groups is None else data.groups[idx]
        if data.decorrelation is not None:  # the traced correlation picks the rows S disagrees on
            view, n = data.decorrelation, data.x.shape[0]
            n_flip = flip_count(shared["correlation"], n)
            xb, flip = flip_rows(xb, view["x_alt"][idx], view["order"][idx], n_flip)
            groups = 2 * yb + (~flip).astype(jnp.int32)  # sbjax.data.groups: 2 y + [S agrees]
        transform = self.transform

        def prepare(key, step, variables):
            dkey = jax.random.fold_in(jax.random.fold_in(key, STREAM_DROPOUT), step)
            x = xb
            if transform is not None:
                tkey = jax.random.fold_in(jax.random.fold_in(key, STREAM_ADV), step)
                x, variables = transform.fn(self, variables, xb, yb, w, tkey, shared)
            return dkey, x, variables

        dkeys, xs, variables = self._map(prepare, state.key, state.step, state.variables)
        rw = None  # row weights [K?, B] from example weights
        if self.has_weights:
            ew = members["example_weights"]
            rw = ew[idx] if k_units == 1 else ew[:, idx]
        xu = valid_u = None
        if self.n_unlabeled:
            xu, valid_u = self._unlabeled_batch(key0, step0, shared, data)
        frozen_logits = frozen_logits_u = None
        if self.n_frozen:
            flog = lambda x: jax.lax.stop_gradient(
                jax.vmap(lambda v: self.model.logits(v, x))(frozen)
            )
            frozen_logits = flog(xb)
            frozen_logits_u = flog(xu) if xu is not None else None
        obj_state = state.objective_state
        if k_units > 1:  # every member holds the unit's state; member 0's copy is read
            obj_state = jax.tree_util.tree_map(lambda a: a[0], obj_state)
        return StepInputs(
            shared, yb, w, xs, dkeys, variables, rw, xu, valid_u, frozen_logits, frozen_logits_u,
            key0, step0, idx, groups, obj_state, data,
        )  # fmt: skip

    def _loss_fn(self, inp: StepInputs):
        """params -> (loss, mutated batch statistics): the weighted data loss of every member
        (times `data_loss_weight`) plus the objective's penalties."""
        cfg, obj, k_units = self.cfg, self.objective, self.unit_size
        yb, w = inp.yb, inp.w

        def member_loss(params, v, x, dkey, rwk):
            logits, mutated = self.model.apply(
                {**v, "params": to_compute_dtype(params, cfg.compute_dtype)},
                to_compute_dtype(x, cfg.compute_dtype),
                train=True,
                key=dkey,
                dropout_rate=inp.shared["dropout_rate"],
                **self._bn_mask(v, w),
            )
            per_ex = per_example_loss(cfg, logits, yb)
            row_w = w if rwk is None else w * rwk
            loss = jnp.sum(per_ex * row_w) / jnp.sum(w)
            return loss, (logits, mutated, per_ex)

        def loss_fn(params):
            args = (params, inp.variables, inp.xs, inp.dkeys, inp.rw)
            if k_units == 1:
                loss, (logits, mutated, per_ex) = member_loss(*args)
            else:
                in_axes = (0, 0, 0, 0, None if inp.rw is None else 0)
                loss, (logits, mutated, per_ex) = jax.vmap(member_loss, in_axes=in_axes)(*args)
                loss = jnp.sum(loss)
            if obj.data_loss_weight != 1.0:
                loss = obj.data_loss_weight * loss
            ctx, obj_state = None, inp.objective_state
            if obj.loss_rule is not None:  # replaces the summed data loss
                ctx = self._penalty_context(params, logits, per_ex, inp)
                loss, obj_state = obj.loss_rule.fn(ctx, obj_state, inp.data)
            if obj.penalties:
                ctx = ctx or self._penalty_context(params, logits, per_ex, inp)
                loss = loss + obj.penalty_sum(ctx)
            return loss, (mutated, obj_state)

        return loss_fn

    def _member_update(self, loss_fn, params):
        """(grads, opt_state, params, k) -> (updates, opt_state) of member k; SAM re-evaluates
        the unit's loss at its perturbed parameters (only member k's parameters move)."""
        k_units = self.unit_size
        if not self.cfg.sam:
            return lambda g, opt_state, p, k: self.tx.update(g, opt_state, p)

        def member_update(g, opt_state, p, k):
            def grad_fn(pk, _):
                full = (
                    pk
                    if k_units == 1
                    else jax.tree_util.tree_map(lambda a, b: a.at[k].set(b), params, pk)
                )
                gk = jax.grad(lambda q: loss_fn(q)[0])(full)
                return gk if k_units == 1 else jax.tree_util.tree_map(lambda a: a[k], gk)

            return self.tx.update(g, opt_state, p, grad_fn=grad_fn)

        return member_update

    def _penalty_context(self, params, logits, per_ex, inp: StepInputs) -> Context:
        """The `Context` penalties see, with every member-stacked field [K, ...]."""
        k_units, hp = self.unit_size, inp.shared
        st = (lambda t: t) if k_units > 1 else _stack1
        params_k, vars_k = st(params), st(inp.variables)
        logits_u = None
        if inp.xu is not None:

            def fwd_u(p, v, dkey):
                lg, _ = self.model.apply(
                    {**v, "params": p},
                    inp.xu,
                    train=True,
                    key=jax.random.fold_in(dkey, 1),
                    dropout_rate=hp["dropout_rate"],
                )
                return lg

            logits_u = jax.vmap(fwd_u)(params_k, vars_k, st(inp.dkeys))

        def apply(p, x):
            return jax.vmap(lambda pk, vk: self.model.logits({**vk, "params": pk}, x))(p, vars_k)

        w, rw = inp.w, inp.rw
        weights = jnp.broadcast_to(jnp.ones_like(w) if rw is None else rw, (k_units,) + w.shape)
        return Context(
            logits=st(logits),
            data_loss=st(per_ex),
            x=st(inp.xs),
            y=inp.yb,
            valid=w,
            weights=weights,
            params=params_k,
            variables={**vars_k, "params": params_k},
            apply=apply,
            x_u=inp.xu,
            logits_u=logits_u,
            valid_u=inp.valid_u,
            frozen_logits=inp.frozen_logits,
            frozen_logits_u=inp.frozen_logits_u,
            hp=hp,
            key=jax.random.fold_in(jax.random.fold_in(inp.key0, STREAM_PENALTY), inp.step0),
            idx=inp.idx,
            groups=inp.groups,
        )

    def robust_accuracy(self, variables, key, eps, xs, ys, ms):
        """PGD accuracy of one model (eval-mode BatchNorm) over chunked data [C, E, ...]."""

        def body(acc, chunk):
            i, x, y, m = chunk
            xa, _ = attack(
                self, variables, x, y, jax.random.fold_in(key, i), eps, m, train_mode=False
            )
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

    def accuracy(self, variables, xs: jax.Array, ys: jax.Array, ms: jax.Array) -> jax.Array:
        """Accuracy of one model (eval mode) over chunked data [C, E, ...] with mask [C, E]."""

        def body(acc, chunk):
            x, y, m = chunk
            pred = jnp.argmax(self.model.logits(variables, x), -1)
            return acc + jnp.sum((pred == y).astype(jnp.float32) * m), None

        n_correct, _ = jax.lax.scan(body, 0.0, (xs, ys, ms))
        return n_correct / jnp.sum(ms)

    def _period(self, state: TrainState, hp: dict, data: TrainData):
        state, _ = jax.lax.scan(
            lambda s, _: (self._update(s, hp, data), None),
            state,
            None,
            length=self.cfg.eval_every,
        )
        return self.end_period(state, hp, data)

    def update(self, state: TrainState, hp: dict, data: TrainData) -> TrainState:
        """One (masked) update: the body of a period, for host-driven loops."""
        return self._update(state, hp, data)

    def end_period(self, state: TrainState, hp: dict, data: TrainData):
        """Evaluation, stop rules and best-model selection after `eval_every` updates, per member
        (on the plain data loss: penalties never enter train_loss, the stop rule or selection).
        For K > 1 the state and every row value carry the member axis [K]."""
        shared, _, _ = split_hparams(hp)
        if self.unit_size == 1:
            return self._end_one(state, shared, data)
        return jax.vmap(lambda st: self._end_one(st, shared, data))(state)

    def _end_one(self, state: TrainState, hp: dict, data: TrainData):
        """Evaluation, stop rules and best-model selection of one member.

        Args:
          state: one model's state at a period end (`state.step` a multiple of `eval_every`).
          hp: the model's traced hyperparameters.
          data: the shared `TrainData`.

        Returns:
          (state, row): the state with stop rule and best model updated, and the history row
          (`history_keys`, float32/int32 scalars) of this evaluation; monitor sets add their
          accuracy (`monitor_<name>_acc`) of the variables evaluated here.
        """
        cfg = self.cfg
        # Whether the model was updating during the period that just ended (stop_step only
        # changes here, so it can be read after the updates).
        was_live = state.step - cfg.eval_every < state.stop_step
        x_te = data.x_train_eval
        if data.decorrelation is not None:  # train metrics on the rows as this model trains on them
            view = data.decorrelation
            n_flip = flip_count(hp["correlation"], data.x.shape[0])
            x_te, _ = flip_rows(x_te, view["x_alt_eval"], view["order_eval"], n_flip)
        tr_acc, tr_loss = self.evaluate(state.variables, x_te, data.y_train_eval, data.m_train_eval)
        nan = jnp.asarray(jnp.nan, jnp.float32)
        va_rob = nan
        if self.has_val:
            va_acc, va_loss = self.evaluate(state.variables, data.x_val, data.y_val, data.m_val)
            if cfg.adv_norm != "none":
                rkey = jax.random.fold_in(
                    jax.random.fold_in(state.key, STREAM_ADV_EVAL), state.step
                )
                va_rob = self.robust_accuracy(
                    state.variables, rkey, hp["adv_eps"], data.x_val, data.y_val, data.m_val
                )
            metric = va_rob if cfg.select_metric == "val_robust_acc" else va_acc
        else:
            va_acc = va_loss = nan
            metric = tr_acc

        stop_step, reason, diverged = stop_decision(
            cfg, state.step, state.stop_step, state.stop_reason, was_live, tr_acc, tr_loss
        )

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
            was_live & in_window & ~diverged & jnp.isfinite(tr_loss) & (metric >= state.best_metric)
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
        for name in self.monitor_names:  # fixed evaluation sets (the feature timeline)
            row[monitor_key(name)] = self.accuracy(state.variables, *data.monitor[name])
        return state, row

    def run(self, state: TrainState, hp: dict, data: TrainData, n_periods: int):
        """Runs `n_periods` evaluation periods; returns the state and a history of [n_periods] rows."""
        return jax.lax.scan(lambda s, _: self._period(s, hp, data), state, None, length=n_periods)

    def run_shared(self, states: TrainState, hp: dict, data: TrainData, n_periods: int, order_key):
        """`run` for a STACK of units [U, ...] that share one batch order (`order_key`).

        The batch of each update is chosen once, outside the map over units, so the gathered
        rows are one array for every model and a vmapped first layer is one [B, D] x [D, U*W]
        matmul instead of U small ones (common random numbers across the models of a sweep).
        All units start together and count updates together, so the step is read from unit 0 at
        the start of the chunk. Returns (states, history) stacked like `vmap(run)`'s.
        """
        step_of = (lambda st: st.step[0]) if self.unit_size == 1 else (lambda st: st.step[0, 0])

        def period(states, _):
            t0 = step_of(states)

            def one(states, i):
                batch = self._batch_indices(order_key, t0 + i)
                states = jax.vmap(lambda s, h: self._update(s, h, data, batch))(states, hp)
                return states, None

            states, _ = jax.lax.scan(one, states, jnp.arange(self.cfg.eval_every, dtype=jnp.int32))
            return jax.vmap(lambda s, h: self.end_period(s, h, data))(states, hp)

        states, rows = jax.lax.scan(period, states, None, length=n_periods)
        return states, jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, 0, 1), rows)

    @property
    def total_periods(self) -> int:
        return math.ceil(self.cfg.max_steps / self.cfg.eval_every)

    def train(self, key: jax.Array, hp: dict, data: TrainData):
        """The whole budget for one model: pure, so `jit(vmap(train))` trains a sweep."""
        return self.run(self.init(key, hp, data), hp, data, self.total_periods)


def make_trainer(
    cfg: TrainConfig,
    model: Any,
    data: TrainData,
    *,
    objective: Objective | None = None,
    unit_size: int = 1,
    unlabeled_batch_size: int | None = None,
    has_weights: bool = False,
    n_frozen: int = 0,
    has_init: bool = False,
) -> Trainer:
    """Builds the `Trainer` of one training unit for this configuration and data shapes.

    Args:
      cfg: static training settings.
      model: an `sbjax.models.Model` (pure init / apply / logits).
      data: from `prepare_data` (with `x_u` when there is an unlabeled stream; its monitor sets
        fix `monitor_names`).
      objective: penalties / batch transform (None: the plain data loss).
      unit_size: K members per unit (1: independent models).
      unlabeled_batch_size: rows of the unlabeled batch (default: `cfg.batch_size`).
      has_weights: hp["members"]["example_weights"] holds per-example weights.
      n_frozen: frozen members in hp["frozen"] (leaves [F, ...]).
      has_init: hp["members"]["init_variables"] holds starting variables.
    """
    n = int(data.x.shape[0])
    b = cfg.batch_size
    spe = n // b if cfg.drop_last else math.ceil(n / b)
    objective = Objective() if objective is None else objective
    if objective.batch_transform not in (None, pgd_transform()) and cfg.adv_norm != "none":
        fail(
            "objective.batch_transform",
            objective.batch_transform.name,
            "None or pgd_transform() when TrainConfig.adv_norm is set (adversarial training is "
            "the batch transform)",
        )
    n_u = 0 if data.x_u is None else int(data.x_u.shape[0])
    traced_rows = data.n_rows is not None
    if traced_rows and (n_u or data.decorrelation is not None or cfg.lr_boundaries):
        fail(
            "n_rows",
            "<traced>",
            "no unlabeled pool, decorrelation view or epoch-based lr_boundaries with a traced "
            "training-set size (their epochs are defined on the whole set)",
        )
    if objective.needs("unlabeled") and not n_u:
        fail(
            "unlabeled",
            None,
            "an unlabeled pool for the penalties that need one "
            f"({[p.name for p in objective.penalties if 'unlabeled' in p.needs]})",
        )
    if objective.needs("frozen") and not n_frozen:
        fail(
            "frozen",
            None,
            "frozen members for the penalties that need them "
            f"({[p.name for p in objective.penalties if 'frozen' in p.needs]})",
        )
    bu = 0
    if n_u:
        bu = cfg.batch_size if unlabeled_batch_size is None else unlabeled_batch_size
    return Trainer(
        cfg=cfg,
        model=model,
        n_train=n,
        steps_per_epoch=spe,
        has_val=data.x_val is not None,
        objective=objective,
        unit_size=int(unit_size),
        n_unlabeled=n_u,
        unlabeled_batch_size=int(bu),
        has_weights=bool(has_weights),
        n_frozen=int(n_frozen),
        has_init=bool(has_init),
        monitor_names=tuple(data.monitor) if data.monitor else (),
        traced_rows=traced_rows,
    )


def make_train(cfg: TrainConfig, model: Any, train, val=None, monitor=None):
    """DESIGN.md's core shape: returns a pure `train(key, hparams) -> (state, history)`.

    The data are closed over as device arrays. `jax.jit(jax.vmap(train))(keys, hparams)` trains a
    whole sweep; `train_sweep` adds sharding, chunking, checkpoints and progress on top of the same
    `Trainer` (and passes the data as arguments, so large datasets never become program constants).
    """
    data = prepare_data(cfg, train, val, monitor)
    trainer = make_trainer(cfg, model, data)
    data = jax.tree_util.tree_map(jnp.asarray, data)

    def train_fn(key: jax.Array, hparams: dict):
        return trainer.train(key, hparams, data)

    return train_fn
