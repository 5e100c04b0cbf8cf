"""Bits on the wire against error and time: one figure from hpcq result files.

A starting point to copy and edit for your own figure::

    python analysis/scripts/tradeoff.py runs/*.h5 -o tradeoff.pdf --d 1048576 --nprocs 4

Left: NMSE of the mean against bits per coordinate (the accuracy-bandwidth frontier).
Right: p50 latency of the slowest rank against bits per coordinate, per scheme.  Each
point is the median over repeated runs of one case, with min-max bars.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hpcq.analysis.load import load, summarize


def main(argv: list[str] | None = None) -> int:
    """Draw the figure; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="result files, globs or directories")
    ap.add_argument("-o", "--output", required=True, help="figure file (.pdf, .png, .svg)")
    ap.add_argument("--d", type=int, help="vector length (default: the largest in the files)")
    ap.add_argument("--nprocs", type=int, help="rank count (default: the largest)")
    args = ap.parse_args(argv)

    table, problems = load(args.files, kind="collectives")
    for line in problems:
        print(f"skipped: {line}")
    if not len(table):
        raise SystemExit("no collectives cases in the given files")
    d = args.d or int(table["d"].max())
    nprocs = args.nprocs or int(table["nprocs"].max())
    table = table.where(d=d, nprocs=nprocs)
    if not len(table):
        raise SystemExit(f"no case with d={d} on {nprocs} ranks")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for value, ax, scale, label in (("nmse", left, 1.0, "NMSE of the mean"),
                                    ("latency_p50_s", right, 1e6, "latency p50 (us)")):
        stats = summarize(table, ["scheme", "spec", "bits_per_coordinate"], value)
        for scheme in sorted(set(stats["scheme"])):
            rows = stats.where(scheme=scheme)
            med = rows[f"{value}.median"] * scale
            err = [med - rows[f"{value}.min"] * scale, rows[f"{value}.max"] * scale - med]
            ax.errorbar(rows["bits_per_coordinate"], med, yerr=err, fmt="o", capsize=3,
                        label=scheme)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("bits per coordinate on the wire")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    right.legend(fontsize="small")
    fig.suptitle(f"d = {d}, {nprocs} ranks")
    fig.tight_layout()
    fig.savefig(args.output)
    print(f"wrote {Path(args.output).resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
