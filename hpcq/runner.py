"""``hpcq run``: a job file (TOML) -> validated, frozen dataclasses -> cases -> one HDF5 file.

Job file format (version 1; defaults live only in the dataclasses below)::

    format = "hpcq-job"          # required
    version = 1                  # required

    [job]                        # optional
    name = "default"             # used in the default output name
    seed = 0                     # data and codec randomness
    output = ""                  # default: hpcq-<name>-<UTC timestamp>.h5 (cwd)
    skip_unavailable = false     # true: skip compressors this install lacks, with a note

    [kernels]                    # single-process codec throughput, on rank 0
    compressors = ["qsgd:bits=4", "sign"]
    sizes = "16,20"              # log2 lengths: LO:HI[:STEP] or a comma list
    repeats = 5
    warmup = 2
    threads = 1                  # numba threads for this table; 0 = NUMBA_NUM_THREADS

    [mean]                       # compressed mean over all ranks vs the fp32 Allreduce
    compressors = ["qsgd:bits=4", "hadamard+sign:scale=drive"]
    d = 131072
    iterations = 20
    warmup = 3

At least one of ``[kernels]`` and ``[mean]`` is needed.  Rank 0 validates the
whole file before any work (unknown tables or keys, wrong types, bad values,
unknown compressors) and broadcasts the job or the error, so every rank stops
the same way with one line naming the file, table and key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

FORMAT = "hpcq-job"
VERSION = 1
DEFAULT_JOB = "<embedded default job>"


class JobError(ValueError):
    """A job that cannot run; raised on every rank alike, so no rank needs to abort."""


@dataclass(frozen=True)
class JobTable:
    """``[job]``: identity, seed and output of the run."""

    name: str = "job"
    seed: int = 0
    output: str = ""
    skip_unavailable: bool = False


@dataclass(frozen=True)
class KernelsTable:
    """``[kernels]``: :mod:`hpcq.bench.kernels` on rank 0 while the others wait."""

    compressors: tuple[str, ...] = ("fp16", "qsgd:bits=4", "sign", "hadamard+qsgd:bits=2")
    sizes: str = "16,20"
    repeats: int = 5
    warmup: int = 2
    threads: int = 0


@dataclass(frozen=True)
class MeanTable:
    """``[mean]``: :mod:`hpcq.bench.mean` over all ranks."""

    compressors: tuple[str, ...] = ("qsgd:bits=8", "qsgd:bits=4", "sign")
    d: int = 1 << 17
    iterations: int = 20
    warmup: int = 3


@dataclass(frozen=True)
class Job:
    """A validated job: its tables (None where absent), source name and verbatim text."""

    job: JobTable
    kernels: KernelsTable | None
    mean: MeanTable | None
    source: str
    text: str


_TABLES: dict[str, type] = {"job": JobTable, "kernels": KernelsTable, "mean": MeanTable}
_MINIMA = {"seed": 0, "repeats": 1, "warmup": 0, "threads": 0, "d": 1, "iterations": 1}


def _toml(value: Any) -> str:
    """A default value as it is written in TOML (JSON's syntax agrees for these types)."""
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _table(source: str, name: str, raw: Any) -> Any:
    """The dataclass of table ``name`` from its TOML dict, every key checked."""
    cls = _TABLES[name]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    valid = ", ".join(f"{k} (default {_toml(f.default)})" for k, f in fields.items())
    if not isinstance(raw, dict):
        raise JobError(f"{source}: [{name}] must be a table; valid keys: {valid}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            raise JobError(f"{source}: [{name}] unknown key {key!r}; valid keys: {valid}")
        default = fields[key].default
        if isinstance(default, tuple):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            want, value = "a list of strings", tuple(value) if ok else value
        else:
            # bool is an int in Python; TOML's true must not pass as a count, nor 1 as a flag
            ok = type(value) is type(default)
            want = type(default).__name__
        if not ok:
            raise JobError(f"{source}: [{name}] {key} = {value!r} must be {want}")
        if key in _MINIMA and value < _MINIMA[key]:
            raise JobError(f"{source}: [{name}] {key} = {value} must be >= {_MINIMA[key]}")
        values[key] = value
    return cls(**values)


def parse_job(text: str, source: str) -> Job:
    """Parse and validate job text (everything but the compressors, see :func:`load_job`)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise JobError(f"{source}: invalid TOML: {e}") from None
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise JobError(f"{source}: expected format = {FORMAT!r} and version = {VERSION} at the "
                       f"top of the file, got format = {doc.get('format')!r}, "
                       f"version = {doc.get('version')!r}")
    unknown = sorted(set(doc) - {"format", "version", *_TABLES})
    if unknown:
        raise JobError(f"{source}: unknown table or key {unknown[0]!r}; valid: format, version, "
                       + ", ".join(f"[{t}]" for t in _TABLES))
    if "kernels" not in doc and "mean" not in doc:
        raise JobError(f"{source}: nothing to run; add a [kernels] or [mean] table")
    tables = {name: _table(source, name, doc[name]) for name in _TABLES if name in doc}
    return Job(tables.get("job", JobTable()), tables.get("kernels"), tables.get("mean"),
               source, text)


def load_job(path: str | None) -> tuple[Job, list[str]]:
    """Read, parse and fully validate a job file (None: the embedded default).

    Returns the job and notes about skipped compressors.  Raises
    :class:`JobError` (or FileNotFoundError) naming the file, table and key.
    """
    from hpcq.bench import resolve_compressors
    from hpcq.bench.kernels import parse_sizes

    if path is None:
        text, source = resources.files("hpcq.jobs").joinpath("default.toml").read_text(), \
            DEFAULT_JOB
    else:
        text, source = Path(path).read_text(), path
    job = parse_job(text, source)
    if job.kernels is not None:
        try:
            parse_sizes(job.kernels.sizes)
        except ValueError as e:
            raise JobError(f"{source}: [kernels] sizes: {e}") from None
    notes: list[str] = []
    for name, table in (("kernels", job.kernels), ("mean", job.mean)):
        if table is None:
            continue
        try:
            skipped = resolve_compressors(table.compressors,
                                          skip_unavailable=job.job.skip_unavailable)[1]
            notes += [n for n in skipped if n not in notes]
        except ValueError as e:
            raise JobError(f"{source}: [{name}] compressors: {e}") from None
    return job, notes


def describe_cases(job: Job) -> list[str]:
    """One line per case the job will run (``hpcq run --dry-run``)."""
    from hpcq.bench import resolve_compressors
    from hpcq.bench.kernels import parse_sizes
    from hpcq.bench.mean import BASELINE

    skip = job.job.skip_unavailable
    lines = []
    if job.kernels is not None:
        specs = resolve_compressors(job.kernels.compressors, skip_unavailable=skip)[0]
        for d in parse_sizes(job.kernels.sizes):
            lines.append(f"kernels memcpy d=2^{d.bit_length() - 1}")
            lines.append(f"kernels fwht d=2^{d.bit_length() - 1}")
            lines += [f"kernels {label} d=2^{d.bit_length() - 1}" for label, _ in specs]
    if job.mean is not None:
        specs = resolve_compressors(job.mean.compressors, skip_unavailable=skip)[0]
        lines += [f"mean {label} d={job.mean.d}"
                  for label in [BASELINE, *(label for label, _ in specs)]]
    return lines


@contextlib.contextmanager
def _numba_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` numba threads (0: leave as is), then restore."""
    import numba

    before = numba.get_num_threads()
    most = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    if n:
        numba.set_num_threads(min(n, most))
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _everywhere(comm: Any, rank0: Any) -> Any:
    """Broadcast rank 0's (value, error text); raise the error as JobError on every rank."""
    value, err = comm.bcast(rank0, root=0)
    if err is not None:
        raise JobError(err)
    return value


def run_job(comm: Any, path: str | None, *, output: str | None = None, append: bool = False,
            dry_run: bool = False, command_line: list[str] | None = None) -> int:
    """Run a job file on every rank of ``comm``; rank 0 prints tables and writes the file.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        All ranks of the run call this.
    path : str or None
        The job file; None runs the embedded default job (``jobs/default.toml``).
    output : str, optional
        The HDF5 file (overrides ``[job] output``).
    append, dry_run : bool
        Add to an existing output file; only print the cases.
    command_line : list of str, optional
        Recorded in the file (default ``sys.argv``).

    Returns
    -------
    int
        The exit code (0).
    """
    import numba

    from hpcq import provenance
    from hpcq.bench import Progress, kernels, mean, resolve_compressors
    from hpcq.collectives import idle_barrier

    rank, loaded, err = comm.Get_rank(), None, None
    if rank == 0:
        try:
            loaded = load_job(path)
        except (JobError, OSError) as e:
            err = str(e) if isinstance(e, JobError) else f"{path}: {e.strerror}"
    job, notes = _everywhere(comm, (loaded, err))
    if dry_run:
        if rank == 0:
            print("\n".join(describe_cases(job)))
        return 0
    for note in notes if rank == 0 else ():
        print(f"hpcq: note: {note}", file=sys.stderr)
    skip = job.job.skip_unavailable
    kspecs = resolve_compressors(job.kernels.compressors, skip_unavailable=skip)[0] \
        if job.kernels else []
    mspecs = resolve_compressors(job.mean.compressors, skip_unavailable=skip)[0] \
        if job.mean else []
    sizes = kernels.parse_sizes(job.kernels.sizes) if job.kernels else []
    stamp = comm.bcast(provenance.utc_stamp(), root=0)
    slurm = os.environ.get("SLURM_JOB_ID")
    out = output or job.job.output or \
        f"hpcq-{job.job.name}-{f'{slurm}-' if slurm else ''}{stamp}.h5"
    prov = provenance.collect(comm, config_toml=job.text, command_line=command_line)
    store = None
    if rank == 0:
        from hpcq.store import ResultFile

        try:
            store = ResultFile(out, prov, append=append)
        except (OSError, ValueError) as e:
            err = str(e)
    _everywhere(comm, (None, err))
    on_case = store.write_case if store is not None else None
    # Rank 0 compiles (or loads) every kernel first; the others then find them in
    # the numba cache instead of compiling the same functions at the same time.
    kthreads = job.kernels.threads if job.kernels else 0
    if rank == 0:
        seconds = kernels.compile_kernels([c for _, c in mspecs], [job.mean.d] if job.mean else [])
        with _numba_threads(kthreads):
            seconds += kernels.compile_kernels([c for _, c in kspecs], sizes)
        print(f"hpcq: kernels ready in {seconds:.1f} s", file=sys.stderr)
    idle_barrier(comm)
    progress = Progress(len(describe_cases(job))) if rank == 0 else None
    if job.kernels is not None:
        if rank == 0:
            with _numba_threads(kthreads):
                rows = kernels.run(kspecs, sizes, repeats=job.kernels.repeats,
                                   warmup=job.kernels.warmup, seed=job.job.seed,
                                   on_case=on_case, progress=progress)
                print(f"# kernels on rank 0 alone, {numba.get_num_threads()} numba thread(s): "
                      f"{kernels.LEGEND}")
            print(kernels.format_table(rows), flush=True)
        idle_barrier(comm)  # the other ranks sleep: spinning would steal rank 0's cores
    if job.mean is not None:
        m = job.mean
        if rank != 0:
            kernels.compile_kernels([c for _, c in mspecs], [m.d])  # loads from the cache
        rows = mean.run(comm, mspecs, m.d, iterations=m.iterations, warmup=m.warmup,
                        seed=job.job.seed, on_case=on_case, progress=progress)
        if rank == 0:
            print(mean.format_table(rows, m.d, comm.Get_size(), m.iterations), flush=True)
    if store is not None:
        store.close()
        print(f"# results written to {out}", flush=True)
    return 0
