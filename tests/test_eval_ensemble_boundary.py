"""Ensembles as models (identical members == one model) and Fig. 3c boundary projections."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbjax.eval import attacks as a
from sbjax.eval import boundary as bd
from sbjax.eval import ensemble as en
from sbjax.eval import metrics as m
from sbjax.eval import randomize as r

D = 6
N = 600


def mlp_logits(v, x):
    return jnp.tanh(x @ v["w1"] + v["b1"]) @ v["w2"]


def linear_logits(v, x):
    return x @ v["w"] + v["b"]


@pytest.fixture(scope="module")
def data():
    """z0 predictive (S); z3 predictive too (an S^c coordinate a model may use); rotated."""
    w = np.asarray(jax.random.orthogonal(jax.random.key(0), D), np.float32)
    kz, ky = jax.random.split(jax.random.key(1))
    y = jax.random.bernoulli(ky, 0.5, (N,)).astype(jnp.int32)
    sgn = (2 * y - 1).astype(jnp.float32)
    z = jax.random.normal(kz, (N, D))
    z = z.at[:, 0].add(1.5 * sgn).at[:, 3].add(1.5 * sgn)
    return z @ w, y, w


def mlp_stack(key, m_models):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w1": jax.random.normal(k1, (m_models, D, 8)),
        "b1": jax.random.normal(k2, (m_models, 8)),
        "w2": jax.random.normal(k3, (m_models, 8, 2)),
    }


@pytest.mark.parametrize("aggregation", ["logits", "probs"])
def test_ensemble_of_identical_members_equals_the_single_model(data, aggregation):
    x, y, w = data
    single = mlp_stack(jax.random.key(2), 2)  # two different models
    copies = jax.tree.map(lambda t: jnp.repeat(t, 3, axis=0), single)  # [6]: a,a,a,b,b,b
    groups = en.group_members(copies, 3)
    assert jax.tree.leaves(groups)[0].shape[:2] == (2, 3)
    ens = en.ensemble_logits_fn(mlp_logits, aggregation)
    lg_e = m.stacked_logits(ens, groups, x)
    lg_s = m.stacked_logits(mlp_logits, single, x)
    score = lambda t: np.asarray(t[..., 1] - t[..., 0])
    if aggregation == "logits":
        np.testing.assert_allclose(lg_e, lg_s, atol=1e-5)
    else:  # log-probabilities: same softmax, same score
        np.testing.assert_allclose(jax.nn.softmax(lg_e), jax.nn.softmax(lg_s), atol=1e-5)
    np.testing.assert_allclose(score(lg_e), score(lg_s), atol=1e-4)
    e_eval = m.evaluate(ens, groups, x, y, auc_kind="both")
    s_eval = m.evaluate(mlp_logits, single, x, y, auc_kind="both")
    for k in s_eval:
        np.testing.assert_allclose(e_eval[k], s_eval[k], atol=1e-6)
    # Every metric applies: randomized report and PGD on the ensemble stack.
    basis = r.as_basis(rotation=w, simple_coords=[0])
    rep_e = r.randomization_report(ens, groups, x, y, jax.random.key(3), basis)
    rep_s = r.randomization_report(mlp_logits, single, x, y, jax.random.key(3), basis)
    np.testing.assert_allclose(
        rep_e["s_randomized"]["roc_auc"], rep_s["s_randomized"]["roc_auc"], atol=1e-5
    )
    kw = dict(eps=0.5, step_size=0.1, n_iter=3)
    np.testing.assert_allclose(
        a.pgd_attack(ens, groups, x[:50], y[:50], jax.random.key(4), **kw).delta,
        a.pgd_attack(mlp_logits, single, x[:50], y[:50], jax.random.key(4), **kw).delta,
        atol=1e-4,
    )


def test_aggregations_match_numpy(data):
    x, _, _ = data
    members = mlp_stack(jax.random.key(5), 3)
    per = np.asarray(jax.vmap(mlp_logits, in_axes=(0, None))(members, x))  # [3, n, 2]
    groups = en.group_members(members, 3)
    lg = np.asarray(m.stacked_logits(en.ensemble_logits_fn(mlp_logits), groups, x))[0]
    np.testing.assert_allclose(lg, per.mean(0), atol=1e-5)
    p = np.exp(per - per.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    lp = np.asarray(m.stacked_logits(en.ensemble_logits_fn(mlp_logits, "probs"), groups, x))[0]
    np.testing.assert_allclose(np.exp(lp), p.mean(0), atol=1e-5)
    assert en.ensemble_logits_fn(mlp_logits) == en.ensemble_logits_fn(mlp_logits)  # cacheable


def test_group_members_and_errors():
    v = {"w": jnp.arange(10.0).reshape(5, 2)}
    g = en.group_members(v, 2, drop_remainder=True)
    np.testing.assert_array_equal(g["w"], np.arange(8.0).reshape(2, 2, 2))
    with pytest.raises(ValueError, match="n_members"):
        en.group_members(v, 2)
    with pytest.raises(ValueError, match="n_members"):
        en.group_members(v, 2, n_ensembles=3)
    with pytest.raises(ValueError, match="aggregation"):
        en.ensemble_logits_fn(mlp_logits, "vote")


def test_most_influential_ties_and_subsets():
    vals = np.array([[0.5, 1.0, 1.0, 1.0], [0.5, 1.0, 0.9, 0.9], [1.0, 0.7, 0.7, 0.2]])
    np.testing.assert_array_equal(bd.most_influential(vals, [1, 2, 3]), [1, 2, 3])
    assert bd.most_influential(vals[1], [3, 2, 1]) == 2  # tie between 2 and 3 -> smaller index
    assert bd.most_influential([0.9, 0.8], [7, 5], coords=[5, 7]) == 7
    assert bd.most_influential([0.8, 0.8], [7, 5], coords=[7, 5]) == 5
    with pytest.raises(ValueError, match="candidates"):
        bd.most_influential(vals, [4])


def test_boundary_picks_the_used_sc_coordinate_and_is_flat_for_s_only(data):
    x, y, w = data
    e = np.eye(D, dtype=np.float32)
    cols = [w.T @ e[0], w.T @ (e[0] + e[3])]  # S only; S and S^c coordinate 3
    variables = {
        "w": jnp.stack([jnp.stack([jnp.zeros(D), jnp.asarray(c)], 1) for c in cols]),
        "b": jnp.zeros((2, 2)),
    }
    basis = r.as_basis(rotation=w, simple_coords=[0])
    g = bd.boundary_projection(
        linear_logits, variables, basis, jax.random.key(0), data=(x, y), n_grid=12, n_fill=4
    )
    assert g.c1 == 0
    # S-only: every S^c coordinate ties (randomizing it changes nothing) -> smallest, 1.
    np.testing.assert_array_equal(g.c2, [1, 3])
    assert g.prob.shape == (2, 12, 12) and g.v.shape == (2, 12) and g.data_v.shape == (2, N)
    # S-only boundary: a vertical line at z0 = 0, independent of c2 and of the fillers.
    want = (g.u > 0).astype(np.float32)
    np.testing.assert_array_equal(g.prob[0], np.broadcast_to(want, (12, 12)))
    # The second model's boundary moves with c2: class-1 fraction grows with z3.
    assert g.prob[1][-1].mean() > g.prob[1][0].mean()
    np.testing.assert_allclose(g.data_u, np.asarray(x @ w.T)[:, 0], atol=1e-5)
    # Reference options: hard-coded c2 = 1 and the U[0, 1) fill.
    g_ref = bd.boundary_projection(
        linear_logits,
        variables,
        basis,
        jax.random.key(0),
        data=(x, y),
        c2=1,
        fill="uniform",
        n_grid=12,
        n_fill=4,
    )
    np.testing.assert_array_equal(g_ref.c2, [1, 1])
    np.testing.assert_array_equal(g_ref.prob[0], g.prob[0])
    # A precomputed coordinate-wise accuracy gives the same choice.
    acc = r.per_coordinate_randomized(linear_logits, variables, x, y, jax.random.key(5), w)
    g_pre = bd.boundary_projection(
        linear_logits,
        variables,
        basis,
        jax.random.key(0),
        data=(x, y),
        coord_acc=acc["accuracy"],
        n_grid=4,
        n_fill=2,
    )
    np.testing.assert_array_equal(g_pre.c2, [1, 3])
    with pytest.raises(ValueError, match="fill"):
        bd.boundary_projection(
            linear_logits, variables, basis, jax.random.key(0), data=(x, y), fill="zeros"
        )
    with pytest.raises(ValueError, match="c2"):
        bd.boundary_projection(
            linear_logits, variables, basis, jax.random.key(0), data=(x, y), c2=0
        )


def test_worst_stop_reason_orders_diverged_before_budget_before_converged():
    from sbjax.eval.ensemble import worst_stop_reason

    assert worst_stop_reason("converged", "max_steps") == "max_steps"
    assert worst_stop_reason("max_steps", "diverged", "converged") == "diverged"
    assert worst_stop_reason("converged") == "converged"
    with pytest.raises(ValueError, match="stop_reason"):
        worst_stop_reason("converged", "done")
