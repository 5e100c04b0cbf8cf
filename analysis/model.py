"""The alpha-beta model of the collectives: fitted to measured cases, projected to more ranks.

::

    from hpcq.analysis.model import crossovers, fit, project

    fits = fit(rows)            # rows: hpcq.analysis.report.collective_rows(table)
    proj = project(rows, fits)  # p = 2, 4, ..., 1024 (and the measured p) at each measured d
    crossovers(proj)            # where two-phase overtakes allgather, allgather fp32 Allreduce

One call of a scheme costs ``encode + comm + decode`` (the slowest rank's medians).
The communication follows the latency-bandwidth (Hockney) model

    comm(p, d) = alpha * L(p) + beta * B(p, d)

with L(p) the sequential message steps on the critical path of the MPI algorithm
assumed for the scheme, and B(p, d) the bytes one rank sends or receives along
that path (:data:`ALGORITHMS`; ``lg p`` = ceil(log2 p), n = the uncompressed
vector's wire bytes, m = one rank's compressed message of the whole vector):

==============  ========================================  ================  ======================
scheme          MPI algorithm assumed                     L(p)              B(p, d)
==============  ========================================  ================  ======================
allreduce-*     Rabenseifner: recursive-halving reduce-   2 lg p            2 (p-1)/p n
                scatter, recursive-doubling allgather
allgather       recursive-doubling Allgather(v)           lg p              (p-1) m
two-phase       pairwise Alltoall(v) of m/p-byte chunks,  (p-1) + lg p      2 (p-1)/p m
                recursive-doubling Allgather(v) of m/p
ps              binomial Gather(v) to rank 0, scatter +   2 lg p + (p-1)    (p-1) m + 2 (p-1)/p 4d
                ring-allgather Bcast of the fp32 mean
ps-compressed   the same, the Bcast carrying m bytes      2 lg p + (p-1)    (p-1) m + 2 (p-1)/p m
ps-reduce       Rabenseifner Reduce, then the Bcast above 3 lg p + (p-1)    4 (p-1)/p n
==============  ========================================  ================  ======================

m and n come from the bytes each case measured (``wire_bytes_per_rank``, the
mean over ranks of ``bytes_sent``), never from codec formulas: for ``ps`` rank
0 sends the 4d-byte broadcast, so m = (p wire - 4d) / (p - 1); a two-phase
rank sends p chunk messages, each with the codec's header h
(``compressor.header_bytes``), so at other p its message is wire - p0 h + p h.

Encode and decode are the measured per-d costs, scaled from the nearest measured
rank count p' (in log2 p; the larger on a tie) by the codec work of the slowest
rank, counted in whole vectors (E(p), D(p) in :data:`ALGORITHMS`):
encode(p) = encode(p') E(p) / E(p').  An allgather rank decodes p messages
(D = p), a two-phase rank encodes p chunks and one re-compressed chunk
(E = 1 + 1/p) and decodes twice a vector's worth (D = 2), the ps root decodes
all p messages.  At a measured p they are the measurement.

Fit: per (machine, scheme, compressor), alpha and beta >= 0 by least squares on
the relative residuals of every measured (p, d) (repeated runs: their medians
first); and per (machine, scheme) pooled over its compressors (``*``), which
share the link and the algorithm and differ in m only.  Status ``ok``: two or
more rank counts; ``single p``: alpha and beta come from the d dependence
alone, the p dependence is the model's, not measured; ``under-determined``:
the points cannot separate alpha from beta (one point, or L and B
proportional), and projections use the pooled fit when that one is
determined.  Cases on one rank (no communication) and cases that ran
oversubscribed (``cpu_binding``: more ranks than cores, so the times measure
CPU contention, not the link) are left out.

Two link classes (node-aware schemes, ``two-level``: :attr:`Cost.intra_steps`): the
time splits into the node part and the leaders' part.  The leaders' part is the outer
scheme's terms at the node count ``L = p / k`` (k the measured ranks per node, kept when
projecting), fitted like any scheme on ``comm - intra`` (the slowest leader's medians)
with m from a node's bytes (``inter_wire_bytes_per_leader``: the leader's, or with
``mode=shard`` its k ranks' shards together, which share the node's link).  The node part
``alpha_in L_in(k) + beta_in B_in(k, n)`` gets its own alpha and beta (:func:`fit_intra`,
per machine, pooled over every node-aware case) when the measured (k, d) separate them;
otherwise (one k and one d, or proportional terms) it assumes alpha_in = 0 and
beta_in = the median measured intra time per byte (status ``assumed``).  Projections keep
k fixed and grow the node count: p = 2^j >= k ranks.

Assumptions: no contention (every step runs at full link speed), no overlap
of steps, homogeneous links, codec work independent of the link and of p
beyond E and D, the reduction arithmetic folded into beta.  Projections past
the largest measured p are extrapolations.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from hpcq.collectives.scheme import Cost

#: The rank counts of :func:`project` besides the measured ones: 2, 4, ..., 1024.
PROJECTION_P = tuple(2 ** k for k in range(1, 11))
#: Pairs (slower at small p, faster at large p) that :func:`crossovers` looks for.
PAIRS = (("allgather", "two-phase"), ("allgather", "allreduce-fp32"),
         ("two-phase", "allreduce-fp32"))
POOLED = "*"
_RANK_TOL = 1e-9


#: The cost terms of a scheme (defined with the scheme, :class:`hpcq.collectives.Cost`).
Algorithm = Cost


def _registered() -> dict[str, Cost]:
    from hpcq.collectives import SCHEMES

    return {name: s.cost for name, s in SCHEMES.items()}


#: Every registered scheme's cost terms, by name (read from the scheme objects).
ALGORITHMS: dict[str, Cost] = _registered()


def algorithm(name: str) -> Cost | None:
    """The cost terms of scheme ``name`` (a spec with parameters too); None if hpcq has no
    such scheme (a file written by a newer hpcq)."""
    from hpcq.collectives import scheme

    if name in ALGORITHMS:
        return ALGORITHMS[name]
    try:
        return scheme(name).cost
    except ValueError:
        return None


@dataclass(frozen=True)
class Fit:
    """alpha and beta of one (machine, scheme, compressor); compressor ``*``: pooled."""

    machine: str
    scheme: str
    compressor: str
    alpha_s: float
    beta_s_per_byte: float
    n_points: int
    max_rel_residual: float
    rms_rel_residual: float
    p_values: tuple[int, ...]
    d_values: tuple[int, ...]
    status: str
    note: str = ""
    #: (p, d, relative residual (fit - measured) / measured) of the worst-fitted point.
    worst: tuple[int, int, float] | None = None

    @property
    def determined(self) -> bool:
        """Whether alpha and beta are separated by the data (status ok or single p)."""
        return self.status != "under-determined"

    def comm(self, steps: float, nbytes: float) -> float:
        """alpha L + beta B."""
        return self.alpha_s * steps + self.beta_s_per_byte * nbytes

    def as_row(self) -> dict[str, Any]:
        """A flat dict for CSV and JSON (p and d values joined by spaces)."""
        row = asdict(self)
        row["p_values"] = " ".join(map(str, self.p_values))
        row["d_values"] = " ".join(map(str, self.d_values))
        row["worst_p"], row["worst_d"], row["worst_rel_residual"] = self.worst or (None,) * 3
        del row["worst"]
        return row


FIT_COLUMNS = ("machine", "scheme", "compressor", "alpha_s", "beta_s_per_byte", "n_points",
               "max_rel_residual", "rms_rel_residual", "worst_p", "worst_d",
               "worst_rel_residual", "p_values", "d_values", "status", "note")
PROJECTION_COLUMNS = ("machine", "scheme", "compressor", "d", "p", "steps", "bytes",
                      "encode_s", "comm_s", "decode_s", "total_s", "measured_total_s",
                      "measured_comm_s", "extrapolated", "fit")


def _median(values: Iterable[float]) -> float:
    return float(np.median(list(values)))


def points(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per (machine, scheme, compressor, p, d): medians over repeated runs.

    Rows without a communication time, on one rank, run oversubscribed
    (:func:`usable`) or of a scheme without a model are left out.  ``compressor``
    is the row's canonical ``spec``.
    """
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        if not usable(r):
            continue
        p = int(r["nprocs"])
        key = (str(r.get("machine", "unknown")), str(r["scheme"]), str(r["spec"]), p,
               int(r["d"]), float(r.get("ranks_per_node") or 0))  # nodes of another size apart
        groups.setdefault(key, []).append(r)
    out = []
    for (machine, scheme, spec, p, d, _), rs in sorted(groups.items()):
        h = rs[0].get("header_bytes")
        q = {"machine": machine, "scheme": scheme, "compressor": spec, "p": p, "d": d,
             "comm_s": _median(r["comm_median_s"] for r in rs),
             "encode_s": _median(r.get("encode_median_s") or 0.0 for r in rs),
             "decode_s": _median(r.get("decode_median_s") or 0.0 for r in rs),
             "wire": _median(r["wire_bytes_per_rank"] for r in rs),
             "header": float(h) if h is not None else 0.0, "runs": len(rs), "intra_s": 0.0}
        alg = algorithm(scheme)
        if alg is not None and alg.two_level:  # the leaders' link: comm minus the node part
            q["intra_s"] = _median(r["intra_median_s"] for r in rs)
            q["comm_s"] = max(0.0, q["comm_s"] - q["intra_s"])
            q["wire"] = _median(r["inter_wire_bytes_per_leader"] for r in rs)
            q["k"] = int(round(_median(float(r["ranks_per_node"]) for r in rs)))
        out.append(q)
    return out


