"""EDEN's quantizer of a rotated vector: nearest Lloyd-Max centroid, one scale per rotation block.

Input: ``y``, the randomized-Hadamard rotation of a vector (length ``n``, a multiple of the
rotation block ``B = 2^k``).  Per block ``y_b`` the coordinates are scaled to unit variance,
``z = y sqrt(B) / ||y_b||``, and each is sent as the index of its nearest centroid ``q``
among the ``2^w`` Lloyd-Max centroids of the standard normal (symmetric, none at 0).  The
decoded block is ``S_b q``, with (EDEN, Vargaftik et al., ICML 2022)

* ``UNBIASED``: ``S_b = ||y_b||^2 / <y_b, q>``, so that ``<y_b, S_b q> = ||y_b||^2``;
* ``MSE``: ``S_b = <y_b, q> / ||q||^2``, the least-squares scale (biased).

Fractional bits: coordinates take two widths, ``hi = lo + 1`` bits for ``K`` of them and
``lo`` for the others.  With ``r`` a shared random offset, coordinate ``i`` has stream rank
``t = (i - r) mod n``: ``t < K`` is code ``t`` of the *hi* stream, otherwise code ``t - K``
of the *lo* stream.  The decoder re-derives ``r`` from the message's seed and step.

Codes: ``c = m + j`` for ``z >= 0`` and ``m - 1 - j`` for ``z < 0``, ``j`` the index of the
nearest of the ``m = 2^(w-1)`` positive centroids to ``|z|`` (so codes ascend with the
value; 0 goes to the smallest positive centroid).  Each stream is packed LSB-first as in
:mod:`hpcq.kernels.bitpack`.

Wire layout (payload): the float32 scales of the ``n / B`` blocks, then the hi stream
zero-padded to a multiple of 4 bytes (so the lo stream's word views are aligned), then the
lo stream zero-padded to a byte.

Arithmetic: block norms are deterministic float64 sums (:mod:`hpcq.kernels.sums`), ``z`` is
computed and compared in float64 (no overflow for tiny norms), ``<y, q>`` and ``||q||^2``
are float64 sums with fixed lanes and order (:func:`hpcq.kernels.sums.sum_id64`, per run of
at most ``BLOCK`` coordinates), so the bytes never depend on the machine or thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hpcq.kernels._config import EXACT, INLINE
from hpcq.kernels.bitpack import packed_nbytes
from hpcq.kernels.blockpack import BLOCK, pack_block, stream_views, unpack_block
from hpcq.kernels.sums import sum_id64, sum_sq64

UNBIASED, MSE = 0, 1
_U = np.uint64


def layout(n: int, block: int, bits: float) -> tuple[int, int, int]:
    """``(lo, hi, K)``: the two widths and the number of hi-width codes for ``n`` entries.

    ``lo = floor(bits)``, ``hi = lo + 1`` when ``bits`` has a fraction ``f`` (else ``hi = lo``),
    ``K = round(f n)`` (0 without a fraction).
    """
    if not 1.0 <= bits <= 8.0:
        raise ValueError(f"bits must be in [1, 8], got {bits}")
    if n < 0 or block < 1 or block & (block - 1) or (n and n % block):
        raise ValueError(f"n={n} must be a multiple of the power-of-two block {block}")
    lo = int(np.floor(bits))
    f = bits - lo
    if f == 0.0:
        return lo, lo, 0
    return lo, lo + 1, int(round(f * n))


def hi_nbytes(nhi: int, hi: int) -> int:
    """Bytes of the packed hi stream, padded to 4 so that the lo stream starts aligned."""
    return -(-packed_nbytes(nhi, hi) // 4) * 4


def payload_nbytes(n: int, block: int, bits: float) -> int:
    """Scales plus the two packed streams."""
    lo, hi, k = layout(n, block, bits)
    return 4 * (n // block) + hi_nbytes(k, hi) + packed_nbytes(n - k, lo)


#: The nearest-centroid search: a grid of ``GRID`` cells of width ``1 / GRID_SCALE`` on
#: ``[0, 8)`` holds at most one boundary each (the closest two, at 8 bits, are 0.0169 apart),
#: so ``j = below[g] + (a >= inside[g])``: two table reads and no unpredictable branch
#: (a binary search mispredicts about every other step: 4x slower at 4 bits).
GRID_SCALE = 256.0
GRID = 2048
#: Up to ``SMALL`` bits the search is ``j = #{boundaries <= |z|}`` by ``SMALL_BOUNDS``
#: compares instead (the same ``j``): LLVM does not vectorise table reads (gathers).
SMALL = 4
SMALL_BOUNDS = (1 << (SMALL - 1)) - 1  # 7: the kernel spells them out


@njit(**INLINE)
def _code(a, neg, below, inside, m):  # type: ignore[no-untyped-def]
    """(code, positive centroid index) of ``|z| = a`` (finite, >= 0)."""
    # an unsigned cell: numba then omits its negative-index test, so the loop vectorises
    g = min(np.uint64(a * GRID_SCALE), np.uint64(GRID - 1))
    j = below[g] + np.int64(a >= inside[g])
    return (m - 1 - j if neg else m + j), j


@njit(**EXACT)
def _encode_stream(y, k, inv, t0, cnt_all, r, width, search, cent, dots, qsq, buf, words,  # type: ignore[no-untyped-def]
                   prods, squares, codes):
    """Quantize the ``cnt_all`` coordinates of stream ranks ``t0 ..`` into the stream ``codes``,
    adding ``sum |y| q`` and ``sum q^2`` per block to ``dots``, ``qsq``.

    The products go through the buffers ``prods``, ``squares`` and are summed by
    :func:`hpcq.kernels.sums.sum_id64` (fixed lanes, fixed order): a sum in source order
    is one chain of dependent additions, which kept the loop scalar (1/3 of the speed).
    """
    n = y.shape[0]
    m = 1 << (width - 1)
    below, inside, bounds, steps = search
    # the small widths' boundaries and centroids in locals: read from arrays inside the
    # loop, LLVM reloads them (the stores to prods may alias) and does not vectorise
    t0_, t1_, t2_, t3_, t4_, t5_, t6_ = (bounds[0], bounds[1], bounds[2], bounds[3], bounds[4],
                                         bounds[5], bounds[6])
    c0, c1, c2, c3, c4, c5, c6, c7 = (steps[0], steps[1], steps[2], steps[3], steps[4],
                                      steps[5], steps[6], steps[7])
    for u0 in range(0, cnt_all, BLOCK):
        cnt = min(BLOCK, cnt_all - u0)
        u = 0
        i = (t0 + u0 + r) % n
        while u < cnt:  # runs contiguous in y and inside one block
            b = i >> k
            run = min(cnt - u, n - i, ((b + 1) << k) - i)
            s = inv[b]
            ys = y[i:i + run]  # slices: indices from 0, known >= 0 (no wraparound test)
            bs = buf[u:u + run]
            if width <= SMALL:  # compares with the boundaries: no table read, vectorises
                for j in range(run):
                    v = np.float64(ys[j])
                    a = abs(v) * s
                    q = c0
                    q = c1 if a >= t0_ else q
                    q = c2 if a >= t1_ else q
                    q = c3 if a >= t2_ else q
                    q = c4 if a >= t3_ else q
                    q = c5 if a >= t4_ else q
                    q = c6 if a >= t5_ else q
                    q = c7 if a >= t6_ else q
                    jj = (np.int64(a >= t0_) + np.int64(a >= t1_) + np.int64(a >= t2_)
                          + np.int64(a >= t3_) + np.int64(a >= t4_) + np.int64(a >= t5_)
                          + np.int64(a >= t6_))  # +inf pads never count
                    bs[j] = m - 1 - jj if v < 0 else m + jj
                    prods[j] = abs(v) * q
                    squares[j] = q * q
            else:
                for j in range(run):
                    v = np.float64(ys[j])
                    c, jj = _code(abs(v) * s, v < 0, below, inside, m)
                    bs[j] = c
                    q = cent[jj]
                    prods[j] = abs(v) * q
                    squares[j] = q * q
            dots[b] += sum_id64(prods, 0, run)
            qsq[b] += sum_id64(squares, 0, run)
            u += run
            i += run
            if i == n:
                i = 0
        pack_block(buf, words, cnt, codes, _U(u0 >> 3), width)


@njit(**EXACT)
def _block_norms(y, k, norms, inv):  # type: ignore[no-untyped-def]
    """``||y_b||^2`` and ``sqrt(B) / ||y_b||`` (0 for a zero block) per block; the number of
    blocks whose norm is not finite."""
    bsz = 1 << k
    bad = 0
    for b in range(norms.shape[0]):
        s = sum_sq64(y, b << k, bsz)
        if not np.isfinite(s):
            bad += 1
        norms[b] = s
        inv[b] = np.sqrt(bsz / s) if s > 0 else 0.0
    return bad


@njit(**EXACT)
def _encode(y, k, r, lo, hi, nhi, grid_lo, cent_lo, grid_hi, cent_hi, mode, scales,  # type: ignore[no-untyped-def]
            codes_hi, codes_lo):
    """Whole encode; returns the number of blocks whose norm is not finite (then stops)."""
    n = y.shape[0]
    nb = n >> k
    norms = np.empty(nb)
    inv = np.empty(nb)
    bad = _block_norms(y, k, norms, inv)
    if bad:
        return bad
    dots = np.zeros(nb)
    qsq = np.zeros(nb)
    buf = np.empty(BLOCK, np.uint8)
    words = buf.view(np.uint64)
    prods = np.empty(BLOCK)
    squares = np.empty(BLOCK)
    if nhi:
        _encode_stream(y, k, inv, 0, nhi, r, hi, grid_hi, cent_hi, dots, qsq,
                       buf, words, prods, squares, codes_hi)
    if n - nhi:
        _encode_stream(y, k, inv, nhi, n - nhi, r, lo, grid_lo, cent_lo, dots,
                       qsq, buf, words, prods, squares, codes_lo)
    for b in range(nb):
        if norms[b] == 0.0:
            scales[b] = 0.0
        elif mode == UNBIASED:
            scales[b] = np.float32(norms[b] / dots[b])
        else:
            scales[b] = np.float32(dots[b] / qsq[b])
    return 0


@njit(**EXACT)
def _decode_stream(scales, k, t0, cnt_all, r, width, table, codes, buf, words, out, add):  # type: ignore[no-untyped-def]
    n = out.shape[0]
    for u0 in range(0, cnt_all, BLOCK):
        cnt = min(BLOCK, cnt_all - u0)
        unpack_block(codes, _U(u0 >> 3), cnt, width, buf, words)
        u = 0
        i = (t0 + u0 + r) % n
        while u < cnt:
            b = i >> k
            run = min(cnt - u, n - i, ((b + 1) << k) - i)
            s = scales[b]
            if add:
                for j in range(run):
                    out[i + j] += s * table[buf[u + j]]
            else:
                for j in range(run):
                    out[i + j] = s * table[buf[u + j]]
            u += run
            i += run
            if i == n:
                i = 0


@njit(**EXACT)
def _decode(scales, k, r, lo, hi, nhi, table_lo, table_hi, codes_hi, codes_lo, out, add):  # type: ignore[no-untyped-def]
    """Whole decode; returns the number of negative or non-finite scales (then writes nothing)."""
    bad = 0
    for b in range(scales.shape[0]):
        if not (np.isfinite(scales[b]) and scales[b] >= 0):
            bad += 1
    if bad:
        return bad
    n = out.shape[0]
    buf = np.empty(BLOCK, np.uint8)
    words = buf.view(np.uint64)
    if nhi:
        _decode_stream(scales, k, 0, nhi, r, hi, table_hi, codes_hi, buf, words, out, add)
    if n - nhi:
        _decode_stream(scales, k, nhi, n - nhi, r, lo, table_lo, codes_lo, buf, words, out, add)
    return 0


# ------------------------------------------------------------------ public wrappers
def _tables(centroids: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], np.ndarray]:  # noqa: E501
    """(positive centroids, the search (grid: boundaries below each cell's start, the
    boundary inside it or +inf; small widths: boundaries and centroids padded to
    ``SMALL_BOUNDS``), float32 value of each code)."""
    c = np.ascontiguousarray(centroids, dtype=np.float64)
    m = c.shape[0]
    if m < 1 or m & (m - 1) or np.any(np.diff(c) <= 0) or c[0] <= 0:
        raise ValueError("centroids must be 2^(w-1) increasing positive values")
    bounds = (c[:-1] + c[1:]) / 2
    starts = np.arange(GRID) / GRID_SCALE
    below = np.searchsorted(bounds, starts, side="left").astype(np.int64)  # bounds < start
    cells = np.floor(bounds * GRID_SCALE).astype(np.int64)
    if np.any(np.diff(cells) == 0) or (m > 1 and cells[-1] >= GRID - 1):
        raise ValueError("centroids too close or too large for the search grid")
    inside = np.full(GRID, np.inf)
    inside[cells] = bounds
    table = np.concatenate((-c[::-1], c)).astype(np.float32)
    padded = np.full(SMALL_BOUNDS, np.inf)  # the small widths' boundaries, +inf after them
    steps = np.full(SMALL_BOUNDS + 1, c[-1])  # and centroids (the padding never selected)
    if m <= SMALL_BOUNDS + 1:
        padded[:m - 1] = bounds
        steps[:m] = c
    return c, (below, inside, padded, steps), table


def _split(payload: np.ndarray, n: int, block: int, bits: float) -> tuple[int, int, int, int, np.ndarray, np.ndarray, np.ndarray]:  # noqa: E501
    lo, hi, nhi = layout(n, block, bits)
    need = payload_nbytes(n, block, bits)
    if payload.dtype != np.uint8 or payload.shape != (need,):
        raise ValueError(f"payload must be {need} uint8 bytes for n={n}, got {payload.dtype} "
                         f"{payload.shape}")
    sb = 4 * (n // block)
    ph = hi_nbytes(nhi, hi)
    return lo, hi, nhi, sb, payload[:sb], payload[sb:sb + ph], payload[sb + ph:]


def encode(y: np.ndarray, out: np.ndarray, *, block: int, bits: float, offset: int,
           centroids_lo: np.ndarray, centroids_hi: np.ndarray, mode: int) -> int:
    """Quantize the rotated float32 ``y`` into ``out`` (:func:`payload_nbytes` bytes).

    ``offset`` is the shared ``r`` (any integer, taken mod n); ``centroids_*`` the
    ``2^(w-1)`` positive Lloyd-Max centroids of each width.  Returns the number of blocks
    holding NaN/Inf (0 when encoded).
    """
    if not isinstance(y, np.ndarray) or y.dtype != np.float32 or y.ndim != 1 \
            or not y.flags.c_contiguous:
        raise TypeError("y must be a C-contiguous 1-D float32 array")
    n = y.shape[0]
    if mode not in (UNBIASED, MSE):
        raise ValueError(f"unknown EDEN scale mode {mode}")
    if not isinstance(out, np.ndarray) or not out.flags.writeable or not out.flags.c_contiguous:
        raise ValueError("out must be a writeable C-contiguous uint8 array")
    lo, hi, nhi, _, scales, chi, clo = _split(out, n, block, bits)
    c_lo, b_lo, _ = _tables(centroids_lo)
    c_hi, b_hi, _ = _tables(centroids_hi)
    if c_lo.shape[0] != 1 << (lo - 1) or c_hi.shape[0] != 1 << (hi - 1):
        raise ValueError(f"centroids must hold 2^(w-1) values for widths {lo} and {hi}")
    if n == 0:
        return 0
    k = block.bit_length() - 1
    bad = _encode(y, k, int(offset) % n, lo, hi, nhi, b_lo, c_lo, b_hi, c_hi, mode,
                  scales.view(np.float32), stream_views(chi), stream_views(clo))
    return int(bad)


def decode(payload: np.ndarray, n: int, *, block: int, bits: float, offset: int,
           centroids_lo: np.ndarray, centroids_hi: np.ndarray,
           out: np.ndarray | None = None, add: bool = False) -> np.ndarray:
    """Decode ``n`` rotated entries ``S_b q`` (into ``out``, or added to it with ``add``).

    ValueError for a negative or non-finite scale.
    """
    lo, hi, nhi, _, scales, chi, clo = _split(payload, n, block, bits)
    if out is None:
        out = np.empty(n, np.float32)
    elif out.dtype != np.float32 or out.shape != (n,) or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 vector of {n}")
    if n == 0:
        return out
    _, _, t_lo = _tables(centroids_lo)
    _, _, t_hi = _tables(centroids_hi)
    scales = np.ascontiguousarray(scales).view(np.float32)
    k = block.bit_length() - 1
    bad = _decode(scales, k, int(offset) % n, lo, hi, nhi, t_lo, t_hi,
                  stream_views(np.ascontiguousarray(chi)), stream_views(np.ascontiguousarray(clo)),
                  out, bool(add))
    if bad:
        raise ValueError(f"corrupted payload: {bad} block scale(s) are negative or not finite")
    return out
