"""MPI payload: the collective means equal their serial computation, at any rank count.

Usage: ``mpiexec -n N python mean_check.py D OUT.json SPEC [SPEC ...]``.  Every rank
runs :func:`hpcq.collectives.allgather_mean` for each spec (registered ones only,
plus a test-only variable-length codec) and :func:`allreduce_mean`; rank 0 then
recomputes every result serially from every rank's regenerated input and writes
the comparison to OUT.json for the test to assert on.  Any exception aborts all
ranks (never a hang).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import numpy as np
from mpi4py import MPI

from hpcq.bench import resolve_compressors
from hpcq.bench.mean import rank_vector
from hpcq.collectives import allgather_mean, allreduce_mean


class NonzerosCodec:
    """Test-only variable-length codec: (int64 index, float32 value) of every nonzero."""

    spec = "test-nonzeros"

    def wire_bytes(self, d: int) -> None:
        return None

    def encode(self, x: np.ndarray, *, seed: int = 0, step: int = 0, rank: int = 0
               ) -> np.ndarray:
        idx = np.flatnonzero(x)
        head = np.array([x.shape[0]], dtype=np.int64).view(np.uint8)
        return np.concatenate([head, idx.astype(np.int64).view(np.uint8),
                               x[idx].astype(np.float32).view(np.uint8)])

    def decode(self, buf: np.ndarray) -> np.ndarray:
        d = int(buf[:8].view(np.int64)[0])
        k = (buf.shape[0] - 8) // 12
        out = np.zeros(d, dtype=np.float32)
        out[buf[8:8 + 8 * k].view(np.int64)] = buf[8 + 8 * k:].view(np.float32)
        return out


def sparse_vector(seed: int, rank: int, d: int) -> np.ndarray:
    """A vector with ``rank``-dependent nonzeros, so every rank's message length differs."""
    x = rank_vector(seed, rank, d)
    x[(rank + 2) ** 2:] = 0.0
    return x


def serial_mean(comp: object, vectors: list[np.ndarray], seed: int, step: int) -> np.ndarray:
    """decode(encode(x_r, rank=r)) averaged over r in rank order, in float32."""
    acc = np.zeros(vectors[0].shape[0], dtype=np.float32)
    for r, x in enumerate(vectors):
        acc += comp.decode(comp.encode(x, seed=seed, step=step, rank=r))  # type: ignore[attr-defined]
    acc /= len(vectors)
    return acc


def main() -> None:
    comm = MPI.COMM_WORLD
    rank, p = comm.Get_rank(), comm.Get_size()
    d, out, specs = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    seed, step = 7, 3
    built = resolve_compressors(specs, skip_unavailable=True)[0]
    comps: list[tuple[str, object, object]] = [(label, c, rank_vector) for label, c in built]
    comps.append(("test-nonzeros", NonzerosCodec(), sparse_vector))
    report: dict[str, dict[str, object]] = {}
    for label, comp, make in comps:
        mean, stats = allgather_mean(comm, make(seed, rank, d), comp, seed=seed, step=step)
        everyone = comm.gather(mean, root=0)
        if rank == 0:
            want = serial_mean(comp, [make(seed, r, d) for r in range(p)], seed, step)
            report[label] = {
                "equal": bool(np.array_equal(mean, want)),
                "same_on_all_ranks": all(np.array_equal(mean, m) for m in everyone),
                "max_abs_diff": float(np.max(np.abs(mean - want), initial=0.0)),
                "variable": comp.wire_bytes(d) is None,  # type: ignore[attr-defined]
                "stats_keys": sorted(stats),
            }
    # integer-valued inputs: every partial sum is exact, so Allreduce equals the serial mean
    xi = np.arange(d, dtype=np.float32) % 97 + rank
    mean, _ = allreduce_mean(comm, xi)
    if rank == 0:
        want = sum((np.arange(d, dtype=np.float32) % 97 + r for r in range(p)),
                   np.zeros(d, dtype=np.float32)) / np.float32(p)
        report["allreduce-fp32"] = {"equal": bool(np.array_equal(mean, want)),
                                    "same_on_all_ranks": True, "variable": False}
        Path(out).write_text(json.dumps({"nprocs": p, "d": d, "results": report}))


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        traceback.print_exc()  # the test fails on it; Abort so no rank waits forever
        MPI.COMM_WORLD.Abort(1)
