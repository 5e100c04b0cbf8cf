"""The verdict: does compression pay for this model on this cluster?  (``hpcq verdict``)

::

    from hpcq.analysis.verdict import load_inputs, verdict

    inputs = load_inputs(["results/*.h5"])
    v = verdict(inputs, "resnet50", nodes=[4, 16, 64], ranks_per_node=8, link="10gbit",
                compute_ms=120)
    print(v.text())

From measured parts only: the collectives cases of the result files give each (scheme,
codec) an alpha-beta fit (:mod:`hpcq.analysis.model`) and measured codec times, which
:class:`hpcq.analysis.iteration.Part` turns into a per-bucket cost at any length, rank
count and link rate; the workload's DDP buckets (the workload benchmark's plan and policy:
tensors under ``min_size`` elements in one fp32 allreduce) and the compute time go through
the overlap model (:func:`hpcq.analysis.iteration.schedule`).  Each number says where it
comes from (``source``):

* ``measured``: a workload case of the files ran this (workload, scheme, codec) at this
  rank count over this link; its per-bucket times (median over iterations of the slowest
  rank) replace the model's, the overlap is still modelled;
* ``fitted``: from the collectives measured over this link: their measured times at
  the largest measured rank count, interpolated between the measured lengths, scaled as
  the alpha-beta fit scales beyond them and to other rank counts within the measured ones;
* ``extrapolated``: rank count beyond the largest measured (the fit's p dependence);
* ``link-modelled``: the requested link was not measured: the wire term 8/r replaces the
  measured link's (see :mod:`hpcq.analysis.iteration`).

All ranks are assumed on one flat network at the link rate (every step of every
collective at the link's speed; intra-node links are not modelled as faster).
A (scheme, codec) without a measurement is named with the command that measures it.

Accuracy: per codec the NMSE per bucket of the workload cases (median and worst bucket),
else the collectives' vector NMSE (noted), and from training cases (kind ``train``, the
same method with the fp32 compressor as reference) the iterations to the reference's
error at half its run, giving time-to-accuracy = (iterations ratio) x (iteration-time
ratio).  A codec faster per iteration but slower to accuracy is marked.

The HDF5 output is a small file of its own (not a result file; ``hpcq_format`` =
``verdict``, :data:`FORMAT_VERSION`): root attributes (workload, link, nodes,
ranks_per_node, compute_s, compute_source, inputs, conclusion, notes) and one dataset per
column of :data:`COLUMNS` under ``/rows``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpcq.analysis.iteration import (
    Part,
    Timeline,
    breakeven,
    compute_seconds,
    rate_text,
    schedule,
)

FORMAT_VERSION = "1.0.0"
BASELINES = ("allreduce-fp32", "allreduce-bf16")
FP32 = "allreduce-fp32"
#: Columns of the verdict table (printed, HDF5 ``/rows``).
COLUMNS = ("scheme", "spec", "label", "nodes", "p", "iteration_s", "exposed_s", "reference",
           "reference_s", "speedup", "source", "breakeven_bits", "breakeven_kind",
           "nmse", "nmse_worst_bucket", "nmse_source", "tta_ratio", "tta_note")
SOURCES = ("measured", "fitted", "extrapolated", "link-modelled")
_MARK = {"measured": "=", "fitted": "", "extrapolated": "*", "link-modelled": "~"}


def link_bits(text: str) -> float:
    """Bits per second of ``--link`` (``10gbit``, ``100mbit``, ``25gbps``)."""
    from hpcq.netem import rate_bits

    try:
        return rate_bits(str(text))
    except ValueError:
        raise ValueError(f"--link {text!r}: expected a number and a unit, e.g. 10gbit, "
                         f"100mbit, 1.25gbps (units: bit, kbit, mbit, gbit, tbit, bps, "
                         f"kbps, mbps, gbps)") from None


def parse_nodes(text: str | Sequence[int]) -> list[int]:
    """``"4,16,64"`` -> [4, 16, 64]; ValueError for a count <= 0 or not an integer."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        try:
            n = int(str(item).strip())
        except ValueError:
            raise ValueError(f"--nodes: {item!r} is not an integer (e.g. 4,16,64)") from None
        if n <= 0:
            raise ValueError(f"--nodes: node counts must be > 0, got {n}")
        out.append(n)
    if not out:
        raise ValueError("--nodes: give at least one node count")
    return sorted(set(out))


