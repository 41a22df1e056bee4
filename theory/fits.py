"""Least-squares fits of scaling laws with standard errors (numpy only; scipy is not a dependency).

`loglog_fit(x, y)` fits ``log y = a + b log x`` by ordinary least squares over all points (every seed
is a point, so seed-to-seed scatter enters the standard error) and reports the slope b with its
standard error and a 95 % confidence interval from Student's t.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from sbjax import validate

__all__ = ["Fit", "linear_fit", "loglog_fit", "t_quantile_975"]

# two-sided 95 % Student-t quantiles t_{0.975, df} for df = 1..30
_T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t_quantile_975(df: int) -> float:
    """``t_{0.975}`` with ``df`` degrees of freedom (table to 30, Cornish-Fisher beyond)."""
    validate.check_int("df", df, min_value=1)
    if df <= 30:
        return _T975[df - 1]
    z = 1.959964
    # first two terms of the Cornish-Fisher expansion of t around the normal quantile
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclasses.dataclass(frozen=True)
class Fit:
    """Result of a straight-line fit ``y = intercept + slope x``.

    Attributes:
      slope, intercept: least-squares estimates.
      slope_se, intercept_se: standard errors (NaN with fewer than 3 points).
      ci: 95 % confidence interval of the slope ``(lo, hi)``.
      n: number of points used; r2: coefficient of determination.
    """

    slope: float
    intercept: float
    slope_se: float
    intercept_se: float
    ci: tuple[float, float]
    n: int
    r2: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def linear_fit(x, y) -> Fit:
    """OLS of y on x (1-D arrays); non-finite pairs are dropped."""
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    if x.shape != y.shape:
        validate.fail("y", y.shape, f"the same shape as x {x.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = x.size
    if n < 2 or np.ptp(x) == 0:
        validate.fail("x", x.tolist(), "at least two distinct finite points")
    a = np.stack([np.ones_like(x), x], axis=1)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    resid = y - a @ coef
    ss_res = float(resid @ resid)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    if n > 2:
        s2 = ss_res / (n - 2)
        cov = s2 * np.linalg.inv(a.T @ a)
        se_b, se_a = math.sqrt(cov[1, 1]), math.sqrt(cov[0, 0])
        half = t_quantile_975(n - 2) * se_b
    else:
        se_b = se_a = half = float("nan")
    b = float(coef[1])
    return Fit(b, float(coef[0]), se_b, se_a, (b - half, b + half), n, r2)


def loglog_fit(x, y) -> Fit:
    """Fits ``log y = a + b log x`` (natural logs; points with x <= 0 or y <= 0 are dropped)."""
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    ok = (x > 0) & (y > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return linear_fit(np.log(x[ok]), np.log(y[ok]))
