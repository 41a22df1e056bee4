"""Empirical simulator of Theorem 1's procedure: GD on W with a fresh LSN batch every step.

One seed is written as a pure function and `vmap`-ed over seeds; each distinct `SimConfig` (shapes:
d, k, n, steps) compiles once. Two ways to draw a batch, both with exactly the theorem's law:

* ``method="full"`` samples every coordinate of the n points (``x [n, d]``, in chunks) and takes
  ``jax.grad`` of the batch loss: the literal procedure, cost O(n d k) per step.
* ``method="projected"`` never materialises the d - 2 noise coordinates. For a fresh batch,
  pre-activations depend on the noise only through ``z_i = Q^T x_bar_i ~ N(0, I_k)``, where
  ``W_bar = Q R`` (reduced QR), and ``x_bar_i = Q z_i + r_i`` with ``r_i`` independent of ``z_i``. The
  noise-block gradient ``sum_i x_bar_i C_i`` (``C = dL/dH``, ``[n, k]``) is then
  ``Q Z^T C + P_perp sum_i g_i C_i`` with ``g_i ~ N(0, I)`` i.i.d., and ``sum_i g_i C_i`` given C is a
  Gaussian matrix with column covariance ``C^T C``, drawn as ``H (C^T C)^{1/2}`` with ``H [d-2, k]``
  standard normal. The update has exactly the same distribution as the literal one, at cost
  O(n k^2 + d k^2) per step, which makes long runs (grid G5) and large d cheap.

Fresh test points are drawn the same exact-in-law way for both methods (``h = gamma y w_1 + x_2 w_2
+ z R``), so test metrics on 2e5 points cost O(n_test k^2) whatever d is.

Randomness: seed i uses ``fold_in(key(seed), i)``, and every step draws its batch from
``fold_in(batch_stream, t)``. So seed i of a sweep draws exactly the numbers of a single run with
seed index i; the results are bit-identical for the same program (same shapes, same machine) and
agree to float32 rounding across batch shapes (a sweep and a single run are different programs),
sharding, and CPUs.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sbjax import validate
from theory.setting import (
    TEST_CHUNK,
    SimConfig,
    balanced_v,
    init_weights,
    loss_per_point,
    sample_lsn,
)

__all__ = [
    "SimResult",
    "default_eval_steps",
    "evaluate",
    "simulate",
    "train_step_grad",
]

log = logging.getLogger(__name__)

# named PRNG streams inside one seed; _PERP_TAG names the orthogonal-noise draw inside a step
_INIT, _BATCH, _TEST, _FIXED = 1, 2, 3, 4
_PERP_TAG = 1 << 20
# Sharding the seed axis over the CPU devices sbjax exposes gave no speed-up on the shared 2-core
# machine, and one configuration (16 seeds, d = 128, 20,000 test points) hung inside XLA's CPU
# runtime, so it is opt-in (`simulate(..., shard=True)`); either way every seed sees the same
# draws, and the results agree to float32 rounding (the two are different compiled programs).
DEFAULT_SHARD = False
F32 = jnp.float32

TRAIN_KEYS = (
    "active_frac",
    "loss",
    "margin_mean",
    "margin_std",
    "n_pos",
    "wrong_fire_pos",
    "wrong_fire_neg",
    "agree_pos",
    "agree_neg",
)
EVAL_KEYS = (
    "test_err",
    "test_margin_mean",
    "test_margin_std",
    "s_rand_acc",
    "sc_rand_acc",
    "agree_pos",
    "agree_neg",
    "active_frac",
)


def _unit_stats(w: jax.Array) -> dict[str, jax.Array]:
    """Per-unit |w_1|, |w_2| (signed values kept) and ||w_{3:d}||: each ``[k]``."""
    return {"w1": w[0], "w2": w[1], "wbar": jnp.sqrt(jnp.sum(w[2:] * w[2:], axis=0))}


def _projected_parts(key, b, k):
    """Fresh points in the reduced representation: y, x2 ``[b]`` and z ``[b, k]`` (k = rank)."""
    k_y, k_eps, k_z = jax.random.split(key, 3)
    y = jnp.where(jax.random.bernoulli(k_y, 0.5, (b,)), 1.0, -1.0).astype(F32)
    eps = jnp.where(jax.random.bernoulli(k_eps, 0.5, (b,)), 1.0, -1.0).astype(F32)
    x2 = 0.5 * (y + 1.0) * eps
    z = jax.random.normal(k_z, (b, k), F32)
    return y, x2, z


def _batch_stats(h, y, valid, v, loss_name):
    """Per-chunk sums of the training-batch statistics (h: ``[b, k]`` pre-activations)."""
    f = jax.nn.relu(h) @ v
    m = y * f
    fire = h > 0
    h2 = v.shape[0] // 2  # balanced_v: units [0, k/2) have v > 0, the rest v < 0
    want = (y[:, None] * v[None, :]) > 0
    validf = valid.astype(F32)
    agree = (fire == want).astype(F32) * validf[:, None]
    wrong = (fire & ~want).astype(F32) * validf[:, None]
    return {
        "active_frac": jnp.sum((m < 1.0) * validf),
        "loss": jnp.sum(loss_per_point(f, y, loss_name) * validf),
        "margin_mean": jnp.sum(m * validf),
        "margin_std": jnp.sum(m * m * validf),
        "n_pos": jnp.sum((y > 0) * validf),
        "wrong_fire_pos": jnp.sum(wrong[:, :h2]),
        "wrong_fire_neg": jnp.sum(wrong[:, h2:]),
        "agree_pos": jnp.sum(agree[:, :h2]),
        "agree_neg": jnp.sum(agree[:, h2:]),
    }


def _finish_stats(acc, n, k):
    out = dict(acc)
    out["active_frac"] = acc["active_frac"] / n
    out["loss"] = acc["loss"] / n
    mean = acc["margin_mean"] / n
    out["margin_mean"] = mean
    out["margin_std"] = jnp.sqrt(jnp.maximum(acc["margin_std"] / n - mean * mean, 0.0))
    out["agree_pos"] = acc["agree_pos"] / (n * (k // 2))
    out["agree_neg"] = acc["agree_neg"] / (n * (k // 2))
    return out


def _n_chunks(n, b):
    return (n + b - 1) // b


@dataclasses.dataclass(frozen=True)
class _Static:
    """What shapes the compiled program; everything else (n, eta, gamma, steps, n_test) is traced."""

    d: int
    k: int
    method: str
    loss: str
    batch: str
    init: str
    chunk: int
    buf: int
    n_fixed: int  # padded size of the fixed batch (0 for fresh batches)

    @staticmethod
    def of(cfg: SimConfig) -> _Static:
        b = cfg.train_chunk
        n_fixed = _n_chunks(cfg.n, b) * b if cfg.batch == "fixed" else 0
        return _Static(
            cfg.d, cfg.k, cfg.method, cfg.loss, cfg.batch, cfg.init, b, cfg.buffer_steps, n_fixed
        )


def _grad(st: _Static, n, gamma, w, key, fixed):
    """Batch-loss gradient and statistics at W for one seed (n, gamma traced scalars)."""
    d, k, b = st.d, st.k, st.chunk
    v = balanced_v(k, F32)
    nf = jnp.asarray(n, F32)
    nc = _n_chunks(jnp.asarray(n, jnp.int32), b)
    zero_stats = {name: jnp.zeros((), F32) for name in TRAIN_KEYS}

    def chunk_loss_h(h, y, valid):
        f = jax.nn.relu(h) @ v
        return jnp.sum(loss_per_point(f, y, st.loss) * valid) / nf

    if st.method == "full":

        def body(c, carry):
            g, stats = carry
            if fixed is None:
                x, y = sample_lsn(jax.random.fold_in(key, c), b, d, gamma, F32)
            else:
                x = jax.lax.dynamic_slice_in_dim(fixed[0], c * b, b, axis=0)
                y = jax.lax.dynamic_slice_in_dim(fixed[1], c * b, b, axis=0)
            valid = (c * b + jnp.arange(b)) < n

            def loss_w(w_):
                return chunk_loss_h(x @ w_, y, valid.astype(F32))

            g = g + jax.grad(loss_w)(w)
            new = _batch_stats(x @ w, y, valid, v, st.loss)
            return g, {name: stats[name] + new[name] for name in TRAIN_KEYS}

        g, stats = jax.lax.fori_loop(0, nc, body, (jnp.zeros_like(w), zero_stats))
        return g, _finish_stats(stats, nf, k)

    # projected: exact-in-law reduction (module docstring)
    q, r = jnp.linalg.qr(w[2:], mode="reduced")  # q [d-2, k], r [k, k]

    def body(c, carry):
        g1, g2, ztc, ctc, stats = carry
        y, x2, z = _projected_parts(jax.random.fold_in(key, c), b, k)
        valid = (c * b + jnp.arange(b)) < n
        h = (gamma * y)[:, None] * w[0][None, :] + x2[:, None] * w[1][None, :] + z @ r
        cmat = jax.grad(chunk_loss_h)(h, y, valid.astype(F32))  # dL/dH [b, k]
        g1 = g1 + (gamma * y) @ cmat
        g2 = g2 + x2 @ cmat
        ztc = ztc + z.T @ cmat
        ctc = ctc + cmat.T @ cmat
        new = _batch_stats(h, y, valid, v, st.loss)
        return g1, g2, ztc, ctc, {name: stats[name] + new[name] for name in TRAIN_KEYS}

    init = (
        jnp.zeros((k,), F32),
        jnp.zeros((k,), F32),
        jnp.zeros((k, k), F32),
        jnp.zeros((k, k), F32),
        zero_stats,
    )
    g1, g2, ztc, ctc, stats = jax.lax.fori_loop(0, nc, body, init)
    lam, u = jnp.linalg.eigh(ctc)
    half = jnp.sqrt(jnp.maximum(lam, 0.0))[:, None] * u.T  # half^T half = C^T C
    hmat = jax.random.normal(jax.random.fold_in(key, _PERP_TAG), (d - 2, k), F32)
    perp = hmat @ half
    perp = perp - q @ (q.T @ perp)  # the part of x_bar outside span(W_bar)
    gbar = q @ ztc + perp
    g = jnp.concatenate([g1[None], g2[None], gbar], axis=0)
    return g, _finish_stats(stats, nf, k)


def train_step_grad(
    cfg: SimConfig, w: jax.Array, key: jax.Array, fixed: tuple[jax.Array, jax.Array] | None = None
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Gradient of the batch loss at W ``[d, k]`` and the batch statistics (one seed).

    Args:
      cfg: configuration (uses d, k, n, gamma, loss, method, chunk).
      w: weights ``[d, k]`` float32.
      key: the step's batch key (ignored for a fixed batch).
      fixed: ``(x [n_pad, d], y [n_pad])`` for ``batch="fixed"`` (rows beyond n are ignored).

    Returns:
      (grad ``[d, k]``, dict of scalar statistics, see `TRAIN_KEYS`).
    """
    return _grad(_Static.of(cfg), cfg.n, cfg.gamma, w, key, fixed)


