"""MPI payload: the multi-hop, integer and pipelined means equal their serial computation.

Usage: ``mpiexec -n N python multihop_check.py D OUT.json SPEC [SPEC ...]``.  Every rank
runs ``ring``, ``rhd`` and ``pipelined`` (chunks 3) for each codec spec (plus the
test-only variable-length codec of collectives_check.py), ``ring``/``rhd`` with
``hop_error`` and with error feedback, and ``allreduce-int`` at 8/16/32 bits with and
without rotation on ordinary and adversarial inputs; rank 0 recomputes every result
serially (``tests/naive.py``) and writes the comparison to OUT.json.  Any exception aborts
all ranks (never a hang).
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import numpy as np
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/naive.py
sys.path.insert(0, str(Path(__file__).resolve().parent))

import naive  # noqa: E402
from collectives_check import NonzerosCodec, recorder, sparse_vector, vector  # noqa: E402

from hpcq.bench import resolve_compressors  # noqa: E402
from hpcq.collectives import Session, scheme  # noqa: E402
from hpcq.compressors.base import Keys  # noqa: E402
from hpcq.kernels import intsum  # noqa: E402

SEED, STEP = 7, 3


def adversarial(rank: int, d: int, p: int, kind: str) -> np.ndarray:
    """Inputs that push every code to the edge of the grid."""
    if kind == "all-max":  # every coordinate of every rank at +max: every code is +q
        return np.full(d, 3.5, dtype=np.float32)
    if kind == "alternating":  # +-max, the same signs on every rank
        return np.where(np.arange(d) % 2 == 0, 2.0, -2.0).astype(np.float32)
    # one rank holds a huge value, the others tiny ones
    x = np.full(d, 1e-6, dtype=np.float32)
    if rank == p - 1:
        x[:] = -1e6
    return x


def main() -> None:
    comm = MPI.COMM_WORLD
    rank, p = comm.Get_rank(), comm.Get_size()
    d, out, specs = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    built = resolve_compressors(specs, skip_unavailable=True)[0]
    cases = [(label, c, vector) for label, c in built]
    cases.append(("test-nonzeros", NonzerosCodec(), sparse_vector))
    report: dict[str, object] = {}
    record = recorder(comm, report)

    serial = {"ring": naive.serial_ring_mean, "rhd": naive.serial_rhd_mean,
              "pipelined:chunks=3": None}
    for label, comp, make in cases:
        x = make(rank, d)
        vectors = [make(r, d) for r in range(p)]
        rotated = bool(getattr(comp, "rotation", 0))
        for name, ref in serial.items():
            mean, stats = scheme(name)(comm, x, comp, seed=SEED, step=STEP)
            if ref is None:  # pipelined: chunk i is an allgather mean, rank words r k + i
                k = 3
                b = np.concatenate(([0], np.cumsum([d // k + (j < d % k) for j in range(k)])))
                ref = lambda c, v, s, t, b=b, k=k: np.concatenate([  # noqa: E731
                    naive.serial_average(c, [u[b[i]:b[i + 1]] for u in v], s, t,
                                         [r * k + i for r in range(len(v))])
                    for i in range(k)])
            record(f"{name} {label}", mean, stats,
                   lambda r=ref, c=comp, v=vectors: r(c, v, SEED, STEP),
                   (lambda w: 1e-5 * float(np.abs(w).max())) if rotated and name.startswith(
                       "pipelined") else None)

    # hop errors: one entry per compression this rank made, each within the codec's omega
    comp = built[0][1]
    x = vector(rank, d)
    for name in ("ring", "rhd"):
        mean, stats = scheme(f"{name}:hop_error=true")(comm, x, comp, seed=SEED, step=STEP)
        hops = comm.gather(stats.hop_nmse, root=0)
        record(f"{name} hop_error", mean, stats, lambda n=name: naive.serial_ring_mean(
            comp, [vector(r, d) for r in range(p)], SEED, STEP) if n == "ring" else
            naive.serial_rhd_mean(comp, [vector(r, d) for r in range(p)], SEED, STEP),
            extra={"hops": hops, "omega": max(comp.error_bound(n) for n in
                                              scheme(name).codec_lengths(d, p))})

    # error feedback: memories per hop in the session, same bits on every rank, 3 steps
    for name in ("ring", "rhd"):
        with Session(comm) as session:
            for step in range(3):
                mean, stats = scheme(f"{name}:feedback=true")(comm, x, comp, seed=SEED,
                                                              step=step, session=session)
                everyone = comm.gather(mean, root=0)
                if rank == 0:
                    report[f"{name}+ef step{step}"] = {
                        "equal": bool(np.isfinite(mean).all()),
                        "same_on_all_ranks": all(np.array_equal(mean, m) for m in everyone)}
            n_mem = len([k for k in session._slots if k[0] == "feedback"])
            counts = comm.gather(n_mem, root=0)
            if rank == 0:
                report[f"{name}+ef memories"] = {"equal": min(counts) >= 1,
                                                 "same_on_all_ranks": True, "counts": counts}

    # reused buffers: with a session (one kept across calls of other lengths and steps, and
    # the input untouched) the same bits as a call without one
    for name in ("ring", "rhd"):
        plain, _ = scheme(name)(comm, x, comp, seed=SEED, step=STEP)
        x_before = x.copy()
        with Session(comm) as session:
            scheme(name)(comm, x[: d // 2 + 1], comp, seed=SEED, step=STEP + 1, session=session)
            first, _ = scheme(name)(comm, x, comp, seed=SEED, step=STEP, session=session)
            first = first.copy()
            scheme(name)(comm, x[: d // 3 + 1], comp, seed=SEED, step=STEP + 2, session=session)
            again, _ = scheme(name)(comm, x, comp, seed=SEED, step=STEP, session=session)
            held = session.nbytes()
        everyone = comm.gather(again, root=0)
        ok = (np.array_equal(first, plain) and np.array_equal(again, plain)
              and np.array_equal(x, x_before))
        oks, helds = comm.gather(ok, root=0), comm.gather(held, root=0)
        if rank == 0:
            report[f"{name} session buffers"] = {
                "equal": all(oks), "same_on_all_ranks": all(np.array_equal(again, m)
                                                             for m in everyone),
                "held_bytes": max(helds)}  # a rank that folds (rhd, p = 3) holds none

    # the integer mean: exact integer sums, no overflow, the naive rounding and decoding
    kinds = ("normal", "all-max", "alternating", "one-huge")
    for bits in (8, 16, 32):
        q = intsum.levels(bits, p)
        for kind in kinds:
            x = vector(rank, d) if kind == "normal" else adversarial(rank, d, p, kind)
            everyone_x = comm.gather(x, root=0)
            top = comm.allreduce(float(np.abs(x).max()), op=MPI.MAX)
            scale = float(np.float32(top)) / q
            key = int(Keys.derive(SEED, STEP, rank).private)
            codes = intsum.round_to_grid(x, scale, q, key, bits)
            total = np.empty_like(codes)
            word = {8: MPI.INT8_T, 16: MPI.INT16_T, 32: MPI.INT32_T}[bits]
            comm.Allreduce([codes, word], [total, word], op=MPI.SUM)
            gathered = comm.gather(codes, root=0)
            mean, stats = scheme(f"allreduce-int:bits={bits}")(comm, x, seed=SEED, step=STEP)
            if rank == 0:
                wide = np.sum([g.astype(np.int64) for g in gathered], axis=0)
                ref_codes = [naive.int_round(everyone_x[r], scale, q,
                                             int(Keys.derive(SEED, STEP, r).private))
                             for r in range(p)]
                report[f"allreduce-int:bits={bits} {kind} integers"] = {
                    "equal": bool(np.array_equal(total.astype(np.int64), wide)
                                  and all(np.array_equal(g, c) for g, c in
                                          zip(gathered, ref_codes, strict=True))
                                  and int(np.abs(wide).max()) <= p * q
                                  <= (1 << (bits - 1)) - 1),
                    "same_on_all_ranks": True, "max_abs_sum": int(np.abs(wide).max()),
                    "limit": (1 << (bits - 1)) - 1}
            record(f"allreduce-int:bits={bits} {kind}", mean, stats,
                   lambda t=total, s=scale: naive.int_decode(t, s, p))
        x = vector(rank, d)
        mean, stats = scheme(f"allreduce-int:bits={bits},rotate=true")(comm, x, seed=SEED,
                                                                       step=STEP)
        vectors = [vector(r, d) for r in range(p)]
        exact = np.mean(np.array(vectors, dtype=np.float64), axis=0)
        record(f"allreduce-int:bits={bits},rotate=true", mean, stats, lambda e=exact: e,
               lambda w, q=q: 4.0 * float(np.abs(w).max()) * (np.sqrt(d) / q + 1e-5))
    if rank == 0:
        Path(out).write_text(json.dumps({"nprocs": p, "d": d, "results": report},
                                              default=lambda o: o.item()))


if __name__ == "__main__":
    try:
        main()
    except BaseException:
        traceback.print_exc()
        MPI.COMM_WORLD.Abort(1)
