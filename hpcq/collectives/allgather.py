"""The compressed mean by allgather, blocking and nonblocking.

Every rank encodes its vector; the messages are exchanged with one
``Allgather`` on uint8 when the codec's length is fixed
(``comp.wire_bytes(d)`` not None), else the lengths are allgathered first and
the messages follow with ``Allgatherv``; every rank decodes all p messages
and averages them in rank order, so every rank holds the same bits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from hpcq.collectives import Stats, average_messages
from hpcq.collectives.scheme import BoundInputs, Cost, Scheme, lg, register
from hpcq.collectives.session import Session, reused
from hpcq.compressors import Compressor
from hpcq.feedback import ErrorFeedback
from hpcq.workloads.layout import Layout


def encode_own(x: np.ndarray, comp: Compressor, feedback: ErrorFeedback | None, *, seed: int,
               step: int, rank: int) -> np.ndarray:
    """This rank's message: ``comp.encode(x)``, through ``feedback`` when there is one."""
    if feedback is None:
        return comp.encode(x, seed=seed, step=step, rank=rank)
    if feedback.comp is not comp and feedback.comp.spec != comp.spec:
        raise ValueError(f"error feedback wraps {feedback.comp.spec}, the collective was given "
                         f"{comp.spec}")
    return feedback.encode(x, seed=seed, step=step, rank=rank)[0]


def check_length(comp: Compressor, msg: np.ndarray, fixed: int | None) -> None:
    """A fixed-length codec must write exactly ``wire_bytes`` (else a codec bug, never silent)."""
    if fixed is not None and msg.shape[0] != fixed:  # pragma: no cover - a codec bug
        raise RuntimeError(f"{comp.spec} wrote {msg.shape[0]} bytes, wire_bytes says {fixed}")


