"""Uniform random k-subsets of range(n), exact and O(k), as bitmaps (random-k, bit allocation).

Floyd's algorithm into a bitmap of ``n`` bits: for ``j = n-k .. n-1`` draw
``t`` uniform on ``[0, j]`` (counter ``j`` of the key, Lemire's exact
multiply-shift with rejection); add ``t``, or ``j`` if ``t`` is taken.  For
``k > n/2`` the complement is drawn.  Scanning the bitmap yields the subset
sorted ascending in O(k + n/64).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hpcq.kernels._config import EXACT, INLINE
from hpcq.kernels.rng import GOLDEN, bits64, mix64

_DEBRUIJN = np.uint64(0x03F79D71B4CB0A89)
_CTZ = np.zeros(64, dtype=np.int64)
for _i in range(64):
    _CTZ[((1 << _i) * 0x03F79D71B4CB0A89 & (2**64 - 1)) >> 58] = _i


@njit(**INLINE)
def ctz64(w):  # type: ignore[no-untyped-def]
    """Index of the lowest set bit of the non-zero uint64 ``w``."""
    return _CTZ[((w & (np.uint64(0) - w)) * _DEBRUIJN) >> np.uint64(58)]


@njit(**INLINE)
def below(key, j, bound):  # type: ignore[no-untyped-def]
    """Uniform integer in [0, bound) from counter ``j`` (Lemire, exact; bound < 2^32)."""
    b = np.uint64(bound)
    r = bits64(key, j)
    lo = r * b
    if lo < b:
        thresh = (np.uint64(0) - b) % b
        while lo < thresh:  # probability < 2^-32: re-mix deterministically
            r = mix64(r + GOLDEN)
            lo = r * b
    # high 64 bits of r * b, with b < 2^32
    return ((r >> np.uint64(32)) * b + (((r & np.uint64(0xFFFFFFFF)) * b) >> np.uint64(32))) \
        >> np.uint64(32)


@njit(**EXACT)
def _floyd(n, k, key, bitmap):  # type: ignore[no-untyped-def]
    for j in range(n - k, n):
        t = np.int64(below(key, j, j + 1))
        if (bitmap[t >> 6] >> np.uint64(t & 63)) & np.uint64(1):
            t = j
        bitmap[t >> 6] |= np.uint64(1) << np.uint64(t & 63)


@njit(**EXACT)
def _bitmap_indices(bitmap, out):  # type: ignore[no-untyped-def]
    """Write the set bits' indices (at most len(out)); return how many bits are set."""
    j = 0
    for wi in range(bitmap.shape[0]):
        wd = bitmap[wi]
        while wd:
            if j < out.shape[0]:
                out[j] = wi * 64 + ctz64(wd)
            wd &= wd - np.uint64(1)
            j += 1
    return j


def sample_bitmap(n: int, k: int, key: np.uint64) -> np.ndarray:
    """A uniform random k-subset of range(n) as a bitmap (uint64 words, bit i%64 of word i//64)."""
    if not 0 <= k <= n < 1 << 32:
        raise ValueError(f"need 0 <= k <= n < 2^32, got k={k}, n={n}")
    words = (n + 63) // 64
    bitmap = np.zeros(words, np.uint64)
    if 2 * k <= n:
        _floyd(n, k, np.uint64(key), bitmap)
        return bitmap
    _floyd(n, n - k, np.uint64(key), bitmap)  # draw the complement
    np.invert(bitmap, out=bitmap)
    if n % 64:
        bitmap[-1] &= np.uint64((1 << (n % 64)) - 1)
    return bitmap


def bitmap_indices(bitmap: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` set bits of ``bitmap`` as sorted int64 indices."""
    if bitmap.dtype != np.uint64 or bitmap.ndim != 1:
        raise TypeError("bitmap must be a 1-D uint64 array")
    out = np.empty(k, np.int64)
    if _bitmap_indices(bitmap, out) != k:
        raise ValueError(f"bitmap does not hold exactly {k} set bits")
    return out
