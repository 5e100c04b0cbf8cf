"""vqSGD (Gandikota et al.; papers.md section 2): error versus bits, and training.

::

    python analysis/scripts/paper_vqsgd.py runs/vqsgd.h5 -o figures/

``paper_vqsgd_nmse.png`` / ``.pdf`` (from ``collectives`` cases): the NMSE of the
mean over ranks against the message's bits per coordinate (the wire bytes less
hpcq's message header for allgather; log-log), one panel per (d, ranks): vqSGD's
cross-polytope, simplex and Hadamard point sets joined over their repetition
counts s, QSGD, sign and TernGrad as points; hollow markers on dashed lines are
each codec's guarantee for the mean (the case's ``nmse_bound``; without it
omega / p with omega = (d - 1) / s for cross and Hadamard and (d^2 - 1) / s for
the simplex).  ``paper_vqsgd_train.png`` / ``.pdf`` (from ``train`` cases): per
problem, the loss (f - f* when f* is known) against iterations and against the
cumulative bits one rank sent.  Prints both as tables.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hpcq.analysis.training import (
    X_LABELS,
    Y_LABELS,
    ascii_name,
    compressor_name,
    display_name,
    draw,
    gap_or_loss,
    group_by,
    legend_below,
    load_runs,
    mark_diverged,
    no_cases,
    parse_spec,
    problem_title,
    pyplot,
    save,
    styles,
)


def message_bits(case: dict[str, Any]) -> float:
    """Bits per coordinate of one rank's message (allgather: hpcq's header left out)."""
    d = float(case["d"])
    header = case.get("compressor.header_bytes")
    if case.get("scheme") == "allgather" and header is not None and "wire_bytes_per_rank" in case:
        return 8.0 * (float(case["wire_bytes_per_rank"]) - float(header)) / d
    return float(case["bits_per_coordinate"])


def theory_bound(case: dict[str, Any]) -> float | None:
    """The mean's NMSE guarantee: ``nmse_bound``, else vqSGD's omega / p; None for others."""
    if case.get("nmse_bound") is not None:
        return float(case["nmse_bound"])
    name, p = parse_spec(str(case.get("spec", "")))
    if name != "vqsgd":
        return None
    d, s = float(case["d"]), float(p.get("reps", 1))
    omega = (d * d - 1) / s if p.get("points") == "simplex" else (d - 1) / s
    return omega / max(int(case.get("nprocs", 1)), 1)


def _family(spec: str) -> str:
    name, p = parse_spec(spec)
    return f"vqSGD {p.get('points', 'cross')}" if name == "vqsgd" else compressor_name(spec)


def nmse_rows(cases: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (d, nprocs, scheme, spec): medians over repeated runs."""
    rows = []
    for (d, p, scheme, spec), group in group_by(cases, ["d", "nprocs", "scheme", "spec"]).items():
        bounds = [b for b in map(theory_bound, group) if b is not None]
        rows.append({"d": d, "nprocs": p, "scheme": scheme, "spec": spec,
                     "name": compressor_name(spec), "family": _family(spec),
                     "reps": int(parse_spec(spec)[1].get("reps", 0) or 0),
                     "wire_bits": float(np.median([c["bits_per_coordinate"] for c in group])),
                     "bits": float(np.median([message_bits(c) for c in group])),
                     "nmse": float(np.median([c["nmse"] for c in group])),
                     "bound": float(np.median(bounds)) if bounds else None, "runs": len(group)})
    return rows


def nmse_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`nmse_rows` as text."""
    lines = ["# NMSE of the mean versus bits per coordinate (message: hpcq header excluded)",
             f"# {'codec':<26}{'scheme':>10}{'d':>8}{'p':>4}{'wire b/c':>10}{'msg b/c':>10}"
             f"{'nmse':>11}{'bound':>11}{'nmse/bnd':>9}"]
    for r in rows:
        bound = f"{r['bound']:>11.4g}" if r["bound"] is not None else f"{'-':>11}"
        ratio = f"{r['nmse'] / r['bound']:>9.3f}" if r["bound"] else f"{'-':>9}"
        lines.append(f"  {r['name']:<26}{r['scheme']:>10}{r['d']:>8}{r['nprocs']:>4}"
                     f"{r['wire_bits']:>10.4f}{r['bits']:>10.4f}{r['nmse']:>11.4g}{bound}{ratio}")
    return "\n".join(lines)


def train_table(cases: Sequence[dict[str, Any]]) -> str:
    """Per problem: each run's final loss (median over seeds) and bits per iteration."""
    lines = []
    for (_,), group in group_by(cases, ["problem"]).items():
        y = gap_or_loss(group)
        lines += [f"# {ascii_name(problem_title(group))}",
                  f"# {'method':<34}{'final ' + y:>14}{'bits/iter':>12}{'total bits':>12}"]
        for name, runs in group_by(group, ["_name"]).items():
            final = [float(c["final_gap"] if y == "gap" else c["final_loss"]) for c in runs]
            bits = float(np.median([c["bits_per_iteration"] for c in runs]))
            lines.append(f"  {ascii_name(name[0]):<34}{np.median(final):>14.5g}{bits:>12.5g}"
                         f"{bits * int(runs[0]['iterations']):>12.4g}")
        lines.append("")
    return "\n".join(lines).rstrip()


