"""Natural compression (Horvath et al. 2019): unbiased stochastic rounding to a power of two.

For ``x = ±2^e (1 + m)``, ``m`` in [0, 1), the result is ``±2^(e+1)`` with probability
``m`` and ``±2^e`` otherwise, so ``E[C(x)] = x`` and ``Var = 4^e m (1 - m) <= x^2 / 8``
(the maximum, at m = 1/3, is the paper's 9/8 factor: ``E C(x)^2 <= 9/8 x^2``).

On float32 bits this is: keep the sign and the 8-bit biased exponent, add one to the
exponent when 23 random bits are below the mantissa (probability exactly
``mantissa / 2^23``), and drop the mantissa.  Zero stays zero (exponent 0); a float32
subnormal ``|x| < 2^-126`` becomes 2^-126 with probability ``|x| / 2^-126``, else 0 (also
unbiased).  Values ``|x| > 2^127`` could round to 2^128, beyond float32: they are
counted and the wrapper's caller raises, whatever the draw, so the outcome never
depends on the seed.

Payload (9 bits per entry): ``n`` exponent bytes (0: zero; 255 never written), then the
``n`` sign bits LSB-first (bit ``i`` is 1 for a negative ``x_i``; -0.0 keeps its sign).
The random bits of entry ``i`` are :func:`hpcq.kernels.rng.bits64` of ``(key, i)``, so
the bytes do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from hpcq.kernels._config import twins, use_parallel
from hpcq.kernels.cast import f32_bits, f32_from_bits
from hpcq.kernels.rng import bits64

_MANT = np.uint32(0x7FFFFF)
_S41 = np.uint64(41)


def payload_nbytes(n: int) -> int:
    """Exponent bytes, then sign bits."""
    return n + (n + 7) // 8


def _encode_body(x, key, out):  # type: ignore[no-untyped-def]
    # returns (NaN/Inf count, count of |x| > 2^127)
    n = x.shape[0]
    signs = out[n:]
    bad = 0
    big = 0
    for g in prange((n + 7) // 8):
        sb = np.uint32(0)
        for j in range(min(8, n - 8 * g)):
            i = 8 * g + j
            b = f32_bits(x[i])
            e = (b >> np.uint32(23)) & np.uint32(0xFF)
            bad += e == np.uint32(0xFF)
            big += e == np.uint32(0xFE) and (b & _MANT) != 0
            up = np.uint32(bits64(key, i) >> _S41) < (b & _MANT)
            out[i] = np.uint8(min(e + np.uint32(up), np.uint32(0xFF)))
            sb |= (b >> np.uint32(31)) << np.uint32(j)
        signs[g] = np.uint8(sb)
    return bad, big


def _decode_body(payload, out, add):  # type: ignore[no-untyped-def]
    # returns the count of exponent bytes 255 (never written)
    n = out.shape[0]
    signs = payload[n:]
    bad = 0
    for g in prange((n + 7) // 8):
        sb = np.uint32(signs[g])
        for j in range(min(8, n - 8 * g)):
            i = 8 * g + j
            e = np.uint32(payload[i])
            bad += e == np.uint32(0xFF)
            v = f32_from_bits(((sb >> np.uint32(j)) & np.uint32(1)) << np.uint32(31)
                              | (e << np.uint32(23)))
            if add:
                out[i] += v
            else:
                out[i] = v
    return bad


_encode, _encode_par = twins(_encode_body)
_decode, _decode_par = twins(_decode_body)


def natural_encode(x: np.ndarray, out: np.ndarray, *, key: int) -> tuple[int, int]:
    """Exponents and signs of float32 ``x`` into ``out`` with the random stream ``key``.

    Returns ``(NaN/Inf count, count of |x| > 2^127)``; either non-zero: ``out`` is garbage.
    """
    n = x.shape[0]
    if x.dtype != np.float32 or x.ndim != 1 or not x.flags.c_contiguous:
        raise TypeError("x must be a C-contiguous 1-D float32 array")
    need = payload_nbytes(n)
    if out.dtype != np.uint8 or out.shape != (need,):
        raise ValueError(f"out must be {need} uint8 bytes, got {out.dtype} {out.shape}")
    if n == 0:
        return 0, 0
    bad, big = (_encode_par if use_parallel(n) else _encode)(x, np.uint64(key), out)
    return int(bad), int(big)


def natural_decode(payload: np.ndarray, n: int, *, out: np.ndarray | None = None,
                   add: bool = False) -> np.ndarray:
    """Decode ``n`` powers of two (into ``out``, or added to it with ``add``).

    ValueError for an exponent byte 255 (encode never writes one).
    """
    need = payload_nbytes(n)
    if payload.dtype != np.uint8 or payload.shape != (need,):
        raise ValueError(f"payload must be {need} uint8 bytes for n={n}, got {payload.shape}")
    out = np.empty(n, np.float32) if out is None else out
    if n == 0:
        return out
    bad = (_decode_par if use_parallel(n) else _decode)(np.ascontiguousarray(payload), out,
                                                         bool(add))
    if bad:
        raise ValueError(f"corrupted payload: {bad} exponent byte(s) are 255 (not finite)")
    return out
