"""Compressed collectives over byte buffers, and the fp32 Allreduce baseline.

Every function takes the communicator as a parameter (never ``COMM_WORLD``
itself), is called by every rank of it, and gives at size 1 what the serial
codec gives.  Each returns ``(mean, stats)`` where ``stats`` holds, for the
calling rank, the seconds spent encoding, communicating (waiting included) and
decoding (``MPI.Wtime``), and the payload bytes this rank contributed
(``bytes_sent``) and got from the other ranks (``bytes_recv``): the data the
collective must move, not what the MPI library's algorithm puts on the wire.

Schemes
-------
* :func:`allgather_mean`: every rank encodes, all messages are allgathered,
  every rank decodes all ``p`` of them and averages.
* :func:`allreduce_mean`: fp32 ``Allreduce`` (sum), then scale by ``1/p``.
* :func:`idle_barrier`: a barrier for ranks that wait on untimed work.

Planned next to these (same signature): a two-phase compressed allreduce
(Alltoall(v) of chunks, then Allgather), parameter-server style (Gather /
Bcast), and nonblocking variants returning a request.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hpcq.compressors import Compressor


def _stats(encode: float, comm: float, decode: float, sent: int, recv: int) -> dict[str, Any]:
    return {"encode_s": encode, "comm_s": comm, "decode_s": decode,
            "total_s": encode + comm + decode, "bytes_sent": int(sent), "bytes_recv": int(recv)}


def average_messages(comp: Compressor, messages: list[np.ndarray], d: int) -> np.ndarray:
    """The float32 mean of ``comp.decode(m)`` over ``messages``, summed in list order.

    Accumulates in float32 (the result is rounded like any fp32 gradient
    average; the rounding error, about p * 2^-24 relative, is far below any
    codec's own error) and divides by ``len(messages)`` at the end.
    """
    acc = np.zeros(d, dtype=np.float32)
    for m in messages:
        y = comp.decode(m)
        if y.shape != (d,):
            raise ValueError(f"a message decodes to {y.shape[0]} entries, expected d={d}")
        acc += y
    acc /= len(messages)
    return acc


def allgather_mean(comm: Any, x: np.ndarray, comp: Compressor, *, seed: int = 0,
                   step: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """The mean of every rank's ``x`` through compressor ``comp``, by allgather.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        Every rank calls with the same ``comp``, ``seed``, ``step`` and length of ``x``.
    x : numpy.ndarray
        This rank's 1-D float vector.
    comp : Compressor
        The codec; ranks encode with ``rank=comm.Get_rank()`` so their private
        randomness differs while shared randomness (rotation signs) agrees.
    seed, step : int
        The encode randomness (see :meth:`Compressor.encode`).

    Returns
    -------
    mean : numpy.ndarray
        float32 of length d, identical on every rank: the average of all decoded messages.
    stats : dict
        ``encode_s``, ``comm_s``, ``decode_s``, ``total_s``, ``bytes_sent``, ``bytes_recv``.

    Notes
    -----
    Fixed-size codecs (``comp.wire_bytes(d)`` not None) exchange with one
    ``Allgather`` on uint8; data-dependent ones first allgather the sizes, then
    ``Allgatherv``.  Both time as communication.
    """
    from mpi4py import MPI

    p, rank, d = comm.Get_size(), comm.Get_rank(), int(x.shape[0])
    t0 = MPI.Wtime()
    msg = comp.encode(x, seed=seed, step=step, rank=rank)
    t1 = MPI.Wtime()
    fixed = comp.wire_bytes(d)
    if fixed is not None:
        if msg.shape[0] != fixed:  # pragma: no cover - a codec bug, never silent
            raise RuntimeError(f"{comp.spec} wrote {msg.shape[0]} bytes, wire_bytes says {fixed}")
        recv = np.empty(p * fixed, dtype=np.uint8)
        comm.Allgather([msg, MPI.BYTE], [recv, MPI.BYTE])
        counts = np.full(p, fixed, dtype=np.int64)
    else:
        counts = np.empty(p, dtype=np.int64)
        comm.Allgather([np.array([msg.shape[0]], dtype=np.int64), MPI.INT64_T],
                       [counts, MPI.INT64_T])
        recv = np.empty(int(counts.sum()), dtype=np.uint8)
        displs = np.concatenate(([0], np.cumsum(counts)[:-1]))
        comm.Allgatherv([msg, MPI.BYTE], [recv, (counts, displs), MPI.BYTE])
    t2 = MPI.Wtime()
    starts = np.concatenate(([0], np.cumsum(counts)))
    messages = [recv[int(starts[r]):int(starts[r + 1])] for r in range(p)]
    mean = average_messages(comp, messages, d)
    t3 = MPI.Wtime()
    sent = int(msg.shape[0])
    return mean, _stats(t1 - t0, t2 - t1, t3 - t2, sent, int(counts.sum()) - sent)


def allreduce_mean(comm: Any, x: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """The fp32 baseline: ``Allreduce`` (sum) of every rank's ``x``, then scale by ``1/p``.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        Every rank calls with a vector of the same length.
    x : numpy.ndarray
        This rank's 1-D float vector (converted to float32).

    Returns
    -------
    mean : numpy.ndarray
        float32 of length d.
    stats : dict
        As for :func:`allgather_mean`; ``encode_s`` is 0, ``decode_s`` the
        scaling, and both byte counts are ``4 * d`` (each rank's contribution and its result).
    """
    from mpi4py import MPI

    p = comm.Get_size()
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x32)
    t0 = MPI.Wtime()
    comm.Allreduce([x32, MPI.FLOAT], [out, MPI.FLOAT], op=MPI.SUM)
    t1 = MPI.Wtime()
    out /= p
    t2 = MPI.Wtime()
    return out, _stats(0.0, t1 - t0, t2 - t1, x32.nbytes, x32.nbytes)


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
