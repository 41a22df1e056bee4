"""Image CNNs with BatchNorm for MNIST-CIFAR (Shah et al. 2020, Sec. 3.1, 4.2; App. B).

Inputs are NHWC float32 [n, 64, 32, 3] in [0, 1] (MNIST block in rows 0-31, CIFAR in rows
32-63), but every model works for any H, W that survive its downsampling (global pooling heads).

Models (``ModelConfig.name``):

* ``small_cnn``: 4 x [conv3x3 -> BN -> ReLU] with (f, 2f, 4f, 4f) channels and strides
  (1, 2, 2, 2), global average pool, Dense. f = `filters` (default 16: about 61k parameters).
  A fast CPU model for the quick presets; not in the paper.
* ``resnet18`` / ``resnet50``: the reference's CIFAR ResNets (REFERENCE.md Sec. 2.2): conv3x3
  stem (stride 1, no bias) -> BN -> ReLU -> MaxPool 3x3 / 2 (pad 1), then BasicBlock [2, 2, 2, 2]
  or torchvision-v1.5 Bottleneck [3, 4, 6, 3] (stride on the 3x3) with 64-128-256-512 planes,
  stages 2-4 stride 2, projection shortcut = 1x1 conv (stride) + BN; global average pool -> Dense.
  Convs kaiming-normal(fan_out) untruncated, BN gamma 1 beta 0, FC PyTorch default.
* ``mobilenetv2``, ``googlenet``, ``densenet121``: the CIFAR layouts of kuangliu/pytorch-cifar
  (MobileNetV2 with the stride-1 second stage and ReLU; GoogLeNet with a 3x3 192-channel stem and
  biased convs; DenseNet-121 with growth 32, [6, 12, 24, 16], reduction 0.5, 3x3 stem).
  PyTorch default layer init (what those constructors use).

Note:
  The kuangliu models end in a fixed-size average pool tuned to 32 x 32 inputs
  (``avg_pool2d(4)`` / ``AvgPool2d(8)``); on 64 x 32 MNIST-CIFAR images that would not match
  their Linear layer, so sbjax uses global average pooling (identical on 32 x 32 inputs).
  All 3x3 convs and pools use explicit symmetric padding (PyTorch ``padding=1``); XLA's "SAME"
  pads asymmetrically for stride 2.

BatchNorm: statistics live in ``variables["batch_stats"]`` (per layer ``mean``, ``var``); train
mode normalises with the biased batch variance and updates running statistics with Flax's momentum
convention (0.9 = PyTorch momentum 0.1); eval mode uses the running statistics. With
``bn_unbiased=True`` running variances are updated with the unbiased batch variance, as PyTorch.
Every model's ``__call__`` takes an optional ``mask`` [n]: in train mode only rows with
``mask > 0`` enter the batch statistics (used for the padded last batch of an epoch).

Init (``ModelConfig.init``): ``"torch"`` (default) reproduces each reference constructor as
above; any other scheme is applied to every conv and the Dense head (zero biases), BN stays 1/0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from sbjax.models.initializers import bias_init, dense, kernel_init, variance_scaling

IMAGE_MODELS = ("small_cnn", "resnet18", "resnet50", "mobilenetv2", "googlenet", "densenet121")

PAD1 = ((1, 1), (1, 1))  # PyTorch padding=1 for 3x3 windows


class Opts(NamedTuple):
    """Static settings shared by every layer of an image model."""

    init_scheme: str = "torch"
    family: str = "torch_default"  # "resnet": kaiming fan_out convs under init_scheme="torch"
    bn_momentum: float = 0.9
    bn_eps: float = 1e-5
    bn_unbiased: bool = False


class BatchNorm(nn.Module):
    """BatchNorm over all axes but the last, with PyTorch's optional unbiased running variance.

    Attributes:
      momentum: running-average decay (Flax convention: new = m * old + (1 - m) * batch).
      epsilon: added to the variance.
      unbiased: update the running variance with var * n / (n - 1) (PyTorch) instead of var,
        n being the number of values per channel that entered the batch statistics.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5
    unbiased: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool, mask: jax.Array | None = None) -> jax.Array:
        """Normalises x [n, ..., C].

        Args:
          x: float32 [n, ..., C].
          train: batch statistics (and running-statistics update) if True, running ones if False.
          mask: optional float32/bool [n]; in train mode only rows with mask > 0 enter the batch
            mean and variance (and n of the unbiased correction). The training engine pads the
            last partial batch with copies of a real example and masks them here, so a padded
            batch gives the statistics of its valid rows only (PyTorch's smaller last batch,
            REFERENCE.md Sec. 3.1). Every row is still normalised. Ignored in eval mode.

        Returns:
          float32 [n, ..., C].
        """
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if train:
            axes = tuple(range(x.ndim - 1))
            if mask is None:
                n = math.prod(x.shape[:-1])
                mean = jnp.mean(x, axis=axes)
                var = jnp.mean(jnp.square(x - mean), axis=axes)  # two-pass, biased (normalising)
                correction = n / (n - 1) if n > 1 else 1.0
            else:
                w = (jnp.asarray(mask) > 0).astype(x.dtype)
                w = w.reshape(w.shape + (1,) * (x.ndim - 1))  # [n, 1, ..., 1]
                # Values per channel that count: valid rows times the spatial size.
                n = jnp.sum(w) * math.prod(x.shape[1:-1])
                denom = jnp.maximum(n, 1.0)
                mean = jnp.sum(x * w, axis=axes) / denom
                var = jnp.sum(jnp.square(x - mean) * w, axis=axes) / denom
                correction = jnp.where(n > 1, n / jnp.maximum(n - 1, 1.0), 1.0)
            if not self.is_initializing():
                run_var = var * correction if self.unbiased else var
                m = self.momentum
                ra_mean.value = m * ra_mean.value + (1.0 - m) * mean
                ra_var.value = m * ra_var.value + (1.0 - m) * run_var
        else:
            mean, var = ra_mean.value, ra_var.value
        return (x - mean) * (jax.lax.rsqrt(var + self.epsilon) * scale) + bias


