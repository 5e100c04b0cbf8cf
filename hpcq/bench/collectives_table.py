"""``hpcq bench collectives``: the OSU-like table of :mod:`hpcq.bench.collectives` and its command.

:func:`format_table` prints the rows of :func:`hpcq.bench.collectives.run_case` a
block per size; :func:`main` runs the cases of the command line on
``MPI.COMM_WORLD`` (validated on rank 0, compiled there first, each case written
to the result file as it completes) and fails with exit code 1 when ``--check``
finds an error above its guarantee.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from hpcq.bench import BENCHES, Bench, Progress, resolve_compressors
from hpcq.bench.collectives import (
    _FP32,
    DEFAULT_SCHEMES,
    DEFAULT_SIZES,
    DEFAULT_SPECS,
    Case,
    compile_for,
    cost,
    expand,
    run_case,
)
from hpcq.bench.kernels import parse_sizes
from hpcq.collectives import SCHEMES

# ------------------------------------------------------------------ table
LEGEND = (
    "# p50/p99: percentiles over calls of the slowest rank's time (the time to complete "
    "the collective),\n# max: over ranks and calls, all in us; enc/comm/dec: median over "
    "calls of the slowest rank's split;\n# busbw: 4d/p50 * 2(p-1)/p GB/s (nccl-tests "
    "allreduce convention); x fp32: p50 / p50 of allreduce-fp32;\n# NMSE vs the exact "
    "float64 mean, bound: its guarantee (- none); ovh%: harness overhead / p50"
)


def _us(seconds: float, width: int) -> str:
    """Microseconds in ``width`` columns: one decimal below 10^4 us, none above."""
    us = 1e6 * seconds
    return f"{us:>{width}.1f}" if us < 1e4 else f"{us:>{width}.0f}"


def format_table(rows: Sequence[dict[str, Any]], *, nprocs: int) -> str:
    """The rows of :func:`run_case` as OSU-like aligned text (120 columns): a block per size."""
    fp32 = {r["d"]: r["latency_p50_s"] for r in rows if r["scheme"] == _FP32}
    name = 28
    head = (
        f"{'# scheme compressor':<{name}}{'bits/c':>6}{'p50':>8}{'p99':>8}{'max':>8}{'enc':>8}"
        f"{'comm':>8}{'dec':>8}{'busbw':>7}{'x fp32':>7}{'NMSE':>9}{'bound':>9}{'ovh%':>6}"
    )
    lines = [f"# hpcq bench collectives: mean of d float32 over {nprocs} rank(s)", LEGEND]
    for d in sorted({r["d"] for r in rows}):
        block = [r for r in rows if r["d"] == d]
        lines += [
            "",
            f"# d = {d} ({4 * d} bytes fp32), {block[0]['iterations']} timed calls "
            f"(+{block[0]['warmup']} warm-up)",
            head,
        ]
        for r in block:
            ref = fp32.get(d)
            x = f"{r['latency_p50_s'] / ref:7.2f}" if ref else f"{'-':>7}"
            bound = f"{r['nmse_bound']:9.1e}" if r["nmse_bound"] is not None else f"{'-':>9}"
            flag = "" if r["consistent"] else "  INCONSISTENT"
            flag += "  CHECK FAILED" if r["check"] == "fail" else ""
            label = r["label"]
            if len(label) >= name:  # a long spec gets its own line rather than being cut
                lines.append(label)
                label = ""
            times = "".join(
                _us(r[k], 8)
                for k in (
                    "latency_p50_s",
                    "latency_p99_s",
                    "latency_max_s",
                    "encode_median_s",
                    "comm_median_s",
                    "decode_median_s",
                )
            )
            lines.append(
                f"{label:<{name}}{r['bits_per_coordinate']:>6.3g}{times}"
                f"{r['busbw_gbs']:>7.2f}{x}{r['nmse']:>9.1e}{bound}{r['overhead_pct']:>6.1f}"
                f"{flag}"
            )
    return "\n".join(lines)


# ------------------------------------------------------------------ command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``hpcq bench collectives``."""
    p.add_argument(
        "--sizes",
        default=DEFAULT_SIZES,
        help=f"log2 vector lengths, LO:HI[:STEP] inclusive or a comma list "
        f"(default {DEFAULT_SIZES}; up to 30, e.g. 10:26)",
    )
    p.add_argument(
        "--compressors",
        nargs="+",
        metavar="SPEC",
        help=f"compressor specs (default: {' '.join(DEFAULT_SPECS)})",
    )
    p.add_argument(
        "--schemes",
        nargs="+",
        metavar="NAME",
        help=f"schemes: {', '.join(SCHEMES.names())} (default: {' '.join(DEFAULT_SCHEMES)})",
    )
    p.add_argument(
        "--iterations",
        type=int,
        default=100,
        help="timed calls per case; fewer above d=2^20 (default 100)",
    )
    p.add_argument("--warmup", type=int, default=10, help="untimed calls first (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the input vectors and codecs")
    p.add_argument(
        "--check",
        action="store_true",
        help="fail (exit 1) if a case's NMSE exceeds its guarantee or ranks disagree",
    )
    p.add_argument("-o", "--output", metavar="FILE.h5", help="write the results to this file")
    p.add_argument("--append", action="store_true", help="add to an existing output file")


