"""Parameter checks that raise one uniform, explicit `ValueError`.

Every user-facing builder validates its inputs before any compilation, so a bad configuration fails
in milliseconds with a message naming the parameter, the value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def fail(name: str, value: Any, allowed: str) -> None:
    """Raises `ValueError("<name>=<value!r> is invalid: expected <allowed>")`."""
    raise ValueError(f"{name}={value!r} is invalid: expected {allowed}")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    choices = tuple(choices)
    if value not in choices:
        fail(name, value, "one of " + ", ".join(repr(c) for c in choices))


def check_int(name: str, value: Any, *, min_value: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            import numpy as np

            if isinstance(value, np.integer):
                value = int(value)
            else:
                raise TypeError
        except TypeError:
            fail(name, value, "an integer" + (f" >= {min_value}" if min_value is not None else ""))
    if min_value is not None and value < min_value:
        fail(name, value, f"an integer >= {min_value}")


def check_range(
    name: str,
    value: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """Checks lo <= value <= hi (with optional open ends) for a real number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        fail(name, value, "a real number")
    lo_txt = "(" if lo_open else "["
    hi_txt = ")" if hi_open else "]"
    desc = f"a number in {lo_txt}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{hi_txt}"
    if v != v:  # NaN
        fail(name, value, desc)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        fail(name, value, desc)
    if hi is not None and (v > hi or (hi_open and v == hi)):
        fail(name, value, desc)
