"""Penultimate features and first-layer weights of registry models, read from outside the models.

Diagnostics that look inside a network (last-layer probes, Kirichenko et al. 2023; LD-SB, Morwani
et al. 2023) need two things the `Model` functions do not return:

* `features_fn(model)`: the penultimate representation phi(x), i.e. the input of the final Dense
  layer ("head"), so that `logits = phi(x) @ head.kernel + head.bias`. It is read with a Flax
  method interceptor (`flax.linen.intercept_methods`) on the top-level `head` submodule, so the
  features come from the model's own eval-mode forward pass (activations, PReLU slopes, BatchNorm
  running statistics, pooling) and no model file needs a hook. Every registry family names its
  output layer `head`, so every family is supported: for the FCN the last hidden layer's
  post-activation [n, width] (the flattened input [n, D] for `linear`), for cnn1d the pooled
  conv features, for GRU/LSTM the top layer's last hidden state, for image CNNs the globally
  pooled features.
* `first_layer_kernel(model)`: the first Dense layer's weight matrix [D, width] (Flax layout:
  rows index input features, columns hidden units; W1 of Morwani et al. is its transpose). Only
  the FCN family (`fcn`, `linear`) has a first layer that is one dense matrix on the flattened
  input; other families raise a `ValueError` naming `model`.

Both return pure functions of ONE model's variables, hashable and cached per model, so they can be
static arguments of `jit` and vmapped over stacked variables [M, ...] like `model.logits`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from sbjax.models.registry import IMAGE_MODELS, Model
from sbjax.validate import fail

FeaturesFn = Callable[[Any, jax.Array], jax.Array]

FEATURE_MODELS = ("linear", "fcn", "cnn1d", "gru", "lstm", *IMAGE_MODELS)
FIRST_LAYER_MODELS = ("linear", "fcn")

__all__ = [
    "FEATURE_MODELS",
    "FIRST_LAYER_MODELS",
    "features_fn",
    "first_layer_kernel",
    "head_params",
]

_HEAD = ("head",)
# One features function per model (keyed by its `apply`): a new closure per call would be a new
# static argument, i.e. a recompile, in every jitted diagnostic.
_FEATURES_CACHE: dict[Any, FeaturesFn] = {}
_KERNEL_CACHE: dict[Any, Callable[[Any], jax.Array]] = {}


def _check_model(model: Any) -> None:
    if not isinstance(model, Model):
        fail("model", type(model).__name__, "a sbjax.models.Model from make_model(...)")


def features_fn(model: Model) -> FeaturesFn:
    """Penultimate features of a registry model: the input of its final Dense layer `head`.

    Args:
        model: a `Model` from `sbjax.models.make_model` (any family in `FEATURE_MODELS`).

    Returns:
        `fn(variables, x) -> float32 [n, h]` for ONE model's variables (eval mode), with
        `model.logits(variables, x) == fn(variables, x) @ kernel + bias` for the head's
        `head_params(variables)`. h is the FCN width (D, the flattened input size, for `linear`).
        The same function object is returned for the same model (jit caches stay warm).

    Raises:
        ValueError: naming `model` if it is not a `Model` or its family is not supported; at trace
            time if the model has no top-level `head` layer called exactly once.
    """
    _check_model(model)
    if model.config.name not in FEATURE_MODELS:
        fail("model", model.config.name, "a model family in " + ", ".join(FEATURE_MODELS))
    cached = _FEATURES_CACHE.get(model.apply)
    if cached is not None:
        return cached
    name = model.config.name

    def fn(variables: Any, x: jax.Array) -> jax.Array:
        captured = []

        def interceptor(next_fun, args, kwargs, context):
            mod = context.module
            if (
                context.method_name == "__call__"
                and mod.scope is not None
                and tuple(mod.scope.path) == _HEAD
            ):
                captured.append(args[0])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(interceptor):
            model.logits(variables, x)
        if len(captured) != 1:
            fail(
                "model",
                name,
                f"a model whose top-level Dense 'head' runs once per call (found {len(captured)})",
            )
        feats = captured[0]
        return jnp.reshape(feats, (feats.shape[0], -1)).astype(jnp.float32)

    _FEATURES_CACHE[model.apply] = fn
    return fn


def head_params(variables: Any) -> tuple[jax.Array, jax.Array]:
    """(kernel [h, C], bias [C]) of the final Dense layer `head` (stacked variables give [M, ...])."""
    try:
        head = variables["params"]["head"]
        return head["kernel"], head["bias"]
    except (KeyError, TypeError):
        fail("variables", "a pytree without params/head", "registry variables with a 'head' layer")


def first_layer_kernel(model: Model) -> Callable[[Any], jax.Array]:
    """Weight matrix of the first layer of an FCN-family model, in Flax layout [D, width].

    For `fcn` this is `params["hidden_0"]["kernel"]`; for `linear` (no hidden layer) the head's
    kernel [D, num_classes]. The rows index the (flattened) input features in the model basis;
    Morwani et al.'s W1 [width, D] is its transpose, so W1's right singular vectors are this
    matrix's left singular vectors.

    Args:
        model: a `Model` of family `fcn` or `linear`.

    Returns:
        `fn(variables) -> float32 [D, width]` for ONE model's variables (cached per model).

    Raises:
        ValueError: naming `model` for other families (their first layer is a convolution or a
            recurrent cell, not one dense matrix on the flattened input).
    """
    _check_model(model)
    if model.config.name not in FIRST_LAYER_MODELS:
        fail(
            "model",
            model.config.name,
            "a model family with a dense first layer on the flattened input: "
            + ", ".join(FIRST_LAYER_MODELS)
            + " (LD-SB of convolutional / recurrent models is not supported yet)",
        )
    cached = _KERNEL_CACHE.get(model.apply)
    if cached is not None:
        return cached
    layer = "head" if model.config.name == "linear" else "hidden_0"

    def fn(variables: Any) -> jax.Array:
        try:
            return jnp.asarray(variables["params"][layer]["kernel"], jnp.float32)
        except (KeyError, TypeError):
            fail("variables", f"a pytree without params/{layer}/kernel", f"{name} variables")

    name = model.config.name
    _KERNEL_CACHE[model.apply] = fn
    return fn
