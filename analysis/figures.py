"""The figures of ``hpcq report`` (matplotlib, Agg backend), each written as PNG and PDF.

Every compressor spec keeps one colour, marker and line style in every figure: the
sorted list of the specs in the report is mapped, in order, to the Okabe-Ito
colour-blind-safe palette, and markers and line styles vary too so that the figures
read in grayscale.  Values are the medians over repeated runs with min/max error
bars (the combined rows of :func:`hpcq.analysis.report.combine`).  Training runs
are drawn by :mod:`hpcq.analysis.training` (one colour, marker and line style per
method and compressor), the projection of :mod:`hpcq.analysis.model` here (one
colour, marker and line style per scheme, a panel per compressor).  Importing this
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

#: Scheme -> (colour, marker, line style) in the projection figure; the baselines in grays.
#: EDEN's published vNMSE of one message at b bits per coordinate (Vargaftik et al., ICML 2022).
EDEN_PUBLISHED = {1.0: 0.571, 2.0: 0.133, 3.0: 0.036, 4.0: 0.0096}


def _scheme_styles() -> dict[str, tuple[Any, str, Any]]:
    """(colour, marker, line style) per registered scheme: its own ``style`` fact, else one
    picked by its rank among the schemes (so a new scheme needs no entry here)."""
    from hpcq.collectives import SCHEMES
    from hpcq.collectives.scheme import style_of

    return {name: style_of(name, PALETTE, "".join(MARKERS)) for name in SCHEMES.names()}


SCHEME_STYLES = _scheme_styles()

Rows = Sequence[dict[str, Any]]


def styles(specs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """spec -> matplotlib style (color, marker, linestyle), fixed by the sorted spec list."""
    return {s: {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)],
                "linestyle": LINESTYLES[i % len(LINESTYLES)]}
            for i, s in enumerate(sorted(specs))}


def planned(kcomb: Rows, ccomb: Rows, train: Rows = (),
            projection: dict[str, dict[str, Any]] | None = None) -> list[tuple[str, str]]:
    """(name, caption) of every figure the data calls for.

    ``train``: the training cases, each with ``_tag`` ("" or "_mN"); ``projection``:
    machine tag -> the model's projection (see :func:`_projection`).
    """
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
    for tag, info in sorted((projection or {}).items()):
        on = f" ({tag[1:]})" if tag else ""
        out.append((f"model_projection{tag}",
                    f"Alpha-beta model: time per call (encode + communicate + decode) versus "
                    f"ranks at d = {_pow2(info['d'])}{on}; lines the model, filled markers the "
                    f"measurements, shaded the extrapolation past the measured ranks"))
    out += _train_planned(train)
    return out


def _pow2(d: int) -> str:
    d = int(d)
    return f"2^{d.bit_length() - 1}" if d > 0 and d & (d - 1) == 0 else str(d)


def _train_groups(train: Rows) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(machine tag, problem) -> its cases, in sorted order."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in train:
        out.setdefault((str(c["_tag"]), str(c.get("problem"))), []).append(c)
    return {k: out[k] for k in sorted(out)}


def _train_planned(train: Rows) -> list[tuple[str, str]]:
    from hpcq.analysis import training

    out = []
    groups = _train_groups(train)
    for k, ((tag, _), cases) in enumerate(groups.items()):
        on = f" ({tag[1:]})" if tag else ""
        y = "f - f*" if training.gap_or_loss(cases) == "gap" else "loss"
        dist = " and distance to x*" if any(training.has_dist(c) for c in cases) else ""
        thinned = training.thin(cases)[1]
        out.append((f"train_curves_{k + 1}{tag}",
                    f"{training.problem_title(cases)}{on}: {y}{dist} versus iteration, "
                    f"cumulative bits per rank and wall time after iteration 1 (cumulative "
                    f"median over ranks of t_iter; iteration 1 pays the JIT); median over "
                    f"seeds, min-max band"
                    + ("; each sweep over R cut to a few values of R (all are in train.csv and "
                       "the rate figure)" if thinned else "")))
    for tag in sorted({t for t, _ in groups}):
        if any(training.has_sweep(g, least=2) for (t, _), g in groups.items() if t == tag):
            on = f" ({tag[1:]})" if tag else ""
            out.append((f"train_rate{tag}",
                        f"Empirical linear rate versus R (bits per coordinate) of the methods "
                        f"with bits, with max(sigma, 2^-R), max(sigma, rho_n 2^-R) and "
                        f"sigma + rho_n 2^-R{on}"))
    return out


def render(out: Path, *, kcomb: Rows, mrows: Rows, ccomb: Rows, specs: Sequence[str],
           labels: dict[str, str], plots: bool = True, train: Rows = (),
           projection: dict[str, dict[str, Any]] | None = None
           ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Draw the figures into ``out``; return (written (name, caption), skipped (name, why))."""
    todo = planned(kcomb, ccomb, train, projection)
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
        if name.startswith("train_"):
            fig = _train(plt, name, train)
        elif name.startswith("model_projection"):
            fig = _projection(plt, (projection or {})[name[len("model_projection"):]], labels,
                              st)
        else:
            fig = _draw(plt, name, kcomb=kcomb, mrows=mrows, ccomb=ccomb, st=st, labels=labels)
        if fig is None:
            skipped.append((name, "no case in the data to draw"))
            continue
        # the training and model figures put their legend below the panels: "tight" keeps it
        tight = "tight" if name.startswith(("train_", "model_")) else None
        fig.savefig(out / f"{name}.png", dpi=120, bbox_inches=tight)
        fig.savefig(out / f"{name}.pdf", bbox_inches=tight)
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
        # EDEN's published single-message vNMSE (Vargaftik et al., ICML 2022, Table 1) at
        # b = 1..4 bits: a reference for one message; a mean over p ranks of vectors sharing
        # half their energy (hpcq's inputs) has about 2/(p+1) of it
        ax.plot(list(EDEN_PUBLISHED), list(EDEN_PUBLISHED.values()), linestyle="none",
                marker="x", color="0.35", markersize=9,
                label="EDEN (paper), one message: reference")
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
        baselines = [r for r in rows_p if _plain(str(r["scheme"]))]
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
            label = scheme if _plain(scheme) else f"{labels[spec]} ({scheme})"
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


