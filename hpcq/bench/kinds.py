"""The kinds of case a job holds, behind one protocol the runner drives without branches.

A :class:`CaseKind` turns its job table(s) into cases (:meth:`CaseKind.expand`),
compiles what they need (:meth:`CaseKind.compile`: rank 0 first, then the others load
the numba cache), runs one case on every rank (:meth:`CaseKind.run`: rank 0 gets the
attributes, datasets and table row), estimates its cost for the progress line and
prints its table.  Kinds run in ``order`` (kernels, collectives, workloads, training);
a ``solo`` kind runs on rank 0 alone while the others sleep.  Adding a kind of case is
one module with its measurement and one entry here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, NamedTuple

from hpcq.config import Job, JobError
from hpcq.registry import Registry
from hpcq.store import case_key


class Expanded(NamedTuple):
    """One case of a kind: its benchmark case, resume key and whether ``check`` is on."""

    bench: Any
    key: str
    check: bool = False


Result = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]


class CaseKind:
    """One kind of case (see the module docstring)."""

    name: ClassVar[str]
    order: ClassVar[int]
    solo: ClassVar[bool] = False

    def expand(self, job: Job, notes: list[str]) -> list[Expanded]:
        """The cases of ``job``'s tables of this kind; JobError naming the file, table, key."""
        raise NotImplementedError

    def compile(self, job: Job, benches: Sequence[Any], *, nprocs: int, first: bool) -> float:
        """Compile (``first``: rank 0, before the others) or load what ``benches`` need."""
        return 0.0

    def state(self, job: Job) -> dict[str, Any]:
        """What the cases of one run share (a memcpy reference, thread settings)."""
        return {}

    @contextlib.contextmanager
    def context(self, job: Job) -> Iterator[None]:
        """Settings around all of this kind's cases (e.g. numba threads)."""
        yield

    def run(self, comm: Any, bench: Any, state: dict[str, Any], *, check: bool
            ) -> Result | None:
        """Run one case on every rank (rank 0 alone for a solo kind); rank 0 gets its result."""
        raise NotImplementedError

    def cost(self, bench: Any) -> float:
        """A rough relative run time (progress estimate)."""
        return 1.0

    def table(self, rows: Sequence[dict[str, Any]], *, nprocs: int, threads: int) -> str:
        """The rows as printed text."""
        raise NotImplementedError


KINDS: Registry[CaseKind] = Registry("case kind")


def _register(cls: type[CaseKind]) -> type[CaseKind]:
    """Class decorator: register one instance of the kind under its name."""
    KINDS.register(cls.name)(cls())
    return cls


def ordered() -> list[CaseKind]:
    """Every kind in run order."""
    return sorted((k for _, k in KINDS.items()), key=lambda k: k.order)


def _where(source: str, table: str, i: int, n: int) -> str:
    return f"{source}: [{table}]" + (f" block {i + 1}" if n > 1 else "")


