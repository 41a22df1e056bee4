"""Training units and the objective's inputs in a sweep: layout, keys, validation, fingerprint.

A sweep trains n_seeds x n_members x n_grid models. With `unit_size` K, the members of a seed are
grouped into n_members / K units of K consecutive members, and the sharded axis of the compiled
program is the unit axis, U = n_seeds * (n_members / K) * n_grid, in order
u = (seed * n_units + unit) * n_grid + grid_point. Every leaf of a unit's state has a member axis
[K] after the unit axis (none for K = 1, which is exactly the model layout of independent models).
Results are returned in model order m = (seed * n_members + member) * n_grid + grid_point, with
member = unit * K + position in the unit.

The key of member j of seed s is `fold_in(fold_in(key(seed), s), j)` whatever K, so a unit with
no coupling term initialises its members exactly as independent members (they then share the
unit's batch order, drawn from its first member's key).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sbjax.models.initializers import scale_params
from sbjax.train.data import to_float32
from sbjax.train.engine import STREAM_INIT
from sbjax.validate import fail


@dataclasses.dataclass(frozen=True)
class UnitLayout:
    n_seeds: int
    n_units: int  # units per seed
    unit_size: int
    n_grid: int

    @property
    def n_units_total(self) -> int:
        return self.n_seeds * self.n_units * self.n_grid

    @property
    def n_models(self) -> int:
        return self.n_units_total * self.unit_size

    def to_units(self, a):
        """[M, ...] in model order -> [U, K, ...] ([U, ...] for K = 1)."""
        if self.unit_size == 1:
            return a
        xp = jnp if isinstance(a, jax.Array) else np
        s, nu, k, g = self.n_seeds, self.n_units, self.unit_size, self.n_grid
        a = xp.reshape(a, (s, nu, k, g) + tuple(a.shape[1:]))
        return xp.reshape(xp.swapaxes(a, 2, 3), (s * nu * g, k) + tuple(a.shape[4:]))

    def to_models(self, a):
        """[U, K, ...] ([U, ...] for K = 1) -> [M, ...] in model order."""
        if self.unit_size == 1:
            return a
        xp = jnp if isinstance(a, jax.Array) else np
        s, nu, k, g = self.n_seeds, self.n_units, self.unit_size, self.n_grid
        a = xp.reshape(a, (s, nu, g, k) + tuple(a.shape[2:]))
        return xp.reshape(xp.swapaxes(a, 2, 3), (s * nu * k * g,) + tuple(a.shape[4:]))

    def rows_to_models(self, a: np.ndarray) -> np.ndarray:
        """History rows [U + pad, periods, K] of the unit programs -> [M + pad * K, periods]
        (real models first, in model order)."""
        if self.unit_size == 1:
            return a
        a = np.moveaxis(a, 2, 1)
        u = self.n_units_total
        pad = a[u:].reshape((-1,) + a.shape[2:])
        return np.concatenate([self.to_models(a[:u]), pad])


def model_keys(
    seed: int, seed_indices: Sequence[int], n_members: int, n_grid: int, n_pad: int = 0
) -> jax.Array:
    """PRNG keys [M + n_pad] in sweep order (see module docstring); padding gets unused streams."""
    root = jax.random.key(seed)
    keys = []
    for s in seed_indices:
        ks = jax.random.fold_in(root, s)
        for j in range(n_members):
            kj = jax.random.fold_in(ks, j)
            keys.extend([kj] * n_grid)
    for i in range(n_pad):
        keys.append(jax.random.fold_in(jax.random.fold_in(root, 2**31 - 1), i))
    return jnp.stack(keys)


def initial_variables(
    model: Any, x_example: Any, seed: int, seed_indices: Sequence[int], init_scale: float = 1.0
) -> Any:
    """Variables [S, ...] that member 0 of each seed starts from in a sweep without
    `init_variables` (every grid point of the seed shares them): the engine's own rule on the
    keys of `model_keys`, so W - W0 of a trained model needs no stored initialisation."""
    keys = model_keys(seed, seed_indices, 1, 1)
    x1 = jnp.asarray(x_example[:1], jnp.float32)

    def one(k):
        return scale_params(dict(model.init(jax.random.fold_in(k, STREAM_INIT), x1)), init_scale)

    return jax.vmap(one)(keys)


def unit_keys(seed: int, seed_indices, layout: UnitLayout, n_pad: int) -> jax.Array:
    """Keys [U + n_pad] (K = 1) or [U + n_pad, K]; padding units get unused streams."""
    k = layout.unit_size
    n_members = layout.n_units * k
    if k == 1:
        return model_keys(seed, seed_indices, n_members, layout.n_grid, n_pad)
    real = layout.to_units(model_keys(seed, seed_indices, n_members, layout.n_grid))
    root = jax.random.key(seed)
    pad = [jax.random.fold_in(jax.random.fold_in(root, 2**31 - 1), i) for i in range(n_pad * k)]
    if not pad:
        return real
    return jnp.concatenate([real, jnp.stack(pad).reshape(n_pad, k)])


@dataclasses.dataclass
class ObjectiveInputs:
    weights: np.ndarray | None = None  # [M, N] float32
    x_u: np.ndarray | None = None  # [Nu, ...] float32
    init: Any = None  # variables [M, ...]
    frozen: Any = None  # variables [F, ...] (shared) or [M, F, ...]
    frozen_per_model: bool = False
    n_frozen: int = 0


def _reference_variables(model, data):
    return dict(jax.eval_shape(model.init, jax.random.key(0), jnp.asarray(data.x[:1])))


def _check_tree(name: str, tree: Any, ref: Any, lead: tuple[int | None, ...]) -> Any:
    """`tree` has `ref`'s structure with leaves of shape lead + ref.shape (None: any size)."""
    flat_t = jax.tree_util.tree_flatten_with_path(tree)[0]
    flat_r = jax.tree_util.tree_flatten_with_path(ref)[0]
    paths_t = [jax.tree_util.keystr(p) for p, _ in flat_t]
    paths_r = [jax.tree_util.keystr(p) for p, _ in flat_r]
    if paths_t != paths_r:
        fail(
            name,
            f"<a pytree with leaves {paths_t[:3]}...>",
            f"the model's variables stacked (leaves {paths_r[:3]}...)",
        )
    for (path, a), (_, r) in zip(flat_t, flat_r, strict=True):
        a = np.asarray(a)
        want = lead + tuple(r.shape)
        ok = a.ndim == len(want) and all(
            w is None or w == d for w, d in zip(want, a.shape, strict=True)
        )
        if not ok:
            fail(
                f"{name}{jax.tree_util.keystr(path)} shape",
                a.shape,
                f"{tuple('F' if w is None else w for w in want)} (stacked model variables)",
            )
        if a.dtype.kind not in "fiu" or (a.size and not np.all(np.isfinite(a))):
            fail(
                f"{name}{jax.tree_util.keystr(path)}",
                "<NaN/inf or non-numeric values>",
                "finite real variables",
            )
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), tree)


