"""The verdict section of ``report.html`` (first, whenever the files hold collectives cases).

:func:`section` returns the report blocks and draws its figures: conclusions in words;
the speed-ups against the faster uncompressed allreduce and the break-even bandwidths that
the measured sizes imply (measured, per link and rank count); for each workload (those of
the files' workload cases, else :data:`DEFAULT_WORKLOADS` at :data:`DEFAULT_COMPUTE_MS`)
the modelled iteration speed-ups (:mod:`hpcq.analysis.verdict`); a speed-up heatmap
(link rate x node count, one rank per node) per codec with the no-gain region hatched; the
Pareto front of NMSE against modelled iteration time; and, when validation runs
(``analysis/scripts/verdict_validate.py`` JSON lines, given to ``hpcq report`` beside the
result files) are present, predicted against measured iteration times.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_WORKLOADS = ("resnet50", "bert-base")
DEFAULT_COMPUTE_MS = 100.0
HEAT_RATES = tuple(float(r) for r in np.geomspace(1e8, 1e11, 7))  # 100 Mbit/s .. 100 Gbit/s
HEAT_NODES = (2, 4, 16, 64, 256)


def _measured_speedups(crows: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """Per (machine, p, d) codec row: latency speed-up over the faster allreduce baseline."""
    from hpcq.analysis.iteration import rate_text

    best: dict[tuple[Any, ...], float] = {}
    for r in crows:
        if str(r["scheme"]).startswith("allreduce-") and r["latency_p50_s"]:
            k = (r["machine"], r.get("link"), r["nprocs"], r["d"])
            best[k] = min(best.get(k, math.inf), float(r["latency_p50_s"]))
    out = []
    for r in crows:
        k = (r["machine"], r.get("link"), r["nprocs"], r["d"])
        if str(r["scheme"]).startswith("allreduce-") or k not in best or not r["latency_p50_s"]:
            continue
        be = r.get("breakeven_gbs")
        out.append([r.get("link") or "unshaped", r["nprocs"], f"{r['scheme']} "
                    f"{r.get('spec_given') or r['spec']}", f"2^{int(r['d']).bit_length() - 1}",
                    f"{best[k] / float(r['latency_p50_s']):.2f}",
                    "-" if be is None else rate_text(8e9 * float(be))])
    return out


def read_validation(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The runs of validation JSON-lines files."""
    runs = []
    for p in paths:
        runs += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return runs


