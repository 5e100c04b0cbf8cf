"""Result files -> a self-contained report directory (``hpcq report FILES... -o DIR``).

::

    from hpcq.analysis.report import build_report

    info = build_report(["runs/*.h5"], "report-dir")   # {"markdown": ..., "html": ..., ...}

The directory gets ``report.md`` and ``report.html`` (built from one list of blocks,
images linked by relative path), the per-case tables ``kernels.csv``,
``collectives.csv`` and ``train.csv`` (one row per (file, case), numbers as read
from the files), the alpha-beta model of the collectives
(:mod:`hpcq.analysis.model`: its fits ``alphabeta.csv`` / ``alphabeta.json`` and
its projection to 2..1024 ranks ``projection.csv``) and the figures of
:mod:`hpcq.analysis.figures` as PNG and PDF.  Repeated runs of one case (same
scheme, spec, d, nprocs; for training the same problem, method, compressor,
scheme, ranks and staleness over seeds) are combined with
:func:`hpcq.analysis.load.summarize`: median with min/max, never a mean alone.
Runs of different machines (CPU models) are never combined.  Without matplotlib
the tables and text are still written and the report says which figures it
skipped and why.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hpcq.analysis.load import Table, _column, expand_paths, load, summarize

KINDS = ("kernels", "collectives", "workload", "train")

KERNEL_COLUMNS = ("file", "group", "machine", "spec", "spec_given", "d", "log2_d", "threads",
                  "repeats", "seed", "encode_median_s", "decode_median_s",
                  "decode_into_median_s", "encode_gbs", "decode_gbs", "decode_into_gbs",
                  "memcpy_gbs", "bits_per_coordinate", "wire_bytes", "nmse",
                  "hpcq_format")
COLLECTIVE_COLUMNS = ("file", "group", "machine", "scheme", "spec", "spec_given", "nprocs", "d",
                      "log2_d", "seed", "iterations", "wire_bytes_per_rank", "fp32_bytes",
                      "bits_per_coordinate", "latency_p50_s", "latency_p99_s", "encode_median_s",
                      "comm_median_s", "decode_median_s", "nmse", "nmse_bound", "check",
                      "breakeven_gbs", "hpcq_format")
TRAIN_COLUMNS = ("file", "group", "machine", "problem", "method", "compressor", "scheme",
                 "nprocs", "seed", "staleness", "iterations", "rate", "diverged", "final_loss",
                 "final_dist", "final_gap", "bits_per_iteration", "wire_bytes_per_iteration",
                 "ms_per_iteration", "compute_ms", "encode_ms", "comm_ms", "decode_ms",
                 "update_ms", "overhead_pct", "hpcq_format")

BREAKEVEN_MODEL = (
    "Break-even bandwidth: if moving b bytes over a link cost b/B seconds (latency ignored), a "
    "compressed case would take (encode + decode) + wire/B and the fp32 allreduce fp32_bytes/B "
    "(fp32_bytes = 4d per rank), so the two are equal at B* = (fp32_bytes - wire_bytes) / "
    "(encode + decode); compression pays on links slower than B* (only cases with wire < "
    "fp32_bytes have one).")


def _num(v: Any) -> Any:
    """A plain Python scalar (numpy scalars unwrapped), None kept."""
    return v.item() if hasattr(v, "item") else v


def _spec(row: dict[str, Any]) -> str:
    """The canonical spec; 1.0.0 baselines named their spec after the scheme (allreduce-fp32)."""
    spec, scheme = row.get("spec"), row.get("scheme")
    if scheme and str(scheme).startswith("allreduce-") and spec == scheme:
        return str(scheme).split("-", 1)[1]
    return str(spec)


def kernel_rows(table: Table, memcpy: Table) -> list[dict[str, Any]]:
    """One dict per kernels case with :data:`KERNEL_COLUMNS` (throughput in input GB/s)."""
    # the memcpy of the same file, size and sweep point (run)
    copy = {(str(r["file"]), _num(r["d"]), _num(r.get("run")), _num(r.get("sweep.job.seed"))):
            _num(r.get("gbs_median")) for r in memcpy.rows()}
    out = []
    for r in table.rows():
        d = int(r["d"])
        enc, dec = _num(r.get("encode_s.median")), _num(r.get("decode_s.median"))
        into = _num(r.get("decode_into_s.median"))  # None in files before hpcq recorded it
        row = {k: _num(r.get(k)) for k in KERNEL_COLUMNS}
        row.update(spec=_spec(r), machine=str(r.get("cpu_model") or "unknown"),
                   encode_median_s=enc, decode_median_s=dec, decode_into_median_s=into,
                   encode_gbs=4 * d / enc / 1e9 if enc else None,
                   decode_gbs=4 * d / dec / 1e9 if dec else None,
                   decode_into_gbs=4 * d / into / 1e9 if into else None,
                   memcpy_gbs=copy.get((str(r["file"]), d, _num(r.get("run")),
                                        _num(r.get("sweep.job.seed")))))
        out.append(row)
    return sorted(out, key=lambda r: (r["spec"], r["d"], str(r["file"]), str(r["group"])))


def collective_rows(table: Table) -> list[dict[str, Any]]:
    """One dict per collectives case with :data:`COLLECTIVE_COLUMNS`.

    Files of schema 1.0.0 lack the scalar summaries; they are taken from the raw samples
    with the same definition (median over calls of the slowest rank).
    """
    out = []
    for r in table.rows():
        row = {k: _num(r.get(k)) for k in COLLECTIVE_COLUMNS}
        d = int(r["d"])
        for name, fallback in (("latency_p50_s", "total_s.median"),
                               ("encode_median_s", "encode_s.median"),
                               ("comm_median_s", "comm_s.median"),
                               ("decode_median_s", "decode_s.median")):
            if row[name] is None:
                row[name] = _num(r.get(fallback))
        row["spec"], row["fp32_bytes"] = _spec(r), 4 * d
        # for the model (not in the CSV): the codec's header, the hosts of the run
        row["header_bytes"] = _num(r.get("compressor.header_bytes"))
        row["hosts"] = _num(r.get("nhosts"))
        row["cpu_binding"] = r.get("cpu_binding")
        row["machine"] = str(r.get("cpu_model") or "unknown")
        wire, codec = row["wire_bytes_per_rank"], (row["encode_median_s"] or 0) + (
            row["decode_median_s"] or 0)
        if (row["scheme"] != "allreduce-fp32" and wire is not None and wire < 4 * d
                and codec > 0):
            row["breakeven_gbs"] = (4 * d - wire) / codec / 1e9
        out.append(row)
    return sorted(out, key=lambda r: (str(r["scheme"]), r["spec"], int(r["nprocs"] or 0),
                                      r["d"], str(r["file"]), str(r["group"])))


def train_rows(cases: Sequence[dict[str, Any]], machines: dict[str, str]
               ) -> list[dict[str, Any]]:
    """One dict per train case with :data:`TRAIN_COLUMNS` (and ``batch``, for names).

    ``machines``: file -> CPU model.
    """
    out = []
    for c in cases:
        row = {k: _num(c.get(k)) for k in TRAIN_COLUMNS}
        row.update(machine=machines.get(str(c["file"]), "unknown"), batch=_num(c.get("batch")),
                   compressor=str(c.get("compressor") or ""))
        out.append(row)
    return sorted(out, key=lambda r: (str(r["machine"]), str(r["problem"]), str(r["method"]),
                                      r["compressor"], int(r["nprocs"] or 0),
                                      int(r["staleness"] or 0), int(r["seed"] or 0),
                                      str(r["file"]), str(r["group"])))


def as_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Table:
    """Rows -> a :class:`Table` with the given columns."""
    return Table({c: _column([r.get(c) for r in rows]) for c in columns})


def combine(rows: Sequence[dict[str, Any]], columns: Sequence[str], by: Sequence[str],
            values: Iterable[str]) -> list[dict[str, Any]]:
    """Per group of ``by``: ``VALUE.median/.min/.max`` of each value and ``runs``."""
    table = as_table(rows, columns)
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for value in values:
        s = summarize(table, by, value)
        for r in s.rows():
            key = tuple(_num(r[b]) for b in by)
            entry = merged.setdefault(key, {b: _num(r[b]) for b in by})
            entry.update({k: _num(v) for k, v in r.items() if k.startswith(value + ".")})
            entry["runs"] = max(entry.get("runs", 0), int(r["runs"]))
    return [merged[k] for k in sorted(merged, key=_sort_key)]


def _sort_key(key: tuple[Any, ...]) -> tuple[tuple[int, Any], ...]:
    """Numbers by value, before strings (None last)."""
    return tuple((0, v) if isinstance(v, (int, float)) else (1, str(v)) if v is not None
                 else (2, "") for v in key)


def write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """Rows as CSV, floats at full precision (repr), missing values empty."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in columns])


