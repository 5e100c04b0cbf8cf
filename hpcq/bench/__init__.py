"""Benchmarks run as ``hpcq bench <name>``: one module each, registered by name.

A benchmark module registers a :class:`Bench` (its one-line summary, the
function adding its command-line options, and the function turning the parsed
options into a one-table job) in :data:`BENCHES`; the CLI builds ``hpcq bench``
from it and hands the job to the runner.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TextIO

from hpcq.compressors import Compressor, compressor
from hpcq.registry import Registry


class Bench(NamedTuple):
    """One ``hpcq bench`` subcommand: its options and the one-table job they make.

    ``hpcq bench NAME`` builds the job (``to_job``) and runs it with the runner
    (:func:`hpcq.runner.run_job`), like ``hpcq run`` a job file: one orchestrator.
    """

    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    to_job: Callable[[argparse.Namespace], Any]


BENCHES: Registry[Bench] = Registry("benchmark")


def _duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """Progress of a run on stderr: cases done/total, time spent and estimated time left.

    On a terminal one live line is redrawn (``\\r``) with a bar; otherwise (a log
    file, a pipe, a batch job) one plain line per completed case:
    ``case 3/12 LABEL: 4 s, eta 40 s``.

    Parameters
    ----------
    total : int
        Number of cases.
    stream : text stream, optional
        Where to write (default ``sys.stderr``).
    weights : sequence of float, optional
        Relative cost of each case, in the order they complete (e.g. proportional
        to their size); the estimate assumes equal cases without them.
    """

    WIDTH = 20

    def __init__(
        self, total: int, stream: TextIO | None = None, *, weights: Sequence[float] | None = None
    ) -> None:
        self.total, self.done, self.stream = total, 0, stream or sys.stderr
        self.weights = list(weights) if weights is not None and len(weights) == total else None
        self.start = time.perf_counter()
        isatty = getattr(self.stream, "isatty", None)
        self.live = bool(isatty and isatty())
        self._width = 0

    def eta(self, spent: float) -> float:
        """Estimated seconds left after ``self.done`` cases took ``spent`` seconds."""
        if self.done <= 0:
            return 0.0
        if self.weights is None:
            return spent / self.done * max(self.total - self.done, 0)
        done = sum(self.weights[: self.done])
        return spent / done * sum(self.weights[self.done :]) if done > 0 else 0.0

    def __call__(self, label: str) -> None:
        """Count one more completed case called ``label`` and report it."""
        self.done += 1
        spent = time.perf_counter() - self.start
        left = self.eta(spent)
        timing = f"{_duration(spent)}, eta {_duration(left)}"
        if not self.live:
            print(f"case {self.done}/{self.total} {label}: {timing}", file=self.stream, flush=True)
            return
        filled = self.WIDTH * self.done // max(self.total, 1)
        line = (
            f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total} "
            f"{timing}  {label}"
        )
        pad = max(self._width - len(line), 0)
        self._width = len(line)
        end = "\n" if self.done >= self.total else ""
        self.stream.write(f"\r{line}{' ' * pad}{end}")
        self.stream.flush()


def _build(spec: str) -> Compressor:
    """``compressor(spec)``, also checking that a rotation prefix has its kernel installed."""
    comp = compressor(spec)
    if comp.rotation and importlib.util.find_spec("hpcq.kernels.hadamard") is None:
        raise ValueError("the Hadamard rotation kernel (hpcq.kernels.hadamard) is not installed")
    return comp


def resolve_compressors(
    specs: Sequence[str], *, skip_unavailable: bool
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
from hpcq.bench import collectives_table, kernels  # noqa: E402,F401
