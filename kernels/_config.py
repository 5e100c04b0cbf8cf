"""Compilation flags for every kernel, in one place.

Kernels never spell ``fastmath=`` / ``parallel=`` themselves (a test greps for it);
they take one of the option dicts below, so a numeric policy change is one edit.

Policy
------
* ``EXACT``: IEEE semantics, operations in source order.  Used wherever the
  bytes on the wire must not depend on vector width or on the compiler's
  reassociation choices (stochastic rounding, packing, decoding).
* ``REDUCE``: additionally allows reassociation of floating-point reductions
  (sums of squares, max-abs) so LLVM can vectorise them.  Never ``nnan``/``ninf``:
  the kernels detect NaN/Inf in their input and the wrapper raises, and those
  flags would let the compiler delete that check.
* ``PARALLEL`` variants add ``parallel=True``; the wrappers call them only above
  :data:`PARALLEL_MIN_ELEMENTS`, where thread start-up (about 10 us) is amortised.
  Parallel loops split over buckets/blocks and draw random numbers by element
  index, so results are identical for any thread count.
"""

from __future__ import annotations

import os
from types import FunctionType
from typing import Any

from numba import njit

#: Reassociation is allowed for reductions only; see module docstring.
REDUCE_FASTMATH: frozenset[str] = frozenset({"reassoc", "nsz", "contract"})

_BASE: dict[str, Any] = {"cache": True, "nogil": True, "error_model": "numpy"}

EXACT: dict[str, Any] = dict(_BASE)
REDUCE: dict[str, Any] = dict(_BASE, fastmath=set(REDUCE_FASTMATH))
EXACT_PARALLEL: dict[str, Any] = dict(EXACT, parallel=True)
REDUCE_PARALLEL: dict[str, Any] = dict(REDUCE, parallel=True)
#: Small helpers inlined into their callers (no call overhead in the hot loop).
INLINE: dict[str, Any] = dict(_BASE, inline="always")

#: Below this many elements the serial kernel is used (threads do not pay).
PARALLEL_MIN_ELEMENTS: int = int(os.environ.get("HPCQ_PARALLEL_MIN", 1 << 18))


def use_parallel(n: int) -> bool:
    """Whether a kernel over ``n`` elements should take its parallel variant."""
    import numba

    return n >= PARALLEL_MIN_ELEMENTS and numba.get_num_threads() > 1


def twins(body: Any, serial: dict[str, Any] = EXACT,
          parallel: dict[str, Any] = EXACT_PARALLEL) -> tuple[Any, Any]:
    """Serial and parallel dispatchers of one kernel body, cached apart.

    numba's on-disk cache keys a function by qualified name and line, not by its
    flags: two ``njit`` of the same function share one index, and the parallel one
    can load the serial machine code (seen here: no speed-up with 2 threads).  The
    parallel twin is therefore a copy of the function renamed ``<name>_par``.
    """
    par = FunctionType(body.__code__, body.__globals__, body.__name__ + "_par",
                       body.__defaults__, body.__closure__)
    par.__qualname__ = body.__qualname__ + "_par"
    return njit(**serial)(body), njit(**parallel)(par)
