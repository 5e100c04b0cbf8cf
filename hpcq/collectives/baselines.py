"""The uncompressed baselines: fp32 ``Allreduce``, and fp16/bf16 ``Allreduce`` with a 16-bit sum.

The 16-bit sums run in a user-defined MPI operation (:func:`sum16_op`) over
raw uint16 words: each pairwise addition is done in float32 and rounded once
to the 16-bit format, as a 16-bit reduction on the wire does.  The sum is
scaled by 1/p afterwards (as for fp32), so a sum past the largest fp16
(65504) overflows: that is reported as an error, never returned as Inf.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from hpcq.collectives import Stats
from hpcq.collectives.scheme import BoundInputs, Cost, Scheme, check_out, lg, register, ring
from hpcq.collectives.session import Session, reused
from hpcq.compressors import Compressor
from hpcq.compressors.base import Param
from hpcq.kernels import cast
from hpcq.workloads.layout import Layout

#: Largest finite value of each 16-bit format (for the overflow message).
LARGEST = {"fp16": 65504.0, "bf16": 3.3895313892515355e38}


def allreduce_mean(comm: Any, x: np.ndarray, *, out: np.ndarray | None = None,
                   session: Session | None = None) -> tuple[np.ndarray, Stats]:
    """The fp32 baseline: ``Allreduce`` (sum) of every rank's ``x``, then scale by ``1/p``.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        Every rank calls with a vector of the same length.
    x : numpy.ndarray
        This rank's 1-D float vector (converted to float32).
    out : numpy.ndarray, optional
        float32 of length d that receives the mean (and is returned).
    session : Session, optional
        Lends a reused output buffer when ``out`` is not given: the strongest honest
        baseline allocates nothing per call, as a framework's bucket does.  With
        ``session.defer_scale`` the sum is returned and ``stats.scale`` is 1/p: the
        consumer folds it into its step (see :mod:`hpcq.collectives.session`).

    Returns
    -------
    mean : numpy.ndarray
        float32 of length d (the sum when deferred).
    stats : Stats
        ``encode_s`` is 0, ``decode_s`` the scaling; both byte counts are ``4 d``.
    """
    from mpi4py import MPI

    t0 = MPI.Wtime()  # the output's allocation (if any) is part of the collective's cost
    p = comm.Get_size()
    x32 = x if x.dtype == np.float32 and x.flags.c_contiguous else np.ascontiguousarray(
        x, dtype=np.float32)
    y = _output(x32.shape[0], out, session, "allreduce-fp32")
    comm.Allreduce([x32, MPI.FLOAT], [y, MPI.FLOAT], op=MPI.SUM)
    t1 = MPI.Wtime()
    if p > 1 and session is not None and session.defer_scale:
        return y, Stats(0.0, t1 - t0, 0.0, x32.nbytes, x32.nbytes, scale=1.0 / p)
    if p > 1:
        np.divide(y, p, out=y)
    t2 = MPI.Wtime()
    return y, Stats(0.0, t1 - t0, t2 - t1, x32.nbytes, x32.nbytes)


def _output(d: int, out: np.ndarray | None, session: Session | None, owner: str) -> np.ndarray:
    """Where a baseline writes its mean: ``out``, the session's buffer, or a new array."""
    if out is not None:
        return check_out(out, d, owner)
    return reused(session, owner, d)


#: From this many elements the fp32 baseline's ``auto`` algorithm reduce-scatters, scales its
#: own 1/p of the sum and allgathers (see :func:`rsag_mean`); below it, one ``Allreduce``.
RSAG_MIN_ELEMENTS = 1 << 23  # measured on 2 ranks (MPICH, shared memory): faster only at 2^24


def rsag_mean(comm: Any, x: np.ndarray, *, out: np.ndarray | None = None,
              session: Session | None = None) -> tuple[np.ndarray, Stats]:
    """The fp32 mean as ``Reduce_scatter`` (sum) + scaling of this rank's chunk + ``Allgatherv``.

    The same reduction as Rabenseifner's allreduce, which MPI libraries use for large
    vectors anyway, but the 1/p scaling touches only this rank's d/p entries instead of a
    whole extra pass over d after the ``Allreduce``: the mean then costs what the plain
    sum costs.  Chunks as :func:`hpcq.collectives.chunk_bounds` (the first d % p longer).
    """
    from mpi4py import MPI

    from hpcq.collectives import chunk_bounds

    t0 = MPI.Wtime()
    p, rank = comm.Get_size(), comm.Get_rank()
    x32 = x if x.dtype == np.float32 and x.flags.c_contiguous else np.ascontiguousarray(
        x, dtype=np.float32)
    d = x32.shape[0]
    y = _output(d, out, session, "allreduce-fp32")
    bounds = chunk_bounds(d, p)
    counts = np.diff(bounds)
    lo, hi = int(bounds[rank]), int(bounds[rank + 1])
    comm.Reduce_scatter([x32, MPI.FLOAT], [y[lo:hi], MPI.FLOAT], recvcounts=counts.tolist(),
                        op=MPI.SUM)
    t1 = MPI.Wtime()
    if p > 1:
        np.divide(y[lo:hi], p, out=y[lo:hi])
    t2 = MPI.Wtime()
    comm.Allgatherv(MPI.IN_PLACE, [y, (counts, bounds[:-1]), MPI.FLOAT])
    t3 = MPI.Wtime()
    return y, Stats(0.0, (t1 - t0) + (t3 - t2), t2 - t1, x32.nbytes, x32.nbytes)


