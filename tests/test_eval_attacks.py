"""PGD: budgets, box, restarts, batching and vmap invariance; budget fraction on S."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbjax.eval import attacks as a
from sbjax.eval import randomize as r

D = 6
N = 64


def mlp_logits(v, x):
    return jnp.tanh(x @ v["w1"] + v["b1"]) @ v["w2"]


def linear_logits(v, x):
    return x @ v["w"] + v["b"]


def mlp_stack(key, m=3, hidden=16):
    k1, k2, k3 = jax.random.split(key, 3)
    return {
        "w1": jax.random.normal(k1, (m, D, hidden)),
        "b1": 0.1 * jax.random.normal(k2, (m, hidden)),
        "w2": jax.random.normal(k3, (m, hidden, 2)),
    }


@pytest.fixture(scope="module")
def data():
    kx, ky = jax.random.split(jax.random.key(0))
    x = jax.random.uniform(kx, (N, D), minval=-1.0, maxval=1.0)
    y = jax.random.bernoulli(ky, 0.5, (N,)).astype(jnp.int32)
    return x, y


@pytest.mark.parametrize(
    "norm,eps,schedule,restarts",
    [("l2", 0.7, "constant", 2), ("linf", 0.2, "cosine", 1), ("l2", 5.0, "linear", 1)],
)
def test_pgd_respects_budget_and_box(data, norm, eps, schedule, restarts):
    x, y = data
    variables = mlp_stack(jax.random.key(1))
    bounds = (-1.0, 1.0)  # the box holds every x, as with the reference's data bounds
    res = a.pgd_attack(
        mlp_logits,
        variables,
        x,
        y,
        jax.random.key(2),
        norm=norm,
        eps=eps,
        step_size=eps / 4,
        n_iter=10,
        bounds=bounds,
        restarts=restarts,
        step_schedule=schedule,
    )
    delta = np.asarray(res.delta)
    assert delta.shape == (3, N, D)
    if norm == "l2":
        assert np.linalg.norm(delta, axis=-1).max() <= eps * (1 + 1e-5)
    else:
        assert np.abs(delta).max() <= eps + 1e-6
    xa = np.asarray(x)[None] + delta
    assert xa.min() >= bounds[0] - 1e-6 and xa.max() <= bounds[1] + 1e-6
    assert np.all(np.asarray(res.accuracy) <= np.asarray(res.clean_accuracy))
    assert np.all(np.isfinite(res.loss))


def test_pgd_vmap_equals_loop_and_batching_invariant(data):
    x, y = data
    variables = mlp_stack(jax.random.key(3))
    kw = dict(eps=0.5, step_size=0.1, n_iter=5, bounds=(-1.0, 1.0))
    full = a.pgd_attack(mlp_logits, variables, x, y, jax.random.key(4), **kw)
    chunked = a.pgd_attack(
        mlp_logits, variables, x, y, jax.random.key(4), batch_size=24, model_chunk=2, **kw
    )
    np.testing.assert_allclose(full.delta, chunked.delta, atol=1e-5)
    for i in range(3):
        vi = jax.tree.map(lambda t, i=i: t[i : i + 1], variables)
        one = a.pgd_attack(mlp_logits, vi, x, y, jax.random.key(4), **kw)
        np.testing.assert_allclose(full.delta[i], one.delta[0], atol=1e-5)
        # Accuracy is a count: the two programs round differently (deltas agree to 1e-5), so a
        # prediction may differ only where the adversarial logit margin is that close to 0.
        v0 = jax.tree.map(lambda t: t[0], vi)
        lg = np.asarray(mlp_logits(v0, x + one.delta[0]), np.float64)
        n_close = int(np.sum(np.abs(lg[:, 1] - lg[:, 0]) < 1e-3))
        assert abs(float(full.accuracy[i]) - float(one.accuracy[0])) * N <= n_close + 1e-3
        assert float(one.accuracy[0]) == pytest.approx(np.mean(lg.argmax(1) == np.asarray(y)))


def test_restarts_keep_the_highest_loss(data):
    x, y = data
    variables = mlp_stack(jax.random.key(5), m=1)
    kw = dict(eps=0.3, step_size=0.05, n_iter=3, rand_init=0.3)
    one = a.pgd_attack(mlp_logits, variables, x, y, jax.random.key(6), restarts=1, **kw)
    three = a.pgd_attack(mlp_logits, variables, x, y, jax.random.key(6), restarts=3, **kw)
    # Restart 0 is shared, so keeping the best can only raise each example's loss.
    assert np.all(np.asarray(three.loss) >= np.asarray(one.loss) - 1e-6)
    assert np.any(np.asarray(three.loss) > np.asarray(one.loss) + 1e-4)


def test_l2_pgd_on_s_only_linear_model_spends_budget_on_s():
    w = np.asarray(jax.random.orthogonal(jax.random.key(7), D), np.float32)
    kz, ky = jax.random.split(jax.random.key(8))
    y = jax.random.bernoulli(ky, 0.5, (N,)).astype(jnp.int32)
    z = jax.random.uniform(kz, (N, D))
    z = z.at[:, 0].set((2 * y - 1) * (0.1 + 0.3 * z[:, 0]))
    x = z @ w
    wcol = w.T @ np.eye(D, dtype=np.float32)[0]
    variables = {"w": jnp.stack([jnp.zeros(D), jnp.asarray(wcol)], 1)[None], "b": jnp.zeros((1, 2))}
    res = a.pgd_attack(
        linear_logits,
        variables,
        x,
        y,
        jax.random.key(9),
        eps=1.0,
        step_size=0.1,
        n_iter=20,
        bounds=a.data_bounds(x),
    )
    assert float(res.accuracy[0]) == 0.0
    basis = r.as_basis(rotation=w, simple_coords=[0])
    frac = a.mean_budget_fraction(res.delta, basis)
    assert frac.shape == (1,) and float(frac[0]) > 0.99
    assert float(a.mean_budget_fraction(res.delta, w, [0], kind="energy")[0]) > 0.98


def test_budget_fraction_known_values():
    w = np.asarray(jax.random.orthogonal(jax.random.key(0), D), np.float32)
    e = np.eye(D, dtype=np.float32)
    p = np.stack([e[0], e[0] + e[1], 3 * e[2], np.zeros(D, np.float32)]) @ w
    basis = r.as_basis(rotation=w, simple_coords=[0])
    f = np.asarray(a.budget_fraction(p, basis))
    np.testing.assert_allclose(f[:3], [1.0, np.sqrt(0.5), 0.0], atol=1e-5)
    assert np.isnan(f[3])
    fe = np.asarray(a.budget_fraction(p, basis, kind="energy"))
    np.testing.assert_allclose(fe[:3], [1.0, 0.5, 0.0], atol=1e-5)
    # Images: the MNIST half of a (4, 2, 1) "image".
    img = np.zeros((2, 4, 2, 1), np.float32)
    img[0, :2] = 1.0
    img[1, :2], img[1, 2:] = 1.0, 1.0
    f_img = np.asarray(a.budget_fraction(img, r.image_basis((4, 2, 1), 2), kind="energy"))
    np.testing.assert_allclose(f_img, [1.0, 0.5])


def test_bad_attack_parameters_raise(data):
    x, y = data
    variables = mlp_stack(jax.random.key(0), m=1)
    call = lambda **kw: a.pgd_attack(
        mlp_logits, variables, x, y, jax.random.key(0), **{"eps": 0.1, "step_size": 0.1, **kw}
    )
    with pytest.raises(ValueError, match="eps"):
        call(eps=0.0)
    with pytest.raises(ValueError, match="norm"):
        call(norm="l1")
    with pytest.raises(ValueError, match="bounds"):
        call(bounds=(1.0, -1.0))
    with pytest.raises(ValueError, match="step_schedule"):
        call(step_schedule="exp")
    with pytest.raises(ValueError, match="restarts"):
        call(restarts=0)
    with pytest.raises(ValueError, match="kind"):
        a.budget_fraction(np.ones((2, D)), np.eye(D), [0], kind="l1")
    with pytest.raises(ValueError, match="delta.shape"):
        a.budget_fraction(np.ones((2, D + 1)), np.eye(D), [0])
