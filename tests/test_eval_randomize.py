"""S / S^c randomization on analytic models with known answers (Definitions 1-2, Table 1)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbjax.eval import metrics as m
from sbjax.eval import randomize as r

D = 8


def linear_logits(v, x):
    return x @ v["w"] + v["b"]


def signed_permutation(d, seed):
    """An orthogonal matrix whose products are exact in float32 (one +-1 per row)."""
    rng = np.random.default_rng(seed)
    w = np.zeros((d, d), np.float32)
    w[np.arange(d), rng.permutation(d)] = rng.choice([-1.0, 1.0], d)
    return w


def haar(d, seed):
    return np.asarray(jax.random.orthogonal(jax.random.key(seed), d), np.float32)


def sample_canonical(key, n, d=D):
    """z0 predictive (S), every S^c coordinate weakly predictive; classes overlap (AUC < 1)."""
    ky, k0, kc = jax.random.split(key, 3)
    y = jax.random.bernoulli(ky, 0.5, (n,)).astype(jnp.int32)
    sgn = (2 * y - 1).astype(jnp.float32)
    z0 = 0.8 * sgn + jax.random.normal(k0, (n,))
    zc = 0.4 * sgn[:, None] + jax.random.normal(kc, (n, d - 1))
    return jnp.concatenate([z0[:, None], zc], axis=1), y


def model_on(w_rot, direction):
    """Linear model scoring <z, direction> (canonical) on rotated inputs: logits [0, score]."""
    wcol = jnp.asarray(w_rot).T @ jnp.asarray(direction, jnp.float32)  # z @ dir = x @ (W.T dir)
    w = jnp.stack([jnp.zeros(D), wcol], axis=1)
    return {"w": w[None], "b": jnp.zeros((1, 2))}


def stack(*vs):
    return jax.tree.map(lambda *a: jnp.concatenate(a), *vs)


E0 = np.eye(D, dtype=np.float32)[0]
E_SC = np.r_[0.0, np.ones(D - 1)].astype(np.float32)


@pytest.fixture(scope="module")
def data():
    z, y = sample_canonical(jax.random.key(0), 4000)
    return z, y


def null_se(n):
    return np.sqrt((n + 1) / (12 * (n / 2) ** 2))


@pytest.mark.parametrize("mode", ["permute", "resample"])
def test_s_only_classifier_exact_under_signed_permutation(data, mode):
    z, y = data
    w = signed_permutation(D, 1)
    x = z @ w
    variables = stack(model_on(w, E0), model_on(w, E_SC))
    basis = r.as_basis(rotation=w, simple_coords=[0])
    rep = r.randomization_report(
        linear_logits,
        variables,
        x,
        y,
        jax.random.key(3),
        basis,
        mode=mode,
        auc_kind="both",
        return_scores=True,
    )
    std, s_r, sc_r = rep["standard"], rep["s_randomized"], rep["sc_randomized"]
    # Model 0 uses only S: S^c-randomized metrics and logits EXACTLY standard; S-randomized ~ 0.5.
    for k in ("accuracy", "roc_auc", "pr_auc"):
        assert float(sc_r[k][0]) == float(std[k][0])
    np.testing.assert_array_equal(rep["scores"]["sc_randomized"][0], rep["scores"]["standard"][0])
    assert abs(float(s_r["roc_auc"][0]) - 0.5) < 4 * null_se(len(y))
    assert abs(float(s_r["accuracy"][0]) - 0.5) < 0.05
    assert float(std["roc_auc"][0]) > 0.75
    # Model 1 uses only S^c: the reverse.
    for k in ("accuracy", "roc_auc", "pr_auc"):
        assert float(s_r[k][1]) == float(std[k][1])
    np.testing.assert_array_equal(rep["scores"]["s_randomized"][1], rep["scores"]["standard"][1])
    assert abs(float(sc_r["roc_auc"][1]) - 0.5) < 4 * null_se(len(y))
    assert float(std["roc_auc"][1]) > 0.75


def test_s_only_classifier_on_haar_rotated_lms():
    """The paper's setting: LMS-5 rotated by a Haar rotation, a classifier on the linear coord."""
    data_mod = pytest.importorskip("sbjax.data")
    ds = data_mod.make_dataset("lms", k=5, d=D)
    x, y = ds.sample(jax.random.key(1), 3000)
    w = ds.rotation
    variables = stack(model_on(w, E0), model_on(w, E_SC))
    rep = r.randomization_report(
        linear_logits,
        variables,
        x,
        y,
        jax.random.key(2),
        ds,
        auc_kind="both",
        return_scores=True,
    )
    std, s_r, sc_r = rep["standard"], rep["s_randomized"], rep["sc_randomized"]
    # The margin around z0 = 0 makes float round-off irrelevant: metrics equal exactly.
    for k in ("accuracy", "roc_auc", "pr_auc"):
        assert float(sc_r[k][0]) == float(std[k][0]) == 1.0
    np.testing.assert_allclose(
        rep["scores"]["sc_randomized"][0], rep["scores"]["standard"][0], atol=1e-5
    )
    assert abs(float(s_r["roc_auc"][0]) - 0.5) < 4 * null_se(len(y))
    summary = r.reliance_summary(rep)
    assert summary["exclusive_s_invariant_sc"][0]
    assert not summary["depends_exclusively_on_s"][1]