# ---- the document: one list of blocks, rendered as Markdown and as HTML ----------------

Block = tuple[Any, ...]


def _md_cell(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: Sequence[Block]) -> str:
    """Blocks -> Markdown: (h, level, text), (p, text), (ul, items), (table, head, rows),
    (pre, text), (img, file, alt, pdf)."""
    out: list[str] = []
    for b in blocks:
        if b[0] == "h":
            out.append("#" * b[1] + " " + b[2])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "ul":
            out.append("\n".join(f"* {item}" for item in b[1]))
        elif b[0] == "pre":
            out.append("```text\n" + b[1] + "\n```")
        elif b[0] == "table":
            head, rows = b[1], b[2]
            lines = ["| " + " | ".join(map(_md_cell, head)) + " |",
                     "| " + " | ".join("---" for _ in head) + " |"]
            lines += ["| " + " | ".join(map(_md_cell, r)) + " |" for r in rows]
            out.append("\n".join(lines))
        elif b[0] == "img":
            out.append(f"![{b[2]}]({b[1]})\n\n*{b[2]}* ([PDF]({b[3]}))")
    return "\n\n".join(out) + "\n"


def to_html(blocks: Sequence[Block], title: str) -> str:
    """Blocks -> one standalone HTML page (inline CSS, images by relative path)."""
    e = html.escape
    body: list[str] = []
    toc = [f'<li><a href="#s{i}">{e(b[2])}</a></li>' for i, b in enumerate(blocks)
           if b[0] == "h" and b[1] == 2]
    for i, b in enumerate(blocks):
        if b[0] == "h" and b[1] == 2 and i:
            body.append(f'<h2 id="s{i}">{e(b[2])}</h2>')
        elif b[0] == "h":
            body.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            if b[1] == 1 and toc:
                body.append('<nav><b>Contents</b><ul>' + "".join(toc) + "</ul></nav>")
        elif b[0] == "p":
            body.append(f"<p>{e(b[1])}</p>")
        elif b[0] == "ul":
            body.append("<ul>" + "".join(f"<li>{e(str(i))}</li>" for i in b[1]) + "</ul>")
        elif b[0] == "pre":
            body.append(f"<pre>{e(b[1])}</pre>")
        elif b[0] == "table":
            head = "".join(f"<th>{e(str(h))}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>"
                           for r in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif b[0] == "img":
            body.append(f'<figure><img src="{e(b[1])}" alt="{e(b[2])}">'
                        f'<figcaption>{e(b[2])} (<a href="{e(b[3])}">PDF</a>)</figcaption>'
                        "</figure>")
    style = ("body{font-family:sans-serif;max-width:72em;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:90%;display:block;max-width:100%;"
             "overflow-x:auto}td,th{border:1px solid #999;"
             "padding:2px 6px;text-align:right}img{max-width:100%}figure{margin:1em 0}"
             "figcaption{font-size:90%;color:#333}nav{background:#f8f8f8;padding:.5em 1em}"
             "pre{background:#f4f4f4;"
             "padding:.5em;overflow-x:auto}")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><style>{style}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _g(v: Any, unit: float = 1.0) -> str:
    return "-" if v is None else f"{v / unit:.4g}"


def _range(r: dict[str, Any], value: str, unit: float = 1.0) -> str:
    med = r.get(f"{value}.median")
    if med is None:
        return "-"
    if r["runs"] == 1:
        return _g(med, unit)
    return f"{_g(med, unit)} [{_g(r[value + '.min'], unit)}, {_g(r[value + '.max'], unit)}]"


def provenance(path: Path) -> list[str]:
    """Provenance lines of one readable result file."""
    from hpcq.store import read_attrs

    a = read_attrs(path)
    commit = a.get("git_commit")
    git = f"{commit}{' (dirty)' if a.get('git_dirty') else ''}" if commit else "not recorded"
    mpi = (str(a.get("mpi_library") or "not recorded").replace("\0", "").strip()
           .splitlines() or ["?"])[0].strip()
    hosts = a.get("hostnames") or []
    return [f"hpcq {a.get('softwareVersion')} (schema {a.get('hpcq_format')})", f"git {git}",
            f"MPI library: {mpi}",
            f"{len(set(hosts))} host(s), {a.get('nprocs')} rank(s)",
            f"started {a.get('start_time')}",
            f"SLURM job {a.get('slurm_job_id') or 'none'}",
            f"cpu_binding: {a.get('cpu_binding') or 'not recorded'}",
            "network: " + (f"emulated link {a['emulated_link']} (measured "
                           f"{a.get('emulated_link_measured_gbit', float('nan')):.3g} Gbit/s)"
                           if a.get("emulated_link") else "as is (no emulated link)")]


def _cpu_models(files: Sequence[Path]) -> dict[str, str]:
    """file -> its CPU model (the machine key of every table)."""
    from hpcq.store import read_attrs

    return {str(f): str(read_attrs(f).get("cpu_model") or "unknown") for f in files}


def _nan_to_none(row: dict[str, Any]) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}


