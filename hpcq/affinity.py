"""Pin each MPI rank to its own cores when the launcher left the ranks unbound.

MPICH's and Open MPI's ``mpiexec`` start ranks free to run on every core.  The
ranks of a benchmark busy-poll in MPI, and after any sleep (an ``Ibarrier``
while rank 0 writes the result file, say) Linux may wake two of them on one
core, where they take turns in 4 ms time slices until the load balancer
separates them: the slowest rank's "communication" time then measures the
scheduler.  Seen here with 2 ranks on 2 cores: the median allgather of 2^17
entries took 270-1400 us from one run to the next unbound, 270-290 us bound.

:func:`bind_local_ranks` gives the ranks of one machine disjoint, equal shares of
the cores they may all use, in rank order, but only when every rank on the
machine has the same CPU set (nobody bound them) and there are enough cores;
``srun --cpu-bind``, ``mpiexec -bind-to``/``--bind-to`` or a cgroup that leaves
fewer cores are respected as they are.  ``HPCQ_BIND=0`` turns it off.  The
resulting CPU set of every rank is recorded in result files (``cpu_affinity``).

Numba sizes its thread pool when it is imported, from the CPUs the process had then
(all of them, before the binding): a rank bound to one core would run its parallel
kernels with as many threads as the machine has cores, taking turns on that core.
:func:`fit_threads` therefore caps the numba threads at this rank's share of the cores,
unless ``NUMBA_NUM_THREADS`` was set by the user.

A machine is a kernel (:func:`machine_key`), not MPI's shared-memory node: under
``hpcq netem`` MPI is told to use TCP only, every rank is then a "node" of its own, and
ranks grouped that way were neither bound nor given fewer threads (measured, 2 ranks on
2 cores through a 1 Gbit/s link, pipelined 4-bit mean of 2^24: 217 ms, encodes 57 ms;
bound with one thread each: 145 ms, encodes 22 ms).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
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


def machine_key() -> str:
    """What names this machine's kernel: its boot id (shared by every network and host-name
    namespace on it, so ``hpcq netem``'s emulated nodes are one machine here), else the
    host name."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        import socket

        return socket.gethostname()


def machine_masks(comm: Any) -> tuple[list[int] | None, list[list[int] | None], int]:
    """(this rank's CPUs, the CPUs of every rank on this machine in rank order, this rank's
    index among them) (collective).

    Ranks are grouped by :func:`machine_key`, not by MPI's shared-memory split: with MPI
    told to use TCP only (``hpcq netem``) every rank is its own shared-memory "node",
    yet all of them run on these cores.
    """
    mine = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    keys = comm.allgather(machine_key())
    color = keys.index(keys[comm.Get_rank()])
    machine = comm.Split(color, comm.Get_rank())
    try:
        return mine, machine.allgather(mine), machine.Get_rank()
    finally:
        machine.Free()


def bind_local_ranks(comm: Any) -> str:
    """Bind this rank to its share of the node's cores (collective); return what was done.

    Returns one line for the log: ``"bound"``, or why not (``"off"``,
    ``"already bound"``, ``"oversubscribed"``, ``"unsupported"``).
    """
    mine, masks, local = machine_masks(comm)
    nlocal = len(masks)
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


def fit_threads(comm: Any) -> int:
    """Cap this rank's numba threads at its share of the cores (collective); return the count.

    The share: the CPUs this rank may run on, divided among the ranks of its machine that
    may run on the same set (1 when they outnumber them).  ``NUMBA_NUM_THREADS`` in the
    environment is the user's choice and is kept as it is.
    """
    import numba

    mine, masks, _ = machine_masks(comm)
    if os.environ.get("NUMBA_NUM_THREADS", "").strip() or mine is None:
        return int(numba.get_num_threads())
    sharers = sum(m == mine for m in masks)
    # a cap only: a count set lower before (``hpcq bench kernels --threads``) stays
    n = min(max(1, len(mine) // sharers), int(numba.get_num_threads()))
    numba.set_num_threads(n)
    return n


def affinity() -> str:
    """This process's CPU set as a list string (``"0-3"``), or "" where unknown."""
    if not hasattr(os, "sched_getaffinity"):
        return ""
    return cpu_list(sorted(os.sched_getaffinity(0)))