def _evaluate(d, k, n_test, gamma, w, key):
    b = TEST_CHUNK
    v = balanced_v(k, F32)
    h2 = k // 2  # units [0, k/2) have v > 0
    _, r = jnp.linalg.qr(w[2:], mode="reduced")  # r [min(d-2, k), k]
    zdim = min(d - 2, k)
    nc = _n_chunks(jnp.asarray(n_test, jnp.int32), b)

    def body(c, acc):
        y, x2, z = _projected_parts(jax.random.fold_in(key, c), b, zdim)
        valid = ((c * b + jnp.arange(b)) < n_test).astype(F32)
        lin = (gamma * y)[:, None] * w[0][None, :]
        rest = x2[:, None] * w[1][None, :] + z @ r
        h = lin + rest
        f = jax.nn.relu(h) @ v
        m = y * f
        shift = b // 2
        f_s = jax.nn.relu(jnp.roll(lin, shift, axis=0) + rest) @ v
        f_c = jax.nn.relu(lin + jnp.roll(rest, shift, axis=0)) @ v
        want = (y[:, None] * v[None, :]) > 0
        agree = ((h > 0) == want).astype(F32) * valid[:, None]

        def correct(score):
            return jnp.sum(((score > 0) == (y > 0)) * valid)

        new = {
            "test_err": jnp.sum(valid) - correct(f),
            "test_margin_mean": jnp.sum(m * valid),
            "test_margin_std": jnp.sum(m * m * valid),
            "s_rand_acc": correct(f_s),
            "sc_rand_acc": correct(f_c),
            "agree_pos": jnp.sum(agree[:, :h2]),
            "agree_neg": jnp.sum(agree[:, h2:]),
            "active_frac": jnp.sum((m < 1.0) * valid),
        }
        return {name: acc[name] + new[name] for name in EVAL_KEYS}

    acc = jax.lax.fori_loop(0, nc, body, {name: jnp.zeros((), F32) for name in EVAL_KEYS})
    nf = jnp.asarray(n_test, F32)
    out = {name: acc[name] / nf for name in EVAL_KEYS}
    mean = out["test_margin_mean"]
    out["test_margin_std"] = jnp.sqrt(jnp.maximum(out["test_margin_std"] - mean * mean, 0.0))
    out["agree_pos"] = acc["agree_pos"] / (nf * h2)
    out["agree_neg"] = acc["agree_neg"] / (nf * h2)
    return out