def _train(plt: Any, name: str, train: Rows) -> Any:
    """A training figure: ``train_curves_K[_mN]`` (problem K) or ``train_rate[_mN]``."""
    from hpcq.analysis import training

    groups = _train_groups(train)
    if name.startswith("train_rate"):
        tag = name[len("train_rate"):]
        sweeps = [g for (t, _), g in groups.items() if t == tag and training.has_sweep(g)]
        return training.rate_figure(plt, sweeps, "Empirical linear rate versus bits per "
                                                 "coordinate" + (f" ({tag[1:]})" if tag else ""))
    shown = [training.thin(g)[0] for g in groups.values()]
    # over every problem: one colour, marker and line style per method and compressor
    st = training.line_styles({training.display_name(c) for g in shown for c in g})
    k = int(name.split("_")[2]) - 1
    return training.curves_figure(plt, shown[k], st)


def _is_baseline(row: dict[str, Any]) -> bool:
    return _plain(str(row["scheme"]))


def _plain(scheme: str) -> bool:
    """An uncompressed scheme (baselines, the MPI reference, ps-reduce), from its facts."""
    from hpcq.collectives.scheme import uncompressed

    return uncompressed(scheme)


def _scheme_order(scheme: str) -> int:
    return list(SCHEME_STYLES).index(scheme) if scheme in SCHEME_STYLES else len(SCHEME_STYLES)


