"""Model workloads: a model's gradient moved bucket by bucket, as data-parallel training moves it.

A case (``[collectives] workload = "resnet50"``, ``hpcq bench collectives --workload``)
is one (workload, scheme, compressor, bucket rule, policy, gradient source).  Its
gradient is the workload's tensors (:mod:`hpcq.workloads`), split into buckets by the
rule (``ddp``: PyTorch DDP's reverse-order buckets of 1 MiB then 25 MiB; ``fused:mib=N``;
``single``); inside a bucket the policy (:class:`hpcq.workloads.Policy`) sends tensors
under ``min_size`` elements, and those an override names ``none``, uncompressed in one
fp32 ``Allreduce``, and every other group of tensors sharing a codec as one message of the
scheme.  A bucket's buffer holds its tensors grouped that way (codec groups first, the
uncompressed ones last, each group in bucket order), so no group needs a copy to be sent.
The baselines (``allreduce-*``) send each whole bucket in their format.

Measurement (every rank)
------------------------
Bucket by bucket, never the whole gradient at once (LLaMA-7B's is 27 GB in fp32): the
bucket's values are generated (untimed) into one reused buffer, then ``warmup`` untimed
and ``iterations`` timed calls of the bucket's collectives follow, each preceded by a
``Barrier`` (so each bucket call starts together, as after DDP's previous bucket), then
one untimed validation call.  An iteration's time is the sum over buckets of the slowest
rank's time for that bucket's call (the buckets of one backward pass go one after another
on one communication stream; overlap with compute is the verdict model's business,
not this measurement's).  Gradient values are independent draws per rank (a
:class:`~hpcq.workloads.Synthetic` source) or a file's arrays; with independent
draws the NMSE of the mean is about a codec's single-message NMSE at any rank count.

Validation: the exact mean of each bucket in float64 (``Allreduce`` blockwise, on every
rank), the error per tensor and per bucket, and a CRC-32 of the mean compared across
ranks (every rank must hold the same bits).

Case written (kind ``workload``)
--------------------------------
Datasets: ``iteration_s`` (iterations,) the per-iteration time above; ``bucket_s``
(nprocs, buckets, iterations) each rank's wall time per bucket call; ``encode_s``,
``comm_s``, ``decode_s`` (nprocs, buckets, iterations); ``bucket_elements``,
``bucket_compressed`` (buckets,) elements in all and compressed; ``bucket_bytes_sent``
(nprocs, buckets) mean bytes per call; ``bucket_nmse`` (buckets,); ``tensor_nmse``,
``tensor_elements`` (tensors,) in the workload's order; ``peak_rss_bytes`` (nprocs,).

Attributes: workload, scheme, spec, spec_given, buckets (rule spec), min_size,
overrides, gradients, nprocs, iterations, warmup, seed, parameters, tensors,
n_buckets, uncompressed_share (fraction of parameters sent uncompressed),
bytes_per_iteration (mean over ranks of bytes sent per iteration), bits_per_parameter
(8 x that / parameters), iteration_p50_s, iteration_p99_s, encode_iteration_s, comm_iteration_s,
decode_iteration_s (per iteration: sum over buckets of the median over calls of the
slowest rank's part),
``phase_<name>_s`` the same for each named phase of a scheme that reports them
(PowerSGD: pack, p, orthogonalize, q, comm_rest, comm_p, comm_q, decompress),
nmse (whole gradient), nmse_worst_tensor and worst_tensor, consistent,
peak_rss_max_bytes, x_fp32 (p50 / p50 of allreduce-fp32 on the same workload, when it
ran earlier in this process), ``workload_facts.*`` and ``compressor.*``.
"""

from __future__ import annotations

import resource
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from hpcq.bench import resolve_compressors
from hpcq.collectives import Session, scheme
from hpcq.compressors import Compressor, compressor
from hpcq.workloads import (
    FromFile,
    Layout,
    Policy,
    Tensor,
    gradient_source,
    parse_bucket_rule,
    workload,
)

_BLOCK = 1 << 22  # elements per validation block: bounds the float64 temporaries
_FP32 = "allreduce-fp32"


