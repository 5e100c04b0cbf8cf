"""Casts of float32 to the small floats of the OCP formats (FP8, FP6, FP4), on the bits.

A format is ``(ebits, mbits, bias, maxc)``: sign, ``ebits`` exponent and ``mbits``
mantissa bits, exponent ``bias``, and ``maxc`` the code (sign bit clear) of its
largest finite value.  The OCP formats (OCP 8-bit Floating Point Specification v1.0
and OCP Microscaling Formats Specification v1.0):

=====  ====  =====  ====  =====  ======================  ==========================
name   bits  ebits  bias  maxc   largest finite          codes that are not finite
=====  ====  =====  ====  =====  ======================  ==========================
e4m3   8     4      7     0x7E   448 = 1.75 * 2^8        S.1111.111 (NaN)
e5m2   8     5      15    0x7B   57344 = 1.75 * 2^15     S.11111.xx (Inf, NaN)
e3m2   6     3      3     0x1F   28 = 1.75 * 2^4         none
e2m3   6     2      1     0x1F   7.5 = 1.875 * 2^2       none
e2m1   4     2      1     0x7    6 = 1.5 * 2^2           none
=====  ====  =====  ====  =====  ======================  ==========================

:func:`_mini_of` rounds to nearest, ties to even, subnormals included, and
**saturates**: a finite value beyond the largest finite one becomes it (sign kept).
For every float32 ``v`` with ``|v|`` at most the largest finite value this equals
``ml_dtypes``' cast (``float8_e4m3fn``, ``float8_e5m2``, ``float6_e3m2fn``,
``float6_e2m3fn``, ``float4_e2m1fn``); beyond it ml_dtypes gives NaN (e4m3fn) or Inf
(e5m2) where this gives the largest finite value (the tests compare on all float16
values and many float32 ones, ``ml_dtypes(clip(v))`` against ``_mini_of(v)``).

Normal results: rebias the float32 exponent and round the dropped ``23 - mbits`` bits
to nearest even with an integer add (a carry out of the mantissa correctly bumps the
exponent, as in F. Giesen's float->half).  Results below the smallest normal
``2^(1 - bias)``: one float32 addition of the magic ``D = 2^(24 - bias - mbits)``,
whose ulp is the subnormal step, lets the FPU round; the sum's low bits are the code.

The codec kernels here: ``fp8`` scales each bucket (or the whole vector) so that its
max |x| maps to the largest finite value, then casts.  Payload: the float32 scales,
then one code byte per entry.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from hpcq.kernels._config import EXACT, twins, use_parallel
from hpcq.kernels.cast import f32_bits, f32_from_bits

#: name -> (ebits, mbits, bias, maxc) (see the module docstring).
FORMATS: dict[str, tuple[int, int, int, int]] = {
    "e4m3": (4, 3, 7, 0x7E),
    "e5m2": (5, 2, 15, 0x7B),
    "e3m2": (3, 2, 3, 0x1F),
    "e2m3": (2, 3, 1, 0x1F),
    "e2m1": (2, 1, 1, 0x7),
}

_EXP = np.uint32(0x7F800000)
_ABS = np.uint32(0x7FFFFFFF)


def max_finite(fmt: str) -> float:
    """The largest finite value of format ``fmt``."""
    return float(value_table(fmt)[FORMATS[fmt][3]])


def value_table(fmt: str) -> np.ndarray:
    """float32 value of every code of ``fmt`` (``2^bits`` entries); NaN for codes that
    are not finite (Inf and NaN codes alike: the codecs never write them)."""
    e, m, bias, maxc = FORMATS[fmt]
    codes = np.arange(1 << (1 + e + m))
    mag = codes & ((1 << (e + m)) - 1)
    ef, mf = mag >> m, mag & ((1 << m) - 1)
    val = np.where(ef == 0, mf * 2.0 ** (1 - bias - m), (1 + mf / 2.0**m) * 2.0 ** (ef - bias))
    val = np.where(codes >> (e + m), -val, val)
    return np.where(mag > maxc, np.nan, val).astype(np.float32)


def _mini_of(b, mbits, bias, maxc, sign_shift):  # type: ignore[no-untyped-def]
    """Code of float32 bits ``b`` (finite) in the format (RNE, saturating); see module doc.

    In jitted code this is :func:`_mini_of_i32`, the same operations on 32-bit integers:
    numba widens uint32 arithmetic to 64 bits, which halves the vector width and, without
    AVX-512, leaves the 64-bit min/max unvectorised.
    """
    f = b & _ABS
    sh = np.uint32(23 - mbits)
    # both branches computed, one selected: no jump, so LLVM can vectorise the callers' loops
    magic = np.uint32((151 - bias - mbits) << 23)
    sub = f32_bits(f32_from_bits(f) + f32_from_bits(magic)) - magic
    fn = max(f, np.uint32((128 - bias) << 23))  # keeps the rebias below from wrapping
    c = (fn - np.uint32((127 - bias) << 23) + ((np.uint32(1) << (sh - np.uint32(1)))
         - np.uint32(1)) + ((fn >> sh) & np.uint32(1))) >> sh
    c = min(c, np.uint32(maxc))
    c = sub if f < np.uint32((128 - bias) << 23) else c
    return np.uint32(c | ((b >> np.uint32(31)) << np.uint32(sign_shift)))


@intrinsic
def _mini_of_i32(typingctx, b, mbits, bias, maxc, sign_shift):  # type: ignore[no-untyped-def]
    if not all(isinstance(t, types.Integer) for t in (b, mbits, bias, maxc, sign_shift)):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        i32 = ir.IntType(32)
        f32 = ir.FloatType()

        def low(v):  # type: ignore[no-untyped-def]
            w = v.type.width
            return v if w == 32 else builder.trunc(v, i32) if w > 32 else builder.zext(v, i32)

        bb, m, bs, mc, ss = (low(a) for a in args)

        def k(v):  # type: ignore[no-untyped-def]
            return ir.Constant(i32, v)

        def umax(x, y):  # type: ignore[no-untyped-def]
            return builder.select(builder.icmp_unsigned(">", x, y), x, y)

        f = builder.and_(bb, k(0x7FFFFFFF))
        sh = builder.sub(k(23), m)
        magic = builder.shl(builder.sub(builder.sub(k(151), bs), m), k(23))
        s = builder.fadd(builder.bitcast(f, f32), builder.bitcast(magic, f32))
        sub = builder.sub(builder.bitcast(s, i32), magic)
        low_normal = builder.shl(builder.sub(k(128), bs), k(23))
        fn = umax(f, low_normal)
        c = builder.sub(fn, builder.shl(builder.sub(k(127), bs), k(23)))
        c = builder.add(c, builder.sub(builder.shl(k(1), builder.sub(sh, k(1))), k(1)))
        c = builder.add(c, builder.and_(builder.lshr(fn, sh), k(1)))
        c = builder.lshr(c, sh)
        c = builder.select(builder.icmp_unsigned("<", c, mc), c, mc)
        c = builder.select(builder.icmp_unsigned("<", f, low_normal), sub, c)
        return builder.or_(c, builder.shl(builder.lshr(bb, k(31)), ss))

    return types.uint32(b, mbits, bias, maxc, sign_shift), codegen


@overload(_mini_of)
def _mini_of_ol(b, mbits, bias, maxc, sign_shift):  # type: ignore[no-untyped-def]
    return lambda b, mbits, bias, maxc, sign_shift: _mini_of_i32(b, mbits, bias, maxc,
                                                                 sign_shift)


def _cast_body(x, mbits, bias, maxc, sign_shift, out):  # type: ignore[no-untyped-def]
    # out[i] = code of x[i]; returns the count of NaN/Inf entries (their codes are garbage)
    bad = 0
    for i in prange(x.shape[0]):
        b = f32_bits(x[i])
        bad += (b & _EXP) == _EXP
        out[i] = _mini_of(b, mbits, bias, maxc, sign_shift)
    return bad


def _scaled_body(x, inv, mbits, bias, maxc, sign_shift, out):  # type: ignore[no-untyped-def]
    # one scale for all: out[i] = code of float32(x[i] * inv), inv float64 (exact product)
    for i in prange(x.shape[0]):
        y = np.float32(np.float64(x[i]) * inv)
        out[i] = _mini_of(f32_bits(y), mbits, bias, maxc, sign_shift)


def _blocks_body(x, bucket, fmax, mbits, bias, maxc, sign_shift, scales, out):  # type: ignore[no-untyped-def]
    # per bucket: amax, scale = f32(amax / fmax), codes of f32(x * (1 / scale)); returns the
    # buckets holding NaN/Inf
    n = x.shape[0]
    bad = 0
    for k in prange(scales.shape[0]):
        i0 = k * bucket
        i1 = min(n, i0 + bucket)
        xs = x[i0:i1]  # slices: indices from 0, which LLVM knows are >= 0 (no wraparound
        os = out[i0:i1]  # test), so the loops vectorise
        m = np.uint32(0)
        for i in range(i1 - i0):  # max |x| on the bits: an integer max vectorises, and
            m = max(m, f32_bits(xs[i]) & _ABS)  # NaN/Inf are the bits >= _EXP
        s = np.float32(np.float64(f32_from_bits(m)) / fmax)
        inv = 1.0 / np.float64(s) if s > np.float32(0.0) else 0.0
        for i in range(i1 - i0):
            y = np.float32(np.float64(xs[i]) * inv)
            os[i] = _mini_of(f32_bits(y), mbits, bias, maxc, sign_shift)
        scales[k] = s
        bad += m >= _EXP
    return bad


def _decode_body(scales, codes, bucket, table, out, add):  # type: ignore[no-untyped-def]
    # out[i] (+)= table[code] * scale of its bucket; returns the bad scales and codes
    n = out.shape[0]
    bad = 0
    for k in prange(scales.shape[0]):
        s = scales[k]
        if not (np.float32(0.0) <= s <= np.float32(3.4028234663852886e38)):
            bad += 1
            s = np.float32(0.0)
        lo = k * bucket
        hi = min(n, lo + bucket)
        src = codes[lo:hi]  # slices: indices from 0, no branch in the loop: it vectorises
        dst = out[lo:hi]
        nan = 0
        for j in range(hi - lo):
            v = table[src[j]]
            nan += v != v
            if add:
                dst[j] += v * s
            else:
                dst[j] = v * s
        bad += nan
    return bad


def _sum_body(a, b, table, fmax, mbits, bias, maxc, sign_shift, nan_code):  # type: ignore[no-untyped-def]
    # b[i] = code of (value(a[i]) + value(b[i])): the float32 sum of two codes' values is
    # exact, then rounded once (RNE); a sum past fmax (or a NaN code) gives the NaN code
    bad = 0
    for i in prange(a.shape[0]):
        s = table[a[i]] + table[b[i]]
        ok = abs(s) <= fmax  # False for NaN
        bad += not ok
        b[i] = _mini_of(f32_bits(s), mbits, bias, maxc, sign_shift) if ok else nan_code
    return bad


@njit(**EXACT)
def _maxabs_bits(x):  # type: ignore[no-untyped-def]
    # max of the bits of |x|: an integer max vectorises (a float one needs fastmath); the
    # bits order like the values, and NaN/Inf are the bits >= _EXP
    m = np.uint32(0)
    for i in range(x.shape[0]):
        m = max(m, f32_bits(x[i]) & _ABS)
    return m


_cast, _cast_par = twins(_cast_body)
_sum, _sum_par = twins(_sum_body)
_scaled, _scaled_par = twins(_scaled_body)
_blocks, _blocks_par = twins(_blocks_body)
_decode, _decode_par = twins(_decode_body)

_TABLES: dict[str, np.ndarray] = {}


def _format(fmt: str) -> tuple[int, int, int, int]:
    """(mbits, bias, maxc, sign bit position) of ``fmt``; ValueError if unknown."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    e, m, bias, maxc = FORMATS[fmt]
    return m, bias, maxc, e + m


