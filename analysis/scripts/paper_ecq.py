"""ECQ-SGD (Wu, Huang, Huang, Zhang; papers.md section 4): loss and distance, like its Fig. 2.

::

    python analysis/scripts/paper_ecq.py runs/ecq.h5 -o figures/

``paper_ecq_iterations.png`` / ``.pdf``: one column per problem, the loss (top)
and the distance to the optimum ||x - x*|| (bottom) against iterations, for
32-bit SGD, QSGD, ECQ-SGD at each (alpha, beta) and EF-SGD (every method in the
files).  ``paper_ecq_bits.png`` / ``.pdf``: the distance against the cumulative
bits one rank sent (log-log).  With several seeds, the median and a min-max
band.  Prints a table per problem: final loss, final distance, bits per
iteration and the compression ratio against 32-bit floats, ``32 d / bits``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hpcq.analysis.training import (
    X_LABELS,
    Y_LABELS,
    ascii_name,
    display_name,
    draw,
    group_by,
    has_dist,
    legend_below,
    load_runs,
    mark_diverged,
    no_cases,
    problem_title,
    pyplot,
    save,
    styles,
)


def _order(name: str) -> tuple[int, str]:
    """32-bit first, then the plain quantizer, ECQ-SGD, EF-SGD, others."""
    for i, prefix in enumerate(("32-bit", "GD (32-bit)", "QSGD", "ECQ-SGD", "EF-SGD")):
        if name.startswith(prefix):
            return i, name
    return 9, name


def table(cases: Sequence[dict[str, Any]]) -> str:
    """Per problem and method: final loss and distance, bits per iteration, ratio vs 32-bit."""
    lines = []
    for (_,), group in group_by(cases, ["problem"]).items():
        d = int(group[0]["problem_info.d"])
        lines += [f"# {ascii_name(problem_title(group))}",
                  f"# {'method':<40}{'final loss':>12}{'final dist':>12}{'bits/iter':>11}"
                  f"{'ratio':>8}"]
        runs_by = group_by(group, ["_name"])
        for name in sorted((k[0] for k in runs_by), key=_order):
            runs = runs_by[(name,)]
            bits = float(np.median([c["bits_per_iteration"] for c in runs]))
            ratio = f"{32 * d / bits:>8.2f}" if bits > 0 else f"{'-':>8}"
            lines.append(f"  {ascii_name(name):<40}"
                         f"{np.median([float(c['final_loss']) for c in runs]):>12.5g}"
                         f"{np.median([float(c['final_dist']) for c in runs]):>12.4g}"
                         f"{bits:>11.5g}{ratio}")
        lines.append("")
    return "\n".join(lines).rstrip()


def _lines(ax: Any, group: Sequence[dict[str, Any]], x: str, y: str,
           st: dict[str, dict[str, Any]]) -> None:
    runs_by = {k[0]: v for k, v in group_by(group, ["_name"]).items()}
    for name in sorted(runs_by, key=_order):
        draw(ax, runs_by[name], x, y, name, log_x=x == "bits", **st[name])
    mark_diverged(ax, runs_by, y)
    ax.set_xlabel(X_LABELS[x] + (" (log)" if x == "bits" else ""))
    ax.set_ylabel(Y_LABELS[y])
    ax.grid(True, which="both", alpha=0.25)


def main(argv: list[str] | None = None) -> int:
    """Draw the figures and print the table; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="result files, globs or directories")
    ap.add_argument("-o", "--output", required=True, help="directory for the figures")
    args = ap.parse_args(argv)

    problems: list[str] = []
    cases = [dict(c, _name=display_name(c)) for c in load_runs(args.files, problems=problems)]
    if not cases:
        return no_cases("paper_ecq", args.files, "train cases", problems)
    for line in problems:
        print(f"skipped: {line}")
    print(table(cases) + "\n")

    plt = pyplot()
    out = Path(args.output)
    probs = group_by(cases, ["problem"])
    st = styles({c["_name"] for c in cases})
    n = len(probs)
    fig, axes = plt.subplots(2, n, figsize=(4.6 * n, 7.2), squeeze=False)
    for j, group in enumerate(probs.values()):
        axes[0][j].set_title(problem_title(group, "\n"), fontsize="small")
        _lines(axes[0][j], group, "iteration", "loss", st)
        if any(has_dist(c) for c in group):
            _lines(axes[1][j], [c for c in group if has_dist(c)], "iteration", "dist", st)
        else:
            axes[1][j].text(0.5, 0.5, "x* unknown", ha="center", transform=axes[1][j].transAxes)
    fig.suptitle("ECQ-SGD versus QSGD, EF-SGD and 32-bit SGD: loss and distance to optimum")
    fig.tight_layout()
    legend_below(fig, axes.flat, ncol=3)
    save(fig, out, "paper_ecq_iterations")

    with_dist = {k: [c for c in g if has_dist(c)] for k, g in probs.items()}
    with_dist = {k: g for k, g in with_dist.items() if g}
    if with_dist:
        fig, axes = plt.subplots(1, len(with_dist), figsize=(4.6 * len(with_dist), 3.9),
                                 squeeze=False)
        for ax, group in zip(axes[0], with_dist.values(), strict=True):
            ax.set_title(problem_title(group, "\n"), fontsize="small")
            _lines(ax, group, "bits", "dist", st)
        fig.suptitle("Distance to optimum versus communicated bits")
        fig.tight_layout()
        legend_below(fig, axes.flat, ncol=3)
        save(fig, out, "paper_ecq_bits")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
