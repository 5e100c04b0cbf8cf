"""SIMD building blocks of the FWHT, emitted as LLVM IR (used by :mod:`hpcq.kernels.hadamard`).

LLVM does not vectorise the Walsh-Hadamard butterflies of small strides from
scalar loops (it emits scalar code or gathers), so two operations are written
as vector IR through ``numba.extending.intrinsic``:

* ``_tile(src, si, dst, di, scale, w0..w3, nvec, forward)``: transform a tile of
  ``nvec`` SIMD vectors entirely in registers (all levels inside the tile), with
  the scaling and the rotation's sign flips fused into the first (forward) or
  last (backward) step;
* ``_vpass(src, so, dst, do, h, nvec, forward)``: one radix-``nvec`` pass of
  butterflies across vectors ``h`` elements apart.

Both are plain Python functions with NumPy bodies (the *twins*, run by
``py_func`` and under ``NUMBA_DISABLE_JIT``); inside jitted code an ``overload``
replaces them by the intrinsic for literal ``(nvec, forward)``.  The IR performs
exactly the IEEE operations of the twins in the same order, so both give the same bits.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

VEC_BYTES = 64  #: bytes per SIMD vector in the generated IR (one AVX-512 register)
TILE_VECS = 16  #: vectors per in-register tile (2**4: the "lw + 4" of the block kernels)


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
        and src.layout == dst.layout == "C"  # the IR indexes the raw data pointers
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
        # fma(v, +-1, perm) is exact (one rounding of perm +- v) and saves the sign flip;
        # without FMA hardware llvm.fma would be a libm call, so the flags are checked
        self.has_fma = "+fma" in getattr(context.codegen(), "_tm_features", "")

    def const(self, values):  # type: ignore[no-untyped-def]
        return ir.Constant(self.vt, [float(v) for v in values])

    def fma(self, a, b, c):  # type: ignore[no-untyped-def]
        name = f"llvm.fma.v{self.w}f{8 * self.isz}"
        fnty = ir.FunctionType(self.vt, [self.vt] * 3)
        fn = cgutils.get_or_insert_function(self.b.module, fnty, name)
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
        mask = ir.Constant(self.i32v, [i ^ h for i in range(self.w)])
        perm = self.b.shuffle_vector(v, undef, mask)
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
                    vs[r], vs[r + g] = self.b.fadd(a, c), self.b.fsub(a, c)


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
            words = [context.cast(builder, a, t, types.uint64)
                     for a, t in zip(args[5:], signature.args[5:], strict=True)]
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

            vs = [g.load(sptr, builder.add(si_, ir.Constant(si_.type, r * g.w)))
                  for r in range(nvec)]
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
            so_, do_, h_ = (context.cast(builder, args[i], signature.args[i], types.intp)
                            for i in (1, 3, 4))
            offs = [builder.mul(h_, ir.Constant(h_.type, r)) for r in range(nvec)]
            vs = [g.load(sptr, builder.add(so_, off)) for off in offs]
            levels = [1 << lev for lev in range(nvec.bit_length() - 1)]
            g.across(vs, levels if forward else levels[::-1])
            for v, off in zip(vs, offs, strict=True):
                g.store(v, dptr, builder.add(do_, off))
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
