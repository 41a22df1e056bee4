"""One randomization key per model in `sbjax.eval` (keys [M] vmapped with stacked variables).

Contract (see `sbjax.eval.check_model_keys`): a key-taking evaluation function accepts ONE key
(every model sees the same draw, the behaviour before per-model keys) or keys [M] (model i uses
key[i]; its result equals the function called on model i alone with key[i]).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbjax.eval import boundary as bd
from sbjax.eval import metrics as m
from sbjax.eval import randomize as r

D = 6
N = 1200
M = 4


def linear_logits(v, x):
    return x @ v["w"] + v["b"]


def haar(d, seed):
    return np.asarray(jax.random.orthogonal(jax.random.key(seed), d), np.float32)


def signed_permutation(d, seed):
    """Orthogonal with one +-1 per row: rotations are exact in float32."""
    rng = np.random.default_rng(seed)
    w = np.zeros((d, d), np.float32)
    w[np.arange(d), rng.permutation(d)] = rng.choice([-1.0, 1.0], d)
    return w


def sample_canonical(key, n):
    """z0 predictive (S), every S^c coordinate weakly predictive; classes overlap (AUC < 1)."""
    ky, k0, kc = jax.random.split(key, 3)
    y = jax.random.bernoulli(ky, 0.5, (n,)).astype(jnp.int32)
    sgn = (2 * y - 1).astype(jnp.float32)
    z0 = 0.8 * sgn + jax.random.normal(k0, (n,))
    zc = 0.4 * sgn[:, None] + jax.random.normal(kc, (n, D - 1))
    return jnp.concatenate([z0[:, None], zc], axis=1), y


def one(variables, i):
    return jax.tree.map(lambda a: a[i : i + 1], variables)


@pytest.fixture(scope="module")
def setup():
    z, y = sample_canonical(jax.random.key(0), N)
    w = haar(D, 1)
    x = z @ w
    kw, kb = jax.random.split(jax.random.key(2))
    variables = {"w": jax.random.normal(kw, (M, D, 2)), "b": jax.random.normal(kb, (M, 2))}
    keys = jax.random.split(jax.random.key(3), M)
    return x, y, w, variables, keys


def close(a, b, err_msg=""):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, err_msg=err_msg)


def assert_tree_close(got, want):
    jax.tree.map(lambda g, w: close(g, w), got, want)


# ------------------------------------------------------------------------------------------------
# Per-model keys == a Python loop over models, each with its own key.


@pytest.mark.parametrize("mode", ["permute", "resample"])
def test_randomized_logits_and_metrics_per_model_keys_equal_loop(setup, mode):
    x, y, w, variables, keys = setup
    got = r.randomized_logits(linear_logits, variables, x, keys, [0, 2], w, mode=mode)
    got_m = r.randomized_metrics(
        linear_logits, variables, x, y, keys, [0, 2], w, mode=mode, auc_kind="both"
    )
    assert got.shape == (M, N, 2)
    for i in range(M):
        want = r.randomized_logits(
            linear_logits, one(variables, i), x, keys[i], [0, 2], w, mode=mode
        )
        close(got[i], want[0], err_msg=f"model {i}")
        want_m = r.randomized_metrics(
            linear_logits, one(variables, i), x, y, keys[i], [0, 2], w, mode=mode, auc_kind="both"
        )
        for k in want_m:
            close(got_m[k][i], want_m[k][0], err_msg=f"{k}, model {i}")


def test_resample_from_source_per_model_keys_equal_loop(setup):
    x, y, w, variables, keys = setup
    src = sample_canonical(jax.random.key(9), N + 100)[0] @ w
    got = r.randomized_metrics(
        linear_logits, variables, x, y, keys, [0], w, mode="resample", source=src
    )
    for i in range(M):
        want = r.randomized_metrics(
            linear_logits, one(variables, i), x, y, keys[i], [0], w, mode="resample", source=src
        )
        for k in want:
            close(got[k][i], want[k][0], err_msg=f"{k}, model {i}")


@pytest.mark.parametrize("model_chunk", [None, 3])
def test_randomization_report_per_model_keys_equal_loop(setup, model_chunk):
    x, y, w, variables, keys = setup
    basis = r.as_basis(rotation=w, simple_coords=[0])
    rep = r.randomization_report(
        linear_logits,
        variables,
        x,
        y,
        keys,
        basis,
        auc_kind="both",
        return_scores=True,
        model_chunk=model_chunk,
        batch_size=500,
    )
    for i in range(M):
        ri = r.randomization_report(
            linear_logits,
            one(variables, i),
            x,
            y,
            keys[i],
            basis,
            auc_kind="both",
            return_scores=True,
        )
        for block in ("standard", "s_randomized", "sc_randomized", "logit_ks", "scores"):
            for k, v in rep[block].items():
                close(v[i], ri[block][k][0], err_msg=f"{block}/{k}, model {i}")
        assert (rep["n_pos"], rep["n_neg"]) == (ri["n_pos"], ri["n_neg"])


def test_per_coordinate_per_model_keys_equal_loop(setup):
    x, y, w, variables, keys = setup
    got = r.per_coordinate_randomized(
        linear_logits, variables, x, y, keys, w, coords=[4, 0, 2], auc_kind="roc", model_chunk=2
    )
    assert got["accuracy"].shape == (M, 3)
    for i in range(M):
        want = r.per_coordinate_randomized(
            linear_logits, one(variables, i), x, y, keys[i], w, coords=[4, 0, 2], auc_kind="roc"
        )
        for k in want:
            close(got[k][i], want[k][0], err_msg=f"{k}, model {i}")


@pytest.mark.parametrize("fill", ["data", "uniform"])
def test_boundary_projection_per_model_keys_equal_loop(setup, fill):
    x, y, w, variables, keys = setup
    basis = r.as_basis(rotation=w, simple_coords=[0])
    kw = {"data": (x[:400], y[:400]), "fill": fill, "n_grid": 6, "n_fill": 5}
    got = bd.boundary_projection(linear_logits, variables, basis, keys, **kw)
    assert got.prob.shape == (M, 6, 6)
    for i in range(M):
        want = bd.boundary_projection(linear_logits, one(variables, i), basis, keys[i], **kw)
        assert got.c2[i] == want.c2[0]
        close(got.prob[i], want.prob[0], err_msg=f"model {i}")
        close(got.v[i], want.v[0])


def test_randomize_block_with_stacked_keys(setup):
    x, _, w, _, keys = setup
    got = r.randomize_block(keys, x, [0], w)
    assert got.shape == (M, N, D)
    for i in range(M):
        close(got[i], r.randomize_block(keys[i], x, [0], w))


def test_raw_uint32_keys_work_like_typed_keys(setup):
    x, y, w, variables, keys = setup
    raw = jax.random.key_data(keys)  # uint32 [M, 2], the jax.random.PRNGKey format
    a = r.randomized_metrics(linear_logits, variables, x, y, raw, [0], w)
    b = r.randomized_metrics(linear_logits, variables, x, y, keys, [0], w)
    c = r.randomized_metrics(linear_logits, variables, x, y, raw[0], [0], w)
    d = r.randomized_metrics(linear_logits, variables, x, y, keys[0], [0], w)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
        np.testing.assert_array_equal(c[k], d[k])


# ------------------------------------------------------------------------------------------------
# One key: every model sees the same draw, exactly as before per-model keys.


def test_single_key_is_one_shared_draw(setup):
    x, y, w, variables, keys = setup
    key = keys[0]
    basis = r.as_basis(rotation=w, simple_coords=[0])
    rep = r.randomization_report(linear_logits, variables, x, y, key, basis, return_scores=True)
    # The definition: randomize once (S with fold_in(key, 0), S^c with fold_in(key, 1)) and
    # evaluate every model on the same randomized set.
    for name, coords, k in (
        ("s_randomized", basis.simple_coords, 0),
        ("sc_randomized", basis.complex_coords, 1),
    ):
        xr = r.randomize_block(jax.random.fold_in(key, k), x, coords, w)
        want = m.evaluate(linear_logits, variables, xr, y)
        for metric in want:
            close(rep[name][metric], want[metric], err_msg=f"{name}/{metric}")
    # One key == the same key given to every model.
    same = jnp.stack([key] * M)
    rep_same = r.randomization_report(
        linear_logits, variables, x, y, same, basis, return_scores=True
    )
    for block in ("standard", "s_randomized", "sc_randomized", "logit_ks", "scores"):
        assert_tree_close(rep_same[block], rep[block])
    got = r.randomized_logits(linear_logits, variables, x, key, [1], w)
    close(got, m.stacked_logits(linear_logits, variables, r.randomize_block(key, x, [1], w)))
    pc = r.per_coordinate_randomized(linear_logits, variables, x, y, key, w, coords=[3])
    xr = r.randomize_block(jax.random.fold_in(key, 3), x, [3], w)
    close(pc["accuracy"][:, 0], m.accuracy(linear_logits, variables, xr, y))


def test_per_model_keys_give_independent_draws(setup):
    """Identical models with distinct keys see distinct permutations (the Table 6 bug)."""
    x, y, w, variables, keys = setup
    same_model = jax.tree.map(lambda a: jnp.broadcast_to(a[:1], a.shape), variables)
    basis = r.as_basis(rotation=w, simple_coords=[0])
    rep = r.randomization_report(linear_logits, same_model, x, y, keys, basis, return_scores=True)
    s = np.asarray(rep["scores"]["s_randomized"])
    for i in range(1, M):
        assert not np.allclose(s[i], s[0])
    # Standard scores do not depend on the key.
    std = np.asarray(rep["scores"]["standard"])
    np.testing.assert_array_equal(std, np.broadcast_to(std[:1], std.shape))


# ------------------------------------------------------------------------------------------------
# Bad keys.


@pytest.mark.parametrize("n_keys", [1, 3, 5])
def test_wrong_number_of_keys_is_a_value_error_naming_key(setup, n_keys):
    x, y, w, variables, _ = setup
    keys = jax.random.split(jax.random.key(0), n_keys)
    basis = r.as_basis(rotation=w, simple_coords=[0])
    with pytest.raises(ValueError, match=r"^key=.*one key per model, shape \[4\]"):
        r.randomization_report(linear_logits, variables, x, y, keys, basis)
    with pytest.raises(ValueError, match="^key="):
        r.randomized_logits(linear_logits, variables, x, keys, [0], w)
    with pytest.raises(ValueError, match="^key="):
        r.randomized_metrics(linear_logits, variables, x, y, keys, [0], w)
    with pytest.raises(ValueError, match="^key="):
        r.per_coordinate_randomized(linear_logits, variables, x, y, keys, w)
    with pytest.raises(ValueError, match="^key="):
        bd.boundary_projection(linear_logits, variables, basis, keys, data=(x, y), c2=1)


def test_key_of_wrong_rank_or_type_is_a_value_error(setup):
    x, y, w, variables, _ = setup
    keys2d = jax.random.split(jax.random.key(0), (2, 2))
    with pytest.raises(ValueError, match="^key="):
        r.randomized_metrics(linear_logits, variables, x, y, keys2d, [0], w)
    with pytest.raises(ValueError, match="^key="):
        r.randomized_metrics(linear_logits, variables, x, y, np.float32(1.0), [0], w)
    with pytest.raises(ValueError, match="^key="):
        r.randomize_block(keys2d, x, [0], w)


# ------------------------------------------------------------------------------------------------
# Invariance property (Table 1): a model that uses only S is unchanged by S^c-randomization.


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_s_only_model_has_sc_randomized_auc_equal_standard_with_per_model_keys(seed):
    z, y = sample_canonical(jax.random.key(100 + seed), N)
    w = signed_permutation(D, seed)
    x = z @ w
    rng = np.random.default_rng(seed)
    # M models that score only the canonical coordinate 0 (S), with random positive scales and
    # biases, on overlapping classes (AUC < 1, so equality is not trivially 1 == 1).
    scale = rng.uniform(0.2, 3.0, M).astype(np.float32)
    bias = rng.normal(size=M).astype(np.float32)
    wcol = w.T @ np.eye(D, dtype=np.float32)[0]  # z0 = x @ (W.T e0)
    wm = np.zeros((M, D, 2), np.float32)
    wm[:, :, 1] = scale[:, None] * wcol[None]
    bm = np.zeros((M, 2), np.float32)
    bm[:, 1] = bias
    variables = {"w": jnp.asarray(wm), "b": jnp.asarray(bm)}
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(jnp.arange(M))
    basis = r.as_basis(rotation=w, simple_coords=[0])
    rep = r.randomization_report(
        linear_logits, variables, x, y, keys, basis, auc_kind="both", return_scores=True
    )
    std, sc = rep["standard"], rep["sc_randomized"]
    for k in ("roc_auc", "pr_auc", "accuracy"):
        np.testing.assert_array_equal(sc[k], std[k], err_msg=k)
    np.testing.assert_array_equal(rep["scores"]["sc_randomized"], rep["scores"]["standard"])
    assert np.all(np.asarray(std["roc_auc"]) > 0.7) and np.all(np.asarray(std["roc_auc"]) < 1)
    # S-randomization sends each model to chance, each with its own permutation.
    null_se = np.sqrt((N + 1) / (12 * (N / 2) ** 2))
    assert np.all(np.abs(np.asarray(rep["s_randomized"]["roc_auc"]) - 0.5) < 5 * null_se)
    summary = r.reliance_summary(rep)
    assert summary["invariant_to_sc"].all()


def test_s_only_model_invariance_under_haar_rotation_per_model_keys():
    """The paper's setting (Haar-rotated LMS-5): invariance holds per model, per key."""
    data_mod = pytest.importorskip("sbjax.data")
    ds = data_mod.make_dataset("lms", k=5, d=D)
    x, y = ds.sample(jax.random.key(1), N)
    w = np.asarray(ds.rotation)
    wcol = w.T @ np.eye(D, dtype=np.float32)[0]
    wm = np.zeros((M, D, 2), np.float32)
    wm[:, :, 1] = np.linspace(0.5, 2.0, M, dtype=np.float32)[:, None] * wcol[None]
    variables = {"w": jnp.asarray(wm), "b": jnp.zeros((M, 2))}
    keys = jax.random.split(jax.random.key(7), M)
    rep = r.randomization_report(linear_logits, variables, x, y, keys, ds)
    np.testing.assert_array_equal(rep["sc_randomized"]["roc_auc"], rep["standard"]["roc_auc"])
    np.testing.assert_array_equal(rep["sc_randomized"]["accuracy"], rep["standard"]["accuracy"])
    assert r.reliance_summary(rep)["invariant_to_sc"].all()


