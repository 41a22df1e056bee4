"""Training-set size as a traced axis: many (n_train, hyperparameter, seed, member) models as ONE
program, each sampling its training set inside the program.

Where a paper leaves the sample size unstated (App. E.1's MS-5 ensembles, Fig. 3(b) at
|S^c| = 249), the size is searched rather than guessed. Shapes must be static under `jit`, so
every model samples the same number of points, `n_max` = the largest size asked for, and trains
on its first `n_train` rows only: `pack_data(n_rows=n_train)` makes the engine draw its batches
from a keyed permutation of [0, n_train) (epochs of ceil(n_train / B) batches) and count only
those rows in its train metrics, exactly as a model given the n_train rows alone would (tested
against `train_sweep` on the sliced set).

Keys (common random numbers): seed s has the key fold_in(key(seed), s); its training set is
drawn from stream 0 and its validation set from stream 1, so every size, grid point and member of
a seed sees nested subsets of the SAME draw (n = 3000 is the first 3000 rows of the n = 6000
set), and seeds are independent draws. Member k's initialisation and batch order come from
fold_in(fold_in(key_s, 4), k): the same for every size and grid point of the seed.

Model order: cell-major (cell = (n_train, grid point), n_train-major), then seed, then member:
m = (cell * S + s) * K + k.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbjax.models import make_model
from sbjax.train.cells import STRATEGIES, run_cells
from sbjax.train.config import TrainConfig, expand_grid, hparam_arrays
from sbjax.train.data import pack_data
from sbjax.train.engine import make_trainer
from sbjax.train.stopping import STOP_REASONS
from sbjax.validate import check_choice, check_int, fail

__all__ = ["SampleSizeResult", "make_size_program", "sample_size_sweep"]

STREAM_TRAIN, STREAM_VAL, STREAM_MODEL = 0, 1, 4


def make_size_program(cfg: TrainConfig, model: Any, dataset: Any, n_max: int, n_val: int = 0):
    """The one-model program of a sample-size sweep and its `Trainer`.

    Args:
      cfg: training settings. model: an `sbjax.models.Model`.
      dataset: an `sbjax.data` dataset (`sample(key, n)` pure in the key).
      n_max: points sampled per model (its first `cell["n_train"]` rows are its training set).
      n_val: validation points (best-model selection; 0: none, select on train accuracy).

    Returns:
      (trainer, run) with `run(key, cell, hp) -> outputs`: `key` the seed's key, `cell` =
      {"n_train": int32, "member": int32, and any traced hyperparameter overriding `hp`},
      outputs {"variables", "best_variables", "stop_reason" (int32 code), "stop_step",
      "train_acc" (last evaluation)}.
    """

    def sets(key, n_rows):
        x, y = dataset.sample(jax.random.fold_in(key, STREAM_TRAIN), n_max)
        val = dataset.sample(jax.random.fold_in(key, STREAM_VAL), n_val) if n_val else None
        return pack_data(cfg, x, y, val=val, n_rows=n_rows)

    shapes = jax.eval_shape(sets, jax.random.key(0), jnp.int32(n_max))
    trainer = make_trainer(cfg, model, shapes)

    def run(key, cell, hp):
        hp = {**hp, **{k: v for k, v in cell.items() if k in hp}}
        packed = sets(key, cell["n_train"])
        model_key = jax.random.fold_in(jax.random.fold_in(key, STREAM_MODEL), cell["member"])
        state, hist = trainer.train(model_key, hp, packed)
        return {
            "variables": state.variables,
            "best_variables": state.best_variables,
            "stop_reason": state.stop_reason,
            "stop_step": state.stop_step,
            "train_acc": hist["train_acc"][-1],
        }

    return trainer, run


@dataclasses.dataclass
class SampleSizeResult:
    """A sample-size sweep on the host.

    Attributes:
      n_train: the sizes. grid_points: the traced-hyperparameter points ([{}] without a grid).
      n_seeds, n_members: seeds (independent data draws) and members per seed.
      variables, best_variables: stacked [M, ...] final / best-selected variables in model order
        (`shape` = (len(n_train), len(grid_points), n_seeds, n_members) = M).
      stop_reason: str array of `shape`; stop_step, train_acc: arrays of `shape`.
      compile_s, run_s, n_devices: as `sbjax.train.phase.PhaseResult`.
    """

    n_train: tuple[int, ...]
    grid_points: list[dict[str, float]]
    n_seeds: int
    n_members: int
    variables: Any
    best_variables: Any
    stop_reason: np.ndarray
    stop_step: np.ndarray
    train_acc: np.ndarray
    compile_s: float
    run_s: float
    n_devices: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.n_train), len(self.grid_points), self.n_seeds, self.n_members)


def sample_size_sweep(
    cfg: TrainConfig,
    model: Any,
    dataset: Any,
    *,
    n_train: Sequence[int],
    grid: Mapping[str, Sequence[float]] | None = None,
    n_seeds: int = 1,
    n_members: int = 1,
    n_val: int = 0,
    seed: int = 0,
    strategy: str = "program",
    devices: Sequence[Any] | None = None,
    models_per_call: int | None = None,
) -> SampleSizeResult:
    """Trains one model per (n_train, grid point, seed, member) on data sampled inside the program.

    Args:
      cfg: training settings (`lr_boundaries` must be empty: epochs differ per size).
      model: an `sbjax.models.Model` or a config for `make_model`.
      dataset: an `sbjax.data` dataset (e.g. `make_dataset("ms", k=5, d=50)`).
      n_train: training-set sizes, each >= cfg.batch_size.
      grid: traced hyperparameters (`TrainConfig.default_hparams` names) -> values; the
        product is taken (`expand_grid`).
      n_seeds: independent data draws. n_members: models per (size, grid point, seed) with
        their own initialisation and batch order (an ensemble).
      n_val: validation points per seed (0: none).
      seed: root seed. strategy, devices: as `sbjax.train.phase.phase_diagram`.
      models_per_call: run the models in calls of this many of the one compiled program (each
        model holds its own n_max-point draw: memory grows with the models per call; None: all
        at once). Results are those of one call.

    Returns:
      A `SampleSizeResult`.

    Raises:
      ValueError: naming the bad argument, before anything compiles.
    """
    if isinstance(n_train, str) or not isinstance(n_train, Sequence) or not n_train:
        fail("n_train", n_train, f"a non-empty list of sizes >= batch_size = {cfg.batch_size}")
    for n in n_train:
        check_int("n_train", n, min_value=cfg.batch_size)
    sizes = tuple(int(n) for n in n_train)
    check_int("n_seeds", n_seeds, min_value=1)
    check_int("n_members", n_members, min_value=1)
    check_int("n_val", n_val, min_value=0)
    check_choice("strategy", strategy, STRATEGIES)
    if cfg.lr_boundaries:
        fail("lr_boundaries", cfg.lr_boundaries, "() with a traced training-set size")
    if not hasattr(model, "init"):
        model = make_model(model)
    points = expand_grid(grid, tuple(cfg.default_hparams()))
    hparam_arrays(cfg, points, 1)  # each value by its TrainConfig field's rule
    n_c = len(sizes) * len(points)
    s, k = int(n_seeds), int(n_members)
    per_cell = s * k
    cells = list(itertools.product(sizes, points))
    cell = {
        "n_train": np.repeat([n for n, _ in cells], per_cell).astype(np.int32),
        "member": np.tile(np.arange(k, dtype=np.int32), n_c * s),
    }
    for name in points[0]:
        cell[name] = np.repeat([pt[name] for _, pt in cells], per_cell).astype(np.float32)
    root = jax.random.key(seed)
    seed_keys = jax.vmap(lambda i: jax.random.fold_in(root, i))(jnp.arange(s))
    keys = jnp.tile(jnp.repeat(seed_keys, k), n_c)
    hp0 = {n: np.float32(v) for n, v in cfg.default_hparams().items()}
    _, run = make_size_program(cfg, model, dataset, max(sizes), int(n_val))
    if models_per_call is not None:
        check_int("models_per_call", models_per_call, min_value=1)
    outs, compile_s, run_s, n_dev = run_cells(
        run, cell, keys, hp0, strategy, devices, models_per_call=models_per_call
    )
    shape = (len(sizes), len(points), s, k)
    return SampleSizeResult(
        n_train=sizes,
        grid_points=[dict(pt) for pt in points],
        n_seeds=s,
        n_members=k,
        variables=outs["variables"],
        best_variables=outs["best_variables"],
        stop_reason=np.asarray([STOP_REASONS[int(c)] for c in outs["stop_reason"]]).reshape(shape),
        stop_step=np.asarray(outs["stop_step"]).reshape(shape),
        train_acc=np.asarray(outs["train_acc"], np.float64).reshape(shape),
        compile_s=compile_s,
        run_s=run_s,
        n_devices=n_dev,
    )
