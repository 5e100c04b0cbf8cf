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

from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from hpcq.collectives import Stats, average_messages, chunk_bounds, second_seed
from hpcq.collectives.allgather import Pending, _start, check_length, encode_own, split
from hpcq.collectives.scheme import BoundInputs, Cost, Scheme, check_out, lg, register, ring
from hpcq.collectives.session import Session
from hpcq.compressors import Compressor
from hpcq.feedback import ErrorFeedback
from hpcq.workloads.layout import Layout


class _Plan(NamedTuple):
    """What depends only on (codec, d, p): chunk offsets and fixed message lengths."""

    bounds: tuple[int, ...]  # p + 1 chunk offsets
    fixed: tuple[int, ...] | None  # wire length of each chunk's message; None: variable
    width: int  # longest fixed message (the Alltoall block), 0 when variable


@lru_cache(maxsize=64)
def _plan(comp: Compressor, d: int, p: int) -> _Plan:
    # cached: recomputing it costs microseconds per call, comparable to a small message
    bounds = tuple(int(b) for b in chunk_bounds(d, p))
    lengths = [comp.wire_bytes(bounds[j + 1] - bounds[j]) for j in range(p)]
    if any(n is None for n in lengths):
        return _Plan(bounds, None, 0)
    fixed = tuple(int(n or 0) for n in lengths)
    return _Plan(bounds, fixed, max(fixed))


def _phase1_messages(x: np.ndarray, comp: Compressor, plan: _Plan,
                     feedback: ErrorFeedback | None, *, seed: int, step: int, rank: int
                     ) -> list[np.ndarray]:
    """Chunk j of ``x`` (compensated by ``feedback``) encoded for rank j, j = 0..p-1."""
    b = plan.bounds
    p = len(b) - 1
    y = x if feedback is None else feedback.compensate(x)
    msgs = [comp.encode(y[b[j]:b[j + 1]], seed=seed, step=step, rank=rank * p + j)
            for j in range(p)]
    if plan.fixed is not None:
        for m, n in zip(msgs, plan.fixed, strict=True):
            check_length(comp, m, n)
    if feedback is not None:  # the worker's error: what its p messages lose
        feedback.update(x, np.concatenate([comp.decode(m) for m in msgs]))
    return msgs