def table(fmt: str) -> np.ndarray:
    """The cached :func:`value_table` of ``fmt``."""
    if fmt not in _TABLES:
        _format(fmt)
        _TABLES[fmt] = value_table(fmt)
    return _TABLES[fmt]


def cast(x: np.ndarray, fmt: str) -> np.ndarray:
    """Codes (uint8) of float32 ``x`` in ``fmt``, RNE, saturating; ValueError on NaN/Inf."""
    m, bias, maxc, ss = _format(fmt)
    if x.dtype != np.float32 or x.ndim != 1 or not x.flags.c_contiguous:
        raise TypeError("x must be a C-contiguous 1-D float32 array")
    out = np.empty(x.shape[0], np.uint8)
    bad = (_cast_par if use_parallel(x.shape[0]) else _cast)(x, m, bias, maxc, ss, out)
    if bad:
        raise ValueError(f"{bad} NaN/Inf value(s) cannot be cast to {fmt}")
    return out


def cast_scaled(x: np.ndarray, inv: float, fmt: str, out: np.ndarray) -> None:
    """Codes of ``float32(x_i * inv)`` (the product in float64) into uint8 ``out``, RNE,
    saturating: one shared scale (allreduce-fp8's); the caller checks x for NaN/Inf."""
    m, bias, maxc, ss = _format(fmt)
    if x.dtype != np.float32 or x.ndim != 1 or not x.flags.c_contiguous:
        raise TypeError("x must be a C-contiguous 1-D float32 array")
    if out.dtype != np.uint8 or out.shape != x.shape or not out.flags.c_contiguous:
        raise ValueError(f"out must be {x.shape[0]} contiguous uint8 codes")
    (_scaled_par if use_parallel(x.shape[0]) else _scaled)(x, float(inv), m, bias, maxc, ss,
                                                          out)