def _nmse_figure(plt: Any, rows: Sequence[dict[str, Any]]) -> Any:
    panels = group_by(rows, ["d", "nprocs"])
    st = styles({r["family"] for r in rows})
    schemes = sorted({r["scheme"] for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.6), squeeze=False)
    for ax, ((d, p), group) in zip(axes[0], panels.items(), strict=True):
        for (fam, scheme), line in group_by(group, ["family", "scheme"]).items():
            line = sorted((r for r in line if r["nmse"] > 0), key=lambda r: r["bits"])
            if not line:
                continue
            s = st[fam]
            label = fam + (f" ({scheme})" if len(schemes) > 1 else "")
            xs = [r["bits"] for r in line]
            ax.plot(xs, [r["nmse"] for r in line], marker=s["marker"], color=s["color"],
                    lw=1.4, label=label)
            bounded = [r for r in line if r["bound"]]
            if bounded:
                ax.plot([r["bits"] for r in bounded], [r["bound"] for r in bounded],
                        marker=s["marker"], color=s["color"], mfc="none", ls="--", lw=0.9)
            for r in line:
                if r["reps"]:
                    ax.annotate(f"s={r['reps']}", (r["bits"], r["nmse"]), fontsize="x-small",
                                textcoords="offset points", xytext=(4, 4), color=s["color"])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("bits per coordinate (one rank's message)")
        ax.set_ylabel(r"NMSE of the mean $\|\hat m - m\|^2 / \|m\|^2$")
        ax.set_title(f"Compressed mean, d = {d}, {p} ranks", fontsize="small")
        ax.grid(True, which="both", alpha=0.25)
    measured = plt.Line2D([], [], color="0.3", marker="o", lw=1.4)
    bound = plt.Line2D([], [], color="0.3", marker="o", mfc="none", ls="--", lw=0.9)
    fig.tight_layout()
    legend_below(fig, axes[0], {"measured (filled)": measured,
                                "guarantee for the mean (hollow)": bound})
    return fig


def _train_figure(plt: Any, cases: Sequence[dict[str, Any]]) -> Any:
    probs = group_by(cases, ["problem"])
    st = styles({c["_name"] for c in cases})
    fig, axes = plt.subplots(len(probs), 2, figsize=(11, 3.9 * len(probs)), squeeze=False)
    for row, group in zip(axes, probs.values(), strict=True):
        y = gap_or_loss(group)
        for ax, x in zip(row, ("iteration", "bits"), strict=True):
            runs_by = {k[0]: v for k, v in group_by(group, ["_name"]).items()}
            for name, runs in runs_by.items():
                draw(ax, runs, x, y, name, log_x=x == "bits", **st[name])
            mark_diverged(ax, runs_by, y)
            ax.set_xlabel(X_LABELS[x] + (" (log)" if x == "bits" else ""))
            ax.set_ylabel(Y_LABELS[y])
            ax.grid(True, which="both", alpha=0.25)
            ax.set_title(problem_title(group, "\n"), fontsize="small")
    fig.suptitle("vqSGD and baselines: training loss versus iterations and bits")
    fig.tight_layout()
    legend_below(fig, axes.flat, ncol=3)
    return fig


def main(argv: list[str] | None = None) -> int:
    """Draw the figures and print the tables; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", help="result files, globs or directories")
    ap.add_argument("-o", "--output", required=True, help="directory for the figures")
    args = ap.parse_args(argv)

    problems: list[str] = []
    coll = load_runs(args.files, kind="collectives", problems=problems)
    train = [dict(c, _name=display_name(c)) for c in load_runs(args.files, problems=problems)]
    if not coll and not train:
        return no_cases("paper_vqsgd", args.files, "collectives or train cases",
                        sorted(set(problems)))
    for line in sorted(set(problems)):
        print(f"skipped: {line}")
    plt = pyplot()
    out = Path(args.output)
    rows = [r for r in nmse_rows(coll) if math.isfinite(r["nmse"])]
    if rows:
        print(nmse_table(rows) + "\n")
        save(_nmse_figure(plt, rows), out, "paper_vqsgd_nmse")
    if train:
        print(train_table(train) + "\n")
        save(_train_figure(plt, train), out, "paper_vqsgd_train")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
