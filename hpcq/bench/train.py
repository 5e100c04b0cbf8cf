"""Training runs of the job's ``[train]`` tables: cases, one run per case, the printed table.

Cases (:func:`expand`): for each method of the table, crossed with the table's
compressors when the method runs over one (once, with what the scheme sends, when the
scheme takes no compressor: ``allreduce-*``, ``powersgd``), and with ``bits`` when the
method has a ``bits`` parameter its spec does not set.  Every case is checked on rank 0
before anything runs (the problem is built once to know L, mu and x*).

Case written (kind ``train``)
-----------------------------
Datasets, per rank and iteration (nprocs, T): ``t_compute``, ``t_encode``,
``t_comm``, ``t_decode``, ``t_update``, ``t_iter`` in "s"; ``bytes_sent``, ``bytes_recv`` in
"bytes" (what the collectives moved for the rank, hpcq headers included);
``payload_bits``, ``side_bits`` in "bits" (the papers' count for the rank's
message: values or indices, then scales, norms and ranges).  ``label``: the
method and compressor as the job wrote them.  At logged points
(K,): ``log_iter`` ("1"; iterations done), ``loss``, ``dist`` (||x - x*||; NaN
when x* is unknown), ``grad_norm``.  Method-specific series of rank 0 (T,):
DQ methods' ``range``, ``clipped``, ``u_inf`` (||u_t||_inf), ``grad_bytes``,
``grad_comm``.  ``x_final`` (d,) when d <= 2^16.

Attributes: problem, problem.* (its description: d, m, L, mu, kappa, f_star),
method, compressor, scheme, iterations, step_size, step_rule, batch,
staleness, seed, log_every, nprocs; results: ``rate`` (the empirical linear
rate ``(dist_T / dist_0)^(1/T)``, absent without x*, inf for a diverged run),
``diverged`` (the run stopped early: its iterate left every bound, see
``info.diverged_at``; the series of the iterations it never made are NaN), ``final_loss``,
``final_dist``, ``final_gap`` (f - f*), ``bits_per_iteration`` (payload +
side, of the busiest rank, mean over iterations: every rank for the
collectives, rank 0 for DQ's link), ``wire_bytes_per_iteration`` (bytes sent,
the same way), ``ms_per_iteration`` (median over iterations of
the slowest rank), ``compute_ms``/``encode_ms``/``comm_ms``/``decode_ms``/
``update_ms`` (medians over iterations of the split of each iteration's slowest rank),
``overhead_pct`` (the same for the Python loop's share: iter - the five parts,
of iter) and
``info.*`` (method facts such as DQ-GD's sigma, rate_bound, clipped_steps).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from hpcq.algorithms import METHODS, method
from hpcq.algorithms.base import RATE_FLOOR, STEP_FIELDS, Context, gather_trace
from hpcq.collectives import scheme
from hpcq.compressors import compressor
from hpcq.problems import problem

_UNITS = {"t_compute": "s", "t_encode": "s", "t_comm": "s", "t_decode": "s", "t_update": "s",
          "t_iter": "s",
          "bytes_sent": "bytes", "bytes_recv": "bytes", "payload_bits": "bits",
          "side_bits": "bits"}
_KEEP_X = 1 << 16


@dataclass(frozen=True)
class TrainCase:
    """One training run: everything that identifies it (and its key)."""

    kind = "train"  # class attribute: the result file's kind
    problem: str
    method: str
    compressor: str | None
    scheme: str
    iterations: int
    step: float
    batch: int
    staleness: int
    seed: int
    log_every: int
    #: The method and compressor as the job wrote them (for tables; not part of the key).
    given: tuple[str, str] = ("", "")

    @property
    def label(self) -> str:
        m, c = self.given if self.given[0] else (self.method, self.compressor or "")
        comp = f" {c}" if c else ""
        tau = f" tau={self.staleness}" if self.staleness else ""
        return f"{m}{comp}{tau}"

    def params(self) -> dict[str, Any]:
        """The identity of the case (for its key and its attributes)."""
        return {"kind": "train", "problem": self.problem, "method": self.method,
                "compressor": self.compressor or "", "scheme": self.scheme,
                "iterations": self.iterations, "step": self.step, "batch": self.batch,
                "staleness": self.staleness, "seed": self.seed, "log_every": self.log_every}


@lru_cache(maxsize=4)
def _problem(spec: str, seed: int, rank: int = 0, size: int = 1) -> Any:
    """The problem, built once per process for all the cases that share it (problems hold
    data only; building one can take seconds: a QR, an eigendecomposition, x*)."""
    return problem(spec, rank=rank, size=size, seed=seed)


def _with_bits(spec: str, bits: Sequence[float]) -> list[str]:
    """``spec`` for each of ``bits`` when its method has a bits parameter it does not set."""
    m = method(spec)
    if not bits or "bits" not in {p.name for p in type(m).params} or "bits=" in spec:
        return [spec]
    sep = "," if ":" in spec else ":"
    return [f"{spec}{sep}bits={b:g}" for b in bits]


def expand(table: Any, seed: int, where: str) -> list[TrainCase]:
    """The cases of one ``[train]`` table; ValueError naming ``where`` and the key at fault."""
    seeds = [int(s) for s in table.seeds] or [seed]
    for s in table.seeds:
        if s != int(s) or s < 0:
            raise ValueError(f"{where} seeds: {s:g} must be an integer >= 0")
    out: list[TrainCase] = []
    for spec in table.problems:
        for sd in seeds:
            out += _expand_one(table, spec, sd, where)
    return out


def _expand_one(table: Any, problem_spec: str, seed: int, where: str) -> list[TrainCase]:
    """The cases of one problem and seed of a ``[train]`` table."""
    try:
        sch = scheme(table.scheme)
    except ValueError as e:
        raise ValueError(f"{where} scheme: {e}") from None
    try:
        prob = _problem(problem_spec, seed)
    except (ValueError, OSError) as e:
        raise ValueError(f"{where} problems: {e}") from None
    for b in table.bits:
        if not b > 0:
            raise ValueError(f"{where} bits: {b:g} must be > 0 (R bits per coordinate)")
    comps = []
    for spec in table.compressors:
        try:
            comps.append(compressor(spec).spec)
        except ValueError as e:
            raise ValueError(f"{where} compressors: {e}") from None
    given_comps = list(table.compressors)
    if not sch.takes_compressor:
        # a scheme with its own encoding (allreduce-*, powersgd) sends what it sends: one
        # case per method, its compressor that (the job's compressors do not apply)
        comps, given_comps = [compressor(str(sch.sends)).spec], [""]
    out: list[TrainCase] = []
    for given in table.methods:
        try:
            specs = _with_bits(given, table.bits)
        except ValueError as e:
            raise ValueError(f"{where} methods: {e}") from None
        for spec in specs:
            m = method(spec)
            pairs = (list(zip(comps, given_comps, strict=True))
                     if type(m).takes_compressor else [(None, "")])
            for comp, comp_given in pairs:
                case = TrainCase(prob.spec, m.spec, comp, table.scheme, table.iterations,
                                 table.step, table.batch, table.staleness, seed,
                                 table.log_every, given=(spec, comp_given))
                try:
                    m.check(_context(None, prob, case))
                except ValueError as e:
                    raise ValueError(f"{where} methods: {e}") from None
                out.append(case)
    return out


class _Size1:
    """A stand-in communicator of one rank, for checks made before MPI runs anything."""

    def Get_size(self) -> int:  # noqa: N802 - the mpi4py name
        return 1

    def Get_rank(self) -> int:  # noqa: N802
        return 0


def _context(comm: Any, prob: Any, case: TrainCase) -> Context:
    return Context(comm=comm if comm is not None else _Size1(), problem=prob,
                   compressor=compressor(case.compressor) if case.compressor else None,
                   scheme=case.scheme, iterations=case.iterations, step=case.step,
                   batch=case.batch, staleness=case.staleness, seed=case.seed,
                   log_every=case.log_every)


def compile_for(cases: Sequence[TrainCase]) -> float:
    """Compile (or load) the kernels the cases' compressors use; seconds taken."""
    from hpcq.bench.kernels import compile_kernels

    specs = {c.compressor for c in cases if c.compressor}
    specs |= {"fixedrange:bits=2.5", "fp32"} if any(
        not METHODS.get(c.method.partition(":")[0]).takes_compressor for c in cases) else set()
    specs |= {"vqsgd", "sign:bucket=0"}
    from hpcq.kernels import update

    t0 = time.perf_counter()
    for twin in (update._axpy, update._axpy_par):  # the step's kernel, at any d
        twin(np.zeros(8), 1.0, np.zeros(8, dtype=np.float32))
    return time.perf_counter() - t0 + compile_kernels([compressor(s) for s in sorted(specs)],
                                                      [1 << 10])


