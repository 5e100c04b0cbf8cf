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
  registers: in-vector levels by a lane permutation, a sign flip and one add.
  LLVM does not vectorise these butterflies from scalar code, so the tile (and the
  strided radix-2/4/8 *pass* over vectors) is emitted as LLVM IR through
  ``numba.extending.intrinsic``; ``_tile`` and ``_vpass`` are their pure-Python
  twins, which ``py_func`` (and ``NUMBA_DISABLE_JIT``) run instead.
* Levels above the tile are done by radix-8 passes over vectors (strided, with
  contiguous vector loads), in depth-first order: the tiles are the leaves, and
  as soon as a span of ``2**(lev+3)`` elements is complete its next three levels
  are done, while it is still in cache.  Only the top pass of a block larger than
  the caches streams from memory.
* Parallel variants split the blocks over threads or, for few large blocks, cut
  each into sub-blocks transformed in parallel, then split the top passes by
  column ranges.  Every element sees the same operations in the same order, so
  the bits do not depend on the thread count.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from hpcq.kernels._config import EXACT, EXACT_PARALLEL, INLINE, use_parallel
from hpcq.kernels.rng import bits64

VEC_BYTES = 64  #: bytes per SIMD vector in the generated IR (one AVX-512 register)
TILE_VECS = 16  #: vectors per in-register tile
RADIX_LOG = 3  #: levels per pass over memory (radix 8; 2..3 supported)
PAR_TASK = 4096  #: elements of one pass handed to a thread at a time
MAX_LOG = 40  #: largest block is 2**MAX_LOG elements


