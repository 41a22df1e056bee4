"""What the synthetic-data experiments share: dataset and model tables, data draws, recipes.

Used by `extreme_sb`, `uaps`, `robustness_of_sb` and `suboptimal_generalization` (no experiment
imports another). Nothing here imports JAX at module level, so `--help` stays instant.

* `DATASETS` -- record name -> (`sbjax.data.make_dataset` name, arguments): lms5, ms57, lms7,
  ms7, noisy_lms7 (d and n_complex are filled in per experiment).
* `MODELS` -- the paper's architectures (App. B, Table 4; nb06's (200,1)-FCN): record name ->
  `sbjax.models.make_model` config. `fcn_name(width, depth)` names the FCNs.
* `Recipe` -- a training recipe as preset data (`--set train.lr=0.05`), turned into a
  `sbjax.train.TrainConfig` by `train_config`; `check_recipe` validates one.
* `make_data` -- one train / test draw of a named dataset from a stream fixed by its name, d and
  |S^c| (`stable_tag`), so every experiment and rerun sees the same points.
* `per_dataset`, `select_models`, `class_sizes`, `check_*` -- small helpers of presets and
  records.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from experiments.common import check_train_fields
from sbjax.validate import check_choice, fail

# record name -> (make_dataset name, arguments); d / n_complex are filled in per experiment.
DATASETS: dict[str, tuple[str, dict[str, Any]]] = {
    "lms5": ("lms", {"k": 5}),
    "ms57": ("ms", {"k_simple": 5, "k_complex": 7}),
    "lms7": ("lms", {"k": 7}),
    "ms7": ("ms", {"k": 7}),
    "noisy_lms7": ("noisy_lms", {"k": 7}),
}

# Architectures of the paper (App. B; Table 4; nb06's (200,1)-FCN): record name -> model config.
MODELS: dict[str, dict[str, Any]] = {
    "fcn_100x1": {"name": "fcn", "width": 100, "depth": 1},
    "fcn_100x2": {"name": "fcn", "width": 100, "depth": 2},
    "fcn_200x1": {"name": "fcn", "width": 200, "depth": 1},
    "cnn1d_32x7x1": {"name": "cnn1d", "filters": 32, "kernel": 7, "depth": 1},
    "cnn1d_32x7x2": {"name": "cnn1d", "filters": 32, "kernel": 7, "depth": 2},
    "gru_100x10x1": {"name": "gru", "hidden": 100, "chunk": 10, "depth": 1},
    "gru_100x10x2": {"name": "gru", "hidden": 100, "chunk": 10, "depth": 2},
}

OPTIMIZERS = ("sgd", "adam", "rmsprop")
STOP_RULES = ("acc", "loss")


def fcn_name(width: int, depth: int) -> str:
    """Record name of a (width, depth)-FCN, e.g. "fcn_100x2"."""
    return f"fcn_{int(width)}x{int(depth)}"


def fcn_config(width: int, depth: int, **kw: Any) -> dict[str, Any]:
    """`make_model` config of a (width, depth)-FCN (extra keys: activation, init, dropout)."""
    return {"name": "fcn", "width": int(width), "depth": int(depth), **kw}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A training recipe (REFERENCE.md Sec. 3.3) as preset data.

    Fields mirror `sbjax.train.TrainConfig`. `max_steps`, `eval_every` and `patience` may be None
    where the experiment sets them per dataset (its preset's maps say which); `train_config`
    fills them in.
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    stop_rule: str = "acc"
    stop_eps: float = 1e-4
    max_steps: int | None = None
    eval_every: int | None = None
    patience: int | None = None

    def replace(self, **over: Any) -> Recipe:
        return dataclasses.replace(self, **over)


# The reference's recipes shared by several experiments (REFERENCE.md Sec. 3.3).
# nb01: lr 0.1, no momentum, coupled L2 5e-5 (the paper's App. B says 5e-7), batch 256, stop at
# train accuracy >= 1 - 1e-4.
NB01 = Recipe(
    optimizer="sgd",
    lr=0.1,
    momentum=0.0,
    weight_decay=5e-5,
    batch_size=256,
    stop_rule="acc",
    stop_eps=1e-4,
)
# nb03's MS-7 recipe (the reference's own "S removed" control): lr 0.3, momentum 0.9, wd 5e-4,
# train accuracy >= 0.995, evaluation every 2000 updates, patience 1000.
NB03_MS7 = Recipe(
    optimizer="sgd",
    lr=0.3,
    momentum=0.9,
    weight_decay=5e-4,
    batch_size=256,
    stop_rule="acc",
    stop_eps=5e-3,
    eval_every=2000,
    patience=1000,
)


def train_config(recipe: Recipe | Mapping[str, Any], **over: Any):
    """`sbjax.train.TrainConfig` of a recipe with `over` applied (None fields left out)."""
    from sbjax.train import TrainConfig

    base = dataclasses.asdict(recipe) if dataclasses.is_dataclass(recipe) else dict(recipe)
    kw = {k: v for k, v in {**base, **over}.items() if v is not None}
    return TrainConfig(**kw)


def check_recipe(name: str, recipe: Recipe, *, need: Iterable[str] = ()) -> None:
    """Validates a recipe by `TrainConfig` (`check_train_fields`); errors name the preset key
    (e.g. "train.lr").

    Args:
      name: the recipe's dotted key in the preset.
      need: fields that must not be None here.
    """
    if not isinstance(recipe, Recipe):
        fail(name, recipe, "a Recipe")
    check_choice(f"{name}.stop_rule", recipe.stop_rule, STOP_RULES)  # a recipe converges
    check_train_fields(name, need=need, **dataclasses.asdict(recipe))


def check_positive_int(name: str, value: Any, min_value: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < min_value:
        fail(name, value, f"an integer >= {min_value}")


def check_names(name: str, values: Any, allowed: Iterable[str]) -> None:
    """Every entry of `values` (a sequence of names) is one of `allowed`; at least one entry."""
    allowed = tuple(allowed)
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        fail(name, values, "a list of names from " + ", ".join(allowed))
    bad = [v for v in values if v not in allowed]
    if bad or not values:
        fail(name, values, "one or more names from " + ", ".join(allowed))


def per_dataset(value: Any, dataset: str) -> Any:
    """A preset value that is either global or a {dataset: value} map."""
    return value[dataset] if isinstance(value, Mapping) else value


def check_per_dataset(name: str, value: Any, datasets: Iterable[str], check) -> None:
    """Checks a global-or-per-dataset preset value for every dataset in `datasets`."""
    for ds in datasets:
        if isinstance(value, Mapping):
            if ds not in value:
                fail(name, value, f"a value or a map with an entry for {ds!r}")
            check(f"{name}.{ds}", value[ds])
        else:
            check(name, value)


def select_models(preset: Any, models: str | None) -> Any:
    """A preset (frozen dataclass with a `models` field: a list of names or {dataset: list})
    with its models chosen by `--models`: None keeps the preset's default list; a
    comma-separated list picks from the default list and the preset's optional `more_models`
    (same shape as `models`: architectures one option away, e.g. the quick preset's GRU);
    "all" takes both.

    Raises:
      ValueError: naming "models", the value and the architectures allowed.
    """
    if models is None:
        return preset
    per = preset.models
    more = getattr(preset, "more_models", None) or ({} if isinstance(per, Mapping) else ())
    if isinstance(per, Mapping):
        keys = list(dict.fromkeys([*per, *more]))
        pool = {k: tuple(dict.fromkeys([*per.get(k, ()), *more.get(k, ())])) for k in keys}
        available = sorted({m for v in pool.values() for m in v})
    else:
        pool = tuple(dict.fromkeys([*per, *more]))
        available = sorted(pool)
    wanted = [m.strip() for m in models.split(",") if m.strip()]
    if wanted == ["all"]:
        wanted = available
    if not wanted or any(m not in available for m in wanted):
        fail("models", models, '"all" or a comma-separated subset of ' + ", ".join(available))
    if isinstance(pool, Mapping):
        new = {k: tuple(m for m in v if m in wanted) for k, v in pool.items()}
    else:
        new = tuple(m for m in pool if m in wanted)
    return dataclasses.replace(preset, models=new)


def stable_tag(*parts: Any) -> int:
    """A stable 31-bit integer for PRNG streams (crc32 of the parts' text)."""
    return zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF


def make_dataset(name: str, d: int, n_complex: int | None = None, **kw: Any):
    """The named dataset (`DATASETS`) in dimension d (with |S^c| = n_complex if given)."""
    from sbjax.data import make_dataset as make

    check_choice("dataset", name, tuple(DATASETS))
    kind, base = DATASETS[name]
    args = {**base, "d": int(d), **kw}
    if n_complex is not None:
        args["n_complex"] = int(n_complex)
    return make(kind, **args)


def make_data(
    name: str, d: int, n_train: int, n_test: int, seed: int, n_complex: int | None = None
):
    """Builds dataset `name` and draws one train / test split from a stream fixed by its name.

    The key is fold_in(key(seed), stable_tag("data", name, d, n_complex)), so every experiment
    (and every rerun) with the same root seed draws the same points.

    Returns:
      (dataset, (x_train, y_train), (x_test, y_test)) with NumPy float32 [n, d] / int32 [n].
    """
    import jax

    ds = make_dataset(name, d, n_complex)
    key = jax.random.fold_in(jax.random.key(seed), stable_tag("data", name, d, n_complex))
    (xtr, ytr), (xte, yte) = ds.sample_split(key, n_train, n_test)
    ytr, yte = np.asarray(ytr), np.asarray(yte)
    # Before any training: a set with one class has no AUC and no balanced accuracy.
    for field, n, y in (("n_train", n_train, ytr), ("n_test", n_test, yte)):
        if np.unique(y).size < 2:
            fail(f"{field}.{name}", n, "a set size whose draw holds both classes (got one only)")
    return ds, (np.asarray(xtr), ytr), (np.asarray(xte), yte)


def class_sizes(y: Any) -> tuple[int, int]:
    """(n_pos, n_neg) of labels y [n] (for `Run.add_result(test_size=...)`)."""
    n_pos = int(np.sum(np.asarray(y) == 1))
    return n_pos, int(np.size(y)) - n_pos


def tree_index(tree: Any, i: int) -> Any:
    """Model i of stacked variables (NumPy leaves)."""
    import jax

    return jax.tree_util.tree_map(lambda v: np.asarray(v)[i], tree)
