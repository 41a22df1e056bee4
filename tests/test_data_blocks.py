"""Defining properties of the 1-D blocks (Shah et al. 2020, Sec. 3.1 / App. B; REFERENCE 1.1-7)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbjax.data import blocks as B

N = 20_000
TOL = 1e-6  # float32 rounding of the interval ends
F32_EPS = float(np.finfo(np.float32).eps)


def assert_f32_close(a, b, ulps=4):
    """Equal up to a few float32 roundings of the elementwise maps that turn random bits into
    values in [-1, 1] (absolute: a rounding near 0 is relative to the range, not the value)."""
    np.testing.assert_allclose(a, b, rtol=ulps * F32_EPS, atol=ulps * F32_EPS)


# Geometry table of REFERENCE.md Sec. 1.2 (B = 1, gamma = 0.1): per k, {label: [(lo, hi), ...]}.
TABLE = {
    3: {0: [(-0.266667, 0.266667)], 1: [(-1.0, -0.466667), (0.466667, 1.0)]},
    5: {
        0: [(-1.0, -0.76), (-0.12, 0.12), (0.76, 1.0)],
        1: [(-0.56, -0.32), (0.32, 0.56)],
    },
    7: {
        0: [(-0.685714, -0.571429), (-0.057143, 0.057143), (0.571429, 0.685714)],
        1: [(-1.0, -0.885714), (-0.371429, -0.257143), (0.257143, 0.371429), (0.885714, 1.0)],
    },
}


@pytest.fixture(scope="module")
def labels():
    return jax.random.bernoulli(jax.random.key(123), 0.5, (N,)).astype(jnp.int32)


@functools.cache
def _jitted(name, **kw):
    fn = {
        "linear": B.linear,
        "noisy_linear": B.noisy_linear,
        "slab": B.slab,
        "noisy_slab": B.noisy_slab,
    }[name]
    return jax.jit(functools.partial(fn, **kw))


def draw(name, labels, seed=0, **kw):
    # Spell out the defaults so equal configurations share one compiled sampler.
    kw.setdefault("margin", 0.1)
    if "slab" in name:
        kw.setdefault("k", 5)
    return np.asarray(_jitted(name, **kw)(jax.random.key(seed), labels))


def sigma(p, n):
    return np.sqrt(p * (1 - p) / n)


# ------------------------------------------------------------------------------------------------
# Geometry


@pytest.mark.parametrize("k", [3, 5, 7])
def test_geometry_table_matches_reference(k):
    geo = B.slab_geometry(k)
    for label in (0, 1):
        got = [(g["lo"], g["hi"]) for g in geo if g["label"] == label]
        np.testing.assert_allclose(got, TABLE[k][label], atol=1e-6)
    assert B.slab_width(k) == pytest.approx({3: 0.533333, 5: 0.24, 7: 0.114286}[k], abs=1e-6)
    # The slabs tile [-B, B] with gaps of exactly 2s between neighbours.
    assert geo[0]["lo"] == pytest.approx(-1.0) and geo[-1]["hi"] == pytest.approx(1.0)
    gaps = [b["lo"] - a["hi"] for a, b in zip(geo[:-1], geo[1:], strict=True)]
    np.testing.assert_allclose(gaps, 0.2, atol=1e-12)
    assert [g["label"] for g in geo] == [abs(j) % 2 for j in range(-(k // 2), k // 2 + 1)]


@pytest.mark.parametrize("k,margin", [(3, 0.1), (5, 0.1), (7, 0.1), (9, 0.05), (11, 0.02)])
def test_slab_supports_every_sample_in_its_class_slabs_and_every_slab_hit(labels, k, margin):
    x = draw("slab", labels, k=k, margin=margin)
    y = np.asarray(labels)
    assert x.dtype == np.float32 and x.shape == (N,)
    geo = B.slab_geometry(k, margin)
    for label in (0, 1):
        xs = x[y == label]
        own = [g for g in geo if g["label"] == label]
        inside = np.zeros(xs.shape, bool)
        for g in own:
            hit = (xs >= g["lo"] - TOL) & (xs <= g["hi"] + TOL)
            assert hit.sum() > 0, f"slab j={g['j']} never hit"
            inside |= hit
        assert inside.all(), f"{(~inside).sum()} label-{label} points outside their slabs"


def test_linear_support_and_bayes(labels):
    x = draw("linear", labels)
    y = np.asarray(labels)
    assert x[y == 1].min() >= 0.1 - TOL and x[y == 1].max() <= 1.0 + TOL
    assert x[y == 0].min() >= -1.0 - TOL and x[y == 0].max() <= -0.1 + TOL
    # Uniform on [0.1, 1]: mean 0.55.
    assert abs(x[y == 1].mean() - 0.55) < 0.01
    assert (np.asarray(B.linear_rule(x)) == y).mean() == 1.0


@pytest.mark.parametrize("k", [3, 5, 7, 9])
def test_slab_bayes_accuracy_is_one_with_k_minus_1_piece_rule(labels, k):
    margin = 0.05 if k == 9 else 0.1
    x = draw("slab", labels, k=k, margin=margin)
    assert (np.asarray(B.slab_rule(x, k, margin)) == np.asarray(labels)).mean() == 1.0
    # The rule has exactly k-1 pieces: k-1 label changes along the line.
    grid = jnp.linspace(-1, 1, 20001)
    pred = np.asarray(B.slab_rule(grid, k, margin))
    assert (np.diff(pred) != 0).sum() == k - 1


# ------------------------------------------------------------------------------------------------
# Noisy linear


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_noisy_linear_margin_model_exact_count(labels, p):
    x = draw("noisy_linear", labels, p=p)
    y = np.asarray(labels)
    band = np.abs(x) < 0.1
    # Exactly round(n p) points are redrawn inside (-m, m); the rest keep the linear support.
    assert band.sum() == round(N * p)
    assert np.all(np.sign(x[~band]) == 2 * y[~band] - 1)
    assert np.all(np.abs(x[~band]) >= 0.1 - TOL) and np.all(np.abs(x) <= 1 + TOL)
    # Noise is label-independent: both classes hit about equally.
    assert abs(y[band].mean() - 0.5) < 5 * sigma(0.5, band.sum())
    acc = (np.asarray(B.linear_rule(x)) == y).mean()
    assert abs(acc - (1 - p / 2)) < 4 * sigma(p / 2, N)


def test_noisy_linear_iid_and_signflip(labels):
    y = np.asarray(labels)
    x = draw("noisy_linear", labels, p=0.1, noise_sampling="iid")
    band = (np.abs(x) < 0.1).sum()
    assert abs(band / N - 0.1) < 4 * sigma(0.1, N)
    x = draw("noisy_linear", labels, p=0.1, noise_model="signflip")
    assert np.all(np.abs(x) >= 0.1 - TOL)
    # Sign flip: exactly round(n p) points sit on the wrong side; rule accuracy exactly 1 - p.
    assert (np.asarray(B.linear_rule(x)) == y).mean() == pytest.approx(1 - round(N * 0.1) / N)


def test_noise_mask_exact_count_and_extremes():
    mask = jax.jit(B.noise_mask, static_argnums=(1, 2))
    for p, want in [(0.0, 0), (1.0, 1000), (0.1234, 123)]:
        assert np.asarray(mask(jax.random.key(0), 1000, p)).sum() == want
    a = np.asarray(mask(jax.random.key(0), 1000, 0.5))
    b = np.asarray(mask(jax.random.key(1), 1000, 0.5))
    assert a.sum() == b.sum() == 500 and (a != b).any()


# ------------------------------------------------------------------------------------------------
# Slab probabilities and second moments


def _level_freq(x, y, k, label):
    lv = np.asarray(B.slab_level(x, k))[y == label]
    return np.bincount(lv, minlength=(k + 1) // 2) / lv.size


def test_slab_level_probabilities_match_reference(labels):
    y = np.asarray(labels)
    n0, n1 = (y == 0).sum(), (y == 1).sum()
    x5 = draw("slab", labels, k=5)
    f0, f1 = _level_freq(x5, y, 5, 0), _level_freq(x5, y, 5, 1)
    assert abs(f0[0] - 0.75) < 4 * sigma(0.75, n0) and f0[1] == 0
    assert f1[1] == 1.0
    x7 = draw("slab", labels, k=7)
    f0, f1 = _level_freq(x7, y, 7, 0), _level_freq(x7, y, 7, 1)
    assert abs(f0[0] - 0.5) < 4 * sigma(0.5, n0) and abs(f0[2] - 0.5) < 4 * sigma(0.5, n0)
    assert abs(f1[1] - 0.875) < 4 * sigma(0.875, n1) and abs(f1[3] - 0.125) < 4 * sigma(0.125, n1)
    # Each sign of a level is equally likely (+-2 carry 1/4 each for 7-slab negatives).
    xs = x7[(y == 0) & (np.asarray(B.slab_level(x7, 7)) == 2)]
    assert abs((xs > 0).mean() - 0.5) < 4 * sigma(0.5, xs.size)


def test_slab_level_probs_configurable(labels):
    y = np.asarray(labels)
    x = draw("slab", labels, k=5, level_probs=(0.5, 1.0, 0.5))
    f0 = _level_freq(x, y, 5, 0)
    assert abs(f0[0] - 0.5) < 4 * sigma(0.5, (y == 0).sum())
    # k >= 9 default: uniform over a class's signed slabs.
    assert B.default_level_probs(9) == pytest.approx((0.2, 0.5, 0.4, 0.5, 0.4))


def _exact_ex2(k, label):
    probs = B.default_level_probs(k)
    total = 0.0
    for g in B.slab_geometry(k):
        if g["label"] != label:
            continue
        mass = probs[g["level"]] * (1.0 if g["level"] == 0 else 0.5)
        total += mass * (g["hi"] ** 3 - g["lo"] ** 3) / (3 * (g["hi"] - g["lo"]))
    return total


@pytest.mark.parametrize("k", [5, 7])
def test_second_moment_equal_across_classes(labels, k):
    y = np.asarray(labels)
    x = draw("slab", labels, k=k)
    for label in (0, 1):
        exact = _exact_ex2(k, label)
        assert exact == pytest.approx(0.198, abs=0.002)
        emp = float((x[y == label] ** 2).mean())
        assert abs(emp - exact) < 0.01, (label, emp, exact)


# ------------------------------------------------------------------------------------------------
# Noisy slabs (REFERENCE.md Sec. 1.7)


@pytest.mark.parametrize("k", [5, 7])
def test_noisy_slab_opposite_model(labels, k):
    y = np.asarray(labels)
    x = draw("noisy_slab", labels, k=k, p=0.1)
    geo = B.slab_geometry(k)
    pred = np.asarray(B.slab_rule(x, k))
    # Exactly round(n p) points moved into a slab of the other class; the rule scores 1 - p.
    assert (pred != y).sum() == round(0.1 * N)
    on_slab = np.zeros(N, bool)
    for g in geo:
        on_slab |= (x >= g["lo"] - TOL) & (x <= g["hi"] + TOL)
    assert on_slab.all()
    # Reference rule: corrupted negatives go to positive levels uniformly, positives to negative.
    lv = np.asarray(B.slab_level(x, k))
    moved_pos = lv[(pred != y) & (y == 1)]
    assert set(np.unique(moved_pos)) == set(range(0, (k + 1) // 2, 2))
    frac0 = (moved_pos == 0).mean()
    assert abs(frac0 - 0.5) < 5 * sigma(0.5, moved_pos.size)
    # p = 0 is the clean slab (another compiled program: equal to float32 rounding).
    assert_f32_close(draw("noisy_slab", labels, k=k, p=0.0), draw("slab", labels, k=k))


def test_noisy_slab_gap_model(labels):
    y = np.asarray(labels)
    x = draw("noisy_slab", labels, k=5, p=0.1, noise_model="gap")
    geo = B.slab_geometry(5)
    in_gap = np.ones(N, bool)
    for g in geo:
        in_gap &= ~((x >= g["lo"] - TOL) & (x <= g["hi"] + TOL))
    assert in_gap.sum() == round(0.1 * N)
    assert np.all(np.abs(x) <= 1.0)
    # Four gaps, all used.
    gap_idx = np.digitize(x[in_gap], [-0.56, 0.0, 0.56])
    assert set(np.unique(gap_idx)) == {0, 1, 2, 3}
    acc = (np.asarray(B.slab_rule(x, 5)) == y).mean()
    assert abs(acc - 0.95) < 4 * sigma(0.05, N)


# ------------------------------------------------------------------------------------------------
# Purity, jit and vmap


def test_blocks_pure_and_vmap_equals_loop(labels):
    a = draw("slab", labels, seed=0, k=5)
    # the same program on the same inputs is bit-identical
    np.testing.assert_array_equal(a, draw("slab", labels, seed=0, k=5))
    assert (a != draw("slab", labels, seed=1, k=5)).mean() > 0.99
    keys = jax.random.split(jax.random.key(0), 3)
    f = _jitted("noisy_linear", p=0.1)
    batched = np.asarray(jax.jit(jax.vmap(f, in_axes=(0, None)))(keys, labels))
    for i in range(3):
        # vmapped and single draws are different programs: the same random bits, and values
        # equal to float32 rounding (a fused multiply-add may round once instead of twice)
        assert_f32_close(batched[i], np.asarray(f(keys[i], labels)))
    assert (batched[0] != batched[1]).mean() > 0.99


# ------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda y: B.slab(jax.random.key(0), y, k=4), "k"),
        (lambda y: B.slab(jax.random.key(0), y, k=1), "k"),
        (lambda y: B.slab(jax.random.key(0), y, k=5.0), "k"),
        (lambda y: B.slab(jax.random.key(0), y, k=7, margin=0.2), "margin"),
        (lambda y: B.slab(jax.random.key(0), y, k=5, margin=-0.1), "margin"),
        (lambda y: B.slab(jax.random.key(0), y, k=5, width=0.0), "width"),
        (lambda y: B.slab(jax.random.key(0), y, k=5, level_probs=(0.5, 1.0)), "level_probs"),
        (lambda y: B.slab(jax.random.key(0), y, k=5, level_probs=(0.5, 1, 0.4)), "level_probs"),
        (lambda y: B.noisy_linear(jax.random.key(0), y, p=1.5), "p"),
        (lambda y: B.noisy_linear(jax.random.key(0), y, p=-0.1), "p"),
        (lambda y: B.noisy_linear(jax.random.key(0), y, noise_model="flip"), "noise_model"),
        (lambda y: B.noisy_linear(jax.random.key(0), y, noise_sampling="x"), "noise_sampling"),
        (lambda y: B.noisy_slab(jax.random.key(0), y, p=2.0), "p"),
        (lambda y: B.noisy_slab(jax.random.key(0), y, p=0.1, noise_model="x"), "noise_model"),
    ],
)
def test_invalid_block_params_raise(call, name):
    y = jnp.zeros(8, jnp.int32)
    with pytest.raises(ValueError, match=rf"^{name}="):
        call(y)
