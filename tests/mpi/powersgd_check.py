"""MPI payload: PowerSGD and allreduce-fp8 on real ranks, for tests/test_collectives_powersgd.py.

Usage: ``mpiexec -n N python powersgd_check.py OUT.json``.  Every rank runs PowerSGD
configurations over four steps of inputs it regenerates from (seed, rank, step), and
allreduce-fp8 in both formats; rank 0 writes every mean, whether all ranks held the
same bits, and the fp8 scale, for the test to compare with tests/naive.py.  Any
exception aborts all ranks (never a hang).
"""

from __future__ import annotations

import json
import sys
import traceback
import zlib

import numpy as np
from mpi4py import MPI

from hpcq.collectives import Session, scheme
from hpcq.collectives.fp8 import shared_scale
from hpcq.workloads.layout import Layout

SHAPES = [(8, 3, 3), (16,), (8, 9), (20, 30), (8, 3, 3), (6, 5)]
CONFIGS = ["powersgd:rank=2", "powersgd:rank=3,batch=true", "powersgd:rank=1,start_iter=2",
           "powersgd:rank=2,warm_start=false,orthogonalization_epsilon=1e-3"]
STEPS, SEED, D8 = 4, 11, 1001


def inputs(rank: int, step: int, d: int) -> np.ndarray:
    """Rank ``rank``'s vector at ``step``: N(0, 1), shared by the test's reference."""
    return np.random.default_rng([SEED, rank, step]).standard_normal(d).astype(np.float32)


def main(out: str) -> None:
    comm = MPI.COMM_WORLD
    rank, p = comm.Get_rank(), comm.Get_size()
    lay = Layout.from_shapes([(f"t{i}", s) for i, s in enumerate(SHAPES)])
    report: dict = {"nprocs": p, "powersgd": {}, "fp8": {}}
    same = True
    for spec in CONFIGS:
        sch, means = scheme(spec), []
        with Session(comm) as session:
            for step in range(STEPS):
                mean, st = sch.mean(comm, inputs(rank, step, lay.size), seed=SEED, step=step,
                                    session=session, layout=lay)
                same &= len(set(comm.allgather(zlib.crc32(mean)))) == 1
                means.append(mean.tolist())
        report["powersgd"][spec] = {"means": means, "bytes_sent": st.bytes_sent,
                                    "phases": st.phases}
    for fmt in ("e4m3", "e5m2"):
        x = inputs(rank, 100, D8) * np.float32(rank + 1)
        mean, st = scheme(f"allreduce-fp8:format={fmt}").mean(comm, x)
        same &= len(set(comm.allgather(zlib.crc32(mean)))) == 1
        amax = comm.allreduce(float(np.max(np.abs(x))), op=MPI.MAX)
        report["fp8"][fmt] = {"mean": mean.tolist(), "scale": shared_scale(fmt, p, amax),
                              "bytes_sent": st.bytes_sent}
    report["same_on_all_ranks"] = bool(comm.allreduce(same, op=MPI.LAND))
    if rank == 0:
        with open(out, "w") as f:
            json.dump(report, f)


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except Exception:  # noqa: BLE001 - abort every rank, never hang
        traceback.print_exc()
        sys.stdout.flush()
        MPI.COMM_WORLD.Abort(1)
