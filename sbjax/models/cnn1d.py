"""(f, k, d)-CNN on vector inputs (Shah et al. 2020, App. B; REFERENCE.md Sec. 2.3).

The paper writes "k x k" filters, but the synthetic inputs are vectors and the reference CNN is
1-D: the input [n, D] is read as a length-D signal with one channel.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from sbjax.models.fcn import activate, dropout, flat_input
from sbjax.models.initializers import bias_init, dense, kernel_init


class PatchConv1D(nn.Module):
    """A 1-D convolution computed as one matmul over `kernel` shifted copies of the input.

    Same parameters as `flax.linen.Conv` (``kernel`` [k, C, f], ``bias`` [f], created in that
    order, so the same init key gives the same values) and the same cross-correlation with
    symmetric zero padding (k-1)//2; only the summation order differs (float rounding). Why:
    XLA:CPU runs these tiny convolutions (C = 1, D = 50) far below its matmul speed, and a
    vmapped convolution becomes a grouped one; as [n, L, k*C] x [k*C, f] the layer is a plain
    GEMM on every backend (2.5x faster training of cnn1d_32x7x1 on the 2-core CPU,
    benchmarks/RESULTS.md).

    Attributes:
      features: output channels f. kernel: kernel size k. init_scheme: init scheme (fan_in = k*C).
    """

    features: int
    kernel: int
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        """Args: h [n, L, C]. Returns [n, L + 2*((k-1)//2) - k + 1, f] (L for odd k)."""
        _, length, c = h.shape
        k, f = self.kernel, self.features
        w = self.param("kernel", kernel_init(self.init_scheme), (k, c, f))
        b = self.param("bias", bias_init(self.init_scheme, k * c), (f,))
        pad = (k - 1) // 2
        hp = jnp.pad(h, ((0, 0), (pad, pad), (0, 0)))
        out_len = length + 2 * pad - k + 1
        # patches[:, t, j*C + c] = hp[:, t + j, c], matching w.reshape(k*C, f)'s row order.
        patches = jnp.concatenate([hp[:, j : j + out_len, :] for j in range(k)], axis=-1)
        return patches @ w.reshape(k * c, f) + b


class CNN1D(nn.Module):
    """``Conv1d(1->f, k) -> act -> (d-1) x [Conv1d(f->f, k) -> act] -> [MaxPool1d(k//2)] ->
    flatten -> Dense(D) -> act -> Dense(num_classes)``.

    Convolutions use symmetric zero padding (k-1)//2 on both sides, like PyTorch's
    ``padding=(k-1)//2`` (length-preserving for odd k). The optional max-pool (window and stride
    k // 2, PyTorch's MaxPool1d default stride) is off by default, as in the paper's runs.

    Note:
      Flattening is length-major (NWC) rather than PyTorch's channel-major (NCW); this only
      permutes the rows of the following Dense kernel, whose init distribution is unchanged.

    Attributes:
      filters: channels f. kernel: kernel size k. depth: number of conv layers d.
      pool: apply the optional max-pool.
      activation, init_scheme, dropout, input_dropout, num_classes, leaky_slope: as in
      `sbjax.models.fcn.FCN`.
    """

    filters: int = 32
    kernel: int = 7
    depth: int = 1
    pool: bool = False
    activation: str = "relu"
    init_scheme: str = "torch"
    dropout: bool = False
    input_dropout: bool = False
    num_classes: int = 2
    leaky_slope: float = 0.01

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, dropout_rate: Any = 0.0) -> jax.Array:
        """Args: x float32 [n, D]. Returns logits [n, num_classes]."""
        x = flat_input(x)
        d_in = x.shape[-1]
        if self.input_dropout:
            x = dropout(self, x, dropout_rate, train)
        h = x[:, :, None]  # [n, D, 1] (NWC)
        for i in range(self.depth):
            h = PatchConv1D(self.filters, self.kernel, self.init_scheme, name=f"conv_{i}")(h)
            h = activate(self, h, self.activation, self.leaky_slope, i)
        if self.pool:
            w = self.kernel // 2
            h = nn.max_pool(h, (w,), strides=(w,), padding="VALID")
        h = jnp.reshape(h, (h.shape[0], -1))
        if self.dropout:
            h = dropout(self, h, dropout_rate, train)
        h = dense(d_in, h.shape[-1], self.init_scheme, name="fc")(h)
        h = activate(self, h, self.activation, self.leaky_slope, self.depth)
        if self.dropout:
            h = dropout(self, h, dropout_rate, train)
        return dense(self.num_classes, h.shape[-1], self.init_scheme, name="head")(h)