def evaluate(
    cfg: SimConfig, w: jax.Array, key: jax.Array, n_test: int | None = None
) -> dict[str, jax.Array]:
    """Test metrics of one network on fresh LSN points (one seed).

    Test points are drawn exactly in law through ``h = gamma y w_1 + x_2 w_2 + z R`` with
    ``W_bar = Q R`` and ``z ~ N(0, I_k)`` (module docstring), whatever d is. S-randomised: x_1 is
    permuted across the test points; S^c-randomised: (x_2, ..., x_d) are permuted jointly (the
    paper's definition). The permutation is a cyclic shift by half a chunk: the points are i.i.d.,
    so it decorrelates exactly like a random permutation and costs O(n).

    Args:
      cfg: configuration (uses d, k, gamma, n_test).
      w: weights ``[d, k]``.
      key: PRNG key of the test points.
      n_test: number of points (default cfg.n_test).

    Returns:
      dict of scalars (`EVAL_KEYS`): test_err, test margin mean/std, S- and S^c-randomised
      accuracy, activation-pattern agreement ``mean[1{w_j . x > 0} = 1{y v_j > 0}]`` per sign of v,
      and the hinge-active fraction ``P(y f < 1)``.
    """
    return _evaluate(cfg.d, cfg.k, cfg.n_test if n_test is None else n_test, cfg.gamma, w, key)