def torch_conv(
    opts: Opts,
    x: jax.Array,
    features: int,
    k: int,
    stride: int = 1,
    *,
    bias: bool = False,
    groups: int = 1,
    name: str | None = None,
) -> jax.Array:
    """k x k conv with PyTorch padding (k - 1) // 2 (symmetric) and the model's init."""
    fan_in = (x.shape[-1] // groups) * k * k
    if opts.init_scheme == "torch" and opts.family == "resnet":
        k_init = variance_scaling(2.0, "fan_out", "normal")
    else:
        k_init = kernel_init(opts.init_scheme)
    p = (k - 1) // 2
    return nn.Conv(
        features,
        (k, k),
        strides=(stride, stride),
        padding=((p, p), (p, p)),
        use_bias=bias,
        feature_group_count=groups,
        kernel_init=k_init,
        bias_init=bias_init(opts.init_scheme, fan_in),
        name=name,
    )(x)


def _bn(
    opts: Opts, x: jax.Array, train: bool, name: str | None = None, mask: jax.Array | None = None
) -> jax.Array:
    return BatchNorm(opts.bn_momentum, opts.bn_eps, opts.bn_unbiased, name=name)(x, train, mask)


def _head(opts: Opts, x: jax.Array, num_classes: int) -> jax.Array:
    x = jnp.mean(x, axis=(1, 2))  # global average pool -> [n, C]
    return dense(num_classes, x.shape[-1], opts.init_scheme, name="head")(x)


def _max_pool3(x: jax.Array, stride: int) -> jax.Array:
    return nn.max_pool(x, (3, 3), strides=(stride, stride), padding=PAD1)


# ----------------------------------------------------------------------------------------------
# small CNN


class SmallCNN(nn.Module):
    """4 x [conv3x3 -> BN -> ReLU], channels (f, 2f, 4f, 4f), strides (1, 2, 2, 2) -> GAP -> Dense."""

    filters: int = 16
    num_classes: int = 2
    opts: Opts = Opts()

    @nn.compact
    def __call__(
        self, x, train: bool = False, dropout_rate: Any = 0.0, mask: jax.Array | None = None
    ):
        del dropout_rate  # no dropout sites
        f = self.filters
        for i, (c, s) in enumerate(zip((f, 2 * f, 4 * f, 4 * f), (1, 2, 2, 2), strict=True)):
            x = torch_conv(self.opts, x, c, 3, s, name=f"conv_{i}")
            x = nn.relu(_bn(self.opts, x, train, name=f"bn_{i}", mask=mask))
        return _head(self.opts, x, self.num_classes)


# ----------------------------------------------------------------------------------------------
# ResNet (CIFAR variant of the reference, REFERENCE.md Sec. 2.2)


class BasicBlock(nn.Module):
    planes: int
    stride: int = 1
    opts: Opts = Opts()
    expansion = 1

    @nn.compact
    def __call__(self, x, train: bool, mask: jax.Array | None = None):
        o = self.opts
        y = torch_conv(o, x, self.planes, 3, self.stride, name="conv1")
        y = nn.relu(_bn(o, y, train, "bn1", mask))
        y = _bn(o, torch_conv(o, y, self.planes, 3, name="conv2"), train, "bn2", mask)
        return nn.relu(y + _shortcut(o, x, self.planes, self.stride, train, mask))


class Bottleneck(nn.Module):
    """torchvision v1.5 bottleneck: the stride sits on the 3x3 conv."""

    planes: int
    stride: int = 1
    opts: Opts = Opts()
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool, mask: jax.Array | None = None):
        o = self.opts
        out = 4 * self.planes
        y = nn.relu(_bn(o, torch_conv(o, x, self.planes, 1, name="conv1"), train, "bn1", mask))
        y = torch_conv(o, y, self.planes, 3, self.stride, name="conv2")
        y = nn.relu(_bn(o, y, train, "bn2", mask))
        y = _bn(o, torch_conv(o, y, out, 1, name="conv3"), train, "bn3", mask)
        return nn.relu(y + _shortcut(o, x, out, self.stride, train, mask))


