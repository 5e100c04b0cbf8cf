"""Casts of float32 vectors to the 16-bit wire formats bf16 and IEEE fp16, on the bits.

bf16 keeps the top 16 bits of the float32 after round-to-nearest-even on the
dropped 16 bits; decoding shifts them back.  fp16 uses the branch-light integer
conversion of F. Giesen ("float->half variants", 2016), round to nearest even,
denormals included; it gives the same bits as numpy's ``astype(np.float16)``.
Both encoders count the outputs whose exponent is all ones (a NaN/Inf input, or a
finite value that rounds past the largest 16-bit value) instead of writing them
silently: the caller turns a non-zero count into an error.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from hpcq.kernels._config import INLINE, twins, use_parallel


def f32_from_bits(u):  # type: ignore[no-untyped-def]
    """The float32 whose bits are the low 32 bits of ``u`` (in jitted code: one register move)."""
    return np.array([int(u) & 0xFFFFFFFF], dtype=np.uint32).view(np.float32)[0]


def f32_bits(f):  # type: ignore[no-untyped-def]
    """The uint32 bits of the float32 ``f`` (in jitted code: one register move)."""
    return np.array([f], dtype=np.float32).view(np.uint32)[0]


@intrinsic
def _bitcast_u32_f32(typingctx, u):  # type: ignore[no-untyped-def]
    # numba widens uint32 arithmetic to 64 bits: take the low 32 bits of any integer
    if not isinstance(u, types.Integer):
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        v = args[0]
        if u.bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        elif u.bitwidth < 32:
            v = builder.zext(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(u), codegen


@intrinsic
def _bitcast_f32_u32(typingctx, f):  # type: ignore[no-untyped-def]
    if f != types.float32:
        return None

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(f), codegen


@overload(f32_from_bits)
def _f32_from_bits_ol(u):  # type: ignore[no-untyped-def]
    return lambda u: _bitcast_u32_f32(u)


@overload(f32_bits)
def _f32_bits_ol(f):  # type: ignore[no-untyped-def]
    return lambda f: _bitcast_f32_u32(f)


@njit(**INLINE)
def _bf16_of(b):  # type: ignore[no-untyped-def]
    """(bf16 bits, 1 if NaN/Inf or rounded past the largest bf16 else 0) of float32 bits ``b``."""
    # round to nearest, ties to even, on the 16 dropped bits
    r = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    # | rather than `or`: no branch, so the loops around it vectorise
    bad = ((b & np.uint32(0x7F800000)) == np.uint32(0x7F800000)) | (
        (r & np.uint32(0x7F80)) == np.uint32(0x7F80))
    return np.uint16(r), np.int64(bad)


@njit(**INLINE)
def _bf16_value(h):  # type: ignore[no-untyped-def]
    """float32 bits of bf16 bits ``h``."""
    return np.uint32(h) << np.uint32(16)


@njit(**INLINE)
def _fp16_of(b):  # type: ignore[no-untyped-def]
    """(fp16 bits, 1 if the exponent is all ones else 0) of float32 bits ``b`` (RNE)."""
    denorm_magic = np.uint32(((127 - 15) + (23 - 10) + 1) << 23)
    sign = (b >> np.uint32(16)) & np.uint32(0x8000)
    f = b & np.uint32(0x7FFFFFFF)
    # all three cases computed, one selected (no branch, so the loops around vectorise):
    # fp16 denormal or zero: let the FPU round
    den = f32_bits(f32_from_bits(f) + f32_from_bits(denorm_magic)) - denorm_magic
    # normal: rebias the exponent, round the mantissa to nearest even
    nrm = (f + np.uint32(((15 - 127) << 23) + 0xFFF) + ((f >> np.uint32(13)) & np.uint32(1))
           ) >> np.uint32(13)
    o = den if f < np.uint32(113 << 23) else nrm
    # beyond fp16 range, Inf or NaN
    o = np.uint32(0x7C00) if f >= np.uint32((127 + 16) << 23) else np.uint32(o)
    return np.uint16((o | sign) & np.uint32(0xFFFF)), np.int64(
        (o & np.uint32(0x7C00)) == np.uint32(0x7C00))


@njit(**INLINE)
def _fp16_value(h):  # type: ignore[no-untyped-def]
    """float32 bits of fp16 bits ``h``."""
    magic = f32_from_bits(np.uint32(113 << 23))
    o = (np.uint32(h) & np.uint32(0x7FFF)) << np.uint32(13)
    e = o & np.uint32(0x0F800000)
    o += np.uint32((127 - 15) << 23)
    if e == np.uint32(0x0F800000):  # Inf/NaN keep an all-ones exponent
        o += np.uint32((128 - 16) << 23)
    elif e == 0:  # denormal: renormalise through the FPU
        o += np.uint32(1 << 23)
        o = f32_bits(f32_from_bits(o) - magic)
    return o | ((np.uint32(h) & np.uint32(0x8000)) << np.uint32(16))


def _to_bf16_body(xbits, out):  # type: ignore[no-untyped-def]
    bad = 0
    for i in prange(xbits.shape[0]):
        out[i], flag = _bf16_of(xbits[i])
        bad += flag
    return bad


def _from_bf16_body(h, out):  # type: ignore[no-untyped-def]
    for i in prange(h.shape[0]):
        out[i] = _bf16_value(h[i])


def _to_fp16_body(xbits, out):  # type: ignore[no-untyped-def]
    bad = 0
    for i in prange(xbits.shape[0]):
        out[i], flag = _fp16_of(xbits[i])
        bad += flag
    return bad


def _from_fp16_body(h, out):  # type: ignore[no-untyped-def]
    for i in prange(h.shape[0]):
        out[i] = _fp16_value(h[i])


def _sum_fp16_body(a, b):  # type: ignore[no-untyped-def]
    # b += a in fp16: add in float32 (exact for two fp16 values), round once to fp16
    bad = 0
    for i in prange(a.shape[0]):
        s = f32_from_bits(_fp16_value(a[i])) + f32_from_bits(_fp16_value(b[i]))
        b[i], flag = _fp16_of(f32_bits(s))
        bad += flag
    return bad


def _sum_bf16_body(a, b):  # type: ignore[no-untyped-def]
    # b += a in bf16: add in float32, round once to bf16
    bad = 0
    for i in prange(a.shape[0]):
        s = f32_from_bits(_bf16_value(a[i])) + f32_from_bits(_bf16_value(b[i]))
        b[i], flag = _bf16_of(f32_bits(s))
        bad += flag
    return bad


_to_fp16, _to_fp16_par = twins(_to_fp16_body)
_from_fp16, _from_fp16_par = twins(_from_fp16_body)
_to_bf16, _to_bf16_par = twins(_to_bf16_body)
_from_bf16, _from_bf16_par = twins(_from_bf16_body)
_sum_fp16, _sum_fp16_par = twins(_sum_fp16_body)
_sum_bf16, _sum_bf16_par = twins(_sum_bf16_body)


def to_bf16(x: np.ndarray, out: np.ndarray) -> int:
    """Write bf16 bits of float32 ``x`` into uint16 ``out``; return the NaN/Inf count.

    A finite value that rounds past the largest bf16 becomes Inf; it is counted too.
    """
    n = x.shape[0]
    return int((_to_bf16_par if use_parallel(n) else _to_bf16)(x.view(np.uint32), out))


def from_bf16(h: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 values of the bf16 bit patterns ``h`` (uint16), into float32 ``out`` if given."""
    bits = np.empty(h.shape[0], dtype=np.uint32) if out is None else out.view(np.uint32)
    (_from_bf16_par if use_parallel(h.shape[0]) else _from_bf16)(h, bits)
    return bits.view(np.float32)


