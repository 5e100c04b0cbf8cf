"""Error-feedback memory updates, fused so each step reads its vectors once.

``compensate``: p = g + alpha * h.
``update``:     h <- beta * h + (g - q), with q the decoded message.
(alpha = beta = 1 gives classic error feedback, h = p - q.)
"""

from __future__ import annotations

import numpy as np
from numba import prange

from hpcq.kernels._config import twins, use_parallel


def _compensate_body(g, h, alpha, out):  # type: ignore[no-untyped-def]
    a = np.float32(alpha)
    for i in prange(g.shape[0]):
        out[i] = g[i] + a * h[i]


def _update_body(g, q, h, beta):  # type: ignore[no-untyped-def]
    b = np.float32(beta)
    for i in prange(g.shape[0]):
        h[i] = b * h[i] + (g[i] - q[i])


_compensate, _compensate_par = twins(_compensate_body)
_update, _update_par = twins(_update_body)


def compensate(g: np.ndarray, h: np.ndarray, alpha: float) -> np.ndarray:
    """``g + alpha * h`` as a new float32 array (g, h float32, same length)."""
    out = np.empty_like(g)
    (_compensate_par if use_parallel(g.shape[0]) else _compensate)(g, h, alpha, out)
    return out


def update(g: np.ndarray, q: np.ndarray, h: np.ndarray, beta: float) -> None:
    """In place: ``h = beta * h + (g - q)``."""
    (_update_par if use_parallel(g.shape[0]) else _update)(g, q, h, beta)
