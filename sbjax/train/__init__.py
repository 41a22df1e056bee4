"""Vectorized training: one compiled program trains seeds x members x hyperparameter points.

from sbjax.train import TrainConfig, train_sweep
result = train_sweep(TrainConfig(lr=0.1, max_steps=5000), model, (x, y), n_seeds=8)
"""

from sbjax.train import objective
from sbjax.train.config import HPARAM_NAMES, TrainConfig, expand_grid, hparam_names
from sbjax.train.engine import Trainer, TrainState, make_train, make_trainer, prepare_data
from sbjax.train.objective import BatchTransform, Context, Objective, Penalty
from sbjax.train.sweep import (
    SweepResult,
    SweepSpec,
    enable_compilation_cache,
    model_keys,
    plan_sweep,
    train_sweep,
)
from sbjax.train.units import initial_variables

__all__ = [
    "HPARAM_NAMES",
    "BatchTransform",
    "Context",
    "Objective",
    "Penalty",
    "hparam_names",
    "objective",
    "plan_sweep",
    "SweepResult",
    "SweepSpec",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "enable_compilation_cache",
    "expand_grid",
    "initial_variables",
    "make_train",
    "make_trainer",
    "model_keys",
    "prepare_data",
    "train_sweep",
]