def usable(row: dict[str, Any]) -> bool:
    """Whether a collectives row can enter the model (see :func:`points`)."""
    alg = algorithm(str(row.get("scheme")))
    return (int(row.get("nprocs") or 0) >= 2 and row.get("comm_median_s") is not None
            and alg is not None
            and (not alg.two_level or row.get("intra_median_s") is not None)
            and row.get("wire_bytes_per_rank") is not None
            and row.get("cpu_binding") != "oversubscribed")


def _among(point: dict[str, Any], p: int) -> int:
    """The ranks the (outer) terms count at p: p itself, or the node count of a node-aware
    scheme (its measured ranks per node kept)."""
    return Cost.nodes(p, point["k"]) if "k" in point else p


def message_bytes(point: dict[str, Any], p: int | None = None) -> float:
    """m of ``point``'s scheme at ``p`` ranks (its own p by default) from its measured bytes."""
    alg = algorithm(point["scheme"])
    assert alg is not None  # usable() kept only known schemes
    own = _among(point, point["p"])
    m = alg.message(point["wire"], point["d"], own)
    at = own if p is None else _among(point, p)
    if at == own or not alg.chunk_headers:
        return m
    return m + (at - own) * point["header"]


def design(point: dict[str, Any], p: int | None = None) -> tuple[float, float]:
    """(L(p), B(p, d)) of ``point`` at ``p`` ranks (its own p by default); for a node-aware
    scheme those of its leaders' part, at the node count."""
    p = point["p"] if p is None else p
    alg = algorithm(point["scheme"])
    assert alg is not None  # usable() kept only known schemes
    n = _among(point, p)
    return float(alg.steps(n)), float(alg.volume(n, message_bytes(point, p), point["d"]))