def main(args: argparse.Namespace) -> int:
    """Entry point of ``hpcq bench collectives`` (on ``MPI.COMM_WORLD``)."""
    from mpi4py import MPI

    from hpcq import provenance
    from hpcq.affinity import bind_local_ranks
    from hpcq.collectives import idle_barrier
    from hpcq.netem import check_link
    from hpcq.runner import CheckFailed, JobError
    from hpcq.store import case_key

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    binding = bind_local_ranks(comm)  # before any kernel starts a thread
    prov = (
        provenance.collect(comm, command_line=getattr(args, "command_line", None))
        if args.output
        else None
    )
    link = check_link(comm)  # an emulated link (hpcq netem): verified, recorded
    if prov is not None:
        prov["cpu_binding"] = binding
        prov.update(link)
    store = None

    def prepare() -> tuple[list[Case], list[str]]:
        nonlocal store
        specs = args.compressors or DEFAULT_SPECS
        _, notes = resolve_compressors(specs, skip_unavailable=args.compressors is None)
        cases = expand(
            args.schemes or DEFAULT_SCHEMES,
            specs,
            parse_sizes(args.sizes),
            iterations=args.iterations,
            warmup=args.warmup,
            seed=args.seed,
            skip_unavailable=args.compressors is None,
        )
        if args.output:
            from hpcq.store import ResultFile

            store = ResultFile(args.output, prov or {}, append=args.append)
        return cases, notes

    result: Any = None
    if rank == 0:
        try:
            result = (prepare(), None)
        except (ValueError, OSError) as e:
            result = (None, " ".join(str(e).split()))
    value, err = comm.bcast(result, root=0)
    if err is not None:
        raise JobError(err)
    cases, notes = value
    if rank == 0:
        for note in notes:
            print(f"hpcq: note: {note}", file=sys.stderr)
        print(f"hpcq: {comm.Get_size()} rank(s), cpu binding: {binding}", file=sys.stderr)
        seconds = compile_for(cases, nprocs=comm.Get_size())
        print(f"hpcq: kernels ready in {seconds:.1f} s", file=sys.stderr, flush=True)
    idle_barrier(comm)  # the others sleep while rank 0 compiles, then load from the cache
    if rank != 0:
        compile_for(cases, nprocs=comm.Get_size())
    progress = Progress(len(cases), weights=[cost(c) for c in cases]) if rank == 0 else None
    rows, failed = [], []
    for case in cases:
        out = run_case(comm, case, check=args.check)
        if out is not None:  # rank 0
            attrs, data, row = out
            rows.append(row)
            if store is not None:
                key = case_key({"kind": "collectives", **case.params(), "check": args.check})
                store.write_case("collectives", case.label, attrs, data, key=key)
            if attrs["check"] == "fail":
                failed.append(case.label)
            if progress is not None:
                progress(case.label)
        if args.output:  # every rank: the others sleep while rank 0 writes, not spin
            idle_barrier(comm)
    if rank == 0:
        print(format_table(rows, nprocs=comm.Get_size()), flush=True)
        if store is not None:
            store.close()
            print(f"# results written to {args.output}", flush=True)
    failed = comm.bcast(failed, root=0)
    if failed:
        where = f"; the results are in {args.output}" if args.output else ""
        raise CheckFailed(
            f"check failed (NMSE above its guarantee, or ranks disagree) for: "
            f"{'; '.join(failed)}{where}"
        )
    return 0


BENCHES.register("collectives")(
    Bench("compressed means over MPI ranks (OSU-style)", add_arguments, main)
)