TRAIN_BY = ("tag", "problem", "method", "compressor", "scheme", "nprocs", "staleness", "batch")
TRAIN_VALUES = ("rate", "final_loss", "final_gap", "final_dist", "bits_per_iteration",
                "ms_per_iteration", "comm_ms")


def _train_section(trows: Sequence[dict[str, Any]]) -> list[Block]:
    """The training table: seeds combined as median [min, max], diverged runs counted."""
    from hpcq.analysis.training import display_name, problem_name

    clean = [_nan_to_none(r) for r in trows]
    comb = combine(clean, (*TRAIN_COLUMNS, "tag", "batch"), TRAIN_BY, TRAIN_VALUES)
    div: dict[tuple[Any, ...], list[bool]] = {}
    for r in clean:
        div.setdefault(tuple(r[b] for b in TRAIN_BY), []).append(bool(r["diverged"]))
    head = ["machine", "problem", "method", "scheme", "ranks", "τ", "runs", "rate",
            "final loss", "final f - f*", "final ||x - x*||", "bits/iter", "ms/iter",
            "comm ms/iter", "diverged"]
    rows = []
    for r in comb:
        d = div.get(tuple(r[b] for b in TRAIN_BY), [])
        rows.append([r["tag"][1:] or "-", problem_name(str(r["problem"])),
                     display_name(r), r["scheme"], r["nprocs"], r["staleness"], r["runs"],
                     _range(r, "rate"), _range(r, "final_loss"), _range(r, "final_gap"),
                     _range(r, "final_dist"), _g(r.get("bits_per_iteration.median")),
                     _range(r, "ms_per_iteration"), _g(r.get("comm_ms.median")),
                     f"{sum(d)}/{len(d)}"])
    return [("h", 2, "Training runs"),
            ("p", f"{len(trows)} training run(s) (train.csv has one row per run). Seeds of one "
                  "configuration are combined as median [min, max]. rate: the empirical linear "
                  "rate (||x_T - x*|| / ||x_0 - x*||)^(1/T) (inf: diverged; - without x*); "
                  "bits/iter: payload + side bits of the busiest rank; ms/iter and comm "
                  "ms/iter: medians over iterations of the slowest rank."),
            ("table", head, rows)]