def test_reliance_summary_classifies_models(data):
    z, y = data
    w = haar(D, 4)
    x = z @ w
    both = E0 + 0.5 * E_SC
    variables = stack(model_on(w, E0), model_on(w, E_SC), model_on(w, both))
    rep = r.randomization_report(
        linear_logits,
        variables,
        x,
        y,
        jax.random.key(5),
        r.as_basis(rotation=w, simple_coords=(0,)),
    )
    s = r.reliance_summary(rep)
    np.testing.assert_array_equal(s["exclusive_s_invariant_sc"], [True, False, False])
    np.testing.assert_array_equal(s["depends_exclusively_on_s"], [True, False, False])
    np.testing.assert_array_equal(s["invariant_to_sc"], [True, False, False])
    # the default tolerances, computed independently: chance_tol = max(0.03, 3 SE) with the null
    # SE of each metric; KS critical values at alpha = 0.001 (c = 1.949) from the smaller class
    n_pos = int(np.sum(np.asarray(y)))
    n_neg = len(y) - n_pos
    _check_default_tolerances(s["tolerances"], n_pos, n_neg)
    assert s["tolerances"]["chance_tol"]["accuracy"] == 0.03  # 3 SE = 0.024 < 0.03 at n = 4000
    # with few points the 3 SE term takes over (the same report, class counts of a small set)
    small = r.reliance_summary(dict(rep, n_pos=60, n_neg=140))
    _check_default_tolerances(small["tolerances"], 60, 140)
    assert small["tolerances"]["chance_tol"]["roc_auc"] > 0.03


def _check_default_tolerances(tol, n_pos, n_neg):
    n = n_pos + n_neg
    pi = n_pos / n
    se = {
        "accuracy": math.sqrt(0.25 / n),
        "roc_auc": math.sqrt((n + 1) / (12 * n_pos * n_neg)),
        "pr_auc": math.sqrt(pi * (1 - pi) / n),
    }
    assert {"accuracy", "roc_auc"} <= set(tol["chance_tol"]) <= set(se)
    for k, v in tol["chance_tol"].items():
        assert v == pytest.approx(max(0.03, 3 * se[k]), rel=1e-12), k
    n_small = min(n_pos, n_neg)
    assert tol["ks_tol_s"] == pytest.approx(
        1.949 * math.sqrt((n_small + n) / (n_small * n)), rel=1e-3
    )
    assert tol["ks_tol_sc"] == pytest.approx(1.949 * math.sqrt(2 / n_small), rel=1e-3)


@pytest.mark.parametrize("rot", ["haar", "none"])
def test_randomize_block_touches_only_the_block(data, rot):
    z, _ = data
    z = z[:500]
    w = haar(D, 7) if rot == "haar" else None
    x = z if w is None else z @ w
    block = [0, 3]
    other = [c for c in range(D) if c not in block]
    key = jax.random.key(11)
    xr = r.randomize_block(key, x, block, w)
    zr = np.asarray(xr if w is None else xr @ w.T)
    zz = np.asarray(x if w is None else x @ w.T)
    if w is None:
        np.testing.assert_array_equal(zr[:, other], zz[:, other])
    else:
        np.testing.assert_allclose(zr[:, other], zz[:, other], atol=2e-5)
    # The block moves jointly: each new block row is some original row's block.
    p = np.asarray(jax.random.permutation(key, 500))
    np.testing.assert_allclose(zr[:, block], zz[p][:, block], atol=2e-5)
    assert not np.allclose(zr[:, block], zz[:, block])
    # Rows whose block is unchanged keep exactly their values in the model basis.
    fixed = p == np.arange(500)
    np.testing.assert_array_equal(np.asarray(xr)[fixed], np.asarray(x)[fixed])


def test_resample_draws_blocks_from_source_or_with_replacement(data):
    z, _ = data
    w = signed_permutation(D, 2)
    x, src = z[:300] @ w, z[1000:1400] @ w
    xr = np.asarray(r.randomize_block(jax.random.key(0), x, [0], w, mode="resample", source=src))
    zr = xr @ w.T
    # Block values are exact up to one rounding (x + (new - old) @ W[S]); match to 1e-6.
    src_vals = np.asarray(z[1000:1400, 0])
    match = np.abs(zr[:, 0][:, None] - src_vals[None, :]) < 1e-6
    assert match.any(axis=1).all()
    assert len(set(match.argmax(axis=1).tolist())) == 300  # distinct source rows
    np.testing.assert_array_equal(zr[:, 1:], np.asarray(z[:300, 1:]))
    xb = np.asarray(r.randomize_block(jax.random.key(0), x, [0], w, mode="resample"))
    vals = (xb @ w.T)[:, 0]
    match = np.abs(vals[:, None] - np.asarray(z[:300, 0])[None, :]) < 1e-6
    assert match.any(axis=1).all()
    assert len(set(match.argmax(axis=1).tolist())) < 300  # with replacement: repeats


