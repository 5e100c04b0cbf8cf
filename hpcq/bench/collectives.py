"""``hpcq bench collectives``: compressed means over MPI ranks, timed like OSU's osu_allreduce.

Cases (:func:`expand`): for each size d (outer loop), each baseline scheme of
:data:`hpcq.collectives.SCHEMES` (those with a fixed cast: ``allreduce-fp32/fp16/bf16``)
once, then each compressed scheme with each compressor, in the order given.

Measurement of one case (:func:`run_case`, every rank calls)
-----------------------------------------------------------
* Data: rank r holds ``rank_vector(seed, r, d)`` (float32); the exact mean is summed
  in float64 (``Reduce`` to rank 0, untimed), with ``sum_i ||x_i||^2`` and, for the
  casts' bound, ``a = sum_i |x_i|``.  Kept for the next case of the same (seed, d).
* ``warmup`` untimed calls, then ``iterations`` timed ones (:func:`iterations_for`:
  fewer above 2^20), every call preceded by ``comm.Barrier()``, with ``step`` = the
  call's index (fresh randomness each call).  The scheme's :class:`~hpcq.collectives.Stats`
  give encode / communicate / decode seconds (``MPI.Wtime``); ``MPI.Wtime`` around the
  call gives its wall time, and the *harness overhead* is wall - ``total_s``: the
  Python between and around the timed regions (calls, checks, allocation, returning).
* Validation, untimed, after the timing (like OSU ``-c``): K more calls
  (:func:`~hpcq.bench.guarantees.validation_draws`: 32 at small d, 4 from 2^18 on);
  after each, every rank compares its mean bit for bit with rank 0's (``Bcast``, then
  ``LAND``) and rank 0 computes the NMSE ``||mean - exact||^2 / ||exact||^2`` in
  float64; ``nmse`` is their mean.  The guarantee ``nmse_bound`` of the scheme comes
  from :mod:`hpcq.bench.guarantees`, which also derives the ``--check`` rule: with
  ``check=True`` a case fails when the ranks disagree or the mean NMSE exceeds
  ``min(4 b, max(1.5 b, b + 3 standard errors)) + 1e-12`` (``nmse_allowed``).

Case written (kind ``collectives``)
----------------------------------
Datasets: ``encode_s``, ``comm_s``, ``decode_s``, ``total_s`` (= encode + comm +
decode), ``overhead_s`` and ``exposed_comm_s`` (communication no encode or decode
overlapped: pipelined schemes; 0 for the others) of shape (nprocs, iterations), ``warmup_total_s``
(nprocs, warmup), all in "s"; ``nmse_draws`` (K,) in "1" (one per validation call);
``hop_nmse`` (nprocs, hops) in "1" for a multi-hop scheme with ``hop_error=true``: each
rank's relative squared error per compression it sent, mean over the timed calls (NaN past
a rank's last hop), with attribute ``hop_nmse_max``;
``bytes_sent``, ``bytes_recv`` (nprocs,) in "bytes": each rank's mean over the timed
calls of the payload bytes it hands to / gets from the collective (headers and scales
included: they are in the messages; a message for all ranks counts once).

Attributes: scheme, spec (canonical; the cast for a baseline), spec_given, d, log2_d,
nprocs, iterations, warmup, seed, logical_bytes (4 d), wire_bytes_per_rank (mean of
bytes_sent over ranks), bits_per_coordinate (8 wire / d),
theory_bits_per_coordinate (the papers' count for one rank's message: payload +
side bits of :meth:`~hpcq.compressors.base.Compressor.theory_bits`, over d); latency_avg_s,
latency_min_s, latency_max_s (of ``total_s`` over ranks and calls), latency_p50_s,
latency_p99_s (percentiles over calls of the slowest rank's ``total_s``: the time to
complete the collective); encode_median_s, comm_median_s, decode_median_s (median
over calls of the slowest rank's split), exposed_comm_median_s (the same for the
exposed communication); algbw_gbs (4 d / p50, 10^9 B/s), busbw_gbs
(algbw * 2(p-1)/p, the nccl-tests allreduce convention); for node-aware schemes
(``two-level``) intra_median_s and inter_median_s (median over calls of the slowest node
leader's time inside the node and among the leaders), leaders, ranks_per_node and
inter_wire_bytes_per_leader (mean bytes a node hands to the outer scheme: its leader's, or
all its ranks' with ``mode=shard``); overhead_median_s (over
ranks and calls), overhead_pct (of p50); nmse (mean of the K draws), nmse_std (their
standard deviation), validation_draws (K), nmse_bound (absent: no guarantee),
nmse_allowed, consistent, check ("pass", "fail", or "none" when not asked); x_fp32
(p50 / the p50 of allreduce-fp32 at the same d, when that ran earlier in this
process); and ``compressor.*`` (the codec's description).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from hpcq.bench import guarantees, resolve_compressors
from hpcq.bench.kernels import compile_kernels, compile_sums
from hpcq.collectives import SCHEMES, BoundInputs, Session, scheme
from hpcq.compressors import Compressor, compressor

DEFAULT_SPECS = ("qsgd:bits=8", "qsgd:bits=4", "qsgd:bits=2", "sign", "hadamard+sign:scale=drive")
DEFAULT_SCHEMES = (
    "mpi-allreduce",
    "allgather",
    "two-phase",
    "ps",
    "allreduce-fp32",
    "allreduce-fp16",
    "allreduce-bf16",
)
DEFAULT_SIZES = "10:22:2"
_BLOCK = 1 << 22  # elements per untimed validation message (bounds memory at large d)
_FP32 = "allreduce-fp32"


def rank_vector(seed: int, rank: int, d: int) -> np.ndarray:
    """Rank ``rank``'s input: a part shared by all ranks plus its own part, both N(0, 1).

    Gradients of data-parallel workers are correlated; a shared part keeps the
    exact mean from shrinking towards 0 as ranks are added, so the NMSE of the
    mean stays comparable across rank counts.
    """
    shared = np.random.default_rng([seed, 0]).standard_normal(d)
    own = np.random.default_rng([seed, 1, rank]).standard_normal(d)
    return (shared + own).astype(np.float32)


@lru_cache(maxsize=64)
def _compressor(spec: str) -> Compressor:
    return compressor(spec)


@dataclass(frozen=True)
class Case:
    """One (scheme, compressor, size) measurement; ``spec`` is a baseline's cast for a baseline."""

    scheme: str
    spec: str
    d: int
    iterations: int
    warmup: int
    seed: int

    kind = "collectives"

    @property
    def baseline(self) -> bool:
        """True for a scheme that takes no compressor (the casts, PowerSGD, allreduce-fp8):
        its ``spec`` is :attr:`~hpcq.collectives.Scheme.sends`, and labels omit it."""
        return not scheme(self.scheme).takes_compressor

    @property
    def label(self) -> str:
        """``allgather qsgd:bits=4 d=2^20``; a baseline without its spec."""
        d = self.d
        size = f"2^{d.bit_length() - 1}" if d > 0 and d & (d - 1) == 0 else str(d)
        what = self.scheme if self.baseline else f"{self.scheme} {self.spec}"
        return f"{what} d={size}"

    def params(self) -> dict[str, Any]:
        """The identity of the case (its resume key): the spec in canonical form."""
        return {
            "scheme": self.scheme,
            "spec": _compressor(self.spec).spec,
            "d": self.d,
            "iterations": self.iterations,
            "warmup": self.warmup,
            "seed": self.seed,
        }


