"""The shortcut phase diagram (`sbjax.train.phase`): traced samplers equal the static ones, and
the one-program grid gives the known answers (no label information in S -> no reliance on S;
a clean, wide-margin S -> reliance on S only)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbjax.data import blocks as B
from sbjax.data import make_dataset
from sbjax.train import TrainConfig
from sbjax.train.phase import PhaseData, phase_diagram, sample_cell

FCN = {"name": "fcn", "width": 100, "depth": 1}
CFG = TrainConfig(
    lr=0.1, batch_size=128, max_steps=600, eval_every=200, stop_rule="none", weight_decay=5e-5
)
DATA = PhaseData(d=10, n_train=2000, n_test=1000)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.37, 1.0])
def test_traced_noise_mask_selects_the_static_rows(p):
    key = jax.random.key(5)
    static = B.noise_mask(key, 1000, p)
    traced = jax.jit(lambda q: B.noise_mask(key, 1000, q))(jnp.float32(p))
    np.testing.assert_array_equal(static, traced)
    assert int(np.sum(traced)) == round(1000 * p)


@pytest.mark.parametrize("k", [3, 5, 7, 9])
def test_slab_from_a_padded_cdf_with_traced_k_equals_slab(k):
    key, y = jax.random.key(1), jnp.asarray(np.random.default_rng(0).integers(0, 2, 2000))
    ref = B.slab(key, y, k=k, margin=0.1)
    cdf = B.level_cdf(k, n_levels=6)  # padded past (k + 1) / 2 levels
    got = jax.jit(lambda kk: B.slab_from_cdf(key, y, k=kk, margin=0.1, cdf=cdf))(jnp.float32(k))
    np.testing.assert_allclose(got, ref, atol=1e-6)  # slab geometry in float32 vs float64
    np.testing.assert_array_equal(B.slab_rule(got, k, 0.1), B.slab_rule(ref, k, 0.1))


def test_sample_cell_equals_make_dataset_at_every_grid_point():
    tables = DATA.level_tables()
    draw = jax.jit(lambda key, p, g, ki: sample_cell(key, 700, p, g, ki, DATA, tables))
    key = jax.random.key(3)
    for p, g, k in [(0.0, 0.1, 5), (0.2, 0.3, 3), (0.5, 0.0, 7)]:
        ds = make_dataset(
            "noisy_lms", d=10, k=k, margin=g, slab_margin=0.1, p=p, noise_model="signflip"
        )
        z0, y0 = ds.sample_canonical(key, 700)
        z1, y1 = draw(key, jnp.float32(p), jnp.float32(g), jnp.int32(DATA.ks.index(k)))
        np.testing.assert_array_equal(y0, y1)
        np.testing.assert_allclose(z0, z1, atol=1e-6)
        # The S column: exactly round(n p) sign flips against the label.
        flipped = np.sign(np.asarray(z1[:, 0])) != 2 * np.asarray(y1) - 1
        assert int(flipped.sum()) == round(700 * p)


def test_phase_grid_known_answers():
    r = phase_diagram(CFG, FCN, DATA, p=[0.0, 0.5], margin=[0.5], k=[3], n_seeds=2, seed=0)
    m = r.metrics
    assert m["test_acc"].shape == (2, 1, 1, 2)
    assert r.timeline["s_rand_acc"].shape == (2, 1, 1, 2, 3)
    np.testing.assert_array_equal(r.updates, [200, 400, 600])
    # The timeline's last point is the cell's metric.
    np.testing.assert_array_equal(r.timeline["sc_rand_acc"][..., -1], m["sc_rand_acc"])
    # p = 0, margin 0.5: S alone explains the labels and is the simplest feature -> SB.
    assert np.all(m["test_acc"][0] > 0.98)
    assert np.all(m["s_rand_acc"][0] < 0.65)
    assert np.all(m["sc_rand_acc"][0] > 0.95)
    # p = 0.5 (sign flipped on half the rows): S carries no label information, so randomizing
    # it changes nothing; the model learned S^c.
    assert np.all(np.abs(m["s_rand_acc"][1] - m["test_acc"][1]) < 0.05)
    assert np.all(m["sc_rand_acc"][1] < 0.65)
    (cross,) = r.crossover()
    assert cross["k"] == 3 and cross["p_cross"] == 0.5
    # every seed crosses at 0.5 too; the last timeline period is the final evaluation
    np.testing.assert_array_equal(r.crossover_per_seed(), [[[0.5, 0.5]]])
    np.testing.assert_array_equal(r.crossover_per_seed(period=2), r.crossover_per_seed())


@pytest.mark.slow
def test_loop_over_cells_equals_the_one_program():
    kw = dict(p=[0.0, 0.3], margin=[0.1], k=[3, 7], n_seeds=2, seed=1)
    a = phase_diagram(CFG, FCN, DATA, **kw)
    b = phase_diagram(CFG, FCN, DATA, strategy="loop", **kw)
    assert a.strategy == "program" and b.strategy == "loop"
    for name in a.metrics:
        # vmapped and single-model programs round differently; training amplifies it a little
        np.testing.assert_allclose(a.metrics[name], b.metrics[name], atol=0.01, err_msg=name)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(p=[1.5], margin=[0.1]), "p"),
        (dict(p=[0.1], margin=[1.0]), "margin"),
        (dict(p=[0.1], margin=[0.1], k=[9]), "k"),
        (dict(p=[0.1], margin=[0.1], strategy="fast"), "strategy"),
        (dict(p=[], margin=[0.1]), "p"),
    ],
)
def test_bad_grids_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        phase_diagram(CFG, FCN, DATA, **kw)


def test_bad_data_is_refused():
    with pytest.raises(ValueError, match="ks"):
        phase_diagram(CFG, FCN, PhaseData(d=10, ks=(4,)), p=[0.0], margin=[0.1])
    with pytest.raises(ValueError, match="slab_margin"):
        phase_diagram(CFG, FCN, PhaseData(d=10, slab_margin=0.3), p=[0.0], margin=[0.1])