def intra_design(point: dict[str, Any]) -> tuple[float, float]:
    """(L_in(k), B_in(k, n)) of a node-aware point's node part."""
    alg = algorithm(point["scheme"])
    assert alg is not None and alg.intra_steps is not None and alg.intra_volume is not None
    k, d = point["k"], point["d"]
    return float(alg.intra_steps(k)), float(alg.intra_volume(k, 4.0 * d, d))


INTRA = "intra-node"


def fit_intra(rows: Iterable[dict[str, Any]]) -> list[Fit]:
    """Per machine, alpha and beta of the intra-node links from every node-aware case
    (scheme ``intra-node``, compressor ``*``); see the module docstring for the fallback."""
    by: dict[str, list[dict[str, Any]]] = {}
    for q in points(rows):
        if "k" in q and q["intra_s"] > 0 and intra_design(q)[1] > 0:
            by.setdefault(q["machine"], []).append(q)
    out = []
    for machine, pts in sorted(by.items()):
        f = _fit_group([dict(q, comm_s=q["intra_s"]) for q in pts], machine, INTRA, POOLED,
                       design_of=intra_design)
        if not f.determined:
            beta = _median(q["intra_s"] / intra_design(q)[1] for q in pts)
            f = Fit(machine, INTRA, POOLED, 0.0, beta, len(pts), math.nan, math.nan,
                    f.p_values, f.d_values, "assumed",
                    "the measured (k, d) cannot separate alpha from beta: alpha = 0, beta = "
                    "the median intra-node time per byte")
        out.append(f)
    return out


