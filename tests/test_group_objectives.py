"""Group DRO, LfF and GCE on the objective seam (`sbjax.train.group_objectives`), the groups of
`sbjax.data.groups` and worst-group accuracy, each against a direct formula or numpy run."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sbjax.data.groups import group_sizes, spurious_groups
from sbjax.eval.groups import group_accuracies, worst_group_accuracy
from sbjax.models import make_model
from sbjax.train import TrainConfig, train_sweep
from sbjax.train import group_objectives as G
from sbjax.train.data import TrainData
from sbjax.train.objective import Context

CFG = TrainConfig(lr=0.1, batch_size=16, max_steps=30, eval_every=10, stop_rule="none")
FCN = make_model({"name": "fcn", "width": 8, "depth": 1})


def _data(n=64, d=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    agrees = rng.random(n) > 0.2
    return x, y, spurious_groups(y, agrees)


def _ctx(data_loss, y, groups, valid, hp, logits=None, idx=None):
    b = len(y)
    return Context(
        logits=jnp.zeros((data_loss.shape[0], b, 2)) if logits is None else logits,
        data_loss=jnp.asarray(data_loss, jnp.float32),
        x=None,
        y=jnp.asarray(y),
        valid=jnp.asarray(valid, jnp.float32),
        weights=None,
        params=None,
        variables=None,
        apply=None,
        x_u=None,
        logits_u=None,
        valid_u=None,
        frozen_logits=None,
        frozen_logits_u=None,
        hp=hp,
        key=None,
        idx=None if idx is None else jnp.asarray(idx),
        groups=jnp.asarray(groups),
    )


def test_groups_and_worst_group_accuracy():
    y = np.array([0, 0, 1, 1, 1])
    g = spurious_groups(y, [True, False, True, True, False])
    assert g.tolist() == [1, 0, 3, 3, 2] and group_sizes(g) == [1, 1, 1, 2]
    pred = np.array([[0, 1, 1, 1, 0], [0, 0, 1, 0, 1]])
    acc = group_accuracies(pred, y, g, 4)
    np.testing.assert_allclose(acc, [[0, 1, 0, 1], [1, 1, 1, 0.5]])
    np.testing.assert_allclose(worst_group_accuracy(pred, y, g, 4), [0.0, 0.5])
    assert np.isnan(group_accuracies(pred[:, :1], y[:1], g[:1], 4)[0, 0])  # empty group: NaN
    with pytest.raises(ValueError, match="s_agrees"):
        spurious_groups(y, [True])
    with pytest.raises(ValueError, match="groups"):
        worst_group_accuracy(pred, y, g, 3)


def test_gce_gradient_is_p_y_to_the_q_times_cross_entropy_gradient():
    logits = jnp.asarray([[0.3, -1.2], [2.0, 0.5], [-0.4, 0.1]])
    y = jnp.asarray([1, 0, 0])
    for q in (0.3, 0.7, 1.0):
        gce = jax.grad(lambda lg, q=q: jnp.sum(G.gce_loss(lg, y, q)))(logits)
        ce = jax.grad(lambda lg: jnp.sum(optax.softmax_cross_entropy_with_integer_labels(lg, y)))(
            logits
        )
        p_y = jax.nn.softmax(logits)[jnp.arange(3), y]
        np.testing.assert_allclose(gce, (p_y**q)[:, None] * ce, rtol=1e-5, atol=1e-7)
        p = np.asarray(p_y)
        np.testing.assert_allclose(G.gce_loss(logits, y, q), (1 - p**q) / q, rtol=1e-5)


def test_group_dro_weights_follow_a_direct_numpy_run():
    """The rule's q and loss over a fixed sequence of batch losses = the repository's update."""
    rng = np.random.default_rng(1)
    n_groups, eta, b = 4, 0.5, 12
    rule = G.group_dro(n_groups, step_size=eta).loss_rule
    state = rule.init(None, 1)
    q_np = np.full(n_groups, 1 / n_groups)
    for _ in range(6):
        losses = rng.random((1, b)).astype(np.float32)
        groups = rng.integers(0, 3, b)  # group 3 absent: loss 0, its weight decays relatively
        valid = np.ones(b)
        valid[-2:] = 0  # padded rows count nowhere
        loss, state = rule.fn(
            _ctx(losses, np.zeros(b), groups, valid, {"dro_step": eta}), state, None
        )
        gl = np.zeros(n_groups)
        for k in range(n_groups):
            rows = (groups == k) & (valid > 0)
            gl[k] = losses[0, rows].mean() if rows.any() else 0.0
        q_np = q_np * np.exp(eta * gl)
        q_np = q_np / q_np.sum()
        np.testing.assert_allclose(np.asarray(state["q"])[0], q_np, rtol=1e-5)
        np.testing.assert_allclose(float(loss), float(q_np @ gl), rtol=1e-5)
    assert np.asarray(state["q"])[0, 3] < 0.25


def test_group_dro_sweep_carries_q_and_reduces_to_erm_with_one_group():
    x, y, g = _data()
    r = train_sweep(
        CFG, FCN, (x, y), n_seeds=2, objective=G.group_dro(4), groups=g,
        grid={"dro_step": [0.0, 1.0]}, progress=False,
    )  # fmt: skip
    q = np.asarray(r.objective_state["q"])
    assert q.shape == (4, 1, 4)
    np.testing.assert_allclose(q.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(q[r.hparams["dro_step"] == 0.0], 0.25)  # eta = 0: uniform q
    assert np.all(np.abs(q[r.hparams["dro_step"] == 1.0] - 0.25).max(-1) > 1e-3)
    # One group: q = 1 and the group's mean loss is the batch mean: ERM's parameters.
    one = train_sweep(
        CFG, FCN, (x, y), n_seeds=2, objective=G.group_dro(1), groups=np.zeros_like(y),
        progress=False,
    )  # fmt: skip
    erm = train_sweep(CFG, FCN, (x, y), n_seeds=2, progress=False)
    leaves = zip(
        jax.tree_util.tree_leaves(one.params), jax.tree_util.tree_leaves(erm.params), strict=True
    )
    for a, b in leaves:
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_group_inputs_are_checked_before_compiling():
    x, y, g = _data()
    with pytest.raises(ValueError, match="groups=None"):
        train_sweep(CFG, FCN, (x, y), objective=G.group_dro(4), progress=False)
    with pytest.raises(ValueError, match="n_groups = 2"):
        train_sweep(CFG, FCN, (x, y), objective=G.group_dro(2), groups=g, progress=False)
    with pytest.raises(ValueError, match="groups"):
        train_sweep(CFG, FCN, (x, y), objective=G.group_dro(4), groups=g[:5], progress=False)
    with pytest.raises(ValueError, match="unit_size"):
        train_sweep(CFG, FCN, (x, y), objective=G.lff(), progress=False)


def test_lff_weights_are_the_relative_difficulty_of_the_averaged_losses():
    """Two updates of the rule on constructed logits = the repository's EMA, class-wise max
    normalisation and W = l_b / (l_b + l_d + 1e-8), computed in numpy."""
    alpha, n = 0.7, 6
    rule = G.lff(q=0.7, ema_alpha=alpha).loss_rule
    y_all = np.array([0, 1, 0, 1, 1, 0], np.int32)
    data = TrainData(jnp.zeros((n, 1)), jnp.asarray(y_all), *([None] * 6))
    state = rule.init(data, 2)
    ema, seen = np.zeros((2, n)), np.zeros(n)
    rng = np.random.default_rng(3)
    for idx in ([0, 1, 2, 3], [2, 3, 4, 5]):
        idx = np.asarray(idx)
        logits = rng.normal(size=(2, 4, 2)).astype(np.float32)
        ctx = _ctx(np.zeros((2, 4)), y_all[idx], np.zeros(4, int), np.ones(4), {"lff_q": 0.7},
                   logits=jnp.asarray(logits), idx=idx)  # fmt: skip
        loss, state = rule.fn(ctx, state, data)
        p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        ce = -np.log(p[:, np.arange(4), y_all[idx]])
        ema[:, idx] = alpha * ema[:, idx] + (1 - alpha * seen[idx]) * ce
        seen[idx] = 1
        lb, ld = ema[0, idx].copy(), ema[1, idx].copy()
        for c in (0, 1):
            rows = y_all[idx] == c
            lb[rows] /= ema[0, y_all == c].max()
            ld[rows] /= ema[1, y_all == c].max()
        w = lb / (lb + ld + 1e-8)
        np.testing.assert_allclose(np.asarray(state["ema"]), ema, rtol=1e-5)
        np.testing.assert_allclose(
            G.relative_difficulty(state["ema"][0], state["ema"][1], jnp.asarray(y_all), idx),
            w,
            rtol=1e-5,
        )
        p_y = p[0, np.arange(4), y_all[idx]]
        want = np.mean((1 - p_y**0.7) / 0.7) + np.mean(ce[1] * w)
        np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_lff_trains_as_a_unit_of_two():
    x, y, _ = _data()
    r = train_sweep(
        CFG, FCN, (x, y), n_seeds=2, n_members=2, unit_size=2, objective=G.lff(),
        grid={"lff_q": [0.5, 0.7]}, progress=False,
    )  # fmt: skip
    assert r.n_models == 8 and all(s == "max_steps" for s in r.stop_reason)
    ema = np.asarray(r.objective_state["ema"])  # [M, K, N]: each member holds the unit's copy
    assert ema.shape == (8, 2, 64) and np.all(ema >= 0)
    # model m = (seed * 2 + member) * 2 + grid point: members 0 and 1 of a unit are m and m + 2
    np.testing.assert_array_equal(ema[[0, 1, 4, 5]], ema[[2, 3, 6, 7]])


def _decorrelation(x, y, seed=4):
    """(x_alt, order): S (coordinate 0) from a random opposite-class row, a random order."""
    rng = np.random.default_rng(seed)
    donors = np.asarray([rng.choice(np.flatnonzero(y != yi)) for yi in y])
    x_alt = x.copy()
    x_alt[:, 0] = x[donors, 0]
    return x_alt, rng.permutation(len(y)).astype(np.int32)


def test_flip_count_is_exact_whenever_the_correlation_is_achievable():
    from fractions import Fraction

    from sbjax.train.data import flip_count

    for n in (*range(1, 400), 2000, 20_000, 4868):
        for c in ("1.0", "0.99", "0.95", "0.9", "0.8", "0.75", "0.5"):
            k = (1 - Fraction(c)) * n
            if k.denominator == 1:  # c * n rows can agree exactly
                assert int(flip_count(float(c), n)) == int(k), (n, c)


def test_correlation_axis_equals_training_on_the_flipped_data():
    """One sweep over correlation = separate sweeps on the host-flipped training sets (same
    parameters and train metrics), and Group DRO's groups come from the flips."""
    x, y, _ = _data()
    x_alt, order = _decorrelation(x, y)
    cs = [1.0, 0.75]
    kw = dict(n_seeds=2, progress=False)
    both = train_sweep(
        CFG, FCN, (x, y), decorrelation=(x_alt, order), grid={"correlation": cs}, **kw
    )
    dro = train_sweep(
        CFG, FCN, (x, y), decorrelation=(x_alt, order), objective=G.group_dro(4),
        grid={"dro_step": [0.5], "correlation": cs}, **kw,
    )  # fmt: skip
    for j, c in enumerate(cs):
        flip = order < int(round((1 - c) * len(y)))
        assert flip.sum() == round((1 - c) * len(y))  # exactly, and nested in c
        xc = np.where(flip[:, None], x_alt, x)
        one = train_sweep(CFG, FCN, (xc, y), **kw)
        rows = np.asarray(both.grid_index) == j
        for a, b in zip(
            jax.tree_util.tree_leaves(both.params),
            jax.tree_util.tree_leaves(one.params),
            strict=True,
        ):
            np.testing.assert_allclose(np.asarray(a)[rows], b, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(both.history["train_acc"][rows], one.history["train_acc"])
        groups = spurious_groups(y, ~flip)
        ref = train_sweep(
            CFG, FCN, (xc, y), objective=G.group_dro(4), groups=groups,
            grid={"dro_step": [0.5]}, **kw,
        )  # fmt: skip
        np.testing.assert_allclose(
            np.asarray(dro.objective_state["q"])[np.asarray(dro.grid_index) == j],
            ref.objective_state["q"],
            rtol=1e-5,
        )


def test_decorrelation_inputs_are_checked():
    x, y, g = _data()
    x_alt, order = _decorrelation(x, y)
    with pytest.raises(ValueError, match="permutation"):
        train_sweep(CFG, FCN, (x, y), decorrelation=(x_alt, order[::-1] * 0), progress=False)
    with pytest.raises(ValueError, match="x_alt"):
        train_sweep(CFG, FCN, (x, y), decorrelation=(x_alt[:5], order), progress=False)
    with pytest.raises(ValueError, match="groups"):
        train_sweep(CFG, FCN, (x, y), decorrelation=(x_alt, order), groups=g, progress=False)
    with pytest.raises(ValueError, match="correlation"):
        train_sweep(CFG, FCN, (x, y), grid={"correlation": [0.9]}, progress=False)


def test_loss_rule_state_is_checkpointed_and_resumes_bit_for_bit(tmp_path):
    x, y, g = _data()
    cfg = TrainConfig(lr=0.1, batch_size=16, max_steps=40, eval_every=10, stop_rule="none")
    kw = dict(objective=G.group_dro(4), groups=g, grid={"dro_step": [0.5]}, progress=False)
    full = train_sweep(cfg, FCN, (x, y), n_seeds=2, **kw)
    out = tmp_path / "ck"
    train_sweep(cfg, FCN, (x, y), n_seeds=2, out_dir=out, periods_per_chunk=1, max_chunks=2, **kw)
    resumed = train_sweep(cfg, FCN, (x, y), n_seeds=2, out_dir=out, resume=True, **kw)
    np.testing.assert_array_equal(resumed.objective_state["q"], full.objective_state["q"])
    for a, b in zip(
        jax.tree_util.tree_leaves(resumed.params),
        jax.tree_util.tree_leaves(full.params),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
