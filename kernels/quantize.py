"""Bucketed affine scalar quantization fused with bit-packing (uniform b-bit, QSGD, TernGrad).

Every bucket of ``bucket`` consecutive entries (the last may be short) gets an
interval ``[lo, hi]`` and ``nlev`` evenly spaced levels on it; entry ``x`` gets
the code ``c = floor(t + u)`` with ``t = (x - lo) / step``, ``step = (hi - lo) / (nlev - 1)``,
and ``u`` uniform on [0, 1) (stochastic rounding, unbiased: E[lo + c*step] = x) or
``u = 1/2`` (nearest).  Modes give the interval:

* ``MAXABS``: ``[-m, m]``, ``m = max |x|``: uniform maxabs, QSGD linf;
* ``L2``:     ``[-m, m]``, ``m = ||x||_2``: QSGD's l2 scale (``nlev = 2s + 1``);
* ``MINMAX``: ``[min x, max x]``;
* ``TERNARY``: ``[-s, s]``, ``s = min(max |x|, clip * std(x))`` (``clip = 0``: no
  clipping), ``nlev = 3``: TernGrad (:mod:`hpcq.kernels.ternary`).

Arithmetic: ``T = round(t * 2^24)`` in float64, clamped to ``[0, (nlev-1) 2^24]``,
and ``c = (T + r) >> 24`` with ``r = uniform24``'s 24 random bits of element ``i``
(``uniform24(key, i) = r / 2^24``) or ``r = 2^23`` (nearest).  So the probability
of rounding up is the fractional part to 2^-25, an entry on a level (an endpoint,
QSGD's zero, a constant bucket) is reproduced exactly, and no code exceeds
``nlev - 1``.  The clamp also implements clipping (TernGrad passes a narrower interval).

Wire layout (the payload of the codecs): all scales first as float32 (one ``m``
per bucket, or ``lo, hi`` pairs for MINMAX), then the codes packed LSB-first in
groups of 8 (:mod:`hpcq.kernels.bitpack`).

Kernels work per bucket, reading the input once: the bucket's statistics (integer
max/min of the float bits, which also flags NaN/Inf; float64 sums in a fixed order
(:mod:`hpcq.kernels.sums`) over 4096-entry pieces, so the bytes never depend on the
thread count or on how LLVM vectorised a caller), then blocks
of 512 codes computed by a vectorised loop into a 512-byte buffer that stays in
L1, and packed with shifts into their ``8 * width``-bit groups.  Buckets larger than
a piece take two passes (statistics, then codes) so that they too run in
parallel.  Hot loops index with uint64 offsets: numba then omits its
negative-index test, which would otherwise stop LLVM from vectorising them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from hpcq.kernels._config import EXACT, INLINE, twins, use_parallel
from hpcq.kernels.bitpack import packed_nbytes
from hpcq.kernels.blockpack import BLOCK, pack_block, stream_views, unpack_block
from hpcq.kernels.rng import GOLDEN, mix64
from hpcq.kernels.sums import sum_id64, sum_sq64

MAXABS, L2, MINMAX, TERNARY = 0, 1, 2, 3
PIECE = 4096  # entries per partial sum (fixed, so the result is thread-independent)
ONE24 = float(1 << 24)
_U = np.uint64
_HALF24 = np.int64(1 << 23)
_S40 = np.uint64(40)
_F32MAX = 3.4028234663852886e38
_ABSMASK = np.uint32(0x7FFFFFFF)
_INFBITS = np.uint32(0x7F800000)


def code_width(nlev: int) -> int:
    """Bits per code for ``nlev`` levels."""
    return max(1, (int(nlev) - 1).bit_length())


def n_buckets(n: int, bucket: int) -> int:
    """Buckets over ``n`` entries (``bucket = 0``: one bucket holding everything)."""
    return 0 if n == 0 else 1 if bucket == 0 else -(-n // bucket)


def n_scales(n: int, bucket: int, mode: int) -> int:
    """float32 scales in the payload."""
    return n_buckets(n, bucket) * (2 if mode == MINMAX else 1)


def payload_nbytes(n: int, bucket: int, nlev: int, mode: int) -> int:
    """Scales plus packed codes."""
    return 4 * n_scales(n, bucket, mode) + packed_nbytes(n, code_width(nlev))


# ------------------------------------------------------------------ statistics
@njit(**EXACT)
def _absmax_bits(xb, i0, n):  # type: ignore[no-untyped-def]
    """max of the float bits with the sign cleared over ``n`` entries (>= 0x7F800000: NaN/Inf)."""
    m = np.uint32(0)
    for j in range(n):
        v = xb[i0 + j] & _ABSMASK
        m = v if v > m else m
    return m


@njit(**EXACT)
def _minmax_keys(xb, i0, n):  # type: ignore[no-untyped-def]
    """(min, max) of order-preserving int32 keys of the float32 bits ``xb`` (uint32)."""
    lo = np.int32(0x7FFFFFFF)
    hi = np.int32(-0x80000000)
    for j in range(n):
        b = np.int32(xb[i0 + j])
        k = b ^ ((b >> np.int32(31)) & np.int32(0x7FFFFFFF))
        lo = k if k < lo else lo
        hi = k if k > hi else hi
    return lo, hi


@njit(**INLINE)
def _key_float(k):  # type: ignore[no-untyped-def]
    """Inverse of the key map of :func:`_minmax_keys` (an involution), as float64."""
    return np.float64(np.int32(k ^ ((k >> np.int32(31)) & np.int32(0x7FFFFFFF))).view(np.float32))


@njit(**EXACT)
def _piece_stats(x, xb, i0, n, mode):  # type: ignore[no-untyped-def]
    """(s0, s1, s2, ok) over ``x[i0:i0+n]`` (``xb``: x as uint32); see :func:`_combine`;
    ok: all finite.  Sums are float64 in a fixed order (:mod:`hpcq.kernels.sums`)."""
    amax = _absmax_bits(xb, i0, n)
    ok = amax < _INFBITS
    fmax = np.float64(np.uint32(amax).view(np.float32))
    if mode == L2:
        return sum_sq64(x, i0, n), 0.0, 0.0, ok
    if mode == MINMAX:
        lo, hi = _minmax_keys(xb, i0, n)
        return _key_float(lo), _key_float(hi), 0.0, ok
    if mode == TERNARY:
        return fmax, sum_id64(x, i0, n), sum_sq64(x, i0, n), ok
    return fmax, 0.0, 0.0, ok


@njit(**INLINE)
def _combine(s0, s1, s2, ok, a, b, c, k, mode):  # type: ignore[no-untyped-def]
    """Merge the next piece's statistics: MAXABS (max|x|), L2 (sum x^2), MINMAX (min,
    max), TERNARY (max|x|, sum x, sum x^2)."""
    if mode == L2:
        return s0 + a, s1, s2, ok and k
    if mode == MINMAX:
        return min(s0, a), max(s1, b), s2, ok and k
    return max(s0, a), s1 + b, s2 + c, ok and k


@njit(**EXACT)
def _bucket_stats(x, xb, i0, n, mode):  # type: ignore[no-untyped-def]
    """Statistics of a bucket, combined over PIECE-sized pieces in order."""
    p = _U(PIECE)
    s0, s1, s2, ok = _piece_stats(x, xb, i0, min(n, p), mode)
    for off in range(p, n, p):
        a, b, c, k = _piece_stats(x, xb, i0 + off, min(p, n - off), mode)
        s0, s1, s2, ok = _combine(s0, s1, s2, ok, a, b, c, k, mode)
    return s0, s1, s2, ok


@njit(**INLINE)
def _interval(s0, s1, s2, n, mode, clip, scales, k):  # type: ignore[no-untyped-def]
    """Store bucket k's float32 scale(s); return the float64 interval (lo, hi) they encode."""
    if mode == MINMAX:
        lo = np.float32(s0)
        hi = np.float32(s1)
        scales[2 * k] = lo
        scales[2 * k + 1] = hi
        return np.float64(lo), np.float64(hi)
    if mode == L2:
        m = np.float32(np.sqrt(s0))  # Inf if it overflows float32: the wrapper raises
    elif mode == TERNARY and clip > 0.0:
        mean = s1 / n
        sigma = np.sqrt(max(s2 / n - mean * mean, 0.0))
        m = np.float32(min(s0, clip * sigma))
    else:
        m = np.float32(s0)
    scales[k] = m
    return -np.float64(m), np.float64(m)