def _projection(plt: Any, info: dict[str, Any], labels: dict[str, str],
                st: dict[str, dict[str, Any]]) -> Any:
    """Model time per call versus p: measured points over the model's lines.

    With two or more compressed schemes, a panel per compressor and a colour per
    scheme (the uncompressed baselines in every panel); with one, a single panel
    and the report's colour per compressor (``st``).  ``info``: ``d``, ``rows``
    (:func:`hpcq.analysis.model.project` rows at that d), ``crossovers`` (of
    :func:`hpcq.analysis.model.crossovers` at that d), ``machine`` (tag or "").
    """
    from hpcq.analysis.training import legend_below

    rows = info["rows"]
    base = [r for r in rows if _is_baseline(r)]
    comp = [r for r in rows if not _is_baseline(r)]
    specs = sorted({r["compressor"] for r in comp})
    per_spec = len({r["scheme"] for r in comp}) > 1
    panels: list[tuple[str, list[dict[str, Any]]]] = (
        [(labels.get(s, s), [r for r in comp if r["compressor"] == s]) for s in specs]
        if per_spec else [(", ".join(sorted({r["scheme"] for r in comp})) or "baselines",
                           comp)])
    spec_style = {s: st.get(s) or styles([s])[s] for s in specs}
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    width = 5.2 * ncols + 0.6 if per_spec else 8.0
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 4.2 * nrows + 0.4 * (nrows == 1)),
                             squeeze=False, sharey=True)
    for ax, (title, mine) in zip(axes.flat, panels, strict=False):
        lines = sorted({(r["scheme"], r["compressor"]) for r in [*mine, *base]},
                       key=lambda k: (_scheme_order(k[0]), k[1]))
        for scheme, spec in lines:
            line = sorted((r for r in [*mine, *base] if r["scheme"] == scheme
                           and r["compressor"] == spec), key=lambda r: r["p"])
            color, marker, ls = SCHEME_STYLES.get(scheme, ("0.3", "o", "-"))
            label = scheme
            if not per_spec and spec in spec_style:
                color, marker, ls = (spec_style[spec]["color"], spec_style[spec]["marker"],
                                     spec_style[spec]["linestyle"])
                label = f"{labels.get(spec, spec)} ({scheme})"
            ax.plot([r["p"] for r in line], [r["total_s"] * 1e3 for r in line], color=color,
                    linestyle=ls, marker=marker, ms=3, lw=1.4, label=label)
            meas = [r for r in line if r.get("measured_total_s") is not None]
            ax.plot([r["p"] for r in meas], [r["measured_total_s"] * 1e3 for r in meas],
                    linestyle="none", marker=marker, ms=8, color=color, mec="black", mew=0.8,
                    zorder=5)
        every = [*mine, *base]
        measured = [r["p"] for r in every if r.get("measured_total_s") is not None]
        top = max(r["p"] for r in every)
        if measured and max(measured) < top:
            ax.axvspan(max(measured), top, color="0.92", zorder=0)
            ax.text(0.98, 0.02, f"extrapolated (p > {max(measured)})", transform=ax.transAxes,
                    ha="right", va="bottom", fontsize="x-small", color="0.35")
        for c in info.get("crossovers", []):
            if (c["slower"], c["faster"]) == ("allgather", "two-phase") and c["before"] \
                    and c["p"] is not None and per_spec and labels.get(c["compressor"],
                                                                       c["compressor"]) == title:
                ax.axvline(c["p"], color=SCHEME_STYLES["two-phase"][0], lw=1, ls=(0, (1, 2)))
                ax.text(c["p"], 0.97, f" two-phase faster\n from p = {c['p']}",
                        transform=ax.get_xaxis_transform(), va="top", fontsize="x-small")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("MPI ranks p")
        ax.grid(True, which="major", alpha=0.3)
        ax.set_title(title, fontsize="small")
    for ax in axes[:, 0]:
        ax.set_ylabel("time per call (ms)")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"Alpha-beta projection at d = {_pow2(info['d'])}"
                 + (f" ({info['machine']})" if info.get("machine") else ""))
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    key = {"model (line)": plt.Line2D([], [], color="0.3", marker="o", ms=3, lw=1.4),
           "measured (large marker)": plt.Line2D([], [], color="0.6", marker="o", ms=8,
                                                 mec="black", linestyle="none")}
    legend_below(fig, list(axes.flat)[:len(panels)], key, ncol=2 if not per_spec else 4)
    return fig