def _nnls2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """min ||a x - b|| over x >= 0 for two unknowns: the interior or a face (KKT)."""
    cands = []
    x, *_ = np.linalg.lstsq(a, b, rcond=None)
    if (x >= 0).all():
        cands.append(x)
    for j in range(2):
        col, x1 = a[:, j], np.zeros(2)
        norm = float(col @ col)
        x1[j] = max(0.0, float(col @ b) / norm) if norm > 0 else 0.0
        cands.append(x1)
    return min(cands, key=lambda x: float(np.sum((a @ x - b) ** 2)))


def _fit_group(pts: Sequence[dict[str, Any]], machine: str, scheme: str, spec: str,
               design_of: Any = None) -> Fit:
    x = np.array([(design_of or design)(q) for q in pts], dtype=np.float64)
    t = np.array([q["comm_s"] for q in pts], dtype=np.float64)
    keep = t > 0
    x, t = x[keep], t[keep]
    kept = [q for q, k in zip(pts, keep, strict=True) if k]
    ps = tuple(sorted({q["p"] for q in pts}))
    ds = tuple(sorted({q["d"] for q in pts}))
    scale = np.abs(x).max(axis=0) if len(x) else np.ones(2)
    scale[scale == 0] = 1.0
    sv = np.linalg.svd(x / scale, compute_uv=False) if len(x) else np.zeros(1)
    rank2 = len(sv) >= 2 and sv[-1] > _RANK_TOL * sv[0]
    if not len(t):
        return Fit(machine, scheme, spec, math.nan, math.nan, 0, math.nan, math.nan, ps, ds,
                   "under-determined", "no positive communication time")
    if not rank2:
        what = ("one measured (p, d)" if len(t) == 1 else
                f"{len(t)} measured (p, d) whose L and B are proportional")
        return Fit(machine, scheme, spec, math.nan, math.nan, int(len(t)), math.nan, math.nan,
                   ps, ds, "under-determined",
                   f"{what}: alpha and beta cannot be separated")
    coef = _nnls2(x / t[:, None], np.ones_like(t))
    rel = (x @ coef - t) / t
    if len(ps) == 1:
        status = "single p"
        note = (f"one rank count (p = {ps[0]}): alpha and beta from how the time changes with "
                "the bytes alone (d, or the compressors' message sizes); the p dependence is "
                "the model's, not measured")
    else:
        status, note = "ok", ""
    for name, v in (("alpha", coef[0]), ("beta", coef[1])):
        if v == 0:
            note += ("; " if note else "") + (f"{name} = 0: the least squares put all of the "
                                              "time on the other term")
    worst = kept[int(np.argmax(np.abs(rel)))]
    return Fit(machine, scheme, spec, float(coef[0]), float(coef[1]), int(len(t)),
               float(np.abs(rel).max()), float(np.sqrt(np.mean(rel ** 2))), ps, ds, status,
               note, (worst["p"], worst["d"], float(rel[int(np.argmax(np.abs(rel)))])))


def fit(rows: Iterable[dict[str, Any]]) -> list[Fit]:
    """The fits of every (machine, scheme, compressor), then the pooled ones (``*``), then
    the intra-node links' (:func:`fit_intra`) when node-aware schemes were measured.

    A scheme measured with one compressor only has no pooled fit.
    """
    rows = list(rows)
    pts = points(rows)
    own: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    pooled: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for q in pts:
        own.setdefault((q["machine"], q["scheme"], q["compressor"]), []).append(q)
        pooled.setdefault((q["machine"], q["scheme"]), []).append(q)
    out = [_fit_group(g, *k) for k, g in sorted(own.items())]
    for (machine, scheme), g in sorted(pooled.items()):
        if len({q["compressor"] for q in g}) > 1:
            out.append(_fit_group(g, machine, scheme, POOLED))
    return out + fit_intra(rows)


def fit_for(fits: Sequence[Fit], machine: str, scheme: str, spec: str
            ) -> tuple[Fit | None, str]:
    """The fit a projection uses: its own when determined, else the pooled one; and which."""
    by = {(f.machine, f.scheme, f.compressor): f for f in fits}
    mine, pool = by.get((machine, scheme, spec)), by.get((machine, scheme, POOLED))
    if mine is not None and mine.determined:
        return mine, "own"
    if pool is not None and pool.determined:
        return pool, "pooled"
    return None, "none"


