"""UAPs: budgets and box, direction on linear models, vmap == loop, transfer matrix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbjax.eval import attacks as a
from sbjax.eval import randomize as r
from sbjax.eval import uap as u

D = 6
N = 120


def linear_logits(v, x):
    return x @ v["w"] + v["b"]


def mlp_logits(v, x):
    return jnp.tanh(x @ v["w1"]) @ v["w2"]


@pytest.fixture(scope="module")
def data():
    """Canonical z0 = label-signed margin feature, other coordinates uniform; Haar-rotated."""
    w = np.asarray(jax.random.orthogonal(jax.random.key(0), D), np.float32)
    kz, ky = jax.random.split(jax.random.key(1))
    y = jax.random.bernoulli(ky, 0.5, (N,)).astype(jnp.int32)
    z = jax.random.uniform(kz, (N, D), minval=-1.0, maxval=1.0)
    z = z.at[:, 0].set((2 * y - 1) * (0.1 + 0.4 * jnp.abs(z[:, 0])))
    return z @ w, y, w


def linear_stack(key, m=3):
    kw, kb = jax.random.split(key)
    return {"w": jax.random.normal(kw, (m, D, 2)), "b": 0.1 * jax.random.normal(kb, (m, 2))}


def cosine(p, q):
    return float(np.dot(p, q) / (np.linalg.norm(p) * np.linalg.norm(q)))


def test_l2_uaps_point_along_the_label_relevant_weight_vector(data):
    x, y, _ = data
    variables = linear_stack(jax.random.key(2))
    svd = np.asarray(
        u.svd_uap(
            linear_logits, variables, x, y, jax.random.key(3), eps=0.5, step_size=0.05, n_iter=20
        )
    )
    asu = np.asarray(u.as_uap(linear_logits, variables, x, y, eps=0.5, n_iter=10, batch_size=50))
    for i in range(3):
        wdiff = np.asarray(variables["w"][i, :, 1] - variables["w"][i, :, 0])
        # Label-signed: +u is applied to class 1, so u lowers logit1 - logit0: cosine -1.
        assert cosine(svd[i], wdiff) < -0.999
        assert cosine(asu[i], wdiff) < -0.999
        assert np.linalg.norm(svd[i]) == pytest.approx(1.0, abs=1e-5)
        assert np.linalg.norm(asu[i]) <= 0.5 * (1 + 1e-5)


@pytest.mark.parametrize("label_signed", [True, False])
def test_uaps_never_exceed_budget_or_leave_box(data, label_signed):
    x, y, _ = data
    k1, k2 = jax.random.split(jax.random.key(4))
    variables = {"w1": jax.random.normal(k1, (2, D, 8)), "w2": jax.random.normal(k2, (2, 8, 2))}
    bounds = a.data_bounds(x)
    eps = 0.8
    delta = u.as_uap(
        mlp_logits,
        variables,
        x,
        y,
        eps=eps,
        n_iter=5,
        batch_size=32,
        bounds=bounds,
        label_signed=label_signed,
    )
    assert np.linalg.norm(np.asarray(delta), axis=-1).max() <= eps * (1 + 1e-5)
    svd = u.svd_uap(
        mlp_logits,
        variables,
        x,
        y,
        jax.random.key(5),
        eps=1.0,
        step_size=0.1,
        n_iter=5,
        bounds=bounds,
        label_signed=label_signed,
    )
    for t, scale in ((delta[0], None), (svd[1], eps)):
        for direction in (1.0, -1.0):
            xa = np.asarray(
                u.apply_uap(
                    x,
                    y,
                    t,
                    eps=scale,
                    label_signed=label_signed,
                    direction=direction,
                    bounds=bounds,
                )
            )
            assert np.linalg.norm(xa - np.asarray(x), axis=-1).max() <= eps * (1 + 1e-5)
            assert xa.min() >= bounds[0] - 1e-6 and xa.max() <= bounds[1] + 1e-6


def test_vmapped_uaps_equal_loop_over_models(data):
    x, y, _ = data
    variables = linear_stack(jax.random.key(6))
    kw_svd = dict(eps=0.5, step_size=0.05, n_iter=5)
    svd = u.svd_uap(linear_logits, variables, x, y, jax.random.key(7), model_chunk=2, **kw_svd)
    asu = u.as_uap(linear_logits, variables, x, y, eps=0.5, n_iter=3, batch_size=50)
    acc = u.uap_accuracy(linear_logits, variables, x, y, svd, eps=0.3, both_signs=True)
    for i in range(3):
        vi = jax.tree.map(lambda t, i=i: t[i : i + 1], variables)
        np.testing.assert_allclose(
            svd[i], u.svd_uap(linear_logits, vi, x, y, jax.random.key(7), **kw_svd)[0], atol=1e-5
        )
        np.testing.assert_allclose(
            asu[i],
            u.as_uap(linear_logits, vi, x, y, eps=0.5, n_iter=3, batch_size=50)[0],
            atol=1e-5,
        )
        ai = u.uap_accuracy(linear_logits, vi, x, y, svd[i : i + 1], eps=0.3, both_signs=True)
        # Accuracy is a count over two programs that round differently: it may differ only by
        # the points whose perturbed logit margin is within rounding of 0 (for either sign).
        uu = 0.3 * np.asarray(svd[i], np.float64) / np.linalg.norm(np.asarray(svd[i]))
        sgn = (2.0 * np.asarray(y) - 1.0)[:, None]
        wi, bi = (np.asarray(t[i], np.float64) for t in (variables["w"], variables["b"]))
        accs, n_close = [], 0
        for d in (1.0, -1.0):
            lg = (np.asarray(x, np.float64) + d * sgn * uu) @ wi + bi
            n_close += int(np.sum(np.abs(lg[:, 1] - lg[:, 0]) < 1e-4))
            accs.append(np.mean(lg.argmax(1) == np.asarray(y)))
        assert abs(float(acc[i]) - float(ai[0])) * N <= n_close + 1e-3
        assert float(ai[0]) == pytest.approx(min(accs), abs=(n_close + 1e-3) / N)


def test_accuracy_under_uap_signs_and_transfer(data):
    x, y, w = data
    # Three models all using canonical coordinate 0 (different scales), one using coordinate 1.
    e = np.eye(D, dtype=np.float32)
    cols = [w.T @ e[0], 2 * (w.T @ e[0]), 0.5 * (w.T @ e[0]), w.T @ e[1]]
    variables = {
        "w": jnp.stack([jnp.stack([jnp.zeros(D), jnp.asarray(c)], 1) for c in cols]),
        "b": jnp.zeros((4, 2)),
    }
    attack = -(e[0] @ w)  # label-signed: pushes class 1 down along the S direction
    uaps = jnp.stack([attack, -attack])
    acc_plus = u.uap_accuracy(linear_logits, variables, x, y, uaps[0], eps=1.0)
    acc_minus = u.uap_accuracy(linear_logits, variables, x, y, uaps[1], eps=1.0)
    acc_both, sign = u.uap_accuracy(
        linear_logits, variables, x, y, uaps[1], eps=1.0, both_signs=True, return_sign=True
    )
    np.testing.assert_allclose(acc_plus[:3], 0.0)
    np.testing.assert_allclose(acc_minus[:3], 1.0)
    np.testing.assert_allclose(acc_both, np.minimum(acc_plus, acc_minus))
    np.testing.assert_array_equal(np.asarray(sign[:3]), -1.0)
    # Transfer: the S-attack transfers to every S model and not to the coordinate-1 model.
    t = np.asarray(u.uap_transfer_matrix(linear_logits, variables, x, y, uaps, eps=1.0))
    assert t.shape == (2, 4)
    np.testing.assert_allclose(t[0], acc_plus)
    np.testing.assert_allclose(t[1], acc_minus)
    multi = u.uap_transfer_matrix_multi(
        [
            (linear_logits, jax.tree.map(lambda q: q[:2], variables)),
            (linear_logits, jax.tree.map(lambda q: q[2:], variables)),
        ],
        x,
        y,
        uaps,
        eps=1.0,
    )
    np.testing.assert_allclose(multi, t)
    # Plain (label-agnostic): the same shift for everyone, accuracy about the class balance.
    plain = u.uap_accuracy(linear_logits, variables, x, y, uaps[0], eps=1.0, label_signed=False)
    assert abs(float(plain[0]) - float(np.mean(np.asarray(y) == 0))) < 1e-6


def test_uap_report_on_s_only_model_concentrates_on_s(data):
    x, y, w = data
    wcol = w.T @ np.eye(D, dtype=np.float32)[0]
    variables = {"w": jnp.stack([jnp.zeros(D), jnp.asarray(wcol)], 1)[None], "b": jnp.zeros((1, 2))}
    basis = r.as_basis(rotation=w, simple_coords=[0])
    bounds = a.data_bounds(x)
    x_fit, y_fit, x_ev, y_ev = x[:60], y[:60], x[60:], y[60:]  # fit and evaluation split apart
    for kind, step in (("svd", 0.1), ("as", 0.05), ("plain", 0.05)):
        rep = u.uap_report(
            linear_logits,
            variables,
            (x_fit, y_fit),
            (x_ev, y_ev),
            basis,
            jax.random.key(0),
            kind=kind,
            eps=1.0,
            pgd_eps=1.0,
            step_size=step,
            n_iter=20,
            bounds=bounds,
        )
        assert float(rep["fraction_on_s"][0]) > 0.99, kind
        assert float(rep["energy_on_s"][0]) > 0.98, kind
        if kind == "plain":
            assert 0.3 < float(rep["accuracy"][0]) < 0.7
        else:
            assert float(rep["accuracy"][0]) == 0.0, kind
        assert float(rep["clean_accuracy"][0]) == 1.0


def test_bad_uap_inputs_raise(data):
    x, y, _ = data
    variables = linear_stack(jax.random.key(0), m=2)
    with pytest.raises(ValueError, match="eps"):
        u.as_uap(linear_logits, variables, x, y, eps=-1.0, n_iter=1)
    with pytest.raises(ValueError, match="uaps.shape"):
        u.uap_accuracy(linear_logits, variables, x, y, jnp.ones((3, D)))
    with pytest.raises(ValueError, match="uaps.shape"):
        u.uap_accuracy(linear_logits, variables, x, y, jnp.ones((2, D + 1)))
    with pytest.raises(ValueError, match="kind"):
        u.uap_report(
            linear_logits,
            variables,
            (x, y),
            (x, y),
            None,
            jax.random.key(0),
            kind="deepfool",
            eps=1.0,
            step_size=0.1,
            n_iter=1,
        )
    with pytest.raises(ValueError, match="pgd_eps"):
        u.uap_report(
            linear_logits,
            variables,
            (x, y),
            (x, y),
            None,
            jax.random.key(0),
            kind="svd",
            eps=1.0,
            step_size=0.1,
            n_iter=1,
        )
