"""Accuracy / ROC-AUC / PR-AUC / KS on device against scikit-learn and scipy, ties included."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ks_2samp
from sklearn.metrics import average_precision_score, roc_auc_score

from sbjax.eval import metrics as m

roc_jit = jax.jit(m.roc_auc_from_scores)
pr_jit = jax.jit(m.pr_auc_from_scores)
ks_jit = jax.jit(m.ks_statistic)


def linear_logits(v, x):
    return x @ v["w"] + v["b"]


def stacked_linear(key, n_models, d):
    kw, kb = jax.random.split(key)
    return {
        "w": jax.random.normal(kw, (n_models, d, 2)),
        "b": 0.1 * jax.random.normal(kb, (n_models, 2)),
    }


@st.composite
def scored_labels(draw):
    # A few fixed sizes keep compilation to one per shape (the functions are jitted below).
    n = draw(st.sampled_from([2, 5, 33, 64]))
    n_levels = draw(st.integers(1, 6))
    # Few distinct levels -> heavy ties; a continuous case too.
    if draw(st.booleans()):
        s = draw(st.lists(st.integers(0, n_levels - 1), min_size=n, max_size=n))
        s = np.asarray(s, np.float32) * 0.5 - 1.0
    else:
        seed = draw(st.integers(0, 2**31 - 1))
        s = np.random.default_rng(seed).normal(size=n).astype(np.float32)
    y = np.asarray(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)), np.int32)
    y[0], y[1] = 0, 1  # both classes present
    return s, y


@settings(max_examples=120, deadline=None)
@given(scored_labels())
def test_auc_matches_sklearn_with_ties(case):
    s, y = case
    assert float(roc_jit(s, y)) == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    assert float(pr_jit(s, y)) == pytest.approx(average_precision_score(y, s), abs=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_auc_large_and_batched_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = 20_000
    # Rounded scores: thousands of ties among 20k points.
    s = np.round(rng.normal(size=(3, n)), 2).astype(np.float32)
    y = rng.integers(0, 2, n)
    roc = np.asarray(m.roc_auc_from_scores(s, y))
    pr = np.asarray(m.pr_auc_from_scores(s, y))
    assert roc.shape == pr.shape == (3,)
    for i in range(3):
        assert roc[i] == pytest.approx(roc_auc_score(y, s[i]), abs=1e-6)
        assert pr[i] == pytest.approx(average_precision_score(y, s[i]), abs=1e-6)


def test_auc_all_tied_and_perfect_and_infinite():
    y = np.array([0, 1, 0, 1, 1])
    assert float(m.roc_auc_from_scores(np.zeros(5), y)) == 0.5
    assert float(m.pr_auc_from_scores(np.zeros(5), y)) == pytest.approx(0.6)
    s = np.array([-np.inf, np.inf, -1.0, 2.0, np.inf], np.float32)
    assert float(m.roc_auc_from_scores(s, y)) == 1.0
    assert float(m.roc_auc_from_scores(-s, y)) == 0.0
    assert float(m.pr_auc_from_scores(s, y)) == 1.0


def test_auc_nan_when_a_class_is_missing_or_score_nan():
    assert np.isnan(m.roc_auc_from_scores(np.arange(4.0), np.ones(4, int)))
    assert np.isnan(m.roc_auc_from_scores(np.arange(4.0), np.zeros(4, int)))
    assert np.isnan(m.pr_auc_from_scores(np.arange(4.0), np.zeros(4, int)))
    assert np.isnan(m.roc_auc_from_scores(np.array([0.0, np.nan, 1.0]), np.array([0, 1, 1])))


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 6))
def test_ks_statistic_matches_scipy(seed, n_levels):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, n_levels, 40).astype(np.float32)
    b = rng.integers(0, n_levels + 1, 25).astype(np.float32)
    mask = rng.random(40) < 0.6
    mask[0] = True
    got = float(ks_jit(a, b, mask))
    assert got == pytest.approx(ks_2samp(a[mask], b).statistic, abs=1e-6)


def test_accuracy_argmax_ties_go_to_class_0():
    logits = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [2.0, 2.0]])
    assert float(m.accuracy_from_logits(logits, jnp.array([0, 1, 0, 0]))) == 1.0
    assert float(m.accuracy_from_logits(logits, jnp.array([1, 1, 0, 1]))) == 0.5


def _rounding_sensitive(score, y, tol):
    """(points with |score| < tol, positive-negative pairs whose scores differ by < tol)."""
    pos, neg = np.sort(score[y == 1]), np.sort(score[y == 0])
    close = np.searchsorted(neg, pos + tol) - np.searchsorted(neg, pos - tol)
    return int(np.sum(np.abs(score) < tol)), int(np.sum(close))


@pytest.mark.parametrize("auc_kind", ["roc", "pr", "both"])
@pytest.mark.parametrize("model_chunk,batch_size", [(None, None), (2, 37)])
def test_stacked_evaluate_equals_loop_over_models(auc_kind, model_chunk, batch_size):
    key = jax.random.key(0)
    n_models, n, d = 5, 300, 6
    variables = stacked_linear(key, n_models, d)
    x = jax.random.normal(jax.random.key(1), (n, d))
    y = (x[:, 0] + 0.5 * jax.random.normal(jax.random.key(2), (n,)) > 0).astype(jnp.int32)
    out = m.evaluate(
        linear_logits,
        variables,
        x,
        y,
        auc_kind=auc_kind,
        model_chunk=model_chunk,
        batch_size=batch_size,
    )
    logits = m.stacked_logits(linear_logits, variables, x, batch_size=batch_size)
    assert logits.shape == (n_models, n, 2)
    for i in range(n_models):
        vi = jax.tree.map(lambda a, i=i: a[i], variables)
        li = np.asarray(linear_logits(vi, x))
        np.testing.assert_allclose(logits[i], li, rtol=1e-5, atol=1e-5)
        score = li[:, 1] - li[:, 0]
        # `evaluate` is another program than this eager forward pass, so its scores agree only
        # to float rounding: a prediction may differ where a score is within rounding of 0, and
        # an AUC term where a positive and a negative score are that close (none, usually).
        n_flip, n_pairs = _rounding_sensitive(score, np.asarray(y), tol=1e-4)
        n_pos = int(np.sum(np.asarray(y)))
        assert out["accuracy"][i] == pytest.approx(
            np.mean(li.argmax(1) == np.asarray(y)), abs=1e-7 + n_flip / n
        )
        if auc_kind in ("roc", "both"):
            assert out["roc_auc"][i] == pytest.approx(
                roc_auc_score(y, score), abs=1e-5 + n_pairs / (n_pos * (n - n_pos))
            )
        if auc_kind in ("pr", "both"):
            assert out["pr_auc"][i] == pytest.approx(
                average_precision_score(y, score), abs=1e-5 + 2 * n_pairs / n_pos
            )
    assert float(m.auc(linear_logits, variables, x, y, kind="roc")[0]) == pytest.approx(
        roc_auc_score(y, np.asarray(logits[0, :, 1] - logits[0, :, 0])), abs=1e-5
    )


def test_bad_inputs_raise_value_error():
    variables = stacked_linear(jax.random.key(0), 2, 3)
    x = jnp.ones((4, 3))
    with pytest.raises(ValueError, match="y.shape"):
        m.evaluate(linear_logits, variables, x, jnp.zeros(5, int))
    with pytest.raises(ValueError, match="auc_kind"):
        m.evaluate(linear_logits, variables, x, jnp.zeros(4, int), auc_kind="roc_pr")
    with pytest.raises(ValueError, match="y="):
        m.evaluate(linear_logits, variables, x, jnp.array([0, 1, 2, 1]))
    with pytest.raises(ValueError, match="variables"):
        m.evaluate(
            linear_logits, {"w": jnp.ones((2, 3, 2)), "b": jnp.ones((3, 2))}, x, jnp.zeros(4, int)
        )
    with pytest.raises(ValueError, match="batch_size"):
        m.evaluate(linear_logits, variables, x, jnp.zeros(4, int), batch_size=0)
    with pytest.raises(ValueError, match="logits_fn"):
        m.evaluate(None, variables, x, jnp.zeros(4, int))
