"""The figures of ``hpcq report`` (matplotlib, Agg backend), each written as PNG and PDF.

Every compressor spec keeps one colour, marker and line style in every figure: the
sorted list of the specs in the report is mapped, in order, to the Okabe-Ito
colour-blind-safe palette, and markers and line styles vary too so that the figures
read in grayscale.  Values are the medians over repeated runs with min/max error
bars (the combined rows of :func:`hpcq.analysis.report.combine`).  Importing this
module does not import matplotlib; :func:`render` does, and reports the figures it
skipped (and why) when it cannot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Okabe & Ito (2008), yellow last (weakest on white).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000",
           "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
#: Plain dashes ("--") are kept for the memcpy reference line.
LINESTYLES = ("-", "-.", ":", (0, (3, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (5, 1)))
COMPONENTS = (("encode", "encode_median_s", 1.0, ""), ("communicate", "comm_median_s", 0.55, "//"),
              ("decode", "decode_median_s", 0.3, ".."))

Rows = Sequence[dict[str, Any]]


def styles(specs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """spec -> matplotlib style (color, marker, linestyle), fixed by the sorted spec list."""
    return {s: {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)],
                "linestyle": LINESTYLES[i % len(LINESTYLES)]}
            for i, s in enumerate(sorted(specs))}


def planned(kcomb: Rows, ccomb: Rows) -> list[tuple[str, str]]:
    """(name, caption) of every figure the data calls for."""
    # rows carry a "tag": "" or "_mN" (machine N) for kernels, "_pP[_mN]" for collectives,
    # so results from different machines or rank counts never share a figure
    out = []
    for tag in sorted({r["tag"] for r in kcomb}):
        on = f" ({tag[1:]})" if tag else ""
        out += [(f"kernels_encode{tag}", f"Encode throughput (input GB/s) versus d{on}, "
                                         f"memcpy dashed"),
                (f"kernels_decode{tag}", f"Decode throughput (input GB/s) versus d{on}, "
                                         f"memcpy dashed")]
    for tag in sorted({r["tag"] for r in ccomb}, key=lambda t: (len(t), t)):
        on = tag[1:].replace("_", ", ")
        out += [(f"collectives_latency{tag}", f"Latency p50 versus d, {on}, per scheme"),
                (f"collectives_split{tag}", f"Encode/communicate/decode at the largest d, {on}"),
                (f"collectives_breakeven{tag}", f"Break-even link bandwidth B* versus d, {on}")]
    if ccomb:
        out.append(("collectives_nmse", "NMSE versus bits per coordinate (every rank count)"))
    for machine in sorted({_machine(r) for r in ccomb}):
        if _scaling_size([r for r in ccomb if _machine(r) == machine]) is not None:
            on = f" ({machine[1:]})" if machine else ""
            out.append((f"collectives_scaling{machine}", f"Latency p50 versus ranks at the "
                                                         f"largest common d{on}"))
    return out


def render(out: Path, *, kcomb: Rows, mrows: Rows, ccomb: Rows, specs: Sequence[str],
           labels: dict[str, str], plots: bool = True
           ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Draw the figures into ``out``; return (written (name, caption), skipped (name, why))."""
    todo = planned(kcomb, ccomb)
    if not plots:
        return [], [(name, "figures turned off (--no-plots)") for name, _ in todo]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        why = f"matplotlib is not available ({e}); pip install 'hpcq[plot]'"
        return [], [(name, why) for name, _ in todo]
    st = styles(specs)
    done, skipped = [], []
    for name, caption in todo:
        fig = _draw(plt, name, kcomb=kcomb, mrows=mrows, ccomb=ccomb, st=st, labels=labels)
        if fig is None:
            skipped.append((name, "no case in the data to draw"))
            continue
        fig.savefig(out / f"{name}.png", dpi=120)
        fig.savefig(out / f"{name}.pdf")
        plt.close(fig)
        done.append((name, caption))
    return done, skipped


def _err(rows: Rows, value: str, scale: float = 1.0) -> tuple[list[float], list[list[float]]]:
    med = [r[f"{value}.median"] * scale for r in rows]
    lo = [m - r[f"{value}.min"] * scale for m, r in zip(med, rows, strict=True)]
    hi = [r[f"{value}.max"] * scale - m for m, r in zip(med, rows, strict=True)]
    return med, [lo, hi]


def _log2_x(ax: Any) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xlabel("d (float32 elements per rank)")
    ax.grid(True, which="major", alpha=0.3)