def iallreduce_mean(comm: Any, x: np.ndarray) -> Any:
    """Start :func:`allreduce_mean` with ``Iallreduce``; returns a :class:`Pending`.

    ``wait()`` gives ``(mean, stats)``: the staleness of the asynchronous gradient
    methods (:mod:`hpcq.algorithms`) needs an uncompressed baseline that can overlap too.
    """
    from mpi4py import MPI

    from hpcq.collectives.allgather import Pending

    t0 = MPI.Wtime()
    p = comm.Get_size()
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x32)
    request = comm.Iallreduce([x32, MPI.FLOAT], [out, MPI.FLOAT], op=MPI.SUM)
    stats = Stats(0.0, MPI.Wtime() - t0, 0.0, x32.nbytes, x32.nbytes)

    def finish(st: Stats) -> np.ndarray:
        t = MPI.Wtime()
        np.divide(out, p, out=out)
        st.decode_s += MPI.Wtime() - t
        return out

    return Pending([request], finish, stats, keep=(x32, out))


@cache
def sum16_op(kind: str) -> Any:
    """The commutative MPI operation summing uint16 words as ``kind`` ("fp16" or "bf16").

    Created once per process and kept (MPI frees it at finalisation).
    """
    from mpi4py import MPI

    def op(inbuf: Any, inoutbuf: Any, datatype: Any) -> None:
        a = np.frombuffer(inbuf, dtype=np.uint16)
        b = np.frombuffer(inoutbuf, dtype=np.uint16)
        cast.sum16(kind, a, b)  # an overflow becomes Inf; the caller checks the result

    return MPI.Op.Create(op, commute=True)


def to16(kind: str, x: np.ndarray, owner: str, out: np.ndarray | None = None) -> np.ndarray:
    """The 16-bit words of float vector ``x`` (into ``out`` when given); ValueError naming
    ``owner`` if any overflow."""
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    words = np.empty(x32.shape[0], dtype=np.uint16) if out is None else out
    bad = (cast.to_fp16 if kind == "fp16" else cast.to_bf16)(x32, words)
    if bad:
        i = int(np.flatnonzero(~(np.abs(x32) < LARGEST[kind]))[0])
        raise ValueError(f"{owner}: x[{i}] = {x32[i]} is not finite or beyond {kind}'s "
                         f"largest value {LARGEST[kind]:g}")
    return words


def from16(kind: str, words: np.ndarray, owner: str, out: np.ndarray | None = None
           ) -> np.ndarray:
    """float32 values of 16-bit ``words`` (into ``out`` when given); ValueError if a sum
    overflowed to Inf."""
    y = (cast.from_fp16 if kind == "fp16" else cast.from_bf16)(words, out=out)
    if not np.isfinite(y).all():
        raise ValueError(f"{owner}: the {kind} sum overflowed (|sum| > {LARGEST[kind]:g}); "
                         f"use bf16 or fp32 for values this large")
    return y


def allreduce_cast_mean(comm: Any, x: np.ndarray, kind: str, *,
                        out: np.ndarray | None = None, session: Session | None = None
                        ) -> tuple[np.ndarray, Stats]:
    """Cast to ``kind`` ("fp16"/"bf16"), ``Allreduce`` with a 16-bit sum, decode, scale by 1/p.

    ``encode_s`` is the cast, ``decode_s`` the conversion back and the scaling;
    both byte counts are ``2 d``.  Raises ValueError if an input or the sum
    does not fit the format.  ``out``/``session`` as for :func:`allreduce_mean`
    (the session also lends the two word buffers; ``defer_scale`` leaves the sum).
    """
    from mpi4py import MPI

    if kind not in LARGEST:
        raise ValueError(f"allreduce: unknown 16-bit format {kind!r}; valid: fp16, bf16")
    t0 = MPI.Wtime()
    owner = f"allreduce-{kind}"
    p, d = comm.Get_size(), int(x.shape[0])
    words = to16(kind, x, owner, out=reused(session, owner + ".send", d, np.uint16))
    t1 = MPI.Wtime()
    total = reused(session, owner + ".recv", d, np.uint16)
    comm.Allreduce([words, MPI.UINT16_T], [total, MPI.UINT16_T], op=sum16_op(kind))
    t2 = MPI.Wtime()
    mean = from16(kind, total, owner, out=_output(d, out, session, owner))
    defer = p > 1 and session is not None and session.defer_scale
    if p > 1 and not defer:
        np.divide(mean, p, out=mean)
    t3 = MPI.Wtime()
    return mean, Stats(t1 - t0, t2 - t1, t3 - t2, words.nbytes, words.nbytes,
                       scale=1.0 / p if defer else 1.0)