# ---------------------------------------------------------------- SIMD building blocks
def _tile(src, si, dst, di, scale, w0, w1, w2, w3, nvec, forward):  # type: ignore[no-untyped-def]
    """Transform the ``nvec``-vector tile ``src[si:]`` into ``dst[di:]`` (pure-Python twin).

    Forward: scale, negate where the sign bit is set, levels ascending.  Backward:
    levels descending, then scale and negate.  Bit ``t`` of the 256-bit word
    ``w3:w2:w1:w0`` is the sign of tile element ``t``.
    """
    n = nvec * (VEC_BYTES // src.itemsize)
    words = (int(w0), int(w1), int(w2), int(w3))
    neg = np.array([(words[t >> 6] >> (t & 63)) & 1 for t in range(n)], dtype=bool)
    v = src[si : si + n].copy()
    levels = [1 << lev for lev in range(n.bit_length() - 1)]
    if forward:
        v = v * scale
        v[neg] = -v[neg]
    else:
        levels.reverse()
    for h in levels:
        v2 = v.reshape(-1, 2, h)
        a = v2[:, 0].copy()
        b = v2[:, 1].copy()
        v2[:, 0] = a + b
        v2[:, 1] = a - b
    if not forward:
        v = v * scale
        v[neg] = -v[neg]
    dst[di : di + n] = v


def _vpass(src, so, dst, do, h, nvec, forward):  # type: ignore[no-untyped-def]
    """Butterflies across ``nvec`` vectors ``src[so + r*h:][:W]`` -> ``dst`` (pure-Python twin)."""
    w = VEC_BYTES // src.itemsize
    v = np.stack([src[so + r * h : so + r * h + w] for r in range(nvec)])
    levels = [1 << lev for lev in range(nvec.bit_length() - 1)]
    for g in levels if forward else levels[::-1]:
        v2 = v.reshape(-1, 2, g, w)
        a = v2[:, 0].copy()
        b = v2[:, 1].copy()
        v2[:, 0] = a + b
        v2[:, 1] = a - b
    for r in range(nvec):
        dst[do + r * h : do + r * h + w] = v[r]


def _float_arrays(src, dst):  # type: ignore[no-untyped-def]
    return (
        isinstance(src, types.Array)
        and isinstance(dst, types.Array)
        and src.dtype == dst.dtype
        and src.dtype in (types.float32, types.float64)
    )


class _IR:
    """Helpers to emit vector code for one float dtype."""

    def __init__(self, context, builder, dtype):  # type: ignore[no-untyped-def]
        self.b = builder
        self.isz = dtype.bitwidth // 8
        self.w = VEC_BYTES // self.isz
        self.vt = ir.VectorType(context.get_value_type(dtype), self.w)
        self.ivt = ir.VectorType(ir.IntType(8 * self.isz), self.w)
        self.i32v = ir.VectorType(ir.IntType(32), self.w)
        # With FMA units, a - b is issued as fma(b, -1, a) (exact: one rounding of
        # a - b), which spreads the work over the add and the FMA pipes
        self.has_fma = "+fma" in getattr(context.codegen(), "_tm_features", "")

    def const(self, values):  # type: ignore[no-untyped-def]
        return ir.Constant(self.vt, [float(v) for v in values])

    def fma(self, a, b, c):  # type: ignore[no-untyped-def]
        name = f"llvm.fma.v{self.w}f{8 * self.isz}"
        fn = cgutils.get_or_insert_function(self.b.module, ir.FunctionType(self.vt, [self.vt] * 3), name)
        return self.b.call(fn, [a, b, c])

    def load(self, ptr, idx):  # type: ignore[no-untyped-def]
        p = self.b.gep(ptr, [idx], inbounds=True)
        return self.b.load(self.b.bitcast(p, self.vt.as_pointer()), align=self.isz, typ=self.vt)

    def store(self, v, ptr, idx):  # type: ignore[no-untyped-def]
        p = self.b.gep(ptr, [idx], inbounds=True)
        self.b.store(v, self.b.bitcast(p, self.vt.as_pointer()), align=self.isz)

    def splat(self, s):  # type: ignore[no-untyped-def]
        undef = ir.Constant(self.vt, ir.Undefined)
        v = self.b.insert_element(undef, s, ir.Constant(ir.IntType(32), 0))
        return self.b.shuffle_vector(v, undef, ir.Constant(self.i32v, [0] * self.w))

    def in_vector_level(self, v, h):  # type: ignore[no-untyped-def]
        # lane i gets v[i ^ h] + (v[i] or -v[i] where bit h of i is set): the same IEEE
        # sums as (a + b, a - b), since addition commutes and a - b == a + (-b)
        undef = ir.Constant(self.vt, ir.Undefined)
        perm = self.b.shuffle_vector(v, undef, ir.Constant(self.i32v, [i ^ h for i in range(self.w)]))
        if self.has_fma:
            return self.fma(v, self.const([-1 if i & h else 1 for i in range(self.w)]), perm)
        top = 1 << (8 * self.isz - 1)
        flip = ir.Constant(self.ivt, [top if i & h else 0 for i in range(self.w)])
        neg = self.b.bitcast(self.b.xor(self.b.bitcast(v, self.ivt), flip), self.vt)
        return self.b.fadd(perm, neg)

    def across(self, vs, levels):  # type: ignore[no-untyped-def]
        for g in levels:
            for r in range(len(vs)):
                if r & g == 0:
                    a, c = vs[r], vs[r + g]
                    if self.has_fma:
                        d = self.fma(c, self.const([-1] * self.w), a)
                    else:
                        d = self.b.fsub(a, c)
                    vs[r], vs[r + g] = self.b.fadd(a, c), d


def _make_tile(nvec, forward):  # type: ignore[no-untyped-def]
    @intrinsic
    def tile(typingctx, src, si, dst, di, scale, w0, w1, w2, w3):  # type: ignore[no-untyped-def]
        if not _float_arrays(src, dst):
            return None
        sig = types.void(src, si, dst, di, scale, w0, w1, w2, w3)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            aty = signature.args[0]
            g = _IR(context, builder, aty.dtype)
            sptr = context.make_array(aty)(context, builder, args[0]).data
            dptr = context.make_array(signature.args[2])(context, builder, args[2]).data
            si_ = context.cast(builder, args[1], signature.args[1], types.intp)
            di_ = context.cast(builder, args[3], signature.args[3], types.intp)
            sc = g.splat(context.cast(builder, args[4], signature.args[4], aty.dtype))
            words = [context.cast(builder, a, t, types.uint64) for a, t in zip(args[5:], signature.args[5:])]
            mty = ir.VectorType(ir.IntType(1), g.w)

            def scale_and_sign(vs):  # type: ignore[no-untyped-def]
                out = []
                for r, v in enumerate(vs):
                    bit = r * g.w
                    wd = words[bit >> 6]
                    if bit & 63:
                        wd = builder.lshr(wd, ir.Constant(wd.type, bit & 63))
                    m = builder.bitcast(builder.trunc(wd, ir.IntType(g.w)), mty)
                    v = builder.fmul(v, sc)
                    out.append(builder.select(m, builder.fneg(v), v))
                return out

            vs = [g.load(sptr, builder.add(si_, ir.Constant(si_.type, r * g.w))) for r in range(nvec)]
            inside = [1 << lev for lev in range(g.w.bit_length() - 1)]
            across = [1 << lev for lev in range(nvec.bit_length() - 1)]
            if forward:
                vs = scale_and_sign(vs)
                for h in inside:
                    vs = [g.in_vector_level(v, h) for v in vs]
                g.across(vs, across)
            else:
                g.across(vs, across[::-1])
                for h in inside[::-1]:
                    vs = [g.in_vector_level(v, h) for v in vs]
                vs = scale_and_sign(vs)
            for r, v in enumerate(vs):
                g.store(v, dptr, builder.add(di_, ir.Constant(di_.type, r * g.w)))
            return context.get_dummy_value()

        return sig, codegen

    return tile


def _make_vpass(nvec, forward):  # type: ignore[no-untyped-def]
    @intrinsic
    def vpass(typingctx, src, so, dst, do, h):  # type: ignore[no-untyped-def]
        if not _float_arrays(src, dst):
            return None
        sig = types.void(src, so, dst, do, h)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            aty = signature.args[0]
            g = _IR(context, builder, aty.dtype)
            sptr = context.make_array(aty)(context, builder, args[0]).data
            dptr = context.make_array(signature.args[2])(context, builder, args[2]).data
            so_, do_, h_ = (context.cast(builder, args[i], signature.args[i], types.intp) for i in (1, 3, 4))
            vs = [g.load(sptr, builder.add(so_, builder.mul(h_, ir.Constant(h_.type, r)))) for r in range(nvec)]
            levels = [1 << lev for lev in range(nvec.bit_length() - 1)]
            g.across(vs, levels if forward else levels[::-1])
            for r, v in enumerate(vs):
                g.store(v, dptr, builder.add(do_, builder.mul(h_, ir.Constant(h_.type, r))))
            return context.get_dummy_value()

        return sig, codegen

    return vpass


_TILES = {(r, f): _make_tile(r, f) for r in (1, TILE_VECS) for f in (True, False)}
_VPASSES = {(r, f): _make_vpass(r, f) for r in (2, 4, 8) for f in (True, False)}


def _literal_key(nvec, forward):  # type: ignore[no-untyped-def]
    if isinstance(nvec, types.IntegerLiteral) and isinstance(forward, types.BooleanLiteral):
        return nvec.literal_value, forward.literal_value
    return None


@overload(_tile, prefer_literal=True)
def _tile_ol(src, si, dst, di, scale, w0, w1, w2, w3, nvec, forward):  # type: ignore[no-untyped-def]
    key = _literal_key(nvec, forward)
    if key is None or key not in _TILES:
        return None
    fn = _TILES[key]

    def impl(src, si, dst, di, scale, w0, w1, w2, w3, nvec, forward):  # type: ignore[no-untyped-def]
        fn(src, si, dst, di, scale, w0, w1, w2, w3)

    return impl


@overload(_vpass, prefer_literal=True)
def _vpass_ol(src, so, dst, do, h, nvec, forward):  # type: ignore[no-untyped-def]
    key = _literal_key(nvec, forward)
    if key is None or key not in _VPASSES:
        return None
    fn = _VPASSES[key]

    def impl(src, so, dst, do, h, nvec, forward):  # type: ignore[no-untyped-def]
        fn(src, so, dst, do, h)

    return impl


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
    """Levels ``log2(h) .. +s`` (s = 1..3), ascending, of the group at ``b``, columns ``[j0, j1)``."""
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
def _step(lo, hi, i, forward):  # type: ignore[no-untyped-def]
    """(first level, levels) of step ``i`` when splitting ``[lo, hi)`` into steps of RADIX_LOG.

    The short step is the lowest one; ascending runs it first, descending last.
    """
    s0 = (hi - lo) % RADIX_LOG
    if s0 == 0:
        s0 = RADIX_LOG
    if not forward:
        i = _nsteps(lo, hi) - 1 - i
    if i == 0:
        return lo, s0
    return lo + s0 + RADIX_LOG * (i - 1), RADIX_LOG


@njit(**INLINE)
def _nsteps(lo, hi):  # type: ignore[no-untyped-def]
    return 0 if hi <= lo else (hi - lo + RADIX_LOG - 1) // RADIX_LOG


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
    nst = _nsteps(kt, k)
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
            lev, s = _step(kt, k, i, True)
            span = 1 << (lev + s)
            if done % span != 0:
                break
            _group_up(dst, dst, o + done - span, 1 << lev, s, 0, 1 << lev, w)


@njit(**EXACT)
def _block_down(src, work, out, o, k, d, key, signed, scale):  # type: ignore[no-untyped-def]
    """Inverse of :func:`_block_up`, in pre-order: levels descending, then scale and sign.

    The first pass reads ``src`` (it spans the whole block); intermediate results
    live in ``work``; entries ``< d`` are written to ``out``.
    """
    lw = _lanes_log(work)
    if k < lw:
        _small_down(src, work, out, o, k, d, key, signed, scale)
        return
    w = 1 << lw
    kt = lw + 4 if k >= lw + 4 else lw
    tsz = 1 << kt
    nst = _nsteps(kt, k)
    first = True
    for t in range(o, min(o + (1 << k), d), tsz):  # spans past d only feed entries past d
        for i in range(nst):  # the largest span starting at t first
            lev, s = _step(kt, k, i, False)
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
    for i in range(_nsteps(ks, k)):
        lev, s = _step(ks, k, i, True)
        h = 1 << lev
        span = h << s
        nj = (h + PAR_TASK - 1) // PAR_TASK
        for task in prange((dst.shape[0] // span) * nj):
            o, j0, j1 = _task(task, nj, span, h)
            _group_up(dst, dst, o, h, s, j0, j1, 1 << lw)


@njit(**EXACT)
def _down(src, work, out, k, d, key, signed, scale):  # type: ignore[no-untyped-def]
    for b in range(work.shape[0] >> k):
        if (b << k) < d:
            _block_down(src, work, out, b << k, k, d, key, signed, scale)


@njit(**EXACT_PARALLEL)
def _down_par(src, work, out, k, d, key, signed, scale, nt):  # type: ignore[no-untyped-def]
    nb = work.shape[0] >> k
    lw = _lanes_log(work)
    q = _par_split(k, nb, lw, nt)
    ks = k - q
    for i in range(_nsteps(ks, k)):  # the top q levels first (the first pass reads src)
        lev, s = _step(ks, k, i, False)
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
                _block_down(src, work, out, t << ks, ks, d, key, signed, scale)
            else:
                _block_down(work, work, out, t << ks, ks, d, key, signed, scale)


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
    if use_parallel(n):
        import numba

        _down_par(src, work, out, k, d, key, True, scale, numba.get_num_threads())
    else:
        _down(src, work, out, k, d, key, True, scale)


def unrotate(y: np.ndarray, block: int, key: int, d: int, out: np.ndarray | None = None) -> np.ndarray:
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
