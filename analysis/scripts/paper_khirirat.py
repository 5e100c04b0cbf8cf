"""Compressed and stale GD (Khirirat, Feyzmahdavian, Johansson; papers.md section 3).

::

    python analysis/scripts/paper_khirirat.py runs/khirirat.h5 -o figures/

``paper_khirirat.png`` / ``.pdf``: one row per problem, f(x) - f* (the loss when
f* is unknown; log scale) against iterations (left) and against the cumulative
bits one rank sent (right, log-log).  One colour per compressor (per method
when the method is not plain GD), one line style per staleness tau (0 solid,
1 dashed, 2 dash-dot, 4 dotted); with several seeds, the median and a min-max
band.  Prints a table per problem: step size, final gap, bits per iteration and
the bits to reach 1e-3 of the starting gap.
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
    curve,
    display_name,
    draw,
    gap_or_loss,
    group_by,
    legend_below,
    load_runs,
    mark_diverged,
    no_cases,
    problem_title,
    pyplot,
    save,
    styles,
    tau_style,
)

REACH = 1e-3  # the table's target: this fraction of the starting gap (or loss)


def _name(case: dict[str, Any]) -> str:
    return display_name(case)


def bits_to_reach(case: dict[str, Any], y: str, fraction: float = REACH) -> float | None:
    """Cumulative bits at the first logged point with y <= fraction * y_0; None if never."""
    xs, ys = curve(case, "bits", y)
    if not ys.size or not ys[0] > 0:
        return None
    hit = np.nonzero(ys <= fraction * ys[0])[0]
    return float(xs[hit[0]]) if hit.size else None


def table(cases: Sequence[dict[str, Any]]) -> str:
    """Per problem and (compressor, tau): step, final gap, bits per iteration, bits to 1e-3."""
    lines = []
    for (_,), group in group_by(cases, ["problem"]).items():
        y = gap_or_loss(group)
        lines += [f"# {ascii_name(problem_title(group))}",
                  f"# {'compressor':<28}{'tau':>4}{'step':>11}{'final ' + y:>13}"
                  f"{'bits/iter':>11}{f'bits to {REACH:g}x':>15}"]
        for (name, tau), runs in group_by(group, ["_name", "staleness"]).items():
            final = np.median([float(c["final_gap"] if y == "gap" else c["final_loss"])
                               for c in runs])
            reach = [bits_to_reach(c, y) for c in runs]
            got = [r for r in reach if r is not None]
            to = f"{np.median(got):>15.6g}" if len(got) == len(reach) else f"{'never':>15}"
            lines.append(f"  {ascii_name(name):<28}{int(tau or 0):>4}"
                         f"{float(runs[0].get('step_size', np.nan)):>11.4g}{final:>13.4g}"
                         f"{float(np.median([c['bits_per_iteration'] for c in runs])):>11.5g}"
                         f"{to}")
        lines.append("")
    return "\n".join(lines).rstrip()


def main(argv: list[str] | None = None) -> int:
    """Draw the figure and print the table; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="result files, globs or directories")
    ap.add_argument("-o", "--output", required=True, help="directory for the figures")
    args = ap.parse_args(argv)

    problems: list[str] = []
    cases = [dict(c, _name=_name(c), staleness=int(c.get("staleness") or 0))
             for c in load_runs(args.files, problems=problems)]
    if not cases:
        return no_cases("paper_khirirat", args.files, "train cases", problems)
    for line in problems:
        print(f"skipped: {line}")
    print(table(cases) + "\n")

    plt = pyplot()
    probs = group_by(cases, ["problem"])
    st = styles({c["_name"] for c in cases})
    taus = sorted({c["staleness"] for c in cases})
    fig, axes = plt.subplots(len(probs), 2, figsize=(11, 3.9 * len(probs)), squeeze=False)
    for row, group in zip(axes, probs.values(), strict=True):
        y = gap_or_loss(group)
        for ax, x in zip(row, ("iteration", "bits"), strict=True):
            runs_by = group_by(group, ["_name", "staleness"])
            for (name, tau), runs in runs_by.items():
                draw(ax, runs, x, y, None, log_x=x == "bits", color=st[name]["color"],
                     marker=st[name]["marker"], linestyle=tau_style(tau, taus))
            mark_diverged(ax, {f"{n} τ={t}": r for (n, t), r in runs_by.items()}, y)
            ax.set_xlabel(X_LABELS[x] + (" (log)" if x == "bits" else ""))
            ax.set_ylabel(Y_LABELS[y])
            ax.grid(True, which="both", alpha=0.25)
            ax.set_title(problem_title(group, "\n"), fontsize="small")
    extra: dict[str, Any] = {name: plt.Line2D([], [], color=s["color"], marker=s["marker"])
                             for name, s in st.items()}
    if len(taus) > 1 or taus != [0]:
        extra.update({f"τ = {t}": plt.Line2D([], [], color="0.2", linestyle=tau_style(t, taus))
                      for t in taus})
    fig.suptitle("Compressed GD with stale gradients: suboptimality versus iterations and bits")
    fig.tight_layout()
    legend_below(fig, [], extra, ncol=4)
    save(fig, Path(args.output), "paper_khirirat")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