class Allreduce(Scheme):
    """The uncompressed baselines: ``Allreduce`` in fp32, or in fp16/bf16 with a 16-bit sum."""

    nonblocking = False
    takes_compressor = False
    cost = Cost("Rabenseifner: recursive-halving reduce-scatter, recursive-doubling allgather",
                lambda p: 2 * lg(p), lambda p, n, d: ring(p) * n, lambda p: 1.0, lambda p: 1.0,
                ("2 lg p", "2 (p-1)/p n", "1", "1"))

    def mean(self, comm: Any, x: np.ndarray, comp: Compressor | None = None, *, seed: int = 0,
             step: int = 0, feedback: Any = None, session: Session | None = None,
             out: np.ndarray | None = None, layout: Layout | None = None
             ) -> tuple[np.ndarray, Stats]:
        if self.cast == "fp32":
            return allreduce_mean(comm, x, out=out, session=session)
        return allreduce_cast_mean(comm, x, str(self.cast), out=out, session=session)

    def bound(self, comp: Compressor | None, d: int, p: int, inputs: BoundInputs
              ) -> float | None:
        from hpcq.bench.guarantees import cast_bound

        return cast_bound(self.name, str(self.cast), p, d, inputs.abs_sum, inputs.abs_sq,
                          inputs.mean_sq)


class AllreduceFP32(Allreduce):
    """fp32 ``Allreduce`` (sum), then scale by 1/p; with a nonblocking form (``Iallreduce``)."""

    name = "allreduce-fp32"
    summary = "fp32 Allreduce (sum), then scale by 1/p: the baseline"
    cast = "fp32"
    nonblocking = True
    style = ("#000000", "X", "--")
    params = (Param("algorithm", str, "auto", "allreduce: MPI's Allreduce then scale d entries; "
                    "rsag: Reduce_scatter, scale d/p, Allgatherv; auto: rsag from "
                    f"{RSAG_MIN_ELEMENTS} elements unless the consumer folds in the 1/p",
                    choices=("auto", "allreduce", "rsag")),)

    def mean(self, comm: Any, x: np.ndarray, comp: Compressor | None = None, *, seed: int = 0,
             step: int = 0, feedback: Any = None, session: Session | None = None,
             out: np.ndarray | None = None, layout: Layout | None = None
             ) -> tuple[np.ndarray, Stats]:
        alg = self.p["algorithm"]
        # auto: a deferred scaling leaves the plain Allreduce nothing to beat
        if alg == "rsag" or (alg == "auto" and x.shape[0] >= RSAG_MIN_ELEMENTS
                             and comm.Get_size() > 1
                             and not (session is not None and session.defer_scale)):
            return rsag_mean(comm, x, out=out, session=session)
        return allreduce_mean(comm, x, out=out, session=session)

    def start(self, comm: Any, x: np.ndarray, comp: Compressor | None = None, *, seed: int = 0,
              step: int = 0, feedback: Any = None, session: Session | None = None) -> Any:
        return iallreduce_mean(comm, x)


class AllreduceFP16(Allreduce):
    name = "allreduce-fp16"
    summary = "fp16 cast, Allreduce with a 16-bit sum, then scale"
    cast = "fp16"
    style = ("0.45", "P", (0, (3, 1, 1, 1)))


class AllreduceBF16(Allreduce):
    name = "allreduce-bf16"
    summary = "bf16 cast, Allreduce with a 16-bit sum, then scale"
    cast = "bf16"
    style = ("0.65", "*", (0, (3, 1, 1, 1, 1, 1)))


class MPIAllreduce(Allreduce):
    """The plain ``comm.Allreduce(x, y)`` (sum) into a reused buffer: the timing reference.

    Not a mean (no scaling by 1/p), so it has no accuracy and no guarantee; it is the
    yardstick the fp32 baseline is held to (the baseline adds only the 1/p scaling).
    """

    name = "mpi-allreduce"
    summary = "plain comm.Allreduce(x, y) into a reused buffer (the sum): timing reference"
    cast = "fp32"
    reference = True
    style = ("0.2", "x", (0, (1, 1)))

    def mean(self, comm: Any, x: np.ndarray, comp: Compressor | None = None, *, seed: int = 0,
             step: int = 0, feedback: Any = None, session: Session | None = None,
             out: np.ndarray | None = None, layout: Layout | None = None
             ) -> tuple[np.ndarray, Stats]:
        from mpi4py import MPI

        t0 = MPI.Wtime()
        y = _output(x.shape[0], out, session, self.name)
        comm.Allreduce([x, MPI.FLOAT], [y, MPI.FLOAT], op=MPI.SUM)
        return y, Stats(0.0, MPI.Wtime() - t0, 0.0, x.nbytes, x.nbytes)

    def bound(self, comp: Compressor | None, d: int, p: int, inputs: BoundInputs
              ) -> float | None:
        return None


register(AllreduceFP32())
register(AllreduceFP16())
register(AllreduceBF16())
register(MPIAllreduce())
