"""(h, l, d)-GRU and -LSTM on vector inputs (Shah et al. 2020, App. B; REFERENCE.md Sec. 2.3).

The input [n, D] is read as a sequence of D / l steps of l features (batch-first), run through d
stacked recurrent layers; the top layer's last hidden state feeds a Dense head.

The cells follow PyTorch's `nn.GRU` / `nn.LSTM` equations and parameter layout exactly (two bias
vectors per layer, gate order r, z, n for the GRU and i, f, g, o for the LSTM), so that the
``"torch"`` init, U(+-1/sqrt(hidden)) for every weight and bias, has PyTorch's distribution.
Flax's own cells keep a single bias for some gates, which would change the init distribution.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from sbjax.models.fcn import dropout, flat_input
from sbjax.models.initializers import bias_init, dense, kernel_init, uniform_init

N_GATES = {"gru": 3, "lstm": 4}
UNROLL = 8  # time steps per loop iteration of the recurrence (all of them when T <= 8)


def _per_gate(base_init, n_gates: int):
    """Initialiser for a fused [fan_in, n_gates * h] kernel: `base_init` on each [fan_in, h] block.

    Fan-out based schemes (Xavier) and orthogonal init then see one gate's matrix, as in Flax's
    per-gate Dense layers.
    """

    def init(key, shape, dtype=jnp.float32):
        fan_in, gh = shape
        h = gh // n_gates
        blocks = [base_init(k, (fan_in, h), dtype) for k in jax.random.split(key, n_gates)]
        return jnp.concatenate(blocks, axis=-1)

    return init


def _gru_step(params, carry, xw):
    # xw = x_t @ W_ih + b_ih, precomputed for all steps (one big matmul outside the scan).
    h = carry
    hw = h @ params["kernel_hh"] + params["bias_hh"]
    xr, xz, xn = jnp.split(xw, 3, axis=-1)
    hr, hz, hn = jnp.split(hw, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    h = (1.0 - z) * n + z * h
    return h, h


def _lstm_step(params, carry, xw):
    h, c = carry
    gates = xw + h @ params["kernel_hh"] + params["bias_hh"]
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h


class RNNLayer(nn.Module):
    """One PyTorch-style GRU or LSTM layer over a batch-first sequence.

    Attributes:
      cell: ``"gru"`` or ``"lstm"``. hidden: hidden size h. init_scheme: init scheme.

    Init per scheme: ``torch``: every weight and bias U(+-1/sqrt(h)) (PyTorch's RNN default, which
    uses the hidden size, not fan_in); ``flax``: LeCun-normal input kernels, orthogonal recurrent
    kernels, zero biases (Flax's cell defaults); other schemes: the scheme on each gate's input
    and recurrent kernel (fan_in = l or h), zero biases.
    """

    cell: str = "gru"
    hidden: int = 100
    init_scheme: str = "torch"

    @nn.compact
    def __call__(self, xs: jax.Array) -> jax.Array:
        """Args: xs float32 [n, T, F]. Returns hidden states [n, T, h]."""
        g = N_GATES[self.cell]
        h = self.hidden
        n_in = xs.shape[-1]
        if self.init_scheme == "torch":
            k_ih = k_hh = b = uniform_init(1.0 / math.sqrt(h))
        else:
            k_ih = _per_gate(kernel_init(self.init_scheme), g)
            if self.init_scheme == "flax":
                k_hh = _per_gate(nn.initializers.orthogonal(), g)
            else:
                k_hh = _per_gate(kernel_init(self.init_scheme), g)
            b = bias_init(self.init_scheme, h)  # zeros for every non-torch scheme
        params = {
            "kernel_ih": self.param("kernel_ih", k_ih, (n_in, g * h)),
            "kernel_hh": self.param("kernel_hh", k_hh, (h, g * h)),
            "bias_ih": self.param("bias_ih", b, (g * h,)),
            "bias_hh": self.param("bias_hh", b, (g * h,)),
        }
        n = xs.shape[0]
        xw = jnp.einsum("ntf,fg->tng", xs, params["kernel_ih"]) + params["bias_ih"]
        zeros = jnp.zeros((n, h), xs.dtype)
        # Unrolled (up to UNROLL steps per loop iteration): the paper's sequences are short
        # (T = 5 for d = 50, l = 10), and on XLA:CPU a loop iteration per step costs more than
        # the step's [n, h] x [h, 3h] matmul (1.4x faster training, benchmarks/RESULTS.md).
        unroll = min(xw.shape[0], UNROLL)
        if self.cell == "gru":
            step, init = (lambda c, x: _gru_step(params, c, x)), zeros
        else:
            step, init = (lambda c, x: _lstm_step(params, c, x)), (zeros, zeros)
        _, hs = jax.lax.scan(step, init, xw, unroll=unroll)
        return jnp.swapaxes(hs, 0, 1)


class StackedRNN(nn.Module):
    """(h, l, d)-GRU/LSTM classifier: chunk -> d recurrent layers -> last step -> Dense.

    With ``dropout=True`` a dropout site sits between recurrent layers (PyTorch's ``dropout``
    argument) and before the head; ``input_dropout`` drops input coordinates.

    Attributes:
      cell: ``"gru"`` or ``"lstm"``. hidden: h. chunk: l (must divide D). depth: d.
      init_scheme, dropout, input_dropout, num_classes: as in `sbjax.models.fcn.FCN`. The head
      is a Dense layer initialised by `init_scheme` with fan_in = h (PyTorch default for
      ``torch``).
    """

    cell: str = "gru"
    hidden: int = 100
    chunk: int = 10
    depth: int = 1
    init_scheme: str = "torch"
    dropout: bool = False
    input_dropout: bool = False
    num_classes: int = 2

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, dropout_rate: Any = 0.0) -> jax.Array:
        """Args: x float32 [n, D] with D % chunk == 0. Returns logits [n, num_classes]."""
        x = flat_input(x)
        d = x.shape[-1]
        if d % self.chunk != 0:
            raise ValueError(
                f"chunk={self.chunk!r} is invalid: expected a divisor of the input dimension D={d}"
            )
        if self.input_dropout:
            x = dropout(self, x, dropout_rate, train)
        hs = jnp.reshape(x, (x.shape[0], d // self.chunk, self.chunk))
        for i in range(self.depth):
            if i > 0 and self.dropout:
                hs = dropout(self, hs, dropout_rate, train)
            hs = RNNLayer(self.cell, self.hidden, self.init_scheme, name=f"{self.cell}_{i}")(hs)
        last = hs[:, -1, :]
        if self.dropout:
            last = dropout(self, last, dropout_rate, train)
        return dense(self.num_classes, self.hidden, self.init_scheme, name="head")(last)
