"""Mitigation testbed: each method's loss or procedure against a direct formula, the data sets
the methods are scored on, and the command end to end (smoke preset)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import mitigation as mit
from sbjax.data import make_dataset
from sbjax.eval import randomize as R
from sbjax.models import first_layer_kernel, make_model
from sbjax.models.projected import orthogonal_complement, project_out, with_basis
from sbjax.train import TrainConfig, train_sweep
from sbjax.train import objective as obj
from tests.test_objective import _ctx


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _unlabeled_ctx(k=3, bu=6, seed=1):
    rng = np.random.default_rng(seed)
    logits_u = jnp.asarray(2 * rng.normal(size=(k, bu, 2)), jnp.float32)
    valid_u = jnp.asarray([1, 1, 1, 1, 1, 0][:bu], jnp.float32)
    return _ctx(k=k, logits_u=logits_u, valid_u=valid_u, x_u=jnp.zeros((bu, 3)))


def test_divdis_mutual_information_matches_formula():
    ctx = _unlabeled_ctx()
    p = _softmax(np.asarray(ctx.logits_u, np.float64))
    v = np.asarray(ctx.valid_u, np.float64)
    w = v / v.sum()
    want = 0.0
    for i in range(3):
        for j in range(i + 1, 3):
            joint = np.einsum("b,ba,bc->ac", w, p[i], p[j])
            pi, pj = joint.sum(1), joint.sum(0)
            want += np.sum(joint * np.log(joint / np.outer(pi, pj)))
    got = float(obj.divdis_mutual_information().fn(ctx))
    assert got == pytest.approx(want, rel=1e-4, abs=1e-7)


def test_divdis_mutual_information_known_answers():
    # Two identical, confident, balanced members: I = H(marginal) = log 2. Independent ones: 0.
    same = jnp.asarray([[[9.0, -9.0], [-9.0, 9.0]]] * 2, jnp.float32)  # [2, 2, 2]
    ctx = _ctx(k=2, logits_u=same, valid_u=jnp.ones(2), x_u=jnp.zeros((2, 3)))
    assert float(obj.divdis_mutual_information().fn(ctx)) == pytest.approx(np.log(2), abs=1e-4)
    # member 0 varies over rows, member 1 is the same on every row: independent.
    lg = jnp.asarray([[[3.0, -3.0], [-3.0, 3.0]], [[1.0, 0.0], [1.0, 0.0]]], jnp.float32)
    ctx = _ctx(k=2, logits_u=lg, valid_u=jnp.ones(2), x_u=jnp.zeros((2, 3)))
    assert float(obj.divdis_mutual_information().fn(ctx)) == pytest.approx(0.0, abs=1e-6)


def test_divdis_marginal_matches_formula():
    ctx = _unlabeled_ctx()
    p = _softmax(np.asarray(ctx.logits_u, np.float64))
    v = np.asarray(ctx.valid_u, np.float64)
    prior = np.array([0.3, 0.7])
    mean = np.einsum("b,kbc->kc", v / v.sum(), p)
    want = np.sum(mean * (np.log(mean) - np.log(prior)))
    got = float(obj.divdis_marginal(prior=(0.3, 0.7)).fn(ctx))
    assert got == pytest.approx(want, rel=1e-4)


def test_jtt_objective_is_the_upweighted_loss():
    rng = np.random.default_rng(0)
    loss = jnp.asarray(rng.uniform(size=(1, 5)), jnp.float32)
    err = jnp.asarray([[1.0, 0.0, 0.0, 1.0, 1.0]])  # the last row is padding (valid 0)
    ctx = _ctx(k=1, data_loss=loss, weights=err)
    objective = obj.jtt_objective()
    assert objective.data_loss_weight == 0.0 and objective is obj.jtt_objective()
    up = 20.0
    lam = {"jtt_all": 1.0, "jtt_up": up - 1.0}
    got = sum(lam[p.name] * float(p.fn(ctx)) for p in objective.penalties)
    v = np.asarray(ctx.valid)
    w = 1 + (up - 1) * np.asarray(err[0])
    want = np.sum(w * np.asarray(loss[0]) * v) / v.sum()
    assert got == pytest.approx(want, rel=1e-5)


def test_jtt_with_upweight_one_trains_like_erm():
    ds = make_dataset("lms", d=6, k=5)
    x, y = map(np.asarray, ds.sample(jax.random.key(0), 300))
    cfg = TrainConfig(optimizer="adam", lr=1e-2, batch_size=64, max_steps=40, eval_every=20)
    model = {"name": "fcn", "width": 8, "depth": 1}
    erm = train_sweep(cfg, model, (x, y), n_seeds=2, progress=False)
    errors = np.zeros((4, len(y)), np.float32)  # per model: m = seed * 2 + grid point
    errors[:, ::3] = 1.0
    jtt = train_sweep(
        cfg,
        model,
        (x, y),
        n_seeds=2,
        progress=False,
        objective=obj.jtt_objective(),
        example_weights=errors,
        grid={"lambda_jtt_up": [0.0, 50.0]},
    )
    k_erm = np.asarray(erm.params["params"]["head"]["kernel"])
    k_jtt = np.asarray(jtt.params["params"]["head"]["kernel"])  # model m = seed * 2 + grid
    np.testing.assert_allclose(k_jtt[[0, 2]], k_erm, rtol=1e-5, atol=1e-6)
    assert not np.allclose(k_jtt[[1, 3]], k_erm, atol=1e-4)


def test_projected_model_ignores_the_stored_subspace():
    model = make_model({"name": "fcn", "width": 16, "depth": 1})
    m2 = orthogonal_complement(model, 3)
    assert orthogonal_complement(model, 3) is m2  # cached: one static argument per model
    x = jax.random.normal(jax.random.key(1), (10, 7))
    v = m2.init(jax.random.key(2), x[:1])
    base = {k: val for k, val in v.items() if k != "projection"}
    np.testing.assert_allclose(m2.logits(v, x), model.logits(base, x), rtol=1e-6)  # U = 0
    u, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(7, 2)))
    v = with_basis(v, u)  # 2 of 3 columns used
    shift = jnp.asarray(np.random.default_rng(1).normal(size=(10, 2)) @ u.T, jnp.float32)
    np.testing.assert_allclose(m2.logits(v, x + shift), m2.logits(v, x), atol=1e-5)
    np.testing.assert_allclose(project_out(x, jnp.asarray(u, jnp.float32)) @ u, 0.0, atol=1e-5)
    with pytest.raises(ValueError, match="basis.shape"):
        with_basis(v, np.zeros((7, 4)))


def test_orthop_bases_recover_a_rank_one_first_layer():
    model = make_model({"name": "fcn", "width": 8, "depth": 1})
    v = jax.vmap(lambda k: model.init(k, jnp.zeros((1, 5))))(jax.random.split(jax.random.key(0), 2))
    direction = np.array([0.0, 1.0, 0.0, 0.0, 0.0], np.float32)
    kernel = np.outer(direction, np.linspace(1, 2, 8)).astype(np.float32)
    v["params"]["hidden_0"]["kernel"] = jnp.stack([kernel, 3 * kernel])
    kernel_fn = first_layer_kernel(model)
    np.testing.assert_allclose(kernel_fn(jax.tree.map(lambda a: a[0], v)), kernel)
    u, ranks = mit.orthop_bases(jax.vmap(kernel_fn)(v), [0.9])
    assert u.shape == (2, 1, 5, 5) and ranks.tolist() == [[1], [1]]
    np.testing.assert_allclose(np.abs(u[:, 0, :, 0]), np.stack([direction] * 2), atol=1e-6)
    np.testing.assert_allclose(u[:, 0, :, 1:], 0.0)


def test_orthop_takes_directions_from_the_learned_change():
    """W = W0 + a rank-one change along input direction e: the bases of W - W0 are e alone,
    while those of W itself are dominated by the random initialisation."""
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(20, 64)).astype(np.float32)
    e = np.zeros(20, np.float32)
    e[3] = 1.0
    w = w0 + np.outer(e, 0.5 * rng.normal(size=64)).astype(np.float32)
    u, ranks = mit.orthop_bases(np.stack([w - w0]), [0.9])
    assert ranks.tolist() == [[1]]
    np.testing.assert_allclose(np.abs(u[0, 0, :, 0]), e, atol=1e-5)
    u_full, ranks_full = mit.orthop_bases(np.stack([w]), [0.9])
    assert ranks_full[0, 0] > 10  # the full kernel: mostly random init directions


def test_initial_variables_are_the_sweeps_starting_point():
    from sbjax.train import initial_variables

    model = make_model({"name": "fcn", "width": 16, "depth": 1})
    x = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    cfg = TrainConfig(optimizer="sgd", lr=1e-12, batch_size=16, max_steps=1, eval_every=1)
    r = train_sweep(cfg, model, (x, y), None, n_seeds=3, seed=7, progress=False)
    init = initial_variables(model, x, 7, range(3))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), r.params, init)


def _lms(n=400, seed=0):
    ds = make_dataset("lms", d=10, k=5)
    x, y = map(np.asarray, ds.sample(jax.random.key(seed), n))
    return ds, R.as_basis(ds), x, y


def test_randomize_s_permutes_only_s():
    ds, basis, x, y = _lms()
    xr = mit.randomize_s(x, basis, np.random.default_rng(0))
    z, zr = np.asarray(ds.to_canonical(x)), np.asarray(ds.to_canonical(xr))
    np.testing.assert_allclose(zr[:, 1:], z[:, 1:], atol=1e-5)  # S^c untouched
    np.testing.assert_allclose(np.sort(zr[:, 0]), np.sort(z[:, 0]), atol=1e-5)  # S's values kept
    agree = np.mean((zr[:, 0] > 0) == (y == 1))
    assert 0.4 < agree < 0.6  # S no longer predicts the label


def test_reversed_and_decorrelated_sets():
    ds, basis, x, y = _lms()
    z = np.asarray(ds.to_canonical(x))
    assert np.all((z[:, 0] > 0) == (y == 1))  # LMS: S's sign is the label
    zr = np.asarray(ds.to_canonical(mit.reverse_s(x, y, basis, np.random.default_rng(0))))
    assert np.all((zr[:, 0] > 0) == (y == 0))  # reversed: S points to the other class
    np.testing.assert_allclose(zr[:, 1:], z[:, 1:], atol=1e-5)
    xd = mit.decorrelate(x, y, basis, 0.95, np.random.default_rng(0))
    zd = np.asarray(ds.to_canonical(xd))
    assert np.mean((zd[:, 0] > 0) == (y == 1)) == pytest.approx(0.95, abs=1 / len(y))
    assert mit.decorrelate(x, y, basis, 1.0, np.random.default_rng(0)) is x


def test_select_takes_the_best_validation_member_and_marks_failures():
    members = [
        {k: np.array([0.6, 0.7, 0.5]) for k in mit.METRICS},
        {k: np.array([0.9, 0.7, 0.4]) for k in mit.METRICS},
    ]
    members[1]["test_acc"] = np.array([0.1, 0.2, 0.3])
    choice, chosen = mit.select(members, [0, 1], np.array([False, False, True]))
    assert choice.tolist() == [1, 0, 0]  # ties -> the first member
    np.testing.assert_allclose(chosen["test_acc"][:2], [0.1, 0.7])
    assert np.isnan(chosen["test_acc"][2])
    # a row restricted to its new model (D-BAT, OrthoP) never reports member 0
    choice, chosen = mit.select(members, [1], np.zeros(3, bool))
    assert choice.tolist() == [1, 1, 1]
    np.testing.assert_allclose(chosen["test_acc"], [0.1, 0.2, 0.3])
    # the source rule reads its own validation metric
    members[0]["source_val_acc"] = np.array([1.0, 1.0, 1.0])
    choice, _ = mit.select(members, [0, 1], np.zeros(3, bool), by="source_val_acc")
    assert choice.tolist() == [0, 0, 0]


def test_grid_point_with_failed_seeds_is_not_chosen():
    chosen = {"val_acc": np.array([[0.9, 0.6, np.nan], [np.nan, 0.6, np.nan], [np.nan, 0.7, 0.99]])}
    n_used, means = mit.grid_scores(chosen, "val_acc", 3, 3)
    assert n_used.tolist() == [1, 3, 1]
    assert mit.best_grid_point(n_used, means) == 1  # not point 2 (one lucky seed of three)


def test_at_grid_edge():
    pts = [{"lambda": v} for v in (0.1, 1.0, 10.0)]
    assert [mit.at_grid_edge("grad_diversity", pts, b) for b in range(3)] == [True, False, True]
    assert mit.at_grid_edge("erm", [{}], 0) is None
    assert mit.at_grid_edge("grad_diversity", pts, 0, scores=[0.5, 0.5, 0.5]) is None  # a tie


def _rec(method, per_seed, train=1.0, selection="target_val"):
    """A minimal summary record: s_rand_acc / worst_group_acc per seed, every seed used."""
    per_seed = [float(v) for v in per_seed]
    m = {"mean": float(np.mean(per_seed)), "per_seed": per_seed}
    return {
        "dataset": "lms5",
        "correlation": 1.0,
        "selection": selection,
        "method": method,
        "seed_status": ["ok"] * len(per_seed),
        "metrics": {
            "s_rand_acc": dict(m),
            "worst_group_acc": dict(m),
            "train_acc": {"mean": train, "per_seed": [train] * len(per_seed)},
        },
    }


def test_delta_vs_erm_is_the_paired_t_interval_and_rows_are_labelled():
    from scipy import stats as st

    rng = np.random.default_rng(3)
    erm, other = rng.uniform(0.4, 0.6, 10), rng.uniform(0.6, 0.9, 10)
    recs = [
        _rec("erm", erm),
        _rec("dbat", other),
        _rec("jtt", other, train=0.7),
        _rec("ceiling", np.full(10, 0.99)),
    ]
    mit.finish_dataset(recs, mit.PRESETS["quick"].lms5)
    d = other - erm
    half = st.t.ppf(0.975, 9) * d.std(ddof=1) / np.sqrt(10)
    got = recs[1]["delta_vs_erm"]["s_rand_acc"]
    assert got["mean"] == pytest.approx(d.mean())
    np.testing.assert_allclose(got["ci95"], [d.mean() - half, d.mean() + half], rtol=1e-10)
    assert [r["report"] for r in recs] == ["ok", "ok", "did not fit", "ok"]
    assert all(r["ceiling_reached"] for r in recs)
    # a ceiling below the recipe's bar: no method row is a number
    recs = [_rec("erm", erm), _rec("dbat", other), _rec("ceiling", np.full(10, 0.6))]
    mit.finish_dataset(recs, mit.PRESETS["quick"].lms5)
    assert [r["report"] for r in recs] == ["n/a: ceiling not reached"] * 2 + ["ok"]
    assert recs[0]["ceiling_reached"] is False
    # a row whose models all failed says so
    failed = _rec("sam", [np.nan] * 10)
    failed["status"] = "all models failed"
    failed["metrics"]["train_acc"]["mean"] = None
    recs = [_rec("erm", erm), failed, _rec("ceiling", np.full(10, 0.99))]
    mit.finish_dataset(recs, mit.PRESETS["quick"].lms5)
    assert recs[1]["report"] == "all models failed"


def test_dfr_refit_matches_scikit_learn():
    """DFR's head = the mean over group-balanced subsets of scikit-learn's L2 logistic
    regression (C = 1 / (m l2)) on the refit set's standardized features."""
    from sklearn.linear_model import LogisticRegression

    from sbjax.eval import dfr_logits, dfr_refit, group_balanced_subsets

    rng = np.random.default_rng(0)
    n, h, l2 = 600, 8, 1e-2
    y = rng.integers(0, 2, n)
    groups = 2 * y + rng.integers(0, 2, n)
    feats = (rng.normal(size=(n, h)) + 0.7 * y[:, None] * np.linspace(0, 1, h)).astype(np.float32)
    feats[:, 2] = 3.0 * feats[:, 2] + 5.0
    subsets = group_balanced_subsets(groups, 3, np.random.default_rng(1))
    m = subsets.shape[1]
    assert m == 4 * np.bincount(groups).min()
    for sub in subsets:  # every group equally often, no row twice
        assert len(set(sub.tolist())) == m
        assert np.all(np.bincount(groups[sub], minlength=4) == m // 4)
    head = dfr_refit(jnp.asarray(feats), jnp.asarray(y), jnp.asarray(subsets), l2)
    assert bool(head.converged)
    z = (feats - feats.mean(0)) / feats.std(0)
    ws, bs = [], []
    for sub in subsets:
        clf = LogisticRegression(C=1.0 / (m * l2), tol=1e-10, max_iter=10_000)
        clf.fit(z[sub], y[sub])
        ws.append(clf.coef_[0])
        bs.append(clf.intercept_[0])
    np.testing.assert_allclose(head.w, np.mean(ws, 0), rtol=2e-3, atol=2e-4)
    assert float(head.b) == pytest.approx(np.mean(bs), abs=2e-4)
    logits = np.asarray(dfr_logits(head, jnp.asarray(feats)))
    np.testing.assert_allclose(
        logits[:, 1] - logits[:, 0], z @ np.mean(ws, 0) + np.mean(bs), atol=2e-3
    )
    with pytest.raises(ValueError, match="groups"):
        group_balanced_subsets(np.array([0, 0, 1]), 2, rng)


def test_bad_options_name_the_parameter(tmp_path):
    with pytest.raises(ValueError, match="methods"):
        mit.main(["--preset", "smoke", "--methods", "erm,magic", "--out", str(tmp_path / "a")])
    with pytest.raises(ValueError, match="correlation"):
        mit.main(["--preset", "smoke", "--correlation", "0.2", "--out", str(tmp_path / "b")])
    with pytest.raises(ValueError, match="grids.jtt"):
        mit.main(["--preset", "smoke", "--set", "grids.jtt=[0.5]", "--out", str(tmp_path / "c")])
    assert not (tmp_path / "a").exists()


def _run(tmp_path, methods):
    out = tmp_path / "run"
    summary = mit.main(
        ["--preset", "smoke", "--methods", methods, "--out", str(out), "--no-progress"]
    )
    return out, summary


def test_smoke_run_records_and_figures(tmp_path):
    out, summary = _run(tmp_path, "erm,jtt,dbat,orthop")
    rows = [(r["method"], r["selection"]) for r in summary["results"]]
    assert rows == [(m, s) for m in ("erm", "jtt", "dbat", "orthop") for s in mit.SELECTIONS]
    recs = {r["method"]: r for r in summary["results"] if r["selection"] == "target_val"}
    for r in summary["results"]:
        assert r["report"] in ("ok", "did not fit", "n/a: ceiling not reached")
        assert r["ceiling_reached"] is None  # no ceiling row in this run
        assert ("delta_vs_erm" in r) == (r["method"] != "erm")
    for m, r in recs.items():
        assert r["experiment"] == "mitigation" and r["dataset"] == "lms5"
        assert r["model"] == "fcn_100x1" and r["n_seeds"] + r["n_failed"] == 2
        assert set(r["metrics"]) == set(mit.METRICS)
        assert len(r["metrics"]["reversed_acc"]["per_seed"]) == 2
        assert ("members" in r) == (m in mit.MULTI_MEMBER)
    assert set(recs["dbat"]["members"]) == {"member_0", "member_1", "ensemble"}
    assert recs["jtt"]["hparams"] == {"upweight": 20.0}
    assert recs["orthop"]["hparams"] == {"threshold": 0.9}
    assert len(recs["orthop"]["projection_rank"]) == 2
    # D-BAT's / OrthoP's member 0 is the ERM model of the same seed and every method shares
    # the (dataset, seed) evaluation key: identical numbers, randomized metrics included.
    for m in ("dbat", "orthop"):
        for k in ("test_acc", "s_rand_acc", "sc_rand_acc", "s_rand_auc", "worst_group_acc"):
            assert (
                recs[m]["members"]["member_0"][k]["per_seed"]
                == recs["erm"]["metrics"][k]["per_seed"]
            )
        assert recs[m]["selected_member"] == [1, 1]  # the row is the new model
        assert recs[m]["best_member_erm_allowed"]["n"] == 2
    saved = json.loads((out / "summary.json").read_text())
    assert saved["results"][0]["method"] == "erm"
    assert all(r["correlation"] == 1.0 for r in saved["results"])
    assert all(r["group_sizes"][0] == r["group_sizes"][2] == 0 for r in saved["results"])
    for name in (
        "mitigation_s_rand_heatmap.png",
        "mitigation_s_vs_sc_lms5.png",
        "mitigation_delta_lms5.png",
    ):
        assert (out / name).stat().st_size > 1000
        assert (out / "figures" / (name[:-4] + ".json")).exists()


@pytest.mark.slow
def test_smoke_run_every_method(tmp_path):
    _, summary = _run(tmp_path, ",".join(mit.METHODS))
    assert [r["method"] for r in summary["results"]] == list(mit.METHODS)


@pytest.mark.parametrize("name", sorted(mit.PRESETS))
def test_every_preset_passes_its_checks(name):
    mit.check_preset(mit.PRESETS[name])


def test_correlation_axis_records_groups_and_the_group_dro_comparison(tmp_path):
    """--correlations: one record per (method, correlation) from one sweep per method, with
    worst-group accuracy, the training groups' sizes (exact flip counts) and the paired
    comparison against Group DRO; the figure against the correlation is written."""
    out = tmp_path / "run"
    argv = ["--preset", "smoke", "--methods", "erm,group_dro,lff,jtt,dfr,ceiling"]
    s = mit.main([*argv, "--correlations", "1.0,0.9", "--out", str(out), "--no-progress"])
    recs = s["results"]
    recs = [r for r in recs if r["selection"] == "target_val"]
    keys = [(r["method"], r.get("correlation")) for r in recs]
    want = [(m, c) for m in ("erm", "group_dro", "lff", "jtt", "dfr") for c in (1.0, 0.9)]
    assert keys == [*want, ("ceiling", None)]
    n = 2000  # the smoke preset's training set
    for r in recs:
        assert "worst_group_acc" in r["metrics"] and r["n_total"] == 2
        sizes = r["group_sizes"]
        assert sum(sizes) == n
        if r.get("correlation") == 0.9:
            assert sizes[0] + sizes[2] == 200  # S disagrees on exactly round(0.1 n) rows
        if r.get("correlation") == 1.0:
            assert sizes[0] == sizes[2] == 0
        w = r["metrics"]["worst_group_acc"]["per_seed"]
        t = r["metrics"]["test_acc"]["per_seed"]
        rev = r["metrics"]["reversed_acc"]["per_seed"]
        assert all(a <= min(b, c) + 1e-12 for a, b, c in zip(w, t, rev, strict=True))
    vs = s["versus_group_dro"]
    assert {(v["method"], v["correlation"]) for v in vs} >= {("erm", 1.0), ("lff", 0.9)}
    assert all(v["worst_group_acc"]["n"] == 2 for v in vs if v["method"] == "erm")
    assert (out / "mitigation_vs_correlation_lms5.png").stat().st_size > 1000


def test_correlation_axis_refuses_methods_without_it(tmp_path):
    with pytest.raises(ValueError, match="methods that take --correlations"):
        mit.main(
            ["--preset", "smoke", "--methods", "erm,sam", "--correlations", "1.0,0.9",
             "--out", str(tmp_path / "a")]
        )  # fmt: skip
    assert not (tmp_path / "a").exists()
