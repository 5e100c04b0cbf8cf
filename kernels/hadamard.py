"""Fast Walsh-Hadamard transform (FWHT) and the randomized Hadamard rotation.

Definitions
-----------
:func:`fwht` applies ``H_B / sqrt(B)`` in place to every contiguous block of
``B = 2**k`` elements, with the Sylvester matrix ``H_B[i, j] = (-1)**popcount(i & j)``.
It is symmetric and orthonormal, so applying it twice gives ``x`` back (to rounding).
:func:`rotate` zero-pads ``x`` to a multiple of ``B`` and computes ``y = H D x / sqrt(B)``
per block; :func:`unrotate` is its inverse ``x = D H y / sqrt(B)``, cut to ``d`` entries.

Signs (shared randomness, never sent)
-------------------------------------
``D[i] = -1`` iff bit ``i % 64`` of ``rng.bits64(key, i // 64)`` is set, where ``i``
is the index in the whole padded vector (not within a block).  One 64-bit draw
serves 64 consecutive elements, so the signs cost almost nothing, never exist as
an array, and any one of them can be recomputed alone.  Every rank given the same
``key`` (``derive_key(seed, PURPOSE_SIGNS, step)``) derives the same ``D``.

Arithmetic order (why the bytes are reproducible)
-------------------------------------------------
The forward transforms scale (and negate) each input first, then apply the
butterflies ``(a + b, a - b)`` level by level, ``h = 1, 2, 4, ..., B/2``: the
textbook radix-2 algorithm, whatever the blocking, vector width or thread count.
:func:`unrotate` runs the levels in decreasing order and scales/negates last.  The
flags are ``EXACT`` (no reassociation), so compiled, ``py_func`` and parallel
variants give identical bits.

Implementation
--------------
* A *tile* of 16 SIMD vectors (256 float32 / 128 float64) is transformed in
  registers: in-vector levels by a lane permutation and one FMA with a +-1 vector
  (exact), the others by vector adds.  LLVM does not vectorise these butterflies
  from scalar code, so the tile and the strided radix-2/4/8 *pass* over vectors are
  emitted as LLVM IR through ``numba.extending.intrinsic``; ``_tile`` and ``_vpass``
  are their pure-Python twins, which ``py_func`` and ``NUMBA_DISABLE_JIT`` run
  (all in :mod:`hpcq.kernels._simd`).
* Levels above the tile are done by radix-8 passes in depth-first order: the tiles
  are the leaves, and as soon as a span of ``2**(lev+3)`` elements is complete its
  next three levels are done, while it is still in cache.  Only the top pass of a
  block larger than the caches streams from memory.
* Parallel variants split the blocks over threads or, for few large blocks, cut
  each into sub-blocks transformed in parallel, then split the top passes by
  column ranges.  Every element sees the same operations in the same order, so
  the bits do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from hpcq.kernels._config import EXACT, EXACT_PARALLEL, INLINE, use_parallel
from hpcq.kernels._simd import TILE_VECS, _tile, _vpass  # noqa: F401 (TILE_VECS re-exported)
from hpcq.kernels.rng import bits64

RADIX_LOG = 3  #: levels per pass over memory (radix 8; 2..3 supported)
PAR_TASK = 4096  #: elements of one pass handed to a thread at a time
MAX_LOG = 40  #: largest block is 2**MAX_LOG elements


# ---------------------------------------------------------------- numba-level kernels
@njit(**INLINE)
def _lanes_log(x):  # type: ignore[no-untyped-def]
    """log2 of the elements in one SIMD vector of ``x``'s dtype."""
    return 4 if x.itemsize == 4 else 3


@njit(**INLINE)
def _words(key, t, size, signed):  # type: ignore[no-untyped-def]
    """Sign bits of the tile of ``size`` elements at global index ``t``, as 4 words."""
    z = np.uint64(0)
    if not signed:
        return z, z, z, z
    q = t >> 6
    if size < 64:
        return bits64(key, q) >> np.uint64(t & 63), z, z, z
    return bits64(key, q), bits64(key, q + 1), bits64(key, q + 2), bits64(key, q + 3)


@njit(**INLINE)
def _negate(key, i, signed):  # type: ignore[no-untyped-def]
    """Whether D[i] = -1 (the scalar form of :func:`_words`)."""
    return signed and ((bits64(key, i >> 6) >> np.uint64(i & 63)) & np.uint64(1)) != 0