def _shortcut(o: Opts, x, out: int, stride: int, train: bool, mask: jax.Array | None = None):
    if stride == 1 and x.shape[-1] == out:
        return x
    return _bn(o, torch_conv(o, x, out, 1, stride, name="down_conv"), train, "down_bn", mask)


class ResNet(nn.Module):
    """CIFAR ResNet with the reference's stem (conv3x3 s1 -> BN -> ReLU -> maxpool 3x3 s2)."""

    block: str = "basic"  # "basic" | "bottleneck"
    stages: Sequence[int] = (2, 2, 2, 2)
    num_classes: int = 2
    opts: Opts = Opts(family="resnet")

    @nn.compact
    def __call__(
        self, x, train: bool = False, dropout_rate: Any = 0.0, mask: jax.Array | None = None
    ):
        del dropout_rate
        o = self.opts
        x = nn.relu(_bn(o, torch_conv(o, x, 64, 3, name="stem_conv"), train, "stem_bn", mask))
        x = _max_pool3(x, 2)
        block = BasicBlock if self.block == "basic" else Bottleneck
        for s, (n_blocks, planes) in enumerate(zip(self.stages, (64, 128, 256, 512), strict=True)):
            for b in range(n_blocks):
                stride = 2 if (s > 0 and b == 0) else 1
                x = block(planes, stride, o, name=f"layer{s + 1}_{b}")(x, train, mask)
        return _head(o, x, self.num_classes)


