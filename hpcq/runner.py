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

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcq.affinity import bind_local_ranks
from hpcq.config import (
    CheckFailed,
    check_case_count,
    CollectivesTable,
    Job,
    JobError,
    JobTable,
    KernelsTable,
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

    kind: str
    label: str
    key: str
    bench: Any  # hpcq.bench.kernels.KernelCase or hpcq.bench.collectives.Case
    sweep: tuple[tuple[str, Any], ...] = ()
    check: bool = False


def _sizes_specs(where: str, sizes: str, compressors: Sequence[str], skip: bool,
                 notes: list[str]) -> tuple[list[int], list[tuple[str, Any]]]:
    """A table's sizes and compressors, errors naming ``where``; skip notes added to ``notes``."""
    from hpcq.bench import kernels, resolve_compressors

    try:
        lengths = kernels.parse_sizes(sizes)
    except ValueError as e:
        raise JobError(f"{where} sizes: {e}") from None
    try:
        specs, skipped = resolve_compressors(compressors, skip_unavailable=skip)
    except ValueError as e:
        raise JobError(f"{where} compressors: {e}") from None
    notes += [n for n in skipped if n not in notes]
    return lengths, specs


def expand_job(job: Job) -> tuple[list[Case], list[str]]:
    """The job's cases (sweep expanded, duplicates dropped) and notes on skipped compressors.

    Raises :class:`JobError` naming the table and key of anything invalid.
    """
    from hpcq.bench import collectives, kernels, train

    cases: dict[str, Case] = {}
    notes: list[str] = []
    source, skip = job.source, job.job.skip_unavailable
    for point, j in variants(job):
        seed = j.job.seed
        if j.kernels is not None:
            k = j.kernels
            sizes, specs = _sizes_specs(f"{source}: [kernels]", k.sizes, k.compressors, skip, notes)
            for kc in kernels.expand(specs, sizes, repeats=k.repeats, warmup=k.warmup,
                                     seed=seed):
                key = case_key({**kc.params(), "threads": k.threads})
                cases.setdefault(key, Case(kc.kind, kc.label, key, kc, point))
        for i, c in enumerate(j.collectives):
            where = f"{source}: [collectives]" + (f" block {i + 1}" if len(j.collectives) > 1
                                                  else "")
            sizes, specs = _sizes_specs(where, c.sizes, c.compressors, skip, notes)
            try:
                expanded = collectives.expand(c.schemes, [label for label, _ in specs], sizes,
                                              iterations=c.iterations, warmup=c.warmup,
                                              seed=seed)
            except ValueError as e:
                raise JobError(f"{where} schemes: {e}") from None
            for cc in expanded:
                key = case_key({"kind": "collectives", **cc.params(), "check": c.check})
                cases.setdefault(key, Case("collectives", cc.label, key, cc, point, c.check))
        for i, t in enumerate(j.train):
            where = f"{source}: [train]" + (f" block {i + 1}" if len(j.train) > 1 else "")
            try:
                expanded_t = train.expand(t, seed, where)
            except ValueError as e:
                raise JobError(str(e)) from None
            for tc in expanded_t:
                key = case_key(tc.params())
                cases.setdefault(key, Case("train", tc.label, key, tc, point))
        check_case_count(job, len(cases))  # hpcq.config: [job] max_cases, stops early
    return list(cases.values()), notes


@contextlib.contextmanager
def numba_threads(n: int) -> Iterator[None]:
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
            allow_mixed: bool = False) -> int:
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

    def load() -> tuple[Job, list[Case], list[str], str, set[str]]:
        job = read_job(path, overrides)
        cases, notes = expand_job(job)
        if shard is not None:
            k, n = parse_shard(shard)
            cases = cases[k::n]
        out = output or job.job.output
        if resume and not out:
            raise JobError("--resume needs the result file: give -o FILE.h5 or [job] output")
        if not dry_run:  # hpcq.store: the location is usable, before any MPI work
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
    if rank == 0:
        for note in notes:
            print(f"hpcq: note: {note}", file=sys.stderr)
        print(f"hpcq: {comm.Get_size()} rank(s), cpu binding: {binding} (HPCQ_BIND=0 turns it "
              f"off)", file=sys.stderr)
    todo = [c for c in cases if c.key not in done]
    if not out:
        stamp = comm.bcast(provenance.utc_stamp(), root=0)
        slurm = os.environ.get("SLURM_JOB_ID")
        out = f"hpcq-{job.job.name}-{f'{slurm}-' if slurm else ''}{stamp}.h5"
    prov = provenance.collect(comm, config_toml=job.text, command_line=command_line)
    prov["cpu_binding"] = binding
    prov.update(check_link(comm))  # an emulated link (hpcq netem): verified, recorded
    if overrides:
        prov["overrides"] = list(overrides)
    store = None
    if rank == 0:
        from hpcq.store import ResultFile

        def open_store() -> ResultFile:
            return ResultFile(out, prov, append=append or resume, resume=resume)

        store, err = _on_rank0(open_store)
    else:
        err = None
    _everywhere(comm, (None, err))
    # --- hpcq.interrupt: what Ctrl-C / SIGTERM reports from here on (kept cases, --resume)
    from hpcq import interrupt

    interrupt.track(output=out, total=len(cases), before=len(cases) - len(todo),
                    command_line=command_line or sys.argv, nprocs=comm.Get_size(), store=store)
    # ---
    if rank == 0 and resume:
        print(f"hpcq: resuming {out}: {len(cases) - len(todo)} of {len(cases)} cases already "
              f"there", file=sys.stderr)
    rank_of = {"collectives": 1, "train": 2}
    order = sorted(todo, key=lambda c: rank_of.get(c.kind, 0))  # stable: file order kept
    progress = Progress(len(order), weights=[_cost(c) for c in order]) if rank == 0 else None
    failed = _run_cases(comm, job, order, store, progress)
    if store is not None:
        store.close()
        print(f"# results written to {out}", flush=True)
    _everywhere(comm, (None, ("check", f"check failed (error above its guarantee, or ranks "
                                       f"disagree) for: {'; '.join(failed)}; the results are "
                                       f"in {out}") if failed else None))
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