def test_labels_untouched_and_metrics_match_randomized_inputs(data):
    z, y = data
    w = haar(D, 3)
    x = z @ w
    variables = stack(model_on(w, E0), model_on(w, E_SC))
    key = jax.random.key(9)
    got = r.randomized_metrics(linear_logits, variables, x, y, key, [0], w, auc_kind="both")
    xr = r.randomize_block(key, x, [0], w)
    want = m.evaluate(linear_logits, variables, xr, y, auc_kind="both")
    for k in want:
        np.testing.assert_allclose(got[k], want[k], atol=1e-6)


def test_vmapped_report_equals_loop_over_models(data):
    z, y = data
    w = haar(D, 5)
    x = z @ w
    key = jax.random.key(0)
    kw, kb = jax.random.split(key)
    variables = {"w": jax.random.normal(kw, (4, D, 2)), "b": jax.random.normal(kb, (4, 2))}
    basis = r.as_basis(rotation=w, simple_coords=[0])
    rep = r.randomization_report(linear_logits, variables, x, y, key, basis, model_chunk=3)
    for i in range(4):
        vi = jax.tree.map(lambda a, i=i: a[i : i + 1], variables)
        ri = r.randomization_report(linear_logits, vi, x, y, key, basis)
        for block in ("standard", "s_randomized", "sc_randomized", "logit_ks"):
            for k, v in rep[block].items():
                np.testing.assert_allclose(v[i], ri[block][k][0], atol=1e-5, err_msg=k)


def test_per_coordinate_finds_the_used_coordinate(data):
    z, y = data
    w = haar(D, 6)
    x = z @ w
    e3 = np.eye(D, dtype=np.float32)[3]
    variables = stack(model_on(w, e3), model_on(w, E0))
    out = r.per_coordinate_randomized(
        linear_logits, variables, x, y, jax.random.key(1), w, auc_kind="roc"
    )
    acc, auc = np.asarray(out["accuracy"]), np.asarray(out["roc_auc"])
    assert acc.shape == auc.shape == (2, D)
    std = np.asarray(m.accuracy(linear_logits, variables, x, y))
    assert np.argmin(acc[0]) == 3 and np.argmin(acc[1]) == 0
    assert abs(acc[0, 3] - 0.5) < 0.05 and abs(auc[0, 3] - 0.5) < 0.05
    others = [c for c in range(D) if c != 3]
    np.testing.assert_allclose(acc[0, others], std[0], atol=1e-3)
    # A subset in the caller's order.
    sub = r.per_coordinate_randomized(
        linear_logits, variables, x, y, jax.random.key(1), w, coords=[5, 3]
    )
    np.testing.assert_allclose(sub["accuracy"][0], acc[0, [5, 3]], atol=1e-6)


def test_image_basis_randomizes_only_the_top_rows():
    basis = r.image_basis((8, 4, 3), simple_rows=4)
    assert basis.dim == 96 and basis.simple_coords == tuple(range(48))
    x = jax.random.uniform(jax.random.key(0), (50, 8, 4, 3))
    xs = np.asarray(r.randomize_block(jax.random.key(1), x, basis.simple_coords, None))
    np.testing.assert_array_equal(xs[:, 4:], np.asarray(x)[:, 4:])
    p = np.asarray(jax.random.permutation(jax.random.key(1), 50))
    np.testing.assert_array_equal(xs[:, :4], np.asarray(x)[p, :4])


def test_bad_inputs_raise_value_error(data):
    z, y = data
    w = haar(D, 0)
    variables = model_on(w, E0)
    with pytest.raises(ValueError, match="mode"):
        r.randomize_block(jax.random.key(0), z, [0], w, mode="shuffle")
    with pytest.raises(ValueError, match="coords"):
        r.randomize_block(jax.random.key(0), z, [D], w)
    with pytest.raises(ValueError, match="coords"):
        r.randomize_block(jax.random.key(0), z, [1, 1], w)
    with pytest.raises(ValueError, match="rotation.shape"):
        r.randomize_block(jax.random.key(0), z, [0], w[:3])
    with pytest.raises(ValueError, match="source"):
        r.randomize_block(jax.random.key(0), z, [0], w, source=z)
    with pytest.raises(ValueError, match="source.shape"):
        r.randomize_block(jax.random.key(0), z, [0], w, mode="resample", source=z[:10])
    with pytest.raises(ValueError, match="simple_coords"):
        r.as_basis(rotation=w, simple_coords=range(D))
    with pytest.raises(ValueError, match="auc_kind"):
        r.randomized_metrics(
            linear_logits, variables, z, y, jax.random.key(0), [0], w, auc_kind="f1"
        )
