"""Groups of the group-robustness literature: (label, whether the simple feature S agrees with it).

For the paper's datasets S "agrees" on a row when its S block points to the row's label (every
training row of the clean datasets; the rows whose S was taken from the other class disagree).
Group g = 2 * y + agrees, so groups 0 / 2 are the minority groups (S points to the other class).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sbjax.validate import fail

N_SPURIOUS_GROUPS = 4
GROUP_NAMES = ("y=0, S disagrees", "y=0, S agrees", "y=1, S disagrees", "y=1, S agrees")


def spurious_groups(y: Any, s_agrees: Any) -> np.ndarray:
    """int32 [N] groups 2 * y + s_agrees from labels y [N] in {0, 1} and s_agrees [N] (bool)."""
    y, a = np.asarray(y), np.asarray(s_agrees)
    if y.ndim != 1 or a.shape != y.shape:
        fail("s_agrees", getattr(a, "shape", a), f"a boolean array of the labels' shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        fail("y", np.unique(y)[:5].tolist(), "labels in {0, 1}")
    if a.dtype != np.bool_ and not np.isin(a, (0, 1)).all():
        fail("s_agrees", np.unique(a)[:5].tolist(), "booleans (or 0 / 1)")
    return (2 * y.astype(np.int32) + a.astype(np.int32)).astype(np.int32)


def group_sizes(groups: Any, n_groups: int = N_SPURIOUS_GROUPS) -> list[int]:
    """Rows per group, [n_groups] (for every record's `group_sizes`)."""
    return np.bincount(np.asarray(groups, np.int64), minlength=n_groups)[:n_groups].tolist()
