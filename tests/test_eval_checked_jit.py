"""`sbjax.eval.metrics.checked_jit`: one public function = its checks in Python + one jitted body.

The contract: the check runs before anything is traced (a bad argument is the ValueError naming
it, and nothing compiles), equal static arguments and shapes reuse one compiled program, and a
decorated function keeps its public signature, docstring and numbers.
"""

import inspect
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sbjax.eval.metrics import checked_jit, evaluate
from sbjax.validate import check_int, fail

TRACES = []  # one entry per trace of a body below


def linear_logits(v, x):
    TRACES.append("linear_logits")
    return x @ v["w"] + v["b"]


def _check_scale(a):
    check_int("power", a.power, min_value=1)
    if np.ndim(a.x) != 1:
        fail("x.shape", np.shape(a.x), "a vector [n]")
    a.x = jnp.asarray(a.x, jnp.float32)
    a.label = f"power {a.power}"  # not a parameter: for `finish` only


@checked_jit(
    _check_scale,
    static_argnames=("power",),
    finish=lambda out, a: (a.label, out),
)
def scale(x, factor=2.0, *, power: int = 1):
    """x ** power times factor."""
    TRACES.append("scale")
    return factor * x**power


def test_signature_docstring_and_wrong_calls_are_the_functions():
    assert list(inspect.signature(scale).parameters) == ["x", "factor", "power"]
    assert inspect.signature(scale).parameters["power"].kind is inspect.Parameter.KEYWORD_ONLY
    assert scale.__doc__ == "x ** power times factor." and scale.__name__ == "scale"
    params = inspect.signature(evaluate).parameters
    assert list(params) == [
        "logits_fn",
        "variables",
        "x",
        "y",
        "auc_kind",
        "batch_size",
        "model_chunk",
    ]
    assert params["auc_kind"].default == "roc" and params["batch_size"].default is None
    assert evaluate.__doc__.startswith("Standard accuracy and AUC of every model of a stack.")
    with pytest.raises(TypeError):
        scale([1.0], 2.0, 3)  # power is keyword-only
    with pytest.raises(TypeError):
        scale([1.0], pwr=2)


def test_check_runs_before_tracing_and_normalizes():
    TRACES.clear()
    with pytest.raises(ValueError, match=r"^power=0 is invalid: expected an integer >= 1$"):
        scale([1.0, 2.0], power=0)
    with pytest.raises(ValueError, match=r"^x\.shape=\(2, 1\) is invalid"):
        scale([[1.0], [2.0]])
    assert TRACES == []
    label, out = scale([1.0, 2.0], 3.0, power=2)  # a list, made float32 by the check
    assert label == "power 2" and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, [3.0, 12.0])
    assert TRACES == ["scale"]


def _stack(seed, m=3, d=4):
    kw, kb = jax.random.split(jax.random.key(seed))
    return {"w": jax.random.normal(kw, (m, d, 2)), "b": jax.random.normal(kb, (m, 2))}


def test_evaluate_checks_before_compiling():
    compiles = []

    def listener(event, duration, **kwargs):
        if event.endswith("backend_compile_duration"):
            compiles.append(event)

    x = np.ones((8, 4), np.float32)
    y = np.array([0, 1] * 4)
    v = jax.block_until_ready(_stack(0))  # compiled here, outside the block
    TRACES.clear()
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        with pytest.raises(ValueError, match=r"^batch_size=0 is invalid: expected an integer"):
            evaluate(linear_logits, v, x, y, batch_size=0)
        with pytest.raises(ValueError, match=r"^auc_kind='mean' is invalid: expected one of"):
            evaluate(linear_logits, v, x, y, auc_kind="mean")
        with pytest.raises(ValueError, match=r"^y=.*expected integer labels in \{0, 1\}"):
            evaluate(linear_logits, v, x, y + 1)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert TRACES == [] and compiles == []


def test_equal_static_args_and_shapes_compile_once():
    TRACES.clear()
    for s in (1.0, 2.0, 5.0):  # new values, same shapes and static power: one trace
        scale(np.full(3, s), s, power=2)
    assert TRACES == ["scale"]
    scale(np.ones(3), power=3)  # a new static value traces again
    scale(np.ones(4), power=3)  # and so does a new shape
    assert TRACES == ["scale"] * 3

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    TRACES.clear()
    first = evaluate(linear_logits, _stack(1), x, y, auc_kind="both")
    for seed in (2, 3):  # new variables and inputs of the same shapes
        evaluate(linear_logits, _stack(seed), x + seed, y, auc_kind="both")
    assert len(TRACES) == 1
    evaluate(linear_logits, _stack(1), x, y, auc_kind="both", batch_size=8)  # new static
    assert len(TRACES) == 2
    again = evaluate(linear_logits, _stack(1), x, y, auc_kind="both")
    assert len(TRACES) == 2
    for k in first:
        np.testing.assert_array_equal(again[k], first[k])


def _direct_metrics(scores, y):
    """Accuracy, ROC-AUC (Mann-Whitney over all pairs) and average precision, from definitions."""
    pos, neg = scores[y == 1], scores[y == 0]
    acc = np.mean((scores > 0) == (y == 1))
    pairs = [1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg)]
    # AP: mean over positives of precision at the threshold of that positive (ties included).
    ap = np.mean([np.sum(pos >= s) / np.sum(scores >= s) for s in pos])
    return acc, np.mean(pairs), ap


def test_evaluate_matches_the_formulas():
    rng = np.random.default_rng(3)
    n, d = 60, 5
    # Small integers: float32 scores are exact, and ties are frequent.
    x = rng.integers(-3, 4, size=(n, d)).astype(np.float32)
    y = (x[:, 0] + rng.normal(size=n) > 0).astype(np.int32)
    v = {
        "w": rng.integers(-2, 3, size=(3, d, 2)).astype(np.float32),
        "b": np.zeros((3, 2), np.float32),
    }
    v["w"][2] = 0.0  # a constant model: every score tied at 0, accuracy = share of class 0
    out = evaluate(linear_logits, v, x, y, auc_kind="both", batch_size=16, model_chunk=2)
    for i in range(3):
        logits = x.astype(np.float64) @ v["w"][i].astype(np.float64)
        acc, roc, ap = _direct_metrics(logits[:, 1] - logits[:, 0], y)
        assert float(out["accuracy"][i]) == pytest.approx(acc, abs=1e-7)
        assert float(out["roc_auc"][i]) == pytest.approx(roc, abs=1e-6)
        assert float(out["pr_auc"][i]) == pytest.approx(ap, abs=1e-6)
    assert float(out["roc_auc"][2]) == 0.5
    assert float(out["accuracy"][2]) == pytest.approx(np.mean(y == 0), abs=1e-7)
    assert float(out["pr_auc"][2]) == pytest.approx(np.mean(y == 1), abs=1e-6)
