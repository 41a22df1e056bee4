"""The paper's named synthetic datasets, built from 1-D blocks, and `make_dataset`.

Shah et al. 2020, Sec. 3.1 / App. B (LMS-k, noisy LMS-k, MS-(a,b), MS-k, noisy MS-(5,7), LSN) and
App. E.2.1 (AdvMS-(5,7)). Every dataset is a frozen `Dataset` object holding its parameters and
its rotation; `Dataset.sample(key, n)` is a pure function of the key (jit- and vmap-able over keys,
``n`` static).

Canonical layout: the simple feature(s) S come first, then the complex features S^c, then pure
noise coordinates (if ``d`` exceeds the number of features). A random rotation ``W`` (drawn once
from ``rotation_seed``) maps canonical rows to the model basis: ``x = z @ W``.

Randomness: labels use ``fold_in(key, 0)``; canonical coordinate ``c`` uses
``fold_in(key, c + 1)``, so coordinates are conditionally independent given y and adding
noise coordinates never changes the feature coordinates.

Note:
  The reference generator shuffles rows jointly between blocks and draws everything from one NumPy
  stream (REFERENCE.md Sec. 1.3). sbjax reproduces the distribution, not the random stream.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbjax import validate
from sbjax.data import blocks as B
from sbjax.data.rotation import ROTATIONS, check_rotation_d, make_rotation

__all__ = ["DATASET_NAMES", "NOISE_FILLS", "Block", "Dataset", "make_dataset"]

DATASET_NAMES = ("lms", "noisy_lms", "ms", "noisy_ms", "lsn", "adv_ms")
NOISE_FILLS = ("uniform_0B", "uniform_sym", "gaussian")

_HI = jax.lax.Precision.HIGHEST  # keep the rotation exact on GPU/TPU (no TF32/bf16 passes)


@dataclasses.dataclass(frozen=True)
class Block:
    """A run of ``count`` i.i.d. canonical coordinates ``[start, start + count)`` of one kind.

    Attributes:
      kind: ``"linear"``, ``"noisy_linear"``, ``"slab"``, ``"lsn_linear"``, ``"lsn_slab"`` or
        ``"noise"``.
      start: first canonical coordinate.
      count: number of coordinates.
      args: keyword arguments of the block sampler, as a sorted tuple of (name, value) pairs.
    """

    kind: str
    start: int
    count: int
    args: tuple[tuple[str, Any], ...] = ()

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.args)


def _lsn_linear(key, labels, *, scale):
    del key
    return scale * (2 * labels - 1).astype(jnp.float32)


def _lsn_slab(key, labels, *, width):
    del width
    eps = jnp.where(jax.random.bernoulli(key, 0.5, labels.shape), 1.0, -1.0)
    return labels.astype(jnp.float32) * eps


def _noise(key, labels, *, fill, width):
    shape = labels.shape
    if fill == "uniform_0B":
        return jax.random.uniform(key, shape, jnp.float32, 0.0, width)
    if fill == "uniform_sym":
        return jax.random.uniform(key, shape, jnp.float32, -width, width)
    return width * jax.random.normal(key, shape, jnp.float32)


_SAMPLERS: dict[str, Callable[..., jax.Array]] = {
    "linear": B.linear,
    "noisy_linear": B.noisy_linear,
    "slab": B.noisy_slab,
    "lsn_linear": _lsn_linear,
    "lsn_slab": _lsn_slab,
    "noise": _noise,
}


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A synthetic dataset: a fixed block layout in the canonical basis plus a rotation.

    Build it with `make_dataset`. Hashable by identity, so it can be closed over in (or passed as
    a static argument to) jitted functions.

    Attributes:
      name: dataset name (one of `DATASET_NAMES`).
      params: every parameter it was built with, defaults filled in (JSON-friendly dict).
      d: input dimension.
      blocks: the canonical layout, a tuple of `Block`.
      simple_coords: canonical indices of S (the simplest feature).
      complex_coords: canonical indices of S^c (the complex features; noise coordinates excluded).
      noise_coords: canonical indices of pure-noise coordinates.
      rotation: float32 NumPy ``[d, d]`` orthogonal W (identity when ``rotate=False``).
    """

    name: str
    params: dict[str, Any]
    d: int
    blocks: tuple[Block, ...]
    simple_coords: tuple[int, ...]
    complex_coords: tuple[int, ...]
    noise_coords: tuple[int, ...]
    rotation: np.ndarray
    rotate: bool

    def __post_init__(self):
        # One compiled sampler per (dataset, n); nested inside a user's jit it simply inlines.
        object.__setattr__(
            self, "_sample_canonical_jit", jax.jit(self._sample_canonical, static_argnums=1)
        )

    def __repr__(self) -> str:
        return f"Dataset(name={self.name!r}, d={self.d}, params={self.params!r})"

    # ---------------------------------------------------------------------------------------------
    def _sample_canonical(self, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        # One batched fold_in for all streams: stream 0 labels, stream c + 1 canonical coordinate c.
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(self.d + 1))
        y = jax.random.bernoulli(keys[0], 0.5, (n,)).astype(jnp.int32)
        cols = []
        for blk in self.blocks:
            fn = functools.partial(_SAMPLERS[blk.kind], **blk.kwargs)
            bkeys = keys[1 + blk.start : 1 + blk.start + blk.count]
            cols.append(jax.vmap(fn, in_axes=(0, None))(bkeys, y))  # [count, n]
        z = jnp.concatenate(cols, axis=0).T.astype(jnp.float32)
        return z, y

    def sample_canonical(self, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        """Draws ``n`` points in the canonical (unrotated) basis.

        Args:
          key: PRNG key.
          n: number of points, a Python int > 0 (static under jit).

        Returns:
          ``(z, y)``: z float32 ``[n, d]`` canonical coordinates, y int32 ``[n]`` in {0, 1}, drawn
          i.i.d. Bernoulli(1/2) (balanced in expectation, like the reference).
        """
        validate.check_int("n", n, min_value=1)
        return self._sample_canonical_jit(key, int(n))

    def sample(self, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        """Draws ``n`` points in the model basis: ``x = z @ W`` for canonical ``z``.

        Pure in ``key``: jit with ``static_argnums=1`` (or close over ``n``) and vmap over keys.

        Args:
          key: PRNG key.
          n: number of points, a Python int > 0 (static under jit).

        Returns:
          ``(x, y)``: x float32 ``[n, d]``, y int32 ``[n]`` in {0, 1} (0 = paper's class -1).
        """
        z, y = self.sample_canonical(key, n)
        return self.from_canonical(z), y

    def sample_split(
        self, key: jax.Array, n_train: int, n_test: int
    ) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
        """Draws a train and a test set from independent streams of ``key`` (same rotation).

        Returns:
          ``((x_train, y_train), (x_test, y_test))`` with shapes ``[n_train, d]``, ``[n_train]``,
          ``[n_test, d]``, ``[n_test]``.

        Note:
          The reference draws train and test as one array (test = first rows) and places its
          ``round(N p)`` noisy-linear rows anywhere in it; here each split has its own exact count.
        """
        validate.check_int("n_train", n_train, min_value=1)
        validate.check_int("n_test", n_test, min_value=1)
        ktr, kte = jax.random.split(key)
        return self.sample(ktr, n_train), self.sample(kte, n_test)

    def to_canonical(self, x: jax.Array) -> jax.Array:
        """Model basis -> canonical basis: ``x @ W.T`` (float32 ``[..., d]``)."""
        if not self.rotate:
            return jnp.asarray(x, jnp.float32)
        return jnp.matmul(jnp.asarray(x, jnp.float32), self.rotation.T, precision=_HI)

    def from_canonical(self, z: jax.Array) -> jax.Array:
        """Canonical basis -> model basis: ``z @ W`` (float32 ``[..., d]``)."""
        if not self.rotate:
            return jnp.asarray(z, jnp.float32)
        return jnp.matmul(jnp.asarray(z, jnp.float32), self.rotation, precision=_HI)


# -------------------------------------------------------------------------------------------------
# Builders.

_COMMON = {
    "width": 1.0,
    "noise_fill": "uniform_0B",
    "rotate": True,
    "rotation_seed": 0,
    "rotation": "haar",
}
_SLAB_PROBS = {"slab5_pval": 0.75, "slab7_pval": 0.875}

# Parameters (and defaults) of the paper's datasets; `register_dataset` fills `_DEFAULTS`.
_PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "lms": {
        "d": 50,
        "k": 5,
        "margin": 0.1,
        "slab_margin": None,
        "n_complex": None,
        **_SLAB_PROBS,
        **_COMMON,
    },
    "noisy_lms": {
        "d": 50,
        "k": 5,
        "margin": 0.1,
        "slab_margin": None,
        "n_complex": None,
        "p": 0.1,
        "noise_model": "margin",
        "noise_sampling": "exact_count",
        **_SLAB_PROBS,
        **_COMMON,
    },
    "ms": {
        "d": 50,
        "k": None,
        "k_simple": None,
        "k_complex": None,
        "margin": 0.1,
        "n_complex": None,
        **_SLAB_PROBS,
        **_COMMON,
    },
    "noisy_ms": {
        "d": 50,
        "k": None,
        "k_simple": None,
        "k_complex": None,
        "margin": 0.1,
        "n_complex": None,
        "p": 0.1,
        "noise_model": "opposite_slab",
        "noise_sampling": "exact_count",
        **_SLAB_PROBS,
        **_COMMON,
    },
    "lsn": {
        "d": 50,
        "linear_scale": 1.0,
        "noise_fill": "gaussian",
        "rotate": False,
        "rotation_seed": 0,
        "rotation": "haar",
    },
    "adv_ms": {
        "d": 20,
        "k_simple": 5,
        "k_complex": 7,
        "margin_simple": 0.05,
        "margin_complex": 0.15,
        "n_simple": None,
        "n_complex": None,
        **_SLAB_PROBS,
        **_COMMON,
    },
}


def _level_probs(k: int, p: Mapping[str, Any]) -> tuple[float, ...]:
    if k == 5:
        return (p["slab5_pval"], 1.0, 1.0 - p["slab5_pval"])
    if k == 7:
        return (0.5, p["slab7_pval"], 0.5, 1.0 - p["slab7_pval"])
    return B.default_level_probs(k)


def _slab_args(k: int, margin: float, params: Mapping[str, Any], **noise) -> tuple:
    args = {
        "k": int(k),
        "margin": float(margin),
        "width": float(params["width"]),
        "level_probs": _level_probs(k, params),
        **noise,
    }
    return tuple(sorted(args.items()))


def _resolve_ms_k(p: dict[str, Any], default_simple: int, default_complex: int) -> None:
    k = p.get("k")
    if k is not None:
        for name in ("k_simple", "k_complex"):
            if p[name] is not None and p[name] != k:
                validate.fail(name, p[name], f"None or equal to k={k!r} (k sets both, MS-k)")
        p["k_simple"] = p["k_complex"] = k
    p["k_simple"] = default_simple if p["k_simple"] is None else p["k_simple"]
    p["k_complex"] = default_complex if p["k_complex"] is None else p["k_complex"]


def _check_common(p: dict[str, Any], n_features_min: int) -> None:
    validate.check_int("d", p["d"], min_value=n_features_min)
    validate.check_int("rotation_seed", p["rotation_seed"], min_value=0)
    validate.check_choice("rotation", p["rotation"], ROTATIONS)
    validate.check_choice("noise_fill", p["noise_fill"], NOISE_FILLS)
    if not isinstance(p["rotate"], bool | np.bool_):
        validate.fail("rotate", p["rotate"], "True or False")
    # Before the rotation (or identity) is allocated: d = 100000 would be a 37 GiB array.
    check_rotation_d(int(p["d"]), rotate=bool(p["rotate"]))
    if "width" in p:
        validate.check_range("width", p["width"], 0.0, None, lo_open=True)
    for name in ("slab5_pval", "slab7_pval"):
        if name in p:
            validate.check_range(name, p[name], 0.0, 1.0)


def _check_count(name: str, value: Any, n_before: int, d: int, n_after_min: int = 0) -> int:
    """Checks a feature count: an int >= 1 with room for ``n_before + value + n_after_min <= d``."""
    validate.check_int(name, value, min_value=1)
    if n_before + int(value) + n_after_min > d:
        validate.fail(
            name,
            value,
            f"an integer in [1, {d - n_before - n_after_min}] (d={d} minus {n_before} other "
            "feature coordinate(s))",
        )
    return int(value)


# A builder validates its parameters (in place: it fills defaults that depend on others) and
# returns (feature blocks, simple_coords, complex_coords); `make_dataset` adds noise coordinates
# and the rotation. One builder per dataset name, registered below.
Builder = Callable[[dict[str, Any]], tuple[list[Block], tuple, tuple]]
_BUILDERS: dict[str, Builder] = {}


def register_dataset(name: str, defaults: Mapping[str, Any], builder: Builder) -> None:
    """Adds a dataset to `make_dataset` (and to `DATASET_NAMES`).

    Args:
      name: the dataset's name in `make_dataset(name, ...)`.
      defaults: every parameter it accepts, with its default (include the common ones, e.g.
        ``**_COMMON``: ``d``, ``width``, ``noise_fill``, ``rotate``, ``rotation_seed``,
        ``rotation``). Unknown parameters are rejected by name.
      builder: ``builder(params) -> (blocks, simple_coords, complex_coords)``; it validates
        ``params`` (raising `ValueError` through `sbjax.validate`) before anything is allocated.
    """
    if name in _BUILDERS:
        validate.fail("name", name, "a dataset name not registered yet")
    _DEFAULTS[name] = dict(defaults)
    _BUILDERS[name] = builder


def _build_lsn(p: dict[str, Any]):
    _check_common(p, 2)
    validate.check_range("linear_scale", p["linear_scale"], 0.0, None, lo_open=True)
    return (
        [
            Block("lsn_linear", 0, 1, (("scale", float(p["linear_scale"])),)),
            Block("lsn_slab", 1, 1, (("width", 1.0),)),
        ],
        (0,),
        (1,),
    )


def _build_lms(p: dict[str, Any], *, noisy: bool = False):
    _check_common(p, 2)
    d = int(p["d"])
    # Reference `same_margin=True`: one margin for the linear block and the slabs.
    slab_margin_name = "margin" if p["slab_margin"] is None else "slab_margin"
    if p["slab_margin"] is None:
        p["slab_margin"] = p["margin"]
    validate.check_range("margin", p["margin"], 0.0, 1.0, hi_open=True)
    B.check_slab_params(p["k"], p["slab_margin"], p["width"], margin_name=slab_margin_name)
    p["n_complex"] = d - 1 if p["n_complex"] is None else p["n_complex"]
    n_complex = _check_count("n_complex", p["n_complex"], 1, d)
    lin_args = {"margin": float(p["margin"]), "width": float(p["width"])}
    if not noisy:
        first = Block("linear", 0, 1, tuple(sorted(lin_args.items())))
    else:
        validate.check_range("p", p["p"], 0.0, 1.0)
        validate.check_choice("noise_model", p["noise_model"], B.LIN_NOISE_MODELS)
        validate.check_choice("noise_sampling", p["noise_sampling"], B.NOISE_SAMPLINGS)
        lin_args.update(
            p=float(p["p"]), noise_model=p["noise_model"], noise_sampling=p["noise_sampling"]
        )
        first = Block("noisy_linear", 0, 1, tuple(sorted(lin_args.items())))
    rest = Block("slab", 1, n_complex, _slab_args(p["k"], p["slab_margin"], p))
    return [first, rest], (0,), tuple(range(1, 1 + n_complex))


def _build_ms(p: dict[str, Any], *, noisy: bool = False):
    _resolve_ms_k(p, 5, 7)
    _check_common(p, 2)
    d = int(p["d"])
    B.check_slab_params(p["k_simple"], p["margin"], p["width"], k_name="k_simple")
    B.check_slab_params(p["k_complex"], p["margin"], p["width"], k_name="k_complex")
    p["n_complex"] = d - 1 if p["n_complex"] is None else p["n_complex"]
    n_complex = _check_count("n_complex", p["n_complex"], 1, d)
    noise = {}
    if noisy:
        validate.check_range("p", p["p"], 0.0, 1.0)
        validate.check_choice("noise_model", p["noise_model"], B.SLAB_NOISE_MODELS)
        validate.check_choice("noise_sampling", p["noise_sampling"], B.NOISE_SAMPLINGS)
        noise = {
            "p": float(p["p"]),
            "noise_model": p["noise_model"],
            "noise_sampling": p["noise_sampling"],
        }
    first = Block("slab", 0, 1, _slab_args(p["k_simple"], p["margin"], p, **noise))
    rest = Block("slab", 1, n_complex, _slab_args(p["k_complex"], p["margin"], p))
    return [first, rest], (0,), tuple(range(1, 1 + n_complex))


def _build_adv_ms(p: dict[str, Any]):
    _check_common(p, 2)
    d = int(p["d"])
    B.check_slab_params(
        p["k_simple"],
        p["margin_simple"],
        p["width"],
        k_name="k_simple",
        margin_name="margin_simple",
    )
    B.check_slab_params(
        p["k_complex"],
        p["margin_complex"],
        p["width"],
        k_name="k_complex",
        margin_name="margin_complex",
    )
    p["n_simple"] = d // 2 if p["n_simple"] is None else p["n_simple"]
    n_simple = _check_count("n_simple", p["n_simple"], 0, d, n_after_min=1)
    p["n_complex"] = d - n_simple if p["n_complex"] is None else p["n_complex"]
    n_complex = _check_count("n_complex", p["n_complex"], n_simple, d)
    return (
        [
            Block("slab", 0, n_simple, _slab_args(p["k_simple"], p["margin_simple"], p)),
            Block("slab", n_simple, n_complex, _slab_args(p["k_complex"], p["margin_complex"], p)),
        ],
        tuple(range(n_simple)),
        tuple(range(n_simple, n_simple + n_complex)),
    )


_DEFAULTS: dict[str, dict[str, Any]] = {}
for _name, _builder in (
    ("lms", _build_lms),
    ("noisy_lms", functools.partial(_build_lms, noisy=True)),
    ("ms", _build_ms),
    ("noisy_ms", functools.partial(_build_ms, noisy=True)),
    ("lsn", _build_lsn),
    ("adv_ms", _build_adv_ms),
):
    register_dataset(_name, _PAPER_DEFAULTS[_name], _builder)


def dataset_names() -> tuple[str, ...]:
    """The registered dataset names (the paper's six first)."""
    return tuple(_BUILDERS)


def make_dataset(name: str, **params: Any) -> Dataset:
    """Builds one of the paper's synthetic datasets.

    Shah et al. 2020, Sec. 3.1 / App. B; App. E.2.1 for AdvMS. Labels are 0/1 (0 = paper's -1).

    Names and their own parameters (defaults in brackets):

    * ``"lms"`` -- LMS-k: coordinate 0 linear (S), then ``n_complex`` [d-1] k-slabs (S^c).
      ``k`` [5], ``margin`` [0.1] (linear), ``slab_margin`` [= margin].
    * ``"noisy_lms"`` -- noisy LMS-k: as LMS-k with a noisy linear coordinate. ``p`` [0.1],
      ``noise_model`` ["margin" | "signflip"], ``noise_sampling`` ["exact_count" | "iid"].
    * ``"ms"`` -- MS-(k_simple, k_complex): coordinate 0 a ``k_simple``-slab [5], the rest
      ``k_complex``-slabs [7]; ``k`` sets both (MS-k). ``margin`` [0.1].
    * ``"noisy_ms"`` -- noisy MS-(5,7): the coordinate-0 slab has label noise ``p`` [0.1],
      ``noise_model`` ["opposite_slab" | "gap"], ``noise_sampling`` ["exact_count" | "iid"].
    * ``"lsn"`` -- LSN (Sec. 4.1 / App. F): x_0 = ``linear_scale`` [1] * (2y-1), x_1 = y * eps
      with eps = +-1, x_{2:d} ~ N(0, 1). ``rotate`` defaults to False here (Theorem 1 is stated in
      the canonical basis); ``noise_fill`` defaults to "gaussian".
    * ``"adv_ms"`` -- AdvMS-(5,7) (App. E.2.1): ``n_simple`` [d//2] ``k_simple``-slabs [5] with
      ``margin_simple`` [0.05] (S), then ``n_complex`` [d - n_simple] ``k_complex``-slabs [7] with
      ``margin_complex`` [0.15] (S^c); ``d`` [20]. The paper does not say whether AdvMS is
      rotated; sbjax rotates it like the other slab datasets (``rotate=False`` to turn off).

    For MS-k (``k_simple == k_complex``) every feature is equally simple; ``simple_coords`` is
    still ``(0,)``, the coordinate that plays S in MS-(a,b).

    Common parameters: ``d`` [50; 20 for adv_ms; at most `MAX_ROTATION_D` = 8192, because the
    rotation, or the identity with ``rotate=False``, is stored as a dense float32 d x d array];
    ``width`` B [1]; ``noise_fill`` for coordinates
    beyond the features ["uniform_0B" (reference: U[0, B)) | "uniform_sym" (U(-B, B)) |
    "gaussian" (N(0, B^2))]; ``rotate`` [True]; ``rotation_seed`` [0]; ``rotation`` ["haar" |
    "reference_qr"]; slab level probabilities ``slab5_pval`` [3/4: P(centre | negative) of
    5-slabs] and ``slab7_pval`` [7/8: P(inner | positive) of 7-slabs]; other k use
    `sbjax.data.blocks.default_level_probs`.

    Args:
      name: one of `DATASET_NAMES` (or a name added with `register_dataset`).
      **params: the parameters above.

    Returns:
      A `Dataset`.

    Raises:
      ValueError: unknown name or parameter, or an invalid value (message names the parameter,
        the value and what is allowed), including ``d > MAX_ROTATION_D``. Raised here, before
        anything is compiled or allocated.

    Note:
      Differences from the reference code: Haar rotation by default (``rotation="reference_qr"``
      gives the reference rule); the noisy-linear noise is written to the linear coordinate of
      each drawn set (reference: exact count over train + test together); AdvMS and LSN have no
      reference generator, so the paper's definitions are used.
    """
    validate.check_choice("name", name, dataset_names())
    defaults = _DEFAULTS[name]
    for key, value in params.items():
        if key not in defaults:
            validate.fail(key, value, f"a parameter of {name!r}: one of {', '.join(defaults)}")
    p = {**defaults, **params}
    feats, simple, complex_ = _BUILDERS[name](p)
    d = int(p["d"])
    n_feat = feats[-1].start + feats[-1].count
    blocks_ = list(feats)
    if d > n_feat:
        width = float(p.get("width", 1.0))
        blocks_.append(
            Block("noise", n_feat, d - n_feat, (("fill", p["noise_fill"]), ("width", width)))
        )
    rot = (
        make_rotation(d, int(p["rotation_seed"]), p["rotation"])
        if p["rotate"]
        else np.eye(d, dtype=np.float32)
    )
    params_out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()}
    return Dataset(
        name=name,
        params=params_out,
        d=d,
        blocks=tuple(blocks_),
        simple_coords=simple,
        complex_coords=complex_,
        noise_coords=tuple(range(n_feat, d)),
        rotation=rot,
        rotate=bool(p["rotate"]),
    )