@lru_cache(maxsize=64)
def _compressor(spec: str) -> Compressor:
    return compressor(spec)


@lru_cache(maxsize=8)
def _layout(name: str) -> Layout:
    return workload(name).layout


@dataclass(frozen=True)
class WorkloadCase:
    """One (workload, scheme, compressor, bucket rule, policy, gradients) measurement."""

    workload: str
    scheme: str
    spec: str  # the compressor as given; a baseline's cast for a baseline
    buckets: str
    min_size: int
    overrides: tuple[tuple[str, str], ...]
    gradients: str
    iterations: int
    warmup: int
    seed: int

    kind = "workload"

    @property
    def baseline(self) -> bool:
        """True for a scheme that takes no compressor (the casts, PowerSGD, allreduce-fp8):
        it gets each bucket whole, with its layout, and ``spec`` is its ``sends``."""
        return not scheme(self.scheme).takes_compressor

    @property
    def label(self) -> str:
        """``resnet50 allgather qsgd:bits=4``; a baseline without its spec."""
        what = self.scheme if self.baseline else f"{self.scheme} {self.spec}"
        return f"{self.workload} {what}"

    @property
    def policy(self) -> Policy:
        """The per-tensor policy (baselines send everything in their format)."""
        return Policy(self.min_size, self.overrides)

    def params(self) -> dict[str, Any]:
        """The identity of the case (its resume key), specs in canonical form."""
        return {"kind": self.kind, "workload": self.workload,
                "scheme": scheme(self.scheme).spec, "spec": _compressor(self.spec).spec,
                "buckets": parse_bucket_rule(self.buckets).spec, "min_size": self.min_size,
                "overrides": [f"{p}={s}" for p, s in self.overrides],
                "gradients": self.gradients, "iterations": self.iterations,
                "warmup": self.warmup, "seed": self.seed}