@njit(**EXACT)
def _tile_up(src, si, dst, di, scale, w0, w1, w2, w3, big):  # type: ignore[no-untyped-def]
    if big:
        _tile(src, si, dst, di, scale, w0, w1, w2, w3, 16, True)
    else:
        _tile(src, si, dst, di, scale, w0, w1, w2, w3, 1, True)


@njit(**EXACT)
def _tile_down(src, si, dst, di, scale, w0, w1, w2, w3, big):  # type: ignore[no-untyped-def]
    if big:
        _tile(src, si, dst, di, scale, w0, w1, w2, w3, 16, False)
    else:
        _tile(src, si, dst, di, scale, w0, w1, w2, w3, 1, False)


@njit(**EXACT)
def _group_up(src, dst, b, h, s, j0, j1, w):  # type: ignore[no-untyped-def]
    """Levels ``log2(h) .. +s`` (s = 1..3), ascending, of the group at ``b``, columns j0..j1-1."""
    if s == 3:
        for j in range(b + j0, b + j1, w):
            _vpass(src, j, dst, j, h, 8, True)
    elif s == 2:
        for j in range(b + j0, b + j1, w):
            _vpass(src, j, dst, j, h, 4, True)
    else:
        for j in range(b + j0, b + j1, w):
            _vpass(src, j, dst, j, h, 2, True)


@njit(**EXACT)
def _group_down(src, dst, b, h, s, j0, j1, w):  # type: ignore[no-untyped-def]
    """:func:`_group_up` with the levels descending."""
    if s == 3:
        for j in range(b + j0, b + j1, w):
            _vpass(src, j, dst, j, h, 8, False)
    elif s == 2:
        for j in range(b + j0, b + j1, w):
            _vpass(src, j, dst, j, h, 4, False)
    else:
        for j in range(b + j0, b + j1, w):
            _vpass(src, j, dst, j, h, 2, False)


@njit(**INLINE)
def _nsteps(lo, hi, top):  # type: ignore[no-untyped-def]
    """Passes for levels ``[lo, hi)``: a top pass of ``top`` levels, the rest by RADIX_LOG."""
    if hi - lo <= top:
        return 1 if hi > lo else 0
    return 1 + (hi - top - lo + RADIX_LOG - 1) // RADIX_LOG


@njit(**INLINE)
def _step(lo, hi, i, forward, top):  # type: ignore[no-untyped-def]
    """(first level, levels) of pass ``i`` of :func:`_nsteps`, in ascending or descending order.

    The short pass is the lowest one (ascending runs it first, descending last), except
    for the top pass, which may be shortened (``top`` < RADIX_LOG) when it reads one
    array and writes another: 2 x 8 strided streams would overflow an 8-way L1 set.
    """
    n = _nsteps(lo, hi, top)
    if not forward:
        i = n - 1 - i
    if i == n - 1:
        return max(lo, hi - top), min(top, hi - lo)
    s0 = (hi - top - lo) % RADIX_LOG
    if s0 == 0:
        s0 = RADIX_LOG
    if i == 0:
        return lo, s0
    return lo + s0 + RADIX_LOG * (i - 1), RADIX_LOG


@njit(**EXACT)
def _small_up(src, dst, o, k, d, key, signed, scale):  # type: ignore[no-untyped-def]
    """Blocks shorter than one vector: plain scalar loops, same arithmetic order."""
    size = 1 << k
    for i in range(o, o + size):
        if i < d:
            dst[i] = src[i]
        else:
            dst[i] = 0.0
        v = dst[i] * scale
        dst[i] = -v if _negate(key, i, signed) else v
    h = 1
    while h < size:
        for b in range(o, o + size, 2 * h):
            for j in range(b, b + h):
                a = dst[j]
                c = dst[j + h]
                dst[j] = a + c
                dst[j + h] = a - c
        h *= 2


@njit(**EXACT)
def _small_down(src, work, out, o, k, d, key, signed, scale):  # type: ignore[no-untyped-def]
    size = 1 << k
    for i in range(o, o + size):
        work[i] = src[i]
    h = size // 2
    while h >= 1:
        for b in range(o, o + size, 2 * h):
            for j in range(b, b + h):
                a = work[j]
                c = work[j + h]
                work[j] = a + c
                work[j + h] = a - c
        h //= 2
    for i in range(o, min(o + size, d)):
        v = work[i] * scale
        out[i] = -v if _negate(key, i, signed) else v