def _link_rate(attrs: dict[str, Any]) -> tuple[str, float | None, float | None]:
    """(link name, nominal bit/s, measured bit/s) of a file: its emulated link (``hpcq
    netem``), or ``unshaped`` (shared memory or a real network: no rate known)."""
    text = attrs.get("emulated_link")
    if not text:
        return "unshaped", None, None
    rate = str(text).split(",")[0].partition("=")[2]
    got = attrs.get("emulated_link_measured_gbit")
    nominal = link_bits(rate)
    return rate, nominal, float(got) * 1e9 if got else nominal


@dataclass
class Inputs:
    """What the result files hold, by link: parts, workload cases, training cases."""

    files: list[str]
    machine: str
    #: link name -> (nominal bit/s or None, measured bit/s or None, {(scheme, spec): Part}).
    links: dict[str, tuple[float | None, float | None, dict[tuple[str, str], Part]]]
    #: (scheme, spec) -> (largest-d vector NMSE, d) from collectives.
    vector_nmse: dict[tuple[str, str], tuple[float, int]]
    workload_cases: list[dict[str, Any]]
    train_cases: list[dict[str, Any]]
    #: (scheme, spec) -> largest measured p.
    p_max: dict[tuple[str, str], int]
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: canonical codec spec -> the shortest spec given for it (for tables).
    labels: dict[str, str] = field(default_factory=dict)