def objective_inputs(
    cfg,
    model,
    data,
    layout: UnitLayout,
    example_weights,
    unlabeled,
    unlabeled_batch_size,
    init_variables,
    frozen,
) -> ObjectiveInputs:
    """Validates the objective's host inputs (before compiling) in model order."""
    out = ObjectiveInputs()
    n, m = int(data.x.shape[0]), layout.n_models
    if example_weights is not None:
        w = np.asarray(example_weights)
        if w.dtype.kind not in "fiu" or w.shape not in ((n,), (m, n)):
            fail(
                "example_weights",
                getattr(w, "shape", w),
                f"a real array [{n}] or [{m}, {n}] (models x training examples)",
            )
        w = w.astype(np.float32)
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            fail("example_weights", "<negative or non-finite values>", "finite weights >= 0")
        out.weights = np.broadcast_to(w, (m, n))
    if unlabeled is not None:
        xu = np.asarray(unlabeled)
        if xu.ndim != data.x.ndim or xu.shape[1:] != data.x.shape[1:] or xu.shape[0] == 0:
            fail(
                "unlabeled",
                getattr(xu, "shape", xu),
                f"inputs [Nu, {', '.join(map(str, data.x.shape[1:]))}] with Nu >= 1",
            )
        if xu.dtype.kind not in "fiub":
            fail("unlabeled", xu.dtype, "a real-valued array")
        xu = to_float32("unlabeled", xu)
        if not np.all(np.isfinite(xu)):
            fail("unlabeled", "<NaN/inf values>", "finite inputs")
        if unlabeled_batch_size is not None and unlabeled_batch_size > xu.shape[0]:
            fail(
                "unlabeled_batch_size",
                unlabeled_batch_size,
                f"at most the unlabeled pool size {xu.shape[0]}",
            )
        if unlabeled_batch_size is None and cfg.batch_size > xu.shape[0]:
            fail(
                "unlabeled_batch_size",
                None,
                f"a size <= {xu.shape[0]} (the pool is smaller than batch_size)",
            )
        out.x_u = xu
    if init_variables is not None or frozen is not None:
        ref = _reference_variables(model, data)
        if init_variables is not None:
            out.init = _check_tree("init_variables", init_variables, ref, (m,))
        if frozen is not None:
            first = jax.tree_util.tree_leaves(frozen)
            ref_first = jax.tree_util.tree_leaves(ref)
            if not first or len(first) != len(ref_first):
                fail("frozen", "<a pytree of another structure>", "the model's variables, stacked")
            per_model = np.ndim(first[0]) == len(ref_first[0].shape) + 2
            lead = (m, None) if per_model else (None,)
            out.frozen = _check_tree("frozen", frozen, ref, lead)
            out.frozen_per_model = per_model
            out.n_frozen = int(np.shape(jax.tree_util.tree_leaves(out.frozen)[0])[len(lead) - 1])
            if out.n_frozen == 0:
                fail("frozen", "<no frozen members>", "at least one frozen member (F >= 1)")
    return out


