"""Deterministic vectorised sums: ``sum f(x[start:start+n])`` with a fixed order of additions.

A reduction compiled with ``fastmath={"reassoc"}`` vectorises, but LLVM picks the order
of the additions (vector width, interleave count) per call site: the same helper
inlined into the serial and the parallel kernel, or called from ``py_func``, can round
differently, and then a float32 scale (and the bytes on the wire) depends on the thread
count.  These intrinsics spell the vector code out instead: ``4 L`` lanes (``L`` = 16
float32 or 8 float64) accumulate entries ``i`` with ``i % 4L`` fixed, by elementwise
IEEE additions that no flag may reorder; the lanes are then folded by a fixed tree.  So
the result is the same bits in every caller, at the speed of the fastmath loop.

``f`` is ``|x|`` (``sum_abs``), ``x^2`` (``sum_sq``) or ``x`` (``sum_id``); the ``*64``
variants accumulate float32 input in float64 (``x^2`` of a float32 is exact there, and
no float32 sum can overflow).  ``sign_bits_sum_abs`` also packs the bits ``x >= 0``
(a vector compare is 16 bits LSB-first, stored as they are: the scaled-sign codec's
whole encode in one pass).  They compile inline into njit code (they cannot be called
from Python: call them from an ``@njit`` function).
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_KINDS = ("abs", "sq", "id")


def _codegen(kind: str, wide: bool) -> Any:
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        aryty = sig.args[0]
        src = aryty.dtype
        dst = types.float64 if wide else src
        L = 8 if dst == types.float64 else 16
        elt = context.get_value_type(src)
        acc_elt = context.get_value_type(dst)
        vsrc = ir.VectorType(elt, L)
        vty = ir.VectorType(acc_elt, L)
        ity = ir.IntType(dst.bitwidth)
        intp = context.get_value_type(types.intp)
        ary = context.make_array(aryty)(context, builder, args[0])
        start = context.cast(builder, args[1], sig.args[1], types.intp)
        n = context.cast(builder, args[2], sig.args[2], types.intp)
        base = builder.gep(ary.data, [start])

        def f(v: Any, vt: Any, it: Any) -> Any:
            if kind == "abs":
                mask = ir.Constant(it, (1 << (dst.bitwidth - 1)) - 1)
                if isinstance(vt, ir.VectorType):
                    it = ir.VectorType(it, L)
                    mask = ir.Constant(it, [mask] * L)
                return builder.bitcast(builder.and_(builder.bitcast(v, it), mask), vt)
            return builder.fmul(v, v) if kind == "sq" else v

        def load_vec(idx: Any) -> Any:
            p = builder.bitcast(builder.gep(base, [idx]), vsrc.as_pointer())
            v = builder.load(p, align=src.bitwidth // 8)
            return f(builder.fpext(v, vty) if wide and src != dst else v, vty, ity)

        def const(i: int) -> Any:
            return ir.Constant(intp, i)

        zero = ir.Constant(vty, [ir.Constant(acc_elt, 0.0)] * L)
        accs = [cgutils.alloca_once_value(builder, zero) for _ in range(4)]
        n4 = builder.udiv(n, const(4 * L))
        with cgutils.for_range(builder, n4) as loop:  # 4 accumulators hide the add latency
            b0 = builder.mul(loop.index, const(4 * L))
            for a in range(4):
                v = load_vec(builder.add(b0, const(a * L)))
                builder.store(builder.fadd(builder.load(accs[a]), v), accs[a])
        acc = accs[0]
        folded = builder.fadd(builder.fadd(builder.load(accs[0]), builder.load(accs[1])),
                              builder.fadd(builder.load(accs[2]), builder.load(accs[3])))
        builder.store(folded, acc)
        done = builder.mul(n4, const(4 * L))
        with cgutils.for_range(builder, builder.udiv(builder.sub(n, done), const(L))) as loop:
            v = load_vec(builder.add(done, builder.mul(loop.index, const(L))))
            builder.store(builder.fadd(builder.load(acc), v), acc)
        done = builder.add(done, builder.mul(builder.udiv(builder.sub(n, done), const(L)),
                                             const(L)))
        with cgutils.for_range(builder, builder.sub(n, done)) as loop:  # entry done + j: lane j
            v = builder.load(builder.gep(base, [builder.add(done, loop.index)]))
            v = f(builder.fpext(v, acc_elt) if wide and src != dst else v, acc_elt, ity)
            a = builder.load(acc)
            lane = builder.extract_element(a, loop.index)
            builder.store(builder.insert_element(a, builder.fadd(lane, v), loop.index), acc)
        a = builder.load(acc)
        vals = [builder.extract_element(a, ir.Constant(ir.IntType(32), i)) for i in range(L)]
        while len(vals) > 1:
            vals = [builder.fadd(vals[2 * i], vals[2 * i + 1]) for i in range(len(vals) // 2)]
        return vals[0]

    return codegen


def _make(kind: str, wide: bool) -> Any:
    def typer(typingctx: Any, arr: Any, start: Any, n: Any) -> Any:
        if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C"
                and arr.dtype in (types.float32, types.float64)
                and isinstance(start, types.Integer) and isinstance(n, types.Integer)):
            return None
        out = types.float64 if wide else arr.dtype
        return out(arr, start, n), _codegen(kind, wide)

    typer.__name__ = f"sum_{kind}{'64' if wide else ''}"
    return intrinsic(typer)


sum_abs = _make("abs", False)
sum_sq = _make("sq", False)
sum_id = _make("id", False)
sum_abs64 = _make("abs", True)
sum_sq64 = _make("sq", True)
sum_id64 = _make("id", True)


def _bits_codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
    # same lane structure as _codegen("abs", False), plus an i16 of compare bits per vector
    xty, _, _, cty, _ = sig.args
    L = 16
    f32 = ir.FloatType()
    i8, i16, i32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
    vty = ir.VectorType(f32, L)
    vity = ir.VectorType(i32, L)
    intp = context.get_value_type(types.intp)
    xa = context.make_array(xty)(context, builder, args[0])
    ca = context.make_array(cty)(context, builder, args[3])
    start = context.cast(builder, args[1], sig.args[1], types.intp)
    n = context.cast(builder, args[2], sig.args[2], types.intp)
    byte0 = context.cast(builder, args[4], sig.args[4], types.intp)
    xp = builder.gep(xa.data, [start])
    cp = builder.gep(ca.data, [byte0])

    def const(i: int) -> Any:
        return ir.Constant(intp, i)

    absmask = ir.Constant(vity, [ir.Constant(i32, 0x7FFFFFFF)] * L)
    zero = ir.Constant(vty, [ir.Constant(f32, 0.0)] * L)
    accs = [cgutils.alloca_once_value(builder, zero) for _ in range(4)]

    def block(e: Any, a: int) -> None:
        v = builder.load(builder.bitcast(builder.gep(xp, [e]), vty.as_pointer()), align=4)
        bits = builder.bitcast(builder.fcmp_ordered(">=", v, zero), i16)
        builder.store(bits, builder.bitcast(builder.gep(cp, [builder.lshr(e, const(3))]),
                                            i16.as_pointer()), align=1)
        av = builder.bitcast(builder.and_(builder.bitcast(v, vity), absmask), vty)
        builder.store(builder.fadd(builder.load(accs[a]), av), accs[a])

    n4 = builder.udiv(n, const(4 * L))
    with cgutils.for_range(builder, n4) as loop:
        b0 = builder.mul(loop.index, const(4 * L))
        for a in range(4):
            block(builder.add(b0, const(a * L)), a)
    acc = accs[0]
    builder.store(builder.fadd(builder.fadd(builder.load(accs[0]), builder.load(accs[1])),
                               builder.fadd(builder.load(accs[2]), builder.load(accs[3]))), acc)
    done = builder.mul(n4, const(4 * L))
    nv = builder.udiv(builder.sub(n, done), const(L))
    with cgutils.for_range(builder, nv) as loop:
        block(builder.add(done, builder.mul(loop.index, const(L))), 0)
    done = builder.add(done, builder.mul(nv, const(L)))
    # the last < 16 entries one by one: entry done + j into lane j and bit (done + j) % 8
    byte = cgutils.alloca_once_value(builder, ir.Constant(i8, 0))
    with cgutils.for_range(builder, builder.sub(n, done)) as loop:
        e = builder.add(done, loop.index)
        v = builder.load(builder.gep(xp, [e]))
        bit = builder.zext(builder.fcmp_ordered(">=", v, ir.Constant(f32, 0.0)), i8)
        sh = builder.trunc(builder.and_(e, const(7)), i8)
        cur = builder.or_(builder.load(byte), builder.shl(bit, sh))
        builder.store(cur, byte)
        last = builder.or_(builder.icmp_unsigned("==", builder.and_(e, const(7)), const(7)),
                           builder.icmp_unsigned("==", builder.add(e, const(1)), n))
        with builder.if_then(last):
            builder.store(builder.load(byte), builder.gep(cp, [builder.lshr(e, const(3))]))
            builder.store(ir.Constant(i8, 0), byte)
        av = builder.and_(builder.bitcast(v, i32), ir.Constant(i32, 0x7FFFFFFF))
        av = builder.bitcast(av, f32)
        a = builder.load(acc)
        lane = builder.extract_element(a, loop.index)
        builder.store(builder.insert_element(a, builder.fadd(lane, av), loop.index), acc)
    a = builder.load(acc)
    vals = [builder.extract_element(a, ir.Constant(i32, i)) for i in range(L)]
    while len(vals) > 1:
        vals = [builder.fadd(vals[2 * i], vals[2 * i + 1]) for i in range(len(vals) // 2)]
    return vals[0]


@intrinsic
def sign_bits_sum_abs(typingctx: Any, x: Any, start: Any, n: Any, codes: Any, byte0: Any) -> Any:
    """Pack the bits x >= 0 of x[start:start+n] LSB-first into codes[byte0:] (start % 8 == 0);
    return sum |x| in float32 with a fixed order of additions."""
    if not (isinstance(x, types.Array) and x.dtype == types.float32 and x.layout == "C"
            and isinstance(codes, types.Array) and codes.dtype == types.uint8):
        return None
    return types.float32(x, start, n, codes, byte0), _bits_codegen