@dataclasses.dataclass
class SimResult:
    """Logs of one simulated configuration, numpy arrays with a leading seed axis S.

    Attributes:
      config: the SimConfig.
      v: second layer ``[k]``.
      units: ``{"w1", "w2", "wbar"}`` -> ``[S, steps + 1, k]`` (signed w1, w2; ||w_{3:d}||) after
        each step (index 0 = init).
      train: `TRAIN_KEYS` -> ``[S, steps]``: statistics of the batch used by update t (at W^(t)).
      eval_steps: ``[E]`` steps at which test metrics were taken.
      eval: `EVAL_KEYS` -> ``[S, E]``.
      seconds: wall time of the simulation (compile included).
    """

    config: SimConfig
    v: np.ndarray
    units: dict[str, np.ndarray]
    train: dict[str, np.ndarray]
    eval_steps: np.ndarray
    eval: dict[str, np.ndarray]
    seconds: float = 0.0

    def flat(self) -> dict[str, np.ndarray]:
        """A flat dict of arrays for `np.savez` (keys ``units/w1``, ``train/loss``, ...)."""
        out = {"v": self.v, "eval_steps": self.eval_steps}
        for group in ("units", "train", "eval"):
            for name, arr in getattr(self, group).items():
                out[f"{group}/{name}"] = arr
        for f in dataclasses.fields(self.config):
            out[f"config/{f.name}"] = np.asarray(getattr(self.config, f.name))
        return out


