"""Named synthetic datasets and `make_dataset` (Shah et al. 2020, Sec. 3.1 / App. B, App. E.2.1)."""

import functools

import jax
import numpy as np
import pytest

from sbjax.data import DATASET_NAMES, Dataset, make_dataset
from sbjax.data import blocks as B

N = 10_000
TOL = 1e-6


@functools.cache
def ds_(name, **kw):
    return make_dataset(name, **kw)


@functools.cache
def canon(name, seed=0, n=N, **kw):
    z, y = ds_(name, **kw).sample_canonical(jax.random.key(seed), n)
    return np.asarray(z), np.asarray(y)


def in_slabs(x, y, k, margin=0.1):
    """True iff every value lies in a slab of its own class (float tolerance TOL)."""
    geo = B.slab_geometry(k, margin)
    ok = np.zeros(x.shape, bool)
    for g in geo:
        ok |= (y == g["label"]) & (x >= g["lo"] - TOL) & (x <= g["hi"] + TOL)
    return ok.all()


def sigma(p, n):
    return np.sqrt(p * (1 - p) / n)


# ------------------------------------------------------------------------------------------------
# Shapes, labels, layouts


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_shapes_dtypes_and_class_balance(name):
    ds = ds_(name)
    assert isinstance(ds, Dataset) and ds.name == name
    x, y = ds.sample(jax.random.key(0), N)
    assert x.shape == (N, ds.d) and x.dtype == np.float32
    assert y.shape == (N,) and y.dtype == np.int32
    y = np.asarray(y)
    assert set(np.unique(y)) == {0, 1}
    assert abs(y.mean() - 0.5) < 4 * sigma(0.5, N)
    assert set(ds.simple_coords).isdisjoint(ds.complex_coords)
    # The canonical layout of each dataset (S first), not just "indices in range".
    expected = {
        "lsn": ((0,), (1,)),
        "adv_ms": (tuple(range(ds.d // 2)), tuple(range(ds.d // 2, ds.d))),
    }
    assert (ds.simple_coords, ds.complex_coords) == expected.get(
        name, ((0,), tuple(range(1, ds.d)))
    )
    assert ds.params["d"] == ds.d


def test_default_layouts():
    assert ds_("lms").d == 50 and ds_("lms").simple_coords == (0,)
    assert ds_("lms").complex_coords == tuple(range(1, 50))
    adv = ds_("adv_ms")
    assert adv.d == 20 and adv.simple_coords == tuple(range(10))
    assert adv.complex_coords == tuple(range(10, 20))
    lsn = ds_("lsn")
    assert (lsn.simple_coords, lsn.complex_coords) == ((0,), (1,))
    assert lsn.noise_coords == tuple(range(2, 50))
    assert ds_("ms", k=7).params["k_simple"] == ds_("ms", k=7).params["k_complex"] == 7


# ------------------------------------------------------------------------------------------------
# Canonical supports (REFERENCE.md Sec. 1.2)


def test_lms5_supports():
    z, y = canon("lms")
    s = 2 * y - 1
    assert np.all(z[:, 0] * s >= 0.1 - TOL) and np.all(np.abs(z[:, 0]) <= 1 + TOL)
    for c in range(1, 50):
        assert in_slabs(z[:, c], y, 5), c


def test_ms57_supports():
    z, y = canon("ms")
    assert in_slabs(z[:, 0], y, 5)
    assert all(in_slabs(z[:, c], y, 7) for c in range(1, 50))


def test_noisy_lms_exact_noise_count_and_bayes():
    z, y = canon("noisy_lms")
    band = np.abs(z[:, 0]) < 0.1
    assert band.sum() == round(0.1 * N)
    acc = ((z[:, 0] > 0) == y).mean()
    assert abs(acc - 0.95) < 4 * sigma(0.05, N)
    assert all(in_slabs(z[:, c], y, 5) for c in range(1, 50))


def test_noisy_ms_noise_only_on_simple_coordinate():
    z, y = canon("noisy_ms")
    pred = np.asarray(B.slab_rule(z[:, 0], 5))
    assert (pred != y).sum() == round(0.1 * N)  # reference noise: rule accuracy exactly 1 - p
    assert all(in_slabs(z[:, c], y, 7) for c in range(1, 50))


def test_lsn_exact_supports():
    z, y = canon("lsn")
    np.testing.assert_array_equal(z[:, 0], 2 * y - 1)
    assert np.all(z[y == 0, 1] == 0)
    assert set(np.unique(z[y == 1, 1])) == {-1.0, 1.0}
    assert abs((z[y == 1, 1] > 0).mean() - 0.5) < 4 * sigma(0.5, (y == 1).sum())
    noise = z[:, 2:]
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 1) < 0.01
    np.testing.assert_array_equal(ds_("lsn").rotation, np.eye(50, dtype=np.float32))
    lsn = make_dataset("lsn", linear_scale=0.25, d=3)
    assert lsn.params["linear_scale"] == 0.25  # x_0 = 0.25 * (2y - 1); checked in one compile below
    z, y = jax.jit(lambda k: lsn.sample_canonical(k, 64))(jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(z[:, 0]), 0.25 * (2 * np.asarray(y) - 1))


def test_adv_ms_margins():
    z, y = canon("adv_ms")
    assert all(in_slabs(z[:, c], y, 5, 0.05) for c in range(10))
    assert all(in_slabs(z[:, c], y, 7, 0.15) for c in range(10, 20))
    # Empirical half-gap between adjacent opposite-class slabs = the margin (0.05 and 0.15 of B=1).
    for c, k, m in [(0, 5, 0.05), (15, 7, 0.15)]:
        geo = B.slab_geometry(k, m)
        j1 = next(g for g in geo if g["j"] == 1)
        inner = z[(y == 0) & (np.abs(z[:, c]) < j1["lo"]), c]
        first = z[(y == 1) & (z[:, c] > 0) & (z[:, c] < j1["hi"] + TOL), c]
        assert (first.min() - inner.max()) / 2 == pytest.approx(m, abs=0.01)


@pytest.fixture(scope="module")
def variants():
    """Several small datasets sampled in ONE compiled program (compile time dominates the tests)."""
    specs = {
        "uniform_0B": dict(d=8, n_complex=3, noise_fill="uniform_0B", rotate=False),
        "uniform_sym": dict(d=8, n_complex=3, noise_fill="uniform_sym", rotate=False),
        "gaussian": dict(d=8, n_complex=3, noise_fill="gaussian", rotate=False),
        "features_only": dict(d=4, n_complex=3, rotate=False),
        "ms7": dict(d=10, k=7),
    }
    dss = {k: make_dataset("ms" if k == "ms7" else "lms", **v) for k, v in specs.items()}
    out = jax.jit(lambda key: {k: ds.sample_canonical(key, N) for k, ds in dss.items()})(
        jax.random.key(0)
    )
    return {k: (np.asarray(z), np.asarray(y)) for k, (z, y) in out.items()}


def test_ms7_supports(variants):
    z, y = variants["ms7"]
    assert all(in_slabs(z[:, c], y, 7) for c in range(10))


@pytest.mark.parametrize(
    "fill,check",
    [
        ("uniform_0B", lambda v: v.min() >= 0 and v.max() < 1 and abs(v.mean() - 0.5) < 0.02),
        ("uniform_sym", lambda v: v.min() >= -1 and v.max() <= 1 and abs(v.mean()) < 0.02),
        ("gaussian", lambda v: abs(v.mean()) < 0.02 and abs(v.std() - 1) < 0.02),
    ],
)
def test_noise_fill_and_features_unchanged_by_extra_coordinates(variants, fill, check):
    z, y = variants[fill]
    assert check(z[:, 4:])
    for c in range(4, 8):  # noise coordinates carry no label information
        assert abs(z[y == 1, c].mean() - z[y == 0, c].mean()) < 0.06
    # Same key, more noise coordinates: the feature coordinates are identical.
    z2, y2 = variants["features_only"]
    np.testing.assert_array_equal(z[:, :4], z2)
    np.testing.assert_array_equal(y, y2)


# ------------------------------------------------------------------------------------------------
# Conditional independence


@pytest.mark.parametrize("name", ["lms", "noisy_ms"])
def test_coordinates_conditionally_independent_given_y(name):
    z, y = canon(name)
    z = z[:, :12]
    for label in (0, 1):
        for feats in (z[y == label], z[y == label] ** 2, np.abs(z[y == label])):
            c = np.corrcoef(feats, rowvar=False)
            off = c[~np.eye(12, dtype=bool)]
            # ~5k samples per class: sd of a null correlation ~0.014; 66 distinct pairs.
            assert np.abs(off).max() < 0.07, np.abs(off).max()


# ------------------------------------------------------------------------------------------------
# Rotation


@pytest.mark.parametrize("rotation", ["haar", "reference_qr"])
def test_rotation_orthogonal_and_round_trip(rotation):
    ds = ds_("ms", rotation=rotation)
    w = ds.rotation
    assert w.shape == (50, 50) and w.dtype == np.float32
    np.testing.assert_allclose(w @ w.T, np.eye(50), atol=1e-5)
    np.testing.assert_allclose(w.T @ w, np.eye(50), atol=1e-5)
    assert not np.allclose(w, np.eye(50), atol=0.1)
    z = np.asarray(jax.random.normal(jax.random.key(5), (64, 50)))
    np.testing.assert_allclose(np.asarray(ds.to_canonical(ds.from_canonical(z))), z, atol=1e-5)
    np.testing.assert_allclose(np.asarray(ds.from_canonical(z)), z @ w, atol=1e-5)


def test_sample_is_rotated_canonical_sample():
    ds = ds_("ms")
    x, y = ds.sample(jax.random.key(0), N)
    zc, yc = canon("ms")
    np.testing.assert_array_equal(np.asarray(y), yc)
    np.testing.assert_allclose(np.asarray(ds.to_canonical(x)), zc, atol=1e-5)
    np.testing.assert_allclose(np.asarray(x), zc @ ds.rotation, atol=1e-5)
    # The model basis mixes coordinates: no rotated coordinate looks like the 5-slab S.
    assert not in_slabs(np.asarray(x[:, 0]), yc, 5)


def test_rotation_seed_kind_and_identity():
    w0 = ds_("ms").rotation
    np.testing.assert_array_equal(w0, make_dataset("ms").rotation)  # deterministic in the seed
    assert np.abs(w0 - ds_("ms", rotation_seed=1).rotation).max() > 0.1
    assert np.abs(w0 - ds_("ms", rotation="reference_qr").rotation).max() > 0.1
    np.testing.assert_array_equal(ds_("ms", rotate=False).rotation, np.eye(50, dtype=np.float32))
    lsn = ds_("lsn")  # rotate=False: sample is the canonical sample
    x, _ = lsn.sample(jax.random.key(0), N)
    np.testing.assert_array_equal(np.asarray(x), canon("lsn")[0])


# ------------------------------------------------------------------------------------------------
# Purity, jit, vmap


def test_same_key_same_data_different_key_different():
    ds = ds_("lms")
    a, ya = ds.sample(jax.random.key(0), N)
    b, yb = ds.sample(jax.random.key(0), N)
    c, yc = ds.sample(jax.random.key(1), N)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(ya), np.asarray(yb))
    assert (np.asarray(a) != np.asarray(c)).mean() > 0.99
    assert (np.asarray(ya) != np.asarray(yc)).mean() > 0.4


def test_jit_vmap_over_keys_equals_loop():
    ds = ds_("noisy_lms")
    keys = jax.random.split(jax.random.key(3), 3)
    xs, ys = jax.jit(jax.vmap(lambda k: ds.sample(k, N)))(keys)
    assert xs.shape == (3, N, 50) and ys.shape == (3, N)
    for i in range(3):
        x, y = ds.sample(keys[i], N)
        np.testing.assert_allclose(np.asarray(xs[i]), np.asarray(x), atol=1e-6)
        np.testing.assert_array_equal(np.asarray(ys[i]), np.asarray(y))
        # Exact-count noise holds for every key of the batch.
        z0 = np.asarray(ds.to_canonical(xs[i]))[:, 0]
        assert (np.abs(z0) < 0.1).sum() == round(0.1 * N)
    assert (np.asarray(xs[0]) != np.asarray(xs[1])).mean() > 0.99


def test_sample_split_independent_streams():
    ds = ds_("lms")
    (xtr, ytr), (xte, yte) = ds.sample_split(jax.random.key(0), N, N)
    assert xtr.shape == xte.shape == (N, 50) and ytr.shape == yte.shape == (N,)
    assert (np.asarray(xtr) != np.asarray(xte)).mean() > 0.99
    k_tr, k_te = jax.random.split(jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(xte), np.asarray(ds.sample(k_te, N)[0]))


def test_params_recorded_with_defaults():
    ds = ds_("noisy_lms", k=7)
    assert ds.params["k"] == 7 and ds.params["p"] == 0.1
    assert ds.params["noise_model"] == "margin" and ds.params["noise_sampling"] == "exact_count"
    assert ds.params["rotate"] is True and ds.params["rotation_seed"] == 0
    assert ds.params["n_complex"] == 49 and ds.params["slab_margin"] == 0.1
    assert not ds_("lsn").params["rotate"]


# ------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    "name,params,bad",
    [
        ("lms", {"k": 4}, "k"),
        ("lms", {"k": 1}, "k"),
        ("lms", {"k": 7, "margin": 0.2}, "margin"),
        ("lms", {"k": 7, "slab_margin": 0.2}, "slab_margin"),
        ("lms", {"margin": 1.0}, "margin"),
        ("lms", {"width": 0.0}, "width"),
        ("lms", {"d": 1}, "d"),
        ("lms", {"d": 10, "n_complex": 10}, "n_complex"),
        ("lms", {"n_complex": 0}, "n_complex"),
        ("lms", {"noise_fill": "zeros"}, "noise_fill"),
        ("lms", {"rotation": "givens"}, "rotation"),
        ("lms", {"rotation_seed": -1}, "rotation_seed"),
        ("lms", {"rotate": "yes"}, "rotate"),
        ("lms", {"slab5_pval": 1.5}, "slab5_pval"),
        ("lms", {"bogus": 1}, "bogus"),
        ("lms", {"p": 0.1}, "p"),  # p belongs to noisy_lms only
        ("noisy_lms", {"p": 1.5}, "p"),
        ("noisy_lms", {"p": -0.01}, "p"),
        ("noisy_lms", {"noise_model": "flip"}, "noise_model"),
        ("noisy_lms", {"noise_sampling": "global"}, "noise_sampling"),
        ("ms", {"k_complex": 6}, "k_complex"),
        ("ms", {"k_simple": 2}, "k_simple"),
        ("ms", {"margin": 0.2}, "margin"),
        ("ms", {"k": 5, "k_simple": 7}, "k_simple"),
        ("noisy_ms", {"p": 2.0}, "p"),
        ("noisy_ms", {"noise_model": "margin"}, "noise_model"),
        ("lsn", {"d": 1}, "d"),
        ("lsn", {"linear_scale": 0.0}, "linear_scale"),
        ("adv_ms", {"margin_complex": 0.2}, "margin_complex"),
        ("adv_ms", {"d": 20, "n_simple": 20}, "n_simple"),
        ("adv_ms", {"k_complex": 8}, "k_complex"),
        ("mnist", {}, "name"),
    ],
)
def test_invalid_params_raise_value_error_naming_the_parameter(name, params, bad):
    with pytest.raises(ValueError, match=rf"^{bad}=.* is invalid: expected"):
        make_dataset(name, **params)


@pytest.mark.parametrize("n", [0, -5, 2.5])
def test_invalid_sample_size(n):
    with pytest.raises(ValueError, match=r"^n="):
        ds_("lms").sample(jax.random.key(0), n)
    with pytest.raises(ValueError, match=r"^n_train="):
        ds_("lms").sample_split(jax.random.key(0), n, 10)


def test_registry_adds_a_dataset_and_never_falls_through():
    from sbjax.data import synthetic as S

    with pytest.raises(ValueError, match="name='adv_ms2'"):
        make_dataset("adv_ms2")  # an unlisted name is an error, never another dataset
    name = "lms_test_registry"
    if name not in S.dataset_names():
        S.register_dataset(name, {**S._PAPER_DEFAULTS["lms"], "k": 3}, lambda p: S._build_lms(p))
    ds = make_dataset(name, d=6)
    assert ds.name == name and ds.simple_coords == (0,) and ds.complex_coords == (1, 2, 3, 4, 5)
    assert dict(ds.blocks[1].args)["k"] == 3
    with pytest.raises(ValueError, match="not registered yet"):
        S.register_dataset(name, {}, lambda p: None)
