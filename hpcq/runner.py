"""``hpcq run``: a job (:mod:`hpcq.config`) -> cases -> runs on every rank -> one HDF5 file.

The format is documented in ``docs/jobs.md`` (with a complete example); in short::

    format = "hpcq-job"            # required
    version = 1                    # required

    [job]                          # name, seed, output, skip_unavailable
    [kernels]                      # single-process codec throughput, on rank 0
    [collectives]                  # compressed means over all ranks (or [[collectives]] blocks)
    [sweep]                        # "table.key" = [values ...]: the cartesian product of variants

Defaults live only in the dataclasses of :mod:`hpcq.config`.  Rank 0 reads, applies the
``--set`` overrides, validates everything (unknown tables or keys, wrong types,
bad values, unknown compressors or schemes, a scheme a compressor cannot do)
and expands the job into a flat list of cases, each with a key that identifies
it; it broadcasts the cases or the error, so every rank stops the same way with
one line naming the file, table and key.  Cases equal in every parameter run
once; ``--resume`` skips the cases whose key the output file already holds.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcq.affinity import bind_local_ranks, fit_threads
from hpcq.config import (
    CheckFailed,
    CollectivesTable,
    Job,
    JobError,
    JobTable,
    KernelsTable,
    check_case_count,
    parse_job,
    parse_override,
    read_job,
    variants,
)
from hpcq.netem import check_link
from hpcq.store import case_key

__all__ = ["Case", "CheckFailed", "CollectivesTable", "Job", "JobError", "JobTable",
           "KernelsTable", "expand_job", "parse_job", "parse_override", "read_job", "run_job",
           "variants"]

@dataclass(frozen=True)
class Case:
    """One unit of work and of the result file: its kind, label, key and benchmark case."""

    kind: str  # the result file's kind (kernels.memcpy, collectives, workload, train, ...)
    label: str
    key: str
    bench: Any  # the case kind's own case (hpcq.bench.kinds)
    sweep: tuple[tuple[str, Any], ...] = ()
    check: bool = False
    group: str = ""  # the case kind (hpcq.bench.kinds.KINDS) that runs it


def expand_job(job: Job, nprocs: int | None = None) -> tuple[list[Case], list[str]]:
    """The job's cases (sweep expanded, duplicates dropped) and notes on skipped compressors.

    Every case kind (:data:`hpcq.bench.kinds.KINDS`) expands its own tables; raises
    :class:`JobError` naming the table and key of anything invalid.  With ``nprocs`` every
    case key also holds the rank count (schema 1.3.0), so a case measured on 2 ranks is
    never taken for the same case on 4 (``--resume``, ``hpcq merge``).
    """
    import json

    from hpcq.bench.kinds import ordered

    cases: dict[str, Case] = {}
    notes: list[str] = []
    for point, j in variants(job):
        for kind in ordered():
            for e in kind.expand(j, notes):
                key = e.key if nprocs is None else case_key({**json.loads(e.key),
                                                             "nprocs": nprocs})
                cases.setdefault(key, Case(e.bench.kind, e.bench.label, key, e.bench, point,
                                           e.check, kind.name))
        check_case_count(job, len(cases))  # hpcq.config: [job] max_cases, stops early
    return list(cases.values()), notes


def _check_schemes(cases: Sequence[Case], p: int) -> None:
    """JobError when a case's scheme cannot run on ``p`` ranks (e.g. ranks_per_node) or on
    its workload's gradient (PowerSGD with nothing to compress), before any MPI work."""
    from hpcq.collectives import scheme
    from hpcq.workloads import workload

    for spec in dict.fromkeys(str(getattr(c.bench, "scheme", "")) for c in cases):
        if spec:
            try:
                scheme(spec).check_ranks(p)
            except ValueError as e:
                raise JobError(f"schemes: {e}") from None
    for spec, name in dict.fromkeys((str(getattr(c.bench, "scheme", "")),
                                     str(getattr(c.bench, "workload", ""))) for c in cases):
        if spec and name:
            try:
                scheme(spec).check_layout(workload(name).layout)
            except ValueError as e:
                raise JobError(f"schemes: {e}") from None


def _everywhere(comm: Any, rank0: Any) -> Any:
    """Broadcast rank 0's (value, error); raise the error on every rank alike."""
    value, err = comm.bcast(rank0, root=0)
    if err is not None:
        cls, text = err
        raise (CheckFailed if cls == "check" else JobError)(text)
    return value


