"""OCP Microscaling (MX) blocks: 32 elements sharing one E8M0 power-of-two scale.

Per the OCP Microscaling Formats (MX) Specification v1.0 (section 6.3, conversion
from scalar floats): for each block of ``K = 32`` consecutive entries ``V_i``,

* ``shared_exp = floor(log2(max_i |V_i|)) - emax_elem``, clamped below at -127 (the
  smallest E8M0 exponent; float32 input never exceeds the largest, 127);
* ``X = 2^shared_exp``, stored as the E8M0 byte ``shared_exp + 127`` (0xFF, NaN, is never
  written: NaN/Inf input is an error);
* ``P_i = quantize(V_i / X)`` to the element format, round to nearest, ties to even,
  values beyond the largest normal clamped to it (saturation, sign kept).

The specification leaves ``floor(log2(0))`` of an all-zero block open; as the
reference emulation library of the specification's authors (microsoft/microxcaling)
does, such a block takes ``max = 2^-126`` (float32's smallest normal), so
``shared_exp = max(-127, -126 - emax_elem)``; its elements are zeros whatever X is.

Element formats (``emax_elem``): FP8 E4M3 (8), FP8 E5M2 (15), FP6 E3M2 (4), FP6 E2M3
(2), FP4 E2M1 (2), all cast by :func:`hpcq.kernels.fp8._mini_of`; INT8 (0): two's
complement with an implied scale 2^-6, ``P_i = clamp(rne(64 V_i / X), -127, 127) / 64``
(clamped to its largest normal 1 63/64, so symmetric: -128 is decoded but never written).
microxcaling rounds ties away from zero; hpcq rounds ties to even, as the brief and
IEEE 754's default do.

``V_i / X`` is computed as ``float32(float64(V_i) * 2^-shared_exp)``: exact (a power of
two) unless the result is below float32's normal range, where every element format
rounds it to zero anyway.  Decoding multiplies the element's float32 value by
``float32(X)``: exact unless the product leaves float32's normal range.

Payload: the E8M0 bytes of all blocks, then the element codes packed LSB-first (the
:mod:`hpcq.kernels.bitpack` order): FP8/INT8 one byte each, FP6 four per 3 bytes
(``c0 | c1 << 6 | c2 << 12 | c3 << 18``, little-endian), FP4 two per byte (low nibble
first); the last byte's unused bits are zero.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from hpcq.kernels._config import INLINE, twins, use_parallel
from hpcq.kernels.cast import f32_bits, f32_from_bits
from hpcq.kernels.fp8 import FORMATS, _mini_of, value_table

K = 32  # elements per block (the specification's k)

#: MX format -> (element format of :data:`hpcq.kernels.fp8.FORMATS` or "int8", bits, emax_elem).
MX_FORMATS: dict[str, tuple[str, int, int]] = {
    "mxfp8_e4m3": ("e4m3", 8, 8),
    "mxfp8_e5m2": ("e5m2", 8, 15),
    "mxfp6_e3m2": ("e3m2", 6, 4),
    "mxfp6_e2m3": ("e2m3", 6, 2),
    "mxfp4": ("e2m1", 4, 2),
    "mxint8": ("int8", 8, 0),
}

_EXP = np.uint32(0x7F800000)
_ABS = np.uint32(0x7FFFFFFF)
_RNE = np.float32(12582912.0)  # 1.5 * 2^23: adding and subtracting it rounds |t| < 2^22 to even
#: 2^e for e = -127..127 (index e + 127), float64 and float32 (all exact).
_POW2_64 = np.ldexp(1.0, np.arange(-127, 128))
_POW2_32 = _POW2_64.astype(np.float32)


def element_table(fmt: str) -> np.ndarray:
    """float32 value of every element code of MX format ``fmt`` (NaN: never valid)."""
    elem = MX_FORMATS[fmt][0]
    if elem == "int8":
        return (np.arange(256, dtype=np.uint8).view(np.int8) / 64.0).astype(np.float32)
    return value_table(elem)


def payload_nbytes(n: int, fmt: str) -> int:
    """One E8M0 byte per block of 32, then the packed elements."""
    width = MX_FORMATS[fmt][1]
    return -(-n // K) + (n * width + 7) // 8


@njit(**INLINE)
def shared_exponent(amax, emax):  # type: ignore[no-untyped-def]
    """The block's E8M0 exponent from its max |V| (float32, finite); see module doc."""
    eb = np.int32((f32_bits(amax) >> np.uint32(23)) & np.uint32(0xFF))
    if amax == np.float32(0.0):
        e = -126 - emax
    elif eb == 0:  # float32 subnormal: floor(log2) <= -127
        e = -127
    else:
        e = eb - 127 - emax
    return max(e, -127)


#: Blocks per chunk of the encoder: its codes go through a buffer of ``CHUNK * K`` bytes.
CHUNK = 16


