"""Shortcut bias (Hermann, Mobahi, Fel, Mozer, ICLR 2024, Sec. 2): reliance on the shortcut beyond
the Bayes-optimal classifier's, vectorized over models, with the reference in closed form.

Setting: the two-latent datasets of `sbjax.data.atlas` (A1: ``z_i = rho_i y + sqrt(1 - rho_i^2)
eps_i``). The metric (docs/atlas.md, "Definitions", B1-B4):

* **Reliance** of a score ``f`` (logit1 - logit0) on feature i: on the cue-conflict probe
  (`sbjax.data.atlas.sample_probe`: z_s drawn from label y_s, z_c from an independent y_c),

      r_i = corr(f, y_i)                                        (B1, Pearson over the probe)

  Independence of y_s and y_c makes r_s blind to z_c and r_c blind to z_s.
* **Shortcut share** -- the part of the score's label-following that follows the shortcut:

      R_s = r_s+^2 / (r_s+^2 + r_c+^2),   r+ = max(r, 0)       (B2; NaN when both are <= 0)

  0: the score follows only z_c; 1: only z_s.
* **Bayes reference** -- with equal class covariances the Bayes-optimal classifier of (A1) is
  linear (LDA, the paper's Fig. 2 reference): ``f* = w_s z_s + w_c z_c`` with

      w_i = rho_i / (1 - rho_i^2),                               (B3)

  and on the probe (unit-variance, independent latents) ``r*_i = w_i rho_i / |w|``, hence
  ``R*_s = (w_s rho_s)^2 / ((w_s rho_s)^2 + (w_c rho_c)^2)``. Bayes accuracy on the task:
  ``Phi(sqrt(mu_s^2 + mu_c^2))``, ``mu_i = rho_i / sqrt(1 - rho_i^2)``. With a k-slab core (the
  bridge cell) the core alone is fully predictive, so the Bayes classifier ignores a shortcut
  with rho_s < 1: ``R*_s = 0``.
* **Shortcut bias**:

      bias = R_s(model) - R*_s                                   (B4)

  in ``[-R*_s, 1 - R*_s]``: a model that reads only z_c has the smallest bias, ``-R*_s``; one that
  reads only z_s the largest, ``1 - R*_s``; the Bayes classifier (and a linear model trained to
  convergence, whose logistic fit of (A1) is well specified) 0. Positive = more reliance on the
  shortcut than the optimum places on it.

Every function is `jax.numpy`, works inside `jit` / `vmap` and broadcasts over leading (model)
axes: ``scores [M, N]`` with labels ``[N]`` or ``[M, N]``, predictivities ``[M]`` or scalars.
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.scipy.stats as jst

__all__ = [
    "bayes_accuracy",
    "bayes_share",
    "bayes_weights",
    "reliance",
    "shortcut_bias",
]


def bayes_weights(rho_s, rho_c):
    """LDA weights (w_s, w_c) of the Bayes-optimal score on the latents (B3)."""
    rho_s, rho_c = jnp.asarray(rho_s, jnp.float32), jnp.asarray(rho_c, jnp.float32)
    return rho_s / (1.0 - rho_s**2), rho_c / (1.0 - rho_c**2)


def bayes_accuracy(rho_s, rho_c):
    """Bayes accuracy Phi(sqrt(mu_s^2 + mu_c^2)) of the (A1) task, mu_i = rho_i / sqrt(1-rho_i^2)."""
    rho_s, rho_c = jnp.asarray(rho_s, jnp.float32), jnp.asarray(rho_c, jnp.float32)
    mu2 = rho_s**2 / (1.0 - rho_s**2) + rho_c**2 / (1.0 - rho_c**2)
    return jst.norm.cdf(jnp.sqrt(mu2))


def bayes_share(rho_s, rho_c, core: str = "gaussian"):
    """R*_s: the Bayes-optimal classifier's shortcut share on the probe (B3); 0 for a slab core."""
    rho_s, rho_c = jnp.asarray(rho_s, jnp.float32), jnp.asarray(rho_c, jnp.float32)
    if core == "slab":
        return jnp.zeros(jnp.broadcast_shapes(rho_s.shape, rho_c.shape), jnp.float32)
    if core != "gaussian":
        raise ValueError(f"core={core!r} is invalid: expected one of 'gaussian', 'slab'")
    w_s, w_c = bayes_weights(rho_s, rho_c)
    a, b = (w_s * rho_s) ** 2, (w_c * rho_c) ** 2
    return a / (a + b)


def _corr(f, y):
    f = f - jnp.mean(f, axis=-1, keepdims=True)
    y = y - jnp.mean(y, axis=-1, keepdims=True)
    num = jnp.sum(f * y, axis=-1)
    den = jnp.sqrt(jnp.sum(f * f, axis=-1) * jnp.sum(y * y, axis=-1))
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), jnp.nan)


def reliance(scores, y_s, y_c) -> dict:
    """Reliance on each feature (B1) and the shortcut share (B2).

    Args:
      scores: float [..., N] scores (logit1 - logit0) on the probe.
      y_s, y_c: the probe's labels of z_s and z_c, [N] or [..., N] (0/1 or -1/+1).

    Returns:
      {"r_s", "r_c", "share_s"}, each float32 [...]; share_s is NaN when neither r is positive
      (a constant or label-inverted score: no reliance to share).
    """
    f = jnp.asarray(scores, jnp.float32)
    r_s = _corr(f, jnp.asarray(y_s, jnp.float32))
    r_c = _corr(f, jnp.asarray(y_c, jnp.float32))
    a, b = jnp.maximum(r_s, 0.0) ** 2, jnp.maximum(r_c, 0.0) ** 2
    share = jnp.where(a + b > 0, a / jnp.where(a + b > 0, a + b, 1.0), jnp.nan)
    return {"r_s": r_s, "r_c": r_c, "share_s": share}


def shortcut_bias(scores, y_s, y_c, reference):
    """Shortcut bias (B4): R_s(model) - R*_s.

    Args:
      scores: float [..., N] scores on the cue-conflict probe.
      y_s, y_c: the probe's labels of z_s and z_c ([N] or [..., N]).
      reference: R*_s (`bayes_share`), scalar or [...].

    Returns:
      float32 [...]; NaN where the share is undefined (see `reliance`).
    """
    return reliance(scores, y_s, y_c)["share_s"] - jnp.asarray(reference, jnp.float32)