def default_eval_steps(steps: int, max_points: int = 24) -> tuple[int, ...]:
    """Every step when there are few, else roughly log-spaced steps (0 and ``steps`` included)."""
    if steps + 1 <= max_points:
        return tuple(range(steps + 1))
    grid = np.unique(np.round(np.geomspace(1, steps, max_points - 1)).astype(int))
    return tuple(sorted({0, *grid.tolist(), steps}))


@functools.lru_cache(maxsize=64)
def _compiled(st: _Static):
    """jit(vmap(...)) of init and advance for one static shape (n, eta, gamma traced)."""
    d, k = st.d, st.k

    def init_one(key, n, gamma):
        w = init_weights(jax.random.fold_in(key, _INIT), d, k, st.init, F32)
        units = {name: jnp.zeros((st.buf + 1, k), F32) for name in ("w1", "w2", "wbar")}
        for name, val in _unit_stats(w).items():
            units[name] = units[name].at[0].set(val)
        train = {name: jnp.zeros((st.buf,), F32) for name in TRAIN_KEYS}
        state = {"w": w, "key": key, "units": units, "train": train}
        if st.batch == "fixed":
            x, y = sample_lsn(jax.random.fold_in(key, _FIXED), st.n_fixed, d, gamma, F32)
            state["fixed"] = (x, y)  # rows >= n are masked out by `valid`
        return state

    def advance_one(state, t0, t1, n, eta, gamma):
        batch_stream = jax.random.fold_in(state["key"], _BATCH)

        def body(t, s):
            g, stats = _grad(
                st, n, gamma, s["w"], jax.random.fold_in(batch_stream, t), s.get("fixed")
            )
            w = s["w"] - eta * g
            units = {
                name: s["units"][name].at[t + 1].set(val) for name, val in _unit_stats(w).items()
            }
            train = {name: s["train"][name].at[t].set(stats[name]) for name in TRAIN_KEYS}
            return {**s, "w": w, "units": units, "train": train}

        return jax.lax.fori_loop(t0, t1, body, state)

    return (
        jax.jit(jax.vmap(init_one, in_axes=(0, None, None))),
        jax.jit(jax.vmap(advance_one, in_axes=(0, None, None, None, None, None)), donate_argnums=0),
    )


@functools.lru_cache(maxsize=64)
def _compiled_eval(d: int, k: int):
    def eval_one(state, t, n_test, gamma):
        key = jax.random.fold_in(jax.random.fold_in(state["key"], _TEST), t)
        return _evaluate(d, k, n_test, gamma, state["w"], key)

    return jax.jit(jax.vmap(eval_one, in_axes=(0, None, None, None)))


def seed_keys(seed: int, n_seeds: int) -> jax.Array:
    """Per-seed keys ``fold_in(key(seed), i)``: seed i of a sweep draws what a single run of seed i
    draws."""
    base = jax.random.key(seed)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(n_seeds))


__all__.append("seed_keys")


