"""The exact setting of Theorem 1 (Shah et al. 2020, Sec. 4.1, App. F): LSN data, network, loss, steps.

Everything here is a pure function of explicit arguments, so the simulators can `jit` and `vmap` it.

* LSN (paper Sec. 3.1, THEORY.md Sec. 1): ``y, eps = +-1`` (prob. 1/2 each), ``x_1 = gamma * y``,
  ``x_2 = ((y + 1)/2) * eps``, ``x_{3:d} ~ N(0, I)``. ``gamma = 1`` is the paper's LSN; smaller
  ``gamma`` is THEORY.md's linear-margin sweep (grid G5). Labels are +-1 here (the paper's
  convention); `sbjax.data` uses {0, 1}.
* Network: ``f(x) = sum_j v_j ReLU(w_j . x)`` with ``W`` of shape ``[d, k]`` (column j is ``w_j``) and
  a fixed, balanced second layer: ``v_j = +1/sqrt(k)`` for the first k/2 units and ``-1/sqrt(k)`` for
  the rest (the proof needs exactly k/2 of each sign).
* Init: ``w_ij ~ N(0, sigma^2)`` with ``sigma^2 = 1/(d k log^4 d)`` (the theorem) or
  ``1/(d k log^2 d)`` (Lemma 1); natural logarithm.
* Loss: hinge ``max(0, 1 - y f)`` (the theorem) or logistic ``log(1 + exp(-y f))`` (G6).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sbjax import validate

__all__ = [
    "INITS",
    "LOSSES",
    "METHODS",
    "BATCHES",
    "SimConfig",
    "balanced_v",
    "c_n_constant",
    "init_sigma",
    "init_weights",
    "loss_per_point",
    "network",
    "practical_steps",
    "sample_lsn",
    "theorem_stop_time",
    "auto_chunk",
    "TEST_CHUNK",
]

INITS = ("log4", "log2")
LOSSES = ("hinge", "logistic")
# full: sample every coordinate of every point (the literal procedure); projected: the exact-in-law
# reduction of `theory.empirical` that never materialises the d-2 noise coordinates.
METHODS = ("full", "projected")
# fresh: a new batch of n points every step (the theorem); fixed: full-batch GD on one sample of n.
BATCHES = ("fresh", "fixed")


def init_sigma(d: int, k: int, init: str = "log4") -> float:
    """Standard deviation of the initial weights.

    Args:
      d: input dimension (>= 3).
      k: number of hidden units.
      init: "log4" for the theorem's ``N(0, 1/(d k log^4 d))``, "log2" for Lemma 1's
        ``N(0, 1/(d k log^2 d))`` (THEORY.md Sec. 5, item 1).

    Returns:
      sigma as a Python float.
    """
    validate.check_choice("init", init, INITS)
    power = 4 if init == "log4" else 2
    return 1.0 / math.sqrt(d * k * math.log(d) ** power)


def balanced_v(k: int, dtype: Any = jnp.float32) -> jax.Array:
    """Fixed second layer: ``+1/sqrt(k)`` on the first k/2 units, ``-1/sqrt(k)`` on the rest.

    Returns:
      v: float array ``[k]``.
    """
    validate.check_int("k", k, min_value=2)
    if k % 2:
        validate.fail("k", k, "an even integer (the proof needs exactly k/2 units of each sign)")
    s = 1.0 / math.sqrt(k)
    return jnp.concatenate([jnp.full((k // 2,), s, dtype), jnp.full((k // 2,), -s, dtype)])


def init_weights(
    key: jax.Array, d: int, k: int, init: str = "log4", dtype: Any = jnp.float32
) -> jax.Array:
    """Draws ``W [d, k]`` with i.i.d. ``N(0, sigma^2)`` entries (`init_sigma`)."""
    return init_sigma(d, k, init) * jax.random.normal(key, (d, k), dtype)


def sample_lsn(
    key: jax.Array, n: int, d: int, gamma: float | jax.Array = 1.0, dtype: Any = jnp.float32
) -> tuple[jax.Array, jax.Array]:
    """Samples n LSN points in the canonical basis (no rotation).

    Args:
      key: PRNG key.
      n: number of points.
      d: dimension (>= 3).
      gamma: scale of the linear coordinate, ``x_1 = gamma * y`` (1 = the paper's LSN).
      dtype: float dtype of the outputs.

    Returns:
      x: ``[n, d]`` points; y: ``[n]`` labels in {-1, +1} (same dtype as x).
    """
    k_y, k_eps, k_noise = jax.random.split(key, 3)
    y = jnp.where(jax.random.bernoulli(k_y, 0.5, (n,)), 1.0, -1.0).astype(dtype)
    eps = jnp.where(jax.random.bernoulli(k_eps, 0.5, (n,)), 1.0, -1.0).astype(dtype)
    x1 = (gamma * y).astype(dtype)
    x2 = 0.5 * (y + 1.0) * eps  # 0 for negatives, +-1 for positives
    noise = jax.random.normal(k_noise, (n, d - 2), dtype)
    return jnp.concatenate([x1[:, None], x2[:, None], noise], axis=1), y


def network(w: jax.Array, v: jax.Array, x: jax.Array) -> jax.Array:
    """``f(x) = v^T ReLU(W^T x)`` for a batch: x ``[n, d]``, W ``[d, k]``, v ``[k]`` -> ``[n]``."""
    return jax.nn.relu(x @ w) @ v


def loss_per_point(scores: jax.Array, y: jax.Array, loss: str) -> jax.Array:
    """Per-point loss of scalar scores ``f`` [n] with labels y in {-1, +1} [n] (optax losses)."""
    if loss == "hinge":
        return optax.losses.hinge_loss(scores, y)
    if loss == "logistic":
        return optax.losses.sigmoid_binary_cross_entropy(scores, 0.5 * (y + 1.0))
    validate.check_choice("loss", loss, LOSSES)
    raise AssertionError  # unreachable


def practical_steps(eta: float, gamma: float = 1.0) -> int:
    """THEORY.md's stopping rule ``T = floor(4/(eta gamma^2)) - 1``.

    The mean margin grows by ``eta gamma^2 / 4`` per step (Lemma 2), so this is the last step before
    the margin reaches 1 and the hinge switches off. It is the theorem's ``t_hat`` with the vacuous
    ``c_n / sqrt(log d)`` correction replaced by one step of slack.
    """
    validate.check_range("eta", eta, 0.0, None, lo_open=True)
    validate.check_range("gamma", gamma, 0.0, None, lo_open=True)
    # the small epsilon keeps e.g. 4/(0.5*1) = 8 from flooring to 7 through rounding
    return max(int(math.floor(4.0 / (eta * gamma**2) + 1e-9)) - 1, 1)


def c_n_constant(alpha: float = 2.0 + 1e-9, eta: float = 1.0, steps: int | None = None) -> float:
    """The proof's constant ``c_n = 5 sqrt(alpha) c_0 (1 + eta/4)^t`` with ``c_0 = 2`` (App. F).

    With ``t <= 4/eta`` (the default ``steps``) the factor ``(1 + eta/4)^t`` is at most e.
    """
    t = 4.0 / eta if steps is None else steps
    return 5.0 * math.sqrt(alpha) * 2.0 * (1.0 + eta / 4.0) ** t


def theorem_stop_time(
    d: float | None, eta: float, c_n: float | None = None, *, log_d: float | None = None
) -> int:
    """The theorem's ``t_hat = floor((4/eta)(1 - c_n / sqrt(log d)))`` (may be <= 0: vacuous).

    Args:
      d: dimension (or None with ``log_d``).
      eta: step size.
      c_n: the proof's constant; default `c_n_constant` with alpha -> 2 (about 38.9 for eta = 1),
        which makes ``t_hat`` positive only for ``log d > c_n^2`` -- d > e^1500, beyond float64
        (THEORY.md Sec. 5, item 2).
      log_d: natural log of d, for dimensions too large for a float.
    """
    if c_n is None:
        c_n = c_n_constant(eta=eta)
    if log_d is None:
        log_d = math.log(d)
    return int(math.floor((4.0 / eta) * (1.0 - c_n / math.sqrt(log_d))))


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Static configuration of one empirical simulation (one compile per distinct config).

    Attributes:
      d: input dimension (>= 4).
      k: hidden units (even, <= d - 2 for the projected method).
      n: batch size (points per step); the theorem uses ``n = c d^2``.
      steps: number of GD updates T.
      eta: step size.
      gamma: linear-coordinate scale (``x_1 = gamma y``).
      loss: "hinge" or "logistic".
      init: "log4" (theorem) or "log2" (Lemma 1).
      method: "full" (literal sampling) or "projected" (exact-in-law reduction).
      batch: "fresh" (new batch each step) or "fixed" (full-batch GD on one sample of n points).
      n_test: fresh test points per evaluation.
      chunk: points per inner chunk (bounds memory; the gradient is summed over chunks); 0 picks
        it from d, k, n. Runs that share (d, k, method, loss, batch, init, chunk, max_steps) share
        one compiled program: n, eta, gamma, steps and n_test are traced.
      max_steps: length of the per-step log buffers (0 = steps); >= steps.
    """

    d: int
    k: int = 16
    n: int = 4096
    steps: int = 3
    eta: float = 1.0
    gamma: float = 1.0
    loss: str = "hinge"
    init: str = "log4"
    method: str = "full"
    batch: str = "fresh"
    n_test: int = 200_000
    chunk: int = 0  # 0 = choose automatically from d, k, n and the method
    max_steps: int = 0

    def __post_init__(self):
        validate.check_int("d", self.d, min_value=4)
        validate.check_int("k", self.k, min_value=2)
        if self.k % 2:
            validate.fail("k", self.k, "an even integer (exactly k/2 units of each sign)")
        validate.check_int("n", self.n, min_value=1)
        validate.check_int("steps", self.steps, min_value=0)
        validate.check_range("eta", self.eta, 0.0, None, lo_open=True)
        validate.check_range("gamma", self.gamma, 0.0, None, lo_open=True)
        validate.check_choice("loss", self.loss, LOSSES)
        validate.check_choice("init", self.init, INITS)
        validate.check_choice("method", self.method, METHODS)
        validate.check_choice("batch", self.batch, BATCHES)
        validate.check_int("n_test", self.n_test, min_value=2)
        validate.check_int("chunk", self.chunk, min_value=0)
        validate.check_int("max_steps", self.max_steps, min_value=0)
        if self.max_steps and self.max_steps < self.steps:
            validate.fail("max_steps", self.max_steps, f"0 or >= steps = {self.steps}")
        if self.method == "projected" and self.k > self.d - 2:
            validate.fail("k", self.k, f"<= d - 2 = {self.d - 2} for method='projected'")
        if self.batch == "fixed" and self.method != "full":
            validate.fail(
                "method",
                self.method,
                "'full' when batch='fixed' (the projected "
                "reduction needs a fresh batch every step)",
            )

    @property
    def sigma(self) -> float:
        return init_sigma(self.d, self.k, self.init)

    @property
    def train_chunk(self) -> int:
        """Points per chunk (static): about 4M floats of per-point state per seed."""
        if self.chunk:
            return self.chunk
        return auto_chunk(self.d, self.k, self.method, self.n)

    @property
    def buffer_steps(self) -> int:
        return max(self.max_steps or self.steps, 1)


def auto_chunk(d: int, k: int, method: str, n_max: int) -> int:
    """Chunk size for up to ``n_max`` points per step: at most ~4M floats of per-point state."""
    width = d if method == "full" else 2 * k + 4
    return int(max(1, min(n_max, (1 << 22) // max(width, 1))))


TEST_CHUNK = 1 << 15  # test points per evaluation chunk (static; n_test is traced)


def n_from_c(c: float, d: int) -> int:
    """Batch size ``n = round(c d^2)`` (at least 2)."""
    return max(2, int(round(c * d * d)))


__all__.append("n_from_c")


def as_numpy_tree(tree: Any) -> Any:
    """Device arrays -> numpy arrays (for logs)."""
    return jax.tree_util.tree_map(np.asarray, tree)


__all__.append("as_numpy_tree")