def warm(cases: Sequence[TrainCase]) -> float:
    """Run every distinct (method, compressor, scheme, stale or not) of ``cases`` for two
    iterations on a tiny problem over ``MPI.COMM_SELF``; seconds taken.

    Each rank then has every kernel its runs call compiled or loaded from the cache, so
    no timed iteration pays for numba (the first iteration of a run was up to 4790x the
    median before).  With more than one numba thread the parallel twins are warmed too,
    on a quadratic of ``PARALLEL_MIN_ELEMENTS`` entries.  Rank 0 runs it before the
    others (which then only load the cache).
    """
    import numba
    from mpi4py import MPI

    from hpcq.kernels._config import PARALLEL_MIN_ELEMENTS

    t0 = time.perf_counter()
    probs = [_problem("lstsq:m=16,n=8,kappa=2", 0)]
    if numba.get_num_threads() > 1:
        probs.append(_problem(f"quadratic:d={PARALLEL_MIN_ELEMENTS}", 0))
    seen: set[tuple[str, str | None, str, bool]] = set()
    for c in cases:
        key = (c.method, c.compressor, c.scheme, c.staleness > 0)
        if key in seen:
            continue
        seen.add(key)
        for prob in probs:
            case = TrainCase(prob.spec, c.method, c.compressor, c.scheme, 2, 0.0, 0,
                             min(c.staleness, 1), 0, 1)
            method(c.method).run(_context(MPI.COMM_SELF, prob, case))
    return time.perf_counter() - t0


