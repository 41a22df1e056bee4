"""Linear model and (w, d)-FCN (Shah et al. 2020, App. B; REFERENCE.md Sec. 2.1).

Also hosts the helpers shared by all sbjax models: activations and a dropout whose rate may be
a traced scalar (so a grid over dropout rates is a `vmap`, not a recompile).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from sbjax.models.initializers import dense

ACTIVATIONS = ("relu", "leaky_relu", "prelu", "tanh")

PRELU_INIT = 0.25  # torch.nn.PReLU default


def is_static_zero(rate: Any) -> bool:
    """True when `rate` is a concrete (non-traced) number equal to 0."""
    if isinstance(rate, jax.core.Tracer):
        return False
    try:
        return float(rate) == 0.0
    except (TypeError, ValueError):
        return False


def flat_input(x: jax.Array) -> jax.Array:
    """[n, ...] -> [n, D] float32, or kept in bfloat16 / float16 (mixed-precision training,
    `TrainConfig.compute_dtype`, casts inputs and parameters to bfloat16)."""
    x = jnp.reshape(x, (x.shape[0], -1))
    return x if x.dtype in (jnp.bfloat16, jnp.float16) else x.astype(jnp.float32)


def dropout(module: nn.Module, x: jax.Array, rate: Any, train: bool) -> jax.Array:
    """Inverted dropout with a possibly traced `rate` (PyTorch semantics).

    In train mode each entry is zeroed with probability `rate` and survivors are scaled by
    1 / (1 - rate). Rate 0 returns `x` exactly: keep mask ``uniform < 1`` is always true and
    ``x / 1 == x``. A concrete rate 0 skips the random draw (and needs no key).

    Args:
      module: the calling module (its ``"dropout"`` RNG stream is used).
      x: activations, any shape.
      rate: drop probability in [0, 1], Python float or traced scalar.
      train: Python bool; eval mode is the identity.

    Returns:
      An array like `x`.
    """
    if not train or is_static_zero(rate):
        return x
    if not module.has_rng("dropout"):
        raise ValueError(
            "key=None is invalid: expected a PRNG key when train=True and dropout_rate may be > 0"
        )
    keep = 1.0 - jnp.asarray(rate, dtype=x.dtype)
    mask = jax.random.bernoulli(module.make_rng("dropout"), keep, x.shape)
    # Guard keep == 0 so the unselected branch never produces inf * 0 = NaN gradients.
    safe_keep = jnp.where(keep > 0, keep, jnp.ones_like(keep))
    return jnp.where(mask, x / safe_keep, jnp.zeros_like(x))


def activate(module: nn.Module, x: jax.Array, activation: str, leaky_slope: float, idx: int):
    """Applies a named activation; ``"prelu"`` creates a learnable scalar slope (init 0.25).

    Like `torch.nn.PReLU()` (num_parameters=1) there is one slope per layer, stored as
    ``params["prelu_<idx>"]``.
    """
    if activation == "relu":
        return nn.relu(x)
    if activation == "leaky_relu":
        return nn.leaky_relu(x, negative_slope=leaky_slope)
    if activation == "tanh":
        return jnp.tanh(x)
    if activation == "prelu":
        slope = module.param(f"prelu_{idx}", nn.initializers.constant(PRELU_INIT), (), x.dtype)
        return jnp.where(x >= 0, x, slope * x)
    raise ValueError(f"activation={activation!r} is invalid: expected one of {ACTIVATIONS}")


class FCN(nn.Module):
    """(w, d)-FCN: ``Dense(w) -> act -> [Dense(w) -> act] x (d-1) -> Dense(num_classes)``.

    ``depth=0`` is the linear model (one Dense layer). Inputs with more than two dimensions are
    flattened to ``[n, -1]``.

    Attributes:
      width: hidden width w.
      depth: number of hidden layers d (0 = linear model).
      activation: one of `ACTIVATIONS`.
      init_scheme: initialisation scheme (see `sbjax.models.initializers`).
      dropout: put a dropout site after every hidden activation.
      input_dropout: put a dropout site on the input.
      num_classes: number of logits (2 throughout the paper).
      leaky_slope: negative slope of ``"leaky_relu"`` (PyTorch default 0.01).
    """

    width: int = 100
    depth: int = 1
    activation: str = "relu"
    init_scheme: str = "torch"
    dropout: bool = False
    input_dropout: bool = False
    num_classes: int = 2
    leaky_slope: float = 0.01

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, dropout_rate: Any = 0.0) -> jax.Array:
        """Args: x float32 [n, D] (or [n, ...], flattened). Returns logits [n, num_classes]."""
        x = flat_input(x)
        if self.input_dropout:
            x = dropout(self, x, dropout_rate, train)
        for i in range(self.depth):
            x = dense(self.width, x.shape[-1], self.init_scheme, name=f"hidden_{i}")(x)
            x = activate(self, x, self.activation, self.leaky_slope, i)
            if self.dropout:
                x = dropout(self, x, dropout_rate, train)
        return dense(self.num_classes, x.shape[-1], self.init_scheme, name="head")(x)
