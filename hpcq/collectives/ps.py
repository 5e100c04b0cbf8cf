"""Parameter-server style means: everything to a root (rank 0), which averages and broadcasts.

* :func:`ps_mean`: every rank's message is ``Gather``\\ ed (fixed length) or
  ``Gatherv``\\ ed (lengths gathered first) to the root, which decodes and
  averages them in rank order; the mean goes back with ``Bcast``, as fp32 or
  re-compressed with the same codec (rank word ``p*p``, seed ``second_seed``; every rank, the root
  included, then holds the decoded broadcast).
* :func:`ps_reduce_mean`: for the casts MPI can sum (fp32, fp16, bf16):
  ``Reduce`` of the raw words to the root, which scales by 1/p, then ``Bcast``
  in the same format.

The root's link carries p messages in and the broadcast out, which is why this
scheme stops scaling first; it is here to measure exactly that.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcq.collectives import Stats, average_messages, second_seed
from hpcq.collectives.allgather import _into, check_length, encode_own, split
from hpcq.collectives.baselines import from16, sum16_op, to16
from hpcq.collectives.scheme import BoundInputs, Cost, Scheme, check_out, lg, register, ring
from hpcq.collectives.session import Session
from hpcq.compressors import Compressor
from hpcq.feedback import ErrorFeedback
from hpcq.workloads.layout import Layout

ROOT = 0


def _gather(comm: Any, msg: np.ndarray, fixed: int | None) -> tuple[np.ndarray | None, Any]:
    """The messages at the root: (bytes, counts) there, (None, None) elsewhere."""
    from mpi4py import MPI

    p, rank = comm.Get_size(), comm.Get_rank()
    if fixed is not None:
        counts = np.full(p, fixed, dtype=np.int64)
        recv = np.empty(p * fixed, dtype=np.uint8) if rank == ROOT else None
        comm.Gather([msg, MPI.BYTE], [recv, MPI.BYTE] if recv is not None else None, root=ROOT)
    else:
        counts = np.empty(p, dtype=np.int64) if rank == ROOT else None
        comm.Gather([np.array([msg.shape[0]], dtype=np.int64), MPI.INT64_T],
                    [counts, MPI.INT64_T] if counts is not None else None, root=ROOT)
        recv = None
        if counts is not None:
            recv = np.empty(int(counts.sum()), dtype=np.uint8)
            displs = np.concatenate(([0], np.cumsum(counts)[:-1]))
            comm.Gatherv([msg, MPI.BYTE], [recv, (counts, displs), MPI.BYTE], root=ROOT)
        else:
            comm.Gatherv([msg, MPI.BYTE], None, root=ROOT)
    return (recv, counts) if rank == ROOT else (None, None)


def ps_mean(comm: Any, x: np.ndarray, comp: Compressor, *, seed: int = 0, step: int = 0,
            downlink: str = "fp32", feedback: ErrorFeedback | None = None,
            out: np.ndarray | None = None) -> tuple[np.ndarray, Stats]:
    """The mean of every rank's ``x``: compressed messages gathered to rank 0, mean broadcast.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        Every rank calls with the same ``comp``, ``seed``, ``step``, ``downlink``, length of ``x``.
    x : numpy.ndarray
        This rank's 1-D float vector.
    comp : Compressor
        The codec of the uplink (and of the downlink when ``downlink="compressed"``).
    seed, step : int
        The encode randomness.
    downlink : {"fp32", "compressed"}
        How the root broadcasts the mean.
    feedback : ErrorFeedback, optional
        This rank's error-feedback memory around ``comp`` for the uplink.
    out : numpy.ndarray, optional
        Contiguous float32 of length d: the root decodes, and every rank receives or
        decodes the broadcast, straight into it.

    Returns
    -------
    mean : numpy.ndarray
        float32 of length d, identical on every rank.
    stats : Stats
        The root's ``bytes_recv`` are the p - 1 other messages and its
        ``bytes_sent`` the broadcast (counted once); a worker sends its message
        and receives the broadcast.
    """
    from mpi4py import MPI

    if downlink not in ("fp32", "compressed"):
        raise ValueError(f"ps: downlink={downlink!r}; valid: fp32, compressed")
    p, rank, d = comm.Get_size(), comm.Get_rank(), int(x.shape[0])
    t0 = MPI.Wtime()
    msg = encode_own(x, comp, feedback, seed=seed, step=step, rank=rank)
    t1 = MPI.Wtime()
    fixed = comp.wire_bytes(d)
    check_length(comp, msg, fixed)
    recv, counts = _gather(comm, msg, fixed)
    t2 = MPI.Wtime()
    stats = Stats(t1 - t0, t2 - t1, 0.0, 0, 0)
    mean = np.empty(d, dtype=np.float32) if out is None else out
    down: np.ndarray | None = None
    if rank == ROOT:
        assert recv is not None and counts is not None  # the root has them, by _gather
        mean = average_messages(comp, split(recv, counts), d, out=mean)
        stats.bytes_recv = int(counts.sum()) - int(msg.shape[0])
        t3 = MPI.Wtime()
        stats.decode_s += t3 - t2
        if downlink == "compressed":
            down = comp.encode(mean, seed=second_seed(seed), step=step, rank=p * p)
            stats.encode_s += MPI.Wtime() - t3
    else:
        stats.bytes_sent = int(msg.shape[0])
    t4 = MPI.Wtime()
    if downlink == "fp32":
        comm.Bcast([mean, MPI.FLOAT], root=ROOT)
        nbytes = mean.nbytes
    else:
        down_fixed = comp.wire_bytes(d)
        nbytes = int(comm.bcast(down.shape[0] if down is not None else None, root=ROOT)
                     if down_fixed is None else down_fixed)
        if down is None:
            down = np.empty(nbytes, dtype=np.uint8)
        comm.Bcast([down, MPI.BYTE], root=ROOT)
    t5 = MPI.Wtime()
    stats.comm_s += t5 - t4
    if rank == ROOT:
        stats.bytes_sent = nbytes
    else:
        stats.bytes_recv = nbytes
    if down is not None:  # everyone, the root included, holds the decoded broadcast
        mean = comp.decode(down, out=mean)
        stats.decode_s += MPI.Wtime() - t5
    return mean, stats


def ps_reduce_mean(comm: Any, x: np.ndarray, kind: str = "fp32") -> tuple[np.ndarray, Stats]:
    """``Reduce`` of ``x`` cast to ``kind`` (fp32, fp16, bf16) to rank 0, scale, ``Bcast``.

    fp32 sums with ``MPI.SUM``; fp16 and bf16 with the 16-bit sum of
    :func:`~hpcq.collectives.baselines.sum16_op`.  The root scales by 1/p in
    float32 and broadcasts in ``kind``; every rank decodes that broadcast.
    """
    from mpi4py import MPI

    if kind not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"ps-reduce: cannot sum {kind!r} in MPI; valid: fp32, fp16, bf16")
    p, rank = comm.Get_size(), comm.Get_rank()
    owner = f"ps-reduce {kind}"
    t0 = MPI.Wtime()
    if kind == "fp32":
        words = np.ascontiguousarray(x, dtype=np.float32)
        mtype, op = MPI.FLOAT, MPI.SUM
    else:
        words = to16(kind, x, owner)
        mtype, op = MPI.UINT16_T, sum16_op(kind)
    t1 = MPI.Wtime()
    total = np.empty_like(words) if rank == ROOT else None
    comm.Reduce([words, mtype], [total, mtype] if total is not None else None, op=op, root=ROOT)
    t2 = MPI.Wtime()
    if total is not None:
        if kind == "fp32":
            total /= p
        else:
            total = to16(kind, from16(kind, total, owner) / np.float32(p), owner)
    else:
        total = np.empty_like(words)
    t3 = MPI.Wtime()
    comm.Bcast([total, mtype], root=ROOT)
    t4 = MPI.Wtime()
    mean = total if kind == "fp32" else from16(kind, total, owner)
    t5 = MPI.Wtime()
    nbytes = int(words.nbytes)
    stats = Stats(t1 - t0, (t2 - t1) + (t4 - t3), (t3 - t2) + (t5 - t4), nbytes,
                  (p - 1) * nbytes if rank == ROOT else nbytes)
    return mean, stats


_PS_BCAST = "scatter + ring-allgather Bcast"


class PS(Scheme):
    """Parameter server: messages gathered to rank 0, which averages and broadcasts fp32."""

    name = "ps"
    summary = "Gather(v) of the messages to rank 0, decode and average there, Bcast the fp32 mean"
    takes_feedback = True
    style = ("#009E73", "^", ":")
    cost = Cost(f"binomial Gather(v) to rank 0, {_PS_BCAST} of the fp32 mean",
                lambda p: 2 * lg(p) + (p - 1), lambda p, m, d: (p - 1) * m + ring(p) * 4 * d,
                lambda p: 1.0, lambda p: float(p),
                ("2 lg p + (p-1)", "(p-1) m + 2 (p-1)/p 4d", "1", "p"),
                message=lambda wire, d, p: max(0.0, (p * wire - 4 * d) / (p - 1)))
    downlink = "fp32"

    def mean(self, comm: Any, x: np.ndarray, comp: Compressor | None = None, *, seed: int = 0,
             step: int = 0, feedback: ErrorFeedback | None = None,
             session: Session | None = None, out: np.ndarray | None = None,
             layout: Layout | None = None) -> tuple[np.ndarray, Stats]:
        return ps_mean(comm, x, self._need(comp), seed=seed, step=step,
                       downlink=self.downlink, feedback=feedback,
                       out=None if out is None else
                       check_out(out, x.shape[0], f"scheme {self.name}"))

    def bound(self, comp: Compressor | None, d: int, p: int, inputs: BoundInputs
              ) -> float | None:
        from hpcq.bench.guarantees import averaged_bound

        return averaged_bound(self._need(comp), [d], p, inputs.sq_norms, inputs.mean_sq)


class PSCompressed(PS):
    """As :class:`PS`, with the mean re-compressed for the broadcast."""

    name = "ps-compressed"
    summary = "as ps, with the mean re-compressed for the Bcast"
    style = ("#D55E00", "D", (0, (5, 1)))
    cost = Cost(f"binomial Gather(v) to rank 0, {_PS_BCAST} of the m-byte mean",
                lambda p: 2 * lg(p) + (p - 1), lambda p, m, d: (p - 1) * m + ring(p) * m,
                lambda p: 2.0, lambda p: p + 1.0,
                ("2 lg p + (p-1)", "(p-1) m + 2 (p-1)/p m", "2", "p + 1"))
    downlink = "compressed"

    def bound(self, comp: Compressor | None, d: int, p: int, inputs: BoundInputs
              ) -> float | None:
        from hpcq.bench.guarantees import recompressed_bound

        return recompressed_bound(self._need(comp), [d], p, inputs.sq_norms, inputs.mean_sq)


class PSReduce(Scheme):
    """Reduce of fp32/fp16/bf16 words to rank 0 (MPI sums them), scale there, Bcast."""

    name = "ps-reduce"
    summary = "Reduce of fp32/fp16/bf16 words to rank 0, scale, Bcast"
    codecs = ("fp32", "fp16", "bf16")
    style = ("#CC79A7", "v", (0, (1, 1)))
    cost = Cost(f"Rabenseifner Reduce to rank 0, {_PS_BCAST}", lambda p: 3 * lg(p) + (p - 1),
                lambda p, n, d: 2 * ring(p) * n, lambda p: 1.0, lambda p: 1.0,
                ("3 lg p + (p-1)", "4 (p-1)/p n", "1", "1"))

    def mean(self, comm: Any, x: np.ndarray, comp: Compressor | None = None, *, seed: int = 0,
             step: int = 0, feedback: ErrorFeedback | None = None,
             session: Session | None = None, out: np.ndarray | None = None,
             layout: Layout | None = None) -> tuple[np.ndarray, Stats]:
        if comp is None:
            raise ValueError("scheme ps-reduce needs a compressor (fp32, fp16 or bf16)")
        mean, st = ps_reduce_mean(comm, x, comp.name)
        return _into(mean, out), st

    def sums_in(self, comp: Compressor | None) -> str | None:
        return None if comp is None else str(comp.name)

    def bound(self, comp: Compressor | None, d: int, p: int, inputs: BoundInputs
              ) -> float | None:
        from hpcq.bench.guarantees import cast_bound

        kind = self.sums_in(comp)
        return None if kind is None else cast_bound(self.name, kind, p, d, inputs.abs_sum,
                                                    inputs.abs_sq, inputs.mean_sq)


register(PS())
register(PSCompressed())
register(PSReduce())
