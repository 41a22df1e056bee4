"""Closed-form population gradients (App. F, Lemmas 4-6) and the population simulator.

While every hinge is active (``y f(x) < 1`` for every point) the hinge gradient of unit j is
``-v_j E[y 1{w_j . x > 0} x]``. Conditioning on the three values of ``x_2`` and writing
``w_bar . x_bar = ||w_bar|| Z`` with ``Z ~ N(0, 1)`` gives, with ``s = ||w_bar||``,
``a_0 = gamma w_1 / s`` and ``a_+- = (gamma w_1 +- w_2) / s`` (THEORY.md Sec. 3.5; gamma = 1 in the
paper):

* Lemma 4: ``dL/dw_1 = -(gamma v/4) [2 + Phi(a_+) + Phi(a_-) - 2 Phi(a_0)]``;
* Lemma 5: ``dL/dw_2 = -(v/4) [Phi(a_+) - Phi(a_-)]``;
* Lemma 6: ``dL/dw_bar = G_bar w_bar`` with ``G_bar = -(v/(4 s)) [phi(a_+) + phi(a_-) - 2 phi(a_0)]``.

These depend on unit j only through the three scalars ``(w_1j, w_2j, ||w_bar_j||)``, so the population
dynamics can be iterated per unit for any d (up to 1e8 and beyond): d enters only through the init
scale and, optionally, the finite-sample terms.

Note:
  The paper's Lemma 6 bounds the finite-sample part of the noise gradient orthogonal to ``w_bar`` by
  ``6|v|/(sqrt(c) d) = 6|v|/sqrt(n)``. That part is an ``N(0, p v^2 I_{d-3}/n)`` vector (p = firing
  probability) whose norm is ``|v| sqrt(p (d-3)/n)``, larger by about ``sqrt(p d)/6``: Fact 1 gives
  ``|v| (4 sqrt(d/n) + 2 sqrt(log n / n))``, and ``4 sqrt(d/n) = 4/sqrt(c d)``, not ``4/(sqrt(c) d)``.
  `lemma6_perp_bound` returns both forms; the conclusion ``||w_bar|| = O(1/(sqrt(k) log d))`` still
  holds asymptotically because ``sqrt(t/(c d)) log d -> 0``.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr

from sbjax import validate

__all__ = [
    "LemmaTerms",
    "PopulationTrajectory",
    "check_x64",
    "closed_form_grads",
    "lemma45_bound",
    "lemma6_parallel_bound",
    "lemma6_perp_bound",
    "normal_pdf",
    "phi_diff",
    "population_mean_margin",
    "relu_gauss_mean",
    "run_population",
    "simulate_population",
    "population_sweep",
]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def normal_pdf(a: jax.Array) -> jax.Array:
    """Standard normal density (Lemma 8 as printed misses the 1/sqrt(2 pi); THEORY.md Sec. 5.7)."""
    return _INV_SQRT_2PI * jnp.exp(-0.5 * a * a)


def phi_diff(a: jax.Array, b: jax.Array) -> jax.Array:
    """``Phi(a) - Phi(b)`` without cancellation when both lie far in the upper tail."""
    upper = (a + b) > 0
    return jnp.where(upper, ndtr(-b) - ndtr(-a), ndtr(a) - ndtr(b))


class LemmaTerms(NamedTuple):
    """Closed-form population quantities of one unit (all arrays broadcast like the inputs)."""

    a0: jax.Array
    a_plus: jax.Array
    a_minus: jax.Array
    grad_w1: jax.Array  # Lemma 4
    grad_w2: jax.Array  # Lemma 5
    g_bar: jax.Array  # Lemma 6: dL/dw_bar = g_bar * w_bar
    fire_prob: jax.Array  # P(w . x > 0)


def closed_form_grads(
    w1: jax.Array, w2: jax.Array, s: jax.Array, v: jax.Array, gamma: float | jax.Array = 1.0
) -> LemmaTerms:
    """Population hinge gradients of Lemmas 4-6 while every hinge is active.

    Args:
      w1: linear weights ``[...]``.
      w2: slab weights ``[...]``.
      s: noise-block norms ``||w_{3:d}|| > 0`` ``[...]``.
      v: second-layer weights ``[...]``.
      gamma: linear-coordinate scale (1 = the paper's LSN).

    Returns:
      LemmaTerms with the gradients w.r.t. w1, w2 and the coefficient ``G_bar``.
    """
    a0 = gamma * w1 / s
    ap = (gamma * w1 + w2) / s
    am = (gamma * w1 - w2) / s
    # 2 + Phi(a+) + Phi(a-) - 2 Phi(a0), with both differences computed stably (Lemma 3's excess)
    bracket1 = 2.0 + phi_diff(ap, a0) + phi_diff(am, a0)
    grad_w1 = -(gamma * v / 4.0) * bracket1
    grad_w2 = -(v / 4.0) * phi_diff(ap, am)
    g_bar = -(v / (4.0 * s)) * (normal_pdf(ap) + normal_pdf(am) - 2.0 * normal_pdf(a0))
    # P(fire) = 1/2 P(Z > a0) + 1/4 P(Z > -a+) + 1/4 P(Z > -a-)
    fire = 0.5 * ndtr(-a0) + 0.25 * ndtr(ap) + 0.25 * ndtr(am)
    return LemmaTerms(a0, ap, am, grad_w1, grad_w2, g_bar, fire)


def lemma45_bound(v: float | jax.Array, n: int) -> jax.Array:
    """Finite-sample error of Lemmas 4 and 5: ``(5|v|/d) sqrt(log(c d^2)/c) = 5|v| sqrt(log n / n)``."""
    return 5.0 * jnp.abs(v) * math.sqrt(math.log(n) / n)


def lemma6_parallel_bound(v: float | jax.Array, n: int) -> jax.Array:
    """Lemma 6's bound on the finite-sample part along w_bar: ``3|v| log(sqrt n)/sqrt n``."""
    return 3.0 * jnp.abs(v) * math.log(math.sqrt(n)) / math.sqrt(n)


def lemma6_perp_bound(v: float | jax.Array, n: int, d: int, printed: bool = False) -> jax.Array:
    """Bound on the finite-sample noise gradient orthogonal to w_bar.

    Args:
      v: second-layer weight(s).
      n: batch size.
      d: dimension.
      printed: True for the paper's ``6|v|/(sqrt(c) d) = 6|v|/sqrt(n)``; False (default) for Fact 1
        applied correctly, ``|v| (4 sqrt((d-2)/n) + 2 sqrt(log n / n))`` (see the module note).
    """
    if printed:
        return 6.0 * jnp.abs(v) / math.sqrt(n)
    return jnp.abs(v) * (4.0 * math.sqrt((d - 2) / n) + 2.0 * math.sqrt(math.log(n) / n))


def relu_gauss_mean(m: jax.Array, s: jax.Array) -> jax.Array:
    """``E[ReLU(m + s Z)] = m Phi(m/s) + s phi(m/s)`` for ``Z ~ N(0, 1)``."""
    r = m / s
    return m * ndtr(r) + s * normal_pdf(r)


def population_mean_margin(w1, w2, s, v, gamma=1.0) -> jax.Array:
    """Closed-form ``E[y f(x)]`` over LSN for per-unit scalars ``[..., k]`` -> ``[...]``."""
    neg = relu_gauss_mean(-gamma * w1, s)
    pos = 0.5 * (relu_gauss_mean(gamma * w1 + w2, s) + relu_gauss_mean(gamma * w1 - w2, s))
    return jnp.sum(v * 0.5 * (pos - neg), axis=-1)


class PopulationTrajectory(NamedTuple):
    """Per-step population state; arrays ``[..., steps + 1, k]`` (margin: ``[..., steps + 1]``)."""

    w1: jax.Array
    w2: jax.Array
    s: jax.Array
    a0: jax.Array
    fire_prob: jax.Array
    margin: jax.Array


def _chi2(key: jax.Array, m: jax.Array, shape: tuple, dtype: Any) -> jax.Array:
    """chi^2_m draws via the gamma sampler (exact; m may be traced and as large as 1e16)."""
    return 2.0 * jax.random.gamma(key, jnp.asarray(m, dtype) / 2.0, shape, dtype)


def _noise_terms(t: LemmaTerms, v, gamma, n, d, key, dtype):
    """One draw of the finite-sample fluctuations (marginal per unit; cross-correlations dropped)."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    shape = t.grad_w1.shape
    p = t.fire_prob
    var1 = (gamma * v) ** 2 * p * (1.0 - p)
    var2 = v**2 * 0.25 * (ndtr(t.a_plus) + ndtr(t.a_minus)) - t.grad_w2**2

    def tail_z2(b):  # E[1{Z > b} Z^2] = b phi(b) + P(Z > b)
        return b * normal_pdf(b) + ndtr(-b)

    ez2 = 0.5 * tail_z2(t.a0) + 0.25 * (tail_z2(-t.a_plus) + tail_z2(-t.a_minus))
    # the parallel mean is G_bar * s; keep the variance non-negative under rounding
    s_par_mean = t.g_bar  # multiplied by s by the caller
    z1 = jax.random.normal(k1, shape, dtype)
    z2 = jax.random.normal(k2, shape, dtype)
    z3 = jax.random.normal(k3, shape, dtype)
    chi2 = _chi2(k4, d - 3, shape, dtype)
    noise1 = jnp.sqrt(jnp.maximum(var1, 0.0) / n) * z1
    noise2 = jnp.sqrt(jnp.maximum(var2, 0.0) / n) * z2
    return noise1, noise2, ez2, s_par_mean, z3, v**2 * p * chi2 / n


def run_population(
    w1: jax.Array,
    w2: jax.Array,
    s: jax.Array,
    v: jax.Array,
    *,
    eta: float,
    steps: int,
    gamma: float = 1.0,
    n: int | None = None,
    d: int | None = None,
    key: jax.Array | None = None,
) -> PopulationTrajectory:
    """Iterates Lemmas 4-6 per unit: ``w <- w - eta * grad`` on ``(w1, w2, ||w_bar||)``.

    Without ``n`` this is the deterministic population flow (what the proof tracks). With ``n``, ``d``
    and ``key`` it adds the analytic Gaussian finite-sample terms of a fresh batch of n points:
    fluctuations of w1, w2 and of the component along w_bar (variances from the same conditioning
    as the lemmas), and the orthogonal part, an ``N(0, p v^2 I_{d-3}/n)`` vector that adds
    ``eta^2 p v^2 chi^2_{d-3}/n`` to ``||w_bar||^2`` (the random walk of THEORY.md Sec. 4).
    Correlations between the fluctuations of different quantities are dropped.

    Args:
      w1, w2, s: initial per-unit scalars ``[k]``.
      v: second layer ``[k]``.
      eta: step size.
      steps: number of updates T (static).
      gamma: linear scale.
      n: batch size for the finite-sample terms (None = population only).
      d: dimension (needed with n).
      key: PRNG key (needed with n).

    Returns:
      PopulationTrajectory with arrays ``[steps + 1, k]`` (margin ``[steps + 1]``).
    """
    noisy = n is not None
    if noisy and (d is None or key is None):
        validate.fail("n", n, "None unless d and key are given too")
    return _run_population(w1, w2, s, v, eta, gamma, n, d, key, steps=steps, noisy=noisy)


def _run_population(w1, w2, s, v, eta, gamma, n, d, key, *, steps: int, noisy: bool):
    """`run_population` with every numeric argument traceable (steps, noisy static)."""
    dtype = w1.dtype

    def step(carry, t):
        w1, w2, s = carry
        terms = closed_form_grads(w1, w2, s, v, gamma)
        if noisy:
            n1, n2, ez2, gbar, z3, perp2 = _noise_terms(
                terms, v, gamma, n, d, jax.random.fold_in(key, t), dtype
            )
            var_par = jnp.maximum(v**2 * ez2 - (gbar * s) ** 2, 0.0)
            par = s - eta * (gbar * s + jnp.sqrt(var_par / n) * z3)
            s_new = jnp.sqrt(par**2 + eta**2 * perp2)
            w1_new = w1 - eta * (terms.grad_w1 + n1)
            w2_new = w2 - eta * (terms.grad_w2 + n2)
        else:
            s_new = s * jnp.abs(1.0 - eta * terms.g_bar)
            w1_new = w1 - eta * terms.grad_w1
            w2_new = w2 - eta * terms.grad_w2
        out = (w1, w2, s, terms.a0, terms.fire_prob, population_mean_margin(w1, w2, s, v, gamma))
        return (w1_new, w2_new, s_new), out

    (w1f, w2f, sf), hist = jax.lax.scan(step, (w1, w2, s), jnp.arange(steps))
    last = closed_form_grads(w1f, w2f, sf, v, gamma)
    final = (w1f, w2f, sf, last.a0, last.fire_prob, population_mean_margin(w1f, w2f, sf, v, gamma))
    stacked = [jnp.concatenate([h, f[None]], axis=0) for h, f in zip(hist, final, strict=True)]
    return PopulationTrajectory(*stacked)


def check_x64(dtype: Any) -> None:
    """Raises if float64 is requested while JAX's x64 mode is off (it would silently be float32)."""
    if jnp.dtype(dtype) == jnp.float64 and not jax.config.jax_enable_x64:
        validate.fail(
            "dtype",
            "float64",
            "float32, or run inside `with jax.enable_x64(True):` "
            "(the theory CLI does this for the population sweeps)",
        )


@functools.lru_cache(maxsize=32)
def _population_program(k: int, steps: int, noisy: bool, dtype_name: str):
    """One compiled program per (k, steps, noisy, dtype); d, sigma, eta, gamma, n are traced."""
    from theory.setting import balanced_v

    dtype = jnp.dtype(dtype_name)
    v = balanced_v(k, dtype)

    def one(key, d, sigma, eta, gamma, n):
        k_init, k_chi, k_noise = jax.random.split(key, 3)
        w12 = sigma * jax.random.normal(k_init, (2, k), dtype)
        s0 = sigma * jnp.sqrt(_chi2(k_chi, d - 2.0, (k,), dtype))
        return _run_population(
            w12[0], w12[1], s0, v, eta, gamma, n, d, k_noise, steps=steps, noisy=noisy
        )

    seeds = jax.vmap(one, in_axes=(0, None, None, None, None, None))
    # a second vmap runs a whole sweep over d (and sigma, n) in one call
    return jax.jit(seeds), jax.jit(jax.vmap(seeds, in_axes=(None, 0, 0, None, None, 0)))


def simulate_population(
    key: jax.Array,
    *,
    d: float,
    k: int = 16,
    eta: float = 1.0,
    steps: int = 3,
    gamma: float = 1.0,
    init: str = "log4",
    n_seeds: int = 8,
    n: float | None = None,
    dtype: Any = jnp.float64,
) -> PopulationTrajectory:
    """Population simulator from the theorem's init, vmapped over seeds.

    The init draws ``w1, w2 ~ N(0, sigma^2)`` and ``||w_bar|| = sigma sqrt(chi^2_{d-2})`` per unit, so
    it has the same law as the empirical simulator's init. d may be a float up to 1e8 and beyond;
    one compiled program serves every d, eta, gamma and n.

    Args:
      key: PRNG key; seed i uses ``fold_in(key, i)``.
      d: dimension.
      k: units (even; balanced second layer).
      eta: step size.
      steps: updates T.
      gamma: linear scale.
      init: "log4" or "log2".
      n_seeds: independent inits (vmapped).
      n: batch size for the finite-sample terms (None: deterministic population flow).
      dtype: float64 (default; needs x64 mode) or float32.

    Returns:
      PopulationTrajectory of numpy arrays ``[n_seeds, steps + 1, k]`` (margin ``[n_seeds,
      steps + 1]``).
    """
    from theory.setting import balanced_v, init_sigma

    check_x64(dtype)
    validate.check_range("d", d, 4, None)
    validate.check_int("n_seeds", n_seeds, min_value=1)
    balanced_v(k)  # validates k
    sigma = init_sigma(d, k, init)
    prog, _ = _population_program(int(k), int(steps), n is not None, jnp.dtype(dtype).name)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_seeds))
    as_f = functools.partial(jnp.asarray, dtype=dtype)
    out = prog(keys, as_f(d), as_f(sigma), as_f(eta), as_f(gamma), as_f(1.0 if n is None else n))
    # numpy: float64 jax arrays would be cast (with a warning) once x64 mode is left
    return PopulationTrajectory(*(np.asarray(a) for a in out))