def _algorithms(fits: Sequence[Any]) -> dict[str, Any]:
    """Every registered scheme's cost terms, and those of the fitted scheme specs with
    parameters (``allreduce-int:bits=8``, ``two-level:mode=shard``), by name."""
    from hpcq.analysis import model

    out = dict(model.ALGORITHMS)
    for f in fits:
        a = model.algorithm(f.scheme)
        if a is not None:
            out.setdefault(f.scheme, a)
    return out


def _model_files(out: Path, fits: Sequence[Any], proj: Sequence[dict[str, Any]]
                 ) -> list[Path]:
    """Write alphabeta.csv, alphabeta.json and projection.csv; return their paths."""
    from hpcq.analysis import model

    rows = [_nan_to_none(f.as_row()) for f in fits]
    write_csv(out / "alphabeta.csv", rows, model.FIT_COLUMNS)
    doc = {"model": "comm(p, d) = alpha_s * L(p) + beta_s_per_byte * B(p, d)",
           "algorithms": {k: {"mpi": a.mpi, "L": a.text[0], "B": a.text[1],
                              "encodes": a.text[2], "decodes": a.text[3]}
                          for k, a in _algorithms(fits).items()},
           "fits": rows}
    (out / "alphabeta.json").write_text(json.dumps(doc, indent=1) + "\n")
    write_csv(out / "projection.csv", proj, model.PROJECTION_COLUMNS)
    return [out / "alphabeta.csv", out / "alphabeta.json", out / "projection.csv"]