def _series(ax: Any, rows: Rows, value: str, st: dict[str, Any], label: str,
            scale: float = 1.0) -> None:
    rows = sorted((r for r in rows if r.get(f"{value}.median") is not None), key=lambda r: r["d"])
    if rows:
        med, err = _err(rows, value, scale)
        ax.errorbar([r["d"] for r in rows], med, yerr=err, label=label, capsize=3, **st)


def _draw(plt: Any, name: str, *, kcomb: Rows, mrows: Rows, ccomb: Rows,
          st: dict[str, dict[str, Any]], labels: dict[str, str]) -> Any:
    if name.startswith("kernels_"):
        what, tag = name.split("_")[1], name[len("kernels_encode"):]
        kcomb = [r for r in kcomb if r["tag"] == tag]
        files = {r["file"] for r in kcomb}
        mrows = [r for r in mrows if r["file"] in files or not files]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for spec in sorted({r["spec"] for r in kcomb}):
            _series(ax, [r for r in kcomb if r["spec"] == spec], f"{what}_gbs", st[spec],
                    labels[spec])
        for i, f in enumerate(sorted({r["file"] for r in mrows})):
            rows = sorted((r for r in mrows if r["file"] == f and r["gbs"]), key=lambda r: r["d"])
            ax.plot([r["d"] for r in rows], [r["gbs"] for r in rows], "--", marker="_",
                    color=("0.35", "0.6")[i % 2], label=f"memcpy ({Path(f).name})")
        _log2_x(ax)
        ax.set_yscale("log")
        ax.set_ylabel(f"{what} throughput (GB/s of float32 input)")
        ax.set_title(f"Kernels: {what}")
        ax.legend(fontsize="small")
        fig.tight_layout()
        return fig
    if name == "collectives_nmse":
        fig, ax = plt.subplots(figsize=(7, 4.5))
        schemes = sorted({r["scheme"] for r in ccomb})
        fills = ("full", "none", "left", "bottom", "right", "top")
        for spec in sorted({r["spec"] for r in ccomb}):
            for j, scheme in enumerate(schemes):
                rows = [r for r in ccomb if r["spec"] == spec and r["scheme"] == scheme
                        and (r.get("nmse.min") or 0) > 0]
                if not rows:
                    continue
                med, err = _err(rows, "nmse")
                ax.errorbar([r["bits_per_coordinate.median"] for r in rows], med, yerr=err,
                            linestyle="none", capsize=3, fillstyle=fills[j % len(fills)],
                            label=f"{labels[spec]} ({scheme})", color=st[spec]["color"],
                            marker=st[spec]["marker"], markersize=8)
        ax.set_yscale("log")
        ax.set_xlabel("bits per coordinate (wire bytes per rank x 8 / d)")
        ax.set_ylabel("NMSE of the mean (dimensionless)")
        ax.set_title("Accuracy versus bandwidth (baselines at 16/32 bits)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small")
        fig.tight_layout()
        return fig
    if name.startswith("collectives_scaling"):
        return _scaling(plt, name[len("collectives_scaling"):], ccomb, st, labels)
    tag = name[name.index("_p"):]
    rows_p = [r for r in ccomb if r["tag"] == tag]
    p = tag[2:].replace("_", ", machine ")  # "16" or "16, machine m2" in titles
    if name.startswith("collectives_latency"):
        baselines = [r for r in rows_p if str(r["scheme"]).startswith("allreduce-")]
        schemes = sorted({r["scheme"] for r in rows_p} - {r["scheme"] for r in baselines}) \
            or sorted({r["scheme"] for r in baselines})
        fig, axes = plt.subplots(1, len(schemes), figsize=(4.5 * len(schemes) + 1, 4.5),
                                 squeeze=False, sharey=True)
        for ax, scheme in zip(axes[0], schemes, strict=True):
            rows = [r for r in rows_p if r["scheme"] == scheme]
            for spec in sorted({r["spec"] for r in rows}):
                _series(ax, [r for r in rows if r["spec"] == spec], "latency_p50_s", st[spec],
                        labels[spec], 1e6)
            if scheme not in {r["scheme"] for r in baselines}:
                for b in sorted({r["scheme"] for r in baselines}):
                    spec = next(r["spec"] for r in baselines if r["scheme"] == b)
                    _series(ax, [r for r in baselines if r["scheme"] == b], "latency_p50_s",
                            st[spec], b, 1e6)
            _log2_x(ax)
            ax.set_yscale("log")
            ax.set_title(scheme)
            ax.legend(fontsize="x-small")
        axes[0][0].set_ylabel("latency p50, slowest rank (us)")
        fig.suptitle(f"Collectives on {p} ranks")
        fig.tight_layout()
        return fig
    if name.startswith("collectives_split"):
        dmax = max(r["d"] for r in rows_p)
        rows = sorted((r for r in rows_p if r["d"] == dmax),
                      key=lambda r: (str(r["scheme"]), r["spec"]))
        fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows) + 2), 4.8))
        xs = range(len(rows))
        bottom = [0.0] * len(rows)
        for comp, key, alpha, hatch in COMPONENTS:
            h = [(r.get(f"{key}.median") or 0) * 1e6 for r in rows]
            for x, r, hh, b in zip(xs, rows, h, bottom, strict=True):
                ax.bar(x, hh, bottom=b, color=st[r["spec"]]["color"], alpha=alpha,
                       hatch=hatch, edgecolor="black", linewidth=0.6)
            bottom = [b + hh for b, hh in zip(bottom, h, strict=True)]
            ax.bar(0, 0, color="0.7", alpha=alpha, hatch=hatch, edgecolor="black", label=comp)
        ax.set_xticks(list(xs), [f"{r['scheme']}\n{labels[r['spec']]}" for r in rows],
                      fontsize="x-small", rotation=30, ha="right")
        ax.set_ylabel("median time of the slowest rank (us)")
        ax.set_title(f"Where the time goes at d = 2^{int(dmax).bit_length() - 1}, {p} ranks")
        ax.legend(fontsize="small")
        fig.tight_layout()
        return fig
    # break-even bandwidth
    rows_b = [r for r in rows_p if r.get("breakeven_gbs.median") is not None]
    if not rows_b:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    schemes = sorted({r["scheme"] for r in rows_b})
    for spec in sorted({r["spec"] for r in rows_b}):
        for j, scheme in enumerate(schemes):
            rows = [r for r in rows_b if r["spec"] == spec and r["scheme"] == scheme]
            if rows:
                s = dict(st[spec], linestyle=LINESTYLES[j % len(LINESTYLES)])
                _series(ax, rows, "breakeven_gbs", s, f"{labels[spec]} ({scheme})")
    _log2_x(ax)
    ax.set_yscale("log")
    ax.set_ylabel("break-even link bandwidth B* (GB/s)")
    ax.set_title(f"Compression pays on links slower than B* ({p} ranks)")
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def _machine(row: dict[str, Any]) -> str:
    """The machine part of a collectives row's tag: "" or "_mN"."""
    tag = str(row["tag"])
    return tag[tag.index("_m"):] if "_m" in tag else ""