def population_sweep(
    key: jax.Array,
    ds,
    *,
    k: int = 16,
    eta: float = 1.0,
    steps: int = 3,
    gamma: float = 1.0,
    init: str = "log4",
    n_seeds: int = 8,
    c: float | None = None,
    dtype: Any = jnp.float64,
) -> PopulationTrajectory:
    """`simulate_population` for many d in one compiled call (same seeds for every d).

    Args:
      ds: dimensions ``[D]``.
      c: with finite-sample terms for batches of ``n = c d^2`` (None: deterministic flow).
      (others as in `simulate_population`)

    Returns:
      PopulationTrajectory of numpy arrays ``[D, n_seeds, steps + 1, k]``.
    """
    from theory.setting import balanced_v, init_sigma

    check_x64(dtype)
    validate.check_int("n_seeds", n_seeds, min_value=1)
    balanced_v(k)
    ds = [float(d) for d in ds]
    for d in ds:
        validate.check_range("d", d, 4, None)
    _, sweep = _population_program(int(k), int(steps), c is not None, jnp.dtype(dtype).name)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_seeds))
    as_f = functools.partial(jnp.asarray, dtype=dtype)
    sig = [init_sigma(d, k, init) for d in ds]
    ns = [1.0 if c is None else c * d * d for d in ds]
    out = sweep(keys, as_f(ds), as_f(sig), as_f(eta), as_f(gamma), as_f(ns))
    return PopulationTrajectory(*(np.asarray(a) for a in out))
