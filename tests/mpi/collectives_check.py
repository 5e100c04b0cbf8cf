"""MPI payload: every collective's mean equals its serial computation, at any rank count.

Usage: ``mpiexec -n N python collectives_check.py D OUT.json SPEC [SPEC ...]``.  Every
rank runs each compressed scheme for each spec (plus a test-only variable-length
codec, so the ``...v`` paths run), the nonblocking variants, two-phase with error
feedback on both phases over three steps, and the fp32/fp16/bf16 baselines.  Rank 0
recomputes every result serially from every rank's regenerated input
(``tests/naive.py``) and writes the comparison to OUT.json for the test to assert
on.  Any exception aborts all ranks (never a hang).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import numpy as np
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/naive.py

import naive  # noqa: E402

from hpcq.bench import resolve_compressors  # noqa: E402
from hpcq.collectives import (  # noqa: E402
    SCHEMES,
    Session,
    iallgather_mean,
    itwo_phase_mean,
    scheme,
    two_phase_mean,
)
from hpcq.compressors import compressor  # noqa: E402
from hpcq.feedback import ErrorFeedback  # noqa: E402

COMPRESSED = ("allgather", "two-phase", "ps", "ps-compressed")
SEED, STEP = 7, 3


class NonzerosCodec:
    """Test-only variable-length codec: (int64 index, float32 value) of every nonzero."""

    spec = name = "test-nonzeros"
    rotation = 0

    def wire_bytes(self, d: int) -> None:
        return None

    def encode(self, x: np.ndarray, *, seed: int = 0, step: int = 0, rank: int = 0
               ) -> np.ndarray:
        idx = np.flatnonzero(x)
        head = np.array([x.shape[0]], dtype=np.int64).view(np.uint8)
        return np.concatenate([head, idx.astype(np.int64).view(np.uint8),
                               x[idx].astype(np.float32).view(np.uint8)])

    def decode(self, buf: np.ndarray, *, out: np.ndarray | None = None,
               add: bool = False) -> np.ndarray:
        d = int(buf[:8].view(np.int64)[0])
        k = (buf.shape[0] - 8) // 12
        y = np.zeros(d, dtype=np.float32)
        y[buf[8:8 + 8 * k].view(np.int64)] = buf[8 + 8 * k:].view(np.float32)
        if out is None:
            return y
        if add:
            out += y
        else:
            out[:] = y
        return out


def vector(rank: int, d: int) -> np.ndarray:
    """Rank ``rank``'s input: a shared part plus its own, float32."""
    shared = np.random.default_rng([SEED, 0]).standard_normal(d)
    own = np.random.default_rng([SEED, 1, rank]).standard_normal(d)
    return (shared + own).astype(np.float32)


def sparse_vector(rank: int, d: int) -> np.ndarray:
    """Nonzeros at rank-dependent places, so every rank's message length differs."""
    x = vector(rank, d)
    x[(rank + 2) ** 2:] = 0.0
    return x


def compare(mean: np.ndarray, want: np.ndarray, everyone: list[np.ndarray] | None,
            stats: object, tol: float = 0.0) -> dict[str, object]:
    diff = float(np.max(np.abs(mean.astype(np.float64) - want), initial=0.0))
    return {"equal": diff <= tol, "max_abs_diff": diff, "tol": tol,
            "same_on_all_ranks": everyone is None or all(np.array_equal(mean, m)
                                                         for m in everyone),
            "stats": {k: float(v) for k, v in stats.as_dict().items()}}  # type: ignore[attr-defined]


def recorder(comm: MPI.Comm, report: dict[str, object]):  # type: ignore[no-untyped-def]
    """``record(key, mean, stats, want_fn, tol_fn=None, extra=None)``: every rank's mean to
    rank 0, which compares it with ``want_fn()`` (within ``tol_fn(want)``) into ``report``."""
    def record(key: str, mean: np.ndarray, stats: object, want_fn, tol_fn=None,
               extra: dict | None = None) -> None:
        everyone = comm.gather(mean, root=0)
        if comm.Get_rank() == 0:
            want = want_fn()
            report[key] = compare(mean, want, everyone, stats,
                                  tol_fn(want) if tol_fn is not None else 0.0)
            report[key].update(extra or {})  # type: ignore[attr-defined]

    return record


