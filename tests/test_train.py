"""Training engine: sweep == loop of single runs, no retrace over hyperparameters, per-seed stopping,
optimizer semantics, shuffling, resume."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sbjax.models import make_model
from sbjax.train import TrainConfig, make_train, train_sweep
from sbjax.train.config import expand_grid
from sbjax.train.optim import make_optimizer
from sbjax.train.shuffle import epoch_round_keys, permute_positions


def _data(n=512, d=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).astype(np.int32)
    return x, y


MODEL = make_model({"name": "fcn", "width": 16, "depth": 1})
CFG = TrainConfig(lr=0.1, batch_size=64, max_steps=40, eval_every=10, stop_rule="none")


def _allclose_tree(a, b, **kw):
    chex.assert_trees_all_close(
        jax.tree_util.tree_map(np.asarray, a), jax.tree_util.tree_map(np.asarray, b), **kw
    )


@pytest.mark.parametrize("n", [1, 2, 7, 100, 256, 1000, 50_000])
def test_shuffle_is_a_bijection(n):
    for epoch in range(3):
        rk = epoch_round_keys(jax.random.key(3), epoch)
        p = np.asarray(permute_positions(jnp.arange(n, dtype=jnp.int32), rk, n))
        assert np.array_equal(np.sort(p), np.arange(n))


def test_shuffle_differs_across_epochs_and_keys():
    n = 1000
    pos = jnp.arange(n, dtype=jnp.int32)
    a = permute_positions(pos, epoch_round_keys(jax.random.key(0), 0), n)
    b = permute_positions(pos, epoch_round_keys(jax.random.key(0), 1), n)
    c = permute_positions(pos, epoch_round_keys(jax.random.key(1), 0), n)
    assert np.mean(np.asarray(a) == np.asarray(b)) < 0.05
    assert np.mean(np.asarray(a) == np.asarray(c)) < 0.05
    # Roughly uniform: the first batch's indices spread over the whole range.
    assert np.asarray(a[:128]).std() > 0.2 * n


def test_shuffle_is_close_to_uniform():
    # Where position 0 lands, over 2000 keys, for n = 10: each index ~ 200 times.
    n = 10
    keys = jax.random.split(jax.random.key(0), 2000)
    first = jax.vmap(
        lambda k: permute_positions(jnp.zeros((1,), jnp.int32), epoch_round_keys(k, 0), n)[0]
    )(keys)
    counts = np.bincount(np.asarray(first), minlength=n)
    chi2 = np.sum((counts - 200.0) ** 2 / 200.0)
    assert chi2 < 30, counts  # 9 dof: p ~ 4e-4 under uniformity


def test_sweep_equals_loop_of_single_runs():
    x, y = _data()
    sweep = train_sweep(CFG, MODEL, (x, y), n_seeds=3, seed=5, progress=False)
    hp = {k: jnp.float32(v) for k, v in CFG.default_hparams().items()}
    train = jax.jit(make_train(CFG, MODEL, (x, y)))
    for s in range(3):
        single = train_sweep(CFG, MODEL, (x, y), seed_indices=[s], seed=5, progress=False)
        one = jax.tree_util.tree_map(lambda a, s=s: a[s], sweep.params)
        _allclose_tree(
            jax.tree_util.tree_map(lambda a: a[0], single.params), one, atol=1e-6, rtol=1e-6
        )
        np.testing.assert_allclose(
            single.history["train_loss"][0], sweep.history["train_loss"][s], rtol=1e-6
        )
        # The pure one-seed program of make_train gives the same model.
        key_s = jax.random.fold_in(jax.random.fold_in(jax.random.key(5), s), 0)
        state, hist = train(key_s, hp)
        _allclose_tree(one, state.variables, atol=1e-6, rtol=1e-6)
        np.testing.assert_allclose(sweep.history["train_loss"][s], hist["train_loss"], rtol=1e-6)
    # Different seeds train different models: no parameter value is shared.
    for leaf in jax.tree_util.tree_leaves(sweep.params):
        flat = np.asarray(leaf).reshape(3, -1)
        assert not np.any(flat[0] == flat[1]) and not np.any(flat[1] == flat[2])


def test_grid_is_traced_no_retrace():
    x, y = _data()
    train = make_train(CFG, MODEL, (x, y))
    counted = chex.assert_max_traces(train, n=1)
    f = jax.jit(jax.vmap(counted))
    keys = jax.random.split(jax.random.key(0), 2)
    for lr, wd, mom in [(0.1, 0.0, 0.0), (0.01, 5e-4, 0.9)]:
        hp = {k: jnp.full((2,), v, jnp.float32) for k, v in CFG.default_hparams().items()}
        hp.update(
            lr=jnp.full((2,), lr), weight_decay=jnp.full((2,), wd), momentum=jnp.full((2,), mom)
        )
        jax.block_until_ready(f(keys, hp))


def test_grid_sweep_orders_models_seed_major_and_shares_keys_across_grid():
    x, y = _data()
    grid = {"lr": [0.0001, 0.3]}
    r = train_sweep(CFG, MODEL, (x, y), n_seeds=2, grid=grid, progress=False)
    assert r.n_models == 4
    np.testing.assert_allclose(r.hparams["lr"], [0.0001, 0.3, 0.0001, 0.3], rtol=1e-6)
    assert list(r.seed_index) == [0, 0, 1, 1] and list(r.grid_index) == [0, 1, 0, 1]
    # A tiny learning rate barely learns; a big one does.
    acc = r.history["train_acc"][:, -1]
    assert acc[1] > acc[0] and acc[3] > acc[2]
    assert expand_grid({"lr": [1, 2], "momentum": [0, 0.9]})[2] == {"lr": 2, "momentum": 0}


def test_per_seed_stopping_masks_updates_and_records_reason():
    x, y = _data(n=512)
    cfg = TrainConfig(
        lr=0.5,
        batch_size=64,
        max_steps=400,
        eval_every=10,
        stop_rule="acc",
        stop_eps=0.05,
        patience=1,
    )
    r = train_sweep(cfg, MODEL, (x, y), n_seeds=2, grid={"lr": [1e-6, 0.5]}, progress=False)
    slow, fast = 0, 1
    assert r.stop_reason[fast] == "converged" and r.stop_reason[slow] == "max_steps"
    assert r.stop_step[fast] < 400 and r.stop_step[slow] == 400
    # After stopping, the model is frozen: its train loss never changes again.
    hist = r.history["train_loss"][fast]
    k = int(np.argmax(r.history["updates"][fast] == r.stop_step[fast]))
    assert np.all(hist[k:] == hist[k])
    assert r.history["train_acc"][fast, k] >= 0.95


def test_patience_counts_like_the_reference():
    x, y = _data(n=512)
    base = dict(lr=0.5, batch_size=64, max_steps=400, eval_every=10, stop_rule="acc", stop_eps=0.05)
    r1 = train_sweep(TrainConfig(**base, patience=1), MODEL, (x, y), progress=False)
    r25 = train_sweep(TrainConfig(**base, patience=25), MODEL, (x, y), progress=False)
    assert r25.stop_step[0] == r1.stop_step[0] + 24


def test_divergence_is_flagged():
    x, y = _data()
    x = x * 1e4
    cfg = TrainConfig(lr=1e6, batch_size=64, max_steps=100, eval_every=10, stop_rule="acc")
    r = train_sweep(cfg, MODEL, (x, y), progress=False)
    assert r.stop_reason[0] == "diverged"
    assert r.stop_step[0] < 100


def test_best_model_selected_on_validation_set():
    x, y = _data(n=512)
    xv, yv = _data(n=256, seed=1)
    cfg = TrainConfig(lr=0.2, batch_size=64, max_steps=100, eval_every=10, stop_rule="none")
    r = train_sweep(cfg, MODEL, (x, y), val=(xv, yv), progress=False)
    e = int(np.argmax(r.history["val_acc"][0][::-1]))  # ties -> later evaluation
    best_eval = r.history["val_acc"].shape[1] - 1 - e
    assert r.best_step[0] == r.history["updates"][0, best_eval]
    logits = MODEL.logits(jax.tree_util.tree_map(lambda a: a[0], r.best_params), xv)
    acc = np.mean(np.argmax(np.asarray(logits), -1) == yv)
    assert acc == pytest.approx(r.history["val_acc"][0].max(), abs=1e-6)


def test_sgd_momentum_and_coupled_weight_decay_match_pytorch_formula():
    cfg = TrainConfig(optimizer="sgd")
    hp = {"lr": jnp.float32(0.1), "momentum": jnp.float32(0.9), "weight_decay": jnp.float32(0.01)}
    tx = make_optimizer(cfg, hp, steps_per_epoch=10)
    theta = {"w": jnp.array([1.0, -2.0])}
    state = tx.init(theta)
    buf = np.zeros(2)
    th = np.array([1.0, -2.0])
    for g in ([0.5, 0.5], [-1.0, 2.0]):
        upd, state = tx.update({"w": jnp.array(g)}, state, theta)
        theta = optax.apply_updates(theta, upd)
        gg = np.array(g) + 0.01 * th
        buf = 0.9 * buf + gg
        th = th - 0.1 * buf
    np.testing.assert_allclose(np.asarray(theta["w"]), th, rtol=1e-6)


def test_lr_schedule_steps_per_epoch():
    cfg = TrainConfig(lr_boundaries=(2,), lr_decay=0.2)
    hp = {"lr": jnp.float32(1.0), "momentum": jnp.float32(0.0), "weight_decay": jnp.float32(0.0)}
    tx = make_optimizer(cfg, hp, steps_per_epoch=3)
    theta = {"w": jnp.array(0.0)}
    state = tx.init(theta)
    steps = []
    for _ in range(8):
        upd, state = tx.update({"w": jnp.array(1.0)}, state, theta)
        steps.append(-float(upd["w"]))
    np.testing.assert_allclose(steps, [1, 1, 1, 1, 1, 1, 0.2, 0.2], rtol=1e-6)


def test_drop_last_changes_steps_per_epoch():
    from sbjax.train import make_trainer, prepare_data

    x, y = _data(n=500)
    for drop, spe in [(False, 8), (True, 7)]:
        cfg = TrainConfig(batch_size=64, drop_last=drop)
        assert make_trainer(cfg, MODEL, prepare_data(cfg, (x, y))).steps_per_epoch == spe


def test_hinge_and_other_optimizers_train():
    x, y = _data()
    for cfg in [
        TrainConfig(
            loss="hinge", lr=0.05, batch_size=64, max_steps=60, eval_every=20, stop_rule="none"
        ),
        TrainConfig(
            optimizer="adam", lr=0.01, batch_size=64, max_steps=60, eval_every=20, stop_rule="none"
        ),
        TrainConfig(
            optimizer="rmsprop",
            lr=0.005,
            batch_size=64,
            max_steps=60,
            eval_every=20,
            stop_rule="none",
        ),
    ]:
        r = train_sweep(cfg, MODEL, (x, y), progress=False)
        assert r.history["train_acc"][0, -1] > 0.85, cfg


def test_resume_after_kill_equals_uninterrupted(tmp_path):
    x, y = _data()
    full = train_sweep(
        CFG, MODEL, (x, y), n_seeds=2, out_dir=tmp_path / "a", periods_per_chunk=1, progress=False
    )
    part = train_sweep(
        CFG,
        MODEL,
        (x, y),
        n_seeds=2,
        out_dir=tmp_path / "b",
        periods_per_chunk=1,
        progress=False,
        max_chunks=2,
    )
    assert part.history["step"].shape[1] == 2
    with pytest.raises(FileExistsError, match="resume"):
        train_sweep(CFG, MODEL, (x, y), n_seeds=2, out_dir=tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="fingerprint"):
        train_sweep(
            CFG, MODEL, (x, y), n_seeds=3, out_dir=tmp_path / "b", resume=True, progress=False
        )
    res = train_sweep(
        CFG,
        MODEL,
        (x, y),
        n_seeds=2,
        out_dir=tmp_path / "b",
        resume=True,
        periods_per_chunk=1,
        progress=False,
    )
    _allclose_tree(full.params, res.params, atol=0, rtol=0)
    for k in full.history:
        np.testing.assert_array_equal(full.history[k], res.history[k])
    from sbjax.io import read_jsonl

    assert len(read_jsonl(tmp_path / "b" / "metrics.jsonl")) == 2 * 4


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"batch_size": 0}, "batch_size"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"stop_rule": "bogus"}, "stop_rule"),
        ({"lr": -1.0}, "lr"),
        ({"momentum": 1.5}, "momentum"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"loss": "mse"}, "loss"),
    ],
)
def test_bad_config_raises_named_error(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TrainConfig(**kwargs)


def test_bad_inputs_raise_before_compiling():
    x, y = _data(n=128)
    with pytest.raises(ValueError, match="batch_size"):
        train_sweep(TrainConfig(batch_size=256), MODEL, (x, y), progress=False)
    with pytest.raises(ValueError, match="grid"):
        train_sweep(CFG, MODEL, (x, y), grid={"width": [1, 2]}, progress=False)
    with pytest.raises(ValueError, match="lr"):
        train_sweep(CFG, MODEL, (x, y), grid={"lr": [0.1, -1]}, progress=False)
    with pytest.raises(ValueError, match="labels"):
        train_sweep(CFG, MODEL, (x, y + 2), progress=False)


def test_pgd_perturb_respects_budget_and_box():
    from sbjax.train.adversarial import pgd_perturb

    x = jax.random.uniform(jax.random.key(0), (32, 6))
    w = jax.random.normal(jax.random.key(1), (6,))
    loss = lambda xa, aux: (jnp.sum(xa @ w), aux)
    for norm in ("l2", "linf"):
        xa, _ = pgd_perturb(
            loss, x, jax.random.key(2), 0.3, norm=norm, steps=10, step_frac=0.25, bounds=(0.0, 1.0)
        )
        d = np.asarray(xa - x)
        size = np.linalg.norm(d, axis=1) if norm == "l2" else np.abs(d).max(axis=1)
        assert size.max() <= 0.3 + 1e-5
        assert np.asarray(xa).min() >= 0.0 and np.asarray(xa).max() <= 1.0
        # Ascent on a linear loss moves along +w (or sign(w)) where the box allows.
        assert float(jnp.sum(xa @ w)) > float(jnp.sum(x @ w))


def test_adversarial_training_eps_grid_is_one_program():
    x, y = _data()
    cfg = TrainConfig(
        lr=0.1,
        batch_size=64,
        max_steps=60,
        eval_every=20,
        stop_rule="none",
        adv_norm="l2",
        adv_steps=3,
        adv_step_frac=0.5,
        select_metric="val_robust_acc",
    )
    r = train_sweep(
        cfg, MODEL, (x, y), val=(x[:128], y[:128]), grid={"adv_eps": [0.0, 0.5]}, progress=False
    )
    rob = r.history["val_robust_acc"][:, -1]
    clean = r.history["val_acc"][:, -1]
    assert np.all(np.isfinite(rob))
    assert rob[0] == pytest.approx(clean[0], abs=0.02)  # eps 0: robust == clean (up to 1e-3 start)
    assert rob[1] < clean[1]


def test_init_scale_multiplies_kernels_and_biases():
    from sbjax.train import make_trainer, prepare_data

    x, y = _data()
    model = make_model({"name": "fcn", "width": 8, "depth": 1, "activation": "prelu"})
    data = prepare_data(CFG, (x, y))
    trainer = make_trainer(CFG, model, data)
    hp = {k: jnp.float32(v) for k, v in CFG.default_hparams().items()}
    s1 = trainer.init(jax.random.key(0), hp, data).variables["params"]
    s3 = trainer.init(jax.random.key(0), {**hp, "init_scale": jnp.float32(3.0)}, data)
    s3 = s3.variables["params"]
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(s1), jax.tree_util.tree_leaves(s3), strict=True
    ):
        name = jax.tree_util.keystr(path)
        factor = 1.0 if "prelu" in name else 3.0  # PReLU slopes keep their 0.25 init
        np.testing.assert_allclose(np.asarray(b), factor * np.asarray(a), rtol=1e-6, err_msg=name)


def test_map_vectorization_equals_vmap():
    x, y = _data()
    a = train_sweep(CFG, MODEL, (x, y), n_seeds=3, progress=False)
    b = train_sweep(CFG, MODEL, (x, y), n_seeds=3, progress=False, vectorize="map")
    _allclose_tree(a.params, b.params, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(a.history["train_loss"], b.history["train_loss"], rtol=1e-5)
    with pytest.raises(ValueError, match="vectorize"):
        train_sweep(CFG, MODEL, (x, y), vectorize="pmap", progress=False)


def test_host_loop_equals_scan():
    x, y = _data()
    a = train_sweep(CFG, MODEL, (x, y), n_seeds=2, progress=False)
    b = train_sweep(CFG, MODEL, (x, y), n_seeds=2, progress=False, loop="host")
    _allclose_tree(a.params, b.params, atol=1e-5, rtol=1e-5)
    for k in a.history:
        np.testing.assert_allclose(a.history[k], b.history[k], rtol=1e-5, atol=1e-6)
    assert a.stop_reason == b.stop_reason


@pytest.mark.parametrize("loop", ["scan", "host"])
def test_progress_bar_moves_per_period_and_closes_when_all_models_stopped(capsys, loop):
    # Separable data: every model converges long before the 4000-update budget, so the bar must
    # end at the update reached and say that all models stopped (not sit at a few percent).
    x, y = _data()
    cfg = TrainConfig(lr=0.5, max_steps=4000, eval_every=50, batch_size=64)
    model = make_model({"name": "fcn", "width": 8})
    r = train_sweep(
        cfg, model, (x, y), n_seeds=2, progress=True, periods_per_chunk=4, loop=loop, desc="bar"
    )
    assert all(s == "converged" for s in r.stop_reason)
    err = capsys.readouterr().err
    assert "all 2 models stopped at update" in err
    stopped_at = int(err.rsplit("stopped at update", 1)[1].split()[0].rstrip("]"))
    assert stopped_at < 4000 and stopped_at % 50 == 0
    counts = {int(t.split("/4000")[0].split()[-1]) for t in err.split("\r") if "/4000" in t}
    if loop == "host":  # the bar advanced within chunks (50, ...), not only per chunk (200, 400)
        assert 50 in counts
    else:
        assert all(c % 200 == 0 for c in counts)