def project(rows: Iterable[dict[str, Any]], fits: Sequence[Fit],
            ps: Iterable[int] = PROJECTION_P) -> list[dict[str, Any]]:
    """Time per call at the rank counts ``ps`` and the measured ones, at every measured d.

    Encode and decode scale the measured ones of the nearest measured p by E and
    D (exact at a measured p); at a measured p the communication uses that p's
    measured bytes, elsewhere the bytes the scheme's m gives there.  A
    (scheme, compressor) without a determined fit (own or pooled) is left out.
    """
    groups: dict[tuple[str, str, str, int], list[dict[str, Any]]] = {}
    for q in points(rows):
        groups.setdefault((q["machine"], q["scheme"], q["compressor"], q["d"]), []).append(q)
    wanted = {int(p) for p in ps if int(p) >= 2}
    out = []
    for (machine, scheme, spec, d), pts in sorted(groups.items()):
        f, which = fit_for(fits, machine, scheme, spec)
        if f is None:
            continue
        alg = algorithm(scheme)
        assert alg is not None
        at = {q["p"]: q for q in pts}
        intra = None
        if alg.two_level:
            intra = next((g for g in fits if g.machine == machine and g.scheme == INTRA), None)
            if intra is None:
                continue
        for p in sorted(wanted | set(at)):
            near = at[min(at, key=lambda m: (abs(math.log2(m / p)), -m))]
            if intra is not None and (p < near["k"] or p % near["k"]):
                continue  # whole nodes only
            steps, nbytes = design(near, p)
            comm = f.comm(steps, nbytes)
            if intra is not None:
                comm += intra.comm(*intra_design(near))
            e = near["encode_s"] * alg.encodes(p) / alg.encodes(near["p"])
            dd = near["decode_s"] * alg.decodes(p) / alg.decodes(near["p"])
            q = at.get(p)
            out.append({"machine": machine, "scheme": scheme, "compressor": spec, "d": d,
                        "p": p, "steps": steps, "bytes": nbytes, "encode_s": e, "comm_s": comm,
                        "decode_s": dd, "total_s": e + comm + dd,
                        "measured_total_s": (q["encode_s"] + q["comm_s"] + q["intra_s"]
                                             + q["decode_s"] if q else None),
                        "measured_comm_s": q["comm_s"] + q["intra_s"] if q else None,
                        "extrapolated": p > max(at), "fit": which})
    return out


def crossovers(proj: Sequence[dict[str, Any]], d: int | None = None,
               pairs: Sequence[tuple[str, str]] = PAIRS) -> list[dict[str, Any]]:
    """Where scheme b becomes faster than scheme a, per machine, compressor and d.

    For each pair (a, b) and compressor with both projected (a baseline
    ``allreduce-*`` is compared with every compressor), ``p`` is the first
    projected rank count from which b's total stays below a's, ``before`` the one
    before it (None: b is faster at every p), and ``p`` is None when b never
    overtakes a in the projected range.  ``d`` restricts to that size.
    """
    series: dict[tuple[str, str, str, int], dict[int, float]] = {}
    for r in proj:
        if d is None or int(r["d"]) == d:
            series.setdefault((r["machine"], r["scheme"], r["compressor"], int(r["d"])),
                              {})[int(r["p"])] = float(r["total_s"])
    out = []
    for machine, scheme, spec, dd in sorted(series):
        for a, b in pairs:
            if scheme != a or a.startswith("allreduce-"):
                continue
            other = next((v for (m, s, c, x), v in series.items()
                          if m == machine and s == b and x == dd
                          and (c == spec or b.startswith("allreduce-"))), None)
            if other is None:
                continue
            mine = series[(machine, scheme, spec, dd)]
            common = sorted(set(mine) & set(other))
            faster = [other[p] < mine[p] for p in common]
            p_cross = before = None
            for i in range(len(common)):
                if all(faster[i:]):
                    p_cross, before = common[i], common[i - 1] if i else None
                    break
            out.append({"machine": machine, "compressor": spec, "d": dd, "slower": a,
                        "faster": b, "p": p_cross, "before": before,
                        "p_max": common[-1] if common else None})
    return out
