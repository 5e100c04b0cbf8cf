"""Scaled sign: one bit per entry (``x >= 0``, so sign(0) = +1) and one float32 scale per bucket.

Scales (per bucket ``b`` of ``len(b)`` entries):

* ``L1``:    ``||x_b||_1 / len(b)``: EF-signSGD's scale, the one minimising ``||x - s sign(x)||``;
* ``DRIVE``: ``||x_b||_2^2 / ||x_b||_1``: DRIVE's unbiased scale (after a random rotation),
  0 for an all-zero bucket.

Wire layout: the float32 scales, then the bits LSB-first (bit ``i`` is 1 for ``x_i >= 0``).

The bits do not depend on the scale, so one pass does everything: every piece of
``min(bucket, PIECE)`` entries writes its bits and its partial sums: float32 per
512-entry block, fused with the bits (a block whose float32 sums overflow is summed
again in float64, where float32 input cannot overflow, so the sums are NaN/Inf
exactly when the input holds NaN/Inf), then float64 across blocks.  The partial
sums are combined in order, so the bytes never depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from hpcq.kernels._config import EXACT, EXACT_PARALLEL, INLINE, REDUCE
from hpcq.kernels.bitpack import packed_nbytes
from hpcq.kernels.quantize import BLOCK, PIECE, blocks, pack_block, stream_views, unpack_block
from numba import njit, prange

L1, DRIVE = 0, 1
_U = np.uint64
_F32MAX = 3.4028234663852886e38


def payload_nbytes(n: int, bucket: int) -> int:
    """Scales plus one bit per entry."""
    nb = 0 if n == 0 else 1 if bucket == 0 else -(-n // bucket)
    return 4 * nb + packed_nbytes(n, 1)


@njit(**REDUCE)
def _abs_sums(x, i0, n):  # type: ignore[no-untyped-def]
    """(sum |x|, sum x^2) over x[i0:i0+n] in float64."""
    s = 0.0
    q = 0.0
    for j in range(n):
        v = np.float64(x[i0 + j])
        s += abs(v)
        q += v * v
    return s, q


@njit(**REDUCE)
def _bits_l1(x, i, cnt, buf):  # type: ignore[no-untyped-def]
    """Sign bytes of x[i:i+cnt] into buf; return (sum |x|, 0) in float32 (one fused pass)."""
    s = np.float32(0.0)
    for j in range(_U(cnt)):
        v = x[i + j]
        s += abs(v)
        buf[j] = np.uint8(v >= np.float32(0.0))
    return s, np.float32(0.0)


@njit(**REDUCE)
def _bits_l1_l2(x, i, cnt, buf):  # type: ignore[no-untyped-def]
    """As :func:`_bits_l1`, also returning sum x^2."""
    s = np.float32(0.0)
    q = np.float32(0.0)
    for j in range(_U(cnt)):
        v = x[i + j]
        s += abs(v)
        q += v * v
        buf[j] = np.uint8(v >= np.float32(0.0))
    return s, q


@njit(**INLINE)
def _bits_sums(x, c0, cnt, mode, buf):  # type: ignore[no-untyped-def]
    """Sign bytes of x[c0:c0+cnt] into buf; return (sum |x|, sum x^2 or 0) as float64."""
    if mode == L1:
        a, b = _bits_l1(x, _U(c0), cnt, buf)
    else:
        a, b = _bits_l1_l2(x, _U(c0), cnt, buf)
    if not (np.isfinite(a) and np.isfinite(b)):
        return _abs_sums(x, _U(c0), _U(cnt))
    return np.float64(a), np.float64(b)


@njit(**INLINE)
def _scale(s, q, cnt, mode):  # type: ignore[no-untyped-def]
    """The float32 scale of a bucket of ``cnt`` entries from its sum |x| and sum x^2."""
    if mode == L1:
        return np.float32(s / cnt)
    return np.float32(q / s) if s > 0.0 else np.float32(0.0)


def _encode_body(x, bucket, mode, nblk, sums, scales, codes):  # type: ignore[no-untyped-def]
    """Bits and partial sums of every unit (piece) of min(bucket, PIECE) entries.

    Blocks are summed in float32 (vectorised with the bits); a block whose float32 sums
    overflow is summed again in float64, which is NaN/Inf only for NaN/Inf input.  When a
    bucket is one unit its scale is written at once, and the buckets with NaN/Inf counted.
    """
    n = x.shape[0]
    ppb = (bucket + PIECE - 1) // PIECE
    unit = min(bucket, PIECE)
    nu = sums.shape[0]
    bad = 0
    for blk in prange(nblk):
        buf = np.empty(BLOCK, np.uint8)
        words = buf.view(np.uint64)
        for u in range(blk * nu // nblk, (blk + 1) * nu // nblk):
            k = u // ppb
            i0 = k * bucket + (u % ppb) * unit
            i1 = max(i0, min(n, i0 + unit, (k + 1) * bucket))  # empty past a short last bucket
            s = 0.0
            q = 0.0
            nfull = i0 + (i1 - i0) // BLOCK * BLOCK
            for c0 in range(i0, nfull, BLOCK):  # BLOCK passed literally: a constant for LLVM
                a, b = _bits_sums(x, c0, BLOCK, mode, buf)
                pack_block(buf, words, BLOCK, codes, _U(c0 >> 3), 1)
                s += a
                q += b
            if nfull < i1:
                a, b = _bits_sums(x, nfull, i1 - nfull, mode, buf)
                pack_block(buf, words, i1 - nfull, codes, _U(nfull >> 3), 1)
                s += a
                q += b
            sums[u, 0] = s
            sums[u, 1] = q
            if ppb == 1:
                scales[k] = _scale(s, q, i1 - i0, mode)
                bad += not (np.isfinite(s) and np.isfinite(q))
    return bad


@njit(**EXACT)
def _finish(sums, n, bucket, mode, scales):  # type: ignore[no-untyped-def]
    """Combine partial sums in order into each bucket's scale; return the buckets with NaN/Inf."""
    ppb = (bucket + PIECE - 1) // PIECE
    bad = 0
    for k in range(scales.shape[0]):
        s = 0.0
        q = 0.0
        for u in range(k * ppb, (k + 1) * ppb):
            s += sums[u, 0]
            q += sums[u, 1]
        bad += not (np.isfinite(s) and np.isfinite(q))
        scales[k] = _scale(s, q, min(bucket, n - k * bucket), mode)
    return bad


