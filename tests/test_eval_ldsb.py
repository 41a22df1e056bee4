"""LD-SB (Morwani et al. 2023) on hand-built FCNs whose projection P is known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbjax.data import make_dataset
from sbjax.eval.ldsb import ldsb_projection, ldsb_report
from sbjax.models import make_model

D = 10
WIDTH = 8


@pytest.fixture(scope="module")
def lms():
    ds = make_dataset("lms", k=5, d=D)
    x, y = ds.sample(jax.random.key(1), 4000)
    return ds, x, y


def reader(ds, coord):
    """(8, 1)-FCN computing score = relu(z_c) - relu(-z_c) = z_c for canonical coordinate c.

    Its first layer reads only e_c (in the model basis the row W[c] of the rotation): rank 1,
    P = the projector on e_c. On LMS-5 with c = 0 (S) it is the Bayes classifier sign(z_0).
    """
    w = np.asarray(ds.rotation)
    k = np.zeros((D, WIDTH), np.float32)
    k[:, 0], k[:, 1] = w[coord], -w[coord]
    hk = np.zeros((WIDTH, 2), np.float32)
    hk[0, 1], hk[1, 1] = 1.0, -1.0
    return {
        "params": {
            "hidden_0": {"kernel": k, "bias": np.zeros(WIDTH, np.float32)},
            "head": {"kernel": hk, "bias": np.zeros(2, np.float32)},
        }
    }


def stack(*vs):
    return jax.tree.map(lambda *a: jnp.stack([jnp.asarray(t) for t in a]), *vs)


MODEL = make_model({"name": "fcn", "width": WIDTH, "depth": 1})


def test_reader_of_s_has_ldsb_on_s(lms):
    ds, x, _ = lms
    v = stack(reader(ds, 0), reader(ds, 1))  # reads S; reads one S^c coordinate
    out = {k: np.asarray(a) for k, a in ldsb_report(MODEL, v, x, jax.random.key(0), ds).items()}
    np.testing.assert_array_equal(out["ldsb_rank"], [1, 1])
    np.testing.assert_allclose(out["ldsb_explained"], 1.0, atol=1e-6)
    np.testing.assert_allclose(out["ldsb_overlap_s"], [1.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(out["ldsb_p_in_s"], [1.0, 0.0], atol=1e-5)
    # Swapping the P_perp part changes nothing; swapping the P part flips about half the
    # predictions (the pair's z_c signs differ with probability ~1/2).
    np.testing.assert_array_equal(out["ldsb_pperp_pc"], 0.0)
    assert np.all(out["ldsb_pperp_lc"] < 1e-4)
    assert np.all(out["ldsb_p_pc"] > 0.4) and np.all(out["ldsb_p_pc"] < 0.6)
    assert np.all(out["ldsb_p_lc"] > 0.5)
    assert out["ldsb_singular_values"].shape == (2, WIDTH)


def test_prediction_change_matches_direct_computation(lms):
    """pC / LC computed by hand from the pairing permutation and the projector."""
    ds, x, _ = lms
    v = jax.tree.map(lambda a: a[None], reader(ds, 0))
    v["params"]["hidden_0"]["kernel"] = v["params"]["hidden_0"]["kernel"] + 0.3 * jax.random.normal(
        jax.random.key(5), (1, D, WIDTH)
    )
    key = jax.random.key(2)
    out = ldsb_report(MODEL, v, x, key, ds, rank=2)
    kern = np.asarray(v["params"]["hidden_0"]["kernel"][0], np.float64)
    u, _, _ = np.linalg.svd(kern, full_matrices=False)
    p = u[:, :2] @ u[:, :2].T
    xn = np.asarray(x, np.float64)
    xp = xn[np.asarray(jax.random.permutation(key, x.shape[0]))]
    one = jax.tree.map(lambda a: a[0], v)
    f = lambda t: np.asarray(MODEL.logits(one, jnp.asarray(t, jnp.float32)), np.float64)
    f0 = f(xn)
    for name, mixed in (
        ("pperp", xn @ p + xp @ (np.eye(D) - p)),
        ("p", xp @ p + xn @ (np.eye(D) - p)),
    ):
        fm = f(mixed)
        pc = np.mean(fm.argmax(1) != f0.argmax(1))
        lc = np.mean(np.linalg.norm(fm - f0, axis=1)) / np.mean(np.linalg.norm(f0, axis=1))
        assert float(out[f"ldsb_{name}_pc"][0]) == pytest.approx(pc, abs=2 / x.shape[0])
        assert float(out[f"ldsb_{name}_lc"][0]) == pytest.approx(lc, rel=1e-3)
    assert int(out["ldsb_rank"][0]) == 2


@pytest.mark.parametrize("threshold, rank", [(0.5, 1), (0.9, 2), (0.95, 3), (1.0, 3)])
def test_rank_rule(threshold, rank):
    # Singular values 3, 2, 1, 0: cumulative energy 9/14, 13/14, 14/14.
    q1 = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 6)))[0]
    q2 = np.linalg.qr(np.random.default_rng(1).normal(size=(5, 5)))[0]
    s = np.zeros((6, 5))
    s[0, 0], s[1, 1], s[2, 2] = 3, 2, 1
    kern = jnp.asarray(q1 @ s @ q2, jnp.float32)
    v, mask, r, sigma = ldsb_projection(kern, threshold)
    assert int(r) == rank
    np.testing.assert_allclose(sigma[:4], [3, 2, 1, 0], atol=1e-5)
    np.testing.assert_array_equal(mask, (np.arange(5) < rank).astype(np.float32))
    # Rows of v span the kernel's column space (W1's row space) in order.
    np.testing.assert_allclose(np.abs(np.asarray(v[0]) @ q1[:, 0]), 1.0, atol=1e-5)
    assert int(ldsb_projection(kern, threshold, rank=1)[2]) == 1


def test_per_model_keys_equal_single_model(lms):
    ds, x, _ = lms
    v = stack(reader(ds, 0), reader(ds, 2))
    keys = jax.random.split(jax.random.key(4), 2)
    both = ldsb_report(MODEL, v, x, keys, ds)
    alone = ldsb_report(MODEL, jax.tree.map(lambda a: a[1:], v), x, keys[1:], ds)
    for k in both:
        np.testing.assert_allclose(np.asarray(both[k])[1], np.asarray(alone[k])[0], atol=1e-6)


def test_errors(lms):
    ds, x, _ = lms
    v = stack(reader(ds, 0))
    with pytest.raises(ValueError, match="model='gru'"):
        ldsb_report(make_model({"name": "gru", "chunk": 5}), v, x, jax.random.key(0), ds)
    with pytest.raises(ValueError, match="kernel_fn="):
        ldsb_report(MODEL.logits, v, x, jax.random.key(0), ds)
    with pytest.raises(ValueError, match="threshold="):
        ldsb_report(MODEL, v, x, jax.random.key(0), ds, threshold=0.0)
    with pytest.raises(ValueError, match="rank="):
        ldsb_report(MODEL, v, x, jax.random.key(0), ds, rank=0)
    # A custom logits_fn with its own kernel getter works like the Model path.
    out = ldsb_report(
        MODEL.logits,
        v,
        x,
        jax.random.key(0),
        ds,
        kernel_fn=lambda p: p["params"]["hidden_0"]["kernel"],
    )
    np.testing.assert_array_equal(out["ldsb_rank"], [1])
