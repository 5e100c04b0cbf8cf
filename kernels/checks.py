"""Input checks shared by the kernels' wrappers (one read, no temporaries)."""

from __future__ import annotations

import numpy as np
from numba import njit

from hpcq.kernels._config import EXACT


@njit(**EXACT)
def _first_nonfinite(x):  # type: ignore[no-untyped-def]
    for i in range(x.shape[0]):
        if not np.isfinite(x[i]):
            return i
    return -1


@njit(**EXACT)
def _maxabs_nonfinite(x):  # type: ignore[no-untyped-def]
    """(max |x_i| over finite entries, number of non-finite entries)."""
    m = 0.0
    bad = 0
    for i in range(x.shape[0]):
        a = abs(x[i])
        if np.isfinite(a):
            m = max(m, a)
        else:
            bad += 1
    return m, bad


def first_nonfinite(x: np.ndarray) -> int:
    """Index of the first NaN/Inf in the 1-D float array ``x``, or -1 if all are finite."""
    return int(_first_nonfinite(x))


def maxabs_nonfinite(x: np.ndarray) -> tuple[float, int]:
    """``(max |x_i| over finite entries, count of NaN/Inf entries)`` in one pass."""
    m, bad = _maxabs_nonfinite(x)
    return float(m), int(bad)