def load_inputs(paths: str | Path | Iterable[str | Path], *, allow_mixed: bool = False
                ) -> Inputs:
    """Read the collectives, workload and training cases of the result files.

    ValueError when files from different machines (CPU models) are mixed without
    ``allow_mixed``; FileNotFoundError when no file is readable.
    """
    from hpcq.analysis import model
    from hpcq.analysis.load import expand_paths, load
    from hpcq.analysis.report import collective_rows
    from hpcq.analysis.training import load_runs
    from hpcq.store import read_attrs

    files = expand_paths(paths)
    problems: list[str] = []
    attrs: dict[str, dict[str, Any]] = {}
    for f in files:
        try:
            attrs[str(f)] = read_attrs(f)
        except (OSError, ValueError, KeyError) as e:
            problems.append(f"{f}: {' '.join(str(e).split())}")
    if not attrs:
        raise FileNotFoundError("--from: no readable result files"
                                + (f" ({'; '.join(problems)})" if problems else ""))
    cpus = {str(a.get("cpu_model") or "unknown") for a in attrs.values()}
    if len(cpus) > 1 and not allow_mixed:
        raise ValueError(f"--from: result files from different machines ({' / '.join(sorted(cpus))}"
                         f"); pass --allow-mixed to combine them")
    good = [Path(f) for f in attrs]
    ct, _ = load(good, kind="collectives")
    rows = collective_rows(ct) if len(ct) else []
    link_of = {f: _link_rate(a) for f, a in attrs.items()}
    for r in rows:  # fit per link: the machine key carries the file's link
        r["machine"] = link_of[str(r["file"])][0]
    fits = model.fit(rows)
    pts = model.points(rows)
    links: dict[str, tuple[float | None, float | None, dict[tuple[str, str], Part]]] = {}
    p_max: dict[tuple[str, str], int] = {}
    notes: list[str] = []
    rates = {name: (nominal, got) for name, nominal, got in link_of.values()}
    from hpcq.analysis.model import algorithm

    for key in sorted({(q["machine"], q["scheme"], q["compressor"]) for q in pts}):
        link, sch, spec = key
        mine = [q for q in pts if (q["machine"], q["scheme"], q["compressor"]) == key]
        p_max[(sch, spec)] = max(p_max.get((sch, spec), 0), max(q["p"] for q in mine))
        f, which = model.fit_for(fits, link, sch, spec)
        if f is None:
            notes.append(f"{sch} {spec} over {link}: the alpha-beta fit is under-determined "
                         f"(measure more sizes)")
            continue
        p0 = max(q["p"] for q in mine)
        at = sorted((q for q in mine if q["p"] == p0), key=lambda q: q["d"])
        big = at[-1]
        cost = algorithm(sch)
        assert cost is not None  # points() kept known schemes only
        header = 0.0 if sch in BASELINES else big["header"]  # a cast has no codec header
        m = model.message_bytes(big)
        nominal, rate = rates[link]
        beta_cpu = f.beta_s_per_byte - (8.0 / rate if rate else 0.0)
        links.setdefault(link, (nominal, rate, {}))[2][(sch, spec)] = Part(
            sch, spec, cost, f.alpha_s, max(0.0, beta_cpu),
            max(0.0, (m - header) / big["d"]), header, p0,
            tuple(q["d"] for q in at), tuple(q["encode_s"] for q in at),
            tuple(q["decode_s"] for q in at),
            (f"fit {f.status} ({which}), rms residual {f.rms_rel_residual:.0%}",),
            tuple(q["comm_s"] for q in at), rate)
    vector_nmse: dict[tuple[str, str], tuple[float, int]] = {}
    for r in rows:
        k = (str(r["scheme"]), str(r["spec"]))
        if r.get("nmse") is not None and int(r["d"]) >= vector_nmse.get(k, (0, 0))[1]:
            vector_nmse[k] = (float(r["nmse"]), int(r["d"]))
    labels: dict[str, str] = {}
    for r in rows:
        given = str(r.get("spec_given") or r["spec"])
        if len(given) < len(labels.get(str(r["spec"]), str(r["spec"]) + " ")):
            labels[str(r["spec"])] = given
    wcases = load_runs(good, kind="workload", problems=problems)
    for c in wcases:
        c["link"] = link_of[str(c["file"])][0]
    tcases = load_runs(good, kind="train", problems=problems)
    return Inputs([str(f) for f in good], cpus.pop() if len(cpus) == 1 else " / ".join(
        sorted(cpus)), links, vector_nmse, wcases, tcases, p_max, notes, problems, labels)


def _buckets(workload_name: str, scheme_spec: str, spec: str, min_size: int
             ) -> list[tuple[int, int]]:
    """Per DDP bucket (compressed elements, uncompressed elements) as the workload benchmark
    sends them (a baseline: all of it in its format, counted as compressed)."""
    from hpcq.bench.workload import WorkloadCase, plan

    case = WorkloadCase(workload_name, scheme_spec, spec, "ddp", min_size, (), "normal", 1, 0, 0)
    out = []
    for groups in plan(case):
        unc = sum(g.hi - g.lo for g in groups if g.spec is None)
        tot = groups[-1].hi
        out.append((tot, 0) if case.baseline else (tot - unc, unc))
    return out


def _measured_buckets(inputs: Inputs, workload_name: str, sch: str, spec: str, p: int,
                      link: str) -> list[tuple[float, float, float]] | None:
    """Per-bucket (encode, comm, decode) of a workload case with these facts, or None."""
    for c in inputs.workload_cases:
        if (c.get("workload"), c.get("scheme"), c.get("nprocs"), c.get("link")) != (
                workload_name, sch, p, link) or (sch not in BASELINES and c.get("spec") != spec):
            continue
        wall = np.asarray(c["bucket_s"])  # (ranks, buckets, iterations)
        slow = wall.argmax(axis=0)
        bi, ii = np.meshgrid(np.arange(wall.shape[1]), np.arange(wall.shape[2]), indexing="ij")
        parts = [np.median(np.asarray(c[k])[slow, bi, ii], axis=1)
                 for k in ("encode_s", "comm_s", "decode_s")]
        return [tuple(float(x[b]) for x in parts) for b in range(wall.shape[1])]
    return None


