"""The training objective seam (sbjax.train.objective): today's numbers through the new path,
penalties against their formulas, traced strengths, example weights, the unlabeled stream,
coupled units, sequential stages, SAM and the batch transform."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sbjax.models import make_model
from sbjax.train import TrainConfig, make_trainer, prepare_data, train_sweep
from sbjax.train import objective as obj
from sbjax.train.adversarial import pgd_transform
from sbjax.train.objective import per_example_loss


def _data(n=200, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).astype(np.int32)
    return x, y


def _images(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 8, 8, 3)).astype(np.float32)
    y = (x[:, :4].mean((1, 2, 3)) > x[:, 4:].mean((1, 2, 3))).astype(np.int32)
    return x, y


FCN = make_model({"name": "fcn", "width": 16, "depth": 1})
CFG = TrainConfig(lr=0.1, batch_size=64, max_steps=30, eval_every=10, stop_rule="none")


def _close(a, b, **kw):
    chex.assert_trees_all_close(
        jax.tree_util.tree_map(np.asarray, a), jax.tree_util.tree_map(np.asarray, b), **kw
    )


def _hp(cfg, objective=None, **over):
    hp = {k: jnp.float32(v) for k, v in cfg.default_hparams(objective).items()}
    hp.update({k: jnp.float32(v) for k, v in over.items()})
    return hp


# ------------------------------------------------------------------------------------------------
# K = 1, no objective: the numbers of the engine before the seam (sums of the final parameters of
# 2 seeds and the train-loss history, computed with commit 3d249d7 on this problem; they were
# bit-identical on the machine that recorded them).

REFERENCE = {
    "sgd": {
        "params": {
            "['params']['head']['bias']": [-0.26268383860588074, 0.299334280192852],
            "['params']['head']['kernel']": [-0.5013174214400351, -0.5361917178579461],
            "['params']['hidden_0']['bias']": [1.0217274588067085, -0.5950144721427932],
            "['params']['hidden_0']['kernel']": [1.9965509867761284, -3.457745026331395],
        },
        "train_loss": [
            [0.38700059056282043, 0.284111887216568, 0.20723770558834076],
            [0.514645516872406, 0.43393778800964355, 0.3390437364578247],
        ],
    },
    "adam": {
        "params": {
            "['params']['head']['bias']": [-0.2635288033634424, 0.3002811521291733],
            "['params']['head']['kernel']": [-0.5029227780178189, -0.5377205340191722],
            "['params']['hidden_0']['bias']": [0.5710737649351358, -0.9516360247507691],
            "['params']['hidden_0']['kernel']": [1.4199748749379069, -3.342659519985318],
        },
        "train_loss": [
            [0.5546112656593323, 0.49815571308135986, 0.4534265995025635],
            [0.59832364320755, 0.5622988939285278, 0.5333966612815857],
        ],
    },
    "rmsprop": {
        "params": {
            "['params']['head']['bias']": [-0.26354944333434105, 0.3003206327557564],
            "['params']['head']['kernel']": [-0.5029690265655518, -0.5379582341993228],
            "['params']['hidden_0']['bias']": [2.0675837341696024, 0.30600169859826565],
            "['params']['hidden_0']['kernel']": [1.0424663052763208, -3.1686591431498528],
        },
        "train_loss": [
            [0.39134833216667175, 0.2815529704093933, 0.22205457091331482],
            [0.48287642002105713, 0.37793099880218506, 0.3005640506744385],
        ],
    },
    "adv_l2": {
        "params": {
            "['params']['head']['bias']": [-0.26354944705963135, 0.3003206104040146],
            "['params']['head']['kernel']": [-0.5029691429808736, -0.5379583374597132],
            "['params']['hidden_0']['bias']": [0.22595675196498632, -0.963068193406798],
            "['params']['hidden_0']['kernel']": [1.6335728947306052, -2.8762123628985137],
        },
        "train_loss": [
            [0.6073683500289917, 0.5673605799674988],
            [0.643500566482544, 0.6119750142097473],
        ],
    },
}

REF_CASES = {
    "sgd": dict(
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        batch_size=64,
        max_steps=30,
        eval_every=10,
        stop_rule="none",
        lr_boundaries=(2,),
        lr_decay=0.2,
    ),
    "adam": dict(
        optimizer="adam",
        lr=0.01,
        weight_decay=1e-4,
        batch_size=64,
        max_steps=30,
        eval_every=10,
        stop_rule="none",
        lr_boundaries=(1, 3),
        lr_decay=0.5,
    ),
    "rmsprop": dict(
        optimizer="rmsprop", lr=0.003, batch_size=64, max_steps=30, eval_every=10, stop_rule="none"
    ),
    "adv_l2": dict(
        lr=0.1,
        batch_size=64,
        max_steps=20,
        eval_every=10,
        stop_rule="none",
        adv_norm="l2",
        adv_eps=0.5,
        adv_steps=3,
        adv_step_frac=0.5,
        select_metric="val_robust_acc",
    ),
}


# small_cnn (BatchNorm) with Linf PGD in train-mode BN (statistics threaded through the attack
# passes), 16 x 8x8x3 images per batch, 2 seeds; recorded like REFERENCE.
REFERENCE_BN = {
    "params": {
        "['batch_stats']['bn_0']['mean']": [-0.15605861134827137, -0.49002163857221603],
        "['batch_stats']['bn_0']['var']": [0.35922421514987946, 0.3621406555175781],
        "['batch_stats']['bn_1']['mean']": [-0.2823506756685674, 0.16175903007388115],
        "['batch_stats']['bn_1']['var']": [0.8642544448375702, 1.036498710513115],
        "['batch_stats']['bn_2']['mean']": [-0.5168686136603355, 0.5820473432540894],
        "['batch_stats']['bn_2']['var']": [1.748743861913681, 1.756407454609871],
        "['batch_stats']['bn_3']['mean']": [0.04409798979759216, -0.0665932446718216],
        "['batch_stats']['bn_3']['var']": [1.6226208209991455, 1.5837076306343079],
        "['params']['bn_0']['bias']": [0.04045103210955858, 0.01870581228286028],
        "['params']['bn_0']['scale']": [1.9999194145202637, 1.999967873096466],
        "['params']['bn_1']['bias']": [0.009995368774980307, -0.009749961318448186],
        "['params']['bn_1']['scale']": [3.9999274015426636, 4.000109136104584],
        "['params']['bn_2']['bias']": [0.024555661308113486, 0.015373543370515108],
        "['params']['bn_2']['scale']": [7.999950528144836, 8.000002443790436],
        "['params']['bn_3']['bias']": [-0.07113268368993886, -0.1320311278104782],
        "['params']['bn_3']['scale']": [7.881434619426727, 7.790609002113342],
        "['params']['conv_0']['kernel']": [-0.597646638401784, -1.5308004533872008],
        "['params']['conv_1']['kernel']": [-1.0300539559684694, 0.9848898928612471],
        "['params']['conv_2']['kernel']": [-3.2246988867991604, 1.1167421105201356],
        "['params']['conv_3']['kernel']": [-2.2640971840082784, -0.31252613801916596],
        "['params']['head']['bias']": [-0.37271519005298615, 0.42471754364669323],
        "['params']['head']['kernel']": [0.013687311671674252, -0.5815453170798719],
    },
    "train_loss": [
        [0.6991580128669739, 0.6942601799964905],
        [0.6864025592803955, 0.6740872263908386],
    ],
}


def test_adversarial_training_with_batchnorm_gives_the_numbers_before_the_seam():
    cfg = TrainConfig(
        lr=0.05,
        momentum=0.9,
        batch_size=16,
        max_steps=6,
        eval_every=3,
        stop_rule="none",
        adv_norm="linf",
        adv_eps=0.03,
        adv_steps=2,
        adv_bounds=(0.0, 1.0),
    )
    model = make_model({"name": "small_cnn", "filters": 2})
    x, y = _images()
    r = train_sweep(cfg, model, (x, y), (x[:32], y[:32]), n_seeds=2, progress=False)
    for path, a in jax.tree_util.tree_leaves_with_path(r.params):
        got = [float(np.asarray(a[i], np.float64).sum()) for i in range(2)]
        np.testing.assert_allclose(
            got, REFERENCE_BN["params"][jax.tree_util.keystr(path)], rtol=2e-6, atol=2e-6
        )
    np.testing.assert_allclose(r.history["train_loss"], REFERENCE_BN["train_loss"], rtol=1e-6)


@pytest.mark.parametrize("case", sorted(REF_CASES))
def test_default_path_gives_the_numbers_of_the_engine_before_the_seam(case):
    cfg = TrainConfig(**REF_CASES[case])
    x, y = _data()
    val = (x[:32], y[:32]) if case.startswith("adv") else None
    r = train_sweep(cfg, FCN, (x, y), val, n_seeds=2, progress=False)
    ref = REFERENCE[case]
    for path, a in jax.tree_util.tree_leaves_with_path(r.params):
        got = [float(np.asarray(a[i], np.float64).sum()) for i in range(2)]
        np.testing.assert_allclose(
            got, ref["params"][jax.tree_util.keystr(path)], rtol=2e-6, atol=2e-6
        )
    np.testing.assert_allclose(r.history["train_loss"], ref["train_loss"], rtol=1e-6)


def test_adversarial_training_through_the_batch_transform_is_the_config_path():
    cfg = TrainConfig(**REF_CASES["adv_l2"])
    x, y = _data()
    val = (x[:32], y[:32])
    a = train_sweep(cfg, FCN, (x, y), val, n_seeds=2, progress=False)
    b = train_sweep(
        cfg,
        FCN,
        (x, y),
        val,
        n_seeds=2,
        progress=False,
        objective=obj.Objective(batch_transform=pgd_transform()),
    )
    _close(a.params, b.params, rtol=0, atol=0)
    np.testing.assert_array_equal(a.history["val_robust_acc"], b.history["val_robust_acc"])
    with pytest.raises(ValueError, match="batch_transform"):
        other = obj.BatchTransform("noise", lambda tr, v, x, y, w, k, hp: (x, v))
        train_sweep(
            cfg, FCN, (x, y), val, objective=obj.Objective(batch_transform=other), progress=False
        )


def test_batch_transform_hook_changes_the_training_batch():
    # A transform that zeroes the inputs: the model can only learn the bias, train acc ~ majority.
    zero = obj.BatchTransform("zero", lambda tr, v, x, y, w, k, hp: (jnp.zeros_like(x), v))
    x, y = _data()
    r = train_sweep(CFG, FCN, (x, y), objective=obj.Objective(batch_transform=zero), progress=False)
    base = train_sweep(CFG, FCN, (x, y), progress=False)
    assert r.history["train_acc"][0, -1] <= max(np.mean(y), 1 - np.mean(y)) + 0.02
    assert base.history["train_acc"][0, -1] > 0.9


# ------------------------------------------------------------------------------------------------
# Penalties: each against its formula on a hand-built context.


def _ctx(k=2, b=5, d=3, seed=0, **kw):
    rng = np.random.default_rng(seed)
    logits = jnp.asarray(rng.normal(size=(k, b, 2)), jnp.float32)
    valid = jnp.asarray([1, 1, 1, 1, 0][:b], jnp.float32)
    w_lin = jnp.asarray(rng.normal(size=(k, d, 2)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(b, d)), jnp.float32)
    base = dict(
        logits=logits,
        data_loss=jnp.zeros((k, b)),
        x=jnp.broadcast_to(x, (k, b, d)),
        y=jnp.asarray(rng.integers(0, 2, b), jnp.int32),
        valid=valid,
        weights=jnp.ones((k, b)),
        params={"w": w_lin},
        variables={"params": {"w": w_lin}},
        apply=lambda p, xx: jnp.einsum("bd,kdc->kbc", xx, p["w"]),
        x_u=None,
        logits_u=None,
        valid_u=None,
        frozen_logits=None,
        frozen_logits_u=None,
        hp={},
        key=jax.random.key(0),
    )
    base.update(kw)
    return obj.Context(**base)


def test_spectral_decoupling_matches_formula():
    ctx = _ctx()
    lg, v = np.asarray(ctx.logits, np.float64), np.asarray(ctx.valid)
    want = sum(np.sum(np.mean(lg[k] ** 2, -1) * v) / v.sum() for k in range(2))
    assert float(obj.spectral_decoupling().fn(ctx)) == pytest.approx(want, rel=1e-5)


def test_spectral_decoupling_targets_matches_formula():
    ctx = _ctx()
    lg, v, y = np.asarray(ctx.logits, np.float64), np.asarray(ctx.valid), np.asarray(ctx.y)
    gamma = np.array([0.5, 2.0])
    want = sum(
        np.sum(np.mean((lg[k] - gamma[y][:, None]) ** 2, -1) * v) / v.sum() for k in range(2)
    )
    got = obj.spectral_decoupling_targets((0.5, 2.0)).fn(ctx)
    assert float(got) == pytest.approx(want, rel=1e-5)


def test_logit_and_weight_norms_match_formula():
    ctx = _ctx()
    lg, v = np.asarray(ctx.logits, np.float64), np.asarray(ctx.valid)
    want = sum(np.sum(np.linalg.norm(lg[k], axis=-1) * v) / v.sum() for k in range(2))
    assert float(obj.logit_norm().fn(ctx)) == pytest.approx(want, rel=1e-5)
    w = np.asarray(ctx.params["w"], np.float64)
    assert float(obj.weight_norm().fn(ctx)) == pytest.approx(0.5 * np.sum(w**2), rel=1e-5)


def test_dbat_matches_formula():
    rng = np.random.default_rng(1)
    lu = rng.normal(size=(2, 7, 2)).astype(np.float32)  # K = 2 members
    fu = rng.normal(size=(1, 7, 2)).astype(np.float32)  # F = 1 frozen member
    valid_u = np.array([1, 1, 1, 1, 1, 1, 0], np.float32)  # the last row is padding
    ctx = _ctx(
        logits_u=jnp.asarray(lu), frozen_logits_u=jnp.asarray(fu), valid_u=jnp.asarray(valid_u)
    )
    sm = lambda a: np.exp(a) / np.exp(a).sum(-1, keepdims=True)
    p, q = sm(lu.astype(np.float64)), sm(fu.astype(np.float64))[0]
    want = sum(np.mean(-np.log(q[:6, 0] * p[k][:6, 1] + q[:6, 1] * p[k][:6, 0])) for k in range(2))
    assert float(obj.dbat_disagreement().fn(ctx)) == pytest.approx(want, rel=1e-4)


def test_member_agreement_matches_formula():
    ctx = _ctx()
    lg, v = np.asarray(ctx.logits, np.float64), np.asarray(ctx.valid)
    dev = lg - lg.mean(0, keepdims=True)
    want = sum(np.sum(np.mean(dev[k] ** 2, -1) * v) / v.sum() for k in range(2))
    assert float(obj.member_agreement().fn(ctx)) == pytest.approx(want, rel=1e-5)


def test_input_gradient_similarity_matches_formula():
    ctx = _ctx(k=3)
    # Linear members: d(logit1 - logit0)/dx = w[:, 1] - w[:, 0], the same for every row.
    w = np.asarray(ctx.params["w"], np.float64)
    g = w[:, :, 1] - w[:, :, 0]
    g = g / np.linalg.norm(g, axis=1, keepdims=True)
    want = sum((g[i] @ g[j]) ** 2 for i in range(3) for j in range(i + 1, 3))
    got = obj.input_gradient_similarity().fn(ctx)
    assert float(got) == pytest.approx(want, rel=1e-4)


def test_objective_rejects_bad_penalties():
    with pytest.raises(ValueError, match="distinct names"):
        obj.Objective(penalties=(obj.logit_norm(), obj.logit_norm()))
    with pytest.raises(ValueError, match="Penalty"):
        obj.Objective(penalties=[obj.logit_norm()])
    with pytest.raises(ValueError, match="grid"):
        train_sweep(CFG, FCN, _data(), grid={"lambda_logit_norm": [1.0]}, progress=False)


# ------------------------------------------------------------------------------------------------
# 1. Penalties in training: traced strengths, plain data loss in evaluation.


def test_penalty_strength_grid_is_one_program_and_evaluation_keeps_the_data_loss():
    x, y = _data()
    sd = obj.Objective(penalties=(obj.spectral_decoupling(),))
    data = jax.tree_util.tree_map(jnp.asarray, prepare_data(CFG, (x, y)))
    trainer = make_trainer(CFG, FCN, data, objective=sd)
    counted = chex.assert_max_traces(lambda k, hp: trainer.train(k, hp, data), n=1)
    f = jax.jit(jax.vmap(counted))
    keys = jax.random.split(jax.random.key(0), 2)
    for lam in (0.0, 1.0):
        hp = {k: jnp.full((2,), v) for k, v in _hp(CFG, sd, lambda_spectral_decoupling=lam).items()}
        jax.block_until_ready(f(keys, hp))

    r = train_sweep(
        CFG,
        FCN,
        (x, y),
        objective=sd,
        grid={"lambda_spectral_decoupling": [0.0, 2.0]},
        progress=False,
    )
    plain = train_sweep(CFG, FCN, (x, y), progress=False)
    # lambda = 0 is the plain objective (to rounding: another program).
    _close(
        jax.tree_util.tree_map(lambda a: a[0], r.params),
        jax.tree_util.tree_map(lambda a: a[0], plain.params),
        rtol=1e-5,
        atol=1e-6,
    )
    # lambda > 0 shrinks the logits.
    lg = [
        np.mean(
            np.asarray(FCN.logits(jax.tree_util.tree_map(lambda a, i=i: a[i], r.params), x)) ** 2
        )
        for i in range(2)
    ]
    assert lg[1] < 0.5 * lg[0]
    # train_loss is the plain data loss of the final parameters, never the penalised objective.
    for i in range(2):
        p = jax.tree_util.tree_map(lambda a, i=i: a[i], r.params)
        ce = float(jnp.mean(per_example_loss(CFG, FCN.logits(p, x), jnp.asarray(y))))
        assert r.history["train_loss"][i, -1] == pytest.approx(ce, rel=1e-5)


# ------------------------------------------------------------------------------------------------
# 2. Example weights.


def test_example_weights_one_update_matches_weighted_loss_and_never_recompile():
    x, y = _data()
    cfg = TrainConfig(lr=0.5, batch_size=64, max_steps=10, eval_every=5, stop_rule="none")
    data = jax.tree_util.tree_map(jnp.asarray, prepare_data(cfg, (x, y)))
    trainer = make_trainer(cfg, FCN, data, has_weights=True)
    rng = np.random.default_rng(0)
    hp = _hp(cfg)
    update = jax.jit(chex.assert_max_traces(trainer.update, n=1))
    for _ in range(2):
        ew = jnp.asarray(rng.uniform(0, 3, size=len(x)), jnp.float32)
        hpw = {**hp, "members": {"example_weights": ew}}
        s0 = trainer.init(jax.random.key(0), hpw, data)
        s1 = update(s0, hpw, data)
        idx, w = trainer._batch_indices(s0.key, s0.step)

        def loss(p, idx=idx, w=w, ew=ew):
            lg = FCN.logits({"params": p}, data.x[idx])
            return jnp.sum(per_example_loss(cfg, lg, data.y[idx]) * w * ew[idx]) / jnp.sum(w)

        g = jax.grad(loss)(s0.variables["params"])
        want = jax.tree_util.tree_map(lambda p, gg: p - 0.5 * gg, s0.variables["params"], g)
        _close(s1.variables["params"], want, rtol=1e-5, atol=1e-6)


def test_example_weights_in_a_sweep_per_model():
    x, y = _data()
    ones = train_sweep(CFG, FCN, (x, y), n_seeds=2, example_weights=np.ones(len(x)), progress=False)
    plain = train_sweep(CFG, FCN, (x, y), n_seeds=2, progress=False)
    _close(ones.params, plain.params, rtol=1e-6, atol=1e-7)
    # Per model: seed 1 ignores every class-1 example and drifts to predicting class 0.
    w = np.ones((2, len(x)), np.float32)
    w[1, y == 1] = 0.0
    r = train_sweep(CFG, FCN, (x, y), n_seeds=2, example_weights=w, progress=False)
    _close(
        jax.tree_util.tree_map(lambda a: a[0], r.params),
        jax.tree_util.tree_map(lambda a: a[0], plain.params),
        rtol=1e-6,
        atol=1e-7,
    )
    pred = np.argmax(
        np.asarray(FCN.logits(jax.tree_util.tree_map(lambda a: a[1], r.params), x)), -1
    )
    assert np.mean(pred == 0) > 0.9
    # New weights of the same shape reuse the compiled programs (JTT's second stage).
    from sbjax.train import sweep as sweep_mod

    n_programs = len(sweep_mod._PROGRAM_CACHE)
    r2 = train_sweep(CFG, FCN, (x, y), n_seeds=2, example_weights=w[::-1].copy(), progress=False)
    assert len(sweep_mod._PROGRAM_CACHE) == n_programs and r2.compile_s < 1.0
    for bad in (-np.ones(len(x)), np.ones(len(x) + 1), np.full(len(x), np.nan)):
        with pytest.raises(ValueError, match="example_weights"):
            train_sweep(CFG, FCN, (x, y), example_weights=bad, progress=False)


# ------------------------------------------------------------------------------------------------
# 3. Unlabeled stream.


def test_unlabeled_stream_order_and_mixing():
    x, y = _data()
    xu = np.random.default_rng(5).normal(size=(96, x.shape[1])).astype(np.float32) + 100.0
    data = prepare_data(CFG, (x, y))
    import dataclasses

    data = jax.tree_util.tree_map(jnp.asarray, dataclasses.replace(data, x_u=xu))
    trainer = make_trainer(CFG, FCN, data, unlabeled_batch_size=32)
    key = jax.random.key(3)
    batch = jax.jit(lambda *a: trainer._unlabeled_batch(*a)[0])
    hp1 = {"unlabeled_mix": jnp.float32(1.0)}
    # One epoch of the pool (3 batches) is a permutation of it; the next epoch reorders it.
    ep0 = np.concatenate([np.asarray(batch(key, jnp.int32(s), hp1, data)) for s in range(3)])
    ep1 = np.concatenate([np.asarray(batch(key, jnp.int32(s), hp1, data)) for s in range(3, 6)])
    for ep in (ep0, ep1):
        np.testing.assert_array_equal(np.sort(ep[:, 0]), np.sort(xu[:, 0]))
    assert not np.array_equal(ep0, ep1)
    # A pool of 80 rows in batches of 32: the third batch has 16 real rows and 16 padded ones.
    d80 = dataclasses.replace(data, x_u=data.x_u[:80])
    t80 = make_trainer(CFG, FCN, d80, unlabeled_batch_size=32)
    _, valid = jax.jit(t80._unlabeled_batch)(key, jnp.int32(2), hp1, d80)
    np.testing.assert_array_equal(np.asarray(valid), [1.0] * 16 + [0.0] * 16)
    # mix 0: rows from the training inputs; mix 0.5: about half from each.
    b0 = np.asarray(batch(key, jnp.int32(0), {"unlabeled_mix": jnp.float32(0.0)}, data))
    assert np.all(b0 < 50)
    frac = np.mean(
        [
            np.mean(
                np.asarray(batch(key, jnp.int32(s), {"unlabeled_mix": jnp.float32(0.5)}, data))[
                    :, 0
                ]
                > 50
            )
            for s in range(20)
        ]
    )
    assert 0.35 < frac < 0.65


def test_unlabeled_pool_reaches_the_penalty_and_mix_is_a_grid_axis():
    x, y = _data()
    xu = np.random.default_rng(5).normal(size=(64, x.shape[1])).astype(np.float32)
    # A penalty on the unlabeled logits only: push them to zero.
    pen = obj.Penalty(
        "u_sq",
        lambda ctx: jnp.sum(ctx.unlabeled_mean(jnp.mean(jnp.square(ctx.logits_u), -1))),
        needs=("unlabeled",),
    )
    o = obj.Objective(penalties=(pen,))
    r = train_sweep(
        CFG,
        FCN,
        (x, y),
        objective=o,
        unlabeled=xu,
        unlabeled_batch_size=16,
        grid={"lambda_u_sq": [0.0, 5.0], "unlabeled_mix": [1.0]},
        progress=False,
    )
    lu = [
        float(
            np.mean(
                np.asarray(FCN.logits(jax.tree_util.tree_map(lambda a, i=i: a[i], r.params), xu))
                ** 2
            )
        )
        for i in range(2)
    ]
    assert lu[1] < 0.3 * lu[0]
    np.testing.assert_allclose(r.hparams["unlabeled_mix"], [1.0, 1.0])
    with pytest.raises(ValueError, match="unlabeled"):
        train_sweep(CFG, FCN, (x, y), objective=o, progress=False)
    with pytest.raises(ValueError, match="unlabeled"):
        train_sweep(CFG, FCN, (x, y), unlabeled=xu[:, :3], progress=False)
    with pytest.raises(ValueError, match="unlabeled_mix"):
        train_sweep(
            CFG,
            FCN,
            (x, y),
            unlabeled=xu,
            unlabeled_batch_size=16,
            grid={"unlabeled_mix": [1.5]},
            progress=False,
        )


# ------------------------------------------------------------------------------------------------
# 4. Coupled units.


def test_unit_without_coupling_member0_equals_independent_member0_and_layout():
    x, y = _data()
    ind = train_sweep(CFG, FCN, (x, y), n_seeds=2, n_members=2, progress=False)
    unit = train_sweep(CFG, FCN, (x, y), n_seeds=2, n_members=2, unit_size=2, progress=False)
    assert unit.unit_size == 2 and unit.n_models == 4
    assert list(unit.member_index) == [0, 1, 0, 1] and list(unit.member_in_unit) == [0, 1, 0, 1]
    assert unit.history["train_loss"].shape == (4, 3)
    # Member 0 of each unit has the key, batch order and init of independent member 0.
    for i in (0, 2):
        _close(
            jax.tree_util.tree_map(lambda a, i=i: a[i], unit.params),
            jax.tree_util.tree_map(lambda a, i=i: a[i], ind.params),
            rtol=1e-5,
            atol=1e-6,
        )
        np.testing.assert_allclose(
            unit.history["train_loss"][i], ind.history["train_loss"][i], rtol=1e-5
        )
    # Member 1 shares the unit's batches but keeps its own initialisation.
    assert not np.allclose(
        unit.params["params"]["head"]["kernel"][1], ind.params["params"]["head"]["kernel"][1]
    )
    v = unit.unit_view(unit.history["train_loss"])
    assert v.shape == (2, 1, 2, 1, 3)
    with pytest.raises(ValueError, match="multiple of unit_size"):
        train_sweep(CFG, FCN, (x, y), n_members=3, unit_size=2, progress=False)


def test_coupled_unit_objective_sees_all_members():
    x, y = _data()
    o = obj.Objective(penalties=(obj.member_agreement(), obj.input_gradient_similarity()))
    r = train_sweep(
        CFG,
        FCN,
        (x, y),
        n_members=3,
        unit_size=3,
        objective=o,
        grid={"lambda_member_agreement": [0.0, 10.0], "lambda_grad_similarity": [0.0]},
        progress=False,
    )
    # Models: member-major then grid: [m0 g0, m0 g1, m1 g0, m1 g1, m2 g0, m2 g1].
    lg = np.stack(
        [
            np.asarray(FCN.logits(jax.tree_util.tree_map(lambda a, i=i: a[i], r.params), x))
            for i in range(6)
        ]
    )
    spread = [np.mean(np.var(lg[g::2], axis=0)) for g in (0, 1)]
    assert spread[1] < 0.2 * spread[0]
    r2 = train_sweep(
        CFG,
        FCN,
        (x, y),
        n_members=2,
        unit_size=2,
        objective=o,
        grid={"lambda_grad_similarity": [1.0]},
        progress=False,
    )
    assert np.all(np.isfinite(r2.history["train_loss"]))


# ------------------------------------------------------------------------------------------------
# 5. Sequential stages: frozen members, init variables, checkpoints and resume.


def test_stages_dbat_against_frozen_member_with_resume(tmp_path):
    x, y = _data()
    xu = np.random.default_rng(7).normal(size=(64, x.shape[1])).astype(np.float32)
    s1 = train_sweep(CFG, FCN, (x, y), n_seeds=2, progress=False)
    o = obj.Objective(penalties=(obj.dbat_disagreement(default=1.0),))
    frozen = jax.tree_util.tree_map(lambda a: a[:, None], s1.params)  # [M, F=1, ...]
    kw = dict(
        n_seeds=2,
        objective=o,
        unlabeled=xu,
        unlabeled_batch_size=32,
        frozen=frozen,
        progress=False,
        seed=1,
    )
    s2 = train_sweep(CFG, FCN, (x, y), **kw)
    # Disagreement on the unlabeled pool with the frozen member of the same seed.
    for i in range(2):
        p1 = np.argmax(
            np.asarray(FCN.logits(jax.tree_util.tree_map(lambda a, i=i: a[i], s1.params), xu)), -1
        )
        p2 = np.argmax(
            np.asarray(FCN.logits(jax.tree_util.tree_map(lambda a, i=i: a[i], s2.params), xu)), -1
        )
        assert np.mean(p1 != p2) > 0.2
    # Killed after one chunk and resumed: the same numbers.
    out = tmp_path / "stage2"
    train_sweep(CFG, FCN, (x, y), out_dir=out, periods_per_chunk=1, max_chunks=1, **kw)
    res = train_sweep(CFG, FCN, (x, y), out_dir=out, resume=True, **kw)
    _close(res.params, s2.params, rtol=0, atol=0)
    # Another frozen member is another fingerprint.
    with pytest.raises(ValueError, match="objective"):
        train_sweep(
            CFG,
            FCN,
            (x, y),
            out_dir=out,
            resume=True,
            **{**kw, "frozen": jax.tree_util.tree_map(lambda a: a + 1.0, frozen)},
        )
    with pytest.raises(ValueError, match="frozen"):
        train_sweep(CFG, FCN, (x, y), n_seeds=2, objective=o, unlabeled=xu, progress=False)
    # Shared frozen members [F, ...]: both stage-1 models frozen for every unit.
    shared = train_sweep(
        CFG,
        FCN,
        (x, y),
        n_seeds=1,
        objective=o,
        unlabeled=xu,
        unlabeled_batch_size=32,
        frozen=s1.params,
        progress=False,
    )
    assert np.all(np.isfinite(shared.history["train_loss"]))
    with pytest.raises(ValueError, match="frozen"):
        train_sweep(
            CFG,
            FCN,
            (x, y),
            n_seeds=1,
            objective=o,
            unlabeled=xu,
            frozen={"params": s1.params["params"]["head"]},
            progress=False,
        )


def test_init_variables_start_the_next_stage():
    x, y = _data()
    s1 = train_sweep(CFG, FCN, (x, y), n_seeds=2, progress=False)
    data = jax.tree_util.tree_map(jnp.asarray, prepare_data(CFG, (x, y)))
    trainer = make_trainer(CFG, FCN, data, has_init=True)
    init = jax.tree_util.tree_map(lambda a: jnp.asarray(a[1]), s1.params)
    st = trainer.init(jax.random.key(0), {**_hp(CFG), "members": {"init_variables": init}}, data)
    _close(st.variables, init, rtol=0, atol=0)
    # Through the sweep: the first evaluation of stage 2 starts from stage 1's accuracy.
    s2 = train_sweep(
        CFG,
        FCN,
        (x, y),
        n_seeds=2,
        init_variables=s1.params,
        example_weights=np.ones(len(x)),
        progress=False,
    )
    assert np.all(s2.history["train_acc"][:, 0] >= s1.history["train_acc"][:, -1] - 0.05)
    with pytest.raises(ValueError, match="init_variables"):
        train_sweep(CFG, FCN, (x, y), n_seeds=3, init_variables=s1.params, progress=False)


# ------------------------------------------------------------------------------------------------
# 6. SAM (optax.contrib.sam) with a traced radius.


def test_sam_step_matches_formula_and_rho_is_traced():
    x, y = _data()
    cfg = TrainConfig(
        lr=0.3, batch_size=64, max_steps=4, eval_every=2, stop_rule="none", sam=True, sam_rho=0.1
    )
    data = jax.tree_util.tree_map(jnp.asarray, prepare_data(cfg, (x, y)))
    trainer = make_trainer(cfg, FCN, data)
    update = jax.jit(chex.assert_max_traces(trainer.update, n=1))
    for rho in (0.1, 0.5):
        hp = _hp(cfg, sam_rho=rho)
        s0 = trainer.init(jax.random.key(0), hp, data)
        s1 = update(s0, hp, data)
        idx, w = trainer._batch_indices(s0.key, s0.step)

        def loss(p, idx=idx, w=w):
            lg = FCN.logits({"params": p}, data.x[idx])
            return jnp.sum(per_example_loss(cfg, lg, data.y[idx]) * w) / jnp.sum(w)

        p0 = s0.variables["params"]
        g = jax.grad(loss)(p0)
        gn = optax.tree.norm(g)
        p_adv = jax.tree_util.tree_map(lambda p, gg, r=rho, n=gn: p + r * gg / n, p0, g)
        g_adv = jax.grad(loss)(p_adv)
        want = jax.tree_util.tree_map(lambda p, gg: p - 0.3 * gg, p0, g_adv)
        _close(s1.variables["params"], want, rtol=1e-5, atol=1e-6)
    # In a sweep: rho = 0 is plain SGD.
    r = train_sweep(cfg, FCN, (x, y), grid={"sam_rho": [0.0, 0.2]}, progress=False)
    plain = train_sweep(
        TrainConfig(lr=0.3, batch_size=64, max_steps=4, eval_every=2, stop_rule="none"),
        FCN,
        (x, y),
        progress=False,
    )
    _close(
        jax.tree_util.tree_map(lambda a: a[0], r.params),
        jax.tree_util.tree_map(lambda a: a[0], plain.params),
        rtol=1e-5,
        atol=1e-6,
    )
    assert not np.allclose(
        r.params["params"]["head"]["kernel"][0], r.params["params"]["head"]["kernel"][1]
    )


def test_sam_threads_batchnorm_statistics_from_the_clean_pass():
    model = make_model({"name": "small_cnn", "filters": 2})
    x, y = _images(16)
    kw = dict(lr=0.1, momentum=0.9, batch_size=8, max_steps=2, eval_every=1, stop_rule="none")
    cfg_sam, cfg = TrainConfig(**kw, sam=True, sam_rho=0.05), TrainConfig(**kw)
    data = jax.tree_util.tree_map(jnp.asarray, prepare_data(cfg, (x, y)))
    t_sam, t = make_trainer(cfg_sam, model, data), make_trainer(cfg, model, data)
    s_sam = t_sam.init(jax.random.key(0), _hp(cfg_sam), data)
    s = t.init(jax.random.key(0), _hp(cfg), data)
    a = jax.jit(t_sam.update)(s_sam, _hp(cfg_sam), data)
    b = jax.jit(t.update)(s, _hp(cfg), data)
    # The running statistics advance once per update, from the forward pass at the clean params.
    _close(a.variables["batch_stats"], b.variables["batch_stats"], rtol=1e-6, atol=1e-7)
    assert not np.allclose(
        np.asarray(a.variables["params"]["head"]["kernel"]),
        np.asarray(b.variables["params"]["head"]["kernel"]),
    )
    assert all(np.all(np.isfinite(v)) for v in jax.tree_util.tree_leaves(a.variables))


def test_units_with_host_loop_and_lax_map_equal_the_scan_vmap_program():
    x, y = _data()
    o = obj.Objective(penalties=(obj.member_agreement(default=0.5),))
    kw = dict(n_seeds=2, n_members=2, unit_size=2, objective=o, progress=False)
    a = train_sweep(CFG, FCN, (x, y), **kw)
    for other in (dict(loop="host"), dict(vectorize="map")):
        b = train_sweep(CFG, FCN, (x, y), **kw, **other)
        _close(a.params, b.params, rtol=1e-5, atol=1e-5)
        for k in a.history:
            np.testing.assert_allclose(a.history[k], b.history[k], rtol=1e-5, atol=1e-6)


def test_last_layer_retraining_updates_only_the_trainable_parameters():
    x, y = _data()
    s1 = train_sweep(CFG, FCN, (x, y), n_seeds=2, progress=False)
    head = obj.Objective(trainable=("['head']",))
    w = np.where(y == 1, 3.0, 1.0).astype(np.float32)
    s2 = train_sweep(
        CFG,
        FCN,
        (x, y),
        n_seeds=2,
        init_variables=s1.params,
        objective=head,
        example_weights=w,
        progress=False,
    )
    _close(s2.params["params"]["hidden_0"], s1.params["params"]["hidden_0"], rtol=0, atol=0)
    assert not np.allclose(
        s2.params["params"]["head"]["kernel"], s1.params["params"]["head"]["kernel"]
    )
    with pytest.raises(ValueError, match="trainable"):
        obj.Objective(trainable="head")