def simulate(
    cfg: SimConfig,
    *,
    n_seeds: int = 1,
    seed: int = 0,
    eval_steps: tuple[int, ...] | None = None,
    seeds: tuple[int, ...] | None = None,
    n_test_mid: int = 20_000,
    shard: bool | None = None,
) -> SimResult:
    """Runs one configuration for several seeds (vmapped) and returns numpy logs.

    Args:
      cfg: static configuration (`theory.setting.SimConfig`).
      n_seeds: number of seeds (seed indices 0 .. n_seeds - 1), ignored if ``seeds`` is given.
      seed: base seed.
      eval_steps: steps at which to take test metrics (default `default_eval_steps`).
      seeds: explicit seed indices.
      n_test_mid: test points for evaluations before the last step (the last uses cfg.n_test).
      shard: shard the seed axis over all JAX devices when their number divides the seed count
        (same draws as the unsharded run, equal to float32 rounding: a different compiled
        program); None = `DEFAULT_SHARD` (off; see its comment).

    Returns:
      SimResult.
    """
    import time

    validate.check_int("n_seeds", n_seeds, min_value=1)
    t_start = time.perf_counter()
    if eval_steps is None:
        eval_steps = default_eval_steps(cfg.steps)
    eval_steps = tuple(sorted(set(int(s) for s in eval_steps)))
    if eval_steps and (eval_steps[0] < 0 or eval_steps[-1] > cfg.steps):
        validate.fail("eval_steps", eval_steps, f"steps within [0, {cfg.steps}]")
    if seeds is None:
        seeds = tuple(range(n_seeds))
    n_real = len(seeds)
    if shard is None:
        shard = DEFAULT_SHARD
    n_dev = len(jax.devices()) if shard else 1
    if n_real % n_dev:
        n_dev = 1  # padding would waste work; on a shared CPU it did not pay off
    padded = tuple(seeds)
    base = jax.random.key(seed)
    keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.asarray(padded))
    if n_dev > 1:
        # one CPU device per core: shard the seed axis; seeds never interact, so XLA partitions
        # the vmapped program without communication and the results equal the unsharded ones
        mesh = Mesh(np.asarray(jax.devices()), ("seed",))
        keys = jax.device_put(keys, NamedSharding(mesh, P("seed")))
    init_fn, advance_fn = _compiled(_Static.of(cfg))
    eval_fn = _compiled_eval(cfg.d, cfg.k)
    n, eta, gamma = np.int32(cfg.n), np.float32(cfg.eta), np.float32(cfg.gamma)
    state = init_fn(keys, n, gamma)
    evals: list[dict[str, np.ndarray]] = []
    t = 0
    for target in eval_steps:
        if target > t:
            state = advance_fn(state, np.int32(t), np.int32(target), n, eta, gamma)
            t = target
        # intermediate evaluations use fewer points; the final one uses n_test
        n_test = cfg.n_test if target == cfg.steps else min(cfg.n_test, n_test_mid)
        evals.append(
            jax.tree_util.tree_map(
                np.asarray, eval_fn(state, np.int32(target), np.int32(n_test), gamma)
            )
        )
    if t < cfg.steps:
        state = advance_fn(state, np.int32(t), np.int32(cfg.steps), n, eta, gamma)
    units = {
        name: np.asarray(val)[:n_real, : cfg.steps + 1] for name, val in state["units"].items()
    }
    train = {name: np.asarray(val)[:n_real, : cfg.steps] for name, val in state["train"].items()}
    ev = {
        name: (np.stack([e[name] for e in evals], axis=1) if evals else np.zeros((len(padded), 0)))[
            :n_real
        ]
        for name in EVAL_KEYS
    }
    seconds = time.perf_counter() - t_start
    log.debug("simulated %s (%d seeds on %d devices) in %.1fs", cfg, n_real, n_dev, seconds)
    return SimResult(
        cfg, np.asarray(balanced_v(cfg.k, F32)), units, train, np.asarray(eval_steps), ev, seconds
    )


def nonfinite_seeds(res: SimResult) -> np.ndarray:
    """Boolean ``[S]``: seeds whose weights went NaN/inf (flagged, never averaged silently)."""
    bad = np.zeros(res.units["w1"].shape[0], bool)
    for arr in res.units.values():
        bad |= ~np.all(np.isfinite(arr), axis=(1, 2))
    return bad


__all__.append("nonfinite_seeds")
