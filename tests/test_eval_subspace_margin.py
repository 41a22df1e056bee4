"""Margins along subspaces (BEYOND.md 5.3) against their analytic values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbjax.data import make_dataset
from sbjax.eval.subspace_margin import subspace_basis, subspace_margins
from sbjax.models import make_model

D = 10


@pytest.fixture(scope="module")
def lms():
    ds = make_dataset("lms", k=5, d=D)
    x, y = ds.sample(jax.random.key(1), 2000)
    return ds, x, np.asarray(ds.to_canonical(x), np.float64)


def linear_logits(v, x):
    return x @ v["w"] + v["b"]


def linear_model(ds, w_can, bias):
    """Logits [0, w_can . z + bias] on rotated inputs (z = x @ W.T, so w = W.T w_can)."""
    col = np.asarray(ds.rotation).T @ np.asarray(w_can, np.float32)
    return {
        "w": np.stack([np.zeros(D, np.float32), col], 1),
        "b": np.array([0.0, bias], np.float32),
    }


def stack(*vs):
    return jax.tree.map(lambda *a: jnp.stack([jnp.asarray(t) for t in a]), *vs)


def test_linear_model_margins_are_analytic(lms):
    ds, x, z = lms
    w_s_only = np.r_[2.0, np.zeros(D - 1)]
    w_mixed = np.r_[1.0, 0.5, -0.5, np.zeros(D - 3)]
    v = stack(linear_model(ds, w_s_only, 0.3), linear_model(ds, w_mixed, -0.1))
    out = subspace_margins(linear_logits, v, x, ds, return_margins=True)
    s0 = z @ w_s_only + 0.3
    s1 = z @ w_mixed - 0.1
    # w on S only: the S-margin is |w . z + b| / ||w_S|| exactly; S^c can never flip it.
    np.testing.assert_allclose(out["margins_s"][0], np.abs(s0) / 2.0, rtol=1e-4, atol=1e-6)
    assert np.all(np.isinf(out["margins_sc"][0]))
    assert float(out["flipped_frac_sc"][0]) == 0.0 and np.isinf(out["margin_median_sc"][0])
    assert np.isinf(out["margin_ratio_sc_s"][0])
    assert float(out["margin_median_s"][0]) == pytest.approx(np.median(np.abs(s0) / 2), rel=1e-4)
    # Mixed weights: each subspace's margin is |score| / ||w restricted to it||.
    within = np.abs(s1) <= out["max_radius"]
    np.testing.assert_allclose(
        out["margins_s"][1][within], np.abs(s1)[within], rtol=1e-4, atol=1e-6
    )
    m_sc = np.abs(s1) / np.sqrt(0.5)
    ok = m_sc <= out["max_radius"]
    np.testing.assert_allclose(out["margins_sc"][1][ok], m_sc[ok], rtol=1e-4, atol=1e-6)
    assert np.all(np.isinf(out["margins_sc"][1][~ok]))


def test_max_radius_and_per_coordinate_profile(lms):
    ds, x, z = lms
    v = stack(linear_model(ds, np.r_[2.0, np.zeros(D - 1)], 0.0))
    subspaces = {f"c{c}": [c] for c in range(3)}
    out = subspace_margins(linear_logits, v, x, ds, subspaces=subspaces, max_radius=0.25)
    m = np.abs(z[:, 0])  # |2 z0| / 2
    assert float(out["flipped_frac_c0"][0]) == pytest.approx(np.mean(m <= 0.25), abs=1e-3)
    assert float(out["margin_median_flipped_c0"][0]) == pytest.approx(
        np.median(m[m <= 0.25]), rel=1e-3
    )
    for c in (1, 2):
        assert float(out[f"flipped_frac_c{c}"][0]) == 0.0
        assert np.isnan(out[f"margin_median_flipped_c{c}"][0])
    assert "margin_ratio_sc_s" not in out and out["max_radius"] == 0.25


def test_relu_fcn_reading_s(lms):
    """A ReLU FCN with score relu(z0) - relu(-z0) = z0: S-margin |z0| through the network's
    gradients; zero gradient along S^c -> never flipped. Batching does not change results."""
    ds, x, z = lms
    model = make_model({"name": "fcn", "width": 4, "depth": 1})
    w = np.asarray(ds.rotation)
    k = np.zeros((D, 4), np.float32)
    k[:, 0], k[:, 1] = w[0], -w[0]
    hk = np.zeros((4, 2), np.float32)
    hk[0, 1], hk[1, 1] = 1.0, -1.0
    v = {
        "params": {
            "hidden_0": {"kernel": k, "bias": np.zeros(4, np.float32)},
            "head": {"kernel": hk, "bias": np.zeros(2, np.float32)},
        }
    }
    v = stack(v)
    out = subspace_margins(model.logits, v, x, ds, return_margins=True)
    np.testing.assert_allclose(out["margins_s"][0], np.abs(z[:, 0]), rtol=1e-4, atol=1e-6)
    assert float(out["flipped_frac_sc"][0]) == 0.0
    batched = subspace_margins(model.logits, v, x, ds, return_margins=True, batch_size=300)
    np.testing.assert_allclose(batched["margins_s"], out["margins_s"], rtol=1e-6)


def test_subspace_basis_moves_only_its_coordinates(lms):
    ds, x, _ = lms
    u = subspace_basis(ds, [0, 3])
    np.testing.assert_allclose(u @ u.T, np.eye(2), atol=1e-6)
    dz = np.asarray(ds.to_canonical(jnp.asarray([[0.7, -0.2]]) @ u))[0]
    np.testing.assert_allclose(dz[[0, 3]], [0.7, -0.2], atol=1e-6)
    np.testing.assert_allclose(np.delete(dz, [0, 3]), 0.0, atol=1e-6)


def test_errors(lms):
    ds, x, _ = lms
    v = stack(linear_model(ds, np.r_[1.0, np.zeros(D - 1)], 0.0))
    with pytest.raises(ValueError, match="max_radius="):
        subspace_margins(linear_logits, v, x, ds, max_radius=-1.0)
    with pytest.raises(ValueError, match="coords="):
        subspace_margins(linear_logits, v, x, ds, subspaces={"bad": [D]})
    with pytest.raises(ValueError, match="subspaces="):
        subspace_margins(linear_logits, v, x, ds, subspaces={})
    with pytest.raises(ValueError, match="n_iter="):
        subspace_margins(linear_logits, v, x, ds, n_iter=0)
