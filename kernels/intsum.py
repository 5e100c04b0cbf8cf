"""Kernels of the homomorphic integer mean (``allreduce-int``): scale and round onto a
shared integer grid, and decode the integer sum.

Encoding: ``v = x * (1 / scale)`` in float64, clamped to ``[-q, q]``; ``t = floor(v)``,
``frac = v - t``; ``T = floor(frac 2^24 + 1/2)`` (frac to 24 fractional bits) and
``c = t + ((T + r) >> 24)`` with ``r`` the 24 random bits of ``uniform24(key, i)``
(:mod:`hpcq.kernels.rng`): ``P(c = t + 1) = T / 2^24``, so ``E c = v`` up to frac's
24-bit rounding (at most 2^-25 of a grid step), like the quantizers of
:mod:`hpcq.kernels.quantize`.  ``|c| <= q`` always, so a sum of p codes with
``p q <= 2^(bits-1) - 1`` cannot overflow the word.

Decoding: ``out = float32(sum * (scale / p))`` (float64 product, one rounding).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hpcq.kernels._config import EXACT
from hpcq.kernels.cast import f32_bits, f32_from_bits
from hpcq.kernels.rng import GOLDEN, mix64

_S40 = np.uint64(40)
_ONE = np.uint64(1)
_TWO24 = 16777216.0
_ABS = np.uint32(0x7FFFFFFF)
_INF = np.uint32(0x7F800000)

#: The integer word types of the sum, by width.
WORDS = {8: np.int8, 16: np.int16, 32: np.int32}


@njit(**EXACT)
def _max_abs(x):  # type: ignore[no-untyped-def]
    # on the bits: |x| orders as its uint32 bits, and an integer max vectorises; a NaN
    # (bits above Inf's) is skipped, as round_to_grid reports it
    m = np.uint32(0)
    for i in range(x.shape[0]):
        b = f32_bits(x[i]) & _ABS
        m = max(m, b if b <= _INF else np.uint32(0))
    return f32_from_bits(m)


@njit(**EXACT)
def _round(x, out, inv_scale, q, key):  # type: ignore[no-untyped-def]
    # branch-free (selects, not jumps), so that the loop vectorises: a non-finite x_i
    # (x_i - x_i is NaN) is counted and written as 0
    bad = 0
    for i in range(x.shape[0]):
        xi = np.float64(x[i])
        finite = (xi - xi) == 0.0
        bad += not finite
        v = min(max(xi * inv_scale, -q), q) if finite else 0.0
        t = np.floor(v)
        # (v - t) 2^24 + 1/2 > 0: truncation is the floor
        frac_bits = np.int64((v - t) * _TWO24 + 0.5)
        r = np.int64(mix64(key + (np.uint64(i) + _ONE) * GOLDEN) >> _S40)
        out[i] = np.int64(t) + ((frac_bits + r) >> 24)
    return bad


@njit(**EXACT)
def _decode(total, out, factor):  # type: ignore[no-untyped-def]
    for i in range(total.shape[0]):
        out[i] = np.float32(np.float64(total[i]) * factor)


def levels(bits: int, p: int) -> int:
    """q: the largest code so that p codes sum inside a signed ``bits``-bit word
    (``(2^(bits-1) - 1) >> ceil(log2 p)``); ValueError when the word is too narrow."""
    if bits not in WORDS:
        raise ValueError(f"allreduce-int: bits={bits}; valid: 8, 16, 32")
    if p < 1:
        raise ValueError(f"allreduce-int: p={p} must be >= 1")
    head = (p - 1).bit_length()  # ceil(log2 p)
    q = ((1 << (bits - 1)) - 1) >> head
    if q < 1:
        raise ValueError(f"allreduce-int: bits={bits} cannot sum {p} ranks "
                         f"({head} bits of headroom leave no level); use a wider word")
    return q


def max_abs(x: np.ndarray) -> float:
    """max |x_i| of a float32 vector (NaN is skipped: :func:`round_to_grid` reports it)."""
    _check(x, "x")
    return float(_max_abs(x))


def round_to_grid(x: np.ndarray, scale: float, q: int, key: int, bits: int,
                  out: np.ndarray | None = None) -> np.ndarray:
    """Stochastic rounding of ``x / scale`` onto the integers in ``[-q, q]``, in ``bits``-bit
    words (into ``out`` when given).  ``scale`` 0 gives zeros.  ValueError on NaN/Inf."""
    _check(x, "x")
    if bits not in WORDS:
        raise ValueError(f"bits={bits}; valid: 8, 16, 32")
    if not (q >= 1 and q <= (1 << (bits - 1)) - 1):
        raise ValueError(f"q={q} does not fit a {bits}-bit word")
    if not (np.isfinite(scale) and scale >= 0):
        raise ValueError(f"scale={scale} must be finite and >= 0")
    word = WORDS[bits]
    if out is None:
        out = np.empty(x.shape[0], dtype=word)
    elif out.dtype != word or out.shape != x.shape or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous {np.dtype(word)} vector of {x.shape[0]}")
    inv = 1.0 / scale if scale > 0 else 0.0
    bad = _round(x, out, inv, float(q), np.uint64(int(key)))
    if bad:
        i = int(np.flatnonzero(~np.isfinite(x))[0])
        raise ValueError(f"allreduce-int: x[{i}] = {x[i]} is not finite")
    return out


def decode_sum(total: np.ndarray, scale: float, p: int, out: np.ndarray | None = None
               ) -> np.ndarray:
    """``float32(total * scale / p)`` of an integer sum (into ``out`` when given)."""
    if not isinstance(total, np.ndarray) or total.dtype not in (np.int8, np.int16, np.int32):
        raise TypeError("total must be an int8/int16/int32 numpy vector")
    if out is None:
        out = np.empty(total.shape[0], dtype=np.float32)
    elif out.dtype != np.float32 or out.shape != total.shape or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous float32 vector of {total.shape[0]}")
    _decode(total, out, float(scale) / p)
    return out


def _check(x: np.ndarray, name: str) -> None:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 1 \
            or not x.flags.c_contiguous:
        raise TypeError(f"{name} must be a 1-D C-contiguous float32 numpy array")
