"""The homomorphic integer mean ``allreduce-int`` (THC / IntSGD style): MPI adds integers.

1. Optionally (``rotate=true``) every rank applies the same randomized Hadamard rotation
   (block :data:`~hpcq.compressors.base.DEFAULT_ROTATION_BLOCK`, or less for short
   vectors; signs from ``Keys.derive(seed, step).signs``, as the codecs' rotation), which
   spreads a few large coordinates over their block.
2. One tiny ``Allreduce(MAX)`` of ``max_j |x_ij|`` agrees on ``scale = max / q`` with
   ``q = (2^(bits-1) - 1) >> ceil(log2 p)`` (:func:`hpcq.kernels.intsum.levels`): the p
   codes of a coordinate lie in ``[-q, q]``, so their sum fits the signed word with
   ceil(log2 p) bits of headroom.  Overflow is impossible by construction (and the
   kernel clamps to ``[-q, q]`` against float rounding of ``x / scale``).
3. Every rank rounds ``x_i / scale`` stochastically onto the integers (private randomness
   ``Keys.derive(seed, step, rank).private``; unbiased).
4. MPI's own ``Allreduce(SUM)`` on int8/int16/int32 adds them, so any MPI algorithm, or a
   reducing network, can carry it; bits per coordinate on the wire = the word width
   (plus the 8 bytes of the max).
5. ``mean = sum * scale / p``, then the inverse rotation once.

Guarantee (:meth:`AllreduceInt.bound`): stochastic rounding onto a grid of step ``scale``
has variance ``frac (1 - frac) scale^2 <= scale^2 / 4`` per coordinate, independent
across ranks and coordinates and unbiased, so ``E||mhat - m||^2 <= n scale^2 / (4 p)``
(n the rotated, padded length; the rotation is orthonormal, so norms carry over).  With
``scale = max / q <= max_i ||x_i|| / q`` (a coordinate is at most the vector's norm),
``NMSE <= n max_i ||x_i||^2 / (4 p q^2 ||m||^2)``, plus a float32 allowance
``R = (k + 6) u sum_i ||x_i|| / (p ||m||)`` (the rotation's k + 2 levels both ways, the
final float32 cast; u = 2^-24) as ``(sqrt(b) + R)^2``.  Loose by the ratio of the
largest coordinate to the norm (about sqrt(d / log d) for Gaussian data), but it holds
for every input.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hpcq.collectives import Stats
from hpcq.collectives.baselines import _output
from hpcq.collectives.scheme import BoundInputs, Cost, Scheme, lg, register, ring
from hpcq.collectives.session import Session, reused
from hpcq.compressors import Compressor
from hpcq.compressors.base import DEFAULT_ROTATION_BLOCK, Keys, Param, rotation_block_for
from hpcq.workloads.layout import Layout

_MPI_WORDS = {8: "INT8_T", 16: "INT16_T", 32: "INT32_T"}


def int_mean(comm: Any, x: np.ndarray, *, bits: int = 16, rotate: bool = False, seed: int = 0,
             step: int = 0, session: Session | None = None, out: np.ndarray | None = None
             ) -> tuple[np.ndarray, Stats]:
    """The mean of every rank's ``x`` through an integer ``Allreduce(SUM)`` (module docstring).

    ``encode_s``: rotation and rounding; ``comm_s``: both allreduces; ``decode_s``: the
    scaling and the inverse rotation.  ``bytes_sent = bytes_recv = 8 + d' bits / 8`` (d'
    the rotated, padded length).
    """
    from mpi4py import MPI

    from hpcq.kernels import hadamard, intsum

    t0 = MPI.Wtime()
    p, rank = comm.Get_size(), comm.Get_rank()
    q = intsum.levels(bits, p)
    x32 = x if x.dtype == np.float32 and x.flags.c_contiguous else np.ascontiguousarray(
        x, dtype=np.float32)
    d = x32.shape[0]
    keys = Keys.derive(seed, step, rank)
    block = rotation_block_for(d, DEFAULT_ROTATION_BLOCK) if rotate else 0
    y = hadamard.rotate(x32, block, int(keys.signs)) if block else x32
    local = np.array([intsum.max_abs(y)], dtype=np.float32)
    t1 = MPI.Wtime()
    top = np.empty(1, dtype=np.float32)
    comm.Allreduce([local, MPI.FLOAT], [top, MPI.FLOAT], op=MPI.MAX)
    t2 = MPI.Wtime()
    scale = float(top[0]) / q
    owner = f"allreduce-int{bits}"
    word = intsum.WORDS[bits]
    n = y.shape[0]
    codes = intsum.round_to_grid(y, scale, q, int(keys.private), bits,
                                 out=reused(session, owner + ".send", n, word))
    total = reused(session, owner + ".recv", n, word)
    t3 = MPI.Wtime()
    mpi_word = getattr(MPI, _MPI_WORDS[bits])
    comm.Allreduce([codes, mpi_word], [total, mpi_word], op=MPI.SUM)
    t4 = MPI.Wtime()
    if block:
        z = intsum.decode_sum(total, scale, p)
        mean = hadamard.unrotate(z, block, int(keys.signs), d,
                                 out=_output(d, out, session, owner))
    else:
        mean = intsum.decode_sum(total, scale, p, out=_output(d, out, session, owner))
    t5 = MPI.Wtime()
    nbytes = 4 + codes.nbytes
    return mean, Stats((t1 - t0) + (t3 - t2), (t2 - t1) + (t4 - t3), t5 - t4, nbytes, nbytes)


class AllreduceInt(Scheme):
    """Shared scale by Allreduce(MAX), stochastic rounding to integers, integer Allreduce(SUM)."""

    name = "allreduce-int"
    summary = ("homomorphic integer mean: Allreduce(MAX) of max|x| for a shared scale, "
               "stochastic rounding, MPI Allreduce(SUM) on int8/16/32 (THC, IntSGD)")
    #: It takes no compressor (its word width is a parameter); a benchmark case names its
    #: input format, fp32, as the spec.
    takes_compressor = False
    params = (
        Param("bits", int, 16, "integer word width of the sum", choices=(8, 16, 32)),
        Param("rotate", bool, False, "shared randomized Hadamard rotation before rounding"),
    )
    style = ("#D55E00", "D", (0, (5, 2)))
    cost = Cost("recursive-doubling Allreduce(MAX) of one float, then Rabenseifner "
                "Allreduce(SUM) of b-bit words", lambda p: 3 * lg(p),
                lambda p, n, d: ring(p) * n, lambda p: 1.0, lambda p: 1.0,
                ("3 lg p", "2 (p-1)/p n_b", "1", "1"))

    def mean(self, comm: Any, x: np.ndarray, comp: Compressor | None = None, *, seed: int = 0,
             step: int = 0, feedback: Any = None, session: Session | None = None,
             out: np.ndarray | None = None, layout: Layout | None = None
             ) -> tuple[np.ndarray, Stats]:
        return int_mean(comm, x, bits=self.p["bits"], rotate=self.p["rotate"], seed=seed,
                        step=step, session=session, out=out)

    def sums_in(self, comp: Compressor | None) -> str | None:
        """It sums integers, not a float format."""
        return None

    def bound(self, comp: Compressor | None, d: int, p: int, inputs: BoundInputs
              ) -> float | None:
        from hpcq.kernels.intsum import levels

        if inputs.mean_sq <= 0:
            return None
        q = levels(self.p["bits"], p)
        block = rotation_block_for(d, DEFAULT_ROTATION_BLOCK) if self.p["rotate"] else 0
        n = -(-d // block) * block if block else d
        b = n * max(inputs.sq_norms) / (4.0 * p * q * q * inputs.mean_sq)
        k = max(0, block.bit_length() - 1)
        norms = float(np.sum(np.sqrt(np.asarray(inputs.sq_norms, dtype=np.float64))))
        r = (k + 6) * 2.0**-24 * norms / (p * math.sqrt(inputs.mean_sq))
        return (math.sqrt(b) + r) ** 2


register(AllreduceInt())