# ------------------------------------------------------------------------------------------------
# Attacks: PGD and SVD-UAP random starts, one key per model.


def test_pgd_attack_and_svd_uap_per_model_keys_equal_loop(setup):
    from sbjax.eval import attacks as A
    from sbjax.eval import uap as U

    x, y, w, variables, keys = setup
    x, y = x[:200], y[:200]
    # A visible random start (rand_init = eps) so that the key matters.
    kw = dict(norm="l2", eps=0.5, step_size=0.05, n_iter=5, rand_init=0.5)
    got = A.pgd_attack(linear_logits, variables, x, y, keys, **kw)
    for i in range(M):
        want = A.pgd_attack(linear_logits, one(variables, i), x, y, keys[i], **kw)
        close(got.delta[i], want.delta[0], err_msg=f"model {i}")
        close(got.accuracy[i], want.accuracy[0])
    shared = A.pgd_attack(linear_logits, variables, x, y, keys[0], **kw)
    assert not np.allclose(np.asarray(got.delta[1]), np.asarray(shared.delta[1]))
    u = U.svd_uap(
        linear_logits, variables, x, y, keys, eps=0.5, step_size=0.05, n_iter=5, rand_init=0.5
    )
    for i in range(M):
        want = U.svd_uap(
            linear_logits,
            one(variables, i),
            x,
            y,
            keys[i],
            eps=0.5,
            step_size=0.05,
            n_iter=5,
            rand_init=0.5,
        )
        close(u[i], want[0])
    with pytest.raises(ValueError, match="key"):
        A.pgd_attack(linear_logits, variables, x, y, keys[:2], **kw)
