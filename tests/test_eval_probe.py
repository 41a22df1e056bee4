"""Last-layer probes and penultimate features, on feature maps whose answers are known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from sbjax.data import make_dataset
from sbjax.eval import randomize as r
from sbjax.eval.probe import fit_logistic, last_layer_probe
from sbjax.models import make_model
from sbjax.models.features import features_fn, first_layer_kernel, head_params

D = 10
N = 4000


@pytest.fixture(scope="module")
def lms():
    ds = make_dataset("lms", k=5, d=D)
    (xtr, ytr), (xte, yte) = ds.sample_split(jax.random.key(1), N, N)
    return ds, xtr, ytr, xte, yte


def _canonical_features(ds):
    """A family of 'models' whose features are parts of the canonical input.

    features = [z * keep, cos(2 pi z) * cos_mask]: cos(2 pi z_j) is positive on the 5-slab's
    slabs at 0 and +-1 and negative on those at +-0.5, so it decodes a slab coordinate's label
    linearly (with margin), while z_j itself (symmetric slabs) carries no linear information.
    """
    wt = jnp.asarray(ds.rotation).T

    def feats(v, x):
        z = x @ wt
        return jnp.concatenate([z * v["keep"], jnp.cos(2 * jnp.pi * z) * v["cos"]], axis=1)

    return feats


ONES, ZEROS = np.ones(D), np.zeros(D)
SC = np.r_[0.0, np.ones(D - 1)]
S_ONLY = np.eye(D)[0]
# Model 0: identity + slab decoders; 1: identity only; 2: S only.
KEEP = jnp.asarray(np.stack([ONES, ONES, S_ONLY]), jnp.float32)
COS = jnp.asarray(np.stack([SC, ZEROS, ZEROS]), jnp.float32)


@pytest.fixture(scope="module")
def probe_out(lms):
    ds, xtr, ytr, xte, yte = lms
    feats = _canonical_features(ds)
    v = {"keep": KEEP, "cos": COS}
    return last_layer_probe(feats, v, xtr, ytr, xte, yte, jax.random.key(0), ds)


def test_probe_known_answers(probe_out):
    out = {k: np.asarray(a) for k, a in probe_out.items()}
    se = 0.5 / np.sqrt(N)
    # (a) an explicit slab-decoding coordinate: S^c is learned, the probe finds it.
    assert out["probe_s_rand_acc"][0] > 0.99 and out["probe_s_rand_auc"][0] > 0.999
    # Identity of the canonical input: slabs are not linearly separable -> chance.
    assert abs(out["probe_s_rand_acc"][1] - 0.5) < 5 * se
    assert abs(out["probe_s_rand_auc"][1] - 0.5) < 0.04
    # (b) features with S only: nothing about S^c -> chance on S-randomized data ...
    assert abs(out["probe_s_rand_acc"][2] - 0.5) < 5 * se
    assert abs(out["probe_s_rand_auc"][2] - 0.5) < 0.04
    # ... and the probe for S alone (S^c randomized) decodes the linear coordinate perfectly.
    np.testing.assert_array_equal(out["probe_sc_rand_acc"], 1.0)
    assert np.all(out["probe_s_rand_converged"]) and np.all(out["probe_sc_rand_converged"])
    assert np.all(out["probe_sc_rand_grad_norm"] < 1e-4)
    # Chance features pick a strong penalty, separable ones the weakest.
    assert out["probe_s_rand_l2"][0] == pytest.approx(1e-5)
    assert "head_s_rand_acc" not in out  # no Model, no head to score


def test_probe_per_model_keys_equal_single_model(lms):
    ds, xtr, ytr, xte, yte = lms
    feats = _canonical_features(ds)
    v = {"keep": KEEP[:2], "cos": COS[:2]}
    keys = jax.random.split(jax.random.key(3), 2)
    kw = dict(l2_grid=(1e-3, 1e-1))
    both = last_layer_probe(feats, v, xtr, ytr, xte, yte, keys, ds, **kw)
    alone = last_layer_probe(
        feats, jax.tree.map(lambda a: a[1:], v), xtr, ytr, xte, yte, keys[1:], ds, **kw
    )
    for k in both:
        np.testing.assert_allclose(np.asarray(both[k])[1], np.asarray(alone[k])[0], atol=1e-5)


@pytest.mark.parametrize("l2", [1e-4, 1e-2, 1.0])
@pytest.mark.parametrize("separable", [False, True])
def test_fit_logistic_matches_sklearn(l2, separable):
    rng = np.random.default_rng(0)
    n, h = 1500, 12
    x = rng.normal(size=(n, h)).astype(np.float32)
    if separable:
        y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int32)
    else:
        y = (rng.random(n) < 1 / (1 + np.exp(-(x @ rng.normal(size=h) * 0.5 + 0.3)))).astype(
            np.int32
        )
    fit = jax.jit(fit_logistic)(jnp.asarray(x), jnp.asarray(y), l2)
    sk = LogisticRegression(C=1 / (n * l2), tol=1e-12, max_iter=100000).fit(x.astype(float), y)
    assert bool(fit.converged)
    scale = max(1.0, np.abs(sk.coef_).max())
    np.testing.assert_allclose(np.asarray(fit.w), sk.coef_[0], atol=2e-5 * scale)
    np.testing.assert_allclose(float(fit.b), sk.intercept_[0], atol=2e-5 * scale)


def test_probe_with_model_scores_its_head(lms):
    """With a Model, the head's own accuracy on the probe's S-randomized test set is reported;
    it equals `randomized_metrics` with the probe's test stream (fold_in(key, 1))."""
    ds, xtr, ytr, xte, yte = lms
    model = make_model({"name": "fcn", "width": 16, "depth": 1})
    v = jax.vmap(lambda k: model.init(k, xtr[:2]))(jax.random.split(jax.random.key(0), 2))
    key = jax.random.key(7)
    xte, yte = xte[:1000], yte[:1000]
    out = last_layer_probe(model, v, xtr[:1000], ytr[:1000], xte, yte, key, ds, l2_grid=(0.1,))
    ref = r.randomized_metrics(
        model.logits, v, xte, yte, jax.random.fold_in(key, 1), ds.simple_coords, ds.rotation
    )
    np.testing.assert_allclose(out["head_s_rand_acc"], ref["accuracy"], atol=1e-6)
    assert out["probe_s_rand_acc"].shape == (2,)