def _cost(case: Case) -> float:
    """A case's rough relative run time (for the progress estimate)."""
    from hpcq.bench import collectives, train

    if case.kind == "collectives":
        return collectives.cost(case.bench)
    if case.kind == "train":
        return train.cost(case.bench)
    b = case.bench
    return (2 * b.repeats + b.warmup + 2) * (b.d + 20_000.0)


def _run_cases(comm: Any, job: Job, cases: Sequence[Case], store: Any, progress: Any
               ) -> list[str]:
    """Compile, run every case, write each at once; return the labels of failed checks."""
    import numba

    from hpcq.bench import collectives, collectives_table, kernels, train
    from hpcq.collectives import idle_barrier
    from hpcq.compressors import compressor

    rank = comm.Get_rank()
    kcases = [c for c in cases if c.kind.startswith("kernels")]
    ccases = [c for c in cases if c.kind == "collectives"]
    tcases = [c for c in cases if c.kind == "train"]
    kthreads = job.kernels.threads if job.kernels else 0
    # Rank 0 compiles (or loads) every kernel first; the others then find them in
    # the numba cache instead of compiling the same functions at the same time.
    if rank == 0:
        seconds = collectives.compile_for([c.bench for c in ccases], nprocs=comm.Get_size())
        with numba_threads(kthreads):
            comps = [compressor(c.bench.what) for c in kcases if c.kind == "kernels"]
            seconds += kernels.compile_kernels(comps, sorted({c.bench.d for c in kcases}))
        if tcases:
            seconds += train.compile_for([c.bench for c in tcases])
            seconds += train.warm([c.bench for c in tcases])
        print(f"hpcq: kernels ready in {seconds:.1f} s", file=sys.stderr)
    idle_barrier(comm)
    failed: list[str] = []
    if kcases:
        if rank == 0:
            rows, memcpy = [], {}
            with numba_threads(kthreads):
                for c in kcases:
                    comp = compressor(c.bench.what) if c.kind == "kernels" else None
                    attrs, data, row = kernels.run_case(c.bench, comp,
                                                        memcpy_gbs=memcpy.get(c.bench.d))
                    if c.bench.what == "memcpy":
                        memcpy[c.bench.d] = row["enc"][0]
                    rows.append(row)
                    _write(store, c, attrs, data)
                    progress(c.label)
                print(f"# kernels on rank 0 alone, {numba.get_num_threads()} numba thread(s): "
                      f"{kernels.LEGEND}")
            print(kernels.format_table(rows), flush=True)
        idle_barrier(comm)  # the other ranks sleep: spinning would steal rank 0's cores
    if ccases:
        if rank != 0:
            collectives.compile_for([c.bench for c in ccases], nprocs=comm.Get_size())  # cached
        rows = []
        for c in ccases:
            result = collectives.run_case(comm, c.bench, check=c.check)
            if result is not None:
                attrs, data, row = result
                rows.append(row)
                _write(store, c, attrs, data)
                progress(c.label)
                if attrs.get("check") == "fail":
                    failed.append(c.label)
            # the others sleep while rank 0 writes: spinning in the next case's first
            # collective would compete with the file system's work for the cores
            idle_barrier(comm)
        if rank == 0:
            print(collectives_table.format_table(rows, nprocs=comm.Get_size()), flush=True)
    if tcases:
        if rank != 0:
            train.warm([c.bench for c in tcases])  # compiled by rank 0: loads the cache
        rows = []
        for c in tcases:
            result = train.run_case(comm, c.bench)
            if result is not None:
                attrs, data, row = result
                rows.append(row)
                _write(store, c, attrs, data)
                progress(c.label)
            idle_barrier(comm)
        if rank == 0:
            print(train.format_table(rows, nprocs=comm.Get_size()), flush=True)
    return failed


def _write(store: Any, case: Case, attrs: dict[str, Any], data: dict[str, Any]) -> None:
    """Write one case (rank 0), with its sweep point and key."""
    if store is None:
        return
    if case.sweep:
        attrs = {**attrs, "sweep": dict(case.sweep)}
    store.write_case(case.kind, case.label, attrs, data, key=case.key)
