"""Real iterations with an emulated backward: the measurements the verdict model is checked against.

::

    hpcq netem --rate 1gbit -- mpiexec -n 2 python -m hpcq.analysis.scripts.verdict_validate \\
        --workload resnet50 --compute-ms 400 --cases allreduce-fp32 allreduce-bf16 \\
        "allgather qsgd:bits=4" --iterations 3 --warmup 1 -o runs.jsonl

Each iteration of a case (every rank): a ``Barrier``, then the compute of one iteration is
emulated by *sleeping*: bucket b of the workload's DDP plan becomes ready at
:func:`hpcq.analysis.iteration.ready_times` (forward 1/3, backward 2/3 of ``compute-ms``,
buckets in proportion to their parameters), and the rank runs bucket b's collectives
(the workload benchmark's groups: policy-uncompressed tensors in one fp32 allreduce, the
rest through the scheme) as soon as it is ready and bucket b-1's are done; after the
last bucket it sleeps until the backward's end (if not past it).  Because a sleeping
backward uses no CPU, one thread that waits for each bucket's ready time and then runs
the blocking collectives follows exactly DDP's schedule (a compute stream and one
communication stream); a GPU's backward would not use the CPU either.  Bucket buffers
hold normal draws (the timing does not depend on the values' meaning); one buffer of the
largest bucket is reused.

Written (rank 0, one JSON line per case, appended): workload, scheme, spec, link
(``HPCQ_NETEM``), nprocs, compute_s, ``iteration_s`` per timed iteration (the slowest
rank's), ``busy_s`` (the stream's busy time per iteration, slowest rank), ``cpu_binding``
and rank 0's ``numba_threads`` (ranks are bound and threads capped as by ``hpcq run``), and
per bucket
the median over iterations of the slowest rank's (encode, comm, decode, wall) call time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def main(argv: Sequence[str] | None = None) -> int:
    from mpi4py import MPI

    from hpcq.affinity import bind_local_ranks, fit_threads
    from hpcq.analysis.iteration import ready_times
    from hpcq.bench.workload import WorkloadCase, _call, plan
    from hpcq.collectives import Session, scheme

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workload", required=True)
    ap.add_argument("--compute-ms", type=float, required=True)
    ap.add_argument("--cases", nargs="+", required=True,
                    help='"SCHEME" for a baseline or "SCHEME SPEC", e.g. "allgather sign"')
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--min-size", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-o", "--output", required=True, help="JSON lines file (appended)")
    a = ap.parse_args(argv)
    if not a.compute_ms > 0:
        raise SystemExit("--compute-ms must be > 0")
    comm = MPI.COMM_WORLD
    rank, p = comm.Get_rank(), comm.Get_size()
    # as hpcq run: ranks on disjoint cores, numba threads capped at each rank's share
    binding, threads = bind_local_ranks(comm), fit_threads(comm)
    for text in a.cases:
        name, _, spec = text.partition(" ")
        sch = scheme(name)
        case = WorkloadCase(a.workload, sch.spec, spec.strip() or str(sch.cast), "ddp",
                            a.min_size, (), "normal", a.iterations, a.warmup, a.seed)
        groups_all = plan(case)
        elements = [g[-1].hi for g in groups_all]
        compute_s = a.compute_ms / 1e3
        ready = ready_times(elements, compute_s)
        nb, n_it = len(groups_all), a.iterations
        rng = np.random.default_rng(a.seed + rank)
        calls = np.zeros((nb, n_it, 4))
        it_s, busy_s = np.zeros(n_it), np.zeros(n_it)
        # the baselines leave their 1/p to the step, as in the benchmark the model reads
        with Session(comm, defer_scale=True) as session:
            buf = session.buffer("validate.gradient", max(elements))
            out = session.buffer("validate.mean", max(elements))
            buf[:] = rng.standard_normal(buf.shape[0], dtype=np.float32)
            for step in range(a.warmup + n_it):
                comm.Barrier()
                t0 = MPI.Wtime()
                busy = 0.0
                for b, groups in enumerate(groups_all):
                    wait = t0 + ready[b] - MPI.Wtime()
                    if wait > 0:
                        time.sleep(wait)
                    n = elements[b]
                    c0 = MPI.Wtime()
                    acc = _call(comm, sch, groups, buf[:n], out[:n], session, seed=a.seed,
                                step=step)
                    wall = MPI.Wtime() - c0
                    busy += wall
                    if step >= a.warmup:
                        calls[b, step - a.warmup] = (*acc[:3], wall)
                wait = t0 + compute_s - MPI.Wtime()
                if wait > 0:
                    time.sleep(wait)
                if step >= a.warmup:
                    it_s[step - a.warmup] = MPI.Wtime() - t0
                    busy_s[step - a.warmup] = busy
        got = comm.gather((calls, it_s, busy_s), root=0)
        if rank != 0:
            continue
        allc = np.stack([g[0] for g in got])  # (ranks, buckets, iterations, 4)
        slow = allc[..., 3].argmax(axis=0)
        bi, ii = np.meshgrid(np.arange(nb), np.arange(n_it), indexing="ij")
        per_bucket = np.median(allc[slow, bi, ii, :], axis=1)  # (buckets, 4)
        row = {"workload": a.workload, "scheme": sch.spec, "spec": spec.strip() or None,
               "link": os.environ.get("HPCQ_NETEM"), "nprocs": p, "compute_s": compute_s,
               "min_size": a.min_size, "elements": elements, "cpu_binding": binding,
               "numba_threads": threads,
               "iteration_s": np.max([g[1] for g in got], axis=0).tolist(),
               "busy_s": np.max([g[2] for g in got], axis=0).tolist(),
               "bucket_s": per_bucket.tolist()}
        with Path(a.output).open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{a.workload} {text}: iteration median "
              f"{1e3 * float(np.median(row['iteration_s'])):.1f} ms, stream busy "
              f"{1e3 * float(np.median(row['busy_s'])):.1f} ms ({row['link']})", flush=True)
    return 0


def compare(argv: Sequence[str] | None = None) -> int:
    """``python -m hpcq.analysis.scripts.verdict_validate --compare RUNS.jsonl FILES...``:
    the validation table (predicted from the collectives files vs the runs)."""
    from hpcq.analysis.verdict import load_inputs, validation, validation_table

    ap = argparse.ArgumentParser()
    ap.add_argument("runs")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args(argv)
    with Path(a.runs).open() as f:
        runs = [json.loads(line) for line in f if line.strip()]
    print(validation_table(validation(load_inputs(a.files), runs)))
    return 0


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--compare"]:
        raise SystemExit(compare(sys.argv[2:]))
    raise SystemExit(main())
