"""The verification grids of THEORY.md Sec. 6.3 (G1-G7) plus two checks, and their presets.

* ``L``  Lemmas 4-6: closed-form population gradients against autodiff on one sampled batch.
* ``G1`` d-scaling (k = 16, eta = 1); also runs the population simulator from the same inits.
* ``M``  the two empirical samplers (literal ``full`` and exact-in-law ``projected``) agree.
* ``G2`` k-scaling, ``G3`` step size, ``G4`` sample size, ``G5`` linear-margin phase diagram,
  ``G6`` beyond the theorem (logistic loss, long training), ``G7`` population sweep to d = 1e8.

Each runner returns a list of `Point` (parameters + numpy logs); `theory.report` turns them into
claims, tables and figures. Presets: ``quick`` (a few minutes on a 2-core CPU), ``full`` (every grid at
THEORY.md's sizes) and ``smoke`` (seconds; for tests).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbjax import validate
from theory.empirical import SimResult, default_eval_steps, simulate
from theory.lemmas import (
    closed_form_grads,
    lemma6_parallel_bound,
    lemma6_perp_bound,
    lemma45_bound,
    population_sweep,
    run_population,
)
from theory.presets import GRID_NAMES, PRESETS, preset  # plain data, also read by --help
from theory.setting import (
    SimConfig,
    auto_chunk,
    balanced_v,
    n_from_c,
    practical_steps,
    theorem_stop_time,
)

__all__ = ["GRID_NAMES", "PRESETS", "Point", "lemma_check", "population_from", "preset", "run_grid"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Point:
    """One grid point: its parameters and logs.

    Attributes:
      grid: grid name ("G1", ...).
      pid: identifier unique within the grid (used for the log file name).
      params: the point's parameters (JSON-able).
      sim: empirical logs (None for population-only points).
      extra: other numpy arrays (population trajectories, lemma measurements, ...).
    """

    grid: str
    pid: str
    params: dict[str, Any]
    sim: SimResult | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


Callback = Callable[[str], None] | None


def steps_for(spec: dict[str, Any], d: float, eta: float, gamma: float = 1.0) -> int:
    """Number of GD steps of a hinge run: THEORY.md's rule or the theorem's t_hat.

    ``spec["stop"]`` is "practical" (default, ``T = floor(4/(eta gamma^2)) - 1``) or "theorem"
    (``t_hat = floor((4/(eta gamma^2))(1 - c_n/sqrt(log d)))`` with ``spec["c_n"]``, default the
    proof's constant, for which t_hat <= 0 at every representable d).
    """
    stop = spec.get("stop", "practical")
    validate.check_choice("stop", stop, ("practical", "theorem"))
    if stop == "practical":
        return practical_steps(eta, gamma)
    t_hat = theorem_stop_time(d, eta * gamma**2, spec.get("c_n"))
    if t_hat < 1:
        validate.fail(
            "c_n",
            spec.get("c_n"),
            f"a constant that makes t_hat >= 1 at d = {d} "
            f"(t_hat = {t_hat}; the proof's c_n ~ 27 sqrt(alpha) makes it vacuous, "
            "THEORY.md Sec. 5.2)",
        )
    return t_hat


__all__.append("steps_for")


def _cfg(d, k, n, steps, spec=None, **kw) -> SimConfig:
    init = (spec or {}).get("init", "log4")
    return SimConfig(d=int(d), k=int(k), n=int(n), steps=int(steps), init=init, **kw)


@functools.lru_cache(maxsize=16)
def _population_program(k: int, steps: int):
    def one(w1, w2, s, eta, gamma):
        v = balanced_v(k, jnp.float64)
        return run_population(w1, w2, s, v, eta=eta, steps=steps, gamma=gamma)

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None, None)))


def population_from(res: SimResult) -> dict[str, np.ndarray]:
    """Deterministic population flow (float64) started from each seed's empirical init."""
    cfg = res.config
    with jax.enable_x64(True):
        arr = {
            name: jnp.asarray(res.units[name][:, 0], jnp.float64) for name in ("w1", "w2", "wbar")
        }
        tr = _population_program(cfg.k, cfg.steps)(
            arr["w1"], arr["w2"], arr["wbar"], jnp.float64(cfg.eta), jnp.float64(cfg.gamma)
        )
        return {
            "pop_w1": np.asarray(tr.w1),
            "pop_w2": np.asarray(tr.w2),
            "pop_wbar": np.asarray(tr.s),
            "pop_margin": np.asarray(tr.margin),
        }


# ---------------------------------------------------------------------------------------------
# L: Lemmas 4-6 against autodiff


def lemma_check(d: int, n: int, *, seed: int = 0, k: int = 8) -> dict[str, np.ndarray]:
    """Compares the closed-form gradients of Lemmas 4-6 with autodiff on one batch of n points.

    Units get hand-picked (w1, w2, ||w_bar||) spanning a_0 from about -2 to 2 (so every Phi term
    matters) and random noise directions, small enough that every hinge is active.

    Returns:
      dict of per-unit arrays ``[k]``: measured gradients, closed forms, the deviations split into
      the w1, w2, along-w_bar and orthogonal parts, the stated bounds, and ``active_frac``.
    """
    from theory.empirical import train_step_grad

    w1 = np.array([0.0, 0.02, -0.02, 0.05, -0.05, 0.1, 0.01, -0.1])[:k]
    w2 = np.array([0.05, -0.03, 0.02, 0.0, 0.1, -0.05, 0.08, 0.03])[:k]
    s = np.array([0.05, 0.06, 0.04, 0.05, 0.06, 0.05, 0.04, 0.06])[:k]
    if k > 8:
        validate.fail("k", k, "<= 8")
    key = jax.random.key(seed)
    dirs = np.array(jax.random.normal(jax.random.fold_in(key, 1), (d - 2, k)), np.float64)
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    w = np.concatenate([w1[None], w2[None], dirs * s[None]], axis=0).astype(np.float32)
    cfg = SimConfig(d=d, k=k, n=n, steps=1, method="full")
    g, stats = jax.jit(lambda w_, k_: train_step_grad(cfg, w_, k_))(
        jnp.asarray(w), jax.random.fold_in(key, 2)
    )
    g = np.asarray(g, np.float64)
    v = np.asarray(balanced_v(k, jnp.float32), np.float64)
    with jax.enable_x64(True):
        terms = closed_form_grads(jnp.asarray(w1), jnp.asarray(w2), jnp.asarray(s), jnp.asarray(v))
        terms = jax.tree_util.tree_map(np.asarray, terms)
    ghat = dirs  # unit vectors along w_bar
    gbar_emp = g[2:]
    par_emp = np.sum(gbar_emp * ghat, axis=0)
    perp = gbar_emp - par_emp[None] * ghat
    return {
        "w1": w1,
        "w2": w2,
        "s": s,
        "v": v,
        "a0": terms.a0,
        "grad_w1": g[0],
        "grad_w2": g[1],
        "grad_par": par_emp,
        "closed_w1": terms.grad_w1,
        "closed_w2": terms.grad_w2,
        "closed_par": terms.g_bar * s,
        "dev_w1": np.abs(g[0] - terms.grad_w1),
        "dev_w2": np.abs(g[1] - terms.grad_w2),
        "dev_par": np.abs(par_emp - terms.g_bar * s),
        "perp_norm": np.linalg.norm(perp, axis=0),
        "bound_45": np.asarray(lemma45_bound(v, n)),
        "bound_par": np.asarray(lemma6_parallel_bound(v, n)),
        "bound_perp": np.asarray(lemma6_perp_bound(v, n, d)),
        "bound_perp_printed": np.asarray(lemma6_perp_bound(v, n, d, printed=True)),
        "fire_prob": terms.fire_prob,
        "active_frac": np.asarray(stats["active_frac"]),
    }


def _run_L(spec, seed, cb):
    pts = []
    for d in spec["ds"]:
        n = n_from_c(spec["c"], d)
        if cb:
            cb(f"L d={d}")
        pts.append(
            Point(
                "L", f"d{d}", {"d": d, "n": n, "c": spec["c"]}, extra=lemma_check(d, n, seed=seed)
            )
        )
    return pts


# ---------------------------------------------------------------------------------------------
# empirical grids


def _run_G1(spec, seed, cb):
    pts = []
    for d, c in zip(spec["ds"], spec["cs"], strict=True):
        steps = steps_for(spec, d, spec["eta"])
        if cb:
            cb(f"G1 d={d}")
        n = n_from_c(c, d)
        cfg = _cfg(
            d,
            spec["k"],
            n,
            steps,
            spec,
            eta=spec["eta"],
            method=spec["method"],
            n_test=spec.get("n_test", 200_000),
        )
        res = simulate(cfg, n_seeds=spec["seeds"], seed=seed)
        pts.append(
            Point(
                "G1",
                f"d{d}",
                {"d": d, "c": c, "n": n, "k": spec["k"], "eta": spec["eta"], "steps": steps},
                res,
                population_from(res),
            )
        )
    return pts


def _run_M(spec, seed, cb):
    pts = []
    steps = steps_for(spec, spec["d"], 1.0)
    n = n_from_c(spec["c"], spec["d"])
    for method in ("full", "projected"):
        if cb:
            cb(f"M {method}")
        cfg = _cfg(
            spec["d"], spec["k"], n, steps, spec, method=method, n_test=spec.get("n_test", 200_000)
        )
        # different seed streams for the two methods: the check is of laws, not of paths
        res = simulate(cfg, n_seeds=spec["seeds"], seed=seed + (0 if method == "full" else 7919))
        pts.append(
            Point(
                "M",
                method,
                {"d": spec["d"], "n": n, "k": spec["k"], "method": method, "steps": steps},
                res,
            )
        )
    return pts


def _run_G2(spec, seed, cb):
    pts = []
    steps = steps_for(spec, spec["d"], 1.0)
    n = n_from_c(spec["c"], spec["d"])
    for k in spec["ks"]:
        if cb:
            cb(f"G2 k={k}")
        cfg = _cfg(
            spec["d"], k, n, steps, spec, method=spec["method"], n_test=spec.get("n_test", 200_000)
        )
        res = simulate(cfg, n_seeds=spec["seeds"], seed=seed)
        pts.append(Point("G2", f"k{k}", {"d": spec["d"], "n": n, "k": k, "steps": steps}, res))
    return pts


def _run_G3(spec, seed, cb):
    pts = []
    n = n_from_c(spec["c"], spec["d"])
    max_steps = max(steps_for(spec, spec["d"], e) for e in spec["etas"])
    for eta in spec["etas"]:
        if cb:
            cb(f"G3 eta={eta}")
        steps = steps_for(spec, spec["d"], eta)
        cfg = _cfg(
            spec["d"],
            spec["k"],
            n,
            steps,
            spec,
            eta=eta,
            method=spec["method"],
            max_steps=max_steps,
            n_test=spec.get("n_test", 200_000),
        )
        res = simulate(cfg, n_seeds=spec["seeds"], seed=seed)
        pts.append(
            Point(
                "G3",
                f"eta{eta}",
                {"d": spec["d"], "n": n, "k": spec["k"], "eta": eta, "steps": steps},
                res,
            )
        )
    return pts


def _run_G4(spec, seed, cb):
    pts = []
    for d in spec["ds"]:
        steps = steps_for(spec, d, 1.0)
        ns = [max(2, int(round(r * d))) for r in spec["n_over_d"]]
        chunk = auto_chunk(d, spec["k"], spec["method"], max(ns))
        for n in ns:
            if cb:
                cb(f"G4 d={d} n={n}")
            cfg = _cfg(
                d,
                spec["k"],
                n,
                steps,
                spec,
                method=spec["method"],
                chunk=chunk,
                n_test=spec.get("n_test", 200_000),
            )
            res = simulate(cfg, n_seeds=spec["seeds"], seed=seed)
            pts.append(
                Point(
                    "G4",
                    f"d{d}_n{n}",
                    {
                        "d": d,
                        "n": n,
                        "n_over_d": n / d,
                        "c": n / d**2,
                        "k": spec["k"],
                        "steps": steps,
                    },
                    res,
                )
            )
    return pts


def _run_G5(spec, seed, cb):
    pts = []
    for d in spec["ds"]:
        n_max = max(n_from_c(c, d) for c in spec["cs"])
        chunk = auto_chunk(d, spec["k"], "projected", n_max)
        max_steps = max(practical_steps(e, g) for e in spec["etas"] for g in spec["gammas"])
        for c in spec["cs"]:
            n = n_from_c(c, d)
            for eta in spec["etas"]:
                for gamma in spec["gammas"]:
                    steps = practical_steps(eta, gamma)
                    if cb:
                        cb(f"G5 d={d} c={c} eta={eta} gamma={gamma} (T={steps})")
                    cfg = _cfg(
                        d,
                        spec["k"],
                        n,
                        steps,
                        spec,
                        eta=eta,
                        gamma=gamma,
                        method="projected",
                        chunk=chunk,
                        max_steps=max_steps,
                        n_test=spec.get("n_test", 200_000),
                    )
                    res = simulate(cfg, n_seeds=spec["seeds"], seed=seed)
                    pts.append(
                        Point(
                            "G5",
                            f"d{d}_c{c}_eta{eta}_g{gamma}",
                            {
                                "d": d,
                                "c": c,
                                "n": n,
                                "eta": eta,
                                "gamma": gamma,
                                "k": spec["k"],
                                "steps": steps,
                            },
                            res,
                        )
                    )
    return pts


def _run_G6(spec, seed, cb):
    pts = []
    for d in spec["ds"]:
        m = d * d
        for variant, loss, batch, steps in (
            ("logistic_fixed", "logistic", "fixed", spec["steps"]),
            ("hinge_fixed", "hinge", "fixed", spec["steps"]),
            ("hinge_fresh", "hinge", "fresh", spec["fresh_steps"]),
        ):
            if cb:
                cb(f"G6 d={d} {variant} ({steps} steps)")
            cfg = _cfg(
                d,
                spec["k"],
                m,
                steps,
                spec,
                loss=loss,
                batch=batch,
                method="full",
                n_test=spec.get("n_test", 200_000),
            )
            # every evaluation enters G6's claims, so each uses all n_test points (the S-rand
            # band 0.50 +- 0.01 is ~9 standard errors at 2e5 points but only ~2.5 at 2e4)
            res = simulate(
                cfg,
                n_seeds=spec["seeds"],
                seed=seed,
                eval_steps=default_eval_steps(steps, 24),
                n_test_mid=cfg.n_test,
            )
            pts.append(
                Point(
                    "G6",
                    f"d{d}_{variant}",
                    {
                        "d": d,
                        "n": m,
                        "k": spec["k"],
                        "variant": variant,
                        "loss": loss,
                        "batch": batch,
                        "steps": steps,
                    },
                    res,
                )
            )
    return pts


def _run_G7(spec, seed, cb):
    pts = []
    init = spec.get("init", "log4")
    with jax.enable_x64(True):
        for eta in spec["etas"]:
            steps = practical_steps(eta)
            if cb:
                cb(f"G7 eta={eta} ({len(spec['ds'])} d values)")
            key = jax.random.key(seed)
            kw = {
                "k": spec["k"],
                "eta": eta,
                "steps": steps,
                "n_seeds": spec["seeds"],
                "init": init,
            }
            det = population_sweep(key, spec["ds"], **kw)
            noisy = population_sweep(key, spec["ds"], c=1.0, **kw)
            for i, d in enumerate(spec["ds"]):
                extra = {f"det_{f}": np.asarray(getattr(det, f)[i]) for f in det._fields}
                extra.update(
                    {f"noisy_{f}": np.asarray(getattr(noisy, f)[i]) for f in noisy._fields}
                )
                pts.append(
                    Point(
                        "G7",
                        f"eta{eta}_d{d:.3g}",
                        {"d": d, "eta": eta, "k": spec["k"], "steps": steps, "n": d * d},
                        extra=extra,
                    )
                )
    return pts


_RUNNERS = {
    "L": _run_L,
    "G1": _run_G1,
    "M": _run_M,
    "G2": _run_G2,
    "G3": _run_G3,
    "G4": _run_G4,
    "G5": _run_G5,
    "G6": _run_G6,
    "G7": _run_G7,
}


def count_points(name: str, spec: dict[str, Any]) -> int:
    """Number of points (progress-bar ticks) a grid will produce."""
    if name == "L":
        return len(spec["ds"])
    if name == "G1":
        return len(spec["ds"])
    if name == "M":
        return 2
    if name == "G2":
        return len(spec["ks"])
    if name == "G3":
        return len(spec["etas"])
    if name == "G4":
        return len(spec["ds"]) * len(spec["n_over_d"])
    if name == "G5":
        return len(spec["ds"]) * len(spec["cs"]) * len(spec["etas"]) * len(spec["gammas"])
    if name == "G6":
        return 3 * len(spec["ds"])
    if name == "G7":
        return len(spec["etas"])
    validate.check_choice("grid", name, GRID_NAMES)
    raise AssertionError


__all__.append("count_points")


def run_grid(
    name: str, spec: dict[str, Any], *, seed: int = 0, callback: Callback = None
) -> list[Point]:
    """Runs one grid.

    Args:
      name: one of `GRID_NAMES`.
      spec: the grid's parameters (see `PRESETS`).
      seed: base seed.
      callback: called with a short description before each point (progress bars).

    Returns:
      list of Point.
    """
    validate.check_choice("grid", name, GRID_NAMES)
    return _RUNNERS[name](spec, seed, callback)