@njit(**EXACT)
def _block_up(src, dst, o, k, d, key, signed, scale):  # type: ignore[no-untyped-def]
    """Forward transform of the block ``dst[o:o+2**k]``, reading ``src[i]`` (0 for i >= d).

    Tiles are the leaves of a depth-first (post-order) walk: as soon as a span of
    ``2**(lev+s)`` elements is complete, its next ``s`` levels are done, while it is
    still in cache.
    """
    lw = _lanes_log(dst)
    if k < lw:
        _small_up(src, dst, o, k, d, key, signed, scale)
        return
    w = 1 << lw
    kt = lw + 4 if k >= lw + 4 else lw  # a tile of 16 vectors, or of one
    tsz = 1 << kt
    nst = _nsteps(kt, k, RADIX_LOG)
    for t in range(o, o + (1 << k), tsz):
        w0, w1, w2, w3 = _words(key, t, tsz, signed)
        w0, w1, w2, w3 = np.uint64(w0), np.uint64(w1), np.uint64(w2), np.uint64(w3)
        if t + tsz <= d:
            _tile_up(src, t, dst, t, scale, w0, w1, w2, w3, kt > lw)
        else:  # the tile that crosses the end of x: zero-pad it in dst first
            for i in range(t, t + tsz):
                if i < d:
                    dst[i] = src[i]
                else:
                    dst[i] = 0.0
            _tile_up(dst, t, dst, t, scale, w0, w1, w2, w3, kt > lw)
        done = t + tsz - o
        for i in range(nst):
            lev, s = _step(kt, k, i, True, RADIX_LOG)
            span = 1 << (lev + s)
            if done % span != 0:
                break
            _group_up(dst, dst, o + done - span, 1 << lev, s, 0, 1 << lev, w)


@njit(**EXACT)
def _block_down(src, work, out, o, k, d, key, signed, scale, top):  # type: ignore[no-untyped-def]
    """Inverse of :func:`_block_up`, in pre-order: levels descending, then scale and sign.

    The first pass reads ``src`` (it spans the whole block) and does ``top`` levels;
    intermediate results live in ``work``; entries ``< d`` are written to ``out``.
    """
    lw = _lanes_log(work)
    if k < lw:
        _small_down(src, work, out, o, k, d, key, signed, scale)
        return
    w = 1 << lw
    kt = lw + 4 if k >= lw + 4 else lw
    tsz = 1 << kt
    nst = _nsteps(kt, k, top)
    first = True
    for t in range(o, min(o + (1 << k), d), tsz):  # spans past d only feed entries past d
        for i in range(nst):  # the largest span starting at t first
            lev, s = _step(kt, k, i, False, top)
            if (t - o) % (1 << (lev + s)) == 0:
                if first:
                    _group_down(src, work, t, 1 << lev, s, 0, 1 << lev, w)
                else:
                    _group_down(work, work, t, 1 << lev, s, 0, 1 << lev, w)
                first = False
        w0, w1, w2, w3 = _words(key, t, tsz, signed)
        w0, w1, w2, w3 = np.uint64(w0), np.uint64(w1), np.uint64(w2), np.uint64(w3)
        if t + tsz <= d:
            if first:
                _tile_down(src, t, out, t, scale, w0, w1, w2, w3, kt > lw)
            else:
                _tile_down(work, t, out, t, scale, w0, w1, w2, w3, kt > lw)
        else:  # the tile that crosses d: finish it in work, copy its head
            if first:
                _tile_down(src, t, work, t, scale, w0, w1, w2, w3, kt > lw)
            else:
                _tile_down(work, t, work, t, scale, w0, w1, w2, w3, kt > lw)
            for i in range(t, d):
                out[i] = work[i]


@njit(**INLINE)
def _par_split(k, nblocks, lw, nt):  # type: ignore[no-untyped-def]
    """Levels of each block left to parallel passes; 0 when there are blocks enough.

    Otherwise every block is cut into ``2**q`` sub-blocks, transformed in parallel,
    and the top ``q`` levels follow as passes cut into column ranges over threads.
    """
    if nblocks >= 2 * nt:
        return 0
    q = RADIX_LOG
    while (1 << q) < 2 * nt:
        q += RADIX_LOG
    return min(q, max(0, k - lw - 4))


@njit(**EXACT)
def _up(src, dst, k, d, key, signed, scale):  # type: ignore[no-untyped-def]
    for b in range(dst.shape[0] >> k):
        _block_up(src, dst, b << k, k, d, key, signed, scale)


@njit(**INLINE)
def _task(task, nj, span, h):  # type: ignore[no-untyped-def]
    """(group offset, first column, end column) of a parallel pass task."""
    g = task // nj
    j0 = (task - g * nj) * PAR_TASK
    return g * span, j0, min(h, j0 + PAR_TASK)


