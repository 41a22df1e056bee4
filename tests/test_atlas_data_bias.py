"""The shortcut atlas's sampler (`sbjax.data.atlas`) and metric (`sbjax.eval.shortcut_bias`)
against analytic cases (docs/atlas.md, A1-A3 and B1-B4)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from sbjax.data import atlas as A
from sbjax.eval import shortcut_bias as SB

DATA = A.AtlasData(embed_dim=6, max_nesting=2, n_train=64, n_test=64, n_probe=64)
TAB = A.embedding_tables(DATA)


def _cell(**kw):
    c = {"rho_s": 0.6, "rho_c": 0.9, "alpha_s": 1.0, "alpha_c": 1.0, "eta_s": 0, "eta_c": 0}
    c.update(kw)
    return {
        k: jnp.asarray(v, jnp.int32 if k.startswith("eta") else jnp.float32) for k, v in c.items()
    }


def test_predictivity_is_the_label_correlation_and_variance_is_one():
    # A grid of cells sampled inside one jit(vmap) from traced parameters.
    rhos = jnp.asarray([0.0, 0.3, 0.7, 0.95], jnp.float32)
    z, y, _ = jax.jit(
        jax.vmap(lambda rs, rc: A.sample_latents(jax.random.key(0), 100_000, rs, rc, DATA))
    )(rhos, rhos[::-1])
    ypm = 2.0 * np.asarray(y, np.float64) - 1.0
    for i, (rs, rc) in enumerate(zip(np.asarray(rhos), np.asarray(rhos[::-1]), strict=True)):
        zs, zc = np.asarray(z[i, :, 0], np.float64), np.asarray(z[i, :, 1], np.float64)
        assert np.corrcoef(zs, ypm[i])[0, 1] == pytest.approx(rs, abs=0.01)
        assert np.corrcoef(zc, ypm[i])[0, 1] == pytest.approx(rc, abs=0.01)
        assert zs.var() == pytest.approx(1.0, abs=0.02)
        # conditionally independent given y: within-class correlation ~ 0
        pos = ypm[i] > 0
        assert abs(np.corrcoef(zs[pos], zc[pos])[0, 1]) < 0.02


def test_vmapped_cells_equal_single_cell_calls():
    cells = [_cell(rho_s=0.5, alpha_s=2.0, eta_s=1), _cell(rho_s=0.8, alpha_c=3.0, eta_c=2)]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *cells)
    xs, ys, _ = jax.vmap(lambda c: A.sample(jax.random.key(3), 50, c, DATA, TAB))(stacked)
    for i, c in enumerate(cells):
        x1, y1, _ = A.sample(jax.random.key(3), 50, c, DATA, TAB)
        np.testing.assert_allclose(np.asarray(xs[i]), np.asarray(x1), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.asarray(ys[i]), np.asarray(y1))


@pytest.mark.parametrize("eta", [0, 1, 2])
def test_amplification_is_the_rms_norm_at_every_nesting_depth(eta):
    x, _, _ = A.sample(jax.random.key(1), 20_000, _cell(alpha_s=3.0, eta_s=eta), DATA, TAB)
    x = np.asarray(x, np.float64)
    m = DATA.embed_dim
    rms_s = np.sqrt(np.mean(np.sum((x[:, :m] - x[:, :m].mean(0)) ** 2, axis=1)))
    rms_c = np.sqrt(np.mean(np.sum((x[:, m:] - x[:, m:].mean(0)) ** 2, axis=1)))
    assert rms_s == pytest.approx(3.0, rel=0.1)
    assert rms_c == pytest.approx(1.0, rel=0.1)


def test_nesting_zero_is_a_linear_rank_one_embedding_and_nesting_is_not():
    x0, _, z = A.sample(jax.random.key(2), 500, _cell(alpha_s=2.0), DATA, TAB)
    m = DATA.embed_dim
    xs = np.asarray(x0[:, :m], np.float64)
    # x_s = 2 z_s u, |u| = 1
    u = np.asarray(TAB["u"][0], np.float64)
    np.testing.assert_allclose(xs, 2.0 * np.asarray(z[:, :1]) * u[None], atol=1e-5)
    x1, _, _ = A.sample(jax.random.key(2), 500, _cell(alpha_s=2.0, eta_s=2), DATA, TAB)
    sv = np.linalg.svd(np.asarray(x1[:, :m], np.float64) - np.asarray(x1[:, :m]).mean(0))[1]
    assert sv[1] / sv[0] > 0.05  # a curve, not a line


def test_probe_labels_are_independent_and_each_drives_its_own_feature():
    x, ys, yc, z = A.sample_probe(jax.random.key(4), 50_000, _cell(rho_s=0.7), DATA, TAB)
    ys, yc, z = (np.asarray(a, np.float64) for a in (ys, yc, z))
    assert abs(np.corrcoef(ys, yc)[0, 1]) < 0.02
    assert np.corrcoef(z[:, 0], ys)[0, 1] == pytest.approx(0.7, abs=0.01)
    assert np.corrcoef(z[:, 1], yc)[0, 1] == pytest.approx(0.9, abs=0.01)
    assert abs(np.corrcoef(z[:, 0], yc)[0, 1]) < 0.02


def test_bad_cells_and_data_raise_naming_the_parameter():
    with pytest.raises(ValueError, match=r"cell\.rho_s"):
        A.check_cell({"rho_s": 1.0}, DATA)
    with pytest.raises(ValueError, match=r"cell\.alpha_c"):
        A.check_cell({"alpha_c": 0.0}, DATA)
    with pytest.raises(ValueError, match=r"cell\.eta_s"):
        A.check_cell({"eta_s": 3}, DATA)
    with pytest.raises(ValueError, match=r"cell\.gamma"):
        A.check_cell({"gamma": 1}, DATA)
    with pytest.raises(ValueError, match="core"):
        A.AtlasData(core="images").check()
    with pytest.raises(ValueError, match="embed_dim"):
        A.AtlasData(embed_dim=0).check()
    assert A.check_cell({"rho_s": 0.5, "eta_c": 2}, DATA)["eta_c"] == 2


def test_bayes_accuracy_closed_form_matches_the_lda_rule_on_samples():
    rs, rc = 0.5, 0.7
    z, y, _ = A.sample_latents(jax.random.key(5), 200_000, rs, rc, DATA)
    w_s, w_c = SB.bayes_weights(rs, rc)
    f = w_s * z[:, 0] + w_c * z[:, 1]
    acc = float(np.mean((np.asarray(f) > 0) == (np.asarray(y) == 1)))
    mu = np.sqrt(rs**2 / (1 - rs**2) + rc**2 / (1 - rc**2))
    assert float(SB.bayes_accuracy(rs, rc)) == pytest.approx(norm.cdf(mu), abs=1e-5)
    assert acc == pytest.approx(norm.cdf(mu), abs=3e-3)


def test_bayes_share_closed_form_and_symmetry():
    assert float(SB.bayes_share(0.8, 0.8)) == pytest.approx(0.5, abs=1e-6)
    a, b = float(SB.bayes_share(0.5, 0.9)), float(SB.bayes_share(0.9, 0.5))
    assert a + b == pytest.approx(1.0, abs=1e-6) and a < 0.05
    np.testing.assert_array_equal(np.asarray(SB.bayes_share([0.5, 0.9], 0.9, core="slab")), 0.0)
    with pytest.raises(ValueError, match="core"):
        SB.bayes_share(0.5, 0.5, core="bad")


def _probe(rs, rc, n=100_000, key=6):
    _, ys, yc, z = A.sample_probe(jax.random.key(key), n, _cell(rho_s=rs, rho_c=rc), DATA, TAB)
    return ys, yc, z


def test_reader_of_one_feature_has_the_extreme_bias_and_bayes_has_zero():
    rs, rc = 0.7, 0.9
    ys, yc, z = _probe(rs, rc)
    ref = float(SB.bayes_share(rs, rc))
    w_s, w_c = SB.bayes_weights(rs, rc)
    scores = jnp.stack([z[:, 1], z[:, 0], w_s * z[:, 0] + w_c * z[:, 1], jnp.tanh(3 * z[:, 0])])
    bias = np.asarray(SB.shortcut_bias(scores, ys, yc, ref))  # vectorized over 4 "models"
    assert bias[0] == pytest.approx(-ref, abs=0.005)  # core only: the smallest bias, -R*_s
    assert bias[1] == pytest.approx(1.0 - ref, abs=0.005)  # shortcut only: the largest
    assert bias[2] == pytest.approx(0.0, abs=0.01)  # the Bayes score itself
    assert bias[3] == pytest.approx(1.0 - ref, abs=0.005)  # any monotone reader of z_s alone
    # the reliances of the Bayes score match r*_i = w_i rho_i / |w|
    r = SB.reliance(scores[2], ys, yc)
    nw = np.hypot(w_s, w_c)
    assert float(r["r_s"]) == pytest.approx(float(w_s) * rs / nw, abs=0.01)
    assert float(r["r_c"]) == pytest.approx(float(w_c) * rc / nw, abs=0.01)
    # per-model labels [M, N] give the same as shared labels
    b2 = SB.shortcut_bias(scores, jnp.tile(ys, (4, 1)), jnp.tile(yc, (4, 1)), ref)
    np.testing.assert_allclose(np.asarray(b2), bias, atol=1e-6)
    # a constant score has no reliance: NaN, not a number that could enter a mean
    assert np.isnan(float(SB.shortcut_bias(jnp.zeros(10), ys[:10], yc[:10], ref)))


def test_linear_model_fit_to_convergence_has_bias_near_zero_even_with_an_amplified_shortcut():
    from sklearn.linear_model import LogisticRegression

    rs, rc = 0.7, 0.7
    data = A.AtlasData(embed_dim=6, max_nesting=2, n_train=20_000)
    cell = _cell(rho_s=rs, rho_c=rc, alpha_s=8.0, alpha_c=1.0)
    x, y, _ = A.sample(jax.random.key(7), 20_000, cell, data, TAB)
    clf = LogisticRegression(C=1e6, max_iter=2000).fit(np.asarray(x), np.asarray(y))
    xp, ys, yc, _ = A.sample_probe(jax.random.key(8), 50_000, cell, data, TAB)
    f = clf.decision_function(np.asarray(xp))
    bias = float(SB.shortcut_bias(f, ys, yc, SB.bayes_share(rs, rc)))
    assert abs(bias) < 0.03
    # ... while a score that follows the input norm ~ alpha (the gradient direction at init,
    # E[y x], weights z_s by alpha_s^2) is strongly biased: availability bias is not in the data.
    g = np.asarray(x).T @ (2.0 * np.asarray(y) - 1.0)
    assert float(SB.shortcut_bias(np.asarray(xp) @ g, ys, yc, SB.bayes_share(rs, rc))) > 0.4


def test_slab_core_sampler_shapes_and_labels():
    data = A.AtlasData(embed_dim=4, core="slab", slab_k=5)
    data.check()
    tab = A.embedding_tables(data)
    x, ys, yc, z = A.sample_probe(jax.random.key(9), 2000, _cell(rho_s=0.9), data, tab)
    assert x.shape == (2000, 8) and z.shape == (2000, 5)
    # every slab coordinate determines its label (k-slab rule), the shortcut does not
    from sbjax.data.blocks import slab_rule

    pred = np.asarray(slab_rule(z[:, 1], 5, 0.1))
    assert np.mean(pred == np.asarray(yc)) == 1.0
