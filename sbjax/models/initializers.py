"""Weight initialisation schemes and parameter scaling for sbjax models.

Schemes (the `init` field of `ModelConfig`):

* ``"torch"`` (default): PyTorch's default for `nn.Linear` / `nn.Conv*`: weights AND biases
  ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)). The reference implementation never changes it
  (REFERENCE.md Sec. 2.1). The kernel uses ``variance_scaling(1/3, "fan_in", "uniform")``, whose
  bound is sqrt(3 * (1/3) / fan_in) = 1/sqrt(fan_in); the bias needs its layer's fan_in, which Flax
  bias initialisers do not see, so layers pass it explicitly (`bias_init`).
* ``"kaiming"``: He normal, N(0, 2/fan_in), untruncated; zero bias (torch ``kaiming_normal_``).
* ``"kaiming_uniform"``: He uniform, U(+-sqrt(6/fan_in)); zero bias.
* ``"xavier"``: Glorot normal, N(0, 2/(fan_in + fan_out)), untruncated; zero bias
  (torch ``xavier_normal_``).
* ``"xavier_uniform"``: Glorot uniform, U(+-sqrt(6/(fan_in + fan_out))); zero bias.
* ``"flax"``: Flax's own defaults (LeCun truncated normal kernels, zero bias).

The init *scale* of Shah et al. 2020, App. C, Table 9 (x0.1 ... x10) is applied by the trainer
with `scale_params`, so that it can be a traced hyperparameter.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from sbjax.validate import check_choice

INIT_SCHEMES = ("torch", "kaiming", "kaiming_uniform", "xavier", "xavier_uniform", "flax")

Initializer = Any  # jax.nn.initializers.Initializer


def check_init(init: str) -> None:
    """Raises ValueError unless `init` is a known scheme name."""
    check_choice("init", init, INIT_SCHEMES)


# Every initialiser draws a flat vector and reshapes it: with JAX's default partitionable
# threefry, compiling a draw of a 4-D conv-kernel shape costs 3-6x more CPU time than the same
# number of values drawn flat (about 1 s versus 0.25 s per kernel on the project machine), and
# model init compiles are otherwise dominated by that. The distributions are unchanged.


def uniform_init(bound: float) -> Initializer:
    """Returns an initialiser drawing i.i.d. U(-bound, bound) of any shape."""

    def init(key, shape, dtype=jnp.float32):
        shape = tuple(shape)
        flat = jax.random.uniform(key, (math.prod(shape),), dtype, -bound, bound)
        return flat.reshape(shape)

    return init


def variance_scaling(scale: float, mode: str, distribution: str) -> Initializer:
    """Flax/Keras ``variance_scaling`` for Dense/Conv kernels (input axis -2, output axis -1).

    Same fans and distributions as `jax.nn.initializers.variance_scaling` (receptive field =
    product of the leading axes), drawn flat (see above).

    Args:
      scale: variance scale s; the variance is s / fan.
      mode: ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"``.
      distribution: ``"uniform"`` (U(+-sqrt(3 s / fan))), ``"normal"`` (untruncated N(0, s / fan))
        or ``"truncated_normal"`` (truncated at 2 std and rescaled to variance s / fan).
    """
    check_choice("mode", mode, ("fan_in", "fan_out", "fan_avg"))
    check_choice("distribution", distribution, ("uniform", "normal", "truncated_normal"))

    def init(key, shape, dtype=jnp.float32):
        shape = tuple(shape)
        if len(shape) < 2:
            raise ValueError(f"shape={shape!r} is invalid: expected a kernel of rank >= 2")
        rf = math.prod(shape[:-2])
        fan_in, fan_out = shape[-2] * rf, shape[-1] * rf
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        var = scale / max(fan, 1)
        n = math.prod(shape)
        if distribution == "uniform":
            bound = math.sqrt(3.0 * var)
            flat = jax.random.uniform(key, (n,), dtype, -bound, bound)
        elif distribution == "normal":
            flat = jax.random.normal(key, (n,), dtype) * jnp.asarray(math.sqrt(var), dtype)
        else:
            # std of a standard normal truncated to [-2, 2] (the constant Flax uses)
            std = math.sqrt(var) / 0.87962566103423978
            flat = jax.random.truncated_normal(key, -2.0, 2.0, (n,), dtype) * jnp.asarray(
                std, dtype
            )
        return flat.reshape(shape)

    return init


def kernel_init(init: str) -> Initializer:
    """Kernel initialiser of a Dense/Conv layer (Flax layout, input axis -2, output axis -1).

    Args:
      init: a scheme name from `INIT_SCHEMES`.

    Returns:
      An initialiser `(key, shape, dtype) -> array`. For conv kernels `(k..., C_in, C_out)` the
      fan_in is `prod(k) * C_in` and fan_out `prod(k) * C_out`, as in PyTorch.
    """
    check_init(init)
    vs = variance_scaling
    return {
        "torch": vs(1.0 / 3.0, "fan_in", "uniform"),
        "kaiming": vs(2.0, "fan_in", "normal"),
        "kaiming_uniform": vs(2.0, "fan_in", "uniform"),
        "xavier": vs(1.0, "fan_avg", "normal"),
        "xavier_uniform": vs(1.0, "fan_avg", "uniform"),
        "flax": vs(1.0, "fan_in", "truncated_normal"),  # = nn.initializers.lecun_normal()
    }[init]


def bias_init(init: str, fan_in: int) -> Initializer:
    """Bias initialiser: U(+-1/sqrt(fan_in)) for ``"torch"``, zeros otherwise.

    Args:
      init: a scheme name from `INIT_SCHEMES`.
      fan_in: the layer's fan_in (inputs per output unit, `prod(kernel) * C_in` for convs).
    """
    check_init(init)
    if init == "torch":
        return uniform_init(1.0 / math.sqrt(max(int(fan_in), 1)))
    return nn.initializers.zeros


def dense(features: int, fan_in: int, init: str, *, use_bias: bool = True, name=None) -> nn.Dense:
    """A `flax.linen.Dense` initialised by scheme `init` (call inside a compact method)."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        kernel_init=kernel_init(init),
        bias_init=bias_init(init, fan_in),
        name=name,
    )