@njit(**EXACT_PARALLEL)
def _up_par(src, dst, k, d, key, signed, scale, nt):  # type: ignore[no-untyped-def]
    nb = dst.shape[0] >> k
    lw = _lanes_log(dst)
    q = _par_split(k, nb, lw, nt)
    ks = k - q
    for t in prange(nb << q):
        _block_up(src, dst, t << ks, ks, d, key, signed, scale)
    # the top q levels of every block: passes cut into column ranges
    for i in range(_nsteps(ks, k, RADIX_LOG)):
        lev, s = _step(ks, k, i, True, RADIX_LOG)
        h = 1 << lev
        span = h << s
        nj = (h + PAR_TASK - 1) // PAR_TASK
        for task in prange((dst.shape[0] // span) * nj):
            o, j0, j1 = _task(task, nj, span, h)
            _group_up(dst, dst, o, h, s, j0, j1, 1 << lw)


@njit(**EXACT)
def _down(src, work, out, k, d, key, signed, scale, top):  # type: ignore[no-untyped-def]
    for b in range(work.shape[0] >> k):
        if (b << k) < d:
            _block_down(src, work, out, b << k, k, d, key, signed, scale, top)


@njit(**EXACT_PARALLEL)
def _down_par(src, work, out, k, d, key, signed, scale, nt, top):  # type: ignore[no-untyped-def]
    nb = work.shape[0] >> k
    lw = _lanes_log(work)
    q = _par_split(k, nb, lw, nt)
    ks = k - q
    for i in range(_nsteps(ks, k, top)):  # the top q levels first (the first pass reads src)
        lev, s = _step(ks, k, i, False, top)
        h = 1 << lev
        span = h << s
        nj = (h + PAR_TASK - 1) // PAR_TASK
        for task in prange((work.shape[0] // span) * nj):
            o, j0, j1 = _task(task, nj, span, h)
            if i == 0:
                _group_down(src, work, o, h, s, j0, j1, 1 << lw)
            else:
                _group_down(work, work, o, h, s, j0, j1, 1 << lw)
    for t in prange(nb << q):
        if (t << ks) < d:
            if q == 0:
                _block_down(src, work, out, t << ks, ks, d, key, signed, scale, top)
            else:
                _block_down(work, work, out, t << ks, ks, d, key, signed, scale, RADIX_LOG)


# ---------------------------------------------------------------- public wrappers
def padded_length(d: int, block: int) -> int:
    """Smallest multiple of ``block`` that is >= ``d`` (0 for ``d == 0``)."""
    _log2_block(block)
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
        raise ValueError(f"d must be a non-negative integer, got {d!r}")
    return -(-int(d) // int(block)) * int(block)


def _log2_block(block: int) -> int:
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)):
        raise TypeError(f"block must be an integer power of two, got {block!r}")
    b = int(block)
    if b < 1 or b & (b - 1) or b > (1 << MAX_LOG):
        raise ValueError(f"block must be a power of two in [1, 2**{MAX_LOG}], got {b}")
    return b.bit_length() - 1


def _as_key(key: int) -> np.uint64:
    if isinstance(key, bool) or not isinstance(key, (int, np.integer)):
        raise TypeError(f"key must be an integer (see rng.derive_key), got {key!r}")
    if not 0 <= int(key) < (1 << 64):
        raise ValueError(f"key must be in [0, 2**64), got {key}")
    return np.uint64(int(key))


def _check_vector(x: np.ndarray, name: str, writeable: bool = False) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {x.shape}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use np.ascontiguousarray)")
    if writeable and not x.flags.writeable:
        raise ValueError(f"{name} must be writeable")
    return x


def _check_out(out: np.ndarray | None, n: int, dtype: np.dtype, x: np.ndarray) -> np.ndarray:
    if out is None:
        return np.empty(n, dtype=dtype)
    _check_vector(out, "out", writeable=True)
    if out.dtype != dtype or out.shape[0] != n:
        raise ValueError(f"out must be {np.dtype(dtype)} of length {n}, got {out.dtype} "
                         f"of length {out.shape[0]}")
    if np.may_share_memory(out, x):
        raise ValueError("out must not overlap the input (use the *_inplace variant)")
    return out


def _scale(dtype: np.dtype, k: int) -> np.floating:
    return np.dtype(dtype).type(1.0 / np.sqrt(float(1 << k)))


def _run_up(src: np.ndarray, dst: np.ndarray, k: int, d: int, key: np.uint64, signed: bool) -> None:
    n = dst.shape[0]
    if n == 0:
        return
    scale = _scale(dst.dtype, k)
    if use_parallel(n):
        import numba

        _up_par(src, dst, k, d, key, signed, scale, numba.get_num_threads())
    else:
        _up(src, dst, k, d, key, signed, scale)


def fwht(x: np.ndarray, block: int | None = None) -> np.ndarray:
    """Orthonormal Walsh-Hadamard transform of every ``block`` of ``x``, in place.

    Parameters
    ----------
    x : 1-D C-contiguous float32 or float64 array, modified in place
    block : power of two dividing ``len(x)``; None for the whole array (then
        ``len(x)`` must be a power of two)

    Returns
    -------
    ``x``, each block replaced by ``H_B x_block / sqrt(B)`` (Sylvester order).
    """
    _check_vector(x, "x", writeable=True)
    n = x.shape[0]
    if block is None:
        if n < 1 or n & (n - 1):
            raise ValueError(f"block=None needs a power-of-two length, got {n}")
        block = n
    k = _log2_block(block)
    if n % block:
        raise ValueError(f"length {n} is not a multiple of block {block}")
    _run_up(x, x, k, n, np.uint64(0), False)
    return x


def rotate(x: np.ndarray, block: int, key: int, out: np.ndarray | None = None) -> np.ndarray:
    """Randomized Hadamard rotation ``H D x / sqrt(B)`` of ``x`` zero-padded to blocks.

    Parameters
    ----------
    x : 1-D C-contiguous float32 or float64 array of any length ``d``
    block : power of two ``B``
    key : 64-bit stream key of the signs (``derive_key(seed, PURPOSE_SIGNS, step)``)
    out : optional array of ``x``'s dtype and length ``padded_length(d, block)``

    Returns
    -------
    The rotated vector, of length ``padded_length(d, block)``.
    """
    _check_vector(x, "x")
    k = _log2_block(block)
    key64 = _as_key(key)
    d = x.shape[0]
    out = _check_out(out, padded_length(d, block), x.dtype, x)
    _run_up(x, out, k, d, key64, True)
    return out


def rotate_inplace(x: np.ndarray, block: int, key: int) -> np.ndarray:
    """:func:`rotate` of an already padded ``x`` (length a multiple of ``block``), in place."""
    _check_vector(x, "x", writeable=True)
    k = _log2_block(block)
    key64 = _as_key(key)
    if x.shape[0] % block:
        raise ValueError(f"length {x.shape[0]} is not a multiple of block {block}")
    _run_up(x, x, k, x.shape[0], key64, True)
    return x


def _run_down(src: np.ndarray, work: np.ndarray, out: np.ndarray, k: int, d: int,
              key: np.uint64) -> None:
    n = work.shape[0]
    if n == 0:
        return
    scale = _scale(work.dtype, k)
    # out of place, 8 + 8 strided streams thrash an 8-way L1 set while the block sits in
    # L2: there the first pass is radix-4 (see _step); above, the extra pass costs more
    top = 2 if src is not work and k <= 18 else RADIX_LOG
    if use_parallel(n):
        import numba

        _down_par(src, work, out, k, d, key, True, scale, numba.get_num_threads(), top)
    else:
        _down(src, work, out, k, d, key, True, scale, top)


def unrotate(y: np.ndarray, block: int, key: int, d: int,
             out: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`rotate`: ``D H y / sqrt(B)`` cut to its first ``d`` entries.

    Parameters
    ----------
    y : rotated vector, 1-D C-contiguous float32/float64 of length ``padded_length(d, block)``;
        not modified
    block, key : as given to :func:`rotate`
    d : length of the original vector
    out : optional array of ``y``'s dtype and length ``d``

    Returns
    -------
    The vector of length ``d``.
    """
    _check_vector(y, "y")
    k = _log2_block(block)
    key64 = _as_key(key)
    n = padded_length(d, block)
    if y.shape[0] != n:
        raise ValueError(f"y has length {y.shape[0]}, but d={d} with block {block} needs {n}")
    out = _check_out(out, int(d), y.dtype, y)
    work = out if d == n else np.empty(n, dtype=y.dtype)
    _run_down(y, work, out, k, int(d), key64)
    return out


def unrotate_inplace(y: np.ndarray, block: int, key: int) -> np.ndarray:
    """:func:`unrotate` in place on a padded buffer (no cut); returns ``y``."""
    _check_vector(y, "y", writeable=True)
    k = _log2_block(block)
    key64 = _as_key(key)
    if y.shape[0] % block:
        raise ValueError(f"length {y.shape[0]} is not a multiple of block {block}")
    _run_down(y, y, y, k, y.shape[0], key64)
    return y
