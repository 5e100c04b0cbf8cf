"""Pin each MPI rank to its own cores when the launcher left the ranks unbound.

MPICH's and Open MPI's ``mpiexec`` start ranks free to run on every core.  The
ranks of a benchmark busy-poll in MPI, and after any sleep (an ``Ibarrier``
while rank 0 writes the result file, say) Linux may wake two of them on one
core, where they take turns in 4 ms time slices until the load balancer
separates them: the slowest rank's "communication" time then measures the
scheduler.  Seen here with 2 ranks on 2 cores: the median allgather of 2^17
entries took 270-1400 us from one run to the next unbound, 270-290 us bound.

:func:`bind_local_ranks` gives the ranks of one node disjoint, equal shares of
the cores they may all use, in local-rank order, but only when every rank on
the node has the same CPU set (nobody bound them) and there are enough cores;
``srun --cpu-bind``, ``mpiexec -bind-to``/``--bind-to`` or a cgroup that leaves
fewer cores are respected as they are.  ``HPCQ_BIND=0`` turns it off.  The
resulting CPU set of every rank is recorded in result files (``cpu_affinity``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any


def share(cpus: Sequence[int], local_rank: int, local_size: int) -> list[int] | None:
    """Local rank ``local_rank``'s cores: an equal, contiguous share of ``cpus``; None if < 1."""
    per = len(cpus) // max(local_size, 1)
    if per < 1 or not 0 <= local_rank < local_size:
        return None
    ordered = sorted(cpus)
    return ordered[local_rank * per:(local_rank + 1) * per]


def cpu_list(cpus: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` as ``"0-2,5"``."""
    out: list[str] = []
    run: list[int] = []
    for c in sorted(cpus):
        if run and c != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(c)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def bind_local_ranks(comm: Any) -> str:
    """Bind this rank to its share of the node's cores (collective); return what was done.

    Returns one line for the log: ``"bound"``, or why not (``"off"``,
    ``"already bound"``, ``"oversubscribed"``, ``"unsupported"``).
    """
    from mpi4py import MPI

    mine = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        masks = node.allgather(mine)
        local, nlocal = node.Get_rank(), node.Get_size()
    finally:
        node.Free()
    if os.environ.get("HPCQ_BIND", "1").strip() in ("0", "no", "false", "off"):
        return "off"
    if mine is None or not hasattr(os, "sched_setaffinity"):
        return "unsupported"
    if any(m != mine for m in masks):
        return "already bound"
    cores = share(mine, local, nlocal)
    if cores is None:
        return "oversubscribed"
    os.sched_setaffinity(0, cores)
    return "bound"


def affinity() -> str:
    """This process's CPU set as a list string (``"0-3"``), or "" where unknown."""
    if not hasattr(os, "sched_getaffinity"):
        return ""
    return cpu_list(sorted(os.sched_getaffinity(0)))
