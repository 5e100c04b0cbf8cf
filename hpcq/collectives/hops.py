"""What the multi-hop schemes (``ring``, ``rhd``) share: their scheme wrapper
(:class:`HopScheme`), hop seeds, one hop's encode, the point-to-point exchange of
variable-length bytes, and the composed guarantee.

A multi-hop scheme compresses a vector, sends it one hop, and the receiver decodes it,
adds its own data and compresses the sum again.  Every compression in one chain of hops
draws fresh randomness: hop ``h`` encodes with :func:`hop_seed` (``seed + h G`` mod 2^64,
G the 64-bit golden ratio, so hop 1 is :func:`~hpcq.collectives.second_seed`), so neither
its private stream (stochastic rounding) nor its shared ones (rotation signs, random-k
indices) repeat an earlier hop's.  That independence is what the unbiased form of
:func:`chain_bound` needs.

Error per hop: with ``hop_error=true`` each rank decodes what it sent once more (or takes
the decoded message of its error-feedback memory) and records
``||decode(msg) - sent||^2 / ||sent||^2`` per hop in ``Stats.hop_nmse``, in the order it
sent them; it costs one extra decode per hop, and it is off by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hpcq.collectives import Stats
from hpcq.collectives.scheme import Scheme, check_out
from hpcq.collectives.session import Session, reused
from hpcq.compressors import Compressor
from hpcq.compressors.base import Param
from hpcq.feedback import ErrorFeedback
from hpcq.workloads.layout import Layout

_G = 0x9E3779B97F4A7C15
_U64 = (1 << 64) - 1
#: Message tag of the multi-hop schemes' point-to-point traffic.
TAG = 0x4851


def hop_message(wire: float, d: int, p: int) -> float:
    """One message's bytes from a rank's wire bytes: 2 (p - 1) messages of m / p each."""
    return wire * p / (2 * (p - 1)) if p > 1 else wire


class HopScheme(Scheme):
    """A multi-hop compressed mean: its ``feedback`` and ``hop_error`` parameters, and the
    call of its mean function ``run`` (``ring_mean``, ``rhd_mean``) with them."""

    params = (
        Param("feedback", bool, False, "error feedback on every hop (memories in the session)"),
        Param("hop_error", bool, False, "record each hop's relative error in Stats.hop_nmse"),
    )
    #: ``run(comm, x, comp, *, seed, step, session, feedback, hop_error, out)
    #: -> (mean, Stats)``, decoding into ``out`` when given
    run: Callable[..., tuple[np.ndarray, Stats]]

    def mean(self, comm: Any, x: np.ndarray, comp: Compressor | None = None, *, seed: int = 0,
             step: int = 0, feedback: ErrorFeedback | None = None,
             session: Session | None = None, out: np.ndarray | None = None,
             layout: Layout | None = None) -> tuple[np.ndarray, Stats]:
        if self.p["feedback"] and session is None:
            raise ValueError(f"scheme {self.name}: feedback=true needs a session (the memories)")
        # the chunks are decoded straight into out (no copy)
        return type(self).run(comm, x, self._need(comp), seed=seed, step=step,
                              session=session, feedback=self.p["feedback"],
                              hop_error=self.p["hop_error"], out=None if out is None else
                              check_out(out, x.shape[0], f"scheme {self.name}"))


def hop_seed(seed: int, hop: int) -> int:
    """The seed of the ``hop``-th compression of one chain: ``seed + hop G`` mod 2^64."""
    return (seed + hop * _G) & _U64


def encode_hop(comp: Compressor, y: np.ndarray, st: Stats, *, seed: int, step: int, rank: int,
               memory: ErrorFeedback | None, hop_error: bool) -> np.ndarray:
    """Encode ``y`` for one hop (through ``memory`` when given); times into ``st``.

    With ``hop_error`` the relative squared error of this hop is appended to ``st.hop_nmse``
    (the extra decode it costs counts as decoding).
    """
    from mpi4py import MPI

    t0 = MPI.Wtime()
    decoded = None
    if memory is None:
        msg = comp.encode(y, seed=seed, step=step, rank=rank)
    else:
        msg, decoded = memory.encode(y, seed=seed, step=step, rank=rank)
        y = memory.memory + decoded if hop_error else y  # what was compressed: y + old memory
    t1 = MPI.Wtime()
    st.encode_s += t1 - t0
    if hop_error:
        if decoded is None:
            decoded = comp.decode(msg)
        ref = y.astype(np.float64)
        err = decoded.astype(np.float64) - ref
        den = float(ref @ ref)
        if st.hop_nmse is None:
            st.hop_nmse = []
        st.hop_nmse.append(float(err @ err) / den if den > 0 else float(err @ err))
        st.decode_s += MPI.Wtime() - t1
    return msg


def hop_memory(session: Session | None, owner: str, comp: Compressor) -> ErrorFeedback:
    """The error-feedback memory of one hop of this rank (kept in ``session``)."""
    if session is None:
        raise ValueError("feedback=true needs a session (the memories live there)")
    return session.feedback(owner, lambda: ErrorFeedback(comp))  # type: ignore[no-any-return]


def exchange(comm: Any, msg: np.ndarray, dest: int, source: int, st: Stats,
             recv: Callable[[int], np.ndarray] | None = None) -> np.ndarray:
    """Send ``msg`` to ``dest`` and receive a message of any length from ``source``.

    ``Isend``, then ``Probe`` for the incoming length, ``Recv``, ``Wait``: no length
    exchange of its own, so a variable-length codec costs no extra message.  ``recv(n)``
    gives the receive buffer of n bytes (:func:`scratch`, for a message decoded before the
    next exchange); a new array by default.
    """
    from mpi4py import MPI

    t0 = MPI.Wtime()
    req = comm.Isend([msg, MPI.BYTE], dest=dest, tag=TAG)
    status = MPI.Status()
    comm.Probe(source=source, tag=TAG, status=status)
    n = status.Get_count(MPI.BYTE)
    buf = np.empty(n, dtype=np.uint8) if recv is None else recv(n)
    comm.Recv([buf, MPI.BYTE], source=source, tag=TAG)
    req.Wait()
    st.comm_s += MPI.Wtime() - t0
    st.bytes_sent += int(msg.shape[0])
    st.bytes_recv += int(buf.shape[0])
    return buf


def scratch(session: Session | None, owner: str, dtype: Any = np.float32
            ) -> Callable[[int], np.ndarray]:
    """``n -> buffer``: :func:`~hpcq.collectives.session.reused` for ``owner`` (so a timed call
    neither allocates nor page-faults a fresh d-length array)."""
    return lambda n: reused(session, owner, n, dtype)


def pack(msgs: Sequence[np.ndarray]) -> np.ndarray:
    """Messages as one buffer: their count and lengths (int64), then their bytes."""
    head = np.array([len(msgs), *(m.shape[0] for m in msgs)], dtype=np.int64).view(np.uint8)
    return np.concatenate([head, *msgs]) if msgs else head


def unpack(buf: np.ndarray) -> list[np.ndarray]:
    """The messages of :func:`pack` (views into ``buf``)."""
    k = int(buf[:8].view(np.int64)[0])
    lengths = buf[8:8 * (k + 1)].view(np.int64).tolist()
    out, start = [], 8 * (k + 1)
    for n in lengths:
        out.append(buf[start:start + n])
        start += n
    return out


def chain_bound(w: float, unbiased: bool, injections: Sequence[tuple[float, int]],
                norms_sum: float, mean_sq: float, p: int) -> float:
    """NMSE bound of a sum built through chains of recompressions (see ring.py's docstring).

    ``injections``: ``(E, k)`` pairs: a compression of partial sums whose squared norms add
    up to at most ``E`` (over every message of that hop, in the units of the sum
    ``p m``), followed by ``k`` more compressions of what carries its error.  Unbiased
    codecs (fresh randomness per hop): variances add, and each later compression adds
    ``w`` times what it carries, so ``V = sum w E (1 + w)^k``; biased: norms add
    (Minkowski), each later compression adds ``sqrt(w)`` times the norm it carries, so
    ``sqrt(V) = sum sqrt(w E) (1 + sqrt(w))^k``.  The float32 additions and the scaling
    by 1/p add ``R`` (first order in u = 2^-24): each of the at most ``hops + 1``
    roundings moves a partial sum by u of its norm, which grows at most by
    ``(1 + sqrt(w))`` per compression: ``R = (hops + 1) u (1 + sqrt(w))^hops
    sum_i ||x_i|| / (p ||m||)``.  Returns ``(sqrt(V) / (p ||m||) + R)^2``.
    """
    if mean_sq <= 0:
        return math.inf
    if unbiased:
        v = math.fsum(w * e * (1 + w) ** k for e, k in injections)
        s = math.sqrt(v)
    else:
        s = math.fsum(math.sqrt(w * e) * (1 + math.sqrt(w)) ** k for e, k in injections)
    hops = max((k for _, k in injections), default=0) + 1
    r = (hops + 1) * 2.0**-24 * (1 + math.sqrt(w)) ** hops * norms_sum / (p * math.sqrt(mean_sq))
    return (s / (p * math.sqrt(mean_sq)) + r) ** 2


def codec_omega(comp: Compressor, lengths: Sequence[int]) -> float | None:
    """The codec's omega over the lengths it sees (the largest); None without a guarantee."""
    omegas = [comp.error_bound(n) for n in lengths if n > 0]
    if any(w is None for w in omegas):
        return None
    return max((float(w) for w in omegas if w is not None), default=0.0)
