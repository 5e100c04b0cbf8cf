"""MPI payload: ``hpcq bench collectives`` with every codec's guarantee forced to 0.

Usage: ``mpiexec -n N python bench_collectives_fail.py ARGS...`` (the arguments of
``hpcq bench collectives``).  With ``--check`` every compressed case then exceeds
its bound: the run must write every case, then exit 1 on every rank with one line.
"""

from __future__ import annotations

import sys

from hpcq.bench import guarantees
from hpcq.cli import main


def zero_bound(*args: object, **kwargs: object) -> float:
    return 0.0


guarantees.codec_bound = zero_bound  # type: ignore[assignment]
sys.exit(main(["bench", "collectives", *sys.argv[1:]]))
