"""DQ-GD's cube quantizer: fixed range [-r, r], 2^b mid-rise levels, fractional bits per entry.

Coordinate ``i`` gets ``b_i = b0`` or ``b0 + 1`` bits (the extra ones marked in a
bitmap, see :func:`hpcq.kernels.subset.sample_bitmap`); with ``b`` bits the
cells have width ``delta = 2r / 2^b`` and code ``k`` decodes to the cell's
mid-point ``-r + (k + 0.5) delta``; ``b = 0`` decodes to 0.  Inputs outside
[-r, r] are clipped to the end cells and counted.

* nearest: ``k = floor((x + r) / delta)``, the cell holding x (error <= delta/2).
* stochastic: between the two nearest mid-points, unbiased on
  ``[-r + delta/2, r - delta/2]``; the half-cells at the ends map to the end points.

Stream: codes LSB-first, consecutively, each with its own width: code ``i``
starts at bit ``sum_{j<i} b_j``.  With one width b <= 8 for all, groups of 8
codes fill b whole bytes and the kernels run over groups.  Otherwise they split the coordinates
into chunks of :data:`CHUNK` (whole bitmap words); a chunk writes the bytes
that lie entirely inside its bits, and hands its (at most two) partly covered
bytes (copies of its first byte, its last partial byte) to a serial pass that
ORs the neighbours' parts together.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from hpcq.kernels._config import EXACT, INLINE, twins, use_parallel
from hpcq.kernels.rng import uniform24

CHUNK = 1 << 14
_U8 = np.uint64(8)
_U32 = np.uint64(32)
_FF = np.uint64(0xFF)
_FLT_MAX = 3.4028234663852886e38


@njit(**INLINE)
def _popcount(w):  # type: ignore[no-untyped-def]
    w = w - ((w >> np.uint64(1)) & np.uint64(0x5555555555555555))
    w = (w & np.uint64(0x3333333333333333)) + ((w >> np.uint64(2)) & np.uint64(0x3333333333333333))
    w = (w + (w >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return np.int64((w * np.uint64(0x0101010101010101)) >> np.uint64(56))


@njit(**EXACT)
def _offsets(bitmap, extra, n, b0, size, offs):  # type: ignore[no-untyped-def]
    """Start bit of every chunk of ``size`` coordinates (offs has nchunks + 1 entries)."""
    bit = 0
    for c in range(offs.shape[0] - 1):
        offs[c] = bit
        lo, hi = c * size, min(n, (c + 1) * size)
        bit += (hi - lo) * b0
        if extra:
            for wi in range(lo >> 6, (hi + 63) >> 6):
                bit += _popcount(bitmap[wi])
    offs[offs.shape[0] - 1] = bit


def _encode_body(x, bitmap, extra, b0, r, stochastic, key, size, offs, out,
                 edge_idx, edge_val):  # type: ignore[no-untyped-def]
    n = x.shape[0]
    nch = offs.shape[0] - 1
    clipped = 0
    bad = 0
    for ci in prange(nch):
        c = np.int64(ci)
        start = offs[c]
        first = start >> 3
        byte = first
        acc = np.uint64(0)
        sh = np.uint64(start & 7)
        inv0 = (1 << b0) / (2.0 * r)
        lo, hi = c * size, min(n, (c + 1) * size)
        for wi in range(lo >> 6, (hi + 63) >> 6):
            word = bitmap[np.uint64(wi)] if extra else np.uint64(0)
            for i in range(wi << 6, min(hi, (wi + 1) << 6)):
                v = np.float64(x[np.uint64(i)])  # unsigned subscripts: no wraparound checks
                bad += not abs(v) <= _FLT_MAX  # branch-free: rarely true
                clipped += (v > r) | (v < -r)
                e = np.int64((word >> np.uint64(i & 63)) & np.uint64(1))
                w = b0 + e
                if w == 0:
                    continue
                t = (v + r) * (inv0 * (1 + e))  # exact doubling: no branch on e
                top = float((1 << w) - 1)
                if stochastic:
                    t = min(max(t - 0.5, 0.0), top)
                    f = np.floor(t)
                    k = np.int64(f) + np.int64(uniform24(key, i) < t - f)
                else:
                    k = np.int64(min(max(t, 0.0), top))
                acc |= np.uint64(k) << sh
                sh += np.uint64(w)
                if sh >= _U32:  # 4 whole bytes; a shared first byte is fixed up later
                    for q in range(4):
                        out[np.uint64(byte + q)] = np.uint8((acc >> np.uint64(8 * q)) & _FF)
                    byte += 4
                    acc >>= _U32
                    sh -= _U32
        while sh >= _U8:
            out[byte] = np.uint8(acc & np.uint64(0xFF))
            byte += 1
            acc >>= _U8
            sh -= _U8
        edge_idx[2 * c] = -1
        edge_idx[2 * c + 1] = -1
        if start & 7 and byte > first:
            edge_idx[2 * c] = first
            edge_val[2 * c] = out[first]
        if sh > np.uint64(start & 7) or (sh > 0 and byte > first):
            edge_idx[2 * c + 1] = byte
            edge_val[2 * c + 1] = np.uint8(acc & np.uint64(0xFF))
    return clipped, bad


_encode, _encode_par = twins(_encode_body)


@njit(**EXACT)
def _merge_edges(edge_idx, edge_val, out):  # type: ignore[no-untyped-def]
    cur = -1
    acc = np.uint8(0)
    for e in range(edge_idx.shape[0]):
        b = edge_idx[e]
        if b < 0:
            continue
        if b != cur:
            if cur >= 0:
                out[cur] = acc
            cur = b
            acc = edge_val[e]
        else:
            acc |= edge_val[e]
    if cur >= 0:
        out[cur] = acc


def _decode_body(buf, bitmap, extra, b0, r, size, offs, out):  # type: ignore[no-untyped-def]
    n = out.shape[0]
    nb = buf.shape[0]
    for ci in prange(offs.shape[0] - 1):
        c = np.int64(ci)
        b = offs[c] >> 3
        skip = np.uint64(offs[c] & 7)  # the first byte's low bits belong to the previous chunk
        acc = np.uint64(buf[np.uint64(b)]) >> skip if b < nb else np.uint64(0)
        have = _U8 - skip
        b += 1
        d0 = 2.0 * r / (1 << b0)
        lo, hi = c * size, min(n, (c + 1) * size)
        for wi in range(lo >> 6, (hi + 63) >> 6):
            word = bitmap[np.uint64(wi)] if extra else np.uint64(0)
            for i in range(wi << 6, min(hi, (wi + 1) << 6)):
                e = np.int64((word >> np.uint64(i & 63)) & np.uint64(1))
                w = np.uint64(b0 + e)
                if have < w:  # refill 4 bytes at once (a code is at most 16 bits)
                    for q in range(4):
                        if b + q < nb:
                            acc |= np.uint64(buf[np.uint64(b + q)]) << have
                        have += _U8
                    b += 4
                k = acc & ((np.uint64(1) << w) - np.uint64(1))
                acc >>= w
                have -= w
                val = -r + (np.float64(k) + 0.5) * (d0 * (1.0 - 0.5 * e))
                out[np.uint64(i)] = np.float32(val if w else 0.0)


_decode, _decode_par = twins(_decode_body)


def _encode8_body(x, b0, r, stochastic, key, out):  # type: ignore[no-untyped-def]
    """Integer width b0 <= 8: group g of 8 codes is exactly bytes [g*b0, g*b0 + b0)."""
    n = x.shape[0]
    clipped = 0
    bad = 0
    inv = (1 << b0) / (2.0 * r)
    top = float((1 << b0) - 1)
    for gi in prange((n + 7) // 8):
        base = np.int64(gi) * 8
        cnt = min(8, n - base)
        acc = np.uint64(0)
        for j in range(cnt):
            v = np.float64(x[np.uint64(base + j)])
            bad += not abs(v) <= _FLT_MAX
            clipped += (v > r) | (v < -r)
            t = (v + r) * inv
            if stochastic:
                t = min(max(t - 0.5, 0.0), top)
                f = np.floor(t)
                k = np.int64(f) + np.int64(uniform24(key, base + j) < t - f)
            else:
                k = np.int64(min(max(t, 0.0), top))
            acc |= np.uint64(k) << np.uint64(j * b0)
        ob = np.int64(gi) * b0
        for q in range((cnt * b0 + 7) >> 3):
            out[np.uint64(ob + q)] = np.uint8((acc >> np.uint64(8 * q)) & _FF)
    return clipped, bad
def _decode8_body(buf, b0, r, out):  # type: ignore[no-untyped-def]
    n = out.shape[0]
    d = 2.0 * r / (1 << b0)
    mask = np.uint64((1 << b0) - 1)
    for gi in prange((n + 7) // 8):
        base = np.int64(gi) * 8
        cnt = min(8, n - base)
        ob = np.int64(gi) * b0
        acc = np.uint64(0)
        for q in range((cnt * b0 + 7) >> 3):
            acc |= np.uint64(buf[np.uint64(ob + q)]) << np.uint64(8 * q)
        for j in range(cnt):
            k = (acc >> np.uint64(j * b0)) & mask
            out[np.uint64(base + j)] = np.float32(-r + (np.float64(k) + 0.5) * d)


_encode8, _encode8_par = twins(_encode8_body)
_decode8, _decode8_par = twins(_decode8_body)


def total_bits(n: int, bits: float) -> int:
    """floor(n * bits), exactly (``bits`` as the float32 the header carries)."""
    from fractions import Fraction

    return int(Fraction(float(np.float32(bits))) * n)


def _layout(n: int, b0: int, bitmap: np.ndarray | None) -> tuple[bool, np.ndarray, int, np.ndarray]:
    if not 0 <= b0 <= 16 or n < 0:
        raise ValueError(f"need 0 <= b0 <= 16 and n >= 0, got b0={b0}, n={n}")
    extra = bitmap is not None
    bm = bitmap if bitmap is not None else np.zeros(1, np.uint64)
    if extra and (bm.dtype != np.uint64 or bm.shape != ((n + 63) // 64,)):
        raise ValueError(f"bitmap must be {(n + 63) // 64} uint64 words")
    if extra and b0 == 16:
        raise ValueError("no coordinate may get more than 16 bits")
    size = CHUNK if use_parallel(n) else max(n, 1)
    offs = np.empty(-(-n // size) + 1, np.int64)
    _offsets(bm, extra, n, b0, size, offs)
    return extra, bm, size, offs


def encode(x: np.ndarray, b0: int, bitmap: np.ndarray | None, r: float, stochastic: bool,
           key: np.uint64) -> tuple[np.ndarray, int, int]:
    """``(packed codes, clipped, nonfinite)`` for float32 ``x`` on [-r, r].

    Every coordinate gets ``b0`` bits, plus one where ``bitmap`` (or None) is set.
    """
    if x.dtype != np.float32 or x.ndim != 1 or not x.flags.c_contiguous:
        raise TypeError("x must be a C-contiguous 1-D float32 array")
    if not (np.isfinite(r) and r > 0):
        raise ValueError(f"range must be a finite number > 0, got {r}")
    n = x.shape[0]
    if bitmap is None and 1 <= b0 <= 8:  # fast path: whole bytes per group of 8 codes
        out = np.empty((n * b0 + 7) // 8, np.uint8)
        clipped, bad = (_encode8_par if use_parallel(n) else _encode8)(
            x, b0, float(r), stochastic, np.uint64(key), out)
        return out, int(clipped), int(bad)
    extra, bm, size, offs = _layout(n, b0, bitmap)
    out = np.empty((int(offs[-1]) + 7) // 8, np.uint8)
    nch = offs.shape[0] - 1
    edge_idx = np.empty(2 * nch, np.int64)
    edge_val = np.empty(2 * nch, np.uint8)
    clipped, bad = (_encode_par if nch > 1 else _encode)(
        x, bm, extra, b0, float(r), stochastic, np.uint64(key), size, offs, out, edge_idx,
        edge_val)
    _merge_edges(edge_idx, edge_val, out)
    return out, int(clipped), int(bad)


def decode(buf: np.ndarray, n: int, b0: int, bitmap: np.ndarray | None, r: float) -> np.ndarray:
    """Inverse of :func:`encode`: float32[n] of cell mid-points (0 for 0-bit coordinates)."""
    extra, bm, size, offs = _layout(n, b0, bitmap)
    if buf.dtype != np.uint8 or buf.ndim != 1 or buf.shape[0] * 8 < offs[-1]:
        raise ValueError(f"code stream too short: {offs[-1]} bits needed")
    out = np.empty(n, np.float32)
    if not extra and 1 <= b0 <= 8:
        (_decode8_par if use_parallel(n) else _decode8)(buf, b0, float(r), out)
        return out
    (_decode_par if offs.shape[0] > 2 else _decode)(buf, bm, extra, b0, float(r), size, offs, out)
    return out
