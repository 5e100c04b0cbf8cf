"""``hpcq bench collectives``: the OSU-like table of :mod:`hpcq.bench.collectives` and its command.

:func:`format_table` prints the rows of :func:`hpcq.bench.collectives.run_case` a
block per size; :func:`to_job` turns the command line into a one-table job, which the
runner (:func:`hpcq.runner.run_job`) runs like any job: validated on rank 0, compiled
there first, each case written as it completes (with ``-o``), exit code 1 when
``--check`` finds an error above its guarantee.  ``--workload`` measures a model's
gradient bucket by bucket instead (:mod:`hpcq.bench.workload`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from hpcq.bench import BENCHES, Bench
from hpcq.bench.collectives import (
    _FP32,
    DEFAULT_SCHEMES,
    DEFAULT_SIZES,
    DEFAULT_SPECS,
)
from hpcq.collectives import SCHEMES

# ------------------------------------------------------------------ table
LEGEND = (
    "# p50/p99: percentiles over calls of the slowest rank's time (the time to complete "
    "the collective),\n# max: over ranks and calls, all in us; enc/comm/dec: median over "
    "calls of the slowest rank's split;\n# busbw: 4d/p50 * 2(p-1)/p GB/s (nccl-tests "
    "allreduce convention); x fp32: p50 / p50 of allreduce-fp32\n# (timed as frameworks "
    "run it: the sum, its 1/p folded into the step; checked calls return the mean);\n# "
    "NMSE vs the exact "
    "float64 mean, bound: its guarantee (- none); ovh%: harness overhead / p50;\n# node-aware "
    "schemes: a second line with the slowest node leader's intra-node / inter-node medians"
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
            nmse = f"{r['nmse']:9.1e}" if r["nmse"] is not None else f"{'-':>9}"
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
                f"{r['busbw_gbs']:>7.2f}{x}{nmse}{bound}{r['overhead_pct']:>6.1f}"
                f"{flag}"
            )
            if r.get("intra_median_s") is not None:
                lines.append(
                    f"{'':<4}intra-node {1e6 * r['intra_median_s']:.1f} us, inter-node "
                    f"{1e6 * r['inter_median_s']:.1f} us ({r['leaders']} nodes of "
                    f"{r['ranks_per_node']:.3g} ranks)"
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
    w = p.add_argument_group("model workloads (instead of --sizes; hpcq workloads lists them)")
    w.add_argument("--workload", metavar="NAME",
                   help="move a model's gradient bucket by bucket (resnet50, bert-base, gpt2, "
                        "llama-7b, tiny, file:PATH)")
    w.add_argument("--buckets", default="ddp", metavar="RULE",
                   help="bucket rule: ddp[:first=MiB,cap=MiB] (default), fused[:mib=N], single")
    w.add_argument("--min-size", type=int, default=4096, metavar="N",
                   help="tensors with fewer elements go uncompressed (default 4096)")
    w.add_argument("--overrides", nargs="+", metavar="PATTERN=SPEC",
                   help="a codec per tensor-name pattern, or none: '*.bias=none'")
    w.add_argument("--gradients", default="normal", metavar="SOURCE",
                   help="normal (default), laplace, student-t[:df=3], lognormal[:sigma=1], "
                        "file:PATH")
    p.add_argument("-o", "--output", metavar="FILE.h5", help="write the results to this file")
    p.add_argument("--append", action="store_true", help="add to an existing output file")


def to_job(args: argparse.Namespace) -> Any:
    """``hpcq bench collectives`` as a one-table job (``[collectives]``) for the runner."""
    from hpcq.config import job_from_tables

    table: dict[str, Any] = {
        "compressors": list(args.compressors or DEFAULT_SPECS),
        "schemes": list(args.schemes or DEFAULT_SCHEMES), "sizes": args.sizes,
        "iterations": args.iterations, "warmup": args.warmup, "check": args.check}
    if args.workload:
        table.update(workload=args.workload, buckets=args.buckets, min_size=args.min_size,
                     overrides=list(args.overrides or ()), gradients=args.gradients)
    return job_from_tables("hpcq bench collectives", {
        "job": {"name": "bench-collectives", "seed": args.seed,
                "skip_unavailable": args.compressors is None},
        "collectives": table})


BENCHES.register("collectives")(
    Bench("compressed means over MPI ranks (OSU-style), or a model's gradient in buckets",
          add_arguments, to_job)
)
