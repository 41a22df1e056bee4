"""The grid names and presets of the Theorem 1 verification (THEORY.md Sec. 6.3), as plain data.

Kept apart from `theory.grids` (which imports JAX) so that `python -m theory.theorem1 --help` can
list the presets and grids without starting JAX; `theory.grids` re-exports every name.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from sbjax import validate

__all__ = ["GRID_NAMES", "PRESETS", "preset"]

GRID_NAMES = ("L", "G1", "M", "G2", "G3", "G4", "G5", "G6", "G7")

_G5_GAMMAS = [1.0, 0.5, 0.35, 0.25, 0.18, 0.125, 0.0625]
_G7_DS = [float(10**e) for e in np.arange(2.0, 8.01, 0.5)]

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "full": {
        "L": {"ds": [64, 512], "c": 1.0},
        "G1": {
            "ds": [64, 128, 256, 512, 1024],
            "cs": [1, 1, 1, 1, 0.25],
            "k": 16,
            "eta": 1.0,
            "seeds": 16,
            "method": "full",
        },
        "M": {"d": 128, "c": 1.0, "k": 16, "seeds": 8},
        "G2": {"d": 256, "c": 1.0, "ks": [16, 32, 64, 128, 256], "seeds": 16, "method": "full"},
        "G3": {
            "d": 256,
            "c": 1.0,
            "k": 16,
            "etas": [0.25, 0.5, 1.0, 2.0],
            "seeds": 3,
            "method": "full",
        },
        "G4": {
            "ds": [64, 256],
            "n_over_d": [0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64],
            "k": 16,
            "seeds": 3,
            "method": "full",
        },
        "G5": {
            "gammas": _G5_GAMMAS,
            "ds": [64, 128, 256],
            "etas": [0.5, 1.0],
            "cs": [0.25, 1.0],
            "k": 16,
            "seeds": 3,
        },
        "G6": {"ds": [64, 128], "steps": 10_000, "fresh_steps": 40, "k": 16, "seeds": 3},
        "G7": {"ds": _G7_DS, "k": 16, "etas": [0.25, 0.5, 1.0, 2.0], "seeds": 64},
    },
    "quick": {
        "L": {"ds": [64, 256], "c": 1.0},
        "G1": {
            "ds": [64, 128, 256, 512],
            "cs": [1, 1, 1, 1],
            "k": 16,
            "eta": 1.0,
            "seeds": 8,
            "method": "full",
        },
        "M": {"d": 128, "c": 1.0, "k": 16, "seeds": 8},
        "G2": {"d": 128, "c": 1.0, "ks": [16, 32, 64, 128], "seeds": 16, "method": "full"},
        "G3": {
            "d": 128,
            "c": 1.0,
            "k": 16,
            "etas": [0.25, 0.5, 1.0, 2.0],
            "seeds": 3,
            "method": "full",
        },
        "G4": {
            "ds": [64, 256],
            "n_over_d": [0.25, 1, 4, 16, 64],
            "k": 16,
            "seeds": 3,
            "method": "full",
        },
        "G5": {
            "gammas": [1.0, 0.5, 0.35, 0.25, 0.18, 0.125],
            "ds": [64, 128],
            "etas": [1.0],
            "cs": [1.0],
            "k": 16,
            "seeds": 2,
        },
        "G6": {"ds": [64], "steps": 2000, "fresh_steps": 40, "k": 16, "seeds": 2},
        "G7": {"ds": _G7_DS, "k": 16, "etas": [0.25, 0.5, 1.0, 2.0], "seeds": 16},
    },
    "smoke": {
        "L": {"ds": [32], "c": 4.0},
        "G1": {
            "ds": [32, 64],
            "cs": [1, 1],
            "k": 8,
            "eta": 1.0,
            "seeds": 2,
            "method": "full",
            "n_test": 4096,
        },
        "M": {"d": 32, "c": 1.0, "k": 8, "seeds": 2, "n_test": 4096},
        "G2": {"d": 32, "c": 1.0, "ks": [4, 8], "seeds": 2, "method": "projected", "n_test": 4096},
        "G3": {
            "d": 32,
            "c": 1.0,
            "k": 8,
            "etas": [1.0, 2.0],
            "seeds": 2,
            "method": "projected",
            "n_test": 4096,
        },
        "G4": {
            "ds": [32],
            "n_over_d": [1, 8],
            "k": 8,
            "seeds": 2,
            "method": "projected",
            "n_test": 4096,
        },
        "G5": {
            "gammas": [1.0, 0.5],
            "ds": [32],
            "etas": [1.0],
            "cs": [1.0],
            "k": 8,
            "seeds": 2,
            "n_test": 4096,
        },
        "G6": {"ds": [16], "steps": 30, "fresh_steps": 8, "k": 8, "seeds": 2, "n_test": 4096},
        "G7": {"ds": [1e2, 1e4, 1e6, 1e8], "k": 8, "etas": [0.5, 1.0], "seeds": 4},
    },
}


def preset(name: str) -> dict[str, dict[str, Any]]:
    """A deep copy of a preset's grid specs (``{grid: spec}``)."""
    validate.check_choice("preset", name, tuple(PRESETS))
    return copy.deepcopy(PRESETS[name])