def _projection_sizes(proj: Sequence[dict[str, Any]], want: int | None) -> dict[str, int]:
    """machine -> the d of its projection figure: ``want`` where measured, else the largest."""
    sizes: dict[str, set[int]] = {}
    for r in proj:
        sizes.setdefault(str(r["machine"]), set()).add(int(r["d"]))
    if want is not None and not any(want in v for v in sizes.values()):
        have = sorted(set().union(*sizes.values())) if sizes else []
        raise ValueError(f"--projection-d {want} was not measured; measured sizes: "
                         + (", ".join(map(str, have)) or "none with a fit"))
    return {m: (want if want in v else max(v)) for m, v in sizes.items()
            if want is None or want in v}


MODEL_TEXT = (
    "The time of one call is encode + communicate + decode (medians of the slowest rank). "
    "Communication follows the latency-bandwidth (alpha-beta) model comm(p, d) = alpha L(p) + "
    "beta B(p, d): L(p) message steps on the critical path, B(p, d) bytes one rank moves along "
    "it, for the MPI algorithm assumed per scheme in the table below (lg p = ceil(log2 p); "
    "m = one rank's compressed message of the whole vector and n = the uncompressed vector's "
    "bytes, both from the bytes each case measured, never from codec formulas). Encode and "
    "decode are the measured per-d costs scaled by the codec work E(p), D(p) of the slowest "
    "rank (an allgather rank decodes p messages). alpha, beta >= 0 are fitted per machine, "
    "scheme and compressor by least squares on the relative residuals over every measured "
    "(p, d) (compressor * pools a scheme's compressors: same link and algorithm, different "
    "m); a compressor whose own fit cannot separate alpha from beta is projected with the "
    "pooled one. Assumptions: no contention, no overlap between steps, homogeneous links, "
    "the library really runs the algorithm assumed (MPI libraries switch algorithms with "
    "message size and p), reduction arithmetic folded into beta. Projections past the "
    "largest measured p are extrapolations of this model, not measurements.")


