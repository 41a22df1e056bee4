"""Optimizers with traced hyperparameters and the reference's coupled weight decay.

The optax transformation is rebuilt inside the traced training function from the traced
hyperparameters of one model; its state has the same structure whatever the values, so a vmap over
models with different learning rates, momenta or weight decays shares one compiled program.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from sbjax.train.config import TrainConfig


def make_lr_schedule(cfg: TrainConfig, lr, steps_per_epoch: int):
    """Step schedule: lr * lr_decay ** (number of `lr_boundaries` epochs passed), per update count."""
    if not cfg.lr_boundaries:
        return lr
    bounds = jnp.asarray([b * steps_per_epoch for b in cfg.lr_boundaries], jnp.int32)

    def schedule(count):
        n_passed = jnp.sum(count >= bounds)
        return lr * jnp.asarray(cfg.lr_decay, jnp.float32) ** n_passed

    return schedule


def make_optimizer(cfg: TrainConfig, hp: dict, steps_per_epoch: int) -> optax.GradientTransformation:
    """Builds the optimizer of one model.

    Args:
      cfg: static settings (optimizer family, schedule).
      hp: traced scalars "lr", "momentum", "weight_decay" of this model.
      steps_per_epoch: updates per epoch (the schedule is defined in epochs).

    Note:
      Weight decay is coupled (added to the gradient before the optimizer) on every parameter,
      biases and BatchNorm scales included, as PyTorch's `weight_decay` does in the reference; it
      is not AdamW's decoupled decay. SGD momentum is always on (a traced 0 gives plain SGD
      exactly: trace = 0 * trace + g).
    """
    lr = make_lr_schedule(cfg, hp["lr"], steps_per_epoch)
    if cfg.optimizer == "sgd":
        inner = optax.sgd(lr, momentum=hp["momentum"])
    elif cfg.optimizer == "adam":
        inner = optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)
    else:  # rmsprop, PyTorch defaults: alpha 0.99, eps added outside the square root
        inner = optax.rmsprop(lr, decay=0.99, eps=1e-8, eps_in_sqrt=False)
    return optax.chain(optax.add_decayed_weights(hp["weight_decay"]), inner)