def to_fp16(x: np.ndarray, out: np.ndarray) -> int:
    """IEEE fp16 bits of float32 ``x`` into uint16 ``out``; returns the Inf/NaN/overflow count."""
    n = x.shape[0]
    return int((_to_fp16_par if use_parallel(n) else _to_fp16)(x.view(np.uint32), out))


def from_fp16(h: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """float32 values of the fp16 bit patterns ``h`` (uint16), into float32 ``out`` if given."""
    bits = np.empty(h.shape[0], dtype=np.uint32) if out is None else out.view(np.uint32)
    (_from_fp16_par if use_parallel(h.shape[0]) else _from_fp16)(h, bits)
    return bits.view(np.float32)


def sum16(kind: str, a: np.ndarray, b: np.ndarray) -> int:
    """``b += a`` elementwise in 16-bit arithmetic (``kind`` "fp16" or "bf16"), in place.

    Each sum is computed in float32, which is exact for two 16-bit values of
    the same format, then rounded to nearest even: one rounding per addition,
    as a 16-bit reduction does.  Returns the count of results whose exponent
    is all ones (an overflow past the format's largest value, or NaN/Inf).
    """
    n = a.shape[0]
    par = use_parallel(n)
    if kind == "fp16":
        return int((_sum_fp16_par if par else _sum_fp16)(a, b))
    return int((_sum_bf16_par if par else _sum_bf16)(a, b))
