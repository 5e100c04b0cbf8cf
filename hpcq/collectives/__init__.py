"""Collectives that compute the mean of one float vector per rank, compressed or not.

Every function takes the communicator as a parameter (never ``COMM_WORLD``
itself), is called by every rank of it with the same arguments (apart from
the rank's own vector), gives every rank the same float32 mean, and gives at
size 1 exactly what the serial codec gives.  Each returns ``(mean, stats)``;
:class:`Stats` holds, for the calling rank, the seconds spent encoding,
communicating (waiting included) and decoding (``MPI.Wtime``), and the payload
bytes this rank hands to the collective for other ranks (``bytes_sent``: a
message meant for all ranks counts once, at any size, however many receive it)
and that it gets from other ranks (``bytes_recv``): the data the collective must
move, not what the MPI library's algorithm puts on the wire.

Schemes (objects of :mod:`hpcq.collectives.scheme`, registered in :data:`SCHEMES` under the
names job files use; each carries its facts: forms, feedback, guarantee, cost terms)
---------------------------------------------------------------------------------------
================  ============================================================
allgather         every rank encodes, ``Allgather`` (fixed size) or sizes then
                  ``Allgatherv``; every rank decodes all p messages and averages
two-phase         p chunks; chunk j compressed for rank j, ``Alltoall(v)``; rank j
                  averages chunk j, re-compresses it, ``Allgather(v)``; about
                  2 d bits sent per rank instead of p d bits (DeepSpeed's 1-bit
                  allreduce works this way); optional error feedback on both phases
ps                parameter server: ``Gather(v)`` of the messages to rank 0,
                  which decodes and averages, then ``Bcast`` of the fp32 mean
ps-compressed     the same, with the mean re-compressed for the ``Bcast``
two-level         Reduce (fp32/bf16) to each node's leader, a compressed scheme
                  (``outer``) among the leaders, Bcast inside the node
ps-reduce         casts only (fp32/fp16/bf16): ``Reduce`` in that format to rank 0,
                  which scales, then ``Bcast`` in the same format
allreduce-fp32    the baseline: fp32 ``Allreduce`` (sum), then scale by 1/p
allreduce-fp16    cast to fp16, ``Allreduce`` with a 16-bit sum, scale
allreduce-bf16    the same in bf16
allreduce-fp8     one shared scale (Allreduce MAX), FP8 codes, Allreduce with an
                  FP8 sum (decode, add in fp32, round back), scale: 1 byte per value
powersgd          PowerSGD as PyTorch's hook: rank-r factors P = MQ, Q = M^T P of
                  each matrix of the layout, two allreduces, error feedback, warm
                  start; 1-D tensors and small matrices in one fp32 allreduce
================  ============================================================

Nonblocking variants return a :class:`Pending` whose ``wait()`` gives
``(mean, stats)``: :func:`iallgather_mean` (``Iallgather``/``Iallgatherv``) and
:func:`itwo_phase_mean` (``Ialltoall``/``Ialltoallv``), so an algorithm can
compute its next gradient while the messages travel.

Randomness: rank r encodes its own vector with ``rank=r``.  A second
compression (the two-phase chunk, a server's mean) uses the rank word
``p*p + r`` and the seed :func:`second_seed` (``seed`` + the 64-bit golden
ratio), so neither its private nor its shared streams (rotation signs,
random-k indices) repeat those of the first: with the same shared indices,
random-k would keep the same coordinates twice and scale them by (d/k)^2.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from hpcq.collectives.scheme import SCHEMES, BoundInputs, Cost, Scheme, register, scheme
from hpcq.collectives.session import Session
from hpcq.compressors import Compressor


@dataclass
class Stats:
    """What one rank spent and moved in one collective call."""

    encode_s: float = 0.0
    comm_s: float = 0.0
    decode_s: float = 0.0
    bytes_sent: int = 0
    bytes_recv: int = 0
    #: Node-aware schemes: seconds inside the node (casts, Reduce, Bcast) and in the scheme
    #: among the node leaders (0 on other ranks), and the bytes handed to the latter.
    intra_s: float = 0.0
    inter_s: float = 0.0
    inter_bytes: int = 0
    #: Finer seconds of a scheme with named phases (PowerSGD: ``p``, ``orthogonalize``, ...),
    #: each inside one of the three totals above; empty for most schemes.
    phases: dict[str, float] = field(default_factory=dict)
    #: Seconds spent waiting on communication that no encode or decode overlapped
    #: (pipelined schemes; 0 for the others).
    exposed_comm_s: float = 0.0
    #: Node-aware schemes: whether this rank speaks for its node in the intra/inter split
    #: (the leader; local rank 0 when every rank of a node carries a shard).
    leader: bool = field(default=False, compare=False)
    #: Relative squared error each compression of this rank added, in the order sent
    #: (multi-hop schemes with ``hop_error=true``; None otherwise).
    hop_nmse: list[float] | None = field(default=None, compare=False)
    #: What the consumer multiplies the returned array by to get the mean: 1.0 (it is the
    #: mean) except for an uncompressed baseline asked to defer its 1/p scaling
    #: (``Session.defer_scale``), which returns the sum and 1/p here.
    scale: float = 1.0

    @property
    def total_s(self) -> float:
        """Encode + communicate + decode."""
        return self.encode_s + self.comm_s + self.decode_s

    def as_dict(self) -> dict[str, float | int]:
        """The scalar fields, ``total_s`` and each phase as ``phase_<name>_s``, for tables and
        files (not ``hop_nmse``; the node-aware fields only where a node-aware scheme set them)."""
        node = ("intra_s", "inter_s", "inter_bytes")  # only node-aware schemes fill them
        keep_node = any(getattr(self, k) for k in node)
        out: dict[str, float | int] = {f.name: getattr(self, f.name) for f in fields(self)
                                       if f.name not in ("phases", "hop_nmse", "scale",
                                                         "leader")
                                       and (keep_node or f.name not in node)}
        out["total_s"] = self.total_s
        out.update({f"phase_{k}_s": v for k, v in self.phases.items()})
        return out


def second_seed(seed: int) -> int:
    """The seed of a second compression of the same step: ``seed + 0x9E3779B97F4A7C15`` mod 2^64."""
    return (seed + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF


def chunk_bounds(d: int, p: int) -> np.ndarray:
    """Offsets of ``p`` contiguous chunks of ``d`` entries, the first ``d % p`` one longer."""
    sizes = np.full(p, d // p, dtype=np.int64)
    sizes[: d % p] += 1
    return np.concatenate(([0], np.cumsum(sizes)))


def average_messages(comp: Compressor, messages: Sequence[np.ndarray], d: int,
                     out: np.ndarray | None = None) -> np.ndarray:
    """The float32 mean of ``comp.decode(m)`` over ``messages``: :meth:`Compressor.mean_of`
    (rotated messages of one step are added in the rotated domain and rotated back once),
    into ``out`` when given."""
    mean_of = getattr(comp, "mean_of", None)
    if mean_of is not None:
        return mean_of(messages, d, out=out)  # type: ignore[no-any-return]
    # a codec outside the Compressor hierarchy (tests' stand-ins): decode and add, in order
    acc = np.zeros(d, dtype=np.float32) if out is None else out
    for i, m in enumerate(messages):
        comp.decode(m, out=acc, add=i > 0)
    if messages:
        acc /= len(messages)
    return acc


def idle_barrier(comm: Any, poll_s: float = 0.005) -> None:
    """A barrier that sleeps while it waits, instead of spinning a core.

    MPICH and Open MPI busy-poll inside ``Barrier``; ranks waiting while rank 0
    runs a single-process benchmark would steal the cores it is measuring.
    Costs up to ``poll_s`` of extra latency, so never use it inside timed code.
    """
    import time

    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(poll_s)


# Importing the scheme modules registers them.
from hpcq.collectives import fp8 as _fp8  # noqa: E402, F401
from hpcq.collectives import powersgd as _powersgd  # noqa: E402, F401
from hpcq.collectives import twolevel  # noqa: E402,F401
from hpcq.collectives.allgather import Pending, allgather_mean, iallgather_mean  # noqa: E402
from hpcq.collectives.baselines import (  # noqa: E402
    allreduce_cast_mean,
    allreduce_mean,
    iallreduce_mean,
)
from hpcq.collectives.intsum import int_mean  # noqa: E402
from hpcq.collectives.pipelined import pipelined_mean  # noqa: E402
from hpcq.collectives.ps import ps_mean, ps_reduce_mean  # noqa: E402
from hpcq.collectives.rhd import rhd_mean  # noqa: E402
from hpcq.collectives.ring import allgather_chunks, reduce_scatter_mean, ring_mean  # noqa: E402
from hpcq.collectives.twophase import itwo_phase_mean, two_phase_mean  # noqa: E402

__all__ = [
    "SCHEMES", "BoundInputs", "Cost", "Pending", "Scheme", "Session", "Stats", "scheme",
    "allgather_mean", "allreduce_cast_mean",
    "allreduce_mean", "average_messages", "chunk_bounds", "iallgather_mean", "iallreduce_mean",
    "idle_barrier",
    "allgather_chunks", "int_mean", "itwo_phase_mean", "pipelined_mean", "ps_mean",
    "ps_reduce_mean", "reduce_scatter_mean", "register", "rhd_mean", "ring_mean", "second_seed",
    "two_phase_mean",
]
