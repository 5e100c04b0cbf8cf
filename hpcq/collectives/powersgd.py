"""PowerSGD (Vogels et al., NeurIPS 2019) as PyTorch's ``powerSGD_hook`` runs it: a stateful scheme.

``powersgd:rank=r,min_compression_rate=2,start_iter=0,warm_start=true,
orthogonalization_epsilon=0,batch=false``.  Each tensor of the buffer's layout with two
or more dimensions is viewed as a matrix (first dimension x the rest, n x m) of rank
``k = min(n, m, r)``; it is compressed when ``(n + m) k * min_compression_rate < n m``
(the hook's ``_should_compress``).  The other matrices and every 1-D tensor (without a
layout the whole vector is one 1-D tensor, so PowerSGD is then a plain fp32
allreduce) go in one uncompressed fp32 allreduce.  One call, in the hook's order:

1. ``M = x + e`` for every compressed matrix (e its error memory, zero at first);
2. Q: on the first PowerSGD step (and every step without ``warm_start``) filled with
   N(0, 1) from a generator seeded with ``(seed, step count)`` (the same on every
   rank), then orthogonalized; with ``warm_start`` last step's Q, orthogonalized;
3. ``P = M Q``;  allreduce of the uncompressed part, then divided by p;
4. allreduce of every P (sum; not divided: it is orthogonalized next);
   Gram-Schmidt on each P (column by column: normalise, then remove it from the
   columns after it; with ``orthogonalization_epsilon`` eps the norm is ``||col|| + eps``);
5. ``Q = M^T P``;  allreduce of every Q, then ``Q /= p``;
6. ``M_hat = P Q^T`` is the mean of the matrix; ``e = M - M_hat``.

Before ``start_iter`` PowerSGD steps have been counted, a call is a plain fp32
allreduce (no error memory, as the hook).  ``batch`` stacks the matrices of one shape
and multiplies them in one batched product (the hook's
``batch_tensors_with_same_shape``); the numbers are the same either way, since the
compressed matrices are kept packed by shape in the first place and Q is drawn for
all of them at once.

Deviations from the hook, each exact in real arithmetic:

* The hook orthogonalizes with ``torch.linalg.qr`` above rank 2; here always
  Gram-Schmidt.  Both give an orthonormal basis of the same column space, and
  ``M_hat = P P^T M`` depends on that space only.
* A zero column (a matrix whose gradient vanishes) stays zero where the hook, with
  epsilon 0, divides 0 by 0 and its warm-started Q stays NaN from then on.
* The hook's error memory spans its whole bucket, so an uncompressed tensor keeps
  ``x_i + e_i - mean``: those memories add up to zero over the ranks and never change
  the mean, but they random-walk with the steps and cost float32 precision.  Here
  only the compressed matrices have a memory.

State (step count, error memories, P and Q) lives in the :class:`Session`, keyed by
the scheme's spec and the names of the tensors: a call without a session is refused.
Stats: ``encode_s`` = packing ``x + e``, ``P = M Q``, orthogonalizations, ``Q = M^T P``;
``comm_s`` = the three allreduces; ``decode_s`` = ``P Q^T``, unpacking, the error
memory and the divisions.  ``Stats.phases`` has each of these by name.  Bytes: 4 bytes
per float of every P, every Q and the uncompressed part (each allreduce's data once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpcq.collectives import Stats
from hpcq.collectives.baselines import allreduce_mean
from hpcq.collectives.scheme import BoundInputs, Cost, Scheme, check_out, lg, register, ring
from hpcq.collectives.session import Session
from hpcq.compressors import Compressor
from hpcq.compressors.base import Param
from hpcq.workloads.layout import Layout, matrix_shape


def should_compress(n: int, m: int, rank: int, min_rate: float) -> bool:
    """The hook's rule: an n x m matrix at rank ``min(n, m, rank)`` is compressed when
    its factors times ``min_rate`` are fewer floats than the matrix."""
    k = min(n, m, rank)
    return (n + m) * k * min_rate < n * m


def orthogonalize(a: np.ndarray, eps: float) -> None:
    """Gram-Schmidt on the columns of each matrix of the stack ``a`` (b, n, k), in place.

    Column i is divided by its norm (plus ``eps``; a zero norm with eps 0 leaves it
    zero), then its projection is removed from the columns after it.
    """
    k = a.shape[2]
    for i in range(k):
        col = a[:, :, i:i + 1]
        norm = np.sqrt(np.sum(col * col, axis=1, keepdims=True))
        if eps == 0:
            norm[norm == 0] = 1
        else:
            norm += np.float32(eps)
        col /= norm
        if i + 1 < k:
            rest = a[:, :, i + 1:]
            rest -= np.sum(col * rest, axis=1, keepdims=True) * col


@dataclass(frozen=True)
class Unit:
    """``b`` compressed n x m matrices multiplied together, at rank k: their offsets in the
    packed matrix buffer, in the P memory and in the Q memory."""

    b: int
    n: int
    m: int
    k: int
    mo: int
    po: int
    qo: int


@dataclass(frozen=True)
class Plan:
    """Where each tensor of a layout goes: ``moves`` (offset in x, offset in the packed
    buffer, size) of the compressed matrices, packed by shape; the ``units``; the
    uncompressed ``rest`` as (offset, size) runs; and the totals."""

    moves: tuple[tuple[int, int, int], ...]
    units: tuple[Unit, ...]
    rest: tuple[tuple[int, int], ...]
    packed: int
    p_size: int
    q_size: int
    rest_size: int


def make_plan(layout: Layout, rank: int, min_rate: float, batch: bool) -> Plan:
    """The :class:`Plan` of ``layout`` (see the module docstring for the rules).

    ValueError when ``rank`` exceeds a dimension of a matrix it would compress (possible
    with ``min_rate`` < 1: the hook silently lowers the rank there).  A plan may compress
    nothing (a bucket of biases); :meth:`PowerSGD.check_layout` refuses a whole gradient
    of which nothing would be.
    """
    groups: dict[tuple[int, int], list[int]] = {}
    rest: list[tuple[int, int]] = []
    for t in layout:
        nm = matrix_shape(t)
        if nm is not None and should_compress(nm[0], nm[1], rank, min_rate):
            if rank > min(nm):
                raise ValueError(f"scheme powersgd: rank={rank} is larger than tensor "
                                 f"{t.name!r} ({nm[0]} x {nm[1]} as a matrix) allows; use "
                                 f"rank <= {min(nm)} or min_compression_rate >= 1")
            groups.setdefault(nm, []).append(t.offset)
        elif rest and rest[-1][0] + rest[-1][1] == t.offset:
            rest[-1] = (rest[-1][0], rest[-1][1] + t.size)  # adjacent runs merge
        else:
            rest.append((t.offset, t.size))
    moves, units = [], []
    mo = po = qo = 0
    for (n, m), offsets in groups.items():  # the hook's shape order: first appearance
        k = min(n, m, rank)
        for i, off in enumerate(offsets):
            moves.append((off, mo + i * n * m, n * m))
        sizes = [len(offsets)] if batch else [1] * len(offsets)
        for b in sizes:
            units.append(Unit(b, n, m, k, mo, po, qo))
            mo, po, qo = mo + b * n * m, po + b * n * k, qo + b * m * k
    return Plan(tuple(moves), tuple(units), tuple(rest), mo, po, qo,
                sum(s for _, s in rest))


class PowerSGD(Scheme):
    """Rank-r PowerSGD with error feedback and warm start, per tensor of the layout."""

    name = "powersgd"
    summary = ("PowerSGD (as PyTorch's powerSGD_hook): rank-r factors P, Q of each matrix, "
               "two allreduces, error feedback, warm start")
    params = (
        Param("rank", int, 1, "rank r of the approximation (min(n, m, r) per matrix)",
              minimum=1, maximum=1 << 16),
        Param("min_compression_rate", float, 2.0, "compress a matrix only when its factors "
              "are this many times smaller", minimum=0.0),
        Param("start_iter", int, 0, "plain fp32 allreduce for the first steps", minimum=0),
        Param("warm_start", bool, True, "reuse last step's Q"),
        Param("orthogonalization_epsilon", float, 0.0, "added to each column norm",
              minimum=0.0),
        Param("batch", bool, False, "multiply same-shaped matrices in one batched product"),
    )
    takes_compressor = False
    # three Rabenseifner allreduces (P, Q, the rest) of m bytes in all
    cost = Cost("three Rabenseifner allreduces (P, Q, uncompressed rest)",
                lambda p: 3 * 2 * lg(p), lambda p, m, d: ring(p) * m,
                lambda p: 1.0, lambda p: 1.0, ("6 lg p", "2 (p-1)/p m", "1", "1"))
    style = ("#CC79A7", "h", "-")

    def plan(self, layout: Layout) -> Plan:
        """The :class:`Plan` of ``layout`` with this scheme's parameters."""
        return make_plan(layout, int(self.p["rank"]), float(self.p["min_compression_rate"]),
                         bool(self.p["batch"]))

    def compressed_size(self, layout: Layout) -> int:
        return self.plan(layout).packed

    def check_layout(self, layout: Layout) -> None:
        """ValueError when the layout has matrices and the hook's rule compresses none of
        them (the run would measure an fp32 allreduce under PowerSGD's name); the message
        gives the largest rank that would compress one."""
        rank, min_rate = int(self.p["rank"]), float(self.p["min_compression_rate"])
        shapes = [(nm, t.name) for t in layout if (nm := matrix_shape(t)) is not None]
        if not shapes or self.plan(layout).units:
            return
        # the largest rank that compresses some matrix: (n + m) k rate < n m, k <= min(n, m)
        best = max((min(n, m, math.ceil(n * m / ((n + m) * min_rate)) - 1) if min_rate > 0
                    else min(n, m), f"{name!r} ({n} x {m})") for (n, m), name in shapes)
        fix = (f"use rank <= {best[0]} (for {best[1]})" if best[0] >= 1
               else "lower min_compression_rate")
        raise ValueError(f"scheme {self.spec}: rank={rank} with min_compression_rate="
                         f"{min_rate:g} leaves no matrix of this gradient to compress (the "
                         f"run would be an fp32 allreduce); {fix}")

    def mean(self, comm: Any, x: np.ndarray, comp: Compressor | None = None, *, seed: int = 0,
             step: int = 0, feedback: Any = None, session: Session | None = None,
             out: np.ndarray | None = None, layout: Layout | None = None
             ) -> tuple[np.ndarray, Stats]:
        from mpi4py import MPI

        if session is None:
            raise ValueError("scheme powersgd needs a session (it keeps error memories, Q "
                             "and its step count across calls): pass session=Session(comm)")
        if comp is not None:
            self.check(comp)
        wtime = MPI.Wtime
        t0 = wtime()
        x32 = x if x.dtype == np.float32 and x.flags.c_contiguous else np.ascontiguousarray(
            x, dtype=np.float32)
        d = int(x32.shape[0])
        lay = layout if layout is not None else Layout.flat(d)
        state = session.slot("powersgd", self.spec, *lay.names)
        if "plan" not in state:
            lay.validate(d)
            state["plan"] = pl = self.plan(lay)
            state["iter"] = 0
            # per unit, where its matrices start in x (an int for a lone one)
            where = {mo: xo for xo, mo, _ in pl.moves}
            state["starts"] = [where[u.mo] if u.b == 1 else
                               [where[u.mo + i * u.n * u.m] for i in range(u.b)]
                               for u in pl.units]
        plan: Plan = state["plan"]
        it = state["iter"]
        state["iter"] = it + 1
        owner = f"{self.spec}.mean"
        y = session.buffer(owner, d) if out is None else check_out(out, d, "scheme powersgd")
        if it < int(self.p["start_iter"]) or plan.packed == 0:
            mean, st = allreduce_mean(comm, x32, out=y)
            st.comm_s += wtime() - t0 - st.total_s  # the conversion, if any
            return mean, st
        return y, self._step(comm, x32, y, plan, state, session, seed, it, t0)

    def _step(self, comm: Any, x: np.ndarray, y: np.ndarray, plan: Plan,
              state: dict[str, Any], session: Session, seed: int, it: int,
              t0: float) -> Stats:
        """One PowerSGD step (module docstring, 1-6) into ``y``; its :class:`Stats`."""
        from mpi4py import MPI

        wtime, p = MPI.Wtime, comm.Get_size()
        eps = float(self.p["orthogonalization_epsilon"])
        ph: dict[str, float] = {}
        # 1. M = x + e, packed by shape
        if "error" not in state:
            state["error"] = np.zeros(plan.packed, dtype=np.float32)
        err: np.ndarray = state["error"]
        mbuf = session.buffer(f"{self.spec}.matrices", plan.packed)
        for xo, mo, size in plan.moves:
            np.add(x[xo:xo + size], err[mo:mo + size], out=mbuf[mo:mo + size])
        t1 = wtime()
        ph["pack"] = t1 - t0
        # 2. Q: warm, or drawn the same on every rank
        fresh = not self.p["warm_start"] or "q" not in state
        if fresh:
            rng = np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, it])
            state["q"] = rng.standard_normal(plan.q_size, dtype=np.float32)
            state["p"] = np.empty(plan.p_size, dtype=np.float32)
        pm: np.ndarray = state["p"]
        qm: np.ndarray = state["q"]
        mats, ps, qs = [], [], []
        for u in plan.units:
            mats.append(mbuf[u.mo:u.mo + u.b * u.n * u.m].reshape(u.b, u.n, u.m))
            ps.append(pm[u.po:u.po + u.b * u.n * u.k].reshape(u.b, u.n, u.k))
            qs.append(qm[u.qo:u.qo + u.b * u.m * u.k].reshape(u.b, u.m, u.k))
        for q in qs:
            orthogonalize(q, eps)
        # 3. P = M Q
        for mat, q, pp in zip(mats, qs, ps, strict=True):
            np.matmul(mat, q, out=pp)
        t2 = wtime()
        ph["p"] = t2 - t1
        # the uncompressed rest: one fp32 allreduce, divided by p
        rest = session.buffer(f"{self.spec}.rest", plan.rest_size)
        lo = 0
        for xo, size in plan.rest:
            rest[lo:lo + size] = x[xo:xo + size]
            lo += size
        t3 = wtime()
        if plan.rest_size:
            comm.Allreduce(MPI.IN_PLACE, [rest, MPI.FLOAT], op=MPI.SUM)
        t4 = wtime()
        ph["pack"] += t3 - t2
        ph["comm_rest"] = t4 - t3
        # 4. allreduce P (not divided: orthogonalized next), Gram-Schmidt
        comm.Allreduce(MPI.IN_PLACE, [pm, MPI.FLOAT], op=MPI.SUM)
        t5 = wtime()
        ph["comm_p"] = t5 - t4
        for pp in ps:
            orthogonalize(pp, eps)
        t6 = wtime()
        ph["orthogonalize"] = t6 - t5
        # 5. Q = M^T P, allreduce Q, divided by p
        for mat, q, pp in zip(mats, qs, ps, strict=True):
            np.matmul(mat.transpose(0, 2, 1), pp, out=q)
        t7 = wtime()
        ph["q"] = t7 - t6
        comm.Allreduce(MPI.IN_PLACE, [qm, MPI.FLOAT], op=MPI.SUM)
        t8 = wtime()
        ph["comm_q"] = t8 - t7
        if p > 1:
            qm /= np.float32(p)
            rest /= np.float32(p)
        # 6. M_hat = P Q^T; e = M - M_hat; unpack
        # a lone matrix's M_hat goes straight into y; a batch's via a packed buffer
        hbuf = session.buffer(f"{self.spec}.approx", max(u.b * u.n * u.m for u in plan.units))
        for u, mat, q, pp, xo in zip(plan.units, mats, qs, ps, state["starts"], strict=True):
            size = u.b * u.n * u.m
            target = (y[xo:xo + size] if u.b == 1 else hbuf[:size]).reshape(u.b, u.n, u.m)
            np.matmul(pp, q.transpose(0, 2, 1), out=target)
            np.subtract(mat, target, out=err[u.mo:u.mo + size].reshape(u.b, u.n, u.m))
            if u.b > 1:
                for i, xi in enumerate(xo):
                    y[xi:xi + u.n * u.m] = hbuf[i * u.n * u.m:(i + 1) * u.n * u.m]
        lo = 0
        for xo, size in plan.rest:
            y[xo:xo + size] = rest[lo:lo + size]
            lo += size
        if not self.p["warm_start"]:
            del state["q"], state["p"]
        t9 = wtime()
        ph["decompress"] = t9 - t8
        nbytes = 4 * (plan.p_size + plan.q_size + plan.rest_size)
        return Stats(ph["pack"] + ph["p"] + ph["orthogonalize"] + ph["q"],
                     ph["comm_rest"] + ph["comm_p"] + ph["comm_q"], ph["decompress"],
                     nbytes, nbytes, ph)

    def bound(self, comp: Compressor | None, d: int, p: int, inputs: BoundInputs
              ) -> float | None:
        """None: a rank-r approximation's error is the weight of the singular values past r
        of the error-compensated matrices, which no norm of the inputs bounds (and with
        error feedback the sent matrix is not even the current gradient)."""
        return None


register(PowerSGD())
