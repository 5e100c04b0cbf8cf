"""The ring compressed mean: a compressed ring reduce-scatter, then a compressed ring allgather.

The two halves are collectives in their own right, the building blocks of sharded
training (ZeRO/FSDP reduce-scatter the gradient, each rank updates its own shard, and
all-gather the parameters):

* :func:`reduce_scatter_mean`: rank r ends with the mean of chunk r
  (:func:`~hpcq.collectives.chunk_bounds` (d, p)).  p - 1 hops: at hop k rank r sends
  its running partial sum of chunk (r - k - 1) mod p, compressed, to rank r + 1, which
  decodes it, adds its own chunk and compresses the sum again at hop k + 1; after hop
  p - 2 rank r holds the sum of chunk r and divides it by p.  Each hop uses
  :func:`~hpcq.collectives.hops.hop_seed` (seed, k) and the sender's rank.
* :func:`allgather_chunks`: each rank compresses its chunk once (seed of hop p - 1, the
  chunk's index as rank word) and the messages travel p - 1 hops round the ring as bytes
  (forwarded, never re-compressed); every rank decodes all p, its own too, so every
  rank holds the same bits.

Messages move by ``Isend`` + ``Probe`` + ``Recv`` (:func:`~hpcq.collectives.hops.exchange`),
so a variable-length codec needs no length exchange.  A rank that dies mid-ring makes
MPICH (and Open MPI) abort the whole job (their default error handler on
``COMM_WORLD``), so the other ranks never wait for it for ever.

Error feedback (``feedback=true``): one memory per (hop, codec, d) of this rank in the
session: at hop k a rank always sends the same chunk ((r - k - 1) mod p), so the memory
of hop k compensates exactly what that hop lost on its last call; the allgather's
compression has its own memory.

Guarantee (:meth:`Ring.bound`)
------------------------------
Let S_k be the exact partial sum a chain carries after k + 1 ranks (k = 0..p-1,
S_{p-1} = p m for the chunk), T_k the computed one, e_k = T_k - S_k, and w the codec's
omega on a chunk (the largest over chunk lengths).  Hop k compresses T_k with error q_k,
E||q_k||^2 <= w E||T_k||^2, and e_{k+1} = e_k + q_k.  The allgather's compression of
T_{p-1}/p is one more, so a chunk's sum passes p compressions.

* Unbiased codecs, fresh randomness per hop: E[q_k | past] = 0, so
  E||e_{k+1}||^2 = E||e_k||^2 + E||q_k||^2 and E||T_k||^2 = ||S_k||^2 + E||e_k||^2:
  V_{k+1} = (1 + w) V_k + w ||S_k||^2, hence V = sum_k w (1 + w)^(p-1-k) ||S_k||^2.
* Biased codecs: Minkowski in L2, sqrt(V_{k+1}) <= (1 + sqrt(w)) sqrt(V_k) + sqrt(w)
  ||S_k||, hence sqrt(V) <= sum_k sqrt(w) (1 + sqrt(w))^(p-1-k) ||S_k||.

The chunks are disjoint, so their errors add in squares; over the chunks
sum_c ||S_k^c||^2 <= (k + 1) sum_i ||x_i||^2 (Cauchy-Schwarz over the k + 1 ranks of
each chain) and sum_c ||S_{p-1}^c||^2 = p^2 ||m||^2.  NMSE = V / (p^2 ||m||^2) plus the
float32 rounding term of :func:`~hpcq.collectives.hops.chain_bound`.  For small w
the unbiased bound is about w (p (p-1)/2 sum_i ||x_i||^2 / (p^2 ||m||^2) + 1): the
allgather's w sum_i ||x_i||^2 / (p^2 ||m||^2) times about p/2 (the early hops carry
partial sums of unrelated vectors), plus one compression of the mean.  None for a codec
without a guarantee, and with ``feedback=true`` (a memory's error is carried to the
next call, not bounded per call).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcq.collectives import Stats, chunk_bounds
from hpcq.collectives.hops import (
    HopScheme,
    chain_bound,
    codec_omega,
    encode_hop,
    exchange,
    hop_memory,
    hop_message,
    hop_seed,
    scratch,
)
from hpcq.collectives.scheme import BoundInputs, Cost, register, ring
from hpcq.collectives.session import Session
from hpcq.compressors import Compressor


def _f32(x: np.ndarray) -> np.ndarray:
    return x if x.dtype == np.float32 and x.flags.c_contiguous else np.ascontiguousarray(
        x, dtype=np.float32)


def reduce_scatter_mean(comm: Any, x: np.ndarray, comp: Compressor, *, seed: int = 0,
                        step: int = 0, session: Session | None = None, feedback: bool = False,
                        hop_error: bool = False, stats: Stats | None = None
                        ) -> tuple[np.ndarray, Stats]:
    """This rank's chunk of the mean of every rank's ``x``, by a compressed ring.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        Every rank calls with the same ``comp``, ``seed``, ``step`` and length d.
    x : numpy.ndarray
        This rank's 1-D float vector.
    comp : Compressor
        The codec of every hop.
    seed, step : int
        The randomness; hop k encodes with ``hop_seed(seed, k)`` and the sender's rank.
    session : Session, optional
        Holds the per-hop error-feedback memories (needed with ``feedback``).
    feedback, hop_error : bool
        Error feedback on each hop; record each hop's relative error in ``hop_nmse``.
    stats : Stats, optional
        Added to (and returned); a new one by default.

    Returns
    -------
    chunk : numpy.ndarray
        float32, the mean of chunk ``rank`` of ``chunk_bounds(d, p)``; with a session, a
        view of its buffer ``ring.acc``, valid until the next call.
    stats : Stats
    """
    from mpi4py import MPI

    st = Stats() if stats is None else stats
    p, r = comm.Get_size(), comm.Get_rank()
    x32 = _f32(x)
    d = x32.shape[0]
    b = chunk_bounds(d, p)
    # one reused chunk buffer: a hop's message is encoded before the next sum overwrites it
    acc_of, recv = scratch(session, "ring.acc"), scratch(session, "ring.recv", np.uint8)
    c = (r - 1) % p
    acc = x32[b[c]:b[c + 1]]  # read only: the first hop encodes it as it is
    for k in range(p - 1):
        mem = (hop_memory(session, f"ring:{comp.spec}:{d}:hop{k}", comp) if feedback
               else None)
        msg = encode_hop(comp, acc, st, seed=hop_seed(seed, k), step=step, rank=r,
                         memory=mem, hop_error=hop_error)
        buf = exchange(comm, msg, (r + 1) % p, (r - 1) % p, st, recv)
        c = (r - k - 2) % p
        t0 = MPI.Wtime()
        acc = acc_of(b[c + 1] - b[c])
        np.copyto(acc, x32[b[c]:b[c + 1]])
        comp.decode(buf, out=acc, add=True)  # own chunk + decoded partial sum
        st.decode_s += MPI.Wtime() - t0
    t0 = MPI.Wtime()
    if p == 1:  # never hand back the caller's own array
        acc = acc_of(d)
        np.copyto(acc, x32)
    else:
        acc /= np.float32(p)
    st.decode_s += MPI.Wtime() - t0
    return acc, st


def allgather_chunks(comm: Any, chunk: np.ndarray, comp: Compressor, d: int, *,
                     seed: int = 0, step: int = 0, hop: int | None = None,
                     session: Session | None = None, feedback: bool = False,
                     hop_error: bool = False, stats: Stats | None = None,
                     out: np.ndarray | None = None) -> tuple[np.ndarray, Stats]:
    """Every rank's ``chunk`` (chunk ``rank`` of ``chunk_bounds(d, p)``), compressed once by
    its owner and forwarded round the ring: the float32 vector of length d on every rank.

    The owner encodes with ``hop_seed(seed, hop)`` (``hop`` default p - 1: after a
    :func:`reduce_scatter_mean`'s p - 1 hops) and its rank as rank word; every rank
    decodes every message, its own included, so all ranks hold the same bits.
    """
    from mpi4py import MPI

    st = Stats() if stats is None else stats
    p, r = comm.Get_size(), comm.Get_rank()
    b = chunk_bounds(d, p)
    chunk = _f32(chunk)
    if chunk.shape[0] != b[r + 1] - b[r]:
        raise ValueError(f"allgather_chunks: rank {r}'s chunk has {chunk.shape[0]} entries, "
                         f"chunk {r} of d={d} over {p} ranks has {b[r + 1] - b[r]}")
    mem = (hop_memory(session, f"ring:{comp.spec}:{d}:allgather", comp) if feedback
           else None)
    msgs: list[np.ndarray | None] = [None] * p
    msgs[r] = encode_hop(comp, chunk, st, seed=hop_seed(seed, p - 1 if hop is None else hop),
                         step=step, rank=r, memory=mem, hop_error=hop_error)
    for k in range(p - 1):
        send = msgs[(r - k) % p]
        assert send is not None  # received at the previous hop
        msgs[(r - k - 1) % p] = exchange(comm, send, (r + 1) % p, (r - 1) % p, st)
    t0 = MPI.Wtime()
    mean = np.empty(d, dtype=np.float32) if out is None else out
    for j, m in enumerate(msgs):  # each chunk decoded in place
        comp.decode(m, out=mean[b[j]:b[j + 1]])
    st.decode_s += MPI.Wtime() - t0
    return mean, st


def ring_mean(comm: Any, x: np.ndarray, comp: Compressor, *, seed: int = 0, step: int = 0,
              session: Session | None = None, feedback: bool = False, hop_error: bool = False,
              out: np.ndarray | None = None) -> tuple[np.ndarray, Stats]:
    """The mean of every rank's ``x``: :func:`reduce_scatter_mean`, :func:`allgather_chunks`."""
    kw = dict(seed=seed, step=step, session=session, feedback=feedback, hop_error=hop_error)
    chunk, st = reduce_scatter_mean(comm, x, comp, **kw)  # type: ignore[arg-type]
    return allgather_chunks(comm, chunk, comp, int(x.shape[0]), stats=st, out=out,
                            **kw)  # type: ignore[arg-type]


class Ring(HopScheme):
    """Compressed ring reduce-scatter (decode, add, re-encode per hop), then ring allgather."""

    name = "ring"
    summary = ("ring reduce-scatter with decode-add-re-encode per hop, then ring allgather "
               "of the compressed reduced chunks: 2 (p-1) hops, O(d bits) per rank")
    style = ("#009E73", "v", "-")
    cost = Cost("ring reduce-scatter + ring allgather of m/p-byte chunks (Isend/Recv)",
                lambda p: 2 * (p - 1), lambda p, m, d: ring(p) * m, lambda p: 1.0,
                lambda p: 1.0 + (p - 1) / p, ("2 (p-1)", "2 (p-1)/p m", "1", "1 + (p-1)/p"),
                message=hop_message,
                chunk_headers=True)

    run = staticmethod(ring_mean)

    def codec_lengths(self, d: int, p: int) -> list[int]:
        """The chunk lengths (the first ``d % p`` one longer; empty chunks left out)."""
        return sorted({int(n) for n in np.diff(chunk_bounds(d, p)) if n > 0})

    def bound(self, comp: Compressor | None, d: int, p: int, inputs: BoundInputs
              ) -> float | None:
        comp = self._need(comp)
        w = codec_omega(comp, self.codec_lengths(d, p))
        if w is None or self.p["feedback"]:
            return None
        total = float(sum(inputs.sq_norms))
        inj = [((k + 1) * total, p - 1 - k) for k in range(p - 1)]
        inj.append((p * p * inputs.mean_sq, 0))
        norms = float(np.sum(np.sqrt(np.asarray(inputs.sq_norms, dtype=np.float64))))
        return chain_bound(w, bool(comp.unbiased), inj, norms, inputs.mean_sq, p)


register(Ring())