def split(recv: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """The consecutive messages of ``counts`` bytes each in ``recv`` (views)."""
    out, start = [], 0
    for n in counts.tolist():  # Python ints: cheaper than numpy scalars for a few ranks
        out.append(recv[start:start + n])
        start += n
    return out


def gather_counts(comm: Any, n: int) -> np.ndarray:
    """Every rank's message length (a blocking ``Allgather`` of one int64)."""
    from mpi4py import MPI

    counts = np.empty(comm.Get_size(), dtype=np.int64)
    comm.Allgather([np.array([n], dtype=np.int64), MPI.INT64_T], [counts, MPI.INT64_T])
    return counts


def _start(comm: Any, msg: np.ndarray, fixed: int | None, *, blocking: bool,
           counts: np.ndarray | None = None, session: Session | None = None,
           owner: str = "allgather") -> tuple[np.ndarray, np.ndarray, Any]:
    """Exchange the messages: (received bytes, counts, request or None when blocking).

    ``fixed``: every message has this length (``Allgather``).  Otherwise the
    lengths are ``counts`` when every rank knows them, else allgathered first,
    and the messages follow by ``Allgatherv``.  With a ``session`` the receive buffer is
    its ``owner`` buffer, reused across calls (blocking calls only).
    """
    from mpi4py import MPI

    p = comm.Get_size()
    if fixed is not None:
        counts = np.full(p, fixed, dtype=np.int64)
        recv = _recv(p * fixed, session, owner)
        if blocking:
            comm.Allgather([msg, MPI.BYTE], [recv, MPI.BYTE])
            return recv, counts, None
        return recv, counts, comm.Iallgather([msg, MPI.BYTE], [recv, MPI.BYTE])
    if counts is None:
        counts = gather_counts(comm, int(msg.shape[0]))
    recv = _recv(int(counts.sum()), session, owner)
    displs = np.concatenate(([0], np.cumsum(counts)[:-1]))
    spec = [recv, (counts, displs), MPI.BYTE]
    if blocking:
        comm.Allgatherv([msg, MPI.BYTE], spec)
        return recv, counts, None
    return recv, counts, comm.Iallgatherv([msg, MPI.BYTE], spec)


def _recv(n: int, session: Session | None, owner: str) -> np.ndarray:
    """A receive buffer of ``n`` bytes: the session's (reused) or a new one."""
    return reused(session, owner + ".recv", n, np.uint8)


class _Exchange(NamedTuple):
    """An allgather started (or done): its request, stats so far, and how to finish it."""

    request: Any  # None when blocking
    stats: Stats
    finish: Callable[[Stats], np.ndarray]
    keep: tuple[Any, ...]


def _exchange(comm: Any, x: np.ndarray, comp: Compressor, feedback: ErrorFeedback | None, *,
              seed: int, step: int, blocking: bool, session: Session | None = None,
              out: np.ndarray | None = None) -> _Exchange:
    """Encode this rank's message and exchange it (or post the exchange)."""
    from mpi4py import MPI

    t0 = MPI.Wtime()
    rank, d = comm.Get_rank(), int(x.shape[0])
    msg = encode_own(x, comp, feedback, seed=seed, step=step, rank=rank)
    t1 = MPI.Wtime()
    fixed = comp.wire_bytes(d)
    check_length(comp, msg, fixed)
    recv, counts, request = _start(comm, msg, fixed, blocking=blocking,
                                   session=session if blocking else None)
    sent = int(msg.shape[0])
    stats = Stats(t1 - t0, MPI.Wtime() - t1, 0.0, sent, recv.shape[0] - sent)

    def finish(st: Stats) -> np.ndarray:
        t = MPI.Wtime()
        mean = average_messages(comp, split(recv, counts), d, out=out)
        st.decode_s += MPI.Wtime() - t
        return mean

    return _Exchange(request, stats, finish, (msg, recv))


def allgather_mean(comm: Any, x: np.ndarray, comp: Compressor, *, seed: int = 0,
                   step: int = 0, feedback: ErrorFeedback | None = None,
                   out: np.ndarray | None = None, session: Session | None = None
                   ) -> tuple[np.ndarray, Stats]:
    """The mean of every rank's ``x`` through compressor ``comp``, by allgather.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        Every rank calls with the same ``comp``, ``seed``, ``step`` and length of ``x``.
    x : numpy.ndarray
        This rank's 1-D float vector.
    comp : Compressor
        The codec; rank r encodes with ``rank=r`` so private randomness differs
        between ranks while shared randomness (rotation signs) agrees.
    seed, step : int
        The encode randomness (see :meth:`Compressor.encode`).
    feedback : ErrorFeedback, optional
        This rank's error-feedback memory around ``comp`` (updated in place).
    out : numpy.ndarray, optional
        float32 of length d that receives the mean (decoded straight into it).
    session : Session, optional
        Lends the receive buffer, reused across calls.

    Returns
    -------
    mean : numpy.ndarray
        float32 of length d, identical on every rank.
    stats : Stats
        Encode, communicate and decode seconds and bytes of this rank.
    """
    ex = _exchange(comm, x, comp, feedback, seed=seed, step=step, blocking=True,
                   session=session, out=out)
    return ex.finish(ex.stats), ex.stats


class Pending:
    """A started nonblocking mean; :meth:`wait` completes it, :meth:`test` polls.

    Parameters
    ----------
    requests : list of mpi4py.MPI.Request
        What must complete before ``finish`` can run.
    finish : callable
        ``finish(stats) -> mean``: the work after the exchange (decoding, a
        second phase); it adds its own times and bytes to ``stats``.
    stats : Stats
        The times and bytes so far (encoding, posting the requests).
    keep : tuple
        Buffers MPI reads or writes until the requests complete.
    """

    def __init__(self, requests: list[Any], finish: Callable[[Stats], np.ndarray],
                 stats: Stats, keep: tuple[Any, ...] = ()) -> None:
        self._requests, self._finish, self.stats, self._keep = requests, finish, stats, keep
        self._result: tuple[np.ndarray, Stats] | None = None

    def test(self) -> bool:
        """True once the exchange has completed (``wait`` then only decodes)."""
        from mpi4py import MPI

        return self._result is not None or bool(MPI.Request.Testall(self._requests))

    def wait(self) -> tuple[np.ndarray, Stats]:
        """Wait for the exchange, finish the mean; ``(mean, stats)`` (again on later calls)."""
        from mpi4py import MPI

        if self._result is None:
            t0 = MPI.Wtime()
            MPI.Request.Waitall(self._requests)
            self.stats.comm_s += MPI.Wtime() - t0
            mean = self._finish(self.stats)
            self._result, self._keep = (mean, self.stats), ()
        return self._result


def iallgather_mean(comm: Any, x: np.ndarray, comp: Compressor, *, seed: int = 0,
                    step: int = 0, feedback: ErrorFeedback | None = None) -> Pending:
    """Start :func:`allgather_mean` with ``Iallgather`` (or ``Iallgatherv``); returns a request.

    Encoding happens here; ``wait()`` on the result waits for the messages and
    decodes them.  A variable-length codec exchanges the lengths with a
    blocking ``Allgather`` of one int64 per rank first (``Iallgatherv`` needs
    the counts).  ``comm_s`` counts only the time spent inside hpcq's calls
    (posting, exchanging lengths, waiting), so the overlap shows as a small
    ``comm_s`` when the caller computes before ``wait()``.
    """
    ex = _exchange(comm, x, comp, feedback, seed=seed, step=step, blocking=False)
    return Pending([ex.request], ex.finish, ex.stats, keep=ex.keep)


class Allgather(Scheme):
    """Every rank encodes its vector once; every rank decodes all p messages."""

    name = "allgather"
    summary = "every rank decodes all p messages (Allgather/Allgatherv)"
    nonblocking = True
    takes_feedback = True
    one_message = True
    style = ("#0072B2", "o", "-")
    cost = Cost("recursive-doubling Allgather(v)", lg, lambda p, m, d: (p - 1) * m,
                lambda p: 1.0, lambda p: float(p), ("lg p", "(p-1) m", "1", "p"))

    def mean(self, comm: Any, x: np.ndarray, comp: Compressor | None = None, *, seed: int = 0,
             step: int = 0, feedback: ErrorFeedback | None = None,
             session: Session | None = None, out: np.ndarray | None = None,
             layout: Layout | None = None) -> tuple[np.ndarray, Stats]:
        return allgather_mean(comm, x, self._need(comp), seed=seed, step=step,
                              feedback=feedback, out=out, session=session)

    def start(self, comm: Any, x: np.ndarray, comp: Compressor | None = None, *, seed: int = 0,
              step: int = 0, feedback: ErrorFeedback | None = None,
              session: Session | None = None) -> Pending:
        return iallgather_mean(comm, x, self._need(comp), seed=seed, step=step,
                               feedback=feedback)

    def bound(self, comp: Compressor | None, d: int, p: int, inputs: BoundInputs
              ) -> float | None:
        from hpcq.bench.guarantees import averaged_bound

        return averaged_bound(self._need(comp), self.codec_lengths(d, p), p, inputs.sq_norms,
                              inputs.mean_sq)


def _into(mean: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """``mean`` copied into ``out`` when the caller gave one (else ``mean`` itself)."""
    if out is None:
        return mean
    if out.shape != mean.shape:
        raise ValueError(f"out has shape {out.shape}, the mean {mean.shape}")
    out[...] = mean
    return out


register(Allgather())
