"""PyTorch baselines for the training-throughput benchmark (CPU, float32).

Two ways to train K seeds of a (100, 1)-FCN with SGD and 2-logit cross-entropy:

* :func:`train_reference` -- the reference implementation's style: a ``DataLoader`` with
  ``shuffle=True`` over a ``TensorDataset``, one ``nn.Module`` per seed in a Python loop,
  ``optimizer.zero_grad(); loss.backward(); optimizer.step()``. torch's default thread count.
* :func:`train_best` -- the fastest CPU PyTorch we could write: all K models' weights as batched
  tensors ``[K, ...]``, forward and backward written out by hand with ``torch.baddbmm`` /
  ``torch.bmm`` (no autograd tape), in-place SGD, index permutations drawn up front per
  seed and epoch, no DataLoader, torch threads = core count.

Both keep the last partial batch (the reference's ``drop_last=False``) and use PyTorch's
default Linear init, U(+-1/sqrt(fan_in)) for weights and biases.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from torch import nn


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(-1) == y).float().mean())


def train_reference(
    x: np.ndarray,
    y: np.ndarray,
    n_seeds: int,
    epochs: int,
    *,
    width: int = 100,
    lr: float = 0.1,
    batch_size: int = 256,
) -> dict:
    """Reference-style training: one model at a time, DataLoader(shuffle=True).

    Args:
      x: float32 [n, d] training inputs (model basis).
      y: int [n] labels in {0, 1}.
      n_seeds: K, the number of models trained one after another.
      epochs: passes over the data per model.
      width: hidden units of the one-hidden-layer FCN.
      lr: SGD learning rate (no momentum, no weight decay).
      batch_size: minibatch size; the last partial batch is kept.

    Returns:
      ``{"wall_s": float, "compile_s": float, "cpu_s": float, "train_acc": list[float]
      of length K}`` (``cpu_s``: process CPU seconds of the timed region, all threads); wall time
      covers model construction, data loading and training of all K models (not the accuracy
      evaluation afterwards); ``compile_s`` is torch's one-time warm-up (first optimizer step on a
      throwaway model), excluded from ``wall_s``.
    """
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    d = xt.shape[1]
    loader_ds = torch.utils.data.TensorDataset(xt, yt)
    loss_fn = nn.CrossEntropyLoss()
    # torch's first optimizer step pays ~1 s of one-time lazy initialisation; time it apart (as
    # "compile") on a throwaway model so wall_s is the steady-state cost per model.
    t0 = time.perf_counter()
    _reference_step(d, width, lr, xt[:batch_size], yt[:batch_size], loss_fn)
    warmup = time.perf_counter() - t0
    models = []
    c0 = time.process_time()
    t0 = time.perf_counter()
    for seed in range(n_seeds):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Linear(width, 2))
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        loader = torch.utils.data.DataLoader(loader_ds, batch_size=batch_size, shuffle=True)
        for _ in range(epochs):
            for xb, yb in loader:
                opt.zero_grad()
                loss = loss_fn(model(xb), yb)
                loss.backward()
                opt.step()
        models.append(model)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    with torch.no_grad():
        acc = [_accuracy(m(xt), yt) for m in models]
    return {"wall_s": wall, "compile_s": warmup, "cpu_s": cpu, "train_acc": acc}


def _reference_step(d, width, lr, xb, yb, loss_fn):
    model = nn.Sequential(nn.Linear(d, width), nn.ReLU(), nn.Linear(width, 2))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    opt.zero_grad()
    loss_fn(model(xb), yb).backward()
    opt.step()


def _init_batched(n_seeds: int, d: int, width: int, seed: int) -> list[torch.Tensor]:
    """PyTorch-default init for K models at once: U(+-1/sqrt(fan_in)) for weights and biases.

    Weights are stored input-major ([K, fan_in, fan_out]) so the forward pass is ``x @ W``.
    """
    g = torch.Generator().manual_seed(seed)

    def u(shape, fan_in):
        bound = 1.0 / fan_in**0.5
        return (torch.rand(shape, generator=g) * 2.0 - 1.0) * bound

    w1 = u((n_seeds, d, width), d)
    b1 = u((n_seeds, 1, width), d)
    w2 = u((n_seeds, width, 2), width)
    b2 = u((n_seeds, 1, 2), width)
    return [w1, b1, w2, b2]


def train_best(
    x: np.ndarray,
    y: np.ndarray,
    n_seeds: int,
    epochs: int,
    *,
    width: int = 100,
    lr: float = 0.1,
    batch_size: int = 256,
    threads: int | None = None,
    seed: int = 0,
) -> dict:
    """All K models trained together with batched matmuls and a hand-written backward pass.

    Each seed gets its own permutation of the data each epoch (drawn up front, as in the
    reference every seed sees its own shuffles); a step gathers a [K, B, d] batch by index.

    Args:
      x: float32 [n, d] training inputs.
      y: int [n] labels in {0, 1}.
      n_seeds: K, models trained side by side.
      epochs: passes over the data.
      width: hidden units.
      lr: SGD learning rate.
      batch_size: minibatch size; the last partial batch is kept.
      threads: torch intra-op threads; default ``os.cpu_count()``.
      seed: seeds the init and the permutations.

    Returns:
      ``{"wall_s": float, "compile_s": float, "cpu_s": float, "train_acc": list[float]
      of length K}`` (``cpu_s``: process CPU seconds of the timed region, all threads); wall time
      covers init, drawing the permutations and training; ``compile_s`` is a one-epoch warm-up on
      512 points, excluded from ``wall_s``.
    """
    # SBJAX_BENCH_TORCH_THREADS overrides the default (spinning OpenMP threads collapse on a
    # machine shared with other jobs; 1 thread is the fair setting there).
    env_threads = int(os.environ.get("SBJAX_BENCH_TORCH_THREADS", "0") or 0)
    torch.set_num_threads(threads or env_threads or os.cpu_count() or 1)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    # Warm-up on a slice (thread pool start, first-call allocations), timed apart as "compile".
    t0 = time.perf_counter()
    _train_batched(
        xt[: 2 * batch_size], yt[: 2 * batch_size], n_seeds, 1, width, lr, batch_size, seed
    )
    warmup = time.perf_counter() - t0
    c0 = time.process_time()
    t0 = time.perf_counter()
    w1, b1, w2, b2 = _train_batched(xt, yt, n_seeds, epochs, width, lr, batch_size, seed)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    with torch.no_grad():
        n, d = xt.shape
        h = torch.baddbmm(b1, xt.expand(n_seeds, n, d), w1).clamp_(min=0.0)
        logits = torch.baddbmm(b2, h, w2)
        acc = (logits.argmax(-1) == yt).float().mean(1).tolist()
    return {"wall_s": wall, "compile_s": warmup, "cpu_s": cpu, "train_acc": acc}


@torch.no_grad()
def _train_batched(xt, yt, k, epochs, width, lr, batch_size, seed):
    """The training loop of :func:`train_best`; returns [w1, b1, w2, b2], each [K, ...]."""
    n, d = xt.shape
    w1, b1, w2, b2 = _init_batched(k, d, width, seed)
    g = torch.Generator().manual_seed(seed + 1)
    onehot = torch.eye(2)
    for _ in range(epochs):
        # One argsort of random keys gives K independent permutations for the epoch at once.
        perm = torch.argsort(torch.rand(k, n, generator=g), dim=1)
        for start in range(0, n, batch_size):
            idx = perm[:, start : start + batch_size]  # [K, b]
            bsz = idx.shape[1]
            xb = xt[idx]  # [K, b, d]
            yb = onehot[yt[idx]]  # [K, b, 2]
            h = torch.baddbmm(b1, xb, w1).clamp_(min=0.0)  # [K, b, width]
            logits = torch.baddbmm(b2, h, w2)  # [K, b, 2]
            # d(mean CE)/d logits = (softmax - onehot) / b
            dlog = torch.softmax(logits, -1).sub_(yb).mul_(1.0 / bsz)
            dh = torch.bmm(dlog, w2.transpose(1, 2)).mul_(h > 0)  # [K, b, width]
            w2.baddbmm_(h.transpose(1, 2), dlog, alpha=-lr)
            b2.sub_(dlog.sum(1, keepdim=True), alpha=lr)
            w1.baddbmm_(xb.transpose(1, 2), dh, alpha=-lr)
            b1.sub_(dh.sum(1, keepdim=True), alpha=lr)
    return [w1, b1, w2, b2]
