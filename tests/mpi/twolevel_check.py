"""MPI payload: ``two-level`` equals its serial computation (tests/naive.py), every rank alike.

Usage: ``mpiexec -n N python twolevel_check.py D K OUT.json``: nodes of K consecutive
ranks (``ranks_per_node=K``); outer allgather, two-phase and ps with qsgd:bits=4, inner
fp32 and bf16, both modes (:data:`CASES`), with and without a session (the session's
second call reuses the cached communicators).  Rank 0 writes the comparison to OUT.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/naive.py

import naive  # noqa: E402

from hpcq.collectives import Session, scheme  # noqa: E402
from hpcq.compressors import compressor  # noqa: E402

SEED, STEP = 5, 2
#: (outer, inner, mode): every leader-mode pair, and shard mode with three outer schemes.
CASES = [(o, i, "leader") for o in ("allgather", "two-phase", "ps") for i in ("fp32", "bf16")] + [
    ("allgather", "fp32", "shard"), ("two-phase", "bf16", "shard"), ("ps", "fp32", "shard")]


def vector(rank: int, d: int) -> np.ndarray:
    shared = np.random.default_rng([SEED, 0]).standard_normal(d)
    own = np.random.default_rng([SEED, 1, rank]).standard_normal(d)
    return (shared + own).astype(np.float32)


def main() -> None:
    comm = MPI.COMM_WORLD
    rank, p = comm.Get_rank(), comm.Get_size()
    d, k, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    comp = compressor("qsgd:bits=4")
    x = vector(rank, d)
    vectors = [vector(r, d) for r in range(p)]
    report: dict[str, object] = {}
    with Session(comm) as session:
        for outer, inner, mode in CASES:
            s = scheme(f"two-level:outer={outer},inner={inner},ranks_per_node={k},mode={mode}")
            for how, sess in (("session", session), ("session again", session),
                              ("no session", None)):
                mean, st = s(comm, x, comp, seed=SEED, step=STEP, session=sess)
                mean = mean.copy()
                everyone = comm.gather(mean, root=0)
                stats = comm.gather((st.as_dict(), st.leader), root=0)
                if rank == 0:
                    want = naive.two_level_mean(outer, comp, vectors, SEED, STEP, k, inner,
                                                mode)
                    report[f"{outer} {inner} {mode} {how}"] = {
                        "max_abs_diff": float(np.max(np.abs(mean - want))),
                        "same_on_all_ranks": all(np.array_equal(mean, m) for m in everyone),
                        "inter": [s_["inter_s"] > 0 for s_, _ in stats],
                        "leader": [lead for _, lead in stats],
                        "intra_positive": all(s_["intra_s"] > 0 for s_, _ in stats) or p == 1,
                    }
    if rank == 0:
        Path(out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    try:
        main()
    except Exception:  # noqa: BLE001 - any failure ends every rank, never a hang
        import traceback

        traceback.print_exc()
        MPI.COMM_WORLD.Abort(1)
