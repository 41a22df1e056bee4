"""PGD inside the training step: adversarial training (Madry et al.) with a traced budget.

The attack follows the reference's PGD (REFERENCE.md Sec. 5.1-5.3): random start of size
`rand_init`, `steps` ascent steps on the cross-entropy, L2 steps along g / ||g|| (per example) with
projection onto the eps-ball, Linf steps along sign(g) with clipping, and after every step a clamp
of x + delta into the box `bounds`. The budget `eps` is a traced hyperparameter, so a sweep over
epsilon (paper App. E.2.1, Fig. 7) is one compiled program; the step size is `step_frac * eps`
(the reference's MNIST-CIFAR run: Linf eps 0.3, step 0.12 = 0.4 eps, 7 steps).

Note: `sbjax.eval.attacks.pgd_perturb` implements the same steps for evaluation (restarts,
schedules). This copy exists because training needs what that one does not offer: threading
auxiliary state (BatchNorm statistics updated by train-mode attack passes, reference nb05) through
the iterations, and a traced budget whose step size scales with it.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from sbjax.train.objective import BatchTransform, per_example_loss


def _per_example_norm(v: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=1))


def _bcast(s: jax.Array, like: jax.Array) -> jax.Array:
    return s.reshape((-1,) + (1,) * (like.ndim - 1))


def pgd_perturb(
    loss_fn: Callable[[jax.Array, object], tuple[jax.Array, object]],
    x: jax.Array,
    key: jax.Array,
    eps: jax.Array,
    *,
    norm: str,
    steps: int,
    step_frac: float,
    bounds: tuple[float, float] | None,
    rand_init: float = 1e-3,
    aux: object = None,
):
    """Untargeted PGD for one model on one batch.

    Args:
      loss_fn: `(x_adv, aux) -> (sum of per-example losses, new_aux)`; `aux` threads state the
        attack passes may update (BatchNorm statistics in train mode), None otherwise.
      x: clean inputs [n, ...].
      key: PRNG key of the random start.
      eps: traced scalar budget (0 returns x up to the clamp).
      norm: "l2" or "linf".
      steps: number of ascent steps (static).
      step_frac: step size as a fraction of eps.
      bounds: (lo, hi) box for x + delta, or None.
      rand_init: half-width of the uniform random start (rescaled to this L2 norm for "l2").
      aux: initial auxiliary state.

    Returns:
      (x_adv [n, ...], final aux).
    """
    eps = jnp.asarray(eps, x.dtype)
    lr = step_frac * eps
    delta = jax.random.uniform(key, x.shape, x.dtype, -rand_init, rand_init)
    if norm == "l2":
        delta = delta * _bcast(rand_init / jnp.maximum(_per_example_norm(delta), 1e-12), x)

    def clamp(d):
        return d if bounds is None else jnp.clip(x + d, bounds[0], bounds[1]) - x

    def step(carry, _):
        d, a = carry
        (_, a), g = jax.value_and_grad(lambda dd: loss_fn(x + dd, a), has_aux=True)(d)
        a = jax.lax.stop_gradient(a)
        if norm == "l2":
            d = d + lr * g / _bcast(_per_example_norm(g) + 1e-10, g)
            scale = eps / jnp.maximum(_per_example_norm(d), jnp.maximum(eps, 1e-12))
            d = d * _bcast(jnp.minimum(scale, 1.0), d)
        else:
            d = jnp.clip(d + lr * jnp.sign(g), -eps, eps)
        return (clamp(d), a), None

    (delta, aux), _ = jax.lax.scan(step, (clamp(delta), aux), None, length=steps)
    return jax.lax.stop_gradient(x + delta), aux


def attack(trainer, variables, x, y, key, eps, w, *, train_mode: bool):
    """PGD of `trainer.cfg` (adv_* fields) on one batch of one model, on the plain data loss.

    In train mode (the reference's adversarial training) BatchNorm runs on batch statistics and
    the running statistics updated by the attack passes are threaded through and returned; in eval
    mode the model's running statistics are used and left alone.

    Returns:
      (x_adv, variables) with the updated batch statistics in train mode.
    """
    cfg = trainer.cfg
    has_stats = "batch_stats" in variables

    def loss_fn(xa, stats):
        v = {**variables, "batch_stats": stats} if has_stats else variables
        if train_mode and has_stats:
            logits, mutated = trainer.model.apply(v, xa, train=True, **trainer._bn_mask(v, w))
            stats = mutated.get("batch_stats", stats)
        else:
            logits = trainer.model.logits(v, xa)
        return jnp.sum(per_example_loss(cfg, logits, y) * w), stats

    x_adv, stats = pgd_perturb(
        loss_fn,
        x,
        key,
        eps,
        norm=cfg.adv_norm,
        steps=cfg.adv_steps,
        step_frac=cfg.adv_step_frac,
        bounds=cfg.adv_bounds,
        rand_init=cfg.adv_rand_init,
        aux=variables.get("batch_stats"),
    )
    if has_stats:
        variables = {**variables, "batch_stats": stats}
    return x_adv, variables


def _pgd_batch(trainer, variables, x, y, w, key, hp):
    return attack(
        trainer,
        variables,
        x,
        y,
        key,
        hp["adv_eps"],
        w,
        train_mode=trainer.cfg.adv_bn_mode == "train",
    )


def pgd_transform():
    """Adversarial training as an `Objective.batch_transform`: PGD with the `TrainConfig` adv_*
    settings (norm, steps, step fraction, box, random start, BatchNorm mode) and the traced budget
    "adv_eps", on every training batch before the loss. `TrainConfig(adv_norm="l2" | "linf")`
    installs it by itself; the module-level function keeps the transform equal (and hashable by
    value) across calls, so compiled programs are reused."""
    return BatchTransform("pgd", _pgd_batch, hparams=("adv_eps",))