@pytest.mark.parametrize(
    "cfg, shape",
    [
        ({"name": "fcn", "width": 7, "depth": 2, "activation": "prelu"}, (5, 12)),
        ({"name": "linear"}, (5, 12)),
        ({"name": "cnn1d", "filters": 4, "kernel": 3, "depth": 1}, (5, 12)),
        ({"name": "gru", "hidden": 6, "chunk": 4}, (5, 12)),
        ({"name": "small_cnn", "filters": 4}, (3, 8, 8, 3)),
    ],
)
def test_features_feed_the_head(cfg, shape):
    model = make_model(cfg)
    x = jax.random.normal(jax.random.key(0), shape)
    v = model.init(jax.random.key(1), x)
    fn = features_fn(model)
    assert features_fn(model) is fn  # cached: a stable jit static argument
    phi = jax.jit(fn)(v, x)
    kernel, bias = head_params(v)
    np.testing.assert_allclose(phi @ kernel + bias, model.logits(v, x), rtol=1e-5, atol=1e-5)
    if cfg["name"] == "fcn":
        assert phi.shape == (shape[0], 7)
    if cfg["name"] == "linear":
        np.testing.assert_array_equal(phi, x)


def test_fcn_features_are_last_hidden_post_activation():
    model = make_model({"name": "fcn", "width": 6, "depth": 2})
    x = jax.random.normal(jax.random.key(0), (4, 5))
    v = model.init(jax.random.key(1), x)
    p = v["params"]
    h = jax.nn.relu(x @ p["hidden_0"]["kernel"] + p["hidden_0"]["bias"])
    h = jax.nn.relu(h @ p["hidden_1"]["kernel"] + p["hidden_1"]["bias"])
    np.testing.assert_allclose(features_fn(model)(v, x), h, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(first_layer_kernel(model)(v), p["hidden_0"]["kernel"])


def test_errors_name_the_argument(lms):
    ds, xtr, ytr, xte, yte = lms
    with pytest.raises(ValueError, match="model="):
        features_fn(lambda v, x: x)
    with pytest.raises(ValueError, match="model='cnn1d'"):
        first_layer_kernel(make_model({"name": "cnn1d"}))
    feats = _canonical_features(ds)
    v = {"keep": KEEP, "cos": COS}
    args = (feats, v, xtr, ytr, xte, yte, jax.random.key(0), ds)
    with pytest.raises(ValueError, match="l2_grid="):
        last_layer_probe(*args, l2_grid=(0.0, 1.0))
    with pytest.raises(ValueError, match="val_fraction="):
        last_layer_probe(*args, val_fraction=1.0)
    with pytest.raises(ValueError, match="select_by="):
        last_layer_probe(*args, select_by="auc")
    with pytest.raises(ValueError, match="model="):
        last_layer_probe(3, *args[1:])
    with pytest.raises(ValueError, match="key="):
        last_layer_probe(*args[:6], jax.random.split(jax.random.key(0), 2), ds)
