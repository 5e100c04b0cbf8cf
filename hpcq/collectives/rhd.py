"""Rabenseifner's compressed mean: recursive halving (decode, add, re-encode) then doubling.

With p' = 2^floor(log2 p) and r = p - p' (MPICH's fold for a non-power of two):
ranks 0, 2, ..., 2r - 2 compress their whole vector (hop 0) and send it to the next
odd rank, which decodes and adds it, and they wait; the odd ranks below 2r and the ranks
from 2r on take part as virtual ranks v = rank // 2 (odd) or rank - r.

* :func:`rhd_reduce_scatter_mean`: lg p' halving levels; at level l (mask p' / 2^l) a
  virtual rank keeps the half of its segment of chunks (``chunk_bounds(d, p')``) whose
  index has v's bit ``mask``, compresses the other half of its running sum and sends it
  to v ^ mask, decodes the partner's half and adds it; after the last level virtual rank
  v holds the sum of chunk v and divides it by p.
* :func:`rhd_allgather_chunks`: each virtual rank compresses its chunk once (the chunk
  index as rank word) and lg p' doubling levels swap the compressed chunks held so far
  (as bytes: a count, the lengths, the messages), never re-compressed; the odd ranks
  below 2r then send all p' messages to their even partner (unfold); every rank decodes
  all p' messages, so every rank holds the same bits.

The chain of compressions uses :func:`~hpcq.collectives.hops.hop_seed` (seed, h) with h
counting the compressions before it: the fold is h = 0 (when there is one), level l is
h = l - 1 + f, the allgather's h = lg p' + f (f = 1 with a fold, else 0).  A rank that
dies mid-exchange makes MPI abort the job (the default error handler), never a hang.

Guarantee (:meth:`RHD.bound`)
-----------------------------
As for the ring (:mod:`hpcq.collectives.ring`), with the errors composed over the tree:
at level l a virtual group of 2^(l-1) ranks (each standing for up to f' = 1 + f real ones)
holds partial sums on disjoint segments, so the halves its ranks send have squared norms
summing to at most ||S_G||^2 <= |G| sum_{i in G} ||x_i||^2; every error then passes at
most lg p' - l more halving compressions and the allgather's one.  Unbiased codecs
(errors of different groups independent, zero mean): V <= w (1 + w)^(L+1) sum_i ||x_i||^2
(fold) + sum_l w (1 + w)^(L-l+1) min(p, f' 2^(l-1)) sum_i ||x_i||^2 + w p^2 ||m||^2,
L = lg p'.  Biased codecs: the groups' errors overlap in coordinates and add in norm;
sum_G ||S_G|| <= sqrt(p sum_i ||x_i||^2) (Cauchy-Schwarz over the groups), so each level
injects sqrt(w p sum_i ||x_i||^2) (the fold sqrt(w r sum_i ||x_i||^2)), grown by
(1 + sqrt(w)) per later compression.  NMSE = V / (p^2 ||m||^2) plus the float32 rounding
term of :func:`~hpcq.collectives.hops.chain_bound`; None without a codec guarantee.
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
    pack,
    scratch,
    unpack,
)
from hpcq.collectives.ring import _f32
from hpcq.collectives.scheme import BoundInputs, Cost, lg, register, ring
from hpcq.collectives.session import Session
from hpcq.compressors import Compressor
from hpcq.feedback import ErrorFeedback


def layout(p: int, rank: int) -> tuple[int, int, int]:
    """``(p', fold, v)``: the power of two, 1 when there is a fold (else 0), and ``rank``'s
    virtual rank (-1 for a rank that folds its vector onto its odd neighbour)."""
    q = 1 << (p.bit_length() - 1)
    extra = p - q
    if rank < 2 * extra:
        return q, 1, (rank // 2 if rank % 2 else -1)
    return q, int(extra > 0), rank - extra


def real_rank(v: int, p: int) -> int:
    """The rank of virtual rank ``v``."""
    q = 1 << (p.bit_length() - 1)
    extra = p - q
    return 2 * v + 1 if v < extra else v + extra


def rhd_reduce_scatter_mean(comm: Any, x: np.ndarray, comp: Compressor, *, seed: int = 0,
                            step: int = 0, session: Session | None = None,
                            feedback: bool = False, hop_error: bool = False,
                            stats: Stats | None = None) -> tuple[np.ndarray, Stats]:
    """This rank's chunk of the mean by compressed recursive halving.

    Returns ``(chunk, stats)``: chunk v of ``chunk_bounds(d, p')`` for virtual rank v,
    an empty array on a rank that folded its vector onto its neighbour; with a session,
    a view of its buffer ``rhd.acc``, valid until the next call.  Parameters as for
    :func:`hpcq.collectives.ring.reduce_scatter_mean`.
    """
    from mpi4py import MPI

    st = Stats() if stats is None else stats
    p, r = comm.Get_size(), comm.Get_rank()
    x32 = _f32(x)
    d = x32.shape[0]
    q, f, v = layout(p, r)

    def memory(what: str) -> ErrorFeedback | None:
        return hop_memory(session, f"rhd:{comp.spec}:{d}:{what}", comp) if feedback else None

    # one reused buffer: the kept half, then halved in place level by level
    acc_of, recv = scratch(session, "rhd.acc"), scratch(session, "rhd.recv", np.uint8)

    if f and r < 2 * (p - q):
        if v < 0:  # fold: send the whole vector to the odd neighbour, then wait
            msg = encode_hop(comp, x32, st, seed=hop_seed(seed, 0), step=step, rank=r,
                             memory=memory("fold"), hop_error=hop_error)
            t0 = MPI.Wtime()
            comm.Send([msg, MPI.BYTE], dest=r + 1, tag=0x4852)
            st.comm_s += MPI.Wtime() - t0
            st.bytes_sent += int(msg.shape[0])
            return np.empty(0, dtype=np.float32), st
        t0 = MPI.Wtime()
        status = MPI.Status()
        comm.Probe(source=r - 1, tag=0x4852, status=status)
        buf = np.empty(status.Get_count(MPI.BYTE), dtype=np.uint8)
        comm.Recv([buf, MPI.BYTE], source=r - 1, tag=0x4852)
        t1 = MPI.Wtime()
        st.comm_s += t1 - t0
        st.bytes_recv += int(buf.shape[0])
        acc = acc_of(d)
        np.copyto(acc, x32)
        comp.decode(buf, out=acc, add=True)
        st.decode_s += MPI.Wtime() - t1
    else:
        acc = x32  # read only: the first level copies just the half it keeps
    b = chunk_bounds(d, q)
    lo, hi = 0, q  # the segment of chunks this rank holds
    level, mask = 0, q >> 1
    while mask:
        mid = (lo + hi) // 2
        keep, send = ((mid, hi), (lo, mid)) if v & mask else ((lo, mid), (mid, hi))
        partner = real_rank(v ^ mask, p)
        seg = acc[b[send[0]] - b[lo]:b[send[1]] - b[lo]]
        msg = encode_hop(comp, seg, st, seed=hop_seed(seed, level + f), step=step, rank=r,
                         memory=memory(f"level{level}"), hop_error=hop_error)
        buf = exchange(comm, msg, partner, partner, st, recv)
        t0 = MPI.Wtime()
        mine = acc[b[keep[0]] - b[lo]:b[keep[1]] - b[lo]]
        if acc is x32:  # the caller's vector: the kept half into the reused buffer
            kept, mine = mine, acc_of(mine.shape[0])
            np.copyto(mine, kept)
        comp.decode(buf, out=mine, add=True)  # in place from the second level on
        st.decode_s += MPI.Wtime() - t0
        acc, (lo, hi) = mine, keep
        level, mask = level + 1, mask >> 1
    t0 = MPI.Wtime()
    if acc is x32:  # one rank: never hand back the caller's own array
        acc = acc_of(d)
        np.copyto(acc, x32)
    if p > 1:
        acc /= np.float32(p)
    st.decode_s += MPI.Wtime() - t0
    return acc, st


def rhd_allgather_chunks(comm: Any, chunk: np.ndarray, comp: Compressor, d: int, *,
                         seed: int = 0, step: int = 0, hop: int | None = None,
                         session: Session | None = None, feedback: bool = False,
                         hop_error: bool = False, stats: Stats | None = None,
                         out: np.ndarray | None = None) -> tuple[np.ndarray, Stats]:
    """Every virtual rank's ``chunk`` (chunk v of ``chunk_bounds(d, p')``; empty on a folded
    rank), compressed once and spread by recursive doubling: the vector on every rank.

    The owner encodes with ``hop_seed(seed, hop)`` (default lg p' + f, after
    :func:`rhd_reduce_scatter_mean`) and the chunk index as rank word.
    """
    from mpi4py import MPI

    st = Stats() if stats is None else stats
    p, r = comm.Get_size(), comm.Get_rank()
    q, f, v = layout(p, r)
    b = chunk_bounds(d, q)
    if hop is None:
        hop = (q.bit_length() - 1) + f
    if v >= 0:
        chunk = _f32(chunk)
        if chunk.shape[0] != b[v + 1] - b[v]:
            raise ValueError(f"rhd_allgather_chunks: virtual rank {v}'s chunk has "
                             f"{chunk.shape[0]} entries, chunk {v} of d={d} has "
                             f"{b[v + 1] - b[v]}")
        mem = (hop_memory(session, f"rhd:{comp.spec}:{d}:allgather", comp) if feedback
               else None)
        held = [encode_hop(comp, chunk, st, seed=hop_seed(seed, hop), step=step, rank=v,
                           memory=mem, hop_error=hop_error)]
        mask = 1  # held: the compressed chunks of v's aligned block of `mask` chunks
        while mask < q:
            partner = v ^ mask
            got = unpack(exchange(comm, pack(held), real_rank(partner, p),
                                  real_rank(partner, p), st))
            held = held + got if partner > v else got + held
            mask <<= 1
        if f and r < 2 * (p - q):  # unfold: the folded neighbour gets every message
            t0 = MPI.Wtime()
            buf = pack(held)
            comm.Send([buf, MPI.BYTE], dest=r - 1, tag=0x4853)
            st.comm_s += MPI.Wtime() - t0
            st.bytes_sent += int(buf.shape[0])
    else:
        t0 = MPI.Wtime()
        status = MPI.Status()
        comm.Probe(source=r + 1, tag=0x4853, status=status)
        buf = np.empty(status.Get_count(MPI.BYTE), dtype=np.uint8)
        comm.Recv([buf, MPI.BYTE], source=r + 1, tag=0x4853)
        st.comm_s += MPI.Wtime() - t0
        st.bytes_recv += int(buf.shape[0])
        held = unpack(buf)
    t0 = MPI.Wtime()
    mean = np.empty(d, dtype=np.float32) if out is None else out
    for j, m in enumerate(held):
        comp.decode(m, out=mean[b[j]:b[j + 1]])
    st.decode_s += MPI.Wtime() - t0
    return mean, st


def rhd_mean(comm: Any, x: np.ndarray, comp: Compressor, *, seed: int = 0, step: int = 0,
             session: Session | None = None, feedback: bool = False, hop_error: bool = False,
             out: np.ndarray | None = None) -> tuple[np.ndarray, Stats]:
    """The mean of every rank's ``x``: :func:`rhd_reduce_scatter_mean`, then
    :func:`rhd_allgather_chunks`."""
    kw = dict(seed=seed, step=step, session=session, feedback=feedback, hop_error=hop_error)
    chunk, st = rhd_reduce_scatter_mean(comm, x, comp, **kw)  # type: ignore[arg-type]
    return rhd_allgather_chunks(comm, chunk, comp, int(x.shape[0]), stats=st, out=out,
                                **kw)  # type: ignore[arg-type]


def _decodes(p: int) -> float:
    q = 1 << (p.bit_length() - 1)
    return 1.0 + (q - 1) / q + (1.0 if q != p else 0.0)


class RHD(HopScheme):
    """Compressed recursive halving (decode-add-re-encode), then doubling allgather."""

    name = "rhd"
    summary = ("Rabenseifner: recursive halving with decode-add-re-encode, then recursive "
               "doubling of the compressed reduced chunks; 2 lg p hops (fold for p != 2^k)")
    style = ("#CC79A7", "^", "-")
    cost = Cost("recursive halving + recursive doubling of compressed chunks (fold when "
                "p != 2^k)", lambda p: 2 * lg(p), lambda p, m, d: ring(p) * m, lambda p: 1.0,
                _decodes, ("2 lg p", "2 (p-1)/p m", "1", "2 - 1/p' (+1 fold)"),
                message=hop_message,
                chunk_headers=True)

    run = staticmethod(rhd_mean)

    def codec_lengths(self, d: int, p: int) -> list[int]:
        """Every segment length the halving compresses, and the chunks (and d with a fold)."""
        q = 1 << (p.bit_length() - 1)
        b = chunk_bounds(d, q)
        out = {int(b[j + 1] - b[j]) for j in range(q)}
        size = q
        while size > 1:
            half = size // 2
            out |= {int(b[s + size] - b[s + half]) for s in range(0, q, size)}
            out |= {int(b[s + half] - b[s]) for s in range(0, q, size)}
            size = half
        if q != p:
            out.add(d)
        return sorted(n for n in out if n > 0)

    def bound(self, comp: Compressor | None, d: int, p: int, inputs: BoundInputs
              ) -> float | None:
        comp = self._need(comp)
        w = codec_omega(comp, self.codec_lengths(d, p))
        if w is None or self.p["feedback"]:
            return None
        q = 1 << (p.bit_length() - 1)
        levels, folded = q.bit_length() - 1, q != p
        total = float(sum(inputs.sq_norms))
        unbiased = bool(comp.unbiased)
        inj = []
        if folded:
            inj.append((total if unbiased else (p - q) * total, levels + 1))
        for lev in range(1, levels + 1):
            group = min(p, (2 if folded else 1) << (lev - 1))
            inj.append((group * total if unbiased else p * total, levels - lev + 1))
        inj.append((p * p * inputs.mean_sq, 0))
        norms = float(np.sum(np.sqrt(np.asarray(inputs.sq_norms, dtype=np.float64))))
        return chain_bound(w, unbiased, inj, norms, inputs.mean_sq, p)


register(RHD())