def _model_section(fits: Sequence[Any], proj: Sequence[dict[str, Any]],
                   sizes: dict[str, int], tags: dict[str, str], labels: dict[str, str],
                   crows: Sequence[dict[str, Any]]) -> list[Block]:
    """The model's text, its fits, the projection table at each machine's d and crossovers."""
    from hpcq.analysis import model

    schemes = sorted({f.scheme for f in fits})
    algs = _algorithms(fits)
    used = [r for r in crows if model.usable(r)]
    crowded = sorted({str(r["file"]) for r in crows if r.get("cpu_binding") == "oversubscribed"})
    text = MODEL_TEXT
    if used and all((r.get("hosts") or 1) <= 1 for r in used):
        text += (" Every measurement here ran on one host: alpha and beta describe its shared "
                 "memory, not a network between nodes.")
    if crowded:
        text += (" Left out of the model: the cases of " + ", ".join(crowded) + ", which ran "
                 "oversubscribed (more ranks than cores: their times measure CPU contention).")
    blocks: list[Block] = [
        ("h", 2, "Alpha-beta model of the collectives and projection to 1024 ranks"),
        ("p", text),
        ("table", ["scheme", "MPI algorithm assumed", "L(p)", "B(p, d)", "encodes E(p)",
                   "decodes D(p)"],
         [[s, algs[s].mpi, *algs[s].text] for s in schemes]),
        ("h", 3, "Fits (alphabeta.csv, alphabeta.json)"),
        ("table", ["machine", "scheme", "compressor", "alpha us", "1/beta GB/s", "points",
                   "p measured", "d measured", "worst residual (fit - meas.) / meas.", "status"],
         [[tags.get(f.machine) or "-", f.scheme, labels.get(f.compressor, f.compressor),
           _g(f.alpha_s, 1e-6) if f.determined else "-",
           (_g(1e-9 / f.beta_s_per_byte) if f.beta_s_per_byte > 0 else "inf")
           if f.determined else "-", f.n_points, " ".join(map(str, f.p_values)),
           " ".join(_pow(d) for d in f.d_values) if len(f.d_values) < 4 else
           f"{_pow(f.d_values[0])}..{_pow(f.d_values[-1])} ({len(f.d_values)})",
           _worst(f) if f.determined else "-", f.status]
          for f in fits])]
    notes = sorted({f"{f.status}: {f.note}" for f in fits if f.note})
    if notes:
        blocks.append(("ul", notes))
    if not proj:
        blocks.append(("p", "No projection: no fit separates alpha from beta. That needs, per "
                            "scheme, two or more sizes d (or compressors with different message "
                            "sizes) on two or more ranks, ideally at two or more rank counts, "
                            "not oversubscribed."))
    for machine, d in sorted(sizes.items()):
        rows = [r for r in proj if r["machine"] == machine and r["d"] == d]
        on = f" on {tags[machine]}" if tags.get(machine) else ""
        ps = sorted({int(r["p"]) for r in rows})
        pmax = max((int(r["p"]) for r in rows if r["measured_total_s"] is not None), default=0)
        table = {}
        for r in rows:
            table.setdefault((r["scheme"], r["compressor"], r["fit"]), {})[int(r["p"])] = r
        blocks += [
            ("h", 3, f"Projection at d = {_pow(d)}{on} (projection.csv: every measured d)"),
            ("p", f"Model time per call in ms; * marks a measured p (the model's value; the "
                  f"measurement is in projection.csv). Past p = {pmax} the numbers are "
                  "extrapolations."),
            ("table", ["scheme", "compressor", "fit", *map(str, ps)],
             [[s, labels.get(c, c), fit, *[
                 (_g(v[p]["total_s"], 1e-3) + ("*" if v[p]["measured_total_s"] is not None
                                               else "")) if p in v else "-" for p in ps]]
              for (s, c, fit), v in sorted(table.items())])]
        cross = sorted((c for c in model.crossovers(proj, d=d) if c["machine"] == machine),
                       key=lambda c: (c["compressor"], model.PAIRS.index((c["slower"],
                                                                           c["faster"]))))
        lines = [_crossover_text(c, labels, pmax) for c in cross]
        if lines:
            blocks += [("p", "Crossovers (model):"), ("ul", lines)]
    return blocks


def _worst(f: Any) -> str:
    """"+67% (p=2, d=2^22)": the largest relative residual (fit - measured) and where."""
    if f.worst is None:
        return "-"
    p, d, rel = f.worst
    size = f"{100 * rel:+.0f}%" if -0.5 <= rel <= 1 else f"fit = {1 + rel:.2g} x measured"
    return f"{size} (p={p}, d={_pow(d)})"


def _pow(d: int) -> str:
    d = int(d)
    return f"2^{d.bit_length() - 1}" if d > 0 and d & (d - 1) == 0 else str(d)


def _crossover_text(c: dict[str, Any], labels: dict[str, str], pmax: int) -> str:
    """One crossover as a sentence."""
    what = (f"{labels.get(c['compressor'], c['compressor'])}: {c['faster']} is faster than "
            f"{c['slower']}")
    if c["faster"].startswith("allreduce-"):
        what += f" ({c['slower']} compression stops paying)"
    if c["p"] is None:
        return f"{what} at no p up to {c['p_max']}"
    if c["before"] is None:
        return f"{what} already at p = {c['p']}, the smallest"
    extra = f"; extrapolated past the measured p = {pmax}" if c["p"] > pmax else ""
    return f"{what} from p = {c['p']} on (not at p = {c['before']}){extra}"


