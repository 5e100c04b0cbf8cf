"""vqSGD vector quantizers: sample points of a polytope whose convex hull holds the unit ball.

``v = g / ||g||`` (l2, or l1 as in the authors' code) is written as a convex
combination ``sum_j a_j c_j`` of the points; ``s`` indices drawn i.i.d. from
``a`` are sent with the norm, and ``ghat = ||g|| (1/s) sum_k c_{J_k}`` is unbiased.

Point sets (n = vector length)
------------------------------
cross     ``c_{2i} = +sqrt(n) e_i``, ``c_{2i+1} = -sqrt(n) e_i`` (N = 2n), weights
          ``max(+-v_i, 0)/sqrt(n) + gamma/(2n)``, ``gamma = 1 - ||v||_1/sqrt(n)``.
simplex   regular simplex, centroid 0, circumradius n (N = n + 1).  Start from
          ``e_0..e_{n-1}`` and ``t 1`` with ``t = (1 - sqrt(n+1))/n`` (all pairwise
          distances sqrt 2), subtract the centroid ``c 1``, ``c = (1 + t)/(n+1)``,
          and scale by ``S = sqrt(n(n+1))`` (the edge-sqrt2 simplex has circumradius
          sqrt(n/(n+1))): ``p_j = S (e_j - c 1)`` for j < n, ``p_n = S (t - c) 1``.
          Each vertex costs O(n), and with ``Sv = sum(v)`` all inner products are
          ``<v, p_j> = S (v_j - c Sv)``, ``<v, p_n> = S (t - c) Sv``: O(n) in total.
          Weights ``a_j = 1/(n+1) + <v, p_j>/(n(n+1))`` (>= 0 since |<v,p_j>| <= n).
hadamard  ``+-h_i``, rows of the D x D Sylvester matrix (D = n padded to a power
          of two; N = 2D; ``h_i[m] = (-1)^popcount(i & m)``): a rotated cross-polytope.
          The encoder runs the cross scheme on ``y = H g / sqrt(D)`` (orthonormal
          FWHT of the zero-padded g; same norm), the decoder sums the +-rows
          directly; entries beyond n are dropped.

Sampling: per chunk of :data:`CHUNK` entries the kernel keeps weight totals
(from the one statistics pass), picks a chunk by ``u * total`` with a 53-bit
uniform ``u = bits64(key, k)``, then rescans only that chunk.  The chunking is
fixed, so the indices never depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from hpcq.kernels._config import EXACT, INLINE, twins, use_parallel
from hpcq.kernels.rng import bits64
from hpcq.kernels.sparsify import get_wide, index_width, put

CHUNK = 4096
POINTS = ("cross", "simplex", "hadamard")
_INV53 = 1.0 / (1 << 53)


def n_points(points: str, n: int) -> int:
    """Number of points N of the set for a vector of length ``n``."""
    if n == 0:
        return 0
    if points == "simplex":
        return n + 1
    return 2 * (n if points == "cross" else 1 << (n - 1).bit_length())


def simplex_constants(n: int) -> tuple[float, float, float]:
    """``(S, c, t)`` of the simplex construction in the module docstring."""
    t = (1.0 - np.sqrt(n + 1.0)) / n
    return float(np.sqrt(n * (n + 1.0))), (1.0 + t) / (n + 1.0), float(t)


def _stats_body(g, size, sums):  # type: ignore[no-untyped-def]
    """Per chunk: sum g^2, sum |g|, sum g in float64, in a fixed order (4 partial sums)."""
    n = g.shape[0]
    for c in prange(sums.shape[0]):
        gs = g[np.int64(c) * size:min(n, (np.int64(c) + 1) * size)]  # from 0: no wraparound
        m = gs.shape[0]
        q0 = q1 = q2 = q3 = a0 = a1 = a2 = a3 = s0 = s1 = s2 = s3 = 0.0
        i = 0
        while i + 4 <= m:
            v0, v1 = np.float64(gs[i]), np.float64(gs[i + 1])
            v2, v3 = np.float64(gs[i + 2]), np.float64(gs[i + 3])
            q0, q1, q2, q3 = q0 + v0 * v0, q1 + v1 * v1, q2 + v2 * v2, q3 + v3 * v3
            a0, a1, a2, a3 = a0 + abs(v0), a1 + abs(v1), a2 + abs(v2), a3 + abs(v3)
            s0, s1, s2, s3 = s0 + v0, s1 + v1, s2 + v2, s3 + v3
            i += 4
        while i < m:
            v0 = np.float64(gs[i])
            q0, a0, s0 = q0 + v0 * v0, a0 + abs(v0), s0 + v0
            i += 1
        sums[c, 0] = (q0 + q1) + (q2 + q3)
        sums[c, 1] = (a0 + a1) + (a2 + a3)
        sums[c, 2] = (s0 + s1) + (s2 + s3)


_stats, _stats_par = twins(_stats_body)


@njit(**INLINE)
def _weight(g, mode, a, b, i, neg):  # type: ignore[no-untyped-def]
    v = np.float64(g[i])
    if mode == 0:  # cross: point sign neg
        return max(-v if neg else v, 0.0) * a + b
    return max(v * a + b, 0.0)  # simplex vertex i


@njit(**EXACT)
def _sample(g, mode, a, b, size, chunk_cum, key, s, width, out):  # type: ignore[no-untyped-def]
    """Draw ``s`` point indices and pack them (``width`` bits each) into ``out``."""
    n = g.shape[0]
    nch = chunk_cum.shape[0] - 1
    npt = 2 if mode == 0 else 1
    acc = sh = np.uint64(0)
    pos = 0
    for k in range(s):
        t = np.float64(bits64(key, k) >> np.uint64(11)) * _INV53 * chunk_cum[nch]
        c = min(np.searchsorted(chunk_cum, t, side="right") - 1, nch - 1)
        while chunk_cum[c + 1] <= chunk_cum[c]:  # rounding landed on an empty chunk
            c -= 1
        frac = (t - chunk_cum[c]) / (chunk_cum[c + 1] - chunk_cum[c])
        lo, hi = c * size, min(n, (c + 1) * size)
        if lo >= n:  # the simplex's last vertex is a chunk of its own
            j = n
        else:
            tot = 0.0
            for i in range(lo, hi):
                for q in range(npt):
                    tot += _weight(g, mode, a, b, i, q)
            r = frac * tot
            cum = 0.0
            j = -1
            for i in range(lo, hi):
                for q in range(npt):
                    w = _weight(g, mode, a, b, i, q)
                    if w > 0.0:
                        cum += w
                        j = npt * i + q
                        if cum > r:
                            break
                if cum > r:
                    break
        pos, acc, sh = put(out, pos, acc, sh, j, width)
    if sh > 0:
        out[pos] = np.uint8(acc & np.uint64(0xFF))


@njit(**EXACT)
def _read_sorted(buf, s, width, npts, codes):  # type: ignore[no-untyped-def]
    """Unpack ``s`` codes into ``codes`` sorted; return how many are >= npts."""
    bad = 0
    for k in range(s):
        codes[k] = get_wide(buf, k, width)
        if codes[k] >= npts:
            bad += 1
    codes.sort()
    return bad


@njit(**EXACT)
def _decode_cross(codes, scale, out):  # type: ignore[no-untyped-def]
    k, s = 0, codes.shape[0]
    while k < s:
        i = codes[k] >> 1
        cnt = 0
        while k < s and codes[k] >> 1 == i:
            cnt += -1 if codes[k] & 1 else 1
            k += 1
        out[i] = np.float32(cnt * scale)


@njit(**EXACT)
def _decode_simplex(codes, scale, s_const, c_const, t_const, out):  # type: ignore[no-untyped-def]
    n, s = out.shape[0], codes.shape[0]
    m_last = 0
    for k in range(s):
        m_last += codes[k] == n
    base = m_last * t_const - s * c_const
    out[:] = np.float32(scale * s_const * base)
    k = 0
    while k < s and codes[k] < n:
        i = codes[k]
        cnt = 0
        while k < s and codes[k] == i:
            cnt += 1
            k += 1
        out[i] = np.float32(scale * s_const * (cnt + base))


def _decode_had_body(codes, scale, out):  # type: ignore[no-untyped-def]
    for mi in prange(out.shape[0]):
        m = np.int64(mi)
        acc = 0
        for k in range(codes.shape[0]):
            p = (codes[k] >> 1) & m
            p ^= p >> 16
            p ^= p >> 8
            p ^= p >> 4
            p ^= p >> 2
            p ^= p >> 1
            acc += 1 - 2 * ((p ^ codes[k]) & 1)
        out[m] = np.float32(acc * scale)


_decode_had, _decode_had_par = twins(_decode_had_body)


def _chunk_stats(y: np.ndarray) -> np.ndarray:
    sums = np.empty((-(-y.shape[0] // CHUNK), 3))
    (_stats_par if use_parallel(y.shape[0]) else _stats)(y, CHUNK, sums)
    return sums


def _lens(nchunks: int, n: int) -> np.ndarray:
    return np.diff(np.minimum(np.arange(nchunks + 1) * CHUNK, n)).astype(np.float64)


def vq_encode(g: np.ndarray, points: str, reps: int, l1: bool, key: np.uint64
              ) -> tuple[float, np.ndarray, bool]:
    """``(norm, packed indices, nonfinite)``: ``reps`` draws of ``points`` for float32 ``g``.

    ``norm`` is float32-representable (the decoder's scale); indices take
    ``index_width(n_points)`` bits each.  A zero vector gives norm 0 and index 0s.
    """
    if g.dtype != np.float32 or g.ndim != 1 or not g.flags.c_contiguous:
        raise TypeError("g must be a C-contiguous 1-D float32 array")
    if points not in POINTS or reps < 1:
        raise ValueError(f"points must be one of {POINTS} and reps >= 1")
    n = g.shape[0]
    npts = n_points(points, n)
    width = index_width(npts)
    out = np.zeros((reps * width + 7) // 8 if n else 0, np.uint8)
    sums = _chunk_stats(g)
    tot = sums.sum(axis=0) if n else np.zeros(3)
    if not np.isfinite(tot[0]):
        return 0.0, out, True
    norm64 = tot[1] if l1 else np.sqrt(tot[0])
    if norm64 > np.finfo(np.float32).max:
        raise ValueError(f"vqsgd: the norm of x ({norm64:.4g}) overflows float32")
    norm = np.float32(norm64)
    if norm == 0:
        return 0.0, out, False
    nf = float(norm)
    if points == "simplex":
        s_c, c_c, t_c = simplex_constants(n)
        a = s_c / (nf * n * (n + 1))
        b = 1.0 / (n + 1) - a * c_c * tot[2]
        tail = max(1.0 / (n + 1) + a * (t_c - c_c) * tot[2], 0.0)
        cw = np.append(np.maximum(a * sums[:, 2] + b * _lens(sums.shape[0], n), 0.0), tail)
        mode, y = 1, g
    else:
        y = g
        if points == "hadamard":
            from hpcq.kernels import hadamard

            y = np.zeros(npts // 2, np.float32)
            y[:n] = g
            hadamard.fwht(y)
            sums = _chunk_stats(y)
        dim = y.shape[0]
        a = 1.0 / (nf * np.sqrt(dim))
        b = max(1.0 - sums[:, 1].sum() * a, 0.0) / (2.0 * dim)
        cw = sums[:, 1] * a + 2.0 * b * _lens(sums.shape[0], dim)
        mode = 0
    chunk_cum = np.concatenate(([0.0], np.cumsum(cw)))
    _sample(y, mode, a, b, CHUNK, chunk_cum, np.uint64(key), reps, width, out)
    return nf, out, False


def vq_decode(norm: float, buf: np.ndarray, points: str, reps: int, n: int) -> np.ndarray:
    """``norm (1/reps) sum_k c_{J_k}`` as float32[n]; ValueError on a bad norm or index."""
    if points not in POINTS or reps < 1 or n < 0:
        raise ValueError(f"points must be one of {POINTS}, reps >= 1 and n >= 0")
    if not (np.isfinite(norm) and norm >= 0):
        raise ValueError(f"corrupted message: vqsgd norm {norm} is not finite and >= 0")
    out = np.zeros(n, np.float32)
    if n == 0:
        return out
    npts = n_points(points, n)
    width = index_width(npts)
    if buf.dtype != np.uint8 or buf.shape[0] * 8 < reps * width:
        raise ValueError(f"index stream too short for {reps} indices of {width} bits")
    codes = np.empty(reps, np.int64)
    bad = _read_sorted(buf, reps, width, npts, codes)
    if bad:
        raise ValueError(f"corrupted message: {bad} of {reps} vqsgd indices are >= {npts}")
    if norm == 0:
        return out
    if points == "cross":
        _decode_cross(codes, norm * np.sqrt(n) / reps, out)
    elif points == "simplex":
        _decode_simplex(codes, norm / reps, *simplex_constants(n), out)
    else:
        (_decode_had_par if use_parallel(n * reps) else _decode_had)(codes, norm / reps, out)
    return out
