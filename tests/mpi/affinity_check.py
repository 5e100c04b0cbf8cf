"""MPI payload: bind the ranks and fit their numba threads, print what each got.

Usage: ``mpiexec -n N python affinity_check.py``.  Rank 0 prints one line per rank:
``rank|<r>|<binding>|<cpu list>|<threads>`` (a binding may be two words).
"""

from __future__ import annotations

import os

import numba
from mpi4py import MPI

from hpcq.affinity import bind_local_ranks, cpu_list, fit_threads

comm = MPI.COMM_WORLD
binding = bind_local_ranks(comm)
threads = fit_threads(comm)
assert threads == numba.get_num_threads()
rows = comm.gather((binding, cpu_list(sorted(os.sched_getaffinity(0))), threads), root=0)
if comm.Get_rank() == 0:
    for r, (b, cpus, n) in enumerate(rows):
        print(f"rank|{r}|{b}|{cpus}|{n}")
