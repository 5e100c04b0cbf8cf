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

``mode=shard`` (Horovod's hierarchical allreduce, NCCL's 2D rings, ZeRO++'s qgZ) keeps
every rank of a node busy instead of one: a ``Reduce_scatter`` inside the node leaves
local rank j the node's sum of shard j (1/k of the vector, :func:`chunk_bounds`), the
ranks with local rank j on every node (the j-th "peers" communicator) run the outer
scheme on that shard, and an ``Allgatherv`` inside the node puts the shards together.
Each rank encodes and decodes a k-th of what a leader would, the node still sends one
vector's compressed bytes (k streams of a k-th each), and no rank sits idle while
another's codec works.  It needs nodes of one size.  Peer group j compresses with
:func:`shard_seed` (seed, j), so the k shards of a node draw independent random streams
(with one seed for all, every shard's rounding errors would repeat one pattern).

Nodes: ``ranks_per_node=0`` takes the machine's (``Split_type(COMM_TYPE_SHARED)``: under
``hpcq netem --nodes`` and on a cluster, one per host); ``ranks_per_node=k`` treats
consecutive groups of k ranks as nodes (k must divide p, and each group must lie on one
machine).  The node and leader communicators are made once per :class:`Session`
(``session.subcomm``) and freed when it closes; called without a session they are made
and freed on every call (correct, but a ``Split`` is a collective: slow).

Stats: the usual encode / communicate / decode split, and ``intra_s`` (the casts, the
``Reduce`` and the ``Bcast``, waiting included; with ``mode=shard`` the ``Reduce_scatter``
and the ``Allgatherv``) and ``inter_s`` (the outer scheme: on the leaders, 0 elsewhere;
on every rank with ``mode=shard``); ``inter_bytes`` is what the rank hands to the outer
scheme; ``leader`` marks local rank 0, which speaks for its node.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from hpcq.collectives import Stats, chunk_bounds
from hpcq.collectives import allgather as _allgather  # noqa: F401 - the default outer, registered first
from hpcq.collectives.baselines import _output, from16, sum16_op, to16
from hpcq.collectives.scheme import (
    SCHEMES,
    BoundInputs,
    Cost,
    Scheme,
    lg,
    register,
    ring,
    scheme,
)
from hpcq.collectives.session import Session, reused
from hpcq.compressors import Compressor
from hpcq.compressors.base import Param
from hpcq.feedback import ErrorFeedback
from hpcq.workloads.layout import Layout

#: The seed step between the peer groups of ``mode=shard`` (odd; not a multiple of the
#: golden-ratio step that hops and second compressions use, so no stream repeats).
SHARD_SEED_STEP = 0xD1B54A32D192ED03


def shard_seed(seed: int, j: int) -> int:
    """The seed of peer group ``j`` (local rank j on every node): ``seed + j S`` mod 2^64."""
    return (seed + j * SHARD_SEED_STEP) & 0xFFFFFFFFFFFFFFFF


#: How long a non-leader sleeps between polls of the node's broadcast: it waits for the
#: whole inter-node part, and a busy wait (MPI's) would take the cores the leader encodes
#: and decodes on; 0.2 ms is small next to any inter-node exchange worth a two-level scheme.
POLL_S = 0.0002

#: Bytes per coordinate of each inner format.
_WIDTH = {"fp32": 4, "bf16": 2}


def topology(comm: Any, ranks_per_node: int, shard: bool = False) -> tuple[Any, Any]:
    """(node communicator, leaders' communicator or ``MPI.COMM_NULL``) of ``comm`` (collective);
    with ``shard`` the second is this rank's peers' (the ranks of its local rank on every
    node).

    ValueError (on every rank) when ``ranks_per_node`` does not divide the rank count, a
    group of that many consecutive ranks spans two machines, or (``shard``) the nodes differ
    in size.
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
    if shard:
        sizes = sorted(set(comm.allgather(node.Get_size())))
        if len(sizes) > 1:
            node.Free()
            raise ValueError(f"scheme two-level: mode=shard needs nodes of one size; these "
                             f"have {', '.join(map(str, sizes))} ranks (use mode=leader)")
        return node, comm.Split(node.Get_rank(), rank)
    leaders = comm.Split(0 if node.Get_rank() == 0 else MPI.UNDEFINED, rank)
    return node, leaders


class TwoLevel(Scheme):
    """Uncompressed ``Reduce`` to a node leader, a compressed scheme among leaders, ``Bcast``."""

    name = "two-level"
    summary = ("Reduce (fp32/bf16) to the node leader, a compressed scheme among the leaders, "
               "Bcast in the node (mode=shard: Reduce_scatter, every rank's shard among its "
               "peers, Allgatherv)")
    params = (
        Param("outer", str, "allgather", "the compressed scheme among the node leaders (the "
              "name of a registered scheme that takes a compressor)"),
        Param("inner", str, "fp32", "the format of the uncompressed Reduce inside a node",
              choices=("fp32", "bf16")),
        Param("ranks_per_node", int, 0, "0: the machine's nodes (Split_type shared); k: "
              "consecutive groups of k ranks of one machine", minimum=0),
        Param("mode", str, "leader", "leader: Reduce to local rank 0, which alone runs the "
              "outer scheme, then Bcast; shard: Reduce_scatter, every rank runs the outer "
              "scheme on its 1/k shard with its peers on the other nodes, Allgatherv",
              choices=("leader", "shard")),
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
        """(node, leaders or peers, whether to free them after the call)."""
        k, shard = int(self.p["ranks_per_node"]), self.p["mode"] == "shard"
        if session is None:
            node, leaders = topology(comm, k, shard)
            return node, leaders, True
        pair = session.subcomm(f"two-level:{k}:{self.p['mode']}",
                               lambda: _Pair(*topology(comm, k, shard)))
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
            if self.p["mode"] == "shard":
                return self._shard_mean(comm, node, leaders, x, comp, seed=seed, step=step,
                                        session=session, out=out, layout=layout)
            st = Stats()
            t0 = MPI.Wtime()
            leader = st.leader = node.Get_rank() == 0
            mean = _output(d, out, session, f"scheme {self.name}")
            # the leader's input to the outer scheme: its node's share of the mean
            n_leaders = leaders.Get_size() if leader else 0
            factor = np.float32(n_leaders / p)
            if node.Get_size() == 1 and inner == "fp32" and n_leaders == p:
                sums = x if x.dtype == np.float32 and x.flags.c_contiguous else (
                    np.ascontiguousarray(x, dtype=np.float32))
            else:  # (the other ranks' Reduce writes nothing: no buffer for them)
                sums = mean if not leader else reused(session, "two-level.sums", d)
                if node.Get_size() > 1 or inner != "fp32":
                    self._node_sum(node, x, sums, st, session)
                else:
                    sums[...] = x
                if leader and n_leaders != p:  # (node sum) L / p
                    np.multiply(sums, factor, out=sums)
            t1 = MPI.Wtime()
            if leader:
                self._outer_mean(leaders, sums, comp, mean, st, seed=seed, step=step,
                                 session=session, layout=layout)
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
            return mean, st
        finally:
            if free:
                for c in (node, leaders):
                    if c != MPI.COMM_NULL:
                        c.Free()

    def _shard_mean(self, comm: Any, node: Any, peers: Any, x: np.ndarray, comp: Compressor,
                    *, seed: int, step: int, session: Session | None, out: np.ndarray | None,
                    layout: Layout | None) -> tuple[np.ndarray, Stats]:
        """``mode=shard``: Reduce_scatter in the node, the outer scheme on this rank's shard
        among its peers, Allgatherv in the node."""
        from mpi4py import MPI

        p, d = comm.Get_size(), int(x.shape[0])
        k, j, n = node.Get_size(), node.Get_rank(), peers.Get_size()
        bounds = chunk_bounds(d, k)
        counts = np.diff(bounds)
        lo, hi = int(bounds[j]), int(bounds[j + 1])
        st = Stats(leader=j == 0)
        mean = _output(d, out, session, f"scheme {self.name}")
        shard = reused(session, "two-level.shard", hi - lo)
        t0 = MPI.Wtime()
        if k > 1 or self.p["inner"] != "fp32":
            self._node_sum(node, x, shard, st, session, counts)
        else:
            shard[...] = x
        if n != p:  # this node's share of the mean: (node sum) n / p
            np.multiply(shard, np.float32(n / p), out=shard)
        t1 = MPI.Wtime()
        # (the peers' shard is a slice of the vector: a layout of whole tensors does not apply)
        del layout
        self._outer_mean(peers, shard, comp, mean[lo:hi], st, seed=shard_seed(seed, j),
                         step=step, session=session, layout=None)
        t2 = MPI.Wtime()
        if k > 1:
            displs = bounds[:-1]
            node.Allgatherv(MPI.IN_PLACE, [mean, (counts, displs), MPI.FLOAT])
            st.bytes_sent += 4 * (hi - lo)
            st.bytes_recv += 4 * (d - (hi - lo))
        t3 = MPI.Wtime()
        st.comm_s += t3 - t2
        st.intra_s = (t1 - t0) + (t3 - t2)
        st.inter_s = t2 - t1
        return mean, st

    def _outer_mean(self, comm: Any, y: np.ndarray, comp: Compressor, out: np.ndarray,
                    st: Stats, *, seed: int, step: int, session: Session | None,
                    layout: Layout | None) -> None:
        """The outer scheme's mean of every ``comm`` rank's ``y`` into ``out``; its times and
        bytes added to ``st``, its bytes sent as ``st.inter_bytes``."""
        got, ost = self.outer.mean(comm, y, comp, seed=seed, step=step, session=session,
                                   layout=layout, out=out)
        if not np.shares_memory(got, out):  # pragma: no cover - every scheme honours out=
            out[...] = got
        st.encode_s += ost.encode_s
        st.comm_s += ost.comm_s
        st.decode_s += ost.decode_s
        st.bytes_sent += ost.bytes_sent
        st.bytes_recv += ost.bytes_recv
        st.inter_bytes = ost.bytes_sent

    def _node_sum(self, node: Any, x: np.ndarray, dst: np.ndarray, st: Stats,
                  session: Session | None, counts: np.ndarray | None = None) -> None:
        """The node's sum of ``x`` in the inner format: into ``dst`` at the leader by a
        ``Reduce`` (its contents elsewhere: any), or, given ``counts`` (every rank's shard
        length, in local-rank order), this rank's shard of it by a ``Reduce_scatter``."""
        from mpi4py import MPI

        d, k, j = int(x.shape[0]), node.Get_size(), node.Get_rank()
        leader = j == 0
        n = d if counts is None else int(counts[j])
        mine = counts is not None or leader  # this rank receives a sum

        def add_up(send: np.ndarray, recv: np.ndarray, word: Any, op: Any) -> None:
            if counts is None:
                node.Reduce([send, word], [recv, word] if leader else None, op=op, root=0)
            else:
                node.Reduce_scatter([send, word], [recv, word], recvcounts=counts, op=op)

        t0 = MPI.Wtime()
        if self.p["inner"] == "fp32":
            x32 = x if x.dtype == np.float32 and x.flags.c_contiguous else np.ascontiguousarray(
                x, dtype=np.float32)
            add_up(x32, dst, MPI.FLOAT, MPI.SUM)
            st.comm_s += MPI.Wtime() - t0
            width = 4
        else:
            owner = "two-level.bf16"
            words = to16("bf16", x, owner, out=reused(session, owner + ".send", d, np.uint16))
            t1 = MPI.Wtime()
            st.encode_s += t1 - t0
            total = reused(session, owner + ".recv", n, np.uint16)
            add_up(words, total, MPI.UINT16_T, sum16_op("bf16"))
            t2 = MPI.Wtime()
            st.comm_s += t2 - t1
            if mine:
                from16("bf16", total, owner, out=dst)
                st.decode_s += MPI.Wtime() - t2
            width = 2
        if counts is not None:  # the others' shards of this vector out, k - 1 of its own in
            st.bytes_sent += width * (d - n)
            st.bytes_recv += width * n * (k - 1)
        elif leader:
            st.bytes_recv += (k - 1) * width * d
        else:
            st.bytes_sent += width * d

    # ------------------------------------------------------------------ facts for the others
    @property
    def cost(self) -> Cost:  # type: ignore[override]
        """The outer scheme's terms among the leaders (functions of the node count) and the
        intra-node ``Reduce`` and ``Bcast`` (large-message algorithms: reduce-scatter +
        gather, scatter + ring allgather) as functions of the ranks per node k.

        ``mode=shard``: the node's k streams of a k-th of the vector each carry, together,
        what one leader would (m is a node's bytes); inside the node a ``Reduce_scatter``
        (recursive halving) and a ring ``Allgatherv``, each moving (k-1)/k of a vector."""
        o, w = self.outer.cost, _WIDTH[self.p["inner"]]
        if self.p["mode"] == "shard":
            return Cost(
                f"{self.p['inner']} Reduce_scatter in the node; among the k peer groups (one "
                f"per local rank, a k-th of the vector each): {o.mpi}; fp32 Allgatherv in "
                f"the node",
                o.steps, o.volume, o.encodes, o.decodes,
                (f"{o.text[0]} [nodes]", f"{o.text[1]} [nodes, m of a node]",
                 f"{o.text[2]} / k", f"{o.text[3]} / k"),
                o.message, o.chunk_headers,
                intra_steps=lambda k: lg(k) + (k - 1),
                intra_volume=lambda k, n, d: ring(k) / 2 * (w / 4 * n + 4 * d) if k > 1
                else 0.0,
                intra_text=("lg k + (k-1)", f"(k-1)/k ({w}d + 4d)"),
            )
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
        divisor of p when nodes are detected), on the whole vector or (``mode=shard``) on
        each shard."""
        return sorted({n for nodes in self._node_counts(p) for m in self._outer_lengths(d, p,
                                                                                        nodes)
                       for n in self.outer.codec_lengths(m, nodes)})

    def _outer_lengths(self, d: int, p: int, nodes: int) -> list[int]:
        """The lengths the outer scheme is called on: d, or each shard's."""
        if self.p["mode"] != "shard":
            return [d]
        return sorted({int(m) for m in np.diff(chunk_bounds(d, max(1, p // nodes)))})

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

        ``mode=shard``: the outer scheme runs once per shard, and b is the largest of its
        bounds at the shards' lengths on the same (whole-vector) norms.  The outer bounds are
        sums of terms linear in the squared norms, or squares of sums of their square roots
        (re-compression); both add up over a partition of the coordinates (Minkowski), so
        the shards' errors together stay within b times the whole mean's squared norm.
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
            leaders = BoundInputs(tuple(float(g) ** 2 for g in groups),
                                  inputs.mean_sq * (1 + eps) ** 2)
            for m in self._outer_lengths(d, p, nodes):
                b = self.outer.bound(comp, m, nodes, leaders)
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
