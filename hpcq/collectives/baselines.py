"""The uncompressed baselines: fp32 ``Allreduce``, and fp16/bf16 ``Allreduce`` with a 16-bit sum.

The 16-bit sums run in a user-defined MPI operation (:func:`sum16_op`) over
raw uint16 words: each pairwise addition is done in float32 and rounded once
to the 16-bit format, as a 16-bit reduction on the wire does.  The sum is
scaled by 1/p afterwards (as for fp32), so a sum past the largest fp16
(65504) overflows: that is reported as an error, never returned as Inf.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from hpcq.collectives import Scheme, Stats, register
from hpcq.compressors import Compressor
from hpcq.kernels import cast

#: Largest finite value of each 16-bit format (for the overflow message).
LARGEST = {"fp16": 65504.0, "bf16": 3.3895313892515355e38}


def allreduce_mean(comm: Any, x: np.ndarray) -> tuple[np.ndarray, Stats]:
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
    stats : Stats
        ``encode_s`` is 0, ``decode_s`` the scaling; both byte counts are ``4 d``.
    """
    from mpi4py import MPI

    t0 = MPI.Wtime()  # the output's allocation is part of the collective's cost
    p = comm.Get_size()
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x32)
    comm.Allreduce([x32, MPI.FLOAT], [out, MPI.FLOAT], op=MPI.SUM)
    t1 = MPI.Wtime()
    out /= p
    t2 = MPI.Wtime()
    return out, Stats(0.0, t1 - t0, t2 - t1, x32.nbytes, x32.nbytes)


def iallreduce_mean(comm: Any, x: np.ndarray) -> Any:
    """Start :func:`allreduce_mean` with ``Iallreduce``; returns a :class:`Pending`.

    ``wait()`` gives ``(mean, stats)``: the staleness of the asynchronous gradient
    methods (:mod:`hpcq.algorithms`) needs an uncompressed baseline that can overlap too.
    """
    from mpi4py import MPI

    from hpcq.collectives.allgather import Pending

    t0 = MPI.Wtime()
    p = comm.Get_size()
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty_like(x32)
    request = comm.Iallreduce([x32, MPI.FLOAT], [out, MPI.FLOAT], op=MPI.SUM)
    stats = Stats(0.0, MPI.Wtime() - t0, 0.0, x32.nbytes, x32.nbytes)

    def finish(st: Stats) -> np.ndarray:
        t = MPI.Wtime()
        np.divide(out, p, out=out)
        st.decode_s += MPI.Wtime() - t
        return out

    return Pending([request], finish, stats, keep=(x32, out))


@cache
def sum16_op(kind: str) -> Any:
    """The commutative MPI operation summing uint16 words as ``kind`` ("fp16" or "bf16").

    Created once per process and kept (MPI frees it at finalisation).
    """
    from mpi4py import MPI

    def op(inbuf: Any, inoutbuf: Any, datatype: Any) -> None:
        a = np.frombuffer(inbuf, dtype=np.uint16)
        b = np.frombuffer(inoutbuf, dtype=np.uint16)
        cast.sum16(kind, a, b)  # an overflow becomes Inf; the caller checks the result

    return MPI.Op.Create(op, commute=True)


def to16(kind: str, x: np.ndarray, owner: str) -> np.ndarray:
    """The 16-bit words of float vector ``x``; ValueError naming ``owner`` if any overflow."""
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    words = np.empty(x32.shape[0], dtype=np.uint16)
    bad = (cast.to_fp16 if kind == "fp16" else cast.to_bf16)(x32, words)
    if bad:
        i = int(np.flatnonzero(~(np.abs(x32) < LARGEST[kind]))[0])
        raise ValueError(f"{owner}: x[{i}] = {x32[i]} is not finite or beyond {kind}'s "
                         f"largest value {LARGEST[kind]:g}")
    return words


def from16(kind: str, words: np.ndarray, owner: str) -> np.ndarray:
    """float32 values of 16-bit ``words``; ValueError if a sum overflowed to Inf."""
    y = (cast.from_fp16 if kind == "fp16" else cast.from_bf16)(words)
    if not np.isfinite(y).all():
        raise ValueError(f"{owner}: the {kind} sum overflowed (|sum| > {LARGEST[kind]:g}); "
                         f"use bf16 or fp32 for values this large")
    return y


def allreduce_cast_mean(comm: Any, x: np.ndarray, kind: str) -> tuple[np.ndarray, Stats]:
    """Cast to ``kind`` ("fp16"/"bf16"), ``Allreduce`` with a 16-bit sum, decode, scale by 1/p.

    ``encode_s`` is the cast, ``decode_s`` the conversion back and the scaling;
    both byte counts are ``2 d``.  Raises ValueError if an input or the sum
    does not fit the format.
    """
    from mpi4py import MPI

    if kind not in LARGEST:
        raise ValueError(f"allreduce: unknown 16-bit format {kind!r}; valid: fp16, bf16")
    t0 = MPI.Wtime()
    owner = f"allreduce-{kind}"
    p = comm.Get_size()
    words = to16(kind, x, owner)
    t1 = MPI.Wtime()
    out = np.empty_like(words)
    comm.Allreduce([words, MPI.UINT16_T], [out, MPI.UINT16_T], op=sum16_op(kind))
    t2 = MPI.Wtime()
    mean = from16(kind, out, owner)
    mean /= p
    t3 = MPI.Wtime()
    return mean, Stats(t1 - t0, t2 - t1, t3 - t2, words.nbytes, words.nbytes)


def _fp32(comm: Any, x: np.ndarray, comp: Compressor | None, *, seed: int,
          step: int) -> tuple[np.ndarray, Stats]:
    return allreduce_mean(comm, x)


def _fp16(comm: Any, x: np.ndarray, comp: Compressor | None, *, seed: int,
          step: int) -> tuple[np.ndarray, Stats]:
    return allreduce_cast_mean(comm, x, "fp16")


def _bf16(comm: Any, x: np.ndarray, comp: Compressor | None, *, seed: int,
          step: int) -> tuple[np.ndarray, Stats]:
    return allreduce_cast_mean(comm, x, "bf16")


register(Scheme("allreduce-fp32", "fp32 Allreduce (sum), then scale by 1/p: the baseline",
                _fp32, cast="fp32"))
register(Scheme("allreduce-fp16", "fp16 cast, Allreduce with a 16-bit sum, then scale",
                _fp16, cast="fp16"))
register(Scheme("allreduce-bf16", "bf16 cast, Allreduce with a 16-bit sum, then scale",
                _bf16, cast="bf16"))