def sum8(fmt: str, a: np.ndarray, b: np.ndarray) -> int:
    """``b += a`` elementwise on ``fmt`` codes (uint8), in place: each pair decoded, added in
    float32 (exact for two codes of one format) and rounded once to nearest even, as a
    reduction on the wire in ``fmt`` does.  A sum past the largest finite value, or a
    code that is not finite, gives the NaN code 0x7F: returns their count.
    """
    m, bias, maxc, ss = _format(fmt)
    if a.dtype != np.uint8 or b.dtype != np.uint8 or a.shape != b.shape or a.ndim != 1:
        raise ValueError("sum8: a and b must be 1-D uint8 arrays of one length")
    tab = table(fmt)
    par = use_parallel(a.shape[0])
    return int((_sum_par if par else _sum)(a, b, tab, np.float32(max_finite(fmt)), m, bias,
                                           maxc, ss, np.uint8(0x7F)))


def n_scales(n: int, bucket: int) -> int:
    """Scales of ``n`` entries: one per bucket, one for ``bucket`` 0 (none for n = 0)."""
    return 0 if n == 0 else 1 if bucket == 0 else -(-n // bucket)


def payload_nbytes(n: int, bucket: int) -> int:
    """float32 scales, then one byte per entry."""
    return 4 * n_scales(n, bucket) + n


def fp8_encode(x: np.ndarray, out: np.ndarray, *, fmt: str, bucket: int) -> int:
    """Scales and codes of float32 ``x`` into the payload ``out``; returns the NaN/Inf count
    (non-zero: ``out`` is garbage).  ``bucket`` 0: one scale for the whole vector."""
    m, bias, maxc, ss = _format(fmt)
    n = x.shape[0]
    if x.dtype != np.float32 or x.ndim != 1 or not x.flags.c_contiguous:
        raise TypeError("x must be a C-contiguous 1-D float32 array")
    if bucket < 0:
        raise ValueError(f"bucket must be >= 0, got {bucket}")
    need = payload_nbytes(n, bucket)
    if out.dtype != np.uint8 or out.shape != (need,):
        raise ValueError(f"out must be {need} uint8 bytes, got {out.dtype} {out.shape}")
    if n == 0:
        return 0
    nb = n_scales(n, bucket)
    scales, codes = out[: 4 * nb].view(np.float32), out[4 * nb:]
    fmax = max_finite(fmt)
    par = use_parallel(n)
    if bucket:
        return int((_blocks_par if par else _blocks)(x, bucket, fmax, m, bias, maxc, ss,
                                                      scales, codes))
    top = np.uint32(_maxabs_bits(x))
    if top >= _EXP:
        from hpcq.kernels import checks

        return checks.maxabs_nonfinite(x)[1]
    amax = float(top.view(np.float32))
    s = np.float32(amax / fmax)
    scales[0] = s
    inv = 1.0 / float(s) if s > 0 else 0.0
    (_scaled_par if par else _scaled)(x, inv, m, bias, maxc, ss, codes)
    return 0


def fp8_decode(payload: np.ndarray, n: int, *, fmt: str, bucket: int,
               out: np.ndarray | None = None, add: bool = False) -> np.ndarray:
    """Decode ``n`` entries ``value(code) * scale`` (into ``out``, or added with ``add``).

    ValueError for a negative or non-finite scale or a code that is not finite.
    """
    tab = table(fmt)
    need = payload_nbytes(n, bucket)
    if payload.dtype != np.uint8 or payload.shape != (need,):
        raise ValueError(f"payload must be {need} uint8 bytes for n={n}, got {payload.shape}")
    out = np.empty(n, np.float32) if out is None else out
    if n == 0:
        return out
    nb = n_scales(n, bucket)
    payload = np.ascontiguousarray(payload)
    scales = payload[: 4 * nb].view(np.float32)
    bad = (_decode_par if use_parallel(n) and nb > 1 else _decode)(
        scales, payload[4 * nb:], bucket if bucket else n, tab, out, bool(add))
    if bad:
        raise ValueError(f"corrupted payload: {bad} scale(s) or code(s) are not finite {fmt} "
                         f"values")
    return out
