"""Benchmarks run as ``hpcq bench <name>``: one module each, registered by name.

A benchmark module registers a :class:`Bench` (its one-line summary, the
function adding its command-line options, and its entry point taking the
parsed options) in :data:`BENCHES`; the CLI builds ``hpcq bench`` from it.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, TextIO

from hpcq.compressors import Compressor, compressor
from hpcq.registry import Registry


class Bench(NamedTuple):
    """One ``hpcq bench`` subcommand."""

    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    main: Callable[[argparse.Namespace], int]


BENCHES: Registry[Bench] = Registry("benchmark")


class Progress:
    """Progress lines ``case 3/12 LABEL ... 4 s, eta 40 s`` (one per completed case)."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total, self.done, self.stream = total, 0, stream or sys.stderr
        self.start = time.perf_counter()

    def __call__(self, label: str) -> None:
        """Count one more completed case called ``label`` and print its line."""
        self.done += 1
        spent = time.perf_counter() - self.start
        eta = spent / self.done * max(self.total - self.done, 0)
        print(f"case {self.done}/{self.total} {label} ... {spent:.0f} s, eta {eta:.0f} s",
              file=self.stream, flush=True)


def _build(spec: str) -> Compressor:
    """``compressor(spec)``, also checking that a rotation prefix has its kernel installed."""
    comp = compressor(spec)
    if comp.rotation and importlib.util.find_spec("hpcq.kernels.hadamard") is None:
        raise ValueError("the Hadamard rotation kernel (hpcq.kernels.hadamard) is not installed")
    return comp


def resolve_compressors(specs: Sequence[str], *, skip_unavailable: bool
                        ) -> tuple[list[tuple[str, Compressor]], list[str]]:
    """Build the compressors of ``specs``.

    Parameters
    ----------
    specs : sequence of str
        Compressor specs (``hpcq compressors`` lists the names).
    skip_unavailable : bool
        Leave out, with a note, specs that do not build here (default lists, so a
        list naming codecs still to come works); otherwise raise.

    Returns
    -------
    compressors : list of (str, Compressor)
        (the spec as given, its compressor) for those that built, in the order
        given; a spec equal to an earlier one (same canonical spec) is dropped.
    notes : list of str
        One line per skipped spec, saying why.

    Raises
    ------
    ValueError
        A spec does not build and ``skip_unavailable`` is False.
    """
    out: list[tuple[str, Compressor]] = []
    notes: list[str] = []
    seen: set[str] = set()
    for spec in dict.fromkeys(specs):  # each spec once, in order
        try:
            comp = _build(spec)
        except ValueError as e:
            if not skip_unavailable:
                raise ValueError(f"compressor {spec!r}: {e}") from None
            # the error's first clause; its list of valid names would repeat on every line
            notes.append(f"skipping {spec} ({str(e).split(';')[0]})")
            continue
        if comp.spec not in seen:
            seen.add(comp.spec)
            out.append((spec.strip(), comp))
    return out, notes


# Importing the benchmark modules registers them.
from hpcq.bench import kernels  # noqa: E402,F401
