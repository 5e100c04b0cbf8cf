"""Scaled sign: one bit per entry (``x >= 0``, so sign(0) = +1) and one float32 scale per bucket.

Scales (per bucket ``b`` of ``len(b)`` entries):

* ``L1``:    ``||x_b||_1 / len(b)``: EF-signSGD's scale, the one minimising ``||x - s sign(x)||``;
* ``DRIVE``: ``||x_b||_2^2 / ||x_b||_1``: DRIVE's unbiased scale (after a random rotation),
  0 for an all-zero bucket.

Wire layout: the float32 scales, then the bits LSB-first (bit ``i`` is 1 for ``x_i >= 0``).

The bits do not depend on the scale, so one pass does everything.  The input is cut
into *segments*: whole buckets, or pieces of ``PIECE`` entries of larger buckets.  Per
segment one vectorised loop (:func:`hpcq.kernels.sums.sign_bits_sum_abs`) stores the
compare bits of 16 entries as two bytes and adds ``|x|`` in float32 with a fixed order
of additions; a segment whose float32 sums overflow is summed again in float64, where
float32 input cannot overflow, so the sums are NaN/Inf exactly when the input holds
NaN/Inf.  Segment sums are combined in order per bucket: every floating-point operation
is fixed by the source, so the bytes never depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from hpcq.kernels._config import EXACT, INLINE, twins
from hpcq.kernels.bitpack import packed_nbytes
from hpcq.kernels.blockpack import BLOCK, stream_views, unpack_block
from hpcq.kernels.quantize import PIECE, blocks
from hpcq.kernels.sums import sign_bits_sum_abs, sum_abs64, sum_sq, sum_sq64

L1, DRIVE = 0, 1
_U = np.uint64
_F32MAX = 3.4028234663852886e38


def payload_nbytes(n: int, bucket: int) -> int:
    """Scales plus one bit per entry."""
    nb = 0 if n == 0 else 1 if bucket == 0 else -(-n // bucket)
    return 4 * nb + packed_nbytes(n, 1)


@njit(**INLINE)
def segments(bucket):  # type: ignore[no-untyped-def]
    """(segment length, segments per bucket) for an effective bucket: whole buckets up to
    PIECE entries, else PIECE-entry pieces (the last one of a bucket may be short)."""
    seg = min(bucket, PIECE)
    return seg, (bucket + seg - 1) // seg


@njit(**INLINE)
def _segment(g, n, bucket, seg, ppb):  # type: ignore[no-untyped-def]
    """(start, length) of segment g; length 0 past the end of a short last bucket."""
    if ppb == 1:  # segments are buckets (no integer division: it would cost ~15 cycles)
        return g * bucket, max(0, min(bucket, n - g * bucket))
    k = g // ppb
    i0 = k * bucket + (g % ppb) * seg
    return i0, max(0, min(n, i0 + seg, (k + 1) * bucket) - i0)


@njit(**INLINE)
def _segment_bits(x, i0, cnt, mode, codes):  # type: ignore[no-untyped-def]
    """Pack the bits of x[i0:i0+cnt]; return (sum |x|, sum x^2 or 0) as float64."""
    s = np.float64(sign_bits_sum_abs(x, i0, cnt, codes, i0 >> 3))
    q = np.float64(sum_sq(x, i0, cnt)) if mode == DRIVE else 0.0
    if np.isfinite(s) and np.isfinite(q):
        return s, q
    return sum_abs64(x, i0, cnt), sum_sq64(x, i0, cnt)  # float32 overflow, or NaN/Inf input


@njit(**INLINE)
def _scale(s, q, cnt, mode):  # type: ignore[no-untyped-def]
    """A bucket's float32 scale from its float64 sum |x| and sum x^2."""
    if mode == L1:
        return np.float32(s / cnt)
    return np.float32(q / s) if s > 0.0 else np.float32(0.0)