def _encode_body(x, width, emax, isint, mbits, bias, maxc, ss, pow2, out):  # type: ignore[no-untyped-def]
    # returns the blocks holding NaN/Inf (their bytes are garbage).  Per chunk of blocks:
    # the codes into a byte buffer, by branch-free loops (the format's branch is outside
    # them), then packed by a loop per width, so that both vectorise.
    n = x.shape[0]
    nb = (n + K - 1) // K
    total = nb + (n * width + 7) // 8
    bad = 0
    for ch in prange((nb + CHUNK - 1) // CHUNK):
        # 8-bit codes go straight into the payload; narrower ones through a buffer whose
        # codes past n stay 0 (the last byte's pad) and are packed below
        codes = np.zeros(CHUNK * K if width != 8 else 0, np.uint8)
        k0 = ch * CHUNK
        k1 = min(nb, k0 + CHUNK)
        for k in range(k0, k1):
            i0 = k * K
            cnt = min(K, n - i0)
            xs = x[i0:i0 + cnt]  # slices: indices from 0, which LLVM knows are >= 0 (no
            m = np.uint32(0)  # wraparound test), so the loops below vectorise
            for j in range(cnt):  # max |x| on the bits (an integer max vectorises)
                m = max(m, f32_bits(xs[j]) & _ABS)
            if m >= _EXP:
                bad += 1
                continue
            e = shared_exponent(f32_from_bits(m), emax)
            out[k] = np.uint8(e + 127)
            mul = pow2[127 - e]  # float32 2^-e: x * mul is exact or rounds once, as in float64
            if width == 8:
                cs = out[nb + i0:nb + i0 + cnt]
            else:
                cs = codes[(k - k0) * K:(k - k0) * K + cnt]
            if isint:
                for j in range(cnt):
                    t = (xs[j] * mul * np.float32(64.0) + _RNE) - _RNE  # 2^6 exact, rne
                    t = min(max(t, np.float32(-127.0)), np.float32(127.0))
                    cs[j] = np.uint8(np.int32(t) & np.int32(0xFF))
            else:
                for j in range(cnt):
                    cs[j] = np.uint8(_mini_of(f32_bits(xs[j] * mul), mbits, bias, maxc, ss))
        # pack: the chunk's bytes start whole (CHUNK K w / 8); the last chunk's stop at total
        pos = nb + k0 * K * width // 8
        nbytes = min(total, nb + k1 * K * width // 8) - pos
        # (8-bit codes are already in place)
        if width == 4:  # two codes per byte: the uint16 c0 | c1 << 8 -> c0 | c1 << 4
            c16 = codes.view(np.uint16)
            for t in range(nbytes):
                w = c16[t]
                out[pos + t] = np.uint8((w | (w >> np.uint16(4))) & np.uint16(0xFF))
        elif width == 6:  # four codes (one uint32) in three bytes
            c32 = codes.view(np.uint32)
            for g in range(nbytes // 3):
                w = c32[g]
                v = ((w & np.uint32(0x3F)) | ((w >> np.uint32(2)) & np.uint32(0xFC0))
                     | ((w >> np.uint32(4)) & np.uint32(0x3F000))
                     | ((w >> np.uint32(6)) & np.uint32(0xFC0000)))
                out[pos + 3 * g] = np.uint8(v & np.uint32(0xFF))
                out[pos + 3 * g + 1] = np.uint8((v >> np.uint32(8)) & np.uint32(0xFF))
                out[pos + 3 * g + 2] = np.uint8(v >> np.uint32(16))
            g = nbytes // 3
            if nbytes % 3:  # the last chunk's short group: 1 or 2 bytes of its 3 codes
                v = (np.uint32(codes[4 * g]) | (np.uint32(codes[4 * g + 1]) << np.uint32(6))
                     | (np.uint32(codes[4 * g + 2]) << np.uint32(12)))
                for t in range(nbytes % 3):
                    out[pos + 3 * g + t] = np.uint8((v >> np.uint32(8 * t)) & np.uint32(0xFF))
    return bad


def _decode_body(payload, n, width, isint, table, pow2, out, add):  # type: ignore[no-untyped-def]
    # returns the count of NaN scales, invalid codes and products that overflow float32
    nb = (n + K - 1) // K
    mask = np.uint32((1 << width) - 1)
    bad = 0
    for k in prange(nb):
        i0 = k * K
        cnt = min(K, n - i0)
        sb = payload[k]
        if sb == 0xFF:
            bad += 1
            continue
        x = pow2[sb]
        base = nb + i0 * width // 8
        if width == 8:  # one byte per code: branch-free loops over slices, which vectorise
            src = payload[base:base + cnt]
            dst = out[i0:i0 + cnt]
            nonfinite = 0
            if isint:  # (c / 64) X = c (X / 64): both exact up to one rounding of c 2^(e-6)
                x64 = x * np.float32(0.015625)
                for j in range(cnt):
                    v = np.float32(np.int8(src[j])) * x64
                    nonfinite += (v - v) != np.float32(0.0)  # NaN/Inf: v - v is NaN
                    if add:
                        dst[j] += v
                    else:
                        dst[j] = v
            else:
                for j in range(cnt):
                    v = table[src[j]] * x
                    nonfinite += (v - v) != np.float32(0.0)
                    if add:
                        dst[j] += v
                    else:
                        dst[j] = v
            bad += nonfinite
            continue
        if width == 4:  # two codes per byte, low nibble first; a block starts on a byte
            src = payload[base:base + (cnt + 1) // 2]
            dst = out[i0:i0 + cnt]
            nonfinite = 0
            for t in range(cnt // 2):
                w = src[t]
                v0 = table[w & np.uint8(15)] * x
                v1 = table[w >> np.uint8(4)] * x
                nonfinite += ((v0 - v0) != np.float32(0.0)) + ((v1 - v1) != np.float32(0.0))
                if add:
                    dst[2 * t] += v0
                    dst[2 * t + 1] += v1
                else:
                    dst[2 * t] = v0
                    dst[2 * t + 1] = v1
            if cnt % 2:  # the last block's odd code: the low nibble of its last byte
                v0 = table[src[cnt // 2] & np.uint8(15)] * x
                nonfinite += (v0 - v0) != np.float32(0.0)
                if add:
                    dst[cnt - 1] += v0
                else:
                    dst[cnt - 1] = v0
            bad += nonfinite
            continue
        for j in range(cnt):
            bit = j * width
            b0 = base + (bit >> 3)
            w = np.uint32(payload[b0])
            if (bit & 7) + width > 8:
                w |= np.uint32(payload[b0 + 1]) << np.uint32(8)
            c = (w >> np.uint32(bit & 7)) & mask
            v = table[c] * x
            bad += not np.isfinite(v)
            if add:
                out[i0 + j] += v
            else:
                out[i0 + j] = v
    return bad


_encode, _encode_par = twins(_encode_body)
_decode, _decode_par = twins(_decode_body)

_TABLES: dict[str, np.ndarray] = {}


def _params(fmt: str) -> tuple[int, int, bool, int, int, int, int]:
    """(width, emax, isint, mbits, bias, maxc, sign bit) of ``fmt``; ValueError if unknown."""
    if fmt not in MX_FORMATS:
        raise ValueError(f"unknown MX format {fmt!r}; valid: {', '.join(MX_FORMATS)}")
    elem, width, emax = MX_FORMATS[fmt]
    if elem == "int8":
        return width, emax, True, 0, 0, 0, 7
    e, m, bias, maxc = FORMATS[elem]
    return width, emax, False, m, bias, maxc, e + m


def mx_encode(x: np.ndarray, out: np.ndarray, *, fmt: str) -> int:
    """E8M0 scales and packed elements of float32 ``x`` into ``out``; returns the count of
    blocks holding NaN/Inf (non-zero: ``out`` is garbage)."""
    width, emax, isint, m, bias, maxc, ss = _params(fmt)
    if x.dtype != np.float32 or x.ndim != 1 or not x.flags.c_contiguous:
        raise TypeError("x must be a C-contiguous 1-D float32 array")
    need = payload_nbytes(x.shape[0], fmt)
    if out.dtype != np.uint8 or out.shape != (need,):
        raise ValueError(f"out must be {need} uint8 bytes, got {out.dtype} {out.shape}")
    if x.shape[0] == 0:
        return 0
    fn = _encode_par if use_parallel(x.shape[0]) else _encode
    return int(fn(x, width, emax, isint, m, bias, maxc, ss, _POW2_32, out))


def mx_decode(payload: np.ndarray, n: int, *, fmt: str, out: np.ndarray | None = None,
              add: bool = False) -> np.ndarray:
    """Decode ``n`` entries ``P_i * X`` (into ``out``, or added to it with ``add``).

    ValueError for a NaN (0xFF) scale, an element code that is not finite, a product
    beyond float32's range, or unused bits of the last byte that are not zero.
    """
    width = _params(fmt)[0]
    need = payload_nbytes(n, fmt)
    if payload.dtype != np.uint8 or payload.shape != (need,):
        raise ValueError(f"payload must be {need} uint8 bytes for n={n}, got {payload.shape}")
    if fmt not in _TABLES:
        _TABLES[fmt] = element_table(fmt)
    used = (n * width) % 8
    if used and payload[-1] >> used:  # a d that packs into as many bytes as the real one
        raise ValueError(f"corrupted payload: the last byte's {8 - used} unused bits are not "
                         f"zero (d={n} does not match the message)")
    out = np.empty(n, np.float32) if out is None else out
    if n == 0:
        return out
    fn = _decode_par if use_parallel(n) else _decode
    isint = MX_FORMATS[fmt][0] == "int8"
    bad = fn(np.ascontiguousarray(payload), n, width, isint, _TABLES[fmt], _POW2_32, out,
             bool(add))
    if bad:
        raise ValueError(f"corrupted payload: {bad} NaN scale(s), invalid {fmt} element(s) or "
                         f"element x scale products beyond float32")
    return out