def unit_inputs(inputs: ObjectiveInputs, layout: UnitLayout, n_pad: int) -> dict:
    """The per-unit inputs of hp: {"members": {...}, "frozen": ...}, padded with copies of the
    last unit."""

    def pad(a):
        return np.concatenate([a, np.repeat(a[-1:], n_pad, axis=0)]) if n_pad else a

    members = {}
    if inputs.weights is not None:
        members["example_weights"] = pad(layout.to_units(np.ascontiguousarray(inputs.weights)))
    if inputs.init is not None:
        members["init_variables"] = jax.tree_util.tree_map(
            lambda a: pad(layout.to_units(a)), inputs.init
        )
    out: dict[str, Any] = {}
    if members:
        out["members"] = members
    if inputs.frozen is not None:
        u = layout.n_units_total
        if inputs.frozen_per_model:

            def per_unit(a):
                a = layout.to_units(a)
                return pad(a[:, 0] if layout.unit_size > 1 else a)
        else:

            def per_unit(a):
                return pad(np.broadcast_to(a, (u,) + a.shape).copy())

        out["frozen"] = jax.tree_util.tree_map(per_unit, inputs.frozen)
    return out


def _describe_fn(fn) -> str:
    cells = []
    for c in getattr(fn, "__closure__", None) or ():
        v = c.cell_contents
        if isinstance(v, int | float | str | bool | tuple | type(None)):
            cells.append(repr(v))
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}{cells}"


def objective_part(trainer, inputs: ObjectiveInputs) -> str:
    """Digest of what the objective adds (names, functions, settings and every input byte)."""
    obj = trainer.objective
    desc = (
        [(p.name, _describe_fn(p.fn), p.default, p.needs) for p in obj.penalties],
        None
        if obj.batch_transform is None
        else (obj.batch_transform.name, _describe_fn(obj.batch_transform.fn)),
        obj.data_loss_weight,
        obj.trainable,
        trainer.unit_size,
        trainer.unlabeled_batch_size,
    )
    if obj.loss_rule is not None:  # only then, so other objectives keep their digests
        rule = obj.loss_rule
        desc = desc + ((rule.name, _describe_fn(rule.fn), rule.defaults, rule.n_groups),)
    h = hashlib.sha256(repr(desc).encode())
    for a in (
        inputs.weights,
        inputs.x_u,
        *jax.tree_util.tree_leaves(inputs.init),
        *jax.tree_util.tree_leaves(inputs.frozen),
    ):
        if a is not None:
            a = np.ascontiguousarray(a)
            h.update(repr((a.shape, str(a.dtype))).encode())
            h.update(a)
    return h.hexdigest()[:16]