#: Units of the methods' extra per-step series (DQ's gradient Allreduce); "1" otherwise.
_EXTRA_UNITS = {"grad_bytes": "bytes", "grad_comm": "s"}


def _median_max(a: np.ndarray) -> float:
    """Median over iterations of ``a`` on that phase's own slowest rank (nprocs, T); the
    iterations a diverged run never made (NaN) are left out.  A phase only some ranks run
    (DQ-GD's encode, on rank 0) shows its real time, not the idle rank's zero."""
    ok = np.isfinite(a).all(axis=0)
    v = a[:, ok].max(axis=0) if ok.any() else np.empty(0)
    return float(np.median(v)) if v.size else math.nan


def _median_slowest(a: np.ndarray, slowest: np.ndarray) -> float:
    """Median over iterations of ``a`` on each iteration's slowest rank (``slowest``);
    the iterations a diverged run never made (NaN) are left out."""
    v = a[slowest, np.arange(a.shape[1])]
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else math.nan


def run_case(comm: Any, case: TrainCase) -> tuple[dict[str, Any], dict[str, Any],
                                                   dict[str, Any]] | None:
    """Run one case on every rank; (attrs, datasets, table row) on rank 0, None elsewhere."""
    rank, size = comm.Get_rank(), comm.Get_size()
    prob = _problem(case.problem, case.seed, rank, size)
    m = method(case.method)
    trace = m.run(_context(comm, prob, case))
    series = gather_trace(comm, trace)
    if rank != 0:
        return None
    data: dict[str, Any] = {k: (series[k], _UNITS[k]) for k in STEP_FIELDS}
    data["log_iter"] = (np.asarray(trace.log_iter, dtype=np.int64), "1")
    for k in ("loss", "dist", "grad_norm"):
        data[k] = (np.asarray(getattr(trace, k), dtype=np.float64), "1")
    for k, v in trace.extra.items():
        data[k] = (v, _EXTRA_UNITS.get(k, "1"))
    if trace.x is not None and trace.x.shape[0] <= _KEEP_X:
        data["x_final"] = (trace.x, "1")
    it = series["t_iter"]
    # the split shown is that of the rank everyone waits for, iteration by iteration
    slowest = np.argmax(np.nan_to_num(it, nan=-1.0), axis=0)
    parts = sum(series[k] for k in ("t_compute", "t_encode", "t_comm", "t_decode", "t_update"))
    with np.errstate(invalid="ignore"):
        overhead = np.where(it > 0, (it - parts) / np.where(it > 0, it, 1.0), 0.0)
    overhead[:, ~np.isfinite(it).all(axis=0)] = math.nan
    bits = series["payload_bits"] + series["side_bits"]
    done = np.isfinite(bits).all(axis=0)  # the iterations made (all, unless it diverged)
    bits = bits[:, done]
    attrs: dict[str, Any] = {
        **case.params(), "nprocs": size, "step_size": trace.step_size,
        "step_rule": trace.rule, "problem_info": prob.describe(),
        "final_loss": trace.loss[-1] if trace.loss else math.nan,
        "final_dist": trace.dist[-1] if trace.dist else math.nan,
        # per sending rank: the busiest rank (all ranks alike, except DQ's one link)
        "bits_per_iteration": float(bits.mean(axis=1).max()) if bits.size else 0.0,
        "wire_bytes_per_iteration": (
            float(series["bytes_sent"][:, done].mean(axis=1).max()) if bits.size else 0.0),
        "ms_per_iteration": 1e3 * _median_slowest(it, slowest),
        "compute_ms": 1e3 * _median_max(series["t_compute"]),
        "encode_ms": 1e3 * _median_max(series["t_encode"]),
        "comm_ms": 1e3 * _median_max(series["t_comm"]),
        "decode_ms": 1e3 * _median_max(series["t_decode"]),
        "update_ms": 1e3 * _median_max(series["t_update"]),
        "overhead_pct": (100.0 * _median_slowest(overhead, slowest) if it.size else 0.0),
        "info": {k: v for k, v in trace.info.items() if v is not None},
    }
    rate = trace.rate()
    if rate is not None:
        attrs["rate"] = rate
        fit = trace.rate_iterations()
        if fit is not None:  # where the error reached the precision floor, the fit stops
            attrs["rate_iterations"], attrs["rate_floor_reached"] = fit
            attrs["rate_floor"] = RATE_FLOOR
    if "grad_bytes" in trace.extra:  # DQ: the full gradient Allreduce beside the link
        g = np.asarray(trace.extra["grad_bytes"], dtype=np.float64)
        g = g[np.isfinite(g)]
        attrs["grad_bytes_per_iteration"] = float(g.mean()) if g.size else 0.0
    attrs["diverged"] = "diverged_at" in trace.info
    if prob.f_star is not None and trace.loss:
        attrs["final_gap"] = trace.loss[-1] - prob.f_star
    row = {**attrs, "label": case.label, "d": prob.d}
    return attrs, data, row


