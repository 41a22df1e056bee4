"""Model registry: a `ModelConfig` (or dict) -> pure `init` / `apply` / `logits` functions.

    model = make_model(ModelConfig(name="fcn", width=100, depth=1))
    variables = model.init(key, x_example)          # {"params": ...} (+ "batch_stats")
    logits, updates = model.apply(variables, x, train=True, key=k, dropout_rate=0.1, mask=m)
    model.logits(variables, x)                      # eval-mode logits

All three are pure functions of arrays, so they can be `jit`-ed and `vmap`-ed over stacked
variables, keys and (traced) dropout rates. Static things (sizes, init scheme, which layers have
dropout sites) live in the config; what varies over a sweep is an argument.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from sbjax.models import cnn1d, fcn, image, rnn
from sbjax.models.initializers import check_init
from sbjax.validate import check_choice, check_int, check_range, fail

log = logging.getLogger(__name__)

VECTOR_MODELS = ("linear", "fcn", "cnn1d", "gru", "lstm")
IMAGE_MODELS = image.IMAGE_MODELS
MODEL_NAMES = VECTOR_MODELS + IMAGE_MODELS


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Static description of a model (everything that fixes shapes or structure).

    Attributes:
      name: one of `MODEL_NAMES`.
      width: FCN hidden width w.
      depth: number of hidden layers (FCN), conv layers (cnn1d) or stacked RNN layers.
      activation: ``relu | leaky_relu | prelu | tanh`` (FCN and cnn1d).
      init: ``torch`` (default) | ``kaiming`` | ``kaiming_uniform`` | ``xavier`` |
        ``xavier_uniform`` | ``flax``; see `sbjax.models.initializers`. Image CNNs other than the
        linear heads follow their reference init unless ``init`` is not ``torch`` (see `image`).
      dropout: add a dropout site after every hidden activation (vector models).
      input_dropout: add a dropout site on the input (vector models). Both sites use the
        `dropout_rate` passed to `apply`.
      filters: channels of cnn1d (default 32) or base channels of small_cnn (default 16).
      kernel: cnn1d kernel size k.
      pool: cnn1d optional MaxPool1d(k // 2) after the convs (off by default).
      hidden: RNN hidden size h.
      chunk: RNN input chunk length l (the input [n, D] is read as D / l steps of l features).
      num_classes: number of logits (2 in the paper; other values only for checks).
      leaky_slope: negative slope for ``leaky_relu``.
      bn_momentum: BatchNorm running-average momentum in Flax convention (0.9 = PyTorch 0.1).
      bn_eps: BatchNorm epsilon.
      bn_unbiased: update running variances with the unbiased batch variance (x n/(n-1)), as
        PyTorch does. Off by default (Flax behaviour).
    """

    name: str = "fcn"
    width: int = 100
    depth: int = 1
    activation: str = "relu"
    init: str = "torch"
    dropout: bool = False
    input_dropout: bool = False
    filters: int | None = None
    kernel: int = 7
    pool: bool = False
    hidden: int = 100
    chunk: int = 10
    num_classes: int = 2
    leaky_slope: float = 0.01
    bn_momentum: float = 0.9
    bn_eps: float = 1e-5
    bn_unbiased: bool = False

    def validate(self) -> None:
        """Raises ValueError naming the first bad field."""
        check_choice("name", self.name, MODEL_NAMES)
        check_init(self.init)
        check_int("num_classes", self.num_classes, min_value=1)
        for flag in ("dropout", "input_dropout", "pool", "bn_unbiased"):
            if not isinstance(getattr(self, flag), bool):
                fail(flag, getattr(self, flag), "a bool")
        if self.name == "fcn":
            check_int("width", self.width, min_value=1)
            check_int("depth", self.depth, min_value=1)
        if self.name in ("fcn", "cnn1d"):
            check_choice("activation", self.activation, fcn.ACTIVATIONS)
            check_range("leaky_slope", self.leaky_slope)
        if self.name == "cnn1d":
            check_int("depth", self.depth, min_value=1)
            check_int("kernel", self.kernel, min_value=1)
            if self.filters is not None:
                check_int("filters", self.filters, min_value=1)
            if self.pool and self.kernel < 2:
                fail("kernel", self.kernel, "an integer >= 2 when pool=True (MaxPool1d(k // 2))")
        if self.name in ("gru", "lstm"):
            check_int("hidden", self.hidden, min_value=1)
            check_int("chunk", self.chunk, min_value=1)
            check_int("depth", self.depth, min_value=1)
        if self.name == "small_cnn" and self.filters is not None:
            check_int("filters", self.filters, min_value=1)
        if self.name in IMAGE_MODELS:
            for flag in ("dropout", "input_dropout"):
                if getattr(self, flag):
                    fail(flag, True, "False for image models (they have no dropout sites)")
            check_range("bn_momentum", self.bn_momentum, 0.0, 1.0)
            check_range("bn_eps", self.bn_eps, 0.0, None, lo_open=True)