# ------------------------------------------------------------------ quantize
@njit(**INLINE)
def affine_codes(x, i, cnt, lo, hi, nlev, stochastic, key, buf):  # type: ignore[no-untyped-def]
    """One-byte codes of ``x[i:i+cnt]`` (uint64 ``i``) on ``nlev`` levels over [lo, hi]."""
    top = (nlev - 1) * ONE24
    a = top / (hi - lo) if hi > lo else 0.0
    b = 0.5 - lo * a
    if stochastic:
        z = key + (i + _U(1)) * GOLDEN
        for j in range(_U(cnt)):
            t = min(max(np.float64(x[i + j]) * a + b, 0.0), top)
            r = np.int64(mix64(z) >> _S40)  # = uniform24(key, i + j) * 2^24
            z += GOLDEN
            buf[j] = np.uint8((np.int64(t) + r) >> 24)
    else:
        for j in range(_U(cnt)):
            t = min(max(np.float64(x[i + j]) * a + b, 0.0), top)
            buf[j] = np.uint8((np.int64(t) + _HALF24) >> 24)


@njit(**INLINE)
def quantize_run(x, i0, n, lo, hi, nlev, width, stochastic, key, buf, words, codes):  # type: ignore[no-untyped-def]
    """Quantize and pack ``x[i0:i0+n]`` (``i0`` a multiple of 8) into the stream ``codes``."""
    if n == _U(BLOCK):  # one block, a constant count: see dequantize_run
        affine_codes(x, i0, BLOCK, lo, hi, nlev, stochastic, key, buf)
        pack_block(buf, words, BLOCK, codes, i0 >> _U(3), width)
        return
    for c0 in range(_U(0), n, _U(BLOCK)):
        cnt = min(_U(BLOCK), n - c0)
        affine_codes(x, i0 + c0, cnt, lo, hi, nlev, stochastic, key, buf)
        pack_block(buf, words, cnt, codes, (i0 + c0) >> _U(3), width)


