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
    ascii_name,
    bits_of,
    display_name,
    empirical_rate,
    group_by,
    legend_below,
    load_runs,
    no_cases,
    parse_spec,
    problem_title,
    pyplot,
    save,
    styles,
)

YMAX = 1.2
_SIGMA_FROM = ("dqgd", "naive-qgd")  # methods whose info.sigma is plain GD's contraction


def _name(case: dict[str, Any]) -> str:
    return display_name(case, bits=False)


def sweeps(cases: Sequence[dict[str, Any]]) -> dict[str, dict[float, list[float]]]:
    """Method name -> R -> rates over seeds (inf: diverged), for the methods with bits."""
    out: dict[str, dict[float, list[float]]] = {}
    for c in cases:
        r, rate = bits_of(c), empirical_rate(c)
        if r is not None and rate is not None:
            out.setdefault(_name(c), {}).setdefault(r, []).append(rate)
    return {k: dict(sorted(v.items())) for k, v in out.items()}


def references(cases: Sequence[dict[str, Any]]) -> dict[str, list[float]]:
    """Method name -> rates over seeds, for the methods without bits (unquantized)."""
    out: dict[str, list[float]] = {}
    for c in cases:
        rate = empirical_rate(c)
        if bits_of(c) is None and rate is not None:
            out.setdefault(_name(c), []).append(rate)
    return out


def constants(cases: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(sigma, rho_n) per seed: from DQ-GD / naive QGD's info, else from kappa and d."""
    per: dict[Any, tuple[float, float]] = {}
    for c in cases:
        if parse_spec(str(c.get("method", "")))[0] in _SIGMA_FROM and "info.sigma" in c:
            per[c.get("seed")] = (float(c["info.sigma"]),
                                  float(c.get("info.rho_n") or math.sqrt(c["problem_info.d"])))
    for c in cases:
        kappa = c.get("problem_info.kappa")
        if c.get("seed") not in per and kappa is not None:
            per[c.get("seed")] = ((kappa - 1) / (kappa + 1),
                                  math.sqrt(float(c.get("problem_info.d", 1))))
    if not per:
        return np.array([]), np.array([])
    sig, rho = zip(*per.values(), strict=True)
    return np.array(sig), np.array(rho)


def theory(cases: Sequence[dict[str, Any]], r: np.ndarray) -> dict[str, np.ndarray]:
    """The three theory curves at R values ``r`` (mean over seeds); {} without sigma."""
    sig, rho = constants(cases)
    if not sig.size:
        return {}
    s, p, rr = sig[:, None], rho[:, None], np.asarray(r, dtype=np.float64)[None, :]
    return {"lower": np.maximum(s, 2.0 ** -rr).mean(0),
            "dq": np.maximum(s, p * 2.0 ** -rr).mean(0),
            "naive": (s + p * 2.0 ** -rr).mean(0)}


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


def _panel(ax: Any, cases: Sequence[dict[str, Any]], st: dict[str, dict[str, Any]],
           ymin: float = 0.0) -> None:
    sw, refs = sweeps(cases), references(cases)
    rs = sorted({r for v in sw.values() for r in v})
    grid = np.linspace(min([0.0, *rs]), max([*rs, 1.0]), 400)
    th = theory(cases, grid)
    if th:
        ax.plot(grid, th["lower"], ":", color="black", lw=1.4,
                label=r"lower bound $\max(\sigma, 2^{-R})$")
        ax.plot(grid, th["dq"], "--", color="#0072B2", lw=1.2, alpha=0.7,
                label=r"cube DQ-GD $\max(\sigma, \rho_n 2^{-R})$")
        ax.plot(grid, th["naive"], "-.", color="#D55E00", lw=1.2, alpha=0.7,
                label=r"naive $\sigma + \rho_n 2^{-R}$")
        sig, rho = constants(cases)
        thr = float(np.log2(rho / sig).mean())
        if grid[0] <= thr <= grid[-1]:
            ax.axvline(thr, color="0.6", lw=0.8, ls=(0, (1, 2)),
                       label=r"threshold $\log_2(\rho_n/\sigma)$")
    for name, rates in refs.items():
        mean = min(float(np.mean(rates)), YMAX)
        ax.axhline(mean, color=st[name]["color"], lw=1.6, label=f"{name} (unquantized)")
        if len(rates) > 1:
            ax.axhspan(min(min(rates), YMAX), min(max(rates), YMAX), color=st[name]["color"],
                       alpha=0.12, lw=0)
    for name, by_r in sw.items():
        r = np.array(list(by_r))
        vals = [np.asarray(v, dtype=np.float64) for v in by_r.values()]
        mean = np.array([v.mean() for v in vals])
        s = st[name]
        ax.plot(r, np.minimum(mean, YMAX), color=s["color"], marker=s["marker"], ms=4, lw=1.5,
                label=name)
        if max(len(v) for v in vals) > 1:
            ax.fill_between(r, np.minimum([v.min() for v in vals], YMAX),
                            np.minimum([v.max() for v in vals], YMAX), color=s["color"],
                            alpha=0.18, lw=0)
        off = ~(mean <= YMAX)
        if off.any():
            ax.plot(r[off], np.full(off.sum(), YMAX), linestyle="none", marker="^", ms=7,
                    mfc="white", mec=s["color"], mew=1.4, clip_on=False, zorder=5)
    ax.set_ylim(ymin, YMAX)
    ax.set_xlim(grid[0], grid[-1])
    ax.set_xlabel("R (bits per coordinate per iteration)")
    ax.set_ylabel(r"empirical rate $(\|x_T - x^*\| / \|x_0 - x^*\|)^{1/T}$")
    ax.grid(True, alpha=0.3)
    ax.set_title(problem_title(cases, "\n"), fontsize="small")


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

    plt = pyplot()
    st = styles({_name(c) for g in by_problem.values() for c in g
                 if empirical_rate(c) is not None})
    n = len(by_problem)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.9 * nrows), squeeze=False)
    for ax, group in zip(axes.flat, by_problem.values(), strict=False):
        _panel(ax, group, st, args.ymin)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    off = plt.Line2D([], [], linestyle="none", marker="^", mfc="white", mec="0.3", ms=7)
    fig.suptitle("DQ-GD: empirical linear rate versus bits per coordinate")
    fig.tight_layout()
    legend_below(fig, axes.flat[:n], {f"rate > {YMAX:g} or diverged (on the edge)": off})
    save(fig, Path(args.output), "paper_dqgd_rate")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