def section(files: Sequence[Path], crows: Sequence[dict[str, Any]], out: Path, *,
            plots: bool, validation_files: Sequence[Path] = ()
            ) -> tuple[list[tuple[Any, ...]], list[tuple[str, str]]]:
    """(blocks, figures (name, caption)) of the verdict section."""
    from hpcq.analysis.iteration import rate_text
    from hpcq.analysis.verdict import (
        BASELINES,
        _link_rate,
        load_inputs,
        modelled,
        validation,
        validation_table,
        verdict,
    )
    from hpcq.store import read_attrs

    inputs = load_inputs(files, allow_mixed=True)
    links = {str(f): _link_rate(read_attrs(f))[0] for f in inputs.files}
    crows = [dict(r, link=links.get(str(r["file"]), "unshaped")) for r in crows]
    blocks: list[tuple[Any, ...]] = [("h", 2, "Verdict: does compression pay?")]
    words: list[str] = []
    figs: list[tuple[str, str]] = []
    names = sorted({str(c["workload"]) for c in inputs.workload_cases
                    if not str(c["workload"]).startswith("file:")}) or list(DEFAULT_WORKLOADS)
    link_names = [n for n in inputs.links if inputs.links[n][0]]
    tables: list[tuple[Any, ...]] = []
    heat: dict[str, Any] = {}
    for link in link_names or list(inputs.links)[:1]:
        for wl in names:
            try:
                v = verdict(inputs, wl, nodes=list(HEAT_NODES), ranks_per_node=1,
                            link=link if inputs.links[link][0] else "10gbit",
                            compute_ms=DEFAULT_COMPUTE_MS)
            except ValueError as e:
                words.append(f"{wl}: no verdict ({e})")
                continue
            words.append(f"{wl} over {link}: {v.conclusion}")
            tables.append(("table", ["workload", "link", "scheme codec", *(
                f"{n} nodes" for n in HEAT_NODES), "break-even (largest)"],
                [[wl, link, key, *(_speedup_text(r) for r in rs), _be_text(rs[-1])]
                 for key, rs in _by_label(v.rows).items()]))
            heat.setdefault(wl, (v, link))
    blocks.append(("ul", words or ["no workload verdict could be formed"]))
    blocks.append(("p", f"Speed-up = iteration time of the faster uncompressed allreduce (fp32 "
                        f"or bf16) / the codec's, from the overlap model "
                        f"(hpcq.analysis.iteration) with {DEFAULT_COMPUTE_MS:g} ms compute per "
                        "iteration, one rank per node on a flat network at the measured link; "
                        "* = beyond the measured rank counts (extrapolated). hpcq verdict "
                        "answers for other inputs."))
    meas = _measured_speedups(crows)
    if meas:
        blocks += [("h", 3, "What the measured sizes imply (measured)"),
                   ("table", ["link", "ranks", "scheme codec", "d", "speed-up vs best allreduce",
                              "break-even (latency ignored)"], meas)]
    if tables:
        blocks.append(("h", 3, "Modelled iteration speed-ups of the workloads"))
        blocks += tables
    val = validation(inputs, read_validation(validation_files)) if validation_files else []
    if val:
        bad = [r for r in val if abs(r["error"]) > 0.15]
        blocks += [("h", 3, "Validation: predicted against measured iterations"),
                   ("pre", validation_table(val)),
                   ("p", f"{len(val) - len(bad)} of {len(val)} predictions within 15%; the "
                         "overlap model fed each run's own per-bucket times (column overlap) "
                         "is within "
                         f"{100 * max(abs(r['overlap_error']) for r in val):.0f}% everywhere, "
                         "so the larger errors come from the parts (alpha-beta fits and codec "
                         "times of isolated collectives on a shared, loaded 2-core VM).")]
    if not plots:
        return blocks, figs
    try:
        from hpcq.analysis.training import pyplot

        plt = pyplot()
    except ImportError:
        return blocks, figs
    for wl, (v, link) in heat.items():
        _, got, parts = inputs.links[link]
        rate0 = got or 1e10
        codecs = sorted({(r["scheme"], r["spec"], r["label"]) for r in v.rows
                         if r["scheme"] not in BASELINES})
        for sch, spec, label in codecs:
            grid = np.zeros((len(HEAT_RATES), len(HEAT_NODES)))
            for i, rate in enumerate(HEAT_RATES):
                for j, n in enumerate(HEAT_NODES):
                    ref = min(modelled(parts, wl, *k, n, rate, DEFAULT_COMPUTE_MS / 1e3)
                              .iteration_s for k in parts if k[0] in BASELINES)
                    grid[i, j] = ref / modelled(parts, wl, sch, spec, n, rate,
                                                DEFAULT_COMPUTE_MS / 1e3).iteration_s
            fig, ax = plt.subplots(figsize=(5.5, 3.6))
            im = ax.imshow(np.log2(grid), origin="lower", cmap="RdBu", vmin=-3, vmax=3,
                           aspect="auto")
            ax.contourf(np.arange(len(HEAT_NODES)), np.arange(len(HEAT_RATES)), grid,
                        levels=[0, 1], hatches=["//"], colors="none")
            for i in range(len(HEAT_RATES)):
                for j in range(len(HEAT_NODES)):
                    ax.text(j, i, f"{grid[i, j]:.2g}", ha="center", va="center", fontsize=7)
            ax.set_xticks(range(len(HEAT_NODES)), [str(n) for n in HEAT_NODES])
            ax.set_yticks(range(len(HEAT_RATES)), [rate_text(r) for r in HEAT_RATES])
            ax.set_xlabel("nodes (one rank each)")
            ax.set_ylabel("link rate")
            ax.set_title(f"{wl}: {label}", fontsize=9)
            fig.colorbar(im, ax=ax, label="log2 speed-up")
            name = f"verdict_heat_{_slug(wl)}_{_slug(label)}"
            _save(fig, out, name, plt)
            figs.append((name, f"Modelled iteration speed-up of {label} on {wl} against the "
                               f"faster allreduce ({DEFAULT_COMPUTE_MS:g} ms compute; parts "
                               f"measured over {link}); hatched: no gain (speed-up < 1)."))
        # Pareto front: NMSE against modelled iteration time at the measured link, 1 node x 2
        pts = []
        for sch, spec, label in codecs:
            nm = next((r["nmse"] for r in v.rows if r["spec"] == spec and r["scheme"] == sch
                       and r["nmse"] is not None), None)
            if nm is not None and nm > 0:
                t = modelled(parts, wl, sch, spec, 2, rate0, DEFAULT_COMPUTE_MS / 1e3)
                pts.append((t.iteration_s, nm, label))
        if pts:
            fig, ax = plt.subplots(figsize=(5, 3.4))
            for t, nm, label in pts:
                ax.scatter(1e3 * t, nm)
                ax.annotate(label, (1e3 * t, nm), fontsize=7)
            front = sorted(pts)
            keep, low = [], math.inf
            for t, nm, _ in front:
                if nm < low:
                    keep.append((t, nm))
                    low = nm
            ax.plot([1e3 * t for t, _ in keep], [nm for _, nm in keep], "k--", lw=0.8)
            ax.set_yscale("log")
            ax.set_xlabel("modelled iteration time at 2 ranks (ms)")
            ax.set_ylabel("NMSE of the mean")
            name = f"verdict_pareto_{_slug(wl)}"
            _save(fig, out, name, plt)
            figs.append((name, f"{wl}: NMSE against modelled iteration time (2 ranks over "
                               f"{link}); dashed: the Pareto front."))
    if val:
        fig, ax = plt.subplots(figsize=(4.6, 4.2))
        for r in val:
            ax.scatter(r["measured_s"], r["predicted_s"], marker="o")
            ax.scatter(r["measured_s"], r["overlap_only_s"], marker="x", color="k")
        lim = [0.8 * min(r["measured_s"] for r in val), 1.25 * max(r["measured_s"] for r in val)]
        ax.plot(lim, lim, "k-", lw=0.8)
        ax.fill_between(lim, [0.85 * x for x in lim], [1.15 * x for x in lim], alpha=0.15)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("measured iteration (s)")
        ax.set_ylabel("predicted iteration (s)")
        _save(fig, out, "verdict_validation", plt)
        figs.append(("verdict_validation", "Predicted against measured iteration times "
                     "(dots: full model from the collectives files; x: the overlap model fed "
                     "each run's own bucket times); band: +-15%."))
    return blocks, figs


def _by_label(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["label"], []).append(r)
    return out


def _speedup_text(r: dict[str, Any]) -> str:
    """``1.23``, with ``*`` when extrapolated beyond the measured rank counts."""
    return f"{r['speedup']:.2f}{'*' if r['source'] == 'extrapolated' else ''}"


def _be_text(r: dict[str, Any]) -> str:
    from hpcq.analysis.iteration import rate_text

    kind = r.get("breakeven_kind")
    if not kind:
        return "-"
    if kind in ("never", "always"):
        return kind
    return (">" if kind == "only above" else "<") + rate_text(r["breakeven_bits"])


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_")


def _save(fig: Any, out: Path, name: str, plt: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{name}.png", dpi=120, bbox_inches="tight")
    fig.savefig(out / f"{name}.pdf", bbox_inches="tight")
    plt.close(fig)