def _decode_body(scales, codes, bucket, nblk, out):  # type: ignore[no-untyped-def]
    n = out.shape[0]
    ppb = (bucket + PIECE - 1) // PIECE
    unit = min(bucket, PIECE)
    nu = ((n + bucket - 1) // bucket) * ppb
    bad = 0
    for blk in prange(nblk):
        buf = np.empty(BLOCK, np.uint8)
        words = buf.view(np.uint64)
        for u in range(blk * nu // nblk, (blk + 1) * nu // nblk):
            k = u // ppb
            i0 = k * bucket + (u % ppb) * unit
            i1 = max(i0, min(n, i0 + unit, (k + 1) * bucket))
            s = scales[k]
            if not (np.float32(0.0) <= s <= np.float32(_F32MAX)):
                bad += 1
                s = np.float32(0.0)
            nfull = i0 + (i1 - i0) // BLOCK * BLOCK
            for c0 in range(i0, nfull, BLOCK):
                _signs_block(codes, c0, BLOCK, s, buf, words, out)
            if nfull < i1:
                _signs_block(codes, nfull, i1 - nfull, s, buf, words, out)
    return bad


@njit(**INLINE)
def _signs_block(codes, c0, cnt, s, buf, words, out):  # type: ignore[no-untyped-def]
    unpack_block(codes, _U(c0 >> 3), cnt, 1, buf, words)
    for j in range(_U(cnt)):
        out[_U(c0) + j] = s if buf[j] else -s


_encode = njit(**EXACT)(_encode_body)
_encode_par = njit(**EXACT_PARALLEL)(_encode_body)
_decode = njit(**EXACT)(_decode_body)
_decode_par = njit(**EXACT_PARALLEL)(_decode_body)


def _layout(n: int, bucket: int, mode: int) -> int:
    if bucket < 0 or bucket % 8:
        raise ValueError(f"bucket must be 0 (one bucket) or a positive multiple of 8, got {bucket}")
    if mode not in (L1, DRIVE):
        raise ValueError(f"unknown sign scale mode {mode}")
    return bucket if bucket else max(n, 8)


def sign_encode(x: np.ndarray, out: np.ndarray, *, bucket: int, mode: int) -> int:
    """Write scales and sign bits of float32 ``x`` into ``out``; return the buckets with NaN/Inf."""
    n = x.shape[0]
    b = _layout(n, bucket, mode)
    if x.dtype != np.float32 or x.ndim != 1 or not x.flags.c_contiguous:
        raise TypeError("x must be a C-contiguous 1-D float32 array")
    need = payload_nbytes(n, bucket)
    if out.dtype != np.uint8 or out.shape != (need,):
        raise ValueError(f"out must be {need} uint8 bytes, got {out.dtype} {out.shape}")
    if n == 0:
        return 0
    nb = -(-n // b)
    scales = out[: 4 * nb].view(np.float32)
    sums = np.empty((nb * -(-b // PIECE), 2))
    par, nblk = blocks(sums.shape[0], n)
    bad = (_encode_par if par else _encode)(x, b, mode, nblk, sums, scales,
                                            stream_views(out[4 * nb :]))
    return int(bad if b <= PIECE else _finish(sums, n, b, mode, scales))


def sign_decode(payload: np.ndarray, n: int, *, bucket: int) -> np.ndarray:
    """Decode ``n`` entries ``±scale``; ValueError for a negative or non-finite scale."""
    b = _layout(n, bucket, L1)
    need = payload_nbytes(n, bucket)
    if payload.dtype != np.uint8 or payload.shape != (need,):
        raise ValueError(f"payload must be {need} uint8 bytes for n={n}, got {payload.shape}")
    out = np.empty(n, np.float32)
    if n == 0:
        return out
    nb = -(-n // b)
    payload = np.ascontiguousarray(payload)
    par, nblk = blocks(nb * -(-b // PIECE), n)
    bad = (_decode_par if par else _decode)(payload[: 4 * nb].view(np.float32),
                                            stream_views(payload[4 * nb :]), b, nblk, out)
    if bad:
        raise ValueError(f"corrupted payload: {bad} bucket scale(s) are negative or not finite")
    return out