def conv(
    features: int,
    kernel_size: tuple[int, ...],
    in_features: int,
    init: str,
    *,
    strides: int | tuple[int, ...] = 1,
    padding: Any = "VALID",
    use_bias: bool = True,
    kernel_init_override: Initializer | None = None,
    name=None,
) -> nn.Conv:
    """A `flax.linen.Conv` initialised by scheme `init` (call inside a compact method)."""
    fan_in = in_features * math.prod(kernel_size)
    return nn.Conv(
        features,
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        kernel_init=kernel_init_override or kernel_init(init),
        bias_init=bias_init(init, fan_in),
        name=name,
    )


def _is_norm_layer(tree: Any) -> bool:
    # A BatchNorm/LayerNorm params dict is exactly {"scale", "bias"}: its affine parameters are
    # not a "random init" and are left alone by the init-scale factor.
    return isinstance(tree, dict) and set(tree) == {"scale", "bias"}


def scale_params(variables: dict, scale: Any) -> dict:
    """Multiplies every kernel and bias in ``variables["params"]`` by `scale`.

    The init-scale factor of Shah et al. 2020, App. C, Table 9. Leaves of other collections
    (``batch_stats``), normalisation layers' scale/bias and PReLU slopes are left unchanged.

    Args:
      variables: a variables dict as returned by `Model.init` (one model, or stacked: the
        multiplication broadcasts a scalar).
      scale: a Python or traced scalar.

    Returns:
      A new variables dict with the same structure.
    """

    def rec(tree, key_name):
        if isinstance(tree, dict):
            if _is_norm_layer(tree):
                return tree
            return {k: rec(v, k) for k, v in tree.items()}
        if key_name.startswith(("kernel", "bias")):
            return tree * jnp.asarray(scale, dtype=jnp.result_type(tree))
        return tree

    out = dict(variables)
    out["params"] = rec(dict(variables["params"]), "")
    return out