def iterations_for(d: int, iterations: int) -> int:
    """Timed iterations at size ``d``: all up to 2^20, then fewer in proportion (at least 5)."""
    return max(min(iterations, 5), min(iterations, iterations * (1 << 20) // max(d, 1)))


def expand(
    schemes: Sequence[str],
    specs: Sequence[str],
    sizes: Sequence[int],
    *,
    iterations: int,
    warmup: int,
    seed: int,
    skip_unavailable: bool = False,
) -> list[Case]:
    """The cases: sizes outer; per size the baselines once, then compressed schemes x specs.

    Raises ValueError (one line) for an unknown scheme (listing the valid ones), a
    compressor spec that does not build, a scheme that cannot do a compressor, a
    compressed scheme without compressors, or bad counts.
    """
    if iterations < 1 or warmup < 0 or seed < 0:
        raise ValueError(
            f"iterations must be >= 1, warmup >= 0 and seed >= 0 (got "
            f"{iterations}, {warmup}, {seed})"
        )
    if not sizes or min(sizes) < 1:
        raise ValueError("sizes must be a non-empty list of lengths >= 1")
    chosen = [scheme(name) for name in dict.fromkeys(schemes)]
    if not chosen:
        raise ValueError(f"no scheme given; valid: {', '.join(SCHEMES.names())}")
    comps, _ = resolve_compressors(specs, skip_unavailable=skip_unavailable)
    compressed = [s for s in chosen if s.takes_compressor]
    if compressed and not comps:
        raise ValueError(f"scheme {compressed[0].name} needs at least one compressor")
    for s in compressed:
        for _, c in comps:
            s.check(c)
    out: list[Case] = []
    for d in sizes:
        its = iterations_for(d, iterations)
        out += [Case(s.spec, str(s.sends), d, its, warmup, seed) for s in chosen
                if not s.takes_compressor]
        out += [Case(s.spec, given, d, its, warmup, seed) for s in compressed for given, _ in comps]
    return out


def compile_for(cases: Sequence[Case], *, nprocs: int | None = None) -> float:
    """Compile (or load from the numba cache) every kernel ``cases`` use; return the seconds.

    Run it on one rank before the others start.  Covers every codec on the serial
    kernels and, where a length reaches the parallel threshold, the parallel ones;
    the 16-bit casts and sums of the fp16/bf16 baselines and ``ps-reduce``; and, with
    ``nprocs``, the exact chunk lengths of ``two-phase`` (without it, the serial and
    parallel paths still cover every chunk).
    """
    from hpcq.kernels._config import PARALLEL_MIN_ELEMENTS

    t0 = time.perf_counter()
    comps: dict[str, Compressor] = {}
    kinds: set[str] = set()
    big = False
    for c in cases:
        sch = scheme(c.scheme)
        comp = _compressor(c.spec)
        comps.setdefault(comp.spec, comp)
        kind = sch.sums_in(comp)
        if kind in ("fp16", "bf16"):
            kinds.add(kind)
        lengths = [c.d]
        if nprocs and sch.takes_compressor:
            lengths = sch.codec_lengths(c.d, nprocs)
            for n in lengths:  # the exact (odd, short) lengths the codec sees, when cheap
                if n != c.d and n < 1 << 16:
                    comp.decode(comp.encode(np.ones(n, dtype=np.float32)))
        big = big or max(lengths) >= PARALLEL_MIN_ELEMENTS
    compile_kernels(list(comps.values()), [PARALLEL_MIN_ELEMENTS] if big else [])
    compile_sums(sorted(kinds), big=big)
    return time.perf_counter() - t0


# ------------------------------------------------------------------ measurement
_inputs: dict[str, Any] = {}


def _data(comm: Any, seed: int, d: int) -> dict[str, Any]:
    """This rank's vector and (rank 0) the exact mean and the bounds' sums, kept per (seed, d).

    The kept data are reused only for the same (seed, d) on the same group of
    processes, and all ranks agree on it (a collective), so a rank never skips the
    reductions the others enter.
    """
    from mpi4py import MPI

    key = (seed, d, comm.Get_rank(), comm.Get_size())
    group = comm.Get_group()
    same = _inputs.get("key") == key and MPI.Group.Compare(_inputs["group"], group) == MPI.IDENT
    if comm.allreduce(same, op=MPI.LAND):
        group.Free()
        return _inputs
    if "group" in _inputs:
        _inputs["group"].Free()
    _inputs.clear()
    _inputs["group"] = group
    root = comm.Get_rank() == 0
    x = rank_vector(seed, comm.Get_rank(), d)
    exact = np.empty(d) if root else None
    sq_norm = abs_sum = abs_sq = 0.0
    part = np.empty(min(d, _BLOCK)) if root else None
    for lo in range(0, d, _BLOCK):  # blockwise: no d-long float64 temporaries
        blk = x[lo : lo + _BLOCK].astype(np.float64)
        n = blk.shape[0]
        sq_norm += float(np.dot(blk, blk))
        comm.Reduce(blk, exact[lo : lo + n] if exact is not None else None, op=MPI.SUM, root=0)
        np.abs(blk, out=blk)
        comm.Reduce(blk, part[:n] if part is not None else None, op=MPI.SUM, root=0)
        if part is not None:
            abs_sum += float(part[:n].sum())
            abs_sq += float(np.dot(part[:n], part[:n]))
    if exact is not None:
        exact /= comm.Get_size()
    _inputs.update(key=key, x=x, exact=exact, sq_norm=sq_norm, abs_sum=abs_sum, abs_sq=abs_sq)
    return _inputs


def _timed(comm: Any, case: Case, x: np.ndarray, comp: Compressor | None
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """Warm-up and timed calls: (n, 10) of encode, comm, decode, wall seconds, bytes sent, recv,
    the node-aware split (intra-node seconds, inter-node seconds, inter-node bytes sent) and
    the exposed (non-overlapped) communication seconds; and, for a multi-hop scheme that
    records it (``hop_error=true``), this rank's relative error per hop, averaged over the
    timed calls (None otherwise)."""
    from mpi4py import MPI

    wtime, barrier, sch = MPI.Wtime, comm.Barrier, scheme(case.scheme)
    seed, rows, hops = case.seed, [], []
    # buffers reused across calls, the mean's included, as a training loop reuses them (a
    # new 2^24 mean would cost every scheme ~10 ms of page faults); the uncompressed
    # baselines leave their 1/p to the consumer (the optimizer's step), as frameworks do
    session = Session(comm, defer_scale=True)
    mean = session.buffer("bench.mean", int(x.shape[0]))
    for step in range(case.warmup + case.iterations):
        barrier()
        t0 = wtime()
        result = sch(comm, x, comp, seed=seed, step=step, session=session, out=mean)
        t1 = wtime()
        st = result[1]
        rows.append((st.encode_s, st.comm_s, st.decode_s, t1 - t0, st.bytes_sent, st.bytes_recv,
                     st.intra_s, st.inter_s, st.inter_bytes, st.exposed_comm_s,
                     float(st.leader)))
        if st.hop_nmse is not None and step >= case.warmup:
            hops.append(st.hop_nmse)
        result = None  # dropped outside the timed region
    per_hop = np.mean(np.array(hops, dtype=np.float64), axis=0) if hops else None
    return np.array(rows, dtype=np.float64), per_hop


def _consistent(comm: Any, mean: np.ndarray) -> bool:
    """Every rank holds rank 0's bits (blockwise ``Bcast``, then ``LAND``)."""
    from mpi4py import MPI

    root, same = comm.Get_rank() == 0, True
    bits = mean.view(np.uint32)
    buf = None if root else np.empty(min(bits.shape[0], _BLOCK), dtype=np.uint32)
    for lo in range(0, bits.shape[0], _BLOCK):
        mine = bits[lo : lo + _BLOCK]
        if buf is None:
            comm.Bcast(np.ascontiguousarray(mine), root=0)
        else:
            theirs = buf[: mine.shape[0]]
            comm.Bcast(theirs, root=0)
            same = same and bool(np.array_equal(mine, theirs))
    return bool(comm.allreduce(same, op=MPI.LAND))


def _nmse(mean: np.ndarray, exact: np.ndarray) -> float:
    """``||mean - exact||^2 / ||exact||^2`` in float64, blockwise."""
    err = ref = 0.0
    for lo in range(0, exact.shape[0], _BLOCK):
        e = exact[lo : lo + _BLOCK]
        diff = mean[lo : lo + _BLOCK].astype(np.float64) - e
        err += float(np.dot(diff, diff))
        ref += float(np.dot(e, e))
    return err / max(ref, 1e-300)


def _validate(
    comm: Any, case: Case, data: dict[str, Any], comp: Compressor | None
) -> tuple[bool, list[float]]:
    """K untimed calls: (every rank held rank 0's bits each time, rank 0's NMSE of each)."""
    sch, first = scheme(case.scheme), case.warmup + case.iterations
    consistent, draws = True, []
    session = Session(comm)  # for the stateful schemes (PowerSGD's memories and Q)
    for step in range(first, first + guarantees.validation_draws(case.d)):
        mean, _ = sch(comm, data["x"], comp, seed=case.seed, step=step, session=session)
        consistent = _consistent(comm, mean) and consistent
        if data["exact"] is not None:
            draws.append(_nmse(mean, data["exact"]))
    return consistent, draws


_fp32_p50: dict[tuple[int, int], float] = {}


def run_case(
    comm: Any, case: Case, *, check: bool = False
) -> tuple[dict[str, Any], dict[str, tuple[Any, str]], dict[str, Any]] | None:
    """Measure one case on every rank of ``comm``; rank 0 gets (attributes, datasets, row).

    See the module docstring for what is measured and returned; other ranks get None.
    """
    sch = scheme(case.scheme)
    comp = _compressor(case.spec)
    run_comp = comp if sch.takes_compressor else None
    rank, p, d = comm.Get_rank(), comm.Get_size(), case.d
    data = _data(comm, case.seed, d)
    samples, hops = _timed(comm, case, data["x"], run_comp)
    # a timing reference (the plain MPI sum) has no accuracy to validate
    consistent, draws = (True, []) if sch.reference else _validate(comm, case, data, run_comp)
    gathered = comm.gather((samples, data["sq_norm"], hops), root=0)
    if rank != 0:
        return None
    nmse = float(np.mean(draws)) if draws else None
    allv = np.stack([g[0] for g in gathered])  # (nprocs, n, 10)
    sq_norms = [g[1] for g in gathered]
    mean_sq = float(np.dot(data["exact"], data["exact"]))
    inputs = BoundInputs(tuple(sq_norms), mean_sq, data["abs_sum"], data["abs_sq"])
    bound = guarantees.scheme_bound(sch, run_comp, d, p, inputs)
    limit = guarantees.allowed(bound, draws)
    status = "none"
    if check:
        status = "pass" if consistent and (limit is None or nmse <= limit) else "fail"
    w = case.warmup
    timed, split = allv[:, w:, :], allv[:, w:, :3]
    total = split.sum(axis=2)  # (nprocs, iterations)
    overhead = timed[:, :, 3] - total
    sent = timed[:, :, 4].mean(axis=1)
    slowest = total.argmax(axis=0)  # per call, the rank that finished last
    worst = total.max(axis=0)
    p50, p99 = (float(v) for v in np.percentile(worst, [50, 99]))
    parts = split[slowest, np.arange(total.shape[1]), :]
    wire = float(sent.mean())
    algbw = 4.0 * d / p50 / 1e9 if p50 > 0 else 0.0
    if case.scheme == _FP32:
        _fp32_p50[(d, p)] = p50
    fp32 = _fp32_p50.get((d, p))
    attrs: dict[str, Any] = {
        "scheme": case.scheme,
        "spec": comp.spec,
        "spec_given": case.spec,
        "d": d,
        "log2_d": d.bit_length() - 1,
        "nprocs": p,
        "iterations": case.iterations,
        "warmup": w,
        "seed": case.seed,
        "logical_bytes": 4 * d,
        "wire_bytes_per_rank": wire,
        "bits_per_coordinate": 8.0 * wire / d,
        # the papers' count for one rank's message of d entries (values or indices, then
        # scales and norms; no hpcq header), whatever the scheme does with it
        "theory_bits_per_coordinate": sum(comp.theory_bits(d)) / d,
        "latency_avg_s": float(total.mean()),
        "latency_min_s": float(total.min()),
        "latency_max_s": float(total.max()),
        "latency_p50_s": p50,
        "latency_p99_s": p99,
        **{
            f"{k}_median_s": float(np.median(parts[:, i]))
            for i, k in enumerate(("encode", "comm", "decode"))
        },
        "algbw_gbs": algbw,
        "busbw_gbs": algbw * 2 * (p - 1) / p,
        "exposed_comm_median_s": float(np.median(timed[slowest, np.arange(total.shape[1]), 9])),
        "overhead_median_s": float(np.median(overhead)),
        "overhead_pct": 100.0 * float(np.median(overhead)) / p50 if p50 > 0 else 0.0,
        "nmse": nmse,
        "nmse_std": float(np.std(draws, ddof=1)) if len(draws) > 1 else 0.0,
        "validation_draws": len(draws),
        "nmse_bound": bound,
        "nmse_allowed": limit,
        "consistent": consistent,
        "check": status,
        "x_fp32": p50 / fp32 if fp32 else None,
        "compressor": comp.describe(),
        **_levels(allv[:, w:, :], total),
    }
    datasets: dict[str, tuple[Any, str]] = {
        "encode_s": (split[:, :, 0], "s"),
        "comm_s": (split[:, :, 1], "s"),
        "decode_s": (split[:, :, 2], "s"),
        "total_s": (total, "s"),
        "overhead_s": (overhead, "s"),
        "exposed_comm_s": (timed[:, :, 9], "s"),
        "warmup_total_s": (allv[:, :w, :3].sum(axis=2), "s"),
        "nmse_draws": (np.array(draws), "1"),
        "bytes_sent": (sent, "bytes"),
        "bytes_recv": (timed[:, :, 5].mean(axis=1), "bytes"),
    }
    if any(g[2] is not None for g in gathered):
        # (nprocs, hops): each rank's error per hop (NaN past a rank's last hop: with a rank
        # count that is not a power of two, rhd's folded ranks make fewer hops)
        width = max(len(g[2]) for g in gathered if g[2] is not None)
        per = np.full((p, width), np.nan)
        for r, g in enumerate(gathered):
            if g[2] is not None:
                per[r, :len(g[2])] = g[2]
        datasets["hop_nmse"] = (per, "1")
        attrs["hop_nmse_max"] = float(np.nanmax(per))
    row = {k: v for k, v in attrs.items() if k != "compressor"}
    row["label"] = case.scheme if case.baseline else f"{case.scheme} {case.spec}"
    return attrs, datasets, row


def _levels(timed: np.ndarray, total: np.ndarray) -> dict[str, Any]:
    """A node-aware scheme's split (empty for the others): the medians over calls of the
    slowest node leader's (``Stats.leader``) intra- and inter-node seconds, the leaders'
    count, ranks per node, and the mean inter-node bytes of a node (its leader's, or all
    its ranks' together when each carries a shard)."""
    leaders = timed[:, :, 10].max(axis=1) > 0  # (nprocs,): the rank speaks for its node
    if not leaders.any() or not timed[:, :, 6].any():
        return {}
    lead_total = np.where(leaders[:, None], total, -np.inf)
    slowest = lead_total.argmax(axis=0)
    calls = np.arange(total.shape[1])
    n = int(leaders.sum())
    return {"intra_median_s": float(np.median(timed[slowest, calls, 6])),
            "inter_median_s": float(np.median(timed[slowest, calls, 7])),
            "leaders": n, "ranks_per_node": timed.shape[0] / n,
            "inter_wire_bytes_per_leader": float(timed[:, :, 8].sum(axis=0).mean() / n)}


def cost(case: Case) -> float:
    """Rough relative run time of a case (for :class:`~hpcq.bench.Progress` weights)."""
    return (case.iterations + case.warmup + 1) * (case.d + 20_000.0)
