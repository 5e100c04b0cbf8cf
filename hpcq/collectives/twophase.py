"""The two-phase compressed allreduce: Alltoall(v) of chunks, then Allgather(v).

Rank r splits its vector into p contiguous chunks (:func:`chunk_bounds`; the
first ``d % p`` one entry longer) and compresses chunk j for rank j (rank word
``r*p + j``).  Phase 1 exchanges them: rank j receives chunk j from every
rank, decodes and averages them in rank order.  Phase 2: rank j compresses
that average (rank word ``p*p + j``, seed :func:`second_seed`) and the p averaged
chunks are allgathered;
every rank decodes them all and concatenates.  Each rank sends about
``2 d bits`` (p-1 chunk messages of ``d/p`` entries, then one), instead of the
``p d bits`` every rank receives in :func:`~hpcq.collectives.allgather_mean`.

Fixed-length codecs exchange with ``Alltoall``: each message is padded to the
longest chunk message (at most a few bytes when ``d % p != 0``) and sliced back
before decoding; the padding counts in ``bytes_sent``.  Variable-length codecs
first ``Alltoall`` the lengths, then ``Alltoallv``.  Error feedback is
optional on each phase: a worker memory of length d around phase 1 and a
server memory of the chunk's length around phase 2 (DeepSpeed's 1-bit
allreduce keeps both).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcq.collectives import (
    Scheme,
    Stats,
    average_messages,
    chunk_bounds,
    register,
    second_seed,
)
from hpcq.collectives.allgather import Pending, _start, check_length, encode_own, split
from hpcq.compressors import Compressor
from hpcq.feedback import ErrorFeedback


def _phase1_messages(x: np.ndarray, comp: Compressor, bounds: np.ndarray,
                     feedback: ErrorFeedback | None, *, seed: int, step: int, rank: int
                     ) -> list[np.ndarray]:
    """Chunk j of ``x`` (compensated by ``feedback``) encoded for rank j, j = 0..p-1."""
    p = bounds.shape[0] - 1
    y = x if feedback is None else feedback.compensate(x)
    msgs = [comp.encode(y[bounds[j]:bounds[j + 1]], seed=seed, step=step, rank=rank * p + j)
            for j in range(p)]
    if feedback is not None:  # the worker's error: what its p messages lose
        feedback.update(x, np.concatenate([comp.decode(m) for m in msgs]))
    return msgs


def _exchange_layout(comm: Any, comp: Compressor, msgs: list[np.ndarray], bounds: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int | None]:
    """(send buffer, send counts, recv counts, true recv lengths, padded length or None)."""
    p = len(msgs)
    lengths = np.array([m.shape[0] for m in msgs], dtype=np.int64)
    sizes = np.diff(bounds)
    fixed = [comp.wire_bytes(int(n)) for n in sizes]
    if all(f is not None for f in fixed):
        for m, f in zip(msgs, fixed, strict=True):
            check_length(comp, m, f)
        width = int(max(f for f in fixed if f is not None))
        send = np.zeros(p * width, dtype=np.uint8)
        for j, m in enumerate(msgs):
            send[j * width:j * width + m.shape[0]] = m
        # every rank sends chunk `rank` the same length: the wire length of that chunk
        own = int(fixed[comm.Get_rank()] or 0)
        return send, np.full(p, width), np.full(p, width), np.full(p, own), width
    from mpi4py import MPI

    recv_counts = np.empty(p, dtype=np.int64)
    comm.Alltoall([lengths, MPI.INT64_T], [recv_counts, MPI.INT64_T])
    return np.concatenate(msgs), lengths, recv_counts, recv_counts, None


def _alltoall(comm: Any, send: np.ndarray, send_counts: np.ndarray, recv_counts: np.ndarray,
              width: int | None, *, blocking: bool) -> tuple[np.ndarray, Any]:
    """Phase 1's exchange: (received bytes, request or None when blocking)."""
    from mpi4py import MPI

    recv = np.empty(int(recv_counts.sum()), dtype=np.uint8)
    if width is not None:
        args = ([send, MPI.BYTE], [recv, MPI.BYTE])
        if blocking:
            comm.Alltoall(*args)
            return recv, None
        return recv, comm.Ialltoall(*args)
    sd = np.concatenate(([0], np.cumsum(send_counts)[:-1]))
    rd = np.concatenate(([0], np.cumsum(recv_counts)[:-1]))
    vargs = ([send, (send_counts, sd), MPI.BYTE], [recv, (recv_counts, rd), MPI.BYTE])
    if blocking:
        comm.Alltoallv(*vargs)
        return recv, None
    return recv, comm.Ialltoallv(*vargs)