# ----------------------------------------------------------------------------------------------
# MobileNetV2 (kuangliu CIFAR layout)

# (expansion, out_planes, num_blocks, stride); second stage stride 1 for CIFAR.
MOBILENETV2_CFG = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    out_planes: int
    expansion: int
    stride: int
    opts: Opts = Opts()

    @nn.compact
    def __call__(self, x, train: bool, mask: jax.Array | None = None):
        o = self.opts
        planes = self.expansion * x.shape[-1]
        y = nn.relu(_bn(o, torch_conv(o, x, planes, 1, name="expand"), train, "bn1", mask))
        y = torch_conv(o, y, planes, 3, self.stride, groups=planes, name="depthwise")
        y = nn.relu(_bn(o, y, train, "bn2", mask))
        y = _bn(o, torch_conv(o, y, self.out_planes, 1, name="project"), train, "bn3", mask)
        if self.stride != 1:
            return y
        if x.shape[-1] != self.out_planes:
            x = _bn(
                o, torch_conv(o, x, self.out_planes, 1, name="short_conv"), train, "short_bn", mask
            )
        return y + x


class MobileNetV2(nn.Module):
    num_classes: int = 2
    opts: Opts = Opts()

    @nn.compact
    def __call__(
        self, x, train: bool = False, dropout_rate: Any = 0.0, mask: jax.Array | None = None
    ):
        del dropout_rate
        o = self.opts
        x = nn.relu(_bn(o, torch_conv(o, x, 32, 3, name="stem_conv"), train, "stem_bn", mask))
        i = 0
        for expansion, out, n_blocks, stride in MOBILENETV2_CFG:
            for b in range(n_blocks):
                s = stride if b == 0 else 1
                x = InvertedResidual(out, expansion, s, o, name=f"block_{i}")(x, train, mask)
                i += 1
        x = nn.relu(_bn(o, torch_conv(o, x, 1280, 1, name="conv_last"), train, "bn_last", mask))
        return _head(o, x, self.num_classes)


# ----------------------------------------------------------------------------------------------
# GoogLeNet (kuangliu CIFAR layout)

# (n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_planes) for a3, b3, [pool], a4..e4, [pool], a5, b5.
GOOGLENET_CFG = (
    ("a3", (64, 96, 128, 16, 32, 32)),
    ("b3", (128, 128, 192, 32, 96, 64)),
    ("pool", None),
    ("a4", (192, 96, 208, 16, 48, 64)),
    ("b4", (160, 112, 224, 24, 64, 64)),
    ("c4", (128, 128, 256, 24, 64, 64)),
    ("d4", (112, 144, 288, 32, 64, 64)),
    ("e4", (256, 160, 320, 32, 128, 128)),
    ("pool", None),
    ("a5", (256, 160, 320, 32, 128, 128)),
    ("b5", (384, 192, 384, 48, 128, 128)),
)


class Inception(nn.Module):
    """Four branches: 1x1 | 1x1-3x3 | 1x1-3x3-3x3 (the "5x5") | maxpool3x3-1x1; concatenated."""

    sizes: tuple[int, ...]
    opts: Opts = Opts()

    @nn.compact
    def __call__(self, x, train: bool, mask: jax.Array | None = None):
        o = self.opts
        n1, n3r, n3, n5r, n5, npool = self.sizes

        def cbr(h, c, k, name):
            h = torch_conv(o, h, c, k, bias=True, name=name)
            return nn.relu(_bn(o, h, train, name + "_bn", mask))

        y1 = cbr(x, n1, 1, "b1")
        y2 = cbr(cbr(x, n3r, 1, "b2_red"), n3, 3, "b2")
        y3 = cbr(cbr(cbr(x, n5r, 1, "b3_red"), n5, 3, "b3_a"), n5, 3, "b3_b")
        y4 = cbr(_max_pool3(x, 1), npool, 1, "b4")
        return jnp.concatenate([y1, y2, y3, y4], axis=-1)