def build_report(paths: str | Path | Iterable[str | Path], out_dir: str | Path, *,
                 kind: str = "all", plots: bool = True,
                 projection_d: int | None = None) -> dict[str, Any]:
    """Write the report for the result files ``paths`` into ``out_dir``.

    ``kind`` is ``all``, ``kernels``, ``collectives`` (with the alpha-beta model)
    or ``train``; ``plots=False`` skips the figures; ``projection_d`` is the d of
    the model's projection figure and table (default: the largest measured).
    Returns the paths written (``markdown``, ``html``, ``csv``, ``figures``), the
    figures ``skipped`` with why, and the ``problems`` (unreadable files).  Raises
    FileNotFoundError when no file is readable and ValueError when ``out_dir``
    exists and is not a directory or ``projection_d`` was not measured.
    """
    from hpcq.analysis import figures, model, training, workloads

    if kind not in ("all", *KINDS):
        raise ValueError(f"unknown kind {kind!r}; choose all, {', '.join(KINDS)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"report directory {str(out)!r} exists and is not a directory")
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    # validation runs of the verdict (JSON lines) may come beside the result files
    validation_files = [Path(p) for p in items if str(p).endswith(".jsonl")]
    files = expand_paths([p for p in items if not str(p).endswith(".jsonl")])
    kt, problems = load(files, kind="kernels")
    mt, _ = load(files, kind="kernels.memcpy")
    ct, _ = load(files, kind="collectives")
    wt, _ = load(files, kind="workload")
    bad = {f for f in files if any(p.startswith(f"{f}: ") for p in problems)}
    good = [f for f in files if f not in bad]
    if not good:
        what = "; ".join(problems) if problems else "nothing matched"
        raise FileNotFoundError(f"no readable result files: {what}")

    krows = kernel_rows(kt, mt) if kind in ("all", "kernels") else []
    crows = collective_rows(ct) if kind in ("all", "collectives") else []
    wrows = workloads.rows(wt) if kind in ("all", "workload") else []
    tcases = training.load_runs(good, kind="train", problems=[]) \
        if kind in ("all", "train") else []
    cpu = _cpu_models(good)
    trows = train_rows(tcases, cpu)
    mrows = [{"file": str(r["file"]), "d": int(r["d"]), "gbs": _num(r.get("gbs_median"))}
             for r in mt.rows()] if krows else []
    fits = model.fit(crows)
    proj = model.project(crows, fits)
    machines = sorted({str(r["machine"]) for r in [*krows, *crows, *trows]})
    sizes = _projection_sizes(proj, projection_d) if proj else {}
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {"csv": []}
    for name, rows, cols in (("kernels", krows, KERNEL_COLUMNS),
                             ("collectives", crows, COLLECTIVE_COLUMNS),
                             ("workload", wrows, workloads.COLUMNS),
                             ("train", trows, TRAIN_COLUMNS)):
        if kind in ("all", name):
            write_csv(out / f"{name}.csv", rows, cols)
            written["csv"].append(out / f"{name}.csv")
    if crows:
        written["csv"] += _model_files(out, fits, proj)

    # runs on different machines (CPU model) are never combined: each gets a tag m1, m2...
    tags = {m: f"m{i + 1}" if len(machines) > 1 else "" for i, m in enumerate(machines)}
    for r in [*krows, *trows]:
        r["tag"] = "_" + tags[str(r["machine"])] if tags[str(r["machine"])] else ""
    for c in tcases:
        c["_tag"] = "_" + tags[cpu[str(c["file"])]] if tags[cpu[str(c["file"])]] else ""
    for r in crows:
        r["tag"] = f"_p{int(r['nprocs'] or 0)}" + (
            f"_{tags[str(r['machine'])]}" if tags[str(r["machine"])] else "")
    kcomb = combine(krows, (*KERNEL_COLUMNS, "tag"), ["tag", "spec", "d"],
                    ["encode_gbs", "decode_gbs", "decode_into_gbs"])
    ccomb = combine(crows, (*COLLECTIVE_COLUMNS, "tag"), ["tag", "nprocs", "scheme", "spec", "d"],
                    ["latency_p50_s", "encode_median_s", "comm_median_s", "decode_median_s",
                     "nmse", "bits_per_coordinate", "breakeven_gbs"])
    for r in kcomb:  # the files behind each kernels group, for the memcpy reference lines
        r["file"] = next(k["file"] for k in krows if k["tag"] == r["tag"])
    specs = sorted({r["spec"] for r in krows} | {r["spec"] for r in crows})
    labels: dict[str, str] = {}
    for r in [*krows, *crows]:
        given = str(r.get("spec_given") or r["spec"])
        if len(given) < len(labels.get(r["spec"], r["spec"] + " ")):
            labels[r["spec"]] = given
    projection = {("_" + tags[m] if tags[m] else ""): {
        "d": d, "machine": tags[m], "rows": [r for r in proj if r["machine"] == m
                                             and r["d"] == d],
        "crossovers": [c for c in model.crossovers(proj, d=d) if c["machine"] == m]}
        for m, d in sizes.items()}
    figs, skipped = figures.render(out, kcomb=kcomb, mrows=mrows, ccomb=ccomb,
                                   specs=specs, labels=labels, plots=plots, train=tcases,
                                   projection=projection)
    wcomb = workloads.combine(wrows)
    wfigs, wskipped = workloads.draw(out, wcomb, plots)
    figs, skipped = [*figs, *wfigs], [*skipped, *wskipped]
    written["figures"], written["skipped"], written["problems"] = figs, skipped, problems

    def images(prefix: str) -> list[Block]:
        return [("img", f"{name}.png", caption, f"{name}.pdf") for name, caption in figs
                if name.startswith(prefix)]

    blocks: list[Block] = [
        ("h", 1, "hpcq report"),
        ("p", f"{len(good)} result file(s) read; {len(krows)} kernels case(s), {len(crows)} "
              f"collectives case(s), {len(wrows)} workload case(s), {len(trows)} training "
              f"run(s). Repeated runs of one case "
              "are combined as median [min, max] over runs; each run's time is the median "
              "over calls of the slowest rank. Tables: "
              + ", ".join(p.name for p in written["csv"]) + ".")]
    if crows:  # the verdict first: does compression pay?
        from hpcq.analysis.verdict_report import section

        vblocks, vfigs = section(good, crows, out, plots=plots,
                                 validation_files=validation_files)
        written["figures"] = [*vfigs, *figs]
        blocks += vblocks + [("img", f"{name}.png", caption, f"{name}.pdf")
                             for name, caption in vfigs]
    if len(machines) > 1:
        blocks.append(("p", "Machines (by CPU model; their runs are never combined): "
                            + "; ".join(f"m{i + 1} = {m}" for i, m in enumerate(machines))))
    if krows:
        blocks += [("h", 2, "Kernels (single process, input GB/s = 4d / median time)"),
                   ("table", ["machine", "spec", "d", "runs", "encode GB/s", "decode GB/s",
                              "decode into a reused buffer GB/s"],
                    [[r["tag"][1:] or "-", labels[r["spec"]],
                      f"2^{int(r['d']).bit_length() - 1}", r["runs"],
                      _range(r, "encode_gbs"), _range(r, "decode_gbs"),
                      _range(r, "decode_into_gbs")] for r in kcomb])]
    if crows:
        blocks += [("h", 2, "Collectives (p50 of the slowest rank)"),
                   ("table", ["machine", "ranks", "scheme", "spec", "d", "runs", "bits/coord",
                              "p50 us", "encode us", "comm us", "decode us", "NMSE",
                              "break-even GB/s"],
                    [[r["tag"].partition("_m")[2] and "m" + r["tag"].partition("_m")[2] or "-",
                      r["nprocs"], r["scheme"], labels[r["spec"]],
                      f"2^{int(r['d']).bit_length() - 1}", r["runs"],
                      _g(r.get("bits_per_coordinate.median")),
                      _range(r, "latency_p50_s", 1e-6), _g(r.get("encode_median_s.median"), 1e-6),
                      _g(r.get("comm_median_s.median"), 1e-6),
                      _g(r.get("decode_median_s.median"), 1e-6), _range(r, "nmse"),
                      _range(r, "breakeven_gbs")] for r in ccomb]),
                   ("p", BREAKEVEN_MODEL)]
    rest = [(n, c) for n, c in figs if not n.startswith(("train_", "model_", "workload_"))]
    if rest:
        blocks.append(("h", 2, "Figures of the kernels and collectives"))
    for name, caption in rest:
        blocks.append(("img", f"{name}.png", caption, f"{name}.pdf"))
    if crows:
        blocks += _model_section(fits, proj, sizes, tags, labels, crows)
        blocks += images("model_")
    blocks += workloads.section(wcomb, figs)
    if trows:
        blocks += _train_section(trows) + images("train_")
    if skipped:
        blocks += [("h", 2, "Figures not drawn"),
                   ("ul", [f"{name}: {why}" for name, why in skipped])]
    blocks.append(("h", 2, "Provenance"))
    for f in good:
        blocks += [("h", 3, str(f)), ("ul", provenance(f))]
    blocks += [("h", 2, "Files that could not be read"),
               ("ul", problems) if problems else ("p", "None.")]

    written["markdown"], written["html"] = out / "report.md", out / "report.html"
    written["markdown"].write_text(to_markdown(blocks))
    written["html"].write_text(to_html(blocks, "hpcq report"))
    return written
