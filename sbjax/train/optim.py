"""Optimizers with traced hyperparameters, built once, and the reference's coupled weight decay.

`make_optimizer` wraps the optax chain in `optax.inject_hyperparams`: the learning rate, momentum,
weight decay (and SAM's radius rho) live in the optimizer *state*, so one `GradientTransformation`
object serves every model of a sweep (the `Trainer` builds it once) and a vmap over models with
different values shares one compiled program. The inner chain is the same as before (same
operations in the same order), so the numbers are those of the per-update rebuild it replaces.

SAM (`TrainConfig.sam=True`) is `optax.contrib.sam` in opaque mode (one call = the ascent step to
w + rho g/||g|| and the descent step with the gradient there), with
`adv_optimizer = chain(normalize(), sgd(rho))` as in optax's documentation and Foret et al.
Opaque mode takes a `grad_fn(params, i)`; the engine passes one that recomputes the full objective
on the same batch (BatchNorm statistics come from the clean forward pass only, see
`Trainer._update`).
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


def optimizer_hparams(cfg: TrainConfig) -> tuple[str, ...]:
    """Names of the traced hyperparameters held in the optimizer state."""
    return ("lr", "momentum", "weight_decay") + (("sam_rho",) if cfg.sam else ())


def make_optimizer(
    cfg: TrainConfig, hp: dict, steps_per_epoch: int
) -> optax.GradientTransformation:
    """Builds the optimizer of one model.

    Args:
      cfg: static settings (optimizer family, schedule, SAM).
      hp: traced (or Python) scalars "lr", "momentum", "weight_decay" (and "sam_rho" with SAM);
        they are the initial values in the state of `optax.inject_hyperparams`, and `update`
        reads them from the state (so an optimizer built with any values updates a state initialised
        by another with the state's values).
      steps_per_epoch: updates per epoch (the schedule is defined in epochs).

    Note:
      Weight decay is coupled (added to the gradient before the optimizer) on every parameter,
      biases and BatchNorm scales included, as PyTorch's `weight_decay` does in the reference; it
      is not AdamW's decoupled decay. SGD momentum is always on (a traced 0 gives plain SGD
      exactly: trace = 0 * trace + g). With SAM the update must be called with `grad_fn`.
    """

    def factory(lr, momentum, weight_decay, sam_rho=None):
        lr = make_lr_schedule(cfg, lr, steps_per_epoch)
        if cfg.optimizer == "sgd":
            inner = optax.sgd(lr, momentum=momentum)
        elif cfg.optimizer == "adam":
            inner = optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)
        else:  # rmsprop, PyTorch defaults: alpha 0.99, eps added outside the square root
            inner = optax.rmsprop(lr, decay=0.99, eps=1e-8, eps_in_sqrt=False)
        tx = optax.chain(optax.add_decayed_weights(weight_decay), inner)
        if sam_rho is None:
            return tx
        adv = optax.chain(optax.contrib.normalize(), optax.sgd(sam_rho))
        return optax.contrib.sam(tx, adv, sync_period=2, opaque_mode=True)

    values = {k: jnp.asarray(hp[k], jnp.float32) for k in optimizer_hparams(cfg)}
    return optax.inject_hyperparams(factory)(**values)