def _encode_body(x, bucket, nlev, width, mode, clip, stochastic, key, nblk, scales, codes):  # type: ignore[no-untyped-def]
    """Fused pass for buckets <= PIECE: statistics then codes, nblk runs of buckets in parallel."""
    n = x.shape[0]
    nb = (n + bucket - 1) // bucket
    xb = x.view(np.uint32)
    bad = 0
    for blk in prange(nblk):
        buf = np.empty(BLOCK, np.uint8)
        words = buf.view(np.uint64)
        for k in range(blk * nb // nblk, (blk + 1) * nb // nblk):
            i0 = _U(k * bucket)
            cnt = _U(min(bucket, n - k * bucket))
            s0, s1, s2, ok = _bucket_stats(x, xb, i0, cnt, mode)
            bad += not ok
            lo, hi = _interval(s0, s1, s2, cnt, mode, clip, scales, k)
            quantize_run(x, i0, cnt, lo, hi, nlev, width, stochastic, key, buf, words, codes)
    return bad


def _stats_body(x, bucket, mode, stats):  # type: ignore[no-untyped-def]
    """Pass 1 for large buckets: statistics of every piece, in parallel."""
    n = x.shape[0]
    ppb = (bucket + PIECE - 1) // PIECE
    xb = x.view(np.uint32)
    for p in prange(stats.shape[0]):
        i0 = (p // ppb) * bucket + (p % ppb) * PIECE
        i1 = min(n, i0 + PIECE, (p // ppb + 1) * bucket)
        if i0 < i1:
            s0, s1, s2, ok = _piece_stats(x, xb, _U(i0), _U(i1 - i0), mode)
        else:  # past the end of a short last bucket: neutral for every combine
            s0, s1, s2, ok = 0.0, 0.0, 0.0, True
            if mode == MINMAX:
                s0, s1 = np.inf, -np.inf
        stats[p, 0] = s0
        stats[p, 1] = s1
        stats[p, 2] = s2
        stats[p, 3] = ok


@njit(**EXACT)
def _finish_stats(stats, n, bucket, mode, clip, scales, bounds):  # type: ignore[no-untyped-def]
    """Combine pieces in order into each bucket's scale(s) and interval; return #bad buckets."""
    ppb = (bucket + PIECE - 1) // PIECE
    bad = 0
    for k in range(bounds.shape[0]):
        p = k * ppb
        s0, s1, s2, ok = stats[p, 0], stats[p, 1], stats[p, 2], stats[p, 3] != 0.0
        for p in range(k * ppb + 1, (k + 1) * ppb):
            s0, s1, s2, ok = _combine(s0, s1, s2, ok, stats[p, 0], stats[p, 1], stats[p, 2],
                                      stats[p, 3] != 0.0, mode)
        bad += not ok
        cnt = min(bucket, n - k * bucket)
        bounds[k, 0], bounds[k, 1] = _interval(s0, s1, s2, cnt, mode, clip, scales, k)
    return bad


def _quantize_pieces_body(x, bucket, nlev, width, stochastic, key, bounds, codes):  # type: ignore[no-untyped-def]
    """Pass 2 for large buckets: quantize every piece with its bucket's interval."""
    n = x.shape[0]
    ppb = (bucket + PIECE - 1) // PIECE
    for p in prange(bounds.shape[0] * ppb):
        buf = np.empty(BLOCK, np.uint8)
        words = buf.view(np.uint64)
        k = p // ppb
        i0 = k * bucket + (p % ppb) * PIECE
        i1 = min(n, i0 + PIECE, (k + 1) * bucket)
        if i0 < i1:
            quantize_run(x, _U(i0), _U(i1 - i0), bounds[k, 0], bounds[k, 1], nlev, width,
                         stochastic, key, buf, words, codes)


# ------------------------------------------------------------------ dequantize
@njit(**INLINE)
def read_interval(scales, k, mode):  # type: ignore[no-untyped-def]
    """Bucket k's interval from the wire, and whether it is valid (finite, lo <= hi)."""
    if mode == MINMAX:
        lo = np.float64(scales[2 * k])
        hi = np.float64(scales[2 * k + 1])
    else:
        hi = np.float64(scales[k])
        lo = -hi
    return lo, hi, lo <= hi and abs(lo) <= _F32MAX and abs(hi) <= _F32MAX


@njit(**INLINE)
def dequantize_run(codes, i0, n, lo, hi, nlev, width, buf, words, out, add):  # type: ignore[no-untyped-def]
    """Decode into ``out[i0:i0+n]`` (uint64 offsets; added to it when ``add``); return how
    many codes exceed ``nlev - 1``."""
    top = nlev - 1
    # near the subnormal range a float32 step loses bits: work scaled by 2^64, scale back once
    sc = 18446744073709551616.0 if max(abs(lo), abs(hi)) < 2.0**-60 else 1.0
    lv = (np.float32(lo), np.float32(hi), np.float32((hi - lo) / top * sc),
          np.float32(0.5 * top), np.float32((lo + (hi - lo) * 0.5) * sc), np.float32(1.0 / sc))
    # The usual run (bucket=512) is one block: with the count a constant it compiles to
    # straight-line vector code; through the loop below it cost about 100 ns more per run
    # (the 4-bit decode of 2^24 entries on one core: 11.1 ms, now 9.0).
    if n == _U(BLOCK):
        unpack_block(codes, i0 >> _U(3), BLOCK, width, buf, words)
        return _levels(buf, BLOCK, top, lv, out, i0, add)
    bad = 0
    for c0 in range(_U(0), n, _U(BLOCK)):
        cnt = min(_U(BLOCK), n - c0)
        unpack_block(codes, (i0 + c0) >> _U(3), cnt, width, buf, words)
        bad += _levels(buf, cnt, top, lv, out, i0 + c0, add)
    return bad


@njit(**INLINE)
def _levels(buf, cnt, top, lv, out, o, add):  # type: ignore[no-untyped-def]
    """out[o:o+cnt] = (or += when ``add``) the levels of codes buf[:cnt]; return how many
    codes exceed ``top``.  ``add`` is loop-invariant: LLVM unswitches the loop on it.

    ``lv = (lo, hi, step, (nlev-1)/2, mid, unscale)``: ``((c - (nlev-1)/2) step + mid)
    unscale``, exactly 0 at the middle of a symmetric interval, and lo, hi at the ends.
    """
    lo, hi, step, half, mid, unscale = lv
    bad = 0
    for j in range(_U(cnt)):
        c = np.int32(buf[j])
        v = ((np.float32(c) - half) * step + mid) * unscale
        v = lo if c == 0 else v
        v = hi if c == top else v
        if add:
            out[o + j] += v
        else:
            out[o + j] = v
        bad += c > top
    return bad


def _decode_body(scales, codes, bucket, nlev, width, mode, nblk, out, add):  # type: ignore[no-untyped-def]
    """Decode in units of min(bucket, PIECE) entries, nblk runs of units in parallel."""
    n = out.shape[0]
    nb = (n + bucket - 1) // bucket
    ppb = (bucket + PIECE - 1) // PIECE
    unit = min(bucket, PIECE)
    nu = nb * ppb
    bad_scales = 0
    bad_codes = 0
    for blk in prange(nblk):
        buf = np.empty(BLOCK, np.uint8)
        words = buf.view(np.uint64)
        for u in range(blk * nu // nblk, (blk + 1) * nu // nblk):
            k = u // ppb
            i0 = k * bucket + (u % ppb) * unit
            i1 = min(n, i0 + unit, (k + 1) * bucket)
            if i0 < i1:
                lo, hi, ok = read_interval(scales, k, mode)
                if not ok:
                    bad_scales += 1
                    lo, hi = 0.0, 0.0
                bad_codes += dequantize_run(codes, _U(i0), _U(i1 - i0), lo, hi, nlev, width,
                                            buf, words, out, add)
    return bad_scales, bad_codes



_encode, _encode_par = twins(_encode_body)
_stats, _stats_par = twins(_stats_body)
_quantize_pieces, _quantize_pieces_par = twins(_quantize_pieces_body)
_decode, _decode_par = twins(_decode_body)


# ------------------------------------------------------------------ wrappers
def check_layout(n: int, bucket: int, nlev: int, mode: int) -> int:
    """Validate (bucket, nlev, mode) for ``n`` entries; return the effective bucket (> 0)."""
    if bucket < 0 or bucket % 8:
        raise ValueError(f"bucket must be 0 (one bucket) or a positive multiple of 8, got {bucket}")
    if not 2 <= nlev <= 256:
        raise ValueError(f"nlev must be in 2..256, got {nlev}")
    if mode not in (MAXABS, L2, MINMAX, TERNARY):
        raise ValueError(f"unknown scale mode {mode}")
    return bucket if bucket else max(n, 8)


def blocks(units: int, n: int) -> tuple[bool, int]:
    """(parallel?, number of prange runs) for a kernel over ``units`` buckets or pieces."""
    import numba

    if not use_parallel(n):
        return False, 1
    return True, max(1, min(units, 4 * numba.get_num_threads()))


def quantize(x: np.ndarray, out: np.ndarray, *, bucket: int, nlev: int, mode: int,
             stochastic: bool, key: int, clip: float = 0.0) -> int:
    """Quantize float32 ``x`` into the payload ``out`` (scales, then packed codes).

    Returns the number of buckets holding NaN/Inf (0 when all is well; else ``out``
    is garbage).  ValueError for a bad layout or an l2 norm that overflows float32.
    """
    n = x.shape[0]
    b = check_layout(n, bucket, nlev, mode)
    if x.dtype != np.float32 or x.ndim != 1 or not x.flags.c_contiguous:
        raise TypeError("x must be a C-contiguous 1-D float32 array")
    need = payload_nbytes(n, bucket, nlev, mode)
    if out.dtype != np.uint8 or out.shape != (need,):
        raise ValueError(f"out must be {need} uint8 bytes, got {out.dtype} {out.shape}")
    if n == 0:
        return 0
    ns = n_scales(n, bucket, mode)
    scales = out[: 4 * ns].view(np.float32)
    codes = stream_views(out[4 * ns :])
    width, key, st, clip = code_width(nlev), np.uint64(key), bool(stochastic), float(clip)
    nb = n_buckets(n, bucket)
    if b <= PIECE:
        par, nblk = blocks(nb, n)
        bad = (_encode_par if par else _encode)(x, b, nlev, width, mode, clip, st, key, nblk,
                                                  scales, codes)
    else:
        par = use_parallel(n)
        stats = np.empty((nb * -(-b // PIECE), 4))
        (_stats_par if par else _stats)(x, b, mode, stats)
        bounds = np.empty((nb, 2))
        bad = _finish_stats(stats, n, b, mode, clip, scales, bounds)
        if not bad:
            (_quantize_pieces_par if par else _quantize_pieces)(x, b, nlev, width, st, key,
                                                                bounds, codes)
    if not bad and mode == L2 and np.isinf(scales).any():
        raise ValueError("the l2 norm of a bucket overflows float32; use smaller buckets or "
                         "linf scaling")
    return int(bad)


def dequantize(payload: np.ndarray, n: int, *, bucket: int, nlev: int, mode: int,
               out: np.ndarray | None = None, add: bool = False) -> np.ndarray:
    """Decode ``n`` float32 entries from a payload made by :func:`quantize`.

    Into ``out`` when given (a float32 vector of ``n``; with ``add``, the values are
    added to it, which saves a pass and a fresh array when averaging messages).
    ValueError if the payload has the wrong length, a scale that is not finite (or
    negative, or lo > hi), or a code above ``nlev - 1``.
    """
    b = check_layout(n, bucket, nlev, mode)
    need = payload_nbytes(n, bucket, nlev, mode)
    if payload.dtype != np.uint8 or payload.shape != (need,):
        raise ValueError(f"payload must be {need} uint8 bytes for n={n}, got {payload.shape}")
    out = np.empty(n, np.float32) if out is None else out
    if n == 0:
        return out
    ns = n_scales(n, bucket, mode)
    payload = np.ascontiguousarray(payload)
    scales = payload[: 4 * ns].view(np.float32)
    par, nblk = blocks(n_buckets(n, bucket) * -(-b // PIECE), n)
    bad_scales, bad_codes = (_decode_par if par else _decode)(
        scales, stream_views(payload[4 * ns :]), b, nlev, code_width(nlev), mode, nblk, out,
        bool(add))
    if bad_scales:
        raise ValueError(f"corrupted payload: {bad_scales} bucket scale(s) are not finite, "
                         f"negative or out of order")
    if bad_codes:
        raise ValueError(f"corrupted payload: {bad_codes} code(s) above the top level {nlev - 1}")
    return out