def _encode_body(x, bucket, mode, nblk, sums, scales, codes):  # type: ignore[no-untyped-def]
    """Bits and sums of every segment, nblk runs of segments in parallel.

    When segments are buckets their scales are written here and the buckets with NaN/Inf
    counted (returned); otherwise :func:`_finish` combines the segment sums.
    """
    n = x.shape[0]
    seg, ppb = segments(bucket)
    ng = sums.shape[0]
    bad = 0
    for blk in prange(nblk):
        for g in range(blk * ng // nblk, (blk + 1) * ng // nblk):
            i0, cnt = _segment(g, n, bucket, seg, ppb)
            s, q = _segment_bits(x, i0, cnt, mode, codes)
            bad += not (np.isfinite(s) and np.isfinite(q))
            sums[g, 0], sums[g, 1] = s, q
            if ppb == 1:
                scales[g] = _scale(s, q, cnt, mode)
    return bad


@njit(**EXACT)
def _finish(sums, n, bucket, mode, scales):  # type: ignore[no-untyped-def]
    """Combine segment sums in order into each bucket's scale; return the buckets with NaN/Inf."""
    _, ppb = segments(bucket)
    bad = 0
    for k in range(scales.shape[0]):
        s = 0.0
        q = 0.0
        for g in range(k * ppb, (k + 1) * ppb):
            s += sums[g, 0]
            q += sums[g, 1]
        bad += not (np.isfinite(s) and np.isfinite(q))
        scales[k] = _scale(s, q, min(bucket, n - k * bucket), mode)
    return bad


def _decode_body(scales, codes, bucket, nblk, out, add):  # type: ignore[no-untyped-def]
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
            for c0 in range(i0, nfull, BLOCK):  # BLOCK passed literally: a constant for LLVM
                _signs_block(codes, c0, BLOCK, s, buf, words, out, add)
            if nfull < i1:
                _signs_block(codes, nfull, i1 - nfull, s, buf, words, out, add)
    return bad


@njit(**INLINE)
def _signs_block(codes, c0, cnt, s, buf, words, out, add):  # type: ignore[no-untyped-def]
    unpack_block(codes, _U(c0 >> 3), cnt, 1, buf, words)
    for j in range(_U(cnt)):  # `add` is loop-invariant: LLVM unswitches the loop on it
        v = s if buf[j] else -s
        if add:
            out[_U(c0) + j] += v
        else:
            out[_U(c0) + j] = v


_encode, _encode_par = twins(_encode_body)
_decode, _decode_par = twins(_decode_body)


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
    _, ppb = segments(b)
    sums = np.empty((nb * ppb, 2))
    par, nblk = blocks(sums.shape[0], n)
    scales = out[: 4 * nb].view(np.float32)
    bad = (_encode_par if par else _encode)(x, b, mode, nblk, sums, scales, out[4 * nb :])
    return int(bad if ppb == 1 else _finish(sums, n, b, mode, scales))


def sign_decode(payload: np.ndarray, n: int, *, bucket: int, out: np.ndarray | None = None,
                add: bool = False) -> np.ndarray:
    """Decode ``n`` entries ``±scale`` (into ``out``, or added to it with ``add``).

    ValueError for a negative or non-finite scale.
    """
    b = _layout(n, bucket, L1)
    need = payload_nbytes(n, bucket)
    if payload.dtype != np.uint8 or payload.shape != (need,):
        raise ValueError(f"payload must be {need} uint8 bytes for n={n}, got {payload.shape}")
    out = np.empty(n, np.float32) if out is None else out
    if n == 0:
        return out
    nb = -(-n // b)
    payload = np.ascontiguousarray(payload)
    par, nblk = blocks(nb * -(-b // PIECE), n)
    bad = (_decode_par if par else _decode)(payload[: 4 * nb].view(np.float32),
                                            stream_views(payload[4 * nb :]), b, nblk, out,
                                            bool(add))
    if bad:
        raise ValueError(f"corrupted payload: {bad} bucket scale(s) are negative or not finite")
    return out