def main() -> None:
    comm = MPI.COMM_WORLD
    rank, p = comm.Get_rank(), comm.Get_size()
    d, out, specs = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    built = resolve_compressors(specs, skip_unavailable=True)[0]
    cases = [(label, c, vector) for label, c in built]
    cases.append(("test-nonzeros", NonzerosCodec(), sparse_vector))
    report: dict[str, object] = {}
    record = recorder(comm, report)

    for label, comp, make in cases:
        x = make(rank, d)
        vectors = [make(r, d) for r in range(p)]
        for name in COMPRESSED:
            mean, stats = SCHEMES.get(name)(comm, x, comp, seed=SEED, step=STEP)
            # a rotated codec averages in the rotated domain (Compressor.mean_of) and rotates
            # back once: the same mean up to the rotation's float32 rounding, not bit for bit
            rotated = bool(getattr(comp, "rotation", 0))
            record(f"{name} {label}", mean, stats, lambda n=name, c=comp, v=vectors:
                   naive.serial_scheme_mean(n, c, v, SEED, STEP),
                   (lambda w: 1e-5 * float(np.abs(w).max())) if rotated else None)
        blocking = SCHEMES.get("allgather")(comm, x, comp, seed=SEED, step=STEP)[0]
        pending = iallgather_mean(comm, x, comp, seed=SEED, step=STEP)
        mean, stats = pending.wait()
        record(f"iallgather {label}", mean, stats, lambda b=blocking: b)
        blocking = two_phase_mean(comm, x, comp, seed=SEED, step=STEP)[0]
        pending = itwo_phase_mean(comm, x, comp, seed=SEED, step=STEP)
        pending.test()
        mean, stats = pending.wait()
        record(f"itwo-phase {label}", mean, stats, lambda b=blocking: b)

    # two-phase with error feedback on both phases, three steps: memories carry over
    comp = compressor("qsgd:bits=2")
    x = vector(rank, d)
    bounds = np.concatenate(([0], np.cumsum([d // p + (j < d % p) for j in range(p)])))
    worker = ErrorFeedback(comp)
    server = ErrorFeedback(comp, alpha=1.0, beta=0.5)
    ref = None
    if rank == 0:
        ref = ([ErrorFeedback(comp) for _ in range(p)],
               [ErrorFeedback(comp, alpha=1.0, beta=0.5) for _ in range(p)])
    for step in range(3):
        mean, stats = two_phase_mean(comm, x, comp, seed=SEED, step=step, feedback=worker,
                                     server_feedback=server)
        record(f"two-phase+ef step{step}", mean, stats, lambda s=step: naive.serial_scheme_mean(
            "two-phase", comp, [vector(r, d) for r in range(p)], SEED, s, ref))
    memories = comm.gather((worker.memory.copy(), server.memory.copy()), root=0)
    if rank == 0:
        report["ef memories"] = {
            "equal": all(np.array_equal(memories[r][0], ref[0][r].memory)
                         and np.array_equal(memories[r][1], ref[1][r].memory)
                         for r in range(p)),
            "same_on_all_ranks": True,
            "server_lengths": [int(m[1].shape[0]) for m in memories],
            "chunk_lengths": np.diff(bounds).tolist()}

    # baselines: sums of p float terms in MPI's order; exact for p <= 2, else within rounding
    vectors = [vector(r, d) for r in range(p)]
    x = vectors[rank]
    exact = np.sum(np.array(vectors, dtype=np.float64), axis=0) / p
    abs_sum = np.sum(np.abs(np.array(vectors, dtype=np.float64)), axis=0) / p
    for name, u in (("allreduce-fp32", 2.0**-24), ("allreduce-fp16", 2.0**-11),
                    ("allreduce-bf16", 2.0**-8)):
        mean, stats = SCHEMES.get(name)(comm, x)
        record(name, mean, stats, lambda: exact, lambda want, u=u: float(
            (p + 1) * u * abs_sum.max() + 1e-30))
    for alg in ("allreduce", "rsag"):  # both algorithms of the fp32 baseline
        mean, stats = scheme(f"allreduce-fp32:algorithm={alg}")(comm, x)
        record(f"allreduce-fp32 {alg}", mean, stats, lambda: exact, lambda want: float(
            (p + 1) * 2.0**-24 * abs_sum.max() + 1e-30))
    # a session deferring the 1/p: the sum comes back with stats.scale = 1/p, and the sum
    # times the scale is the mean (within the same rounding); compressed schemes ignore it
    deferring = Session(comm, defer_scale=True)
    for name, u in (("allreduce-fp32", 2.0**-24), ("allreduce-fp16", 2.0**-11),
                    ("allreduce-bf16", 2.0**-8)):
        total, stats = SCHEMES.get(name)(comm, x, session=deferring)
        assert stats.scale == (1.0 / p if p > 1 else 1.0), (name, stats.scale)
        record(f"{name} deferred", total * np.float32(stats.scale), stats, lambda: exact,
               lambda want, u=u: float((p + 2) * u * abs_sum.max() + 1e-30))
    mean, stats = SCHEMES.get("allgather")(comm, x, compressor("fp32"), session=deferring)
    assert stats.scale == 1.0
    record("allgather deferred", mean, stats, lambda: exact, lambda want: float(
        (p + 1) * 2.0**-24 * abs_sum.max() + 1e-30))
    for kind, u in (("fp32", 2.0**-24), ("fp16", 2.0**-11), ("bf16", 2.0**-8)):
        mean, stats = SCHEMES.get("ps-reduce")(comm, x, compressor(kind))
        record(f"ps-reduce {kind}", mean, stats, lambda: exact, lambda want, u=u: float(
            (p + 2) * u * abs_sum.max() + 1e-30))
    if rank == 0:
        Path(out).write_text(json.dumps({"nprocs": p, "d": d, "results": report}))


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        traceback.print_exc()  # the test fails on it; Abort so no rank waits forever
        MPI.COMM_WORLD.Abort(1)
