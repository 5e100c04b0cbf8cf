"""Casts of float32 vectors to 16-bit wire formats (bf16; fp16 goes through numpy's C cast).

bf16 keeps the top 16 bits of the float32 after round-to-nearest-even on the
dropped 16 bits; decoding shifts them back.  NaN/Inf are counted, never cast.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from hpcq.kernels._config import EXACT, EXACT_PARALLEL, use_parallel


def _to_bf16_body(xbits, out):  # type: ignore[no-untyped-def]
    bad = 0
    for i in prange(xbits.shape[0]):
        b = xbits[i]
        # round to nearest, ties to even, on the 16 dropped bits
        r = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
        # exponent all ones: NaN/Inf input, or a finite value rounded past the largest bf16
        if (b & np.uint32(0x7F800000)) == np.uint32(0x7F800000) or (
            r & np.uint32(0x7F80)
        ) == np.uint32(0x7F80):
            bad += 1
        out[i] = np.uint16(r)
    return bad


def _from_bf16_body(h, out):  # type: ignore[no-untyped-def]
    for i in prange(h.shape[0]):
        out[i] = np.uint32(h[i]) << np.uint32(16)


_to_bf16 = njit(**EXACT)(_to_bf16_body)
_to_bf16_par = njit(**EXACT_PARALLEL)(_to_bf16_body)
_from_bf16 = njit(**EXACT)(_from_bf16_body)
_from_bf16_par = njit(**EXACT_PARALLEL)(_from_bf16_body)


def to_bf16(x: np.ndarray, out: np.ndarray) -> int:
    """Write bf16 bits of float32 ``x`` into uint16 ``out``; return the NaN/Inf count.

    A finite value that rounds past the largest bf16 becomes Inf; it is counted too.
    """
    n = x.shape[0]
    return int((_to_bf16_par if use_parallel(n) else _to_bf16)(x.view(np.uint32), out))


def from_bf16(h: np.ndarray) -> np.ndarray:
    """float32 values of the bf16 bit patterns ``h`` (uint16)."""
    out = np.empty(h.shape[0], dtype=np.uint32)
    (_from_bf16_par if use_parallel(h.shape[0]) else _from_bf16)(h, out)
    return out.view(np.float32)