def cost(case: TrainCase) -> float:
    """A rough relative run time (for the progress estimate)."""
    return case.iterations * (1.0 + 1.0 / max(case.log_every, 1))


LEGEND = ("# rate: (||x_t-x*||/||x_0-x*||)^(1/t) over the iterations above 1e-12 relative "
          "error (* : the run reached that floor before T); bits/c: the papers' bits per "
          "coordinate\n# and iteration, per rank; wire B: bytes sent per iteration and rank "
          "(headers included), +Ng: DQ methods' fp64 gradient Allreduce each\n# iteration "
          "(the paper's single-link model leaves it out); ms/it: median of the slowest rank; "
          "the split (compute, encode, comm,\n# decode, update): each phase's median on its own "
          "slowest rank, and ovh% (the Python loop), in % of ms/it")


def format_table(rows: Sequence[dict[str, Any]], *, nprocs: int) -> str:
    """The rows of :func:`run_case` as aligned text, a block per problem."""
    lines = [f"# hpcq train: {nprocs} rank(s)", LEGEND]
    for prob in dict.fromkeys(r["problem"] for r in rows):
        block = [r for r in rows if r["problem"] == prob]
        lines += ["", f"# {prob} (d = {block[0]['d']})",
                  f"{'# method compressor':<42}{'final err':>11}{'rate':>9}{'bits/c':>8}"
                  f"{'wire B':>15}{'ms/it':>8}{'comp%':>6}{'enc%':>5}{'comm%':>6}{'dec%':>5}"
                  f"{'upd%':>5}{'ovh%':>5}"]
        for r in block:
            err = r["final_dist"] if np.isfinite(r["final_dist"]) else r["final_loss"]
            ms = r["ms_per_iteration"] or math.nan
            pct = [100 * r[k] / ms if ms else math.nan
                   for k in ("compute_ms", "encode_ms", "comm_ms", "decode_ms", "update_ms")]
            rate = (f"{'diverged':>9}" if r["diverged"] else
                    f"{r['rate']:8.4f}{'*' if r.get('rate_floor_reached') else ' '}"
                    if "rate" in r else f"{'-':>9}")
            wire = f"{r['wire_bytes_per_iteration']:.0f}" + (
                f"+{r['grad_bytes_per_iteration']:.0f}g" if "grad_bytes_per_iteration" in r
                else "")
            lines.append(
                f"{r['label'][:41]:<42}{err:>11.3e}{rate}{r['bits_per_iteration'] / r['d']:>8.3f}"
                f"{wire:>15}{ms:>8.3f}{pct[0]:>6.0f}{pct[1]:>5.0f}"
                f"{pct[2]:>6.0f}{pct[3]:>5.0f}{pct[4]:>5.0f}{r['overhead_pct']:>5.0f}")
    return "\n".join(lines)