def _on_rank0(fn: Any) -> tuple[Any, tuple[str, str] | None]:
    """Run ``fn()`` (rank 0): (its value, None) or (None, the error to broadcast)."""
    try:
        return fn(), None
    except JobError as e:
        return None, ("job", str(e))
    except (OSError, ValueError) as e:
        return None, ("job", str(e))


def _describe(cases: Sequence[Case], done: set[str]) -> str:
    lines = []
    for i, c in enumerate(cases):
        sweep = " ".join(f"{k}={v}" for k, v in c.sweep)
        mark = "  [done]" if c.key in done else ""
        lines.append(f"{i + 1:4d}  {c.kind:<16}{c.label}{'  (' + sweep + ')' if sweep else ''}"
                     f"{mark}")
    return "\n".join(lines)


def run_job(comm: Any, path: str | None, *, output: str | None = None, append: bool = False,
            resume: bool = False, dry_run: bool = False, overrides: Sequence[str] = (),
            shard: str | None = None, command_line: list[str] | None = None,
            job: Job | None = None, save: bool = True, allow_mixed: bool = False) -> int:
    """Run a job on every rank of ``comm``; rank 0 prints tables and writes the result file.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        All ranks of the run call this.
    path : str or None
        The job file; None runs the embedded default job (``jobs/default.toml``).
    output : str, optional
        The HDF5 file (overrides ``[job] output``).
    append : bool
        Add the cases to an existing result file.
    resume : bool
        Skip the cases the (existing) output file already holds complete; needs
        an explicit output name.
    dry_run : bool
        Print the expanded cases and exit.
    overrides : sequence of str
        ``TABLE.KEY=VALUE`` settings applied to the job file before validation.
    shard : str, optional
        ``"K/N"``: run only the cases whose index i has ``i % N == K`` (an array task).
    command_line : list of str, optional
        Recorded in the file (default ``sys.argv``).
    job : Job, optional
        A job built in code (``hpcq bench ...`` builds a one-table job); ``path`` is then
        ignored.
    save : bool
        Write a result file (``hpcq bench`` without ``-o`` only prints its table).
    allow_mixed : bool
        Let ``--resume`` add to a file written by another job text or rank count.

    Returns
    -------
    int
        The exit code (0); failures raise (:class:`JobError`, :class:`CheckFailed`).
    """
    from hpcq import provenance
    from hpcq.bench import Progress

    rank = comm.Get_rank()

    given = job

    def load() -> tuple[Job, list[Case], list[str], str, set[str]]:
        job = given if given is not None else read_job(path, overrides)
        cases, notes = expand_job(job, comm.Get_size())
        _check_schemes(cases, comm.Get_size())
        if shard is not None:
            k, n = parse_shard(shard)
            cases = cases[k::n]
        out = output or job.job.output
        if resume and not out:
            raise JobError("--resume needs the result file: give -o FILE.h5 or [job] output")
        if not dry_run and save:  # hpcq.store: the location is usable, before any MPI work
            from hpcq.store import check_output

            check_output(out or "hpcq-results.h5")
        done: set[str] = set()
        if resume and Path(out).exists():
            from hpcq.store import check_resume, completed_keys

            if not allow_mixed:  # hpcq.store: same job text and rank count, or refuse
                check_resume(out, job.text, comm.Get_size())
            done = completed_keys(out)
        return job, cases, notes, out, done

    job, cases, notes, out, done = _everywhere(comm, _on_rank0(load) if rank == 0 else None)
    if dry_run:
        if rank == 0:
            print(_describe(cases, done))
            print(f"# {len(cases)} cases, {len(done & {c.key for c in cases})} already in {out}"
                  if resume else f"# {len(cases)} cases")
        return 0
    binding = bind_local_ranks(comm)  # before any kernel starts a thread
    threads = fit_threads(comm)
    if rank == 0:
        for note in notes:
            print(f"hpcq: note: {note}", file=sys.stderr)
        print(f"hpcq: {comm.Get_size()} rank(s), cpu binding: {binding} (HPCQ_BIND=0 turns it "
              f"off), numba threads: {threads} (rank 0)", file=sys.stderr)
    todo = [c for c in cases if c.key not in done]
    if not out and save:
        stamp = comm.bcast(provenance.utc_stamp(), root=0)
        slurm = os.environ.get("SLURM_JOB_ID")
        out = f"hpcq-{job.job.name}-{f'{slurm}-' if slurm else ''}{stamp}.h5"
    prov = provenance.collect(comm, config_toml=job.text, command_line=command_line)
    prov["cpu_binding"] = binding
    prov.update(check_link(comm))  # an emulated link (hpcq netem): verified, recorded
    if overrides:
        prov["overrides"] = list(overrides)
    store = None
    if rank == 0 and save:
        from hpcq.store import ResultFile

        def open_store() -> ResultFile:
            return ResultFile(out, prov, append=append or resume, resume=resume)

        store, err = _on_rank0(open_store)
    else:
        err = None
    _everywhere(comm, (None, err))
    # --- hpcq.interrupt: what Ctrl-C / SIGTERM reports from here on (kept cases, --resume)
    from hpcq import interrupt

    if save:  # without a result file (hpcq bench without -o) there is nothing to report kept
        interrupt.track(output=out, total=len(cases), before=len(cases) - len(todo),
                        command_line=command_line or sys.argv, nprocs=comm.Get_size(),
                        store=store, resumable=given is None)
    # ---
    if rank == 0 and resume:
        print(f"hpcq: resuming {out}: {len(cases) - len(todo)} of {len(cases)} cases already "
              f"there", file=sys.stderr)
    from hpcq.bench.kinds import KINDS, ordered

    rank_of = {k.name: i for i, k in enumerate(ordered())}
    order = sorted(todo, key=lambda c: rank_of[c.group])  # stable: file order kept
    progress = (Progress(len(order), weights=[KINDS.get(c.group).cost(c.bench) for c in order])
                if rank == 0 else None)
    failed = _run_cases(comm, job, order, store, progress)
    if store is not None:
        store.close()
        print(f"# results written to {out}", flush=True)
    where = f"; the results are in {out}" if save else ""
    _everywhere(comm, (None, ("check", f"check failed (error above its guarantee, or ranks "
                                       f"disagree) for: {'; '.join(failed)}{where}") if failed
                                     else None))
    return 0


