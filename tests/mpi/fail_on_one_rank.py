"""MPI payload: an exception on the last rank only must abort every rank (no hang).

Usage: ``mpiexec -n N python fail_on_one_rank.py JOB.toml``.  Runs ``hpcq run JOB``
through :func:`hpcq.cli.main`, with the collectives benchmark broken on the last rank;
the other ranks are then stuck in a collective until ``Abort`` ends them.
"""

from __future__ import annotations

import sys

from mpi4py import MPI

import hpcq.bench.collectives
from hpcq.cli import main


def broken(*args: object, **kwargs: object) -> None:
    raise RuntimeError("simulated failure on one rank")


if MPI.COMM_WORLD.Get_rank() == MPI.COMM_WORLD.Get_size() - 1:
    hpcq.bench.collectives.run_case = broken  # type: ignore[assignment]
sys.exit(main(["run", sys.argv[1]]))