class Model(NamedTuple):
    """Pure functions of one model (see module docstring).

    Attributes:
      init: ``init(key, x_example) -> variables``; `x_example` fixes the input shape (its batch
        size does not matter).
      apply: ``apply(variables, x, train=False, key=None, dropout_rate=0.0, mask=None) ->
        (logits, updates)``; logits float32 [n, num_classes]; updates is ``{}`` or, for BatchNorm
        models in train mode, ``{"batch_stats": new_stats}``. ``mask`` (float32/bool [n], or None
        for all rows) selects the rows that enter BatchNorm batch statistics in train mode; models
        without BatchNorm ignore it (their rows never interact).
      logits: ``logits(variables, x) -> logits``, eval mode.
      config: the validated `ModelConfig`.
      module: the underlying `flax.linen.Module`.
      has_batch_stats: whether the variables hold a ``"batch_stats"`` collection.
    """

    init: Callable[..., dict]
    apply: Callable[..., tuple[jax.Array, dict]]
    logits: Callable[..., jax.Array]
    config: ModelConfig
    module: nn.Module
    has_batch_stats: bool


def _as_config(config: ModelConfig | Mapping[str, Any]) -> ModelConfig:
    if isinstance(config, ModelConfig):
        return config
    if not isinstance(config, Mapping):
        fail("config", config, "a ModelConfig or a dict of its fields")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    for k in config:
        if k not in fields:
            fail(k, config[k], "a ModelConfig field (one of " + ", ".join(sorted(fields)) + ")")
    return ModelConfig(**config)


def _fcn_module(cfg: ModelConfig) -> nn.Module:
    return fcn.FCN(
        width=cfg.width,
        depth=0 if cfg.name == "linear" else cfg.depth,
        activation=cfg.activation,
        init_scheme=cfg.init,
        dropout=cfg.dropout,
        input_dropout=cfg.input_dropout,
        num_classes=cfg.num_classes,
        leaky_slope=cfg.leaky_slope,
    )


def _cnn1d_module(cfg: ModelConfig) -> nn.Module:
    return cnn1d.CNN1D(
        filters=32 if cfg.filters is None else cfg.filters,
        kernel=cfg.kernel,
        depth=cfg.depth,
        pool=cfg.pool,
        activation=cfg.activation,
        init_scheme=cfg.init,
        dropout=cfg.dropout,
        input_dropout=cfg.input_dropout,
        num_classes=cfg.num_classes,
        leaky_slope=cfg.leaky_slope,
    )


def _rnn_module(cfg: ModelConfig) -> nn.Module:
    return rnn.StackedRNN(
        cell=cfg.name,
        hidden=cfg.hidden,
        chunk=cfg.chunk,
        depth=cfg.depth,
        init_scheme=cfg.init,
        dropout=cfg.dropout,
        input_dropout=cfg.input_dropout,
        num_classes=cfg.num_classes,
    )


# One Flax-module builder per model family: name -> builder(config) -> nn.Module.
MODULE_BUILDERS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "linear": _fcn_module,
    "fcn": _fcn_module,
    "cnn1d": _cnn1d_module,
    "gru": _rnn_module,
    "lstm": _rnn_module,
    **{name: image.build_image_model for name in IMAGE_MODELS},
}
if tuple(MODULE_BUILDERS) != MODEL_NAMES:  # every listed name has exactly one builder
    raise ImportError(f"model builders {tuple(MODULE_BUILDERS)} != MODEL_NAMES {MODEL_NAMES}")


