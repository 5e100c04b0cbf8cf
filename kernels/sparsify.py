"""Sparsifiers: top-k selection in O(d), random-k packing, and sparse decoding.

Top-k by radix selection on float bit patterns
----------------------------------------------
For float32, ``|x|`` orders like its bit pattern with the sign cleared, read as
uint32; NaN/Inf patterns are the largest (>= 0x7F800000).  Pass 1 builds a
histogram of the top 11 bits (bins 2040..2047 count NaN/Inf) and the max
pattern; bin ``B`` is where the count from the top reaches ``k``.  Pass 2
lists, in index order, the indices of all entries above ``B`` (all kept) and
the (index, pattern) of the entries in ``B`` (the candidates).  Two 10-bit
histograms over the candidates give the exact threshold pattern ``T``; the
emit step merges both lists in index order, keeping candidates above ``T`` and
the first ``ties`` equal to ``T`` (ties go to the lower index), and writes the
indices and values straight into the payload.  Two reads of ``x``, no sort.
Pass 1 and 2 run over chunks (in parallel above the threshold); each chunk
writes its own slice of the lists, so the output does not depend on chunking.

Random-k subsets come from :mod:`hpcq.kernels.subset`.  Index and value-code
streams use :mod:`hpcq.kernels.bitpack`'s LSB-first order.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from hpcq.kernels._config import EXACT, INLINE, twins, use_parallel
from hpcq.kernels.bitpack import get_code
from hpcq.kernels.rng import uniform24
from hpcq.kernels.subset import bitmap_indices

_U8 = np.uint64(8)
_FF = np.uint64(0xFF)
_ABS = np.uint32(0x7FFFFFFF)
_S20 = np.uint32(20)
NONFINITE_BIN = 0x7F8  # histogram bins >= this hold NaN/Inf
_CHUNK = 1 << 16  # parallel chunk of the top-k passes


def index_width(n: int) -> int:
    """Bits per index into a vector of length ``n``: ceil(log2 n), at least 1."""
    return max(1, (int(n) - 1).bit_length())


@njit(**INLINE)
def get_wide(buf, i, width):  # type: ignore[no-untyped-def]
    """Code ``i`` of ``width`` (<= 32) bits; never reads past ``len(buf)``."""
    bit = i * width
    b = bit >> 3
    s = np.uint64(bit & 7)
    v = np.uint64(0)
    nb = buf.shape[0]
    for j in range((int(s) + width + 7) >> 3):
        if b + j < nb:
            v |= np.uint64(buf[b + j]) << np.uint64(8 * j)
    return (v >> s) & np.uint64((1 << width) - 1)


@njit(**INLINE)
def qcode(v, m, inv_step, levels, u):  # type: ignore[no-untyped-def]
    """Stochastic code of ``v`` on the grid -m + c * 2m/levels, c = 0..levels (unbiased)."""
    if m == 0.0:
        return 0
    t = (np.float64(v) + m) * inv_step
    c = int(np.floor(t))
    if c >= levels:
        return levels
    if c < 0:
        return 0
    return c + 1 if u < t - c else c


def _hist_body(xb, nchunks, hist, maxb):  # type: ignore[no-untyped-def]
    n = xb.shape[0]
    size = (n + nchunks - 1) // nchunks
    for c in prange(nchunks):
        mb = np.uint32(0)
        xs = xb[c * size:min(n, (c + 1) * size)]  # a view indexed from 0: no wraparound checks
        for i in range(xs.shape[0]):
            a = xs[i] & _ABS
            hist[c, a >> _S20] += 1
            mb = max(mb, a)
        maxb[c] = mb


def _collect_body(xb, nchunks, bin_b, above_off, cand_off, above, cand_idx, cand_bits):  # type: ignore[no-untyped-def]
    n = xb.shape[0]
    size = (n + nchunks - 1) // nchunks
    lo_bits = np.uint32(bin_b) << _S20
    hi_bits = np.uint32(bin_b + 1) << _S20
    for c in prange(nchunks):
        pa = above_off[c]
        pc = cand_off[c]
        lo = c * size
        xs = xb[lo:min(n, lo + size)]
        for i in range(xs.shape[0]):
            a = xs[i] & _ABS
            if a >= lo_bits:
                if a >= hi_bits:
                    above[pa] = lo + i
                    pa += 1
                else:
                    cand_idx[pc] = lo + i
                    cand_bits[pc] = a
                    pc += 1


def _nonfinite_body(x):  # type: ignore[no-untyped-def]
    n = x.shape[0]
    bad = 0
    for c in prange((n + _CHUNK - 1) // _CHUNK):
        xs = x[c * _CHUNK:min(n, (c + 1) * _CHUNK)]
        for i in range(xs.shape[0]):
            bad += not abs(xs[i]) <= np.float32(3.4028235e38)
    return bad


_hist, _hist_par = twins(_hist_body)
_collect, _collect_par = twins(_collect_body)
_nonfinite, _nonfinite_par = twins(_nonfinite_body)


@njit(**EXACT)
def _select(cand_bits, need):  # type: ignore[no-untyped-def]
    """(T, ties): exactly ``need`` candidates are > T or among the first ``ties`` equal to T."""
    prefix = cand_bits[0] & np.uint32(0xFFF00000)
    for level in range(2):
        sh = np.uint32(10 - 10 * level)
        hi_mask = np.uint32(0xFFFFFFFF) << np.uint32(sh + 10)
        h = np.zeros(1024, dtype=np.int64)
        for b in cand_bits:
            if (b & hi_mask) == prefix:
                h[(b >> sh) & np.uint32(1023)] += 1
        acc = 0
        j = 1023
        while acc + h[j] < need:
            acc += h[j]
            j -= 1
        need -= acc
        prefix |= np.uint32(j) << sh
    return prefix, need


@njit(**INLINE)
def put(buf, pos, acc, sh, code, width):  # type: ignore[no-untyped-def]
    """Append ``code`` (``width`` bits) to the LSB-first stream state (pos, acc, sh)."""
    acc |= np.uint64(code) << sh
    sh += np.uint64(width)
    while sh >= _U8:
        buf[pos] = np.uint8(acc & _FF)
        pos += 1
        acc >>= _U8
        sh -= _U8
    return pos, acc, sh


@njit(**EXACT)
def _emit(x, above, cand_idx, cand_bits, t_bits, ties, width, idx_out, vals, codes, bits,
          m, key):  # type: ignore[no-untyped-def]
    """Merge the lists in index order into packed indices (unless ``idx_out`` is empty) and
    fp32 values or b-bit codes."""
    na, nc = above.shape[0], cand_idx.shape[0]
    levels = (1 << bits) - 1
    inv_step = levels / (2.0 * m) if m > 0 else 0.0
    acc = acc2 = sh = sh2 = np.uint64(0)
    pos = pos2 = ia = ic = j = 0
    while ia < na or ic < nc:
        if ic >= nc or (ia < na and above[ia] < cand_idx[ic]):
            i = above[ia]
            ia += 1
        else:
            i = cand_idx[ic]
            b = cand_bits[ic]
            ic += 1
            if b < t_bits or (b == t_bits and ties == 0):
                continue
            if b == t_bits:
                ties -= 1
        if idx_out.shape[0]:
            pos, acc, sh = put(idx_out, pos, acc, sh, i, width)
        if bits == 0:
            vals[j] = x[i]
        else:
            c = qcode(x[i], m, inv_step, levels, uniform24(key, i))
            pos2, acc2, sh2 = put(codes, pos2, acc2, sh2, c, bits)
        j += 1
    if sh > 0:
        idx_out[pos] = np.uint8(acc & _FF)
    if sh2 > 0:
        codes[pos2] = np.uint8(acc2 & _FF)


@njit(**INLINE)
def _value(j, vals, codes, bits, m, step, mult):  # type: ignore[no-untyped-def]
    if bits == 0:
        return np.float32(vals[j] * mult)
    return np.float32((-m + np.float64(get_code(codes, j, bits)) * step) * mult)


def _scatter_stream_body(idx_buf, width, k, vals, codes, bits, m, mult, out):  # type: ignore[no-untyped-def]
    """out[idx_j] += value_j for packed indices (into zeros: a plain decode); return the
    number of invalid entries."""
    n = out.shape[0]
    step = 2.0 * m / ((1 << bits) - 1) if bits else 0.0
    bad = 0
    for g in prange((k + 7) // 8):
        prev = np.int64(get_wide(idx_buf, 8 * g - 1, width)) if g else np.int64(-1)
        for j in range(8 * g, min(k, 8 * g + 8)):
            i = np.int64(get_wide(idx_buf, j, width))
            v = _value(j, vals, codes, bits, m, step, mult)
            if i <= prev or i >= n or not abs(v) <= np.float32(3.4028235e38):
                bad += 1
            else:
                out[i] += v
            prev = i
    return bad


_scatter_stream, _scatter_stream_par = twins(_scatter_stream_body)


@njit(**EXACT)
def _scatter_idx(idx, vals, codes, bits, m, mult, out):  # type: ignore[no-untyped-def]
    step = 2.0 * m / ((1 << bits) - 1) if bits else 0.0
    bad = 0
    for j in range(idx.shape[0]):
        v = _value(j, vals, codes, bits, m, step, mult)
        if idx[j] >= out.shape[0] or not abs(v) <= np.float32(3.4028235e38):
            bad += 1
        else:
            out[idx[j]] += v
    return bad


# ----------------------------------------------------------------- public wrappers
def _check_vec(x: np.ndarray) -> None:
    if x.dtype != np.float32 or x.ndim != 1 or not x.flags.c_contiguous:
        raise TypeError("x must be a C-contiguous 1-D float32 array")


def _value_arrays(k: int, bits: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 <= bits <= 8:
        raise ValueError(f"value bits must be 0 (fp32) or 1..8, got {bits}")
    if bits:
        return np.empty(0, np.float32), np.empty((k * bits + 7) // 8, np.uint8)
    return np.empty(k, np.float32), np.empty(0, np.uint8)


def topk_encode(x: np.ndarray, k: int, bits: int, key: np.uint64
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int]:
    """Top-k of ``|x|`` (ties to the lower index) in index order.

    Returns ``(packed indices, fp32 values, packed b-bit value codes, m, nonfinite)``:
    values when ``bits == 0``, else codes on [-m, m] with m = max |x| (stochastic
    rounding by ``uniform24(key, index)``).  ``nonfinite > 0`` means NaN/Inf in x
    (nothing else is then meaningful).
    """
    _check_vec(x)
    n = x.shape[0]
    if not 0 <= k <= n:
        raise ValueError(f"k must be in 0..{n}, got {k}")
    width = index_width(n)
    vals, codes = _value_arrays(k, bits)
    idx_out = np.empty((k * width + 7) // 8, np.uint8)
    par = use_parallel(n)
    nchunks = max(1, -(-n // _CHUNK)) if par else 1
    xb = x.view(np.uint32)
    hist = np.zeros((nchunks, 2048), np.int64)
    maxb = np.zeros(nchunks, np.uint32)
    (_hist_par if par else _hist)(xb, nchunks, hist, maxb)
    tot = hist.sum(axis=0)
    bad = int(tot[NONFINITE_BIN:].sum())
    m = float(maxb.max().view(np.float32)) if n else 0.0
    if bad or k == 0:
        return idx_out, vals, codes, m, bad
    cum = np.cumsum(tot[::-1])
    bin_b = 2047 - int(np.searchsorted(cum, k))
    above_c = hist[:, bin_b + 1:].sum(axis=1)
    cand_c = hist[:, bin_b]
    above_off = np.concatenate(([0], np.cumsum(above_c)[:-1]))
    cand_off = np.concatenate(([0], np.cumsum(cand_c)[:-1]))
    n_above = int(above_c.sum())
    above = np.empty(n_above, np.int64)
    cand_idx = np.empty(int(cand_c.sum()), np.int64)
    cand_bits = np.empty(cand_idx.shape[0], np.uint32)
    (_collect_par if par else _collect)(xb, nchunks, bin_b, above_off, cand_off, above,
                                        cand_idx, cand_bits)
    t_bits, ties = _select(cand_bits, k - n_above)
    _emit(x, above, cand_idx, cand_bits, t_bits, ties, width, idx_out, vals, codes, bits, m,
          np.uint64(key))
    return idx_out, vals, codes, m, 0


def randk_encode(x: np.ndarray, bitmap: np.ndarray, k: int, bits: int, send_idx: bool,
                 key: np.uint64) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, int]:
    """The entries of ``x`` marked in ``bitmap`` (k of them), in index order.

    Same returns as :func:`topk_encode` (indices packed only when ``send_idx``;
    m = max |selected|).  The whole of x is checked for NaN/Inf.
    """
    _check_vec(x)
    n = x.shape[0]
    if bitmap.dtype != np.uint64 or bitmap.shape != ((n + 63) // 64,):
        raise ValueError(f"bitmap must be {(n + 63) // 64} uint64 words")
    width = index_width(n)
    vals, codes = _value_arrays(k, bits)
    idx_out = np.empty((k * width + 7) // 8 if send_idx else 0, np.uint8)
    bad = int((_nonfinite_par if use_parallel(n) else _nonfinite)(x))
    if bad:
        return idx_out, vals, codes, 0.0, bad
    idx = bitmap_indices(bitmap, k)
    m = float(np.abs(x[idx]).max()) if k and bits else 0.0
    empty = np.empty(0, np.int64)
    _emit(x, idx, empty, empty.view(np.uint32), np.uint32(0), 0, width, idx_out, vals, codes,
          bits, m, np.uint64(key))
    return idx_out, vals, codes, m, 0


def sparse_decode(n: int, k: int, vals: np.ndarray, codes: np.ndarray, bits: int, m: float,
                  mult: float, idx_buf: np.ndarray | None = None,
                  bitmap: np.ndarray | None = None, out: np.ndarray | None = None,
                  add: bool = False) -> np.ndarray:
    """float32[n], zero except value_j * mult at index j (from ``idx_buf`` or ``bitmap``).

    Values are fp32 ``vals`` (bits == 0) or b-bit ``codes`` on [-m, m].  Into
    ``out`` when given; with ``add`` the k values are added to it, an O(k) decode
    instead of O(n) when averaging messages.  Raises ValueError for indices that
    are >= n or not strictly increasing, and for non-finite values or scales.
    """
    if not (np.isfinite(m) and m >= 0):
        raise ValueError(f"corrupted message: value scale {m} is not a finite number >= 0")
    _value_arrays(0, bits)
    if (vals.shape[0] if bits == 0 else (codes.shape[0] * 8) // bits) < k:
        raise ValueError(f"too few values for {k} entries")
    if out is None:
        out = np.zeros(n, np.float32)
    elif not add:
        out[:] = 0.0
    if bitmap is not None:
        bad = _scatter_idx(bitmap_indices(bitmap, k), vals, codes, bits, m, mult, out)
    elif idx_buf is None:
        raise ValueError("give the indices as idx_buf or bitmap")
    else:
        width = index_width(n)
        if idx_buf.shape[0] * 8 < k * width:
            raise ValueError(f"index stream too short for {k} indices of {width} bits")
        bad = (_scatter_stream_par if use_parallel(k) else _scatter_stream)(
            idx_buf, width, k, vals, codes, bits, m, mult, out)
    if bad:
        raise ValueError(f"corrupted message: {bad} of {k} entries have an index out of "
                         f"range 0..{n - 1}, not in increasing order, or a non-finite value")
    return out