def _phase2(comm: Any, recv: np.ndarray, recv_counts: np.ndarray, lengths: np.ndarray,
            comp: Compressor, bounds: np.ndarray, server: ErrorFeedback | None, stats: Stats,
            *, seed: int, step: int) -> np.ndarray:
    """Average this rank's chunk, re-compress it, allgather, decode all: the mean."""
    from mpi4py import MPI

    p, rank = comm.Get_size(), comm.Get_rank()
    n_own = int(bounds[rank + 1] - bounds[rank])
    t0 = MPI.Wtime()
    starts = np.concatenate(([0], np.cumsum(recv_counts)))
    parts = [recv[int(starts[i]):int(starts[i]) + int(lengths[i])] for i in range(p)]
    chunk = average_messages(comp, parts, n_own)
    t1 = MPI.Wtime()
    msg = encode_own(chunk, comp, server, seed=second_seed(seed), step=step, rank=p * p + rank)
    t2 = MPI.Wtime()
    fixed = [comp.wire_bytes(int(n)) for n in np.diff(bounds)]
    if all(f is not None for f in fixed) and len(set(fixed)) == 1:
        recv2, counts2, _ = _start(comm, msg, fixed[0], blocking=True)
    else:  # chunk lengths differ by one entry, or the codec is variable: Allgatherv
        recv2, counts2, _ = _start(comm, msg, None, blocking=True)
    t3 = MPI.Wtime()
    mean = np.empty(int(bounds[-1]), dtype=np.float32)
    for j, m in enumerate(split(recv2, counts2)):
        y = comp.decode(m)
        if y.shape[0] != bounds[j + 1] - bounds[j]:
            raise ValueError(f"two-phase: rank {j}'s chunk decodes to {y.shape[0]} entries, "
                             f"expected {bounds[j + 1] - bounds[j]}")
        mean[bounds[j]:bounds[j + 1]] = y
    t4 = MPI.Wtime()
    stats.decode_s += (t1 - t0) + (t4 - t3)
    stats.encode_s += t2 - t1
    stats.comm_s += t3 - t2
    stats.bytes_sent += int(msg.shape[0])
    stats.bytes_recv += int(counts2.sum()) - int(msg.shape[0])
    return mean


def itwo_phase_mean(comm: Any, x: np.ndarray, comp: Compressor, *, seed: int = 0,
                    step: int = 0, feedback: ErrorFeedback | None = None,
                    server_feedback: ErrorFeedback | None = None) -> Pending:
    """Start :func:`two_phase_mean`: encode and post phase 1 (``Ialltoall``/``Ialltoallv``).

    ``wait()`` on the result waits for phase 1, then runs phase 2 (blocking).
    A variable-length codec exchanges the p lengths with a blocking ``Alltoall``
    before posting.
    """
    from mpi4py import MPI

    p, rank, d = comm.Get_size(), comm.Get_rank(), int(x.shape[0])
    bounds = chunk_bounds(d, p)
    t0 = MPI.Wtime()
    msgs = _phase1_messages(x, comp, bounds, feedback, seed=seed, step=step, rank=rank)
    t1 = MPI.Wtime()
    send, send_counts, recv_counts, lengths, width = _exchange_layout(comm, comp, msgs, bounds)
    recv, request = _alltoall(comm, send, send_counts, recv_counts, width, blocking=False)
    t2 = MPI.Wtime()
    own = int(send_counts[rank])
    stats = Stats(t1 - t0, t2 - t1, 0.0, int(send_counts.sum()) - own,
                  int(recv_counts.sum()) - int(recv_counts[rank]))

    def finish(st: Stats) -> np.ndarray:
        return _phase2(comm, recv, recv_counts, lengths, comp, bounds, server_feedback, st,
                       seed=seed, step=step)

    return Pending([request], finish, stats, keep=(send, recv))


def two_phase_mean(comm: Any, x: np.ndarray, comp: Compressor, *, seed: int = 0,
                   step: int = 0, feedback: ErrorFeedback | None = None,
                   server_feedback: ErrorFeedback | None = None) -> tuple[np.ndarray, Stats]:
    """The mean of every rank's ``x`` by the two-phase compressed allreduce.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        Every rank calls with the same ``comp``, ``seed``, ``step`` and length of ``x``.
    x : numpy.ndarray
        This rank's 1-D float vector (any length; chunks may be empty when d < p).
    comp : Compressor
        The codec of both phases.
    seed, step : int
        The encode randomness.
    feedback, server_feedback : ErrorFeedback, optional
        Error-feedback memories around phase 1 (length d) and phase 2 (this
        rank's chunk); both wrap ``comp`` and are updated in place.

    Returns
    -------
    mean : numpy.ndarray
        float32 of length d, identical on every rank.
    stats : Stats
        Both phases' encode, communicate and decode seconds and bytes; the
        lengths exchange of a variable-length codec counts as communication.
    """
    from mpi4py import MPI

    p, rank, d = comm.Get_size(), comm.Get_rank(), int(x.shape[0])
    bounds = chunk_bounds(d, p)
    t0 = MPI.Wtime()
    msgs = _phase1_messages(x, comp, bounds, feedback, seed=seed, step=step, rank=rank)
    t1 = MPI.Wtime()
    send, send_counts, recv_counts, lengths, width = _exchange_layout(comm, comp, msgs, bounds)
    recv, _ = _alltoall(comm, send, send_counts, recv_counts, width, blocking=True)
    t2 = MPI.Wtime()
    own = int(send_counts[rank])
    stats = Stats(t1 - t0, t2 - t1, 0.0, int(send_counts.sum()) - own,
                  int(recv_counts.sum()) - int(recv_counts[rank]))
    mean = _phase2(comm, recv, recv_counts, lengths, comp, bounds, server_feedback, stats,
                   seed=seed, step=step)
    return mean, stats


def _scheme(comm: Any, x: np.ndarray, comp: Compressor | None, *, seed: int,
            step: int) -> tuple[np.ndarray, Stats]:
    if comp is None:
        raise ValueError("scheme two-phase needs a compressor")
    return two_phase_mean(comm, x, comp, seed=seed, step=step)


register(Scheme("two-phase", "Alltoall(v) of p compressed chunks, average, re-compress, "
                "Allgather(v): O(d bits) per rank", _scheme))
