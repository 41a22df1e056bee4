"""The training objective as a seam: penalties, example weights, an unlabeled stream, coupled
members, frozen members and a batch transform, without touching the data loss.

The data loss (`per_example_loss`, below,) stays the one function that evaluation, the
stop rule, best-model selection and the PGD attacks use. An `Objective` only adds to what one
update minimises:

    loss(unit) = sum_k data_loss_k + sum_i lambda_i * penalty_i(ctx)

where k runs over the K members of a training unit (K = 1: an independent model, today's program
bit for bit) and `lambda_i` is the traced hyperparameter ``lambda_<name>`` of penalty i, so a grid
over strengths is one compiled program. `Objective` is a frozen, hashable dataclass (compiled
programs are cached on it); penalties are plain functions of a `Context`.

    from sbjax.train import objective as obj
    objective = obj.Objective(penalties=(obj.spectral_decoupling(),))
    r = train_sweep(cfg, model, (x, y), objective=objective,
                    grid={"lambda_spectral_decoupling": [0.0, 1e-3, 1e-2]})

See docs/objective.md for one example per capability.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from sbjax.train.config import TrainConfig
from sbjax.validate import fail


def per_example_loss(cfg: TrainConfig, logits: jax.Array, y: jax.Array) -> jax.Array:
    """float32 [n]: 2-logit cross-entropy, or hinge on the score logit1 - logit0 with y in {-1, 1}."""
    if cfg.loss == "ce":
        return optax.softmax_cross_entropy_with_integer_labels(logits, y)
    score = logits[:, 1] - logits[:, 0]
    return optax.hinge_loss(score, 2.0 * y - 1.0)


@dataclasses.dataclass(frozen=True)
class Context:
    """What a penalty sees on one update of one training unit (K members, one seed).

    Attributes:
      logits: float32 [K, B, 2] train-mode logits of the unit's members on the labelled batch
        (after the batch transform, when there is one).
      data_loss: float32 [K, B] per-example data loss (the loss evaluation uses).
      x: inputs [K, B, ...] each member was trained on (the transformed batch).
      y: int32 [B] labels.
      valid: float32 [B]: 1 for real rows, 0 for the padded rows of an epoch's last batch.
      weights: float32 [K, B] example weights of the rows (1 without `example_weights`).
      params: the members' parameters, stacked [K, ...] (differentiated).
      variables: the members' full variables (params and batch statistics), stacked [K, ...].
      apply: `apply(params [K, ...], x [B, ...]) -> logits [K, B, 2]`, eval-mode and
        differentiable in params and x (input gradients, logits on other inputs).
      x_u, logits_u: the unlabeled batch [Bu, ...] and the members' train-mode logits on it
        [K, Bu, 2]; None without an unlabeled stream.
      valid_u: float32 [Bu]: 0 for the padded rows of the unlabeled epoch's last batch.
      frozen_logits, frozen_logits_u: eval-mode logits [F, B, 2] / [F, Bu, 2] of the unit's
        frozen members (constants); None without frozen members (or without the stream).
      hp: the unit's traced hyperparameters (lambda_* included).
      key: a PRNG key for this update and unit.
      idx: int32 [B] the batch's row indices in the training set (per-example state, e.g.
        LfF's loss averages); padded rows repeat a real row's index with valid = 0.
      groups: int32 [B] the rows' groups (`SweepSpec.groups`), or None without groups.
    """

    logits: jax.Array
    data_loss: jax.Array
    x: jax.Array
    y: jax.Array
    valid: jax.Array
    weights: jax.Array
    params: Any
    variables: Any
    apply: Callable[[Any, jax.Array], jax.Array]
    x_u: jax.Array | None
    logits_u: jax.Array | None
    valid_u: jax.Array | None
    frozen_logits: jax.Array | None
    frozen_logits_u: jax.Array | None
    hp: dict
    key: jax.Array
    idx: jax.Array | None = None
    groups: jax.Array | None = None

    def batch_mean(self, v: jax.Array) -> jax.Array:
        """Mean over the real rows of a [..., B] array (padded rows carry no weight)."""
        return jnp.sum(v * self.valid, axis=-1) / jnp.sum(self.valid)

    def unlabeled_mean(self, v: jax.Array) -> jax.Array:
        """Mean over the real rows of a [..., Bu] array of the unlabeled batch."""
        return jnp.sum(v * self.valid_u, axis=-1) / jnp.sum(self.valid_u)


@dataclasses.dataclass(frozen=True)
class Penalty:
    """A named penalty `fn(ctx) -> scalar`, scaled by the traced hyperparameter lambda_<name>.

    Attributes:
      name: identifier; the strength is the hyperparameter ``"lambda_" + name``.
      fn: pure function of a `Context`, returning a float32 scalar (summed over members by the
        penalty itself when it is per member).
      default: default strength (used where a grid does not set it).
      needs: inputs the penalty reads beyond the labelled batch: any of "unlabeled", "frozen".
    """

    name: str
    fn: Callable[[Context], jax.Array]
    default: float = 0.0
    needs: tuple[str, ...] = ()

    @property
    def hparam(self) -> str:
        return "lambda_" + self.name


@dataclasses.dataclass(frozen=True)
class BatchTransform:
    """A transform of the labelled batch before the loss (e.g. adversarial examples).

    Attributes:
      name: identifier (appears in the fingerprint of checkpoints).
      fn: `fn(trainer, variables, x, y, w, key, hp) -> (x', variables')` for ONE member:
        `variables'` lets a transform thread state it updated (BatchNorm statistics of train-mode
        attack passes). `w` [B] is the validity of the rows. Must be pure.
      hparams: names of the traced hyperparameters it reads (default values come from
        `TrainConfig` fields of the same name, or from `defaults`).
      defaults: default values of hyperparameters that are not `TrainConfig` fields.
    """

    name: str
    fn: Callable[..., tuple[jax.Array, Any]]
    hparams: tuple[str, ...] = ()
    defaults: tuple[tuple[str, float], ...] = ()


@dataclasses.dataclass(frozen=True)
class LossRule:
    """A rule that replaces the unit's data loss and carries state across updates (Group DRO's
    group weights, LfF's per-example loss averages).

    Attributes:
      name: identifier (appears in the fingerprint of checkpoints).
      fn: `fn(ctx, state, data) -> (loss, state')`: the unit's loss (summed over its members, a
        float32 scalar) and the new state, from the `Context` and the shared `TrainData`. The
        state must not carry gradients (compute it from `jax.lax.stop_gradient` values).
      init: `init(data, k) -> state`: the unit's initial state (a pytree of arrays) for K = k.
      hparams: names of the traced hyperparameters it reads, with `defaults`.
      defaults: default values of those hyperparameters.
      needs_groups: the rule reads `ctx.groups` (the sweep must pass `groups`).
      n_groups: the number of groups the rule's state has room for (None: no groups).
      unit_size: the K the rule is written for (LfF: 2), or None for any.
    """

    name: str
    fn: Callable[..., tuple[jax.Array, Any]]
    init: Callable[..., Any]
    hparams: tuple[str, ...] = ()
    defaults: tuple[tuple[str, float], ...] = ()
    needs_groups: bool = False
    n_groups: int | None = None
    unit_size: int | None = None


@dataclasses.dataclass(frozen=True)
class Objective:
    """What one update minimises beyond the plain data loss (static and hashable).

    Attributes:
      penalties: `Penalty` terms, each scaled by its traced strength lambda_<name>.
      batch_transform: optional `BatchTransform` applied to each member's labelled batch
        (adversarial training is `sbjax.train.adversarial.pgd_transform`). `TrainConfig.adv_norm`
        other than "none" installs PGD here when this is None.
      data_loss_weight: static factor on the summed data loss (0 trains on penalties alone,
        e.g. a stage that only fits an unlabeled criterion).
      loss_rule: optional `LossRule` that replaces the summed data loss (Group DRO, LfF; see
        `sbjax.train.group_objectives`); its state lives in `TrainState.objective_state`.
      trainable: None (every parameter trains) or a tuple of substrings: only parameters whose
        path (`jax.tree_util.keystr`, e.g. "['params']['head']['kernel']") contains one of them
        are updated (last-layer retraining: ("'head'",)). The others keep their values; BatchNorm
        running statistics still follow train-mode batches.
    """

    penalties: tuple[Penalty, ...] = ()
    batch_transform: BatchTransform | None = None
    data_loss_weight: float = 1.0
    trainable: tuple[str, ...] | None = None
    loss_rule: LossRule | None = None

    def penalty_sum(self, ctx: Context) -> Any:
        """sum_i lambda_i * penalty_i(ctx), lambda_i = ctx.hp[penalty_i.hparam] (traced)."""
        total = 0.0
        for p in self.penalties:
            total = total + ctx.hp[p.hparam] * p.fn(ctx)
        return total

    def __post_init__(self) -> None:
        if not isinstance(self.penalties, tuple) or not all(
            isinstance(p, Penalty) for p in self.penalties
        ):
            fail("objective.penalties", self.penalties, "a tuple of sbjax.train.objective.Penalty")
        names = [p.name for p in self.penalties]
        if len(set(names)) != len(names):
            fail("objective.penalties", names, "penalties with distinct names")
        for p in self.penalties:
            if not p.name.isidentifier():
                fail("penalty name", p.name, "an identifier such as 'spectral_decoupling'")
            for need in p.needs:
                if need not in ("unlabeled", "frozen"):
                    fail(f"penalty {p.name!r} needs", need, "'unlabeled' or 'frozen'")
        if self.trainable is not None and not (
            isinstance(self.trainable, tuple)
            and self.trainable
            and all(isinstance(t, str) and t for t in self.trainable)
        ):
            fail(
                "objective.trainable",
                self.trainable,
                "None or a non-empty tuple of parameter-path substrings, e.g. (\"'head'\",)",
            )
        if self.batch_transform is not None and not isinstance(
            self.batch_transform, BatchTransform
        ):
            fail("objective.batch_transform", self.batch_transform, "None or a BatchTransform")
        if self.loss_rule is not None and not isinstance(self.loss_rule, LossRule):
            fail("objective.loss_rule", self.loss_rule, "None or a LossRule")
        if self.loss_rule is not None and self.data_loss_weight != 1.0:
            fail("objective.data_loss_weight", self.data_loss_weight, "1.0 with a loss_rule")

    @property
    def hparam_defaults(self) -> dict[str, float]:
        """Traced hyperparameters this objective adds, with their defaults."""
        out = {p.hparam: float(p.default) for p in self.penalties}
        if self.batch_transform is not None:
            out.update(dict(self.batch_transform.defaults))
        if self.loss_rule is not None:
            out.update(dict(self.loss_rule.defaults))
        return out

    @property
    def needs_groups(self) -> bool:
        return self.loss_rule is not None and self.loss_rule.needs_groups

    def needs(self, what: str) -> bool:
        return any(what in p.needs for p in self.penalties)


# ------------------------------------------------------------------------------------------------
# Shipped penalties. Each is summed over the unit's members and averaged over real rows.


def spectral_decoupling(default: float = 0.0, name: str = "spectral_decoupling") -> Penalty:
    """Spectral decoupling (Pezeshki et al., NeurIPS 2021): mean(logits^2) over rows and classes.

    `loss = CE + lambda * mean(logits^2)` (BEYOND.md Sec. 5). The paper writes
    (lambda_paper / 2) * ||y_hat||^2 per example; with 2 logits mean(logits^2) = ||y_hat||^2 / 2,
    so lambda here equals lambda_paper. Reference code: mpezeshki/Gradient_Starvation (where the
    loss after the switch is sd_coef * (sd + nll): under Adam the overall scale cancels, see
    BEYOND.md Sec. 5).
    """

    def fn(ctx: Context) -> jax.Array:
        return jnp.sum(ctx.batch_mean(jnp.mean(jnp.square(ctx.logits), axis=-1)))

    return Penalty(name, fn, default)


def spectral_decoupling_targets(
    gamma: tuple[float, float], default: float = 0.0, name: str = "spectral_decoupling_targets"
) -> Penalty:
    """Per-class spectral decoupling: mean over rows and classes of (logit - gamma_y)^2.

    Args:
      gamma: (gamma_0, gamma_1): the target of every logit of an example of class y is gamma_y
        (the per-class variant of Pezeshki et al., App. "SD with per-class targets").
    """
    g = tuple(float(v) for v in gamma)

    def fn(ctx: Context) -> jax.Array:
        target = jnp.asarray(g, jnp.float32)[ctx.y][:, None]  # [B, 1]
        return jnp.sum(ctx.batch_mean(jnp.mean(jnp.square(ctx.logits - target), axis=-1)))

    return Penalty(name, fn, default)


def logit_norm(default: float = 0.0, name: str = "logit_norm") -> Penalty:
    """Mean L2 norm of the logit vector, mean_b ||f(x_b)||_2."""

    def fn(ctx: Context) -> jax.Array:
        return jnp.sum(ctx.batch_mean(jnp.sqrt(jnp.sum(jnp.square(ctx.logits), axis=-1) + 1e-12)))

    return Penalty(name, fn, default)


def weight_norm(default: float = 0.0, name: str = "weight_norm") -> Penalty:
    """Squared L2 norm of all parameters, 0.5 * sum ||theta||^2 (an explicit, decoupled-from-the-
    optimizer L2 term; `weight_decay` stays the reference's coupled decay)."""

    def fn(ctx: Context) -> jax.Array:
        return 0.5 * sum(jnp.sum(jnp.square(p)) for p in jax.tree_util.tree_leaves(ctx.params))

    return Penalty(name, fn, default)


def dbat_disagreement(default: float = 0.0, name: str = "dbat") -> Penalty:
    """D-BAT's binary agreement term on unlabeled inputs against frozen earlier members
    (Pagliardini et al., ICLR 2023; mpagli/Agree-to-Disagree):

        A = mean_x~ -log(p_f(0|x~) p_k(1|x~) + p_f(1|x~) p_k(0|x~)),

    summed over the unit's members k and the frozen members f. Needs `unlabeled` and `frozen`.
    """

    def fn(ctx: Context) -> jax.Array:
        p = jax.nn.softmax(ctx.logits_u, axis=-1)[None]  # [1, K, Bu, 2]
        q = jax.nn.softmax(ctx.frozen_logits_u, axis=-1)[:, None]  # [F, 1, Bu, 2]
        agree_off = q[..., 0] * p[..., 1] + q[..., 1] * p[..., 0]
        return jnp.sum(ctx.unlabeled_mean(-jnp.log(agree_off + 1e-7)))

    return Penalty(name, fn, default, needs=("unlabeled", "frozen"))


def input_gradient_similarity(default: float = 0.0, name: str = "grad_similarity") -> Penalty:
    """Input-gradient diversity (Teney et al., CVPR 2022): sum over member pairs m < n of the
    squared cosine similarity of d(logit_1 - logit_0)/dx, averaged over real rows. K >= 2."""

    def fn(ctx: Context) -> jax.Array:
        def score(x):  # x [B, ...] -> sum over rows of the members' scores [K]
            lg = ctx.apply(ctx.params, x)
            return jnp.sum(lg[..., 1] - lg[..., 0], axis=-1)

        g = jax.jacrev(score)(ctx.x[0])  # [K, B, ...]
        g = g.reshape(g.shape[0], g.shape[1], -1)
        g = g / (jnp.linalg.norm(g, axis=-1, keepdims=True) + 1e-12)
        cos = jnp.einsum("kbd,lbd->klb", g, g)
        k = g.shape[0]
        upper = jnp.triu(jnp.ones((k, k), jnp.float32), 1)
        return jnp.sum(upper * ctx.batch_mean(jnp.square(cos)))

    return Penalty(name, fn, default)


def member_agreement(default: float = 0.0, name: str = "member_agreement") -> Penalty:
    """Mean squared difference of the members' logits from their unit mean (a simple coupling
    term; its negative strength pushes members apart)."""

    def fn(ctx: Context) -> jax.Array:
        dev = ctx.logits - jnp.mean(ctx.logits, axis=0, keepdims=True)
        return jnp.sum(ctx.batch_mean(jnp.mean(jnp.square(dev), axis=-1)))

    return Penalty(name, fn, default)


def divdis_mutual_information(default: float = 0.0, name: str = "divdis_mi") -> Penalty:
    """DivDis's diversity term (Lee, Yao, Finn, ICLR 2023; yoonholee/DivDis): the mutual
    information between the predictions of every pair of members (heads) i < j on the unlabeled
    batch, estimated from the batch's joint distribution

        P_ij(a, b) = mean_x p_i(a|x) p_j(b|x),   I_ij = sum_ab P_ij log(P_ij / (P_i(a) P_j(b))),

    with P_i, P_j the marginals of P_ij. Summed over pairs. Needs `unlabeled` and K >= 2. (DivDis
    sums over ordered pairs i != j, i.e. twice this; the factor goes into lambda.)
    """

    def fn(ctx: Context) -> jax.Array:
        p = jax.nn.softmax(ctx.logits_u, axis=-1)  # [K, Bu, C]
        wu = ctx.valid_u / jnp.sum(ctx.valid_u)  # [Bu]
        joint = jnp.einsum("b,iba,jbc->ijac", wu, p, p)  # [K, K, C, C]
        pi = jnp.sum(joint, axis=-1, keepdims=True)  # [K, K, C, 1]
        pj = jnp.sum(joint, axis=-2, keepdims=True)  # [K, K, 1, C]
        eps = 1e-12
        mi = jnp.sum(joint * (jnp.log(joint + eps) - jnp.log(pi * pj + eps)), axis=(-2, -1))
        k = p.shape[0]
        upper = jnp.triu(jnp.ones((k, k), jnp.float32), 1)
        return jnp.sum(upper * mi)

    return Penalty(name, fn, default, needs=("unlabeled",))


def divdis_marginal(
    prior: tuple[float, float] = (0.5, 0.5), default: float = 0.0, name: str = "divdis_marginal"
) -> Penalty:
    """DivDis's regulariser: KL(mean prediction of each member on the unlabeled batch || prior),
    summed over members; it keeps a diverse member from predicting one class everywhere. `prior`
    is the label marginal (0.5, 0.5 for the paper's balanced datasets). Needs `unlabeled`."""
    q = tuple(float(v) for v in prior)

    def fn(ctx: Context) -> jax.Array:
        p = jax.nn.softmax(ctx.logits_u, axis=-1)  # [K, Bu, C]
        mean = jnp.einsum("b,kbc->kc", ctx.valid_u / jnp.sum(ctx.valid_u), p)
        prior_ = jnp.asarray(q, jnp.float32)
        return jnp.sum(mean * (jnp.log(mean + 1e-12) - jnp.log(prior_)))

    return Penalty(name, fn, default, needs=("unlabeled",))


def data_loss_term(default: float = 1.0, name: str = "data_loss") -> Penalty:
    """The unweighted data loss as a penalty, sum_k mean_b loss_kb over real rows (with
    `Objective(data_loss_weight=0)` it lets the data loss's weight be a traced strength, or sit
    beside `weighted_data_loss`, as in `jtt_objective`)."""

    def fn(ctx: Context) -> jax.Array:
        return jnp.sum(ctx.batch_mean(ctx.data_loss))

    return Penalty(name, fn, default)


def weighted_data_loss(default: float = 0.0, name: str = "weighted_data_loss") -> Penalty:
    """sum_k mean_b w_kb loss_kb over real rows, with w the example weights (`example_weights`)."""

    def fn(ctx: Context) -> jax.Array:
        return jnp.sum(ctx.batch_mean(ctx.weights * ctx.data_loss))

    return Penalty(name, fn, default)


@functools.cache  # one Objective object, so its compiled programs are reused
def jtt_objective() -> Objective:
    """Just Train Twice's second stage (Liu et al., ICML 2021) with a traced up-weight.

    Pass the first stage's error set as `example_weights` e in {0, 1} ([N] or per model [M, N]);
    the update then minimises

        mean_b loss_b + lambda_jtt_up * mean_b e_b loss_b = mean_b (1 + lambda_jtt_up e_b) loss_b,

    i.e. JTT's loss with up-weight lambda_up = 1 + lambda_jtt_up, so a grid over
    ``lambda_jtt_up`` is a grid over up-weights in one program. (JTT up-samples the error set; an
    up-sampled epoch's mean loss is this one divided by 1 + lambda_jtt_up |E| / N, a constant
    factor per model that Adam's update ignores and that rescales SGD's learning rate.)
    """
    return Objective(
        penalties=(data_loss_term(1.0, "jtt_all"), weighted_data_loss(0.0, "jtt_up")),
        data_loss_weight=0.0,
    )