def _build_module(cfg: ModelConfig) -> nn.Module:
    return MODULE_BUILDERS[cfg.name](cfg)


def _check_x(cfg: ModelConfig, x: Any, arg: str) -> None:
    shape = getattr(x, "shape", None)
    if shape is None:
        fail(arg, type(x).__name__, "an array")
    if cfg.name in IMAGE_MODELS:
        if len(shape) != 4:
            fail(f"{arg}.shape", tuple(shape), "NHWC [n, H, W, C] for image models")
    elif len(shape) < 2:
        fail(f"{arg}.shape", tuple(shape), "[n, D] (a batch of vectors)")
    if cfg.name in ("gru", "lstm"):
        d = 1
        for s in shape[1:]:
            d *= s
        if d % cfg.chunk != 0:
            fail(
                "chunk",
                cfg.chunk,
                f"a divisor of the input dimension D={d} (the input is read as D / chunk steps)",
            )


def make_model(config: ModelConfig | Mapping[str, Any]) -> Model:
    """Builds the pure functions of a model from its config.

    Args:
      config: a `ModelConfig` or a dict of its fields (e.g. ``{"name": "fcn", "width": 100}``).

    Returns:
      A `Model` of pure `init`, `apply` and `logits` functions.

    Raises:
      ValueError: unknown model name, init scheme or field, or bad sizes (before any compile).
    """
    cfg = _as_config(config)
    cfg.validate()
    return _model_of(cfg)


@functools.lru_cache(maxsize=64)
def _model_of(cfg: ModelConfig) -> Model:
    # One Model object per config: `train_sweep` reuses compiled programs per model object, so
    # sweeps that pass the same config (a dict, rebuilt every call) compile once per process.
    module = _build_module(cfg)
    has_bs = cfg.name in IMAGE_MODELS
    has_dropout_sites = cfg.name not in IMAGE_MODELS and (cfg.dropout or cfg.input_dropout)

    def init(key: jax.Array, x_example: jax.Array) -> dict:
        _check_x(cfg, x_example, "x_example")
        variables = module.init({"params": key}, jnp.asarray(x_example), train=False)
        return dict(variables)

    def apply(
        variables: Mapping[str, Any],
        x: jax.Array,
        train: bool = False,
        key: jax.Array | None = None,
        dropout_rate: Any = 0.0,
        mask: jax.Array | None = None,
    ) -> tuple[jax.Array, dict]:
        if not isinstance(train, bool):
            fail("train", train, "a Python bool (it selects the program, so it is static)")
        _check_x(cfg, x, "x")
        if train and not has_dropout_sites and not fcn.is_static_zero(dropout_rate):
            if not isinstance(dropout_rate, jax.core.Tracer):
                fail(
                    "dropout_rate",
                    dropout_rate,
                    "0 for a model built without dropout sites (set dropout=True or "
                    "input_dropout=True in ModelConfig)",
                )
        rngs = {"dropout": key} if key is not None else {}
        if train and has_bs:
            if mask is not None and tuple(jnp.shape(mask)) != (x.shape[0],):
                fail("mask.shape", tuple(jnp.shape(mask)), f"({x.shape[0]},): one weight per row")
            logits, updates = module.apply(
                variables,
                x,
                train=True,
                dropout_rate=dropout_rate,
                rngs=rngs,
                mutable=["batch_stats"],
                mask=mask,
            )
            return logits.astype(jnp.float32), dict(updates)
        logits = module.apply(variables, x, train=train, dropout_rate=dropout_rate, rngs=rngs)
        return logits.astype(jnp.float32), {}

    def logits_fn(variables: Mapping[str, Any], x: jax.Array) -> jax.Array:
        return apply(variables, x, train=False)[0]

    return Model(
        init=init, apply=apply, logits=logits_fn, config=cfg, module=module, has_batch_stats=has_bs
    )
