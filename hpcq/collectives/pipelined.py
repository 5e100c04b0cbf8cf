"""The pipelined compressed mean: the allgather mean in k chunks, encoding chunk i + 1 while
chunk i is on the wire.

The vector is cut into ``chunks = k`` contiguous pieces (:func:`~hpcq.collectives.chunk_bounds`
(d, k); fewer when d < k).  Rank r encodes chunk i with rank word ``r k + i`` and posts its
``Iallgather`` (fixed-length codecs) or, for a variable-length codec, an ``Iallgather`` of
its length followed, once that completes, by the ``Iallgatherv`` of the bytes; then it
encodes chunk i + 1.  Between encodes it polls every posted request with ``Test`` and
decodes (averages, :func:`~hpcq.collectives.average_messages`) each chunk whose messages
have all arrived, in place into the mean.  When everything is encoded it waits for the
rest, decoding each chunk as it completes.

MPI progress: with MPICH on shared memory (and Open MPI without a progress thread) a
nonblocking collective advances only inside MPI calls, so the ``Test`` calls between
chunks are what moves chunk i while chunk i + 1 is encoded; with a single chunk nothing
overlaps.  ``Stats.exposed_comm_s`` is the time spent blocked in ``Wait`` (communication
that no encode or decode hid); ``comm_s`` also counts posting and polling.

Guarantee: the allgather's (:func:`~hpcq.bench.guarantees.averaged_bound`) over the chunk
lengths (omega is the largest over them): every coordinate is compressed once per rank.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcq.collectives import Stats, average_messages, chunk_bounds
from hpcq.collectives.allgather import split
from hpcq.collectives.scheme import BoundInputs, Cost, Scheme, check_out, lg, register
from hpcq.collectives.session import Session, reused
from hpcq.compressors import Compressor
from hpcq.compressors.base import Param
from hpcq.feedback import ErrorFeedback
from hpcq.workloads.layout import Layout


class _Chunk:
    """One chunk in flight: its message, buffers, requests and stage."""

    def __init__(self, msg: np.ndarray, index: int, lo: int, hi: int) -> None:
        self.msg, self.index, self.lo, self.hi = msg, index, lo, hi
        self.counts: np.ndarray | None = None
        self.recv: np.ndarray | None = None
        self.request: Any = None
        self.length: np.ndarray | None = None
        self.done = False


def _recv(n: int, i: int, session: Session | None) -> np.ndarray:
    """Chunk i's receive buffer of n bytes: the session's (one per chunk, reused) or new."""
    return reused(session, f"pipelined.recv.{i}", n, np.uint8)


def _post_data(comm: Any, c: _Chunk, st: Stats, session: Session | None) -> None:
    from mpi4py import MPI

    assert c.counts is not None
    c.recv = _recv(int(c.counts.sum()), c.index, session)
    displs = np.concatenate(([0], np.cumsum(c.counts)[:-1]))
    c.request = comm.Iallgatherv([c.msg, MPI.BYTE], [c.recv, (c.counts, displs), MPI.BYTE])
    st.bytes_recv += int(c.counts.sum()) - int(c.msg.shape[0])


def pipelined_mean(comm: Any, x: np.ndarray, comp: Compressor, *, chunks: int = 4,
                   seed: int = 0, step: int = 0, out: np.ndarray | None = None,
                   session: Session | None = None) -> tuple[np.ndarray, Stats]:
    """The allgather mean of every rank's ``x`` in ``chunks`` pipelined pieces (module docstring).

    Every rank calls with the same ``comp``, ``chunks``, ``seed``, ``step`` and length d;
    every rank gets the same float32 mean.  With a ``session`` the receive buffers (one
    per chunk: they are in flight together) are reused across calls.
    """
    from mpi4py import MPI

    wtime = MPI.Wtime
    p, r = comm.Get_size(), comm.Get_rank()
    x32 = x if x.dtype == np.float32 and x.flags.c_contiguous else np.ascontiguousarray(
        x, dtype=np.float32)
    d = x32.shape[0]
    k = max(1, min(chunks, d))
    b = chunk_bounds(d, k)
    mean = np.empty(d, dtype=np.float32) if out is None else out
    st = Stats()
    live: list[_Chunk] = []

    def finish(c: _Chunk) -> None:
        t = wtime()
        assert c.recv is not None and c.counts is not None
        average_messages(comp, split(c.recv, c.counts), c.hi - c.lo, out=mean[c.lo:c.hi])
        c.done = True
        st.decode_s += wtime() - t

    def poll() -> None:
        """Test every posted data exchange once and decode the chunks that are in."""
        t = wtime()
        ready = [c for c in live if c.recv is not None and c.request is not None
                 and c.request.Test()]
        st.comm_s += wtime() - t
        for c in ready:
            c.request = None
            finish(c)

    def wait(request: Any) -> None:
        t = wtime()
        request.Wait()
        waited = wtime() - t
        st.comm_s += waited
        st.exposed_comm_s += waited

    lengths: _Chunk | None = None  # a chunk whose lengths travel while the next is encoded
    for i in range(k):
        t0 = wtime()
        msg = comp.encode(x32[b[i]:b[i + 1]], seed=seed, step=step, rank=r * k + i)
        t1 = wtime()
        st.encode_s += t1 - t0
        c = _Chunk(msg, i, int(b[i]), int(b[i + 1]))
        fixed = comp.wire_bytes(c.hi - c.lo)
        st.bytes_sent += int(msg.shape[0])
        if fixed is not None:
            if msg.shape[0] != fixed:  # pragma: no cover - a codec bug
                raise RuntimeError(f"{comp.spec} wrote {msg.shape[0]} bytes, wire_bytes {fixed}")
            c.counts = np.full(p, fixed, dtype=np.int64)
            c.recv = _recv(p * fixed, i, session)
            c.request = comm.Iallgather([msg, MPI.BYTE], [c.recv, MPI.BYTE])
            st.bytes_recv += (p - 1) * fixed
        else:  # lengths first; the bytes are posted after the next encode (same order
            # on every rank: MPI needs the collectives of a communicator in one order)
            c.counts = np.empty(p, dtype=np.int64)
            c.length = np.array([msg.shape[0]], dtype=np.int64)
            c.request = comm.Iallgather([c.length, MPI.INT64_T], [c.counts, MPI.INT64_T])
            st.bytes_sent += 8
            st.bytes_recv += 8 * (p - 1)
        st.comm_s += wtime() - t1
        if lengths is not None:
            wait(lengths.request)
            _post_data(comm, lengths, st, session)
            lengths = None
        if c.recv is None:
            lengths = c
        live.append(c)
        poll()
        live = [c for c in live if not c.done]
    if lengths is not None:
        wait(lengths.request)
        _post_data(comm, lengths, st, session)
    while live:  # what no encode hid: wait for the oldest, decode it, poll the rest
        c = live[0]
        wait(c.request)
        c.request = None
        finish(c)
        poll()
        live = [c for c in live if not c.done]
    return mean, st


class Pipelined(Scheme):
    """The allgather mean in k chunks: encode chunk i + 1 while chunk i travels (Iallgather)."""

    name = "pipelined"
    summary = ("allgather mean in k chunks: encode chunk i+1 while chunk i is on the wire "
               "(Iallgather/Iallgatherv, polled with Test), decode as chunks arrive")
    params = (Param("chunks", int, 4, "pieces the vector is cut into", minimum=1,
                    maximum=4096),)
    style = ("#56B4E9", "p", "-")
    cost = Cost("k pipelined recursive-doubling Allgather(v) of m/k bytes",
                lambda p: lg(p), lambda p, m, d: (p - 1) * m, lambda p: 1.0,
                lambda p: float(p), ("lg p (x k, overlapped)", "(p-1) m", "1", "p"))

    def mean(self, comm: Any, x: np.ndarray, comp: Compressor | None = None, *, seed: int = 0,
             step: int = 0, feedback: ErrorFeedback | None = None,
             session: Session | None = None, out: np.ndarray | None = None,
             layout: Layout | None = None) -> tuple[np.ndarray, Stats]:
        return pipelined_mean(comm, x, self._need(comp), chunks=self.p["chunks"], seed=seed,
                              step=step, session=session, out=None if out is None else
                              check_out(out, x.shape[0], f"scheme {self.name}"))

    def codec_lengths(self, d: int, p: int) -> list[int]:
        """The chunk lengths."""
        k = max(1, min(self.p["chunks"], d))
        return sorted({int(n) for n in np.diff(chunk_bounds(d, k)) if n > 0})

    def bound(self, comp: Compressor | None, d: int, p: int, inputs: BoundInputs
              ) -> float | None:
        from hpcq.bench.guarantees import averaged_bound

        return averaged_bound(self._need(comp), self.codec_lengths(d, p), p, inputs.sq_norms,
                              inputs.mean_sq)


register(Pipelined())