def _scaling_size(rows: Rows) -> int | None:
    """The largest d that every rank count of ``rows`` measured; None under two rank counts."""
    counts = {int(r["nprocs"]) for r in rows}
    common = [d for d in {r["d"] for r in rows}
              if {int(r["nprocs"]) for r in rows if r["d"] == d} == counts]
    return int(max(common)) if len(counts) > 1 and common else None


def _scaling(plt: Any, machine: str, ccomb: Rows, st: dict[str, dict[str, Any]],
             labels: dict[str, str]) -> Any:
    """p50 latency versus ranks, per scheme and codec, at the largest d every rank count has."""
    rows = [r for r in ccomb if _machine(r) == machine]
    d = _scaling_size(rows)
    if d is None:
        return None
    rows = [r for r in rows if r["d"] == d]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    schemes = sorted({r["scheme"] for r in rows})
    for spec in sorted({r["spec"] for r in rows}):
        for j, scheme in enumerate(schemes):
            line = sorted((r for r in rows if r["spec"] == spec and r["scheme"] == scheme),
                          key=lambda r: int(r["nprocs"]))
            if len(line) < 2:
                continue
            med, err = _err(line, "latency_p50_s", 1e6)
            style = dict(st[spec], linestyle=LINESTYLES[j % len(LINESTYLES)])
            label = scheme if scheme.startswith("allreduce-") else f"{labels[spec]} ({scheme})"
            ax.errorbar([int(r["nprocs"]) for r in line], med, yerr=err, capsize=3, label=label,
                        **style)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("MPI ranks")
    ax.set_ylabel("latency p50, slowest rank (us)")
    ax.set_title(f"Scaling at d = 2^{int(d).bit_length() - 1}" + (f" ({machine[1:]})"
                                                                  if machine else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig
