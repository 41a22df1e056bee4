"""A shortcut atlas as ONE program: every (cell, seed) model of one architecture in one `jit(vmap)`.

Hermann, Mobahi, Fel, Mozer, "On the Foundations of Shortcut Learning" (ICLR 2024; BEYOND.md
Sec. 1.6) map a model's shortcut bias over the predictivity and availability of two latent
features. The datasets are `sbjax.data.atlas`'s (A1-A3 in docs/atlas.md) and the metric
`sbjax.eval.shortcut_bias` (B1-B4). As in `sbjax.train.phase`, every set is sampled *inside* the
compiled program from the cell's traced parameters (rho_s, rho_c, alpha_s, alpha_c, eta_s, eta_c),
so a whole grid of cells x seeds is one `jit(vmap(...))` of one model's program, sharded over the
devices. The one-model program:

1. samples the cell's training set, an in-distribution test set and the cue-conflict probe;
2. trains with `Trainer.train` (`sbjax.train.engine`) on `pack_data` of the training set, with the
   test set as a monitor set;
3. scores the probe with the final parameters and returns the reliances r_s, r_c, the shortcut
   share, the Bayes reference R*_s and the shortcut bias, the test / train accuracy, the Bayes
   accuracy of the cell and whether the model diverged (`stop_reason`).

Keys: the cells of a seed share its keys (common random numbers: same labels, noise, probe,
initialisation and batch order), so differences between cells come from the cell's parameters.
Seed s uses fold_in(key(seed), s); streams 0 training data, 1 test data, 2 probe, 4 the model.

`atlas_sweep(..., strategy="loop")` runs the same one-model program as a Python loop over cells
and seeds (compiled once, called M times): the baseline of `benchmarks/atlas.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbjax.data import atlas as A
from sbjax.eval import shortcut_bias as SB
from sbjax.models import make_model
from sbjax.train.cells import STRATEGIES, cell_keys, run_cells
from sbjax.train.config import TrainConfig
from sbjax.train.data import pack_data
from sbjax.train.engine import make_trainer
from sbjax.train.stopping import DIVERGED
from sbjax.validate import check_choice, check_int, fail

__all__ = ["ATLAS_METRICS", "AtlasResult", "atlas_sweep", "make_cell_program"]

ATLAS_METRICS = (
    "shortcut_bias",
    "share_s",
    "reference_share",
    "r_s",
    "r_c",
    "test_acc",
    "train_acc",
    "bayes_acc",
    "diverged",
)
STREAM_TRAIN, STREAM_TEST, STREAM_PROBE, STREAM_MODEL = 0, 1, 2, 4


def make_cell_program(cfg: TrainConfig, model: Any, data: A.AtlasData):
    """The one-model program of an atlas and its `Trainer`.

    Returns:
      (trainer, run) with `run(key, cell, hp) -> metrics`: `cell` = {rho_s, rho_c, alpha_s,
      alpha_c (float32 scalars), eta_s, eta_c (int32)}, `hp` the trainer's traced
      hyperparameters; metrics {name: scalar} (`ATLAS_METRICS`).
    """
    tab = A.embedding_tables(data)

    def sets(key, cell):
        x_tr, y_tr, _ = A.sample(
            jax.random.fold_in(key, STREAM_TRAIN), data.n_train, cell, data, tab
        )
        x_te, y_te, _ = A.sample(jax.random.fold_in(key, STREAM_TEST), data.n_test, cell, data, tab)
        return pack_data(cfg, x_tr, y_tr, {"test": (x_te, y_te)})

    dummy = {k: jnp.int32(0) if k.startswith("eta") else jnp.float32(0.5) for k in A.CELL_KEYS}
    trainer = make_trainer(cfg, model, jax.eval_shape(sets, jax.random.key(0), dummy))

    def run(key, cell, hp):
        packed = sets(key, cell)
        state, hist = trainer.train(jax.random.fold_in(key, STREAM_MODEL), hp, packed)
        xp, ys, yc, _ = A.sample_probe(
            jax.random.fold_in(key, STREAM_PROBE), data.n_probe, cell, data, tab
        )
        logits = model.logits(state.variables, xp)
        rel = SB.reliance(logits[:, 1] - logits[:, 0], ys, yc)
        ref = SB.bayes_share(cell["rho_s"], cell["rho_c"], data.core)
        bayes_acc = (
            jnp.float32(1.0)
            if data.core == "slab"
            else SB.bayes_accuracy(cell["rho_s"], cell["rho_c"])
        )
        return {
            "shortcut_bias": rel["share_s"] - ref,
            "share_s": rel["share_s"],
            "reference_share": ref,
            "r_s": rel["r_s"],
            "r_c": rel["r_c"],
            "test_acc": hist["monitor_test_acc"][-1],
            "train_acc": hist["train_acc"][-1],
            "bayes_acc": bayes_acc,
            "diverged": (state.stop_reason == DIVERGED).astype(jnp.float32),
        }

    return trainer, run


@dataclasses.dataclass
class AtlasResult:
    """An atlas of one architecture on the host.

    Attributes:
      cells: the checked cells (dicts of Python numbers), in the order of the metrics' first axis.
      n_seeds: seeds per cell.
      metrics: name -> float [C, S] (`ATLAS_METRICS`); "diverged" is 1.0 for a diverged model
        (its other metrics are whatever the program computed: exclude them).
      strategy: "program" (one compiled call) or "loop" (one call per model).
      compile_s, run_s: compile time and the time of the training call(s) after compiling.
      n_devices: devices the program's model axis was sharded over.
    """

    cells: list[dict[str, float]]
    n_seeds: int
    metrics: dict[str, np.ndarray]
    strategy: str
    compile_s: float
    run_s: float
    n_devices: int

    def failed(self) -> np.ndarray:
        """bool [C, S]: diverged, or a non-finite bias (a constant score: no reliance)."""
        return (self.metrics["diverged"] > 0) | ~np.isfinite(self.metrics["shortcut_bias"])


def atlas_sweep(
    cfg: TrainConfig,
    model: Any,
    data: A.AtlasData,
    cells: Sequence[dict[str, Any]],
    *,
    n_seeds: int = 1,
    seed: int = 0,
    strategy: str = "program",
    devices: Sequence[Any] | None = None,
) -> AtlasResult:
    """Trains one model per (cell, seed) on data sampled inside the program.

    Args:
      cfg: training settings (every cell and seed uses them; `stop_rule="none"` trains every
        model for `max_steps` updates).
      model: an `sbjax.models.Model` or a config for `make_model` (input dimension `data.d`).
      data: the `AtlasData` (embedding, sizes, core kind).
      cells: dicts {rho_s, rho_c, alpha_s, alpha_c, eta_s, eta_c} (missing keys: rho 0.9,
        alpha 1, eta 0), checked by `sbjax.data.atlas.check_cell`.
      n_seeds: seeds per cell. seed: root seed.
      strategy: "program" (the grid as one sharded `jit(vmap)`) or "loop" (the same one-model
        program compiled once and called per cell and seed from Python: the baseline).
      devices: devices to shard the model axis over (default all; "loop" uses the first).

    Returns:
      An `AtlasResult`.

    Raises:
      ValueError: a bad cell, data description, seed count or strategy (before compiling).
    """
    data.check()
    if isinstance(cells, dict | str) or not isinstance(cells, Sequence) or not cells:
        fail("cells", cells, "a non-empty list of cell dicts")
    checked = [A.check_cell(c, data, name=f"cells[{i}]") for i, c in enumerate(cells)]
    check_int("n_seeds", n_seeds, min_value=1)
    check_choice("strategy", strategy, STRATEGIES)
    if cfg.batch_size > data.n_train:
        fail("batch_size", cfg.batch_size, f"at most n_train = {data.n_train}")
    if not hasattr(model, "init"):
        model = make_model(model)
    c, s = len(checked), int(n_seeds)
    # Model order: cell-major, seed-minor (m = cell * S + seed).
    cell_arr = {
        k: np.repeat([cc[k] for cc in checked], s).astype(
            np.int32 if k.startswith("eta") else np.float32
        )
        for k in A.CELL_KEYS
    }
    hp0 = {n: np.float32(v) for n, v in cfg.default_hparams().items()}
    _, run = make_cell_program(cfg, model, data)
    metrics, compile_s, run_s, n_dev = run_cells(
        run, cell_arr, cell_keys(seed, c, s), hp0, strategy, devices
    )
    return AtlasResult(
        cells=checked,
        n_seeds=s,
        metrics={k: np.asarray(v, np.float64).reshape(c, s) for k, v in metrics.items()},
        strategy=strategy,
        compile_s=compile_s,
        run_s=run_s,
        n_devices=n_dev,
    )
