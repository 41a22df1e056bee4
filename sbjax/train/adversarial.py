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

ADV_NORMS = ("none", "l2", "linf")


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
