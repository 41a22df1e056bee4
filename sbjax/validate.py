"""Parameter checks that raise one uniform, explicit `ValueError`.

Every user-facing builder validates its inputs before any compilation, so a bad configuration fails
in milliseconds with a message naming the parameter, the value and what is allowed (DESIGN.md,
"Errors and data safety").
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np


def fail(name: str, value: Any, allowed: str) -> None:
    """Raises `ValueError("<name>=<value!r> is invalid: expected <allowed>")`."""
    raise ValueError(f"{name}={value!r} is invalid: expected {allowed}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        fail(name, value, "one of " + ", ".join(repr(c) for c in choices))


def check_int(name: str, value: Any, *, min_value: int | None = None) -> None:
    """Checks that `value` is an integer (Python or NumPy; not a bool) >= `min_value`."""
    allowed = "an integer" + (f" >= {min_value}" if min_value is not None else "")
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        fail(name, value, allowed)
    if min_value is not None and int(value) < min_value:
        fail(name, value, allowed)


def is_real_number(value: Any) -> bool:
    """True for a real scalar (Python, NumPy or 0-d array), False for bools, strings and others.

    Strings are refused although `float("0.1")` works: a quoted number in a config file is a
    mistake the user should hear about, not something to coerce silently.
    """
    if isinstance(value, bool | np.bool_ | str | bytes):
        return False
    if isinstance(value, numbers.Real):
        return True
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape == () and dtype is not None:  # 0-d NumPy / JAX arrays
        return np.issubdtype(np.dtype(dtype), np.integer) or np.issubdtype(
            np.dtype(dtype), np.floating
        )
    return False


def check_range(
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    finite: bool = True,
) -> None:
    """Checks lo <= value <= hi (with optional open ends) for a real number.

    Args:
      name, value: the parameter and its value (named in the error).
      lo, hi: bounds; None leaves that side unbounded.
      lo_open, hi_open: exclude the bound itself.
      finite: also refuse +-inf (the default: almost every numeric setting needs a finite value;
        pass False where inf means "no limit"). NaN is always refused.

    Raises:
      ValueError: `value` is a bool, a string or not a real scalar, is NaN, is infinite with
        `finite=True`, or lies outside the range.
    """
    lo_txt = "(" if lo_open or (lo is None and finite) else "["
    hi_txt = ")" if hi_open or (hi is None and finite) else "]"
    desc = (
        f"{'a finite' if finite else 'a'} real number in {lo_txt}{'-inf' if lo is None else lo}, "
        f"{'inf' if hi is None else hi}{hi_txt}"
    )
    if not is_real_number(value):
        fail(name, value, desc + " (not a bool or string)")
    v = float(value)
    if math.isnan(v) or (finite and math.isinf(v)):
        fail(name, value, desc)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        fail(name, value, desc)
    if hi is not None and (v > hi or (hi_open and v == hi)):
        fail(name, value, desc)
