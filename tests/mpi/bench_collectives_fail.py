"""MPI payload: ``hpcq bench collectives`` with every codec's guarantee forced to 0.

Usage: ``mpiexec -n N python bench_collectives_fail.py ARGS...`` (the arguments of
``hpcq bench collectives``).  With ``--check`` every compressed case then exceeds
its bound: the run must write every case, then exit 1 on every rank with one line.
"""

from __future__ import annotations

import sys

from hpcq.bench import guarantees
from hpcq.cli import main

_own = guarantees.scheme_bound


def zero_bound(scheme, comp, d, p, inputs):  # type: ignore[no-untyped-def]
    """A guarantee of 0 for every compressed scheme: any real error then fails the check."""
    if scheme.cast is None and scheme.codecs is None:
        return 0.0
    return _own(scheme, comp, d, p, inputs)


guarantees.scheme_bound = zero_bound  # type: ignore[assignment]
sys.exit(main(["bench", "collectives", *sys.argv[1:]]))
