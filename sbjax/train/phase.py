"""Shortcut phase diagram as ONE program: data sampled inside `jit(vmap)` from traced parameters.

Where does simplicity bias switch off as the simple feature's *predictivity* and *availability*
vary? (BEYOND.md Sec. 1.6: Hermann, Mobahi, Fel, Mozer, "On the Foundations of Shortcut
Learning", ICLR 2024.) The data are noisy LMS-k (Shah et al. 2020, Sec. 3.1 / App. B), with three
axes per grid cell:

* ``p`` -- predictivity of S: a fraction p of the training points has the linear coordinate's
  sign flipped (noise model "signflip", exactly round(n p) rows; Bayes accuracy of S alone
  1 - p, so p = 0.5 leaves S with no label information). The paper's noisy LMS uses the "margin"
  model instead (corrupted values redrawn in the margin, Bayes 1 - p/2); ``noise_model`` selects.
* ``margin`` -- availability of S: the linear block's margin gamma (positives uniform on
  [gamma B, B]); the slabs keep their own margin ``slab_margin``.
* ``k`` -- availability of S^c: the slab count of the d - 1 complex coordinates (3, 5, 7).

Every training set is drawn *inside* the compiled program from the cell's traced (p, margin,
k index): the samplers of `sbjax.data.blocks` are pure JAX (`noisy_linear` takes a traced p and
margin, `slab_from_cdf` a traced k with its level table picked from a stack padded to the largest
k), so the whole grid (cells x seeds) is one `jit(vmap(...))` of one model's program, sharded over
the devices like `train_sweep`. The one-model program is `Trainer.train` (`sbjax.train.engine`)
on `pack_data` of the sampled set, with monitor sets (the feature timeline) for:

* ``test`` -- a clean test set (p = 0, the cell's margin and k): standard accuracy;
* ``s_rand`` / ``sc_rand`` -- the same set with S / S^c randomized (one row permutation of the
  canonical block, `sbjax.eval.randomize.randomize_block`, the paper's reference procedure);
* ``noisy_test`` -- a test set from the training distribution (the cell's p).

Their accuracy at every evaluation period is the cell's timeline; the last evaluation gives the
cell's metrics. Reliance on a feature = test accuracy - accuracy with that feature randomized.

Keys: the cells of a seed share its keys (common random numbers: the same labels, uniforms,
initialisation and batch order; the noisy rows of a larger p contain those of a smaller p), so
differences between cells come from (p, margin, k) alone. Seed s uses fold_in(key(seed), s); its
streams: 0 training data, 1 clean test data, 2 noisy test data, 3 randomizations, 4 the model.
The training set of a cell equals `make_dataset("noisy_lms", ...).sample_canonical` at the same
parameters and stream-0 key (tested), up to the float32 slab geometry.

`phase_diagram(..., strategy="loop")` runs the same one-model program as a Python loop over
cells and seeds (compiled once, called M times): the baseline of `benchmarks/phase_diagram.py`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbjax.data import blocks as B
from sbjax.data.rotation import ROTATIONS, make_rotation
from sbjax.eval.randomize import randomize_block
from sbjax.models import make_model
from sbjax.train.cells import STRATEGIES, cell_keys, run_cells
from sbjax.train.config import TrainConfig
from sbjax.train.data import pack_data
from sbjax.train.engine import make_trainer
from sbjax.train.stopping import STOP_REASONS
from sbjax.validate import check_choice, check_int, check_range, fail

__all__ = [
    "MONITOR_SETS",
    "PHASE_METRICS",
    "PhaseData",
    "PhaseResult",
    "make_cell_program",
    "phase_diagram",
    "sample_cell",
]

MONITOR_SETS = ("test", "s_rand", "sc_rand", "noisy_test")
PHASE_METRICS = ("test_acc", "s_rand_acc", "sc_rand_acc", "noisy_test_acc", "train_acc")
STREAM_TRAIN, STREAM_TEST, STREAM_NOISY_TEST, STREAM_RANDOMIZE, STREAM_MODEL = 0, 1, 2, 3, 4


@dataclasses.dataclass(frozen=True)
class PhaseData:
    """Static description of the noisy LMS-k family of a phase diagram (shapes and fixed parts).

    Attributes:
      d: input dimension (coordinate 0 = S, 1..d-1 = S^c slabs).
      n_train, n_test: points per training set / per test set (static shapes).
      ks: the slab counts a cell may choose (odd, >= 3); a cell's k is a traced index into them.
      slab_margin: effective margin of the slabs (the paper's 0.1).
      width: data width B.
      noise_model: "signflip" (default: S's Bayes accuracy 1 - p) or "margin" (the paper's).
      noise_sampling: "exact_count" (round(n p) rows) or "iid".
      rotate, rotation_seed, rotation: the dataset rotation (as in `make_dataset`).
    """

    d: int = 50
    n_train: int = 10_000
    n_test: int = 2_000
    ks: tuple[int, ...] = (3, 5, 7)
    slab_margin: float = 0.1
    width: float = 1.0
    noise_model: str = "signflip"
    noise_sampling: str = "exact_count"
    rotate: bool = True
    rotation_seed: int = 0
    rotation: str = "haar"

    def check(self) -> None:
        """Raises ValueError naming the field (on the host, before anything compiles)."""
        check_int("d", self.d, min_value=2)
        check_int("n_train", self.n_train, min_value=1)
        check_int("n_test", self.n_test, min_value=2)
        if isinstance(self.ks, str) or not isinstance(self.ks, Sequence) or not self.ks:
            fail("ks", self.ks, "a non-empty list of odd slab counts >= 3")
        for k in self.ks:
            B.check_slab_params(
                k, self.slab_margin, self.width, k_name="ks", margin_name="slab_margin"
            )
        check_choice("noise_model", self.noise_model, B.LIN_NOISE_MODELS)
        check_choice("noise_sampling", self.noise_sampling, B.NOISE_SAMPLINGS)
        check_choice("rotation", self.rotation, ROTATIONS)
        check_int("rotation_seed", self.rotation_seed, min_value=0)

    def rotation_matrix(self) -> np.ndarray:
        """float32 [d, d] W (x = z @ W), identity without rotation (`make_dataset`'s rule)."""
        if not self.rotate:
            return np.eye(self.d, dtype=np.float32)
        return make_rotation(int(self.d), int(self.rotation_seed), self.rotation)

    def level_tables(self) -> jax.Array:
        """float32 [len(ks), 2, L_max]: the slab level CDFs of every k, padded to the largest."""
        n_levels = (max(self.ks) + 1) // 2
        return jnp.stack([B.level_cdf(int(k), n_levels=n_levels) for k in self.ks])


def sample_cell(
    key: jax.Array, n: int, p, margin, k_index, data: PhaseData, tables: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Noisy LMS-k points of one cell in the canonical basis; traceable in (p, margin, k_index).

    The key streams are `Dataset.sample_canonical`'s (labels fold_in(key, 0), coordinate c
    fold_in(key, c + 1)), so at Python parameters this is `make_dataset("noisy_lms", d=d, k=k,
    margin=margin, slab_margin=..., p=p, noise_model=..., noise_sampling=...)`'s draw.

    Args:
      key: PRNG key. n: number of points (static).
      p: noise fraction of S (scalar, may be traced). margin: linear margin of S (may be traced).
      k_index: int index into `data.ks` (may be traced).
      data: the `PhaseData`. tables: `data.level_tables()`.

    Returns:
      (z float32 [n, d], y int32 [n]).
    """
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(data.d + 1))
    y = jax.random.bernoulli(keys[0], 0.5, (n,)).astype(jnp.int32)
    s = B.noisy_linear(
        keys[1],
        y,
        p=p,
        margin=margin,
        width=data.width,
        noise_model=data.noise_model,
        noise_sampling=data.noise_sampling,
    )
    k = jnp.asarray(data.ks, jnp.float32)[k_index]
    cdf = tables[k_index]
    sc = jax.vmap(
        lambda kk: B.slab_from_cdf(kk, y, k=k, margin=data.slab_margin, width=data.width, cdf=cdf)
    )(keys[2:])
    return jnp.concatenate([s[None], sc], axis=0).T.astype(jnp.float32), y


def make_cell_program(cfg: TrainConfig, model: Any, data: PhaseData):
    """The one-model program of a phase diagram and its `Trainer`.

    Returns:
      (trainer, run) with `run(key, cell, hp) -> (metrics, timeline, stop_reason)`: `cell` =
      {"p", "margin" (float32 scalars), "k_index" (int32)}, `hp` the trainer's traced
      hyperparameters; metrics {name: scalar} (`PHASE_METRICS`), timeline {"<set>_acc": [E] per
      monitor set, "train_acc": [E], "step": [E] (updates at each evaluation)}, stop_reason the
      int32 code of `sbjax.train.engine.STOP_REASONS` (a diverged model is DIVERGED).
    """
    rot = data.rotation_matrix()
    rot_j = jnp.asarray(rot)
    tables = data.level_tables()
    s_coords, sc_coords = (0,), tuple(range(1, data.d))

    def to_x(z):
        return jnp.matmul(z, rot_j, precision=jax.lax.Precision.HIGHEST) if data.rotate else z

    def sets(key, cell):
        p, margin, ki = cell["p"], cell["margin"], cell["k_index"]
        z_tr, y_tr = sample_cell(
            jax.random.fold_in(key, STREAM_TRAIN), data.n_train, p, margin, ki, data, tables
        )
        # Both test sets in one (vmapped) sampler: each sampler instance costs seconds of
        # XLA compile time on CPU (vmapped threefry), the clean one is the noisy one at p = 0.
        k_te = jnp.stack(
            [jax.random.fold_in(key, STREAM_TEST), jax.random.fold_in(key, STREAM_NOISY_TEST)]
        )
        z2, y2 = jax.vmap(
            lambda kk, pp: sample_cell(kk, data.n_test, pp, margin, ki, data, tables)
        )(k_te, jnp.stack([jnp.zeros_like(p), p]))
        (z_te, z_nt), (y_te, y_nt) = z2, y2
        x_te = to_x(z_te)
        kr = jax.random.fold_in(key, STREAM_RANDOMIZE)
        w = rot if data.rotate else None
        monitor = {
            "test": (x_te, y_te),
            "s_rand": (randomize_block(jax.random.fold_in(kr, 0), x_te, s_coords, w), y_te),
            "sc_rand": (randomize_block(jax.random.fold_in(kr, 1), x_te, sc_coords, w), y_te),
            "noisy_test": (to_x(z_nt), y_nt),
        }
        return pack_data(cfg, to_x(z_tr), y_tr, monitor)

    dummy_cell = {"p": jnp.float32(0), "margin": jnp.float32(0), "k_index": jnp.int32(0)}
    shapes = jax.eval_shape(sets, jax.random.key(0), dummy_cell)
    trainer = make_trainer(cfg, model, shapes)

    def run(key, cell, hp):
        packed = sets(key, cell)
        state, hist = trainer.train(jax.random.fold_in(key, STREAM_MODEL), hp, packed)
        timeline = {f"{n}_acc": hist[f"monitor_{n}_acc"] for n in MONITOR_SETS}
        timeline["train_acc"] = hist["train_acc"]
        timeline["step"] = hist["step"]
        metrics = {f"{n}_acc": hist[f"monitor_{n}_acc"][-1] for n in MONITOR_SETS}
        metrics["train_acc"] = hist["train_acc"][-1]
        return metrics, timeline, state.stop_reason

    return trainer, run


@dataclasses.dataclass
class PhaseResult:
    """A phase diagram on the host.

    Attributes:
      p, margin, k: the grid axes (cell (i, j, l) = (p[i], margin[j], k[l])).
      n_seeds: seeds per cell.
      metrics: name -> float [P, G, K, S] (`PHASE_METRICS`), the last evaluation of each model.
      timeline: name -> float [P, G, K, S, E] per evaluation period ("<set>_acc", "train_acc").
      updates: int [E] position in the update loop at each evaluation (without a stop rule
        every model trains to the end; with one, a stopped model's later evaluations repeat
        its final parameters).
      stop_reason: str [P, G, K, S]: "converged", "diverged" or "max_steps" per model; a
        diverged model's accuracies are those of NaN parameters, so `reliance`, `crossover` and
        every caller's means leave it out (`ok`).
      strategy: "program" (one compiled call for the grid) or "loop" (one call per model).
      compile_s, run_s: compile time and the time of the training call(s) after compiling.
      n_devices: devices the program's model axis was sharded over.
    """

    p: tuple[float, ...]
    margin: tuple[float, ...]
    k: tuple[int, ...]
    n_seeds: int
    metrics: dict[str, np.ndarray]
    timeline: dict[str, np.ndarray]
    updates: np.ndarray
    stop_reason: np.ndarray
    strategy: str
    compile_s: float
    run_s: float
    n_devices: int

    @property
    def ok(self) -> np.ndarray:
        """bool [P, G, K, S]: the models that did not diverge (the ones every mean uses)."""
        return self.stop_reason != "diverged"

    @property
    def n_diverged(self) -> int:
        return int(np.sum(~self.ok))

    def reliance(self) -> dict[str, np.ndarray]:
        """Mean over the non-diverged seeds [P, G, K] of reliance on S (test_acc - s_rand_acc)
        and on S^c (test_acc - sc_rand_acc), as {"reliance_s", "reliance_sc"}; NaN in a cell
        whose models all diverged."""
        m, ok = self.metrics, self.ok
        n = ok.sum(axis=-1)

        def mean(v):
            total = np.where(ok, v, 0.0).sum(axis=-1)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(n > 0, total / np.maximum(n, 1), np.nan)

        return {
            "reliance_s": mean(m["test_acc"] - m["s_rand_acc"]),
            "reliance_sc": mean(m["test_acc"] - m["sc_rand_acc"]),
        }

    def crossover(self, min_gap: float = 0.05) -> list[dict[str, Any]]:
        """Per (margin, k): the smallest p at which mean reliance on S^c exceeds reliance on S.

        Args:
          min_gap: S^c must win by more than this (a cell where the model learned neither
            feature has both reliances near 0, and seed noise alone would otherwise decide).

        Returns:
          A list of {"margin", "k", "p_cross" (None when S^c never wins on the grid),
          "reliance_s", "reliance_sc" (per p; None where every model of the cell diverged),
          "n_failed_cells" (cells of this row without a usable model: then "S^c never wins"
          is not established on the grid)}.
        """
        r = self.reliance()
        out = []
        for j, g in enumerate(self.margin):
            for l_, k in enumerate(self.k):
                rs, rsc = r["reliance_s"][:, j, l_], r["reliance_sc"][:, j, l_]
                wins = np.flatnonzero(rsc > rs + min_gap)  # NaN (failed) cells never win
                out.append(
                    {
                        "margin": float(g),
                        "k": int(k),
                        "p_cross": float(self.p[wins[0]]) if wins.size else None,
                        "reliance_s": [None if np.isnan(v) else float(v) for v in rs],
                        "reliance_sc": [None if np.isnan(v) else float(v) for v in rsc],
                        "n_failed_cells": int(np.sum(np.isnan(rs))),
                    }
                )
        return out

    def crossover_per_seed(self, min_gap: float = 0.05, period: int | None = None) -> np.ndarray:
        """float [G, K, S]: each seed's own crossover, the smallest p at which its reliance on
        S^c exceeds its reliance on S by more than `min_gap` (NaN: never on the p grid).

        Reliance on S^c minus reliance on S is s_rand_acc - sc_rand_acc. A diverged model never
        wins. `period`: at that evaluation of the timeline (an earlier update budget, `updates`)
        instead of the final one.
        """
        if period is None:
            s_rand, sc_rand = self.metrics["s_rand_acc"], self.metrics["sc_rand_acc"]
        else:
            s_rand = self.timeline["s_rand_acc"][..., period]
            sc_rand = self.timeline["sc_rand_acc"][..., period]
        with np.errstate(invalid="ignore"):
            wins = (s_rand - sc_rand > min_gap) & self.ok  # [P, G, K, S]
        first = np.argmax(wins, axis=0)
        return np.where(wins.any(axis=0), np.asarray(self.p)[first], np.nan)


def _check_axis(name: str, values: Sequence[float], lo: float, hi: float, hi_open: bool) -> tuple:
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        fail(name, values, "a non-empty list of numbers")
    for v in values:
        check_range(name, v, lo, hi, hi_open=hi_open)
    return tuple(float(v) for v in values)


def phase_diagram(
    cfg: TrainConfig,
    model: Any,
    data: PhaseData,
    *,
    p: Sequence[float],
    margin: Sequence[float],
    k: Sequence[int] | None = None,
    n_seeds: int = 1,
    seed: int = 0,
    strategy: str = "program",
    devices: Sequence[Any] | None = None,
) -> PhaseResult:
    """Trains one model per (p, margin, k, seed) on data sampled inside the program.

    Args:
      cfg: training settings (every cell and seed uses them; `eval_every` sets the timeline's
        resolution; `stop_rule="none"` trains every model for `max_steps` updates).
      model: an `sbjax.models.Model` or a config for `make_model` (input dimension `data.d`).
      data: the `PhaseData` (dimension, sizes, slab counts, noise model, rotation).
      p: noise fractions of S in [0, 1]. margin: linear margins of S in [0, 1).
      k: slab counts (each in `data.ks`; default all of them).
      n_seeds: seeds per cell. seed: root seed.
      strategy: "program" (the grid as one sharded `jit(vmap)`) or "loop" (the same one-model
        program compiled once and called per cell and seed from Python: the baseline).
      devices: devices to shard the model axis over (default all; "loop" uses the first).

    Returns:
      A `PhaseResult`.

    Raises:
      ValueError: a bad axis, slab count, data description or strategy (before compiling).
    """
    data.check()
    ps = _check_axis("p", p, 0.0, 1.0, hi_open=False)
    margins = _check_axis("margin", margin, 0.0, 1.0, hi_open=True)
    ks = tuple(data.ks) if k is None else tuple(k)
    if not ks or any(kk not in data.ks for kk in ks):
        fail("k", k, f"slab counts from data.ks = {tuple(data.ks)}")
    check_int("n_seeds", n_seeds, min_value=1)
    check_choice("strategy", strategy, STRATEGIES)
    if cfg.batch_size > data.n_train:
        fail("batch_size", cfg.batch_size, f"at most n_train = {data.n_train}")
    if not hasattr(model, "init"):
        model = make_model(model)
    cells = list(itertools.product(range(len(ps)), range(len(margins)), range(len(ks))))
    c, s = len(cells), int(n_seeds)
    # Model order: cell-major, seed-minor (m = cell * S + seed).
    cell = {
        "p": np.repeat([ps[i] for i, _, _ in cells], s).astype(np.float32),
        "margin": np.repeat([margins[j] for _, j, _ in cells], s).astype(np.float32),
        "k_index": np.repeat([data.ks.index(ks[l_]) for _, _, l_ in cells], s).astype(np.int32),
    }
    hp0 = {n: np.float32(v) for n, v in cfg.default_hparams().items()}
    _, run = make_cell_program(cfg, model, data)
    outs, compile_s, run_s, n_dev = run_cells(
        run, cell, cell_keys(seed, c, s), hp0, strategy, devices
    )
    metrics, timeline, stop = outs
    shape = (len(ps), len(margins), len(ks), s)
    updates = np.asarray(timeline.pop("step"))[0].astype(np.int64)
    return PhaseResult(
        p=ps,
        margin=margins,
        k=ks,
        n_seeds=s,
        metrics={n: np.asarray(v, np.float64).reshape(shape) for n, v in metrics.items()},
        timeline={n: np.asarray(v, np.float64).reshape(shape + (-1,)) for n, v in timeline.items()},
        updates=updates,
        stop_reason=np.asarray([STOP_REASONS[int(c)] for c in stop]).reshape(shape),
        strategy=strategy,
        compile_s=compile_s,
        run_s=run_s,
        n_devices=n_dev,
    )
