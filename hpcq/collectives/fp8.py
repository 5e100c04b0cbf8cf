"""``allreduce-fp8``: an FP8 allreduce that MPI sums on the wire, one byte per coordinate.

``allreduce-fp8:format=e4m3|e5m2``.  One call:

1. ``A = max_i max_j |x_ij|`` by ``Allreduce(MAX)`` of one float32 (4 bytes);
2. one shared scale ``s = float32(p A c / F)`` (F the format's largest finite value,
   ``c`` the margin below), so every rank casts ``y_i = code(float32(x_i / s))`` with
   :func:`hpcq.kernels.fp8.cast_scaled` (round to nearest even, the codecs' cast);
3. ``Allreduce`` of the d code bytes with a user-defined operation
   (:func:`sum8_op`): each pairwise addition decodes both codes, adds in float32 and
   rounds once back to the format (:func:`hpcq.kernels.fp8.sum8`), as a reduction in
   FP8 on the wire does (NCCL's FP8 allreduce since 2.27 adds in higher precision and
   rounds back the same way);
4. decode ``value * s``, then divide by p, in float32.

The margin ``c = (1 + u_in)(1 + u_a)^(p-1)`` with ``u_in``, ``u_a`` of
:func:`fp8_sum_bound` keeps every partial sum of any reduction tree at most F, so the
sum never saturates: a rounded input is at most ``(1 + u_in)`` times its value (plus
half a subnormal step, which the scale also leaves room for), and each addition adds
at most a factor ``1 + u_a``.  The price is range: the largest code a rank sends is
F / 2.3 at p = 2 (e4m3), F / 42 at p = 16, F / 3100 at p = 64 (12 of e4m3's 18 binades
gone); from 136 (e4m3) or 152 (e5m2) ranks on no scale is safe and the scheme refuses.
Bytes: ``d + 4`` per rank (the codes and the max).
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np

from hpcq.collectives import Stats
from hpcq.collectives.scheme import BoundInputs, Cost, Scheme, lg, register, ring
from hpcq.collectives.session import Session, reused
from hpcq.compressors import Compressor
from hpcq.compressors.base import Param
from hpcq.kernels import checks, fp8
from hpcq.workloads.layout import Layout

#: Unit roundoff of round-to-nearest in each format (``2^-(m+1)``, m mantissa bits).
UNIT_ROUNDOFF = {"e4m3": 2.0**-4, "e5m2": 2.0**-3}
#: Half the smallest subnormal: the largest error of rounding into the subnormal range.
UNDERFLOW = {"e4m3": 2.0**-10, "e5m2": 2.0**-17}
U32 = 2.0**-24
ETA32 = 2.0**-150


def roundoffs(fmt: str) -> tuple[float, float]:
    """``(u_in, u_a)``: the input cast (a float32 product, then the format: a double
    rounding) and one addition of the reduction (decode, add in float32, round to the
    format; the float32 sum of two codes is exact, so its ``u32`` is slack, kept to match
    :func:`hpcq.bench.guarantees.cast_bound`)."""
    u8 = UNIT_ROUNDOFF[fmt]
    u = u8 + U32 + u8 * U32
    return u, u


def shared_scale(fmt: str, p: int, amax: float) -> float:
    """The float32 scale of ``p`` ranks whose largest |x| is ``amax`` (module docstring);
    0 for an all-zero input; ValueError when p ranks cannot sum without saturating."""
    u_in, u_a = roundoffs(fmt)
    grow = (1 + u_a) ** (p - 1)
    fmax = fp8.max_finite(fmt)
    room = fmax / (p * grow) - UNDERFLOW[fmt]  # largest rounded |y| the sums allow
    if room <= 0:
        raise ValueError(f"scheme allreduce-fp8: {p} ranks cannot sum in {fmt} without "
                         f"overflow (rounding growth {grow:.3g}); use fewer ranks or "
                         f"allreduce-bf16")
    s = np.float32(amax * (1 + u_in) / room)
    if amax > 0 and amax / float(s) * (1 + u_in) > room:  # float32 rounded s down: one ulp up
        s = np.nextafter(s, np.float32(np.inf))
    return float(s)


@cache
def sum8_op(fmt: str) -> Any:
    """The commutative MPI operation summing FP8 ``fmt`` codes (bytes); one per process."""
    from mpi4py import MPI

    def op(inbuf: Any, inoutbuf: Any, datatype: Any) -> None:
        a = np.frombuffer(inbuf, dtype=np.uint8)
        b = np.frombuffer(inoutbuf, dtype=np.uint8)
        fp8.sum8(fmt, a, b)  # an overflow becomes the NaN code; the decode reports it

    return MPI.Op.Create(op, commute=True)


def fp8_sum_bound(fmt: str, p: int, d: int, inputs: BoundInputs) -> float | None:
    """NMSE bound of :class:`AllreduceFP8`, derived as :func:`~hpcq.bench.guarantees.cast_bound`.

    In the scaled domain (``y = x / s``): input cast ``|yt - y| <= u_in |y| + eta8``;
    the sum, each term through at most p - 1 additions, ``|shat - sum yt| <=
    ((1 + u_a)^(p-1) - 1) sum |yt|`` (Higham's product bound; sums that land in the
    subnormal range are exact, both codes being multiples of its step); decoding
    ``* s`` and ``/ p`` in float32, ``1 + theta <= (1 + u32)^2`` (and the float64
    reciprocal's ``2^-52``).  Back in x's units ``|mhat_j - m_j| <= c1 a_j + c0`` with
    ``c1 = (b1 (1 + theta) + theta) / p``, ``b1 = u_in + g (1 + u_in)``, ``c0 = (1 + g)
    s eta8 (1 + theta) + eta32``.  ``s`` grows with ``A = max |x|``, which the inputs
    give only through ``A <= max_i ||x_i||``: the bound uses that (loose only in ``c0``,
    which is negligible unless the values are near the format's underflow).
    """
    if inputs.mean_sq <= 0 or not inputs.sq_norms:
        return None
    u_in, u_a = roundoffs(fmt)
    g = (1 + u_a) ** (p - 1) - 1
    theta = (1 + U32) ** 2 * (1 + 2.0**-52) - 1
    try:
        s = shared_scale(fmt, p, math.sqrt(max(inputs.sq_norms)))
    except ValueError:
        return None
    eta_in = s * (UNDERFLOW[fmt] + ETA32)
    b1 = u_in + g * (1 + u_in)
    c1 = (b1 * (1 + theta) + theta) / p
    c0 = (1 + g) * eta_in * (1 + theta) + ETA32
    return (c1 * c1 * inputs.abs_sq + 2 * c1 * c0 * inputs.abs_sum + d * c0 * c0) / inputs.mean_sq


class AllreduceFP8(Scheme):
    """FP8 codes summed by MPI (decode, add in float32, round back) under one shared scale."""

    name = "allreduce-fp8"
    summary = "shared-scale FP8 cast, Allreduce with an FP8 sum (1 byte per coordinate), scale"
    params = (Param("format", str, "e4m3", "element format", choices=("e4m3", "e5m2")),)
    takes_compressor = False
    cost = Cost("Allreduce(MAX) of one float, then Rabenseifner on 1-byte codes",
                lambda p: 4 * lg(p), lambda p, m, d: ring(p) * m, lambda p: 1.0,
                lambda p: 1.0, ("4 lg p", "2 (p-1)/p m", "1", "1"))
    style = ("0.3", "d", (0, (1, 1)))

    @property
    def sends(self) -> str:
        """FP8 codes with one float32 scale: the ``fp8`` codec's spec of that format."""
        return f"fp8:format={self.p['format']}"

    def mean(self, comm: Any, x: np.ndarray, comp: Compressor | None = None, *, seed: int = 0,
             step: int = 0, feedback: Any = None, session: Session | None = None,
             out: np.ndarray | None = None, layout: Layout | None = None
             ) -> tuple[np.ndarray, Stats]:
        from mpi4py import MPI

        from hpcq.collectives.baselines import _output

        if comp is not None:
            self.check(comp)
        fmt, owner = str(self.p["format"]), self.spec
        t0 = MPI.Wtime()
        p = comm.Get_size()
        x32 = x if x.dtype == np.float32 and x.flags.c_contiguous else np.ascontiguousarray(
            x, dtype=np.float32)
        d = int(x32.shape[0])
        amax, bad = checks.maxabs_nonfinite(x32)
        if bad:
            raise ValueError(f"{owner}: x holds {bad} NaN/Inf value(s)")
        t1 = MPI.Wtime()
        big = np.array([amax], dtype=np.float32)
        comm.Allreduce(MPI.IN_PLACE, [big, MPI.FLOAT], op=MPI.MAX)
        t2 = MPI.Wtime()
        s = shared_scale(fmt, p, float(big[0]))
        # payload layout of the fp8 codec (float32 scale, then the codes) so its decoder
        # reads the sum; only the codes travel
        send = reused(session, owner + ".send", 4 + d, np.uint8)
        recv = reused(session, owner + ".recv", 4 + d, np.uint8)
        fp8.cast_scaled(x32, 1.0 / s if s > 0 else 0.0, fmt, send[4:])
        t3 = MPI.Wtime()
        comm.Allreduce([send[4:], MPI.UINT8_T], [recv[4:], MPI.UINT8_T], op=sum8_op(fmt))
        t4 = MPI.Wtime()
        recv[:4].view(np.float32)[0] = s
        y = _output(d, out, session, owner)
        try:
            fp8.fp8_decode(recv, d, fmt=fmt, bucket=0, out=y)
        except ValueError:
            raise ValueError(f"{owner}: the {fmt} sum overflowed (a rank's input changed "
                             f"between the max and the cast?)") from None
        if p > 1:
            np.divide(y, np.float32(p), out=y)
        t5 = MPI.Wtime()
        return y, Stats((t1 - t0) + (t3 - t2), (t2 - t1) + (t4 - t3), t5 - t4, d + 4, d + 4)

    def bound(self, comp: Compressor | None, d: int, p: int, inputs: BoundInputs
              ) -> float | None:
        return fp8_sum_bound(str(self.p["format"]), p, d, inputs)


register(AllreduceFP8())