def _exchange_layout(comm: Any, msgs: list[np.ndarray], plan: _Plan
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """(send buffer, send counts, recv counts, true length of each received message)."""
    p, rank = len(msgs), comm.Get_rank()
    if plan.fixed is not None:
        w = plan.width
        send = np.empty(p * w, dtype=np.uint8)
        for j, m in enumerate(msgs):
            send[j * w:j * w + m.shape[0]] = m
            send[j * w + m.shape[0]:(j + 1) * w] = 0  # padding, sliced off on receipt
        # every rank sends chunk `rank` the same length: the wire length of that chunk
        counts = np.full(p, w, dtype=np.int64)
        return send, counts, counts, [plan.fixed[rank]] * p
    from mpi4py import MPI

    lengths = np.array([m.shape[0] for m in msgs], dtype=np.int64)
    recv_counts = np.empty(p, dtype=np.int64)
    comm.Alltoall([lengths, MPI.INT64_T], [recv_counts, MPI.INT64_T])
    return np.concatenate(msgs), lengths, recv_counts, recv_counts.tolist()


def _alltoall(comm: Any, send: np.ndarray, send_counts: np.ndarray, recv_counts: np.ndarray,
              plan: _Plan, *, blocking: bool) -> tuple[np.ndarray, Any]:
    """Phase 1's exchange: (received bytes, request or None when blocking)."""
    from mpi4py import MPI

    p = send_counts.shape[0]
    if plan.fixed is not None:
        recv = np.empty(p * plan.width, dtype=np.uint8)
        args = ([send, MPI.BYTE], [recv, MPI.BYTE])
        if blocking:
            comm.Alltoall(*args)
            return recv, None
        return recv, comm.Ialltoall(*args)
    recv = np.empty(int(recv_counts.sum()), dtype=np.uint8)
    sd = np.concatenate(([0], np.cumsum(send_counts)[:-1]))
    rd = np.concatenate(([0], np.cumsum(recv_counts)[:-1]))
    vargs = ([send, (send_counts, sd), MPI.BYTE], [recv, (recv_counts, rd), MPI.BYTE])
    if blocking:
        comm.Alltoallv(*vargs)
        return recv, None
    return recv, comm.Ialltoallv(*vargs)


class _Phase1(NamedTuple):
    """Phase 1 posted or done: buffers, counts and the request (None when blocking)."""

    plan: _Plan
    send: np.ndarray
    recv: np.ndarray
    recv_counts: np.ndarray
    lengths: list[int]
    request: Any
    stats: Stats


def _phase1(comm: Any, x: np.ndarray, comp: Compressor, feedback: ErrorFeedback | None, *,
            seed: int, step: int, blocking: bool) -> _Phase1:
    """Encode the p chunks and exchange them (or post the exchange)."""
    from mpi4py import MPI

    t0 = MPI.Wtime()
    p, rank = comm.Get_size(), comm.Get_rank()
    plan = _plan(comp, int(x.shape[0]), p)
    msgs = _phase1_messages(x, comp, plan, feedback, seed=seed, step=step, rank=rank)
    t1 = MPI.Wtime()
    send, send_counts, recv_counts, lengths = _exchange_layout(comm, msgs, plan)
    recv, request = _alltoall(comm, send, send_counts, recv_counts, plan, blocking=blocking)
    sc, rc = send_counts.tolist(), recv_counts.tolist()
    stats = Stats(t1 - t0, MPI.Wtime() - t1, 0.0, sum(sc) - sc[rank], sum(rc) - rc[rank])
    return _Phase1(plan, send, recv, recv_counts, lengths, request, stats)


def _phase2(comm: Any, ph: _Phase1, comp: Compressor, server: ErrorFeedback | None,
            stats: Stats, *, seed: int, step: int, out: np.ndarray | None = None,
            session: Session | None = None) -> np.ndarray:
    """Average this rank's chunk, re-compress it, allgather, decode all: the mean."""
    from mpi4py import MPI

    p, rank = comm.Get_size(), comm.Get_rank()
    plan, recv = ph.plan, ph.recv
    b = plan.bounds
    t0 = MPI.Wtime()
    parts, start = [], 0
    for n, length in zip(ph.recv_counts.tolist(), ph.lengths, strict=True):
        parts.append(recv[start:start + length])
        start += n
    chunk = average_messages(comp, parts, b[rank + 1] - b[rank])
    t1 = MPI.Wtime()
    msg = encode_own(chunk, comp, server, seed=second_seed(seed), step=step,
                     rank=p * p + rank)
    t2 = MPI.Wtime()
    # equal chunk messages: Allgather; lengths that differ: Allgatherv, with the lengths
    # known to every rank from the plan (d % p != 0) or exchanged first (a variable codec)
    if plan.fixed is not None and len(set(plan.fixed)) == 1:
        recv2, counts2, _ = _start(comm, msg, plan.fixed[0], blocking=True, session=session,
                                   owner="two-phase")
    else:
        known = None if plan.fixed is None else np.array(plan.fixed, dtype=np.int64)
        recv2, counts2, _ = _start(comm, msg, None, blocking=True, counts=known,
                                   session=session, owner="two-phase")
    t3 = MPI.Wtime()
    mean = np.empty(b[-1], dtype=np.float32) if out is None else out
    for j, m in enumerate(split(recv2, counts2)):  # each chunk decoded in place
        comp.decode(m, out=mean[b[j]:b[j + 1]])
    sent = int(msg.shape[0])
    stats.encode_s += t2 - t1
    stats.comm_s += t3 - t2
    stats.bytes_sent += sent
    stats.bytes_recv += recv2.shape[0] - sent
    stats.decode_s += (t1 - t0) + (MPI.Wtime() - t3)
    return mean


def itwo_phase_mean(comm: Any, x: np.ndarray, comp: Compressor, *, seed: int = 0,
                    step: int = 0, feedback: ErrorFeedback | None = None,
                    server_feedback: ErrorFeedback | None = None) -> Pending:
    """Start :func:`two_phase_mean`: encode and post phase 1 (``Ialltoall``/``Ialltoallv``).

    ``wait()`` on the result waits for phase 1, then runs phase 2 (blocking).
    A variable-length codec exchanges the p lengths with a blocking ``Alltoall``
    before posting.
    """
    ph = _phase1(comm, x, comp, feedback, seed=seed, step=step, blocking=False)

    def finish(st: Stats) -> np.ndarray:
        return _phase2(comm, ph, comp, server_feedback, st, seed=seed, step=step)

    return Pending([ph.request], finish, ph.stats, keep=(ph.send, ph.recv))


def two_phase_mean(comm: Any, x: np.ndarray, comp: Compressor, *, seed: int = 0,
                   step: int = 0, feedback: ErrorFeedback | None = None,
                   server_feedback: ErrorFeedback | None = None,
                   out: np.ndarray | None = None, session: Session | None = None
                   ) -> tuple[np.ndarray, Stats]:
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
    ph = _phase1(comm, x, comp, feedback, seed=seed, step=step, blocking=True)
    mean = _phase2(comm, ph, comp, server_feedback, ph.stats, seed=seed, step=step, out=out,
                   session=session)
    return mean, ph.stats


class TwoPhase(Scheme):
    """Alltoall(v) of p compressed chunks, average, re-compress, Allgather(v)."""

    name = "two-phase"
    summary = ("Alltoall(v) of p compressed chunks, average, re-compress, Allgather(v): "
               "O(d bits) per rank")
    nonblocking = True
    takes_feedback = True
    style = ("#E69F00", "s", "-.")
    cost = Cost("pairwise Alltoall(v) of m/p-byte chunks, recursive-doubling Allgather(v) of m/p",
                lambda p: (p - 1) + lg(p), lambda p, m, d: ring(p) * m, lambda p: 1.0 + 1.0 / p,
                lambda p: 2.0, ("(p-1) + lg p", "2 (p-1)/p m", "1 + 1/p", "2"),
                chunk_headers=True)

    def mean(self, comm: Any, x: np.ndarray, comp: Compressor | None = None, *, seed: int = 0,
             step: int = 0, feedback: ErrorFeedback | None = None,
             session: Session | None = None, out: np.ndarray | None = None,
             layout: Layout | None = None) -> tuple[np.ndarray, Stats]:
        return two_phase_mean(comm, x, self._need(comp), seed=seed, step=step,
                              feedback=feedback, session=session, out=None if out is None
                              else check_out(out, x.shape[0], f"scheme {self.name}"))

    def start(self, comm: Any, x: np.ndarray, comp: Compressor | None = None, *, seed: int = 0,
              step: int = 0, feedback: ErrorFeedback | None = None,
              session: Session | None = None) -> Pending:
        return itwo_phase_mean(comm, x, self._need(comp), seed=seed, step=step,
                               feedback=feedback)

    def codec_lengths(self, d: int, p: int) -> list[int]:
        """The chunk lengths (the first ``d % p`` one longer; empty chunks left out)."""
        return sorted({int(n) for n in np.diff(chunk_bounds(d, p)) if n > 0})

    def bound(self, comp: Compressor | None, d: int, p: int, inputs: BoundInputs
              ) -> float | None:
        from hpcq.bench.guarantees import recompressed_bound

        return recompressed_bound(self._need(comp), self.codec_lengths(d, p), p,
                                  inputs.sq_norms, inputs.mean_sq)


register(TwoPhase())