def parse_overrides(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``["*.bias=none", "fc.*=qsgd:bits=8"]`` -> ((pattern, spec), ...); ValueError naming a
    malformed item."""
    out = []
    for item in items:
        pattern, eq, spec = str(item).partition("=")
        if not eq or not pattern.strip() or not spec.strip():
            raise ValueError(f"override {item!r}: expected PATTERN=SPEC, e.g. '*.bias=none' "
                             f"or 'fc.*=qsgd:bits=8'")
        out.append((pattern.strip(), spec.strip()))
    return tuple(out)


def expand(table: Any, *, seed: int, skip_unavailable: bool = False
           ) -> tuple[list[WorkloadCase], list[str]]:
    """The cases of a ``[collectives]`` table with ``workload`` set, and skip notes.

    ValueError (one line, naming the key) for an unknown workload, bucket rule,
    gradient source or scheme, a bad policy, a compressor a scheme cannot carry.
    """
    if table.iterations < 1 or table.warmup < 0:
        raise ValueError(f"iterations must be >= 1 and warmup >= 0 (got {table.iterations}, "
                         f"{table.warmup})")
    try:
        lay = _layout(table.workload)
    except (ValueError, OSError) as e:
        raise ValueError(f"workload: {e}") from None
    try:
        parse_bucket_rule(table.buckets)  # validated here, parsed again per case
    except ValueError as e:
        raise ValueError(f"buckets: {e}") from None
    try:
        overrides = parse_overrides(table.overrides)
        Policy(table.min_size, overrides)
    except ValueError as e:
        raise ValueError(f"overrides/min_size: {e}") from None
    try:
        src = gradient_source(table.gradients, seed=seed, layout=lay)
        if isinstance(src, FromFile):
            src.check_values()  # every array finite: no run stops half-way on a bad one
    except (ValueError, OSError) as e:
        raise ValueError(f"gradients: {e}") from None
    chosen = []
    for name in dict.fromkeys(table.schemes):
        try:
            chosen.append(scheme(name))
        except ValueError as e:
            raise ValueError(f"schemes: {e}") from None
    comps, notes = resolve_compressors(table.compressors, skip_unavailable=skip_unavailable)
    compressed = [s for s in chosen if s.takes_compressor]
    if compressed and not comps:
        raise ValueError(f"schemes: scheme {compressed[0].name} needs at least one compressor")
    extra = [s for _, s in overrides if s != "none"]
    for s in compressed:
        for spec in [c.spec for _, c in comps] + extra:
            try:
                s.check(_compressor(spec))
            except ValueError as e:
                raise ValueError(f"schemes: {e}") from None
    common = {"workload": table.workload, "buckets": table.buckets,
              "min_size": table.min_size, "overrides": overrides,
              "gradients": table.gradients, "iterations": table.iterations,
              "warmup": table.warmup, "seed": seed}
    out = [WorkloadCase(scheme=s.spec, spec=str(s.sends), **common) for s in chosen
           if not s.takes_compressor]
    out += [WorkloadCase(scheme=s.spec, spec=given, **common) for s in compressed
            for given, _ in comps]
    return out, notes


@dataclass(frozen=True)
class Group:
    """A run of a bucket's buffer sent one way: ``spec`` None = uncompressed fp32."""

    spec: str | None
    lo: int
    hi: int
    tensors: tuple[Tensor, ...]

    @property
    def layout(self) -> Layout:
        """The group's tensors as they lie in its part of the bucket buffer."""
        return Layout.from_shapes([(t.name, t.shape) for t in self.tensors])


def plan(case: WorkloadCase) -> list[list[Group]]:
    """Per bucket, its groups in buffer order (codec groups first, uncompressed last)."""
    lay = _layout(case.workload)
    buckets = parse_bucket_rule(case.buckets)(lay)
    pol = case.policy
    out = []
    for b in buckets:
        if case.baseline:
            out.append([Group(None, 0, b.size, b.tensors)])
            continue
        by: dict[str | None, list[Tensor]] = {}
        for t in b.tensors:
            by.setdefault(pol.codec_for(t, case.spec), []).append(t)
        order = [k for k in by if k is not None] + ([None] if None in by else [])
        groups, lo = [], 0
        for k in order:
            n = sum(t.size for t in by[k])
            groups.append(Group(k, lo, lo + n, tuple(by[k])))
            lo += n
        out.append(groups)
    return out


def compile_for(cases: Sequence[WorkloadCase], *, nprocs: int | None = None) -> float:
    """Compile (or load) the kernels of every codec and length class the cases use."""
    from hpcq.bench.kernels import compile_kernels
    from hpcq.kernels._config import PARALLEL_MIN_ELEMENTS

    t0 = time.perf_counter()
    comps: dict[str, Compressor] = {}
    big = False
    for c in cases:
        for groups in plan(c):
            for g in groups:
                if g.spec is not None:
                    comp = _compressor(g.spec)
                    comps.setdefault(comp.spec, comp)
                big = big or g.hi - g.lo >= PARALLEL_MIN_ELEMENTS
    compile_kernels(list(comps.values()), [PARALLEL_MIN_ELEMENTS] if big else [])
    return time.perf_counter() - t0


def _fill(src: Any, groups: list[Group], buf: np.ndarray, rank: int) -> None:
    for g in groups:
        lo = g.lo
        for t in g.tensors:
            src.fill(t, buf[lo:lo + t.size], rank=rank, step=0)
            lo += t.size


def _call(comm: Any, sch: Any, groups: list[Group], buf: np.ndarray, out: np.ndarray,
          session: Session, *, seed: int, step: int, phases: dict[str, float] | None = None
          ) -> np.ndarray:
    """One bucket's collectives: (encode, comm, decode, bytes sent) of this rank; the seconds
    of a scheme's named phases (PowerSGD's) are added into ``phases``."""
    from hpcq.collectives.baselines import allreduce_mean

    acc = np.zeros(4)
    for g in groups:
        x, y = buf[g.lo:g.hi], out[g.lo:g.hi]
        if not sch.takes_compressor:
            _, st = sch.mean(comm, x, seed=seed, step=step, session=session, out=y,
                             layout=g.layout)
        elif g.spec is None:
            _, st = allreduce_mean(comm, x, out=y, session=session)
        else:
            _, st = sch.mean(comm, x, _compressor(g.spec), seed=seed, step=step,
                             session=session, out=y, layout=g.layout)
        acc += (st.encode_s, st.comm_s, st.decode_s, st.bytes_sent)
        if phases is not None:
            for k, v in st.phases.items():
                phases[k] = phases.get(k, 0.0) + v
    return acc


def _errors(comm: Any, groups: list[Group], buf: np.ndarray, out: np.ndarray,
            index: dict[str, int], err: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Add each tensor's ``||mean - exact||^2`` and ``||exact||^2`` (float64) into
    ``err``/``ref`` at the tensors' ``index``; return the bucket's totals."""
    from mpi4py import MPI

    p = comm.Get_size()
    bounds, ids = [], []
    for g in groups:
        lo = g.lo
        for t in g.tensors:
            bounds.append(lo)
            ids.append(index[t.name])
            lo += t.size
    bounds_a = np.array(bounds + [buf.shape[0]], dtype=np.int64)
    ids_a = np.array(ids, dtype=np.int64)
    total_e = total_r = 0.0
    exact = np.empty(min(_BLOCK, buf.shape[0]))
    for lo in range(0, buf.shape[0], _BLOCK):
        hi = min(lo + _BLOCK, buf.shape[0])
        ex = exact[: hi - lo]
        comm.Allreduce(buf[lo:hi].astype(np.float64), ex, op=MPI.SUM)
        ex /= p
        diff = out[lo:hi].astype(np.float64) - ex
        # tensors overlapping [lo, hi): segment sums by their starts inside the block
        first = int(np.searchsorted(bounds_a, lo, side="right")) - 1
        last = int(np.searchsorted(bounds_a, hi, side="left"))
        starts = np.maximum(bounds_a[first:last], lo) - lo
        e2 = np.add.reduceat(diff * diff, starts)
        r2 = np.add.reduceat(ex * ex, starts)
        np.add.at(err, ids_a[first:last], e2)
        np.add.at(ref, ids_a[first:last], r2)
        total_e += float(e2.sum())
        total_r += float(r2.sum())
    return total_e, total_r


_fp32_p50: dict[tuple[str, str, int], float] = {}


def run_case(comm: Any, case: WorkloadCase, *, check: bool = False
             ) -> tuple[dict[str, Any], dict[str, tuple[Any, str]], dict[str, Any]] | None:
    """Measure one workload case on every rank; rank 0 gets (attributes, datasets, row)."""
    from mpi4py import MPI

    rank, p = comm.Get_rank(), comm.Get_size()
    wl = workload(case.workload)
    lay = wl.layout
    sch = scheme(case.scheme)
    src = gradient_source(case.gradients, seed=case.seed, layout=lay)
    groups_all = plan(case)
    nb, n_it, w = len(groups_all), case.iterations, case.warmup
    index = {t.name: i for i, t in enumerate(lay)}
    times = np.zeros((nb, n_it, 4))  # encode, comm, decode, wall
    phase_t: dict[str, np.ndarray] = {}  # a scheme's named phases: (buckets, iterations)
    sent = np.zeros(nb)
    err_t, ref_t = np.zeros(len(lay)), np.zeros(len(lay))
    bucket_nmse = np.zeros(nb)
    consistent = True
    largest = max(groups[-1].hi for groups in groups_all)
    wtime, barrier = MPI.Wtime, comm.Barrier
    with Session(comm) as session:
        buf = session.buffer("workload.gradient", largest)
        out = session.buffer("workload.mean", largest)
        for b, groups in enumerate(groups_all):
            n = groups[-1].hi
            x, y = buf[:n], out[:n]
            _fill(src, groups, x, rank)
            # timed calls: the baselines leave their 1/p to the consumer, as frameworks do;
            # the checked call after them returns the mean
            session.defer_scale = True
            for step in range(w + n_it):
                barrier()
                t0 = wtime()
                ph: dict[str, float] = {}
                acc = _call(comm, sch, groups, x, y, session, seed=case.seed, step=step,
                            phases=ph)
                t1 = wtime()
                if step >= w:
                    times[b, step - w] = (*acc[:3], t1 - t0)
                    sent[b] += acc[3] / n_it
                    for k, v in ph.items():
                        phase_t.setdefault(k, np.zeros((nb, n_it)))[b, step - w] = v
            session.defer_scale = False
            _call(comm, sch, groups, x, y, session, seed=case.seed, step=w + n_it)
            crc = zlib.crc32(y)
            consistent = consistent and len(set(comm.allgather(crc))) == 1
            if sch.reference:  # the plain MPI sum is not a mean: no accuracy to measure
                continue
            e, r = _errors(comm, groups, x, y, index, err_t, ref_t)
            bucket_nmse[b] = e / r if r > 0 else 0.0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB
    gathered = comm.gather((times, sent, rss, phase_t), root=0)
    consistent = bool(comm.allreduce(consistent, op=MPI.LAND))
    if rank != 0:
        return None
    allt = np.stack([g[0] for g in gathered])  # (nprocs, buckets, iterations, 4)
    sent_all = np.stack([g[1] for g in gathered])  # (nprocs, buckets)
    rss_all = np.array([g[2] for g in gathered], dtype=np.int64)
    wall = allt[..., 3]
    slowest = wall.argmax(axis=0)  # (buckets, iterations)
    per_iter = wall.max(axis=0).sum(axis=0)  # (iterations,)
    p50, p99 = (float(v) for v in np.percentile(per_iter, [50, 99]))
    bi, ii = np.meshgrid(np.arange(nb), np.arange(n_it), indexing="ij")
    parts = allt[slowest, bi, ii, :3]  # (buckets, iterations, 3): the slowest rank's split
    split = np.median(parts, axis=1).sum(axis=0)
    # each named phase the same way: the slowest rank's, median over iterations, summed
    phases = {k: float(np.median(np.stack([g[3][k] for g in gathered])[slowest, bi, ii],
                                 axis=1).sum()) for k in gathered[0][3]}
    elements = np.array([g[-1].hi for g in groups_all], dtype=np.int64)
    compressed = np.array([sum(x.hi - x.lo if x.spec is not None else
                               sch.compressed_size(x.layout) for x in g)
                           for g in groups_all], dtype=np.int64)
    per_rank_iter = sent_all.sum(axis=1)
    bytes_iter = float(per_rank_iter.mean())
    tensor_nmse = np.where(ref_t > 0, err_t / np.where(ref_t > 0, ref_t, 1.0), 0.0)
    worst = int(np.argmax(tensor_nmse))
    nmse = float(err_t.sum() / ref_t.sum()) if ref_t.sum() > 0 else 0.0
    params = lay.size
    key = (case.workload, case.buckets, p)
    if sch.name == _FP32:
        _fp32_p50[key] = p50
    fp32 = _fp32_p50.get(key)
    comp = _compressor(case.spec)
    attrs: dict[str, Any] = {
        "workload": case.workload, "scheme": sch.spec, "spec": comp.spec,
        "spec_given": case.spec, "buckets": parse_bucket_rule(case.buckets).spec,
        "min_size": case.min_size, "overrides": [f"{a}={b}" for a, b in case.overrides] or None,
        "gradients": case.gradients, "nprocs": p, "iterations": n_it, "warmup": w,
        "seed": case.seed, "parameters": params, "tensors": len(lay), "n_buckets": nb,
        "uncompressed_share": float(1.0 - compressed.sum() / params),
        "bytes_per_iteration": bytes_iter, "bits_per_parameter": 8.0 * bytes_iter / params,
        "iteration_p50_s": p50, "iteration_p99_s": p99,
        "encode_iteration_s": float(split[0]), "comm_iteration_s": float(split[1]),
        "decode_iteration_s": float(split[2]),
        **{f"phase_{k}_s": v for k, v in phases.items()},
        "nmse": None if sch.reference else nmse,
        "nmse_worst_tensor": None if sch.reference else float(tensor_nmse[worst]),
        "worst_tensor": None if sch.reference else lay.tensors[worst].name,
        "consistent": consistent,
        "check": ("pass" if consistent else "fail") if check else "none",
        "peak_rss_max_bytes": int(rss_all.max()), "x_fp32": p50 / fp32 if fp32 else None,
        "workload_facts": {k: v for k, v in wl.describe().items() if v is not None},
        "compressor": comp.describe(),
    }
    data: dict[str, tuple[Any, str]] = {
        "iteration_s": (per_iter, "s"),
        "bucket_s": (wall, "s"),
        "encode_s": (allt[..., 0], "s"),
        "comm_s": (allt[..., 1], "s"),
        "decode_s": (allt[..., 2], "s"),
        "bucket_elements": (elements, "1"),
        "bucket_compressed": (compressed, "1"),
        "bucket_bytes_sent": (sent_all, "bytes"),
        "bucket_nmse": (bucket_nmse, "1"),
        "tensor_nmse": (tensor_nmse, "1"),
        "tensor_elements": (np.array([t.size for t in lay], dtype=np.int64), "1"),
        "peak_rss_bytes": (rss_all, "bytes"),
    }
    row = {k: v for k, v in attrs.items() if k not in ("compressor", "workload_facts")}
    row["label"] = sch.spec if case.baseline else f"{sch.spec} {case.spec}"
    return attrs, data, row


def cost(case: WorkloadCase) -> float:
    """Rough relative run time (for progress weights): generation plus the calls."""
    n = _layout(case.workload).size
    return n * (3.0 + case.iterations + case.warmup)


def _e(v: float | None) -> str:
    """A 9-column NMSE cell (``-`` for none: the timing reference)."""
    return f"{'-':>9}" if v is None else f"{v:>9.1e}"


def format_table(rows: Sequence[dict[str, Any]], *, nprocs: int) -> str:
    """The rows of :func:`run_case` as aligned text, a block per (workload, bucket rule)."""
    lines = [f"# hpcq bench collectives --workload: one gradient per iteration over {nprocs} "
             f"rank(s)",
             "# p50/p99: per iteration, the sum over buckets of the slowest rank's time, in ms; "
             "enc/comm/dec: the same of the medians;\n# bits/par: bits sent per parameter "
             "(mean over ranks); unc%: parameters sent uncompressed; NMSE of the whole mean "
             "and of its worst tensor;\n# x fp32: p50 / p50 of allreduce-fp32 (its 1/p folded into "
             "the step); RSS: peak "
             "resident memory of the largest rank"]
    head = (f"{'# scheme compressor':<32}{'bits/par':>9}{'p50':>9}{'p99':>9}{'enc':>8}"
            f"{'comm':>8}{'dec':>8}{'x fp32':>7}{'unc%':>7}{'NMSE':>9}{'worst':>9}{'RSS MiB':>8}")
    for key in dict.fromkeys((r["workload"], r["buckets"]) for r in rows):
        block = [r for r in rows if (r["workload"], r["buckets"]) == key]
        r0 = block[0]
        lines += ["", f"# {key[0]}: {r0['parameters']:,} parameters in {r0['tensors']} tensors, "
                      f"{r0['n_buckets']} buckets ({key[1]}), min_size {r0['min_size']}, "
                      f"{r0['iterations']} timed iterations (+{r0['warmup']} warm-up)", head]
        for r in block:
            x = f"{r['x_fp32']:7.2f}" if r["x_fp32"] else f"{'-':>7}"
            flag = "" if r["consistent"] else "  INCONSISTENT"
            label = r["label"]
            if len(label) >= 32:
                lines.append(label)
                label = ""
            lines.append(
                f"{label:<32}{r['bits_per_parameter']:>9.3g}"
                f"{1e3 * r['iteration_p50_s']:>9.2f}{1e3 * r['iteration_p99_s']:>9.2f}"
                f"{1e3 * r['encode_iteration_s']:>8.2f}{1e3 * r['comm_iteration_s']:>8.2f}"
                f"{1e3 * r['decode_iteration_s']:>8.2f}"
                f"{x}{100 * r['uncompressed_share']:>7.2f}{_e(r['nmse'])}"
                f"{_e(r['nmse_worst_tensor'])}{r['peak_rss_max_bytes'] / 2**20:>8.0f}{flag}")
            named = [(k[6:-2], v) for k, v in r.items() if k.startswith("phase_")]
            if named:
                lines.append("    phases, ms: " + ", ".join(f"{k} {1e3 * v:.2f}"
                                                         for k, v in named))
    return "\n".join(lines)