def sizes_specs(where: str, sizes: str, compressors: Sequence[str], skip: bool,
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


# ---------------------------------------------------------------------------- kernels
@_register
class Kernels(CaseKind):
    """``[kernels]``: codec throughput on rank 0 alone (:mod:`hpcq.bench.kernels`)."""

    name, order, solo = "kernels", 0, True

    def expand(self, job: Job, notes: list[str]) -> list[Expanded]:
        from hpcq.bench import kernels

        k = job.kernels
        if k is None:
            return []
        sizes, specs = sizes_specs(f"{job.source}: [kernels]", k.sizes, k.compressors,
                                   job.job.skip_unavailable, notes)
        if any(getattr(c, "p", {}).get("code", "fixed") != "fixed" for _, c in specs):
            notes += [n for n in kernels.missing_tools() if n not in notes]
        return [Expanded(kc, case_key({**kc.params(), "threads": k.threads}))
                for kc in kernels.expand(specs, sizes, repeats=k.repeats, warmup=k.warmup,
                                         seed=job.job.seed)]

    @contextlib.contextmanager
    def context(self, job: Job) -> Iterator[None]:
        with numba_threads(job.kernels.threads if job.kernels else 0):
            yield

    def compile(self, job: Job, benches: Sequence[Any], *, nprocs: int, first: bool) -> float:
        from hpcq.bench import kernels
        from hpcq.compressors import compressor

        if not first:
            return 0.0
        with self.context(job):
            comps = [compressor(b.what) for b in benches if b.kind == "kernels"]
            return kernels.compile_kernels(comps, sorted({b.d for b in benches}))

    def state(self, job: Job) -> dict[str, Any]:
        return {"memcpy": {}}

    def run(self, comm: Any, bench: Any, state: dict[str, Any], *, check: bool
            ) -> Result | None:
        from hpcq.bench import kernels
        from hpcq.compressors import compressor

        comp = compressor(bench.what) if bench.kind == "kernels" else None
        attrs, data, row = kernels.run_case(bench, comp,
                                            memcpy_gbs=state["memcpy"].get(bench.d))
        if bench.what == "memcpy":
            state["memcpy"][bench.d] = row["enc"][0]
        return attrs, data, row

    def cost(self, bench: Any) -> float:
        return (2 * bench.repeats + bench.warmup + 2) * (bench.d + 20_000.0)

    def table(self, rows: Sequence[dict[str, Any]], *, nprocs: int, threads: int) -> str:
        from hpcq.bench import kernels

        return (f"# kernels on rank 0 alone, {threads} numba thread(s): {kernels.LEGEND}\n"
                f"{kernels.format_table(rows)}")


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


# ---------------------------------------------------------------------------- collectives
@_register
class Collectives(CaseKind):
    """``[collectives]`` with ``sizes``: the mean of one vector per rank (OSU-style)."""

    name, order = "collectives", 1

    def expand(self, job: Job, notes: list[str]) -> list[Expanded]:
        from hpcq.bench import collectives

        out = []
        for i, c in enumerate(job.collectives):
            if c.workload:
                continue
            where = _where(job.source, "collectives", i, len(job.collectives))
            sizes, specs = sizes_specs(where, c.sizes, c.compressors, job.job.skip_unavailable,
                                       notes)
            try:
                cases = collectives.expand(c.schemes, [label for label, _ in specs], sizes,
                                           iterations=c.iterations, warmup=c.warmup,
                                           seed=job.job.seed)
            except ValueError as e:
                raise JobError(f"{where} schemes: {e}") from None
            out += [Expanded(cc, case_key({"kind": "collectives", **cc.params(),
                                           "check": c.check}), c.check) for cc in cases]
        return out

    def compile(self, job: Job, benches: Sequence[Any], *, nprocs: int, first: bool) -> float:
        from hpcq.bench import collectives

        return collectives.compile_for(benches, nprocs=nprocs)

    def run(self, comm: Any, bench: Any, state: dict[str, Any], *, check: bool
            ) -> Result | None:
        from hpcq.bench import collectives

        return collectives.run_case(comm, bench, check=check)

    def cost(self, bench: Any) -> float:
        from hpcq.bench import collectives

        return collectives.cost(bench)

    def table(self, rows: Sequence[dict[str, Any]], *, nprocs: int, threads: int) -> str:
        from hpcq.bench import collectives_table

        return collectives_table.format_table(rows, nprocs=nprocs)


# ---------------------------------------------------------------------------- workloads
@_register
class Workloads(CaseKind):
    """``[collectives]`` with ``workload``: a model's gradient, bucket by bucket."""

    name, order = "workload", 2

    def expand(self, job: Job, notes: list[str]) -> list[Expanded]:
        from hpcq.bench import workload

        out = []
        for i, c in enumerate(job.collectives):
            if not c.workload:
                continue
            where = _where(job.source, "collectives", i, len(job.collectives))
            try:
                cases, skipped = workload.expand(c, seed=job.job.seed,
                                                 skip_unavailable=job.job.skip_unavailable)
            except ValueError as e:
                raise JobError(f"{where} {e}") from None
            notes += [n for n in skipped if n not in notes]
            out += [Expanded(wc, case_key({**wc.params(), "check": c.check}), c.check)
                    for wc in cases]
        return out

    def compile(self, job: Job, benches: Sequence[Any], *, nprocs: int, first: bool) -> float:
        from hpcq.bench import workload

        return workload.compile_for(benches, nprocs=nprocs)

    def run(self, comm: Any, bench: Any, state: dict[str, Any], *, check: bool
            ) -> Result | None:
        from hpcq.bench import workload

        return workload.run_case(comm, bench, check=check)

    def cost(self, bench: Any) -> float:
        from hpcq.bench import workload

        return workload.cost(bench)

    def table(self, rows: Sequence[dict[str, Any]], *, nprocs: int, threads: int) -> str:
        from hpcq.bench import workload

        return workload.format_table(rows, nprocs=nprocs)


# ---------------------------------------------------------------------------- training
@_register
class Train(CaseKind):
    """``[train]``: training runs with their per-iteration traces (:mod:`hpcq.bench.train`)."""

    name, order = "train", 3

    def expand(self, job: Job, notes: list[str]) -> list[Expanded]:
        from hpcq.bench import train

        out = []
        for i, t in enumerate(job.train):
            where = _where(job.source, "train", i, len(job.train))
            try:
                cases = train.expand(t, job.job.seed, where)
            except ValueError as e:
                raise JobError(str(e)) from None
            out += [Expanded(tc, case_key(tc.params())) for tc in cases]
        return out

    def compile(self, job: Job, benches: Sequence[Any], *, nprocs: int, first: bool) -> float:
        from hpcq.bench import train

        seconds = train.compile_for(benches) if first else 0.0
        return seconds + train.warm(benches)

    def run(self, comm: Any, bench: Any, state: dict[str, Any], *, check: bool
            ) -> Result | None:
        from hpcq.bench import train

        return train.run_case(comm, bench)

    def cost(self, bench: Any) -> float:
        from hpcq.bench import train

        return train.cost(bench)

    def table(self, rows: Sequence[dict[str, Any]], *, nprocs: int, threads: int) -> str:
        from hpcq.bench import train

        return train.format_table(rows, nprocs=nprocs)

