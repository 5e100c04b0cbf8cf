"""DQ-GD (Lin, Kostina, Hassibi; papers.md section 1): the empirical linear rate versus R.

::

    python analysis/scripts/paper_dqgd.py runs/dqgd.h5 -o figures/

Writes ``paper_dqgd_rate.png`` / ``.pdf``: one panel per problem, the empirical rate
``(||x_T - x*|| / ||x_0 - x*||)^(1/T)`` against R (bits per coordinate and
iteration) of every method with a ``bits`` parameter (DQ-GD with a predetermined
range, DQ-GD with the range sent, naive quantized GD ...), the unquantized
methods (GD over fp32) as horizontal lines, and the theory from the cases'
sigma and rho_n: the rate function ``max(sigma, 2^-R)`` (the lower bound), the
cube quantizer's ``max(sigma, rho_n 2^-R)`` (DQ-GD) and ``sigma + rho_n 2^-R``
(naive), with the no-loss threshold ``R = log2(rho_n / sigma)``.  With several
seeds: the mean over seeds and a min-max band (the theory lines: their mean).
Rates are drawn in [0, 1.2] (``--ymin`` raises the bottom); a point above (or a
run that diverged) sits on the top edge as an open triangle.  Prints a table per
problem: the rates (mean over seeds) and the bounds the runs recorded (``info.lower_bound``,
``info.rate_bound``, ``info.naive_bound``: they use the quantizer's exact error
factor a and the step, ``sigma + eta L a`` for naive) and the steps in which the
quantizer clipped (most over seeds).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hpcq.analysis.training import (
    YMAX,
    ascii_name,
    bits_of,
    constants,
    empirical_rate,
    group_by,
    load_runs,
    no_cases,
    parse_spec,
    problem_title,
    pyplot,
    rate_figure,
    references,
    save,
    sweeps,
    theory,
)
from hpcq.analysis.training import rate_name as _name

__all__ = ["YMAX", "constants", "main", "rate_table", "references", "sweeps", "theory"]


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if not math.isfinite(v):
        return "inf" if v > 0 else "nan"
    return f"{v:.4f}" if abs(v) < 100 else f"{v:.3g}"


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if len(values) else None


def rate_table(cases: Sequence[dict[str, Any]]) -> str:
    """The text table of one problem's cases (see the module docstring)."""
    sw, refs = sweeps(cases), references(cases)
    sig, rho = constants(cases)
    lines = [f"# {ascii_name(problem_title(cases))}"]
    if sig.size:
        thr = np.log2(rho / sig).mean()
        lines.append(f"# sigma = {sig.mean():.4f}, rho_n = {rho.mean():.4g}, no-loss threshold "
                     f"R >= log2(rho_n/sigma) = {thr:.2f}" + (" (means over seeds)"
                                                              if sig.size > 1 else ""))
    for name, rates in refs.items():
        lines.append(f"# {ascii_name(name)}: rate {_fmt(_mean(rates))}"
                     + (f" (min {_fmt(min(rates))}, max {_fmt(max(rates))})"
                        if len(rates) > 1 else ""))
    at: dict[float, list[dict[str, Any]]] = {}
    for c in cases:
        if bits_of(c) is not None:
            at.setdefault(float(bits_of(c)), []).append(c)  # type: ignore[arg-type]
    clip_names = [n for n in sw if any("info.clipped_steps" in c for c in cases
                                       if _name(c) == n)]
    heads = (["R"] + [ascii_name(n) for n in sw] + ["lower", "DQ bound", "naive bound"]
             + [f"clip {ascii_name(n)}" for n in clip_names])
    widths = [max(len(h), 7) for h in heads]
    lines.append("#" + "  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True))[1:])
    for r in sorted(at):
        here = at[r]
        dq = [c for c in here if parse_spec(str(c.get("method", "")))[0] == "dqgd"
              and parse_spec(str(c["method"]))[1].get("range", "predetermined") != "sent"]
        cells = [f"{r:g}"] + [_fmt(_mean(sw[n].get(r, []))) for n in sw]
        cells += [_fmt(_mean([c["info.lower_bound"] for c in here if "info.lower_bound" in c])),
                  _fmt(_mean([c["info.rate_bound"] for c in dq if "info.rate_bound" in c])),
                  _fmt(_mean([c["info.naive_bound"] for c in here if "info.naive_bound" in c]))]
        for n in clip_names:
            clips = [int(c["info.clipped_steps"]) for c in here
                     if _name(c) == n and "info.clipped_steps" in c]
            cells.append(str(max(clips)) if clips else "-")
        lines.append("  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Draw the figure and print the tables; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="result files, globs or directories")
    ap.add_argument("-o", "--output", required=True, help="directory for the figures")
    ap.add_argument("--ymin", type=float, default=0.0,
                    help=f"bottom of the rate axis (default 0; the top is {YMAX:g})")
    args = ap.parse_args(argv)

    problems: list[str] = []
    cases = load_runs(args.files, problems=problems)
    by_problem = {k[0]: v for k, v in group_by(cases, ["problem"]).items()
                  if any(bits_of(c) is not None and empirical_rate(c) is not None for c in v)}
    if not by_problem:
        return no_cases("paper_dqgd", args.files, "train cases of a method with bits "
                        "(dqgd, naive-qgd ...) and a known x*", problems)
    for line in problems:
        print(f"skipped: {line}")
    for group in by_problem.values():
        print(rate_table(group) + "\n")

    fig = rate_figure(pyplot(), list(by_problem.values()),
                      "DQ-GD: empirical linear rate versus bits per coordinate", args.ymin)
    save(fig, Path(args.output), "paper_dqgd_rate")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