def modelled(parts: dict[tuple[str, str], Part], workload_name: str, sch: str, spec: str,
             p: int, rate: float, compute_s: float, optimizer_s: float = 0.0,
             min_size: int = 4096, plans: dict[tuple[str, str], Any] | None = None
             ) -> Timeline:
    """The modelled iteration of (scheme, codec) on the workload's DDP buckets: per bucket
    the codec part on its compressed elements plus the fp32 allreduce of the rest."""
    plans = {} if plans is None else plans
    part, fp32 = parts[(sch, spec)], parts.get((FP32, "fp32"))
    plan = plans.setdefault((sch, spec), _buckets(workload_name, sch, spec, min_size))
    costs = []
    for nc, nu in plan:
        c = part.call(nc, p, rate)
        if nu and fp32 is not None:
            u = fp32.call(nu, p, rate)
            c = (c[0] + u[0], c[1] + u[1], c[2] + u[2])
        costs.append(c)
    return schedule([nc + nu for nc, nu in plan], costs, compute_s, optimizer_s)


def validation(inputs: Inputs, runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Predicted against measured iterations (``analysis/scripts/verdict_validate.py`` runs).

    Per run: the model from the files' parts over the run's link (``predicted``), and the
    overlap model fed the run's own per-bucket call times (``overlap_only``: checks the
    schedule alone); errors are (predicted - measured) / measured of the medians.
    """
    out = []
    for run in runs:
        link = str(run.get("link") or "").split(",")[0].partition("=")[2] or "unshaped"
        if link not in inputs.links:
            continue
        _, got, parts = inputs.links[link]
        sch, spec = run["scheme"], run.get("spec")
        key = next((k for k in parts if k[0] == sch and (sch in BASELINES or
                    inputs.labels.get(k[1], k[1]) == spec or k[1] == spec)), None)
        if key is None or got is None:
            continue
        t = modelled(parts, run["workload"], *key, int(run["nprocs"]), got,
                     float(run["compute_s"]), 0.0, int(run.get("min_size", 4096)))
        walls = [(0.0, float(b[3]), 0.0) for b in run["bucket_s"]]
        own = schedule(run["elements"], walls, float(run["compute_s"]))
        it = float(np.median(run["iteration_s"]))
        busy = float(np.median(run["busy_s"]))
        out.append({"workload": run["workload"], "link": link,
                    "label": _label(sch, spec or ""), "compute_s": float(run["compute_s"]),
                    "measured_s": it, "predicted_s": t.iteration_s,
                    "error": (t.iteration_s - it) / it, "measured_comm_s": busy,
                    "predicted_comm_s": t.comm_s, "comm_error": (t.comm_s - busy) / busy,
                    "overlap_only_s": own.iteration_s,
                    "overlap_error": (own.iteration_s - it) / it,
                    "spread": (max(run["iteration_s"]) - min(run["iteration_s"])) / it})
    return out


@dataclass
class Verdict:
    """The verdict of one workload: rows of :data:`COLUMNS`, the conclusion and notes."""

    workload: str
    link: str
    link_bits: float
    nodes: list[int]
    ranks_per_node: int
    compute_s: float
    compute_source: str
    rows: list[dict[str, Any]]
    conclusion: str
    notes: list[str]
    missing: list[str]
    inputs: list[str]

    def text(self) -> str:
        """The printed verdict: a speed-up table per node count, then accuracy and notes."""
        lines = [f"# hpcq verdict: {self.workload} on {', '.join(map(str, self.nodes))} nodes x "
                 f"{self.ranks_per_node} ranks, link {rate_text(self.link_bits)}, compute "
                 f"{1e3 * self.compute_s:.4g} ms/iteration ({self.compute_source})",
                 f"# conclusion: {self.conclusion}",
                 "# speed-up = reference iteration / codec iteration; reference = the faster of "
                 "the fp32 and bf16 allreduce; break-even: the link rate below which the codec "
                 "pays", "# marks: = measured per-bucket times, (none) fitted alpha-beta, "
                 "* extrapolated beyond the measured ranks, ~ link not measured (wire term "
                 "modelled)"]
        head = f"{'# scheme codec':<28}" + "".join(f"{f'{n} nodes':>16}" for n in self.nodes)
        lines += ["", "# iteration time ms [speed-up]", head]
        for key in dict.fromkeys((r["scheme"], r["spec"]) for r in self.rows):
            rs = {r["nodes"]: r for r in self.rows if (r["scheme"], r["spec"]) == key}
            label = next(iter(rs.values()))["label"]
            cells = [f"{1e3 * rs[n]['iteration_s']:.4g} [{rs[n]['speedup']:.2f}]"
                     f"{_MARK[rs[n]['source']]}" if n in rs else "-" for n in self.nodes]
            lines.append(f"{label:<28}" + "".join(f"{c:>16}" for c in cells))
        lines += ["", "# break-even link rate (codec faster below it) per node count", head]
        for key in dict.fromkeys((r["scheme"], r["spec"]) for r in self.rows
                                 if r["scheme"] not in BASELINES):
            rs = {r["nodes"]: r for r in self.rows if (r["scheme"], r["spec"]) == key}
            label = next(iter(rs.values()))["label"]
            lines.append(f"{label:<28}" + "".join(
                f"{_be(rs[n]) if n in rs else '-':>16}" for n in self.nodes))
        lines += ["", "# accuracy cost: NMSE of the mean (median / worst bucket), "
                      "time-to-accuracy vs fp32 at the largest node count"]
        for key in dict.fromkeys((r["scheme"], r["spec"]) for r in self.rows
                                 if r["scheme"] not in BASELINES):
            r = [x for x in self.rows if (x["scheme"], x["spec"]) == key][-1]
            nm = ("not measured" if r["nmse"] is None else
                  f"{r['nmse']:.3g} / {r['nmse_worst_bucket']:.3g}"
                  if r["nmse_worst_bucket"] is not None else f"{r['nmse']:.3g}")
            lines.append(f"{r['label']:<28}NMSE {nm} ({r['nmse_source']}); {r['tta_note']}")
        for m in self.missing:
            lines.append(f"# not measured: {m}")
        for n in self.notes:
            lines.append(f"# note: {n}")
        return "\n".join(lines)

    def write(self, path: str | Path) -> Path:
        """The verdict as a small HDF5 file (module docstring)."""
        import h5py

        path = Path(path)
        with h5py.File(path, "w") as f:
            f.attrs.update({"hpcq_format": "verdict", "format_version": FORMAT_VERSION,
                            "workload": self.workload, "link": self.link,
                            "link_bits": self.link_bits, "nodes": np.array(self.nodes),
                            "ranks_per_node": self.ranks_per_node, "compute_s": self.compute_s,
                            "compute_source": self.compute_source,
                            "conclusion": self.conclusion, "notes": list(self.notes) or [""],
                            "missing": list(self.missing) or [""],
                            "inputs": list(self.inputs) or [""]})
            g = f.create_group("rows")
            for c in COLUMNS:
                vals = [r[c] for r in self.rows]
                if all(isinstance(v, (int, float)) or v is None for v in vals) and c not in (
                        "scheme", "spec", "label", "source", "reference", "nmse_source", "tta_note",
                        "breakeven_kind"):
                    g[c] = np.array([np.nan if v is None else v for v in vals], dtype=np.float64)
                else:
                    g[c] = np.array(["" if v is None else str(v) for v in vals], dtype="S")
        return path


def read(path: str | Path) -> dict[str, Any]:
    """A verdict file back: its attributes and ``rows`` (list of dicts)."""
    import h5py

    with h5py.File(path, "r") as f:
        if f.attrs.get("hpcq_format") != "verdict":
            raise ValueError(f"{path}: not an hpcq verdict file")
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
        cols = {c: f["rows"][c][()] for c in f["rows"]}
    n = len(next(iter(cols.values()))) if cols else 0
    rows = [{c: (v[i].decode() if isinstance(v[i], bytes) else float(v[i]))
             for c, v in cols.items()} for i in range(n)]
    return {**attrs, "rows": rows}


def _label(sch: str, spec: str) -> str:
    return sch if sch in BASELINES else f"{sch} {spec}"


def _be(r: dict[str, Any]) -> str:
    kind = r["breakeven_kind"]
    if kind == "never":
        return "never"
    if kind == "always":
        return "always"
    text = rate_text(r["breakeven_bits"]).replace("bit/s", "b")
    return text if kind == "crossing" else f">{text}"


def measure_command(workload_name: str, sch: str, spec: str | None, link: str) -> str:
    """The command that measures a missing (scheme, codec) for the verdict."""
    what = f"--schemes {sch}" + (f" --compressors {spec}" if spec else "")
    return (f"hpcq netem --rate {link} -- mpiexec -n 2 hpcq bench collectives {what} "
            f"--sizes 10:22:3 -o parts.h5   (and for measured buckets: the same with "
            f"--workload {workload_name})")


def _accuracy(inputs: Inputs, workload_name: str, sch: str, spec: str
              ) -> tuple[float | None, float | None, str]:
    """(NMSE, worst bucket NMSE, source) of a codec."""
    for c in inputs.workload_cases:
        if (c.get("workload"), c.get("scheme"), c.get("spec")) == (workload_name, sch, spec):
            b = np.asarray(c.get("bucket_nmse", []), dtype=np.float64)
            if b.size:
                return float(np.median(b)), float(b.max()), "measured per bucket"
    if (sch, spec) in inputs.vector_nmse:
        v, d = inputs.vector_nmse[(sch, spec)]
        return v, None, f"collectives vector NMSE at d = {d}"
    return None, None, "not measured"


def _iterations_to(case: dict[str, Any], target: float, y: str) -> float | None:
    from hpcq.analysis.training import curve

    xs, ys = curve(case, "iteration", y)
    hit = np.nonzero(ys <= target)[0]
    return float(xs[hit[0]]) if hit.size else None


def _tta(inputs: Inputs, spec: str, speedup: float, given: str) -> tuple[float | None, str]:
    """Time-to-accuracy ratio (codec / fp32) and its words, from training cases."""
    from hpcq.analysis.training import has_dist

    runs = [c for c in inputs.train_cases if str(c.get("compressor")) == spec]
    for c in runs:
        ref = next((r for r in inputs.train_cases if r.get("problem") == c.get("problem")
                    and r.get("method") == c.get("method") and r.get("compressor") == "fp32"),
                   None)
        if ref is None:
            continue
        y = "dist" if has_dist(ref) and has_dist(c) else "loss"
        from hpcq.analysis.training import curve

        xs, ys = curve(ref, "iteration", y)
        half = int(np.searchsorted(xs, xs[-1] / 2))
        target, n_ref = float(ys[half]), float(xs[half])
        n_c = _iterations_to(c, target, y)
        where = f"{c.get('method')} on {c.get('problem')}, target {y} {target:.3g}"
        if n_ref <= 0:
            continue
        if n_c is None:  # never reached in the run: an unbounded time to accuracy
            return math.inf, (f"time-to-accuracy: not reached in {int(xs[-1])} iterations "
                              f"(fp32 needs {int(n_ref)}; {where}): slower to accuracy")
        ratio = (n_c / n_ref) / speedup
        mark = (" -- faster per iteration but SLOWER TO ACCURACY" if speedup > 1 and ratio > 1
                else "")
        return ratio, (f"time-to-accuracy {ratio:.2f}x fp32's ({int(n_c)} vs {int(n_ref)} "
                       f"iterations; {where}){mark}")
    return None, ("accuracy cost not measured: hpcq run jobs/default.toml --set "
                  f"'train.compressors=[\"fp32\", \"{given}\"]' -o train.h5")


def verdict(inputs: Inputs, workload_name: str, *, nodes: Sequence[int], ranks_per_node: int,
            link: str, compute_ms: float | None = None, flops: float | None = None,
            batch: int = 32, optimizer_ms: float = 0.0, min_size: int = 4096) -> Verdict:
    """The verdict of one workload (module docstring)."""
    from hpcq.workloads import workload

    try:
        wl = workload(workload_name)
    except (ValueError, OSError) as e:
        raise ValueError(f"--workload: {e}") from None
    rate = link_bits(link)
    nodes = parse_nodes(list(nodes))
    if ranks_per_node <= 0:
        raise ValueError(f"--ranks-per-node must be > 0, got {ranks_per_node}")
    if nodes[0] * ranks_per_node < 2:
        raise ValueError(f"--nodes x --ranks-per-node: {nodes[0]} x {ranks_per_node} is one "
                         f"rank, which communicates nothing; give 2 or more ranks")
    if optimizer_ms < 0:
        raise ValueError(f"--optimizer-ms must be >= 0, got {optimizer_ms}")
    compute_s, source_text = compute_seconds(wl.forward_macs, compute_ms=compute_ms,
                                             flops=flops, batch=batch)
    if not inputs.links:
        raise ValueError("--from: the files hold no usable collectives cases (2+ ranks, not "
                         "oversubscribed); measure them with: "
                         + measure_command(workload_name, "allreduce-fp32 allreduce-bf16 "
                                           "allgather", "qsgd:bits=4", link))
    # the measured link nearest the requested rate (in log), its parts
    def distance(name: str) -> float:
        r = inputs.links[name][0]
        return abs(math.log(rate / r)) if r else math.inf

    link_name = min(inputs.links, key=distance)
    nominal, measured_rate, parts = inputs.links[link_name]
    same_link = nominal is not None and abs(math.log(rate / nominal)) < 1e-6
    # over the measured link the fit is the measurement: its wire term at the rate achieved
    eff = measured_rate if same_link and measured_rate else rate
    notes = [f"parts from the link {link_name!r}"
             + (f" (achieved {rate_text(measured_rate)})" if same_link else
                f" (the requested {rate_text(rate)} was not measured: the wire term is "
                "modelled)")]
    notes += inputs.notes
    opt_s = optimizer_ms / 1e3
    fp32 = parts.get((FP32, "fp32"))
    missing = [f"{b}: " + measure_command(workload_name, b, None, link) for b in BASELINES
               if (b, b.partition("-")[2]) not in parts]
    if fp32 is None:
        missing.append("the policy sends small tensors in an fp32 allreduce: its fit is "
                       "needed for every compressed scheme")

    plans: dict[tuple[str, str], list[tuple[int, int]]] = {}

    def _timeline(sch: str, spec: str, p: int, r: float) -> Timeline:
        return modelled(parts, workload_name, sch, spec, p, r, compute_s, opt_s, min_size,
                        plans)

    rows: list[dict[str, Any]] = []
    baselines = [k for k in parts if k[0] in BASELINES]
    codecs = sorted(k for k in parts if k[0] not in BASELINES and fp32 is not None)
    for n in nodes:
        p = n * ranks_per_node
        ref_iters = {k: _timeline(*k, p, eff).iteration_s for k in baselines}

        def reference(r: float, p: int = p) -> float:
            return min(_timeline(*k, p, r).iteration_s for k in baselines)

        ref_key = min(ref_iters, key=ref_iters.get) if ref_iters else None  # type: ignore[arg-type]
        for k in [*sorted(baselines), *codecs]:
            sch, spec = k
            meas = _measured_buckets(inputs, workload_name, sch, spec, p, link_name) \
                if same_link else None
            if meas is not None:
                plan = plans.setdefault(k, _buckets(workload_name, sch, spec, min_size))
                t = schedule([a + b for a, b in plan], meas, compute_s, opt_s)
                source = "measured"
            else:
                t = _timeline(sch, spec, p, eff)
                source = ("link-modelled" if not same_link else
                          "extrapolated" if p > inputs.p_max.get(k, 0) else "fitted")
            ref_s = ref_iters[ref_key] if ref_key else None
            speedup = ref_s / t.iteration_s if ref_s else math.nan
            row = {"scheme": sch, "spec": spec, "label": _label(sch, inputs.labels.get(spec, spec)),
                   "nodes": n, "p": p,
                   "iteration_s": t.iteration_s, "exposed_s": t.exposed_s,
                   "reference": ref_key[0] if ref_key else None, "reference_s": ref_s,
                   "speedup": speedup, "source": source, "breakeven_bits": None,
                   "breakeven_kind": "", "nmse": None, "nmse_worst_bucket": None,
                   "nmse_source": "", "tta_ratio": None, "tta_note": ""}
            if sch not in BASELINES and baselines:
                be, kind = breakeven(lambda r, k=k, p=p: _timeline(*k, p, r).iteration_s,
                                     reference)
                row["breakeven_bits"], row["breakeven_kind"] = be, kind
                row["nmse"], row["nmse_worst_bucket"], row["nmse_source"] = _accuracy(
                    inputs, workload_name, sch, spec)
                row["tta_ratio"], row["tta_note"] = _tta(inputs, spec, speedup,
                                                         inputs.labels.get(spec, spec))
            rows.append(row)
    conclusion = _conclude(rows, rate, nodes)
    notes.append("flat network: every rank at the link rate (intra-node links not modelled "
                 "as faster); codec work on the communication stream, not slowing the "
                 "backward")
    return Verdict(workload_name, link, rate, nodes, ranks_per_node, compute_s, source_text,
                   rows, conclusion, notes, missing, inputs.files)


def _conclude(rows: Sequence[dict[str, Any]], rate: float, nodes: Sequence[int]) -> str:
    codec = [r for r in rows if r["scheme"] not in BASELINES and math.isfinite(r["speedup"])]
    if not codec:
        return "no compressed scheme measured: nothing to compare"
    ref = rows[0]["reference"]
    wins = [r for r in codec if r["speedup"] > 1.0]
    if not wins:
        best = max(codec, key=lambda r: r["speedup"])
        return (f"at {rate_text(rate)} no codec beats the {ref} at {nodes[0]}-{nodes[-1]} "
                f"nodes (best: {best['label']} "
                f"{best['speedup']:.2f}x at {best['nodes']} nodes)")
    best = max(wins, key=lambda r: r["speedup"])
    nm = f"NMSE {best['nmse']:.2g}" if best["nmse"] is not None else "NMSE not measured"
    tta = best["tta_ratio"] or 0.0
    slow = (" but does not reach fp32's accuracy in its training runs" if math.isinf(tta) else
            f" but {tta:.2f}x slower to accuracy" if tta > 1 else "")
    return (f"{best['label']} is {best['speedup']:.2f}x faster than the "
            f"{ref} at {best['nodes']} nodes over {rate_text(rate)} ({nm}){slow}")


def validation_table(rows: Sequence[dict[str, Any]]) -> str:
    """The validation rows as aligned text (ms; errors in %)."""
    lines = [f"{'# workload':<11}{'link':>8}  {'scheme codec':<22}{'measured':>9}{'predicted':>10}"
             f"{'err%':>7}{'comm meas':>10}{'comm pred':>10}{'err%':>7}{'overlap':>9}{'err%':>7}"
             f"{'spread%':>8}"]
    for r in rows:
        lines.append(f"{r['workload']:<11}{r['link']:>8}  {r['label']:<22}"
                     f"{1e3 * r['measured_s']:>9.0f}{1e3 * r['predicted_s']:>10.0f}"
                     f"{100 * r['error']:>7.1f}{1e3 * r['measured_comm_s']:>10.0f}"
                     f"{1e3 * r['predicted_comm_s']:>10.0f}{100 * r['comm_error']:>7.1f}"
                     f"{1e3 * r['overlap_only_s']:>9.0f}{100 * r['overlap_error']:>7.1f}"
                     f"{100 * r['spread']:>8.0f}")
    return "\n".join(lines)
