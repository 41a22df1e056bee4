"""Two-latent-feature datasets of a shortcut atlas (Hermann, Mobahi, Fel, Mozer, ICLR 2024).

"On the Foundations of Shortcut Learning" (arXiv 2310.16228, Sec. 2 and Fig. 1) builds a binary
task from two scalar latent features, a shortcut ``z_s`` and a core ``z_c``, and sets two
properties of each independently:

* **predictivity** ``rho_i`` -- how reliably ``z_i`` indicates the label. Here (docs/atlas.md,
  "Definitions"): with ``y in {-1, +1}`` equiprobable and ``eps_i ~ N(0, 1)`` independent,

      z_i = rho_i * y + sqrt(1 - rho_i^2) * eps_i,          (A1)

  so ``corr(z_i, y) = rho_i``, ``Var z_i = 1`` whatever ``rho_i`` (availability is then not
  confounded with scale), and the two features are independent given y.
* **availability** -- how easily a network extracts ``z_i`` from the input ``x``, set by the
  embedding ``x = [e_s(z_s), e_c(z_c)]`` (Fig. 1B):

  - **amplification** ``alpha_i``: the feature's RMS norm in input space (A3 below);
  - **nesting** ``eta_i``: how many fixed random tanh layers the latent passes through before it
    is placed in input space (``eta = 0``: a linear embedding ``z u_i`` with a fixed unit vector
    ``u_i``):

      h_0 = z u_i,   h_l = tanh(g sqrt(m) W_l^i hbar_{l-1} + b_l^i),   hbar_l = (h_l - c_l) / s_l,
      e_i(z) = alpha_i * hbar_{eta_i}                                              (A2, A3)

    with ``W_l^i ~ N(0, 1/m)`` entries, ``b_l^i ~ N(0, 0.5^2)``, gain ``g`` and, per level, the
    centring ``c_l`` and scale ``s_l`` that give ``E ||hbar_l||^2 = 1`` on a fixed reference
    sample of ``z ~ N(0, 1)`` (the marginal of every z_i has variance 1). All of them are fixed by
    `AtlasData.embed_seed`, so every cell of an atlas embeds through the same maps.

Each feature occupies its own ``embed_dim`` (m) input coordinates: ``x`` has ``2 m``
coordinates (the shortcut's first). The core may instead be the k-slab block of Shah et al.'s
LMS-k (``core="slab"``: ``m`` coordinates, each a k-slab coordinate of the label y_c, scaled to
RMS norm about ``alpha_c``), for the bridge between the two frameworks (docs/atlas.md).

Everything a cell sets is a traced scalar (``rho_s, rho_c, alpha_s, alpha_c`` float32,
``eta_s, eta_c`` int32 in ``[0, max_nesting]``: every nesting level is computed and one is picked
by index), so a grid of cells samples inside one ``jit(vmap(...))``; `sbjax.train.atlas` does that.

Sets:

* `sample` -- training / test points: one label ``y`` drives both latents (A1).
* `sample_probe` -- the cue-conflict probe of the shortcut-bias metric: ``z_s`` is drawn with its
  own label ``y_s`` and ``z_c`` with an independent ``y_c``, so a model's agreement with each
  label measures its reliance on each feature alone (`sbjax.eval.shortcut_bias`).

Labels are int32 in {0, 1} (sbjax's convention; ``y = 2 label - 1`` in the formulas).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbjax.data import blocks as B
from sbjax.validate import check_choice, check_int, check_range, fail

__all__ = [
    "CELL_KEYS",
    "CORE_KINDS",
    "AtlasData",
    "check_cell",
    "embed",
    "embedding_tables",
    "sample",
    "sample_latents",
    "sample_probe",
]

CORE_KINDS = ("gaussian", "slab")
CELL_KEYS = ("rho_s", "rho_c", "alpha_s", "alpha_c", "eta_s", "eta_c")
_REF_POINTS = 8192  # reference latent sample of the nesting normalisation
_BIAS_STD = 0.5
MAX_RHO = 0.999  # rho = 1 makes z_i = y (no noise): (A1) degenerates, the Bayes weights diverge


@dataclasses.dataclass(frozen=True)
class AtlasData:
    """Static description of an atlas dataset family (shapes and the fixed embedding maps).

    Attributes:
      embed_dim: m, input coordinates per feature (x has 2 m coordinates).
      max_nesting: the largest nesting depth a cell may ask for (every level up to it is computed).
      nesting_gain: g of (A2): the pre-activation scale of the nesting layers.
      embed_seed: seed of the fixed embedding maps (u_i, W_l^i, b_l^i).
      n_train, n_test, n_probe: points per training / test / probe set (static shapes).
      core: "gaussian" (the paper's: z_c from (A1)) or "slab" (the bridge: k-slab coordinates).
      slab_k, slab_margin: the core's slab count and margin with core="slab".
    """

    embed_dim: int = 10
    max_nesting: int = 3
    nesting_gain: float = 2.0
    embed_seed: int = 0
    n_train: int = 2000
    n_test: int = 1000
    n_probe: int = 2000
    core: str = "gaussian"
    slab_k: int = 5
    slab_margin: float = 0.1

    @property
    def d(self) -> int:
        """Input dimension 2 m."""
        return 2 * int(self.embed_dim)

    def check(self) -> None:
        """Raises ValueError naming the field (on the host, before anything compiles)."""
        check_int("embed_dim", self.embed_dim, min_value=1)
        check_int("max_nesting", self.max_nesting, min_value=0)
        check_range("nesting_gain", self.nesting_gain, 0.0, None, lo_open=True)
        check_int("embed_seed", self.embed_seed, min_value=0)
        check_int("n_train", self.n_train, min_value=2)
        check_int("n_test", self.n_test, min_value=2)
        check_int("n_probe", self.n_probe, min_value=4)
        check_choice("core", self.core, CORE_KINDS)
        if self.core == "slab":
            B.check_slab_params(self.slab_k, self.slab_margin, 1.0, k_name="slab_k")


def check_cell(cell: dict[str, Any], data: AtlasData, name: str = "cell") -> dict[str, float]:
    """Validates one cell {rho_s, rho_c, alpha_s, alpha_c, eta_s, eta_c} on the host.

    Returns:
      The cell with float rho / alpha and int eta values.

    Raises:
      ValueError: naming ``<name>.<key>`` and the allowed range.
    """
    if not isinstance(cell, dict):
        fail(name, cell, "a dict with keys " + ", ".join(CELL_KEYS))
    unknown = sorted(set(cell) - set(CELL_KEYS))
    if unknown:
        fail(f"{name}.{unknown[0]}", cell[unknown[0]], "one of the keys " + ", ".join(CELL_KEYS))
    out: dict[str, float] = {}
    for k in ("rho_s", "rho_c"):
        v = cell.get(k, 0.9)
        check_range(f"{name}.{k}", v, 0.0, MAX_RHO)
        out[k] = float(v)
    for k in ("alpha_s", "alpha_c"):
        v = cell.get(k, 1.0)
        check_range(f"{name}.{k}", v, 0.0, None, lo_open=True)
        out[k] = float(v)
    for k in ("eta_s", "eta_c"):
        v = cell.get(k, 0)
        check_int(f"{name}.{k}", v, min_value=0)
        if int(v) > data.max_nesting:
            fail(f"{name}.{k}", v, f"an integer in [0, max_nesting = {data.max_nesting}]")
        out[k] = int(v)
    return out


def _nesting_params(data: AtlasData, feature: int) -> dict[str, np.ndarray]:
    """Host float64 maps of one feature: u [m], W [L, m, m], b [L, m], centre [L+1, m], scale."""
    m, n_lev = int(data.embed_dim), int(data.max_nesting)
    rng = np.random.default_rng([int(data.embed_seed), 7919, feature])
    u = rng.standard_normal(m)
    u /= np.linalg.norm(u)
    w = rng.standard_normal((n_lev, m, m)) / np.sqrt(m)
    b = _BIAS_STD * rng.standard_normal((n_lev, m))
    z_ref = rng.standard_normal(_REF_POINTS)
    h = z_ref[:, None] * u[None]
    centre = [np.zeros(m)]
    scale = [1.0]  # level 0: z u with unit-variance z and |u| = 1 is already E|h|^2 = 1
    for lev in range(n_lev):
        hbar = (h - centre[-1]) / scale[-1]
        h = np.tanh(data.nesting_gain * np.sqrt(m) * hbar @ w[lev].T + b[lev])
        c = h.mean(0)
        centre.append(c)
        scale.append(float(np.sqrt(np.mean(np.sum((h - c) ** 2, axis=1)))))
    return {
        "u": u,
        "w": w,
        "b": b,
        "centre": np.stack(centre),
        "scale": np.asarray(scale),
    }


def embedding_tables(data: AtlasData) -> dict[str, jax.Array]:
    """The fixed embedding maps of both features as float32 arrays (leading axis: s, c)."""
    ps = [_nesting_params(data, f) for f in (0, 1)]
    return {k: jnp.asarray(np.stack([p[k] for p in ps]), jnp.float32) for k in ps[0]}


def _nest(z: jax.Array, eta, data: AtlasData, tab: dict[str, jax.Array], f: int) -> jax.Array:
    """hbar_eta(z) of feature f: [n, m], eta traced (every level computed, one selected)."""
    m = int(data.embed_dim)
    h = z[:, None] * tab["u"][f][None]
    levels = [h]
    for lev in range(int(data.max_nesting)):
        hbar = (h - tab["centre"][f, lev]) / tab["scale"][f, lev]
        pre = data.nesting_gain * np.sqrt(m) * hbar @ tab["w"][f, lev].T + tab["b"][f, lev]
        h = jnp.tanh(pre)
        levels.append((h - tab["centre"][f, lev + 1]) / tab["scale"][f, lev + 1])
    stack = jnp.stack(levels)  # [L+1, n, m]
    return stack[jnp.clip(jnp.asarray(eta, jnp.int32), 0, int(data.max_nesting))]


def embed(z: jax.Array, cell: dict[str, Any], data: AtlasData, tab: dict) -> jax.Array:
    """x [n, 2m] from latents z [n, 2] (A2, A3); for core="slab", z[:, 1:] are slab coordinates.

    Args:
      z: float32 [n, 2] (core "gaussian") or [n, 1 + m] (core "slab": shortcut latent, then the
        m slab coordinates).
      cell: traced {alpha_s, alpha_c, eta_s, eta_c, ...}.
      data: the `AtlasData`. tab: `embedding_tables(data)`.
    """
    x_s = cell["alpha_s"] * _nest(z[:, 0], cell["eta_s"], data, tab, 0)
    if data.core == "slab":
        # Slab coordinates lie in [-1, 1] with second moment ~ 1/3: RMS norm ~ alpha_c.
        x_c = cell["alpha_c"] * z[:, 1:] * np.sqrt(3.0 / data.embed_dim)
    else:
        x_c = cell["alpha_c"] * _nest(z[:, 1], cell["eta_c"], data, tab, 1)
    return jnp.concatenate([x_s, x_c], axis=1).astype(jnp.float32)


def _gauss_latent(key: jax.Array, y_pm: jax.Array, rho) -> jax.Array:
    eps = jax.random.normal(key, y_pm.shape, jnp.float32)
    rho = jnp.asarray(rho, jnp.float32)
    return rho * y_pm + jnp.sqrt(jnp.maximum(1.0 - rho * rho, 0.0)) * eps


def _core_latent(key: jax.Array, labels: jax.Array, rho_c, data: AtlasData) -> jax.Array:
    """[n, 1] Gaussian core latent (A1), or [n, m] k-slab coordinates of the labels."""
    if data.core == "slab":
        keys = jax.random.split(key, int(data.embed_dim))
        cdf = B.level_cdf(int(data.slab_k))
        cols = jax.vmap(
            lambda kk: B.slab_from_cdf(
                kk, labels, k=int(data.slab_k), margin=data.slab_margin, cdf=cdf
            )
        )(keys)
        return cols.T
    return _gauss_latent(key, 2.0 * labels.astype(jnp.float32) - 1.0, rho_c)[:, None]


def sample_latents(
    key: jax.Array, n: int, rho_s, rho_c, data: AtlasData, labels_c: jax.Array | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Latents (A1) of n points; traceable in rho_s, rho_c.

    Args:
      key: PRNG key (streams: 0 labels, 1 z_s, 2 z_c, 3 the probe's core labels).
      n: number of points (static).
      rho_s, rho_c: predictivities (scalars, may be traced).
      data: the `AtlasData`.
      labels_c: None (training / test data: z_c shares z_s's label) or the core's own labels.

    Returns:
      (z float32 [n, 2] ([n, 1 + m] with core="slab"), labels int32 [n] of z_s, labels of z_c).
    """
    y = jax.random.bernoulli(jax.random.fold_in(key, 0), 0.5, (n,)).astype(jnp.int32)
    yc = y if labels_c is None else labels_c
    z_s = _gauss_latent(jax.random.fold_in(key, 1), 2.0 * y.astype(jnp.float32) - 1.0, rho_s)
    z_c = _core_latent(jax.random.fold_in(key, 2), yc, rho_c, data)
    return jnp.concatenate([z_s[:, None], z_c], axis=1), y, yc


def sample(
    key: jax.Array, n: int, cell: dict[str, Any], data: AtlasData, tab: dict
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """n points of the cell's task (one label drives both latents).

    Returns:
      (x float32 [n, 2m], y int32 [n] in {0, 1}, z latents).
    """
    z, y, _ = sample_latents(key, n, cell["rho_s"], cell["rho_c"], data)
    return embed(z, cell, data, tab), y, z


def sample_probe(
    key: jax.Array, n: int, cell: dict[str, Any], data: AtlasData, tab: dict
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The cue-conflict probe: z_s from label y_s, z_c from an independent label y_c.

    Returns:
      (x float32 [n, 2m], y_s int32 [n], y_c int32 [n], z latents).
    """
    yc = jax.random.bernoulli(jax.random.fold_in(key, 3), 0.5, (n,)).astype(jnp.int32)
    z, ys, yc = sample_latents(key, n, cell["rho_s"], cell["rho_c"], data, labels_c=yc)
    return embed(z, cell, data, tab), ys, yc, z