class GoogLeNet(nn.Module):
    num_classes: int = 2
    opts: Opts = Opts()

    @nn.compact
    def __call__(
        self, x, train: bool = False, dropout_rate: Any = 0.0, mask: jax.Array | None = None
    ):
        del dropout_rate
        o = self.opts
        x = torch_conv(o, x, 192, 3, bias=True, name="stem_conv")
        x = nn.relu(_bn(o, x, train, "stem_bn", mask))
        for name, sizes in GOOGLENET_CFG:
            if sizes is None:
                x = _max_pool3(x, 2)
            else:
                x = Inception(sizes, o, name=name)(x, train, mask)
        return _head(o, x, self.num_classes)


# ----------------------------------------------------------------------------------------------
# DenseNet-121 (kuangliu CIFAR layout)


class DenseLayer(nn.Module):
    """Pre-activation bottleneck BN-ReLU-conv1x1(4g)-BN-ReLU-conv3x3(g); output [new, x]."""

    growth: int
    opts: Opts = Opts()

    @nn.compact
    def __call__(self, x, train: bool, mask: jax.Array | None = None):
        o = self.opts
        y = torch_conv(o, nn.relu(_bn(o, x, train, "bn1", mask)), 4 * self.growth, 1, name="conv1")
        y = torch_conv(o, nn.relu(_bn(o, y, train, "bn2", mask)), self.growth, 3, name="conv2")
        return jnp.concatenate([y, x], axis=-1)


class DenseNet(nn.Module):
    blocks: Sequence[int] = (6, 12, 24, 16)
    growth: int = 32
    reduction: float = 0.5
    num_classes: int = 2
    opts: Opts = Opts()

    @nn.compact
    def __call__(
        self, x, train: bool = False, dropout_rate: Any = 0.0, mask: jax.Array | None = None
    ):
        del dropout_rate
        o = self.opts
        x = torch_conv(o, x, 2 * self.growth, 3, name="stem_conv")
        for s, n_layers in enumerate(self.blocks):
            for i in range(n_layers):
                x = DenseLayer(self.growth, o, name=f"dense{s + 1}_{i}")(x, train, mask)
            if s < len(self.blocks) - 1:  # transition: BN-ReLU-conv1x1-avgpool2
                out = int(math.floor(x.shape[-1] * self.reduction))
                x = nn.relu(_bn(o, x, train, f"trans{s + 1}_bn", mask))
                x = torch_conv(o, x, out, 1, name=f"trans{s + 1}torch_conv")
                x = nn.avg_pool(x, (2, 2), strides=(2, 2))
        x = nn.relu(_bn(o, x, train, "final_bn", mask))
        return _head(o, x, self.num_classes)


def build_image_model(cfg: Any) -> nn.Module:
    """Builds the Flax module for an image model from a validated `ModelConfig`."""
    opts = Opts(
        init_scheme=cfg.init,
        bn_momentum=float(cfg.bn_momentum),
        bn_eps=float(cfg.bn_eps),
        bn_unbiased=cfg.bn_unbiased,
    )
    nc = cfg.num_classes
    if cfg.name == "small_cnn":
        return SmallCNN(
            filters=16 if cfg.filters is None else cfg.filters, num_classes=nc, opts=opts
        )
    if cfg.name == "resnet18":
        return ResNet("basic", (2, 2, 2, 2), nc, opts._replace(family="resnet"))
    if cfg.name == "resnet50":
        return ResNet("bottleneck", (3, 4, 6, 3), nc, opts._replace(family="resnet"))
    if cfg.name == "mobilenetv2":
        return MobileNetV2(nc, opts)
    if cfg.name == "googlenet":
        return GoogLeNet(nc, opts)
    if cfg.name == "densenet121":
        return DenseNet(num_classes=nc, opts=opts)
    raise ValueError(f"name={cfg.name!r} is invalid: expected one of {IMAGE_MODELS}")