def parse_shard(text: str) -> tuple[int, int]:
    """``"K/N"`` -> (K, N) with 0 <= K < N; JobError otherwise."""
    k, slash, n = text.partition("/")
    try:
        kk, nn = int(k), int(n)
    except ValueError:
        kk, nn = -1, 0
    if not slash or not 0 <= kk < nn:
        raise JobError(f"--shard {text!r}: expected K/N with 0 <= K < N, e.g. 0/4")
    return kk, nn


def _run_cases(comm: Any, job: Job, cases: Sequence[Case], store: Any, progress: Any
               ) -> list[str]:
    """Compile, run every case kind by kind, write each case at once; return the labels of
    failed checks.  Every kind is driven the same way (:class:`hpcq.bench.kinds.CaseKind`)."""
    import numba

    from hpcq.bench.kinds import ordered
    from hpcq.collectives import idle_barrier

    rank, p = comm.Get_rank(), comm.Get_size()
    groups = [(k, [c for c in cases if c.group == k.name]) for k in ordered()]
    groups = [(k, cs) for k, cs in groups if cs]
    # Rank 0 compiles (or loads) every kernel first; the others then find them in
    # the numba cache instead of compiling the same functions at the same time.
    if rank == 0:
        seconds = sum(k.compile(job, [c.bench for c in cs], nprocs=p, first=True)
                      for k, cs in groups)
        print(f"hpcq: kernels ready in {seconds:.1f} s", file=sys.stderr)
    idle_barrier(comm)
    failed: list[str] = []
    for kind, cs in groups:
        rows = []
        if rank == 0 or not kind.solo:
            if rank != 0:
                kind.compile(job, [c.bench for c in cs], nprocs=p, first=False)  # cached
            state = kind.state(job)
            with kind.context(job):
                threads = numba.get_num_threads()
                for c in cs:
                    result = kind.run(None if kind.solo else comm, c.bench, state,
                                      check=c.check)
                    if result is not None:  # rank 0
                        attrs, data, row = result
                        rows.append(row)
                        _write(store, c, attrs, data)
                        progress(c.label)
                        if attrs.get("check") == "fail":
                            failed.append(c.label)
                    if not kind.solo:
                        # the others sleep while rank 0 writes: spinning in the next case's
                        # first collective would compete with the file system for the cores
                        idle_barrier(comm)
            if rank == 0:
                print(kind.table(rows, nprocs=p, threads=threads), flush=True)
        if kind.solo:
            idle_barrier(comm)  # the other ranks sleep: spinning would steal rank 0's cores
    return failed


def _write(store: Any, case: Case, attrs: dict[str, Any], data: dict[str, Any]) -> None:
    """Write one case (rank 0), with its sweep point and key."""
    if store is None:
        return
    if case.sweep:
        attrs = {**attrs, "sweep": dict(case.sweep)}
    store.write_case(case.kind, case.label, attrs, data, key=case.key)
