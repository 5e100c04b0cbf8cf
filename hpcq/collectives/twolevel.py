"""Node-aware two-level means: uncompressed inside a node, compressed among the node leaders.

Inside a node bytes are nearly free (shared memory); between nodes they are not.
``two-level:outer=allgather`` therefore

1. ``Reduce``\\ s every rank's vector to its node's leader (local rank 0), uncompressed:
   in fp32 (``inner=fp32``, ``MPI.SUM``) or in bf16 words with the 16-bit sum of
   :func:`~hpcq.collectives.baselines.sum16_op` (``inner=bf16``: half the bytes);
2. runs the ``outer`` compressed scheme (any registered scheme that takes a
   compressor: allgather, two-phase, ps, ...) among the leaders only, on the leader's
   share of the mean ``y = (node sum) * L / p`` (L leaders), so that the leaders'
   mean of ``y`` is the mean over all p ranks even when nodes differ in size;
3. ``Bcast``\\ s that fp32 mean from the leader to its node (the other ranks first wait in an
   ``Ibarrier`` polled with short sleeps, so they leave the cores to the leader's codec).

Nodes: ``ranks_per_node=0`` takes the machine's (``Split_type(COMM_TYPE_SHARED)``: under
``hpcq netem --nodes`` and on a cluster, one per host); ``ranks_per_node=k`` treats
consecutive groups of k ranks as nodes (k must divide p, and each group must lie on one
machine).  The node and leader communicators are made once per :class:`Session`
(``session.subcomm``) and freed when it closes; called without a session they are made
and freed on every call (correct, but a ``Split`` is a collective: slow).

Stats: the usual encode / communicate / decode split, and ``intra_s`` (the casts, the
``Reduce`` and the ``Bcast``, waiting included) and ``inter_s`` (the outer scheme, on the
leaders; 0 elsewhere); ``inter_bytes`` is what a leader hands to the outer scheme.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from hpcq.collectives import Stats
from hpcq.collectives.allgather import _into
from hpcq.collectives.baselines import from16, sum16_op, to16
from hpcq.collectives.scheme import SCHEMES, BoundInputs, Cost, Scheme, lg, register, ring, scheme
from hpcq.collectives.session import Session
from hpcq.compressors import Compressor
from hpcq.compressors.base import Param
from hpcq.feedback import ErrorFeedback
from hpcq.workloads.layout import Layout

#: How long a non-leader sleeps between polls of the node's broadcast: it waits for the
#: whole inter-node part, and a busy wait (MPI's) would take the cores the leader encodes
#: and decodes on; 0.2 ms is small next to any inter-node exchange worth a two-level scheme.
POLL_S = 0.0002

#: Bytes per coordinate of each inner format.
_WIDTH = {"fp32": 4, "bf16": 2}


def topology(comm: Any, ranks_per_node: int) -> tuple[Any, Any]:
    """(node communicator, leaders' communicator or ``MPI.COMM_NULL``) of ``comm`` (collective).

    ValueError (on every rank) when ``ranks_per_node`` does not divide the rank count or a
    group of that many consecutive ranks spans two machines.
    """
    from mpi4py import MPI

    p, rank = comm.Get_size(), comm.Get_rank()
    if ranks_per_node == 0:
        node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
    else:
        if p % ranks_per_node:
            raise ValueError(f"scheme two-level: ranks_per_node={ranks_per_node} does not "
                             f"divide the {p} ranks")
        node = comm.Split(rank // ranks_per_node, rank)
        shared = node.Split_type(MPI.COMM_TYPE_SHARED, key=rank)
        whole = comm.allreduce(shared.Get_size() == node.Get_size(), op=MPI.LAND)
        shared.Free()
        if not whole:
            node.Free()
            raise ValueError(f"scheme two-level: ranks_per_node={ranks_per_node}: a group of "
                             f"{ranks_per_node} consecutive ranks spans more than one machine")
    leaders = comm.Split(0 if node.Get_rank() == 0 else MPI.UNDEFINED, rank)
    return node, leaders


class TwoLevel(Scheme):
    """Uncompressed ``Reduce`` to a node leader, a compressed scheme among leaders, ``Bcast``."""

    name = "two-level"
    summary = ("Reduce (fp32/bf16) to the node leader, a compressed scheme among the leaders, "
               "Bcast in the node")
    params = (
        Param("outer", str, "allgather", "the compressed scheme among the node leaders (the "
              "name of a registered scheme that takes a compressor)"),
        Param("inner", str, "fp32", "the format of the uncompressed Reduce inside a node",
              choices=("fp32", "bf16")),
        Param("ranks_per_node", int, 0, "0: the machine's nodes (Split_type shared); k: "
              "consecutive groups of k ranks of one machine", minimum=0),
    )
    style = ("#882255", "h", "-")

    def check_ranks(self, p: int) -> None:
        k = int(self.p["ranks_per_node"])
        if k and p % k:
            raise ValueError(f"scheme {self.name}: ranks_per_node={k} does not divide the {p} "
                             f"ranks")

    def _validate(self) -> None:
        name = self.p["outer"]
        if name not in SCHEMES or name == self.name:
            valid = [n for n, s in SCHEMES.items() if s.cast is None and n != self.name]
            raise ValueError(f"scheme two-level: outer={name!r} is not a compressed scheme; "
                             f"valid: {', '.join(valid)}")
        if SCHEMES.get(name).cast is not None:
            raise ValueError(f"scheme two-level: outer={name} is an uncompressed baseline; "
                             f"the outer scheme must take a compressor")

    @property
    def outer(self) -> Scheme:
        """The scheme among the leaders."""
        return scheme(self.p["outer"])

    def check(self, comp: Compressor | None) -> None:
        self.outer.check(comp)

    # ------------------------------------------------------------------ the collective
    def _comms(self, comm: Any, session: Session | None) -> tuple[Any, Any, bool]:
        """(node, leaders, whether to free them after the call)."""
        k = int(self.p["ranks_per_node"])
        if session is None:
            node, leaders = topology(comm, k)
            return node, leaders, True
        pair = session.subcomm(f"two-level:{k}:pair", lambda: _Pair(*topology(comm, k)))
        return pair.node, pair.leaders, False

    def mean(self, comm: Any, x: np.ndarray, comp: Compressor | None = None, *, seed: int = 0,
             step: int = 0, feedback: ErrorFeedback | None = None,
             session: Session | None = None, out: np.ndarray | None = None,
             layout: Layout | None = None) -> tuple[np.ndarray, Stats]:
        from mpi4py import MPI

        comp = self._need(comp)
        if feedback is not None:
            raise ValueError("scheme two-level takes no error feedback (a leader encodes its "
                             "node's sum, not its own vector)")
        inner, p, d = self.p["inner"], comm.Get_size(), int(x.shape[0])
        node, leaders, free = self._comms(comm, session)
        try:
            st = Stats()
            t0 = MPI.Wtime()
            leader = node.Get_rank() == 0
            mean = (out if out is not None and out.dtype == np.float32 and out.shape == (d,)
                    and out.flags.c_contiguous else
                    session.buffer("two-level.mean", d) if session is not None
                    else np.empty(d, dtype=np.float32))
            if node.Get_size() > 1 or inner != "fp32":
                self._reduce(node, x, mean, st, session)
            else:
                mean[...] = x
            t1 = MPI.Wtime()
            if leader:
                n_leaders = leaders.Get_size()
                if n_leaders != p:  # the leader's share: (node sum) L / p
                    np.multiply(mean, np.float32(n_leaders / p), out=mean)
                got, ost = self.outer.mean(leaders, mean, comp, seed=seed, step=step,
                                           session=session, layout=layout)
                mean[...] = got
                st.encode_s += ost.encode_s
                st.comm_s += ost.comm_s
                st.decode_s += ost.decode_s
                st.bytes_sent += ost.bytes_sent
                st.bytes_recv += ost.bytes_recv
                st.inter_bytes = ost.bytes_sent
            t2 = MPI.Wtime()
            if node.Get_size() > 1:
                # the others sleep until the leader is done (an Ibarrier on every rank:
                # nonblocking and blocking collectives never match); a spinning wait would
                # take the cores the leader encodes on, and polling the broadcast itself
                # with sleeps would stall its pipelined copy
                ready = node.Ibarrier()
                if leader:
                    ready.Wait()
                else:
                    while not ready.Test():
                        time.sleep(POLL_S)
                node.Bcast([mean, MPI.FLOAT], root=0)
                if leader:
                    st.bytes_sent += mean.nbytes
                else:
                    st.bytes_recv += mean.nbytes
            t3 = MPI.Wtime()
            st.comm_s += t3 - t2
            st.intra_s = (t1 - t0) + (t3 - t2)
            st.inter_s = t2 - t1 if leader else 0.0
            return _into(mean, out) if out is not None and mean is not out else mean, st
        finally:
            if free:
                for c in (node, leaders):
                    if c != MPI.COMM_NULL:
                        c.Free()

    def _reduce(self, node: Any, x: np.ndarray, sums: np.ndarray, st: Stats,
                session: Session | None) -> None:
        """The node's sum of ``x`` into ``sums`` at the leader (its contents elsewhere: any)."""
        from mpi4py import MPI

        inner, d = self.p["inner"], int(x.shape[0])
        leader = node.Get_rank() == 0
        t0 = MPI.Wtime()
        if inner == "fp32":
            x32 = x if x.dtype == np.float32 and x.flags.c_contiguous else np.ascontiguousarray(
                x, dtype=np.float32)
            node.Reduce([x32, MPI.FLOAT], [sums, MPI.FLOAT] if leader else None, op=MPI.SUM,
                        root=0)
            st.comm_s += MPI.Wtime() - t0
            nbytes = x32.nbytes
        else:
            owner = "two-level.bf16"
            words = to16("bf16", x, owner, out=None if session is None else session.buffer(
                owner + ".send", d, np.uint16))
            t1 = MPI.Wtime()
            st.encode_s += t1 - t0
            total = (np.empty_like(words) if session is None
                     else session.buffer(owner + ".recv", d, np.uint16))
            node.Reduce([words, MPI.UINT16_T], [total, MPI.UINT16_T] if leader else None,
                        op=sum16_op("bf16"), root=0)
            t2 = MPI.Wtime()
            st.comm_s += t2 - t1
            if leader:
                from16("bf16", total, owner, out=sums)
                st.decode_s += MPI.Wtime() - t2
            nbytes = words.nbytes
        if leader:
            st.bytes_recv += (node.Get_size() - 1) * nbytes
        else:
            st.bytes_sent += nbytes

    # ------------------------------------------------------------------ facts for the others
    @property
    def cost(self) -> Cost:  # type: ignore[override]
        """The outer scheme's terms among the leaders (functions of the node count) and the
        intra-node ``Reduce`` and ``Bcast`` (large-message algorithms: reduce-scatter +
        gather, scatter + ring allgather) as functions of the ranks per node k."""
        o, w = self.outer.cost, _WIDTH[self.p["inner"]]
        return Cost(
            f"{self.p['inner']} Reduce (reduce-scatter + gather) to the node leader; among the "
            f"leaders: {o.mpi}; fp32 Bcast (scatter + allgather) in the node",
            o.steps, o.volume, o.encodes, o.decodes,
            (f"{o.text[0]} [nodes]", f"{o.text[1]} [nodes]", o.text[2], o.text[3]),
            o.message, o.chunk_headers,
            intra_steps=lambda k: 3 * lg(k) + (k - 1),
            intra_volume=lambda k, n, d: ring(k) * (w / 4 * n + 4 * d) if k > 1 else 0.0,
            intra_text=("3 lg k + (k-1)", f"2 (k-1)/k ({w}d + 4d)"),
        )

    def codec_lengths(self, d: int, p: int) -> list[int]:
        """The outer scheme's lengths at every node count the ranks allow (p / k, or any
        divisor of p when nodes are detected)."""
        return sorted({n for nodes in self._node_counts(p)
                       for n in self.outer.codec_lengths(d, nodes)})

    def _node_counts(self, p: int) -> list[int]:
        k = int(self.p["ranks_per_node"])
        if k:
            return [max(1, p // k)]
        return [n for n in range(1, p + 1) if p % n == 0]

    def bound(self, comp: Compressor | None, d: int, p: int, inputs: BoundInputs
              ) -> float | None:
        """The outer scheme's bound on the leaders' inputs, composed with the inner sum's
        rounding.

        Leader l's input is ``y_l = s_l L / p`` with ``s_l`` its node's sum, so
        ``||y_l|| <= (L / p) sum_{i in l} ||x_i||`` (the outer bounds grow with the input
        norms, so these stand in for them).  The nodes: consecutive groups of k
        (``ranks_per_node=k``); detected nodes are assumed of equal size, every divisor of p
        is tried and, for each, the grouping of the largest norms together (the largest
        ``sum_l (sum_{i in l} ||x_i||)^2``): the maximum is returned.  The inner ``Reduce``
        and the scaling add at most the cast bound ``eps^2`` of an ``allreduce`` in the
        inner format (its ``gamma_{p-1}`` covers the ``gamma_{k-1}`` of one node), so the
        leaders' exact mean is ``m + e`` with ``||e|| <= eps ||m||``; with ``b`` the outer
        bound for a mean of norm up to ``(1 + eps) ||m||``,
        ``NMSE <= (sqrt(b) (1 + eps) + eps)^2``.
        """
        from hpcq.bench.guarantees import cast_bound

        comp = self._need(comp)
        if inputs.mean_sq <= 0:
            return None
        inner = self.p["inner"]
        eps2 = cast_bound(f"allreduce-{inner}", inner, p, d, inputs.abs_sum, inputs.abs_sq,
                          inputs.mean_sq)
        if eps2 is None:
            return None
        eps = math.sqrt(eps2)
        norms = np.sqrt(np.asarray(inputs.sq_norms, dtype=np.float64))
        k = int(self.p["ranks_per_node"])
        order = norms if k else np.sort(norms)[::-1]
        worst = None
        for nodes in self._node_counts(p):
            groups = order.reshape(nodes, -1).sum(axis=1) * (nodes / p)
            b = self.outer.bound(comp, d, nodes, BoundInputs(
                tuple(float(g) ** 2 for g in groups), inputs.mean_sq * (1 + eps) ** 2))
            if b is None:
                return None
            total = (math.sqrt(b) * (1 + eps) + eps) ** 2
            worst = total if worst is None else max(worst, total)
        return worst


class _Pair:
    """The node and leaders' communicators, freed together by :meth:`Session.close`."""

    def __init__(self, node: Any, leaders: Any) -> None:
        self.node, self.leaders = node, leaders

    def Free(self) -> None:  # noqa: N802 - the name Session.close calls
        from mpi4py import MPI

        for c in (self.node, self.leaders):
            if c != MPI.COMM_NULL:
                c.Free()


register(TwoLevel())
