"""The compressed mean over MPI ranks, timed OSU-style (the ``[mean]`` table of a job).

Every rank holds its own float32 vector of length d (:func:`rank_vector`).  For
the fp32 ``Allreduce`` baseline and then each compressor (by
:func:`hpcq.collectives.allgather_mean`): ``warmup`` + ``iterations`` calls,
each after a ``Barrier``, timed with ``MPI.Wtime`` per phase on every rank;
the samples are gathered to rank 0.  An untimed validation pass then checks
that every rank holds the same mean and measures its NMSE
``||mean - exact||^2 / ||exact||^2`` against the exact mean (float64 sum).

Case written per scheme (kind ``mean``): datasets ``encode_s``, ``comm_s``,
``decode_s``, ``total_s`` of shape (nprocs, iterations) and ``warmup_total_s``
(nprocs, warmup) in seconds, ``bytes_sent``/``bytes_recv`` (nprocs,) in bytes;
attributes scheme, spec, d, nprocs, iterations, warmup, wire_bytes_per_rank,
bits_per_coordinate, nmse, consistent and the compressor's description.
Issue 3 grows this into ``hpcq bench collectives`` (more schemes, size sweeps).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from hpcq.bench.kernels import OnCase
from hpcq.collectives import allgather_mean, allreduce_mean
from hpcq.compressors import Compressor

BASELINE = "allreduce-fp32"
_PHASES = ("encode_s", "comm_s", "decode_s", "total_s")


def rank_vector(seed: int, rank: int, d: int) -> np.ndarray:
    """Rank ``rank``'s input: a part shared by all ranks plus its own part, both N(0, 1).

    Gradients of data-parallel workers are correlated; a shared part keeps the
    exact mean from shrinking towards 0 as ranks are added, so the NMSE of the
    mean stays comparable across rank counts.
    """
    shared = np.random.default_rng([seed, 0]).standard_normal(d)
    own = np.random.default_rng([seed, 1, rank]).standard_normal(d)
    return (shared + own).astype(np.float32)


def _caller(comm: Any, x: np.ndarray, comp: Compressor | None, seed: int
            ) -> Callable[[int], tuple[np.ndarray, dict[str, Any]]]:
    """Iteration ``it`` of a scheme: the fp32 baseline (``comp`` None) or the compressed mean."""
    if comp is None:
        return lambda it: allreduce_mean(comm, x)
    return lambda it: allgather_mean(comm, x, comp, seed=seed, step=it)


def _timed(comm: Any, call: Callable[[int], tuple[np.ndarray, dict[str, Any]]],
           n: int) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``n`` Barrier-fenced calls: (last mean, samples (n, 4) in seconds, last stats)."""
    samples = np.empty((n, len(_PHASES)))
    mean, stats = np.empty(0, dtype=np.float32), dict[str, Any]()
    for it in range(n):
        comm.Barrier()
        mean, stats = call(it)
        samples[it] = [stats[k] for k in _PHASES]
    return mean, samples, stats


def run(comm: Any, specs: Sequence[tuple[str, Compressor]], d: int, *, iterations: int,
        warmup: int, seed: int, on_case: OnCase | None = None,
        progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Time the baseline and every compressor's mean (collective); rows on rank 0, else [].

    Parameters
    ----------
    comm : mpi4py.MPI.Comm
        Every rank calls with the same arguments.
    specs : sequence of (str, Compressor)
        The compressors (label as given, compressor).
    d, iterations, warmup, seed : int
        Vector length, timed and untimed calls per scheme, seed of data and codecs.
    on_case, progress : callable, optional
        Called on rank 0 for each completed case (see :mod:`hpcq.bench.kernels`).
    """
    from mpi4py import MPI

    rank, p = comm.Get_rank(), comm.Get_size()
    x = rank_vector(seed, rank, d)
    exact = np.empty(d, dtype=np.float64)
    comm.Allreduce(x.astype(np.float64), exact, op=MPI.SUM)
    exact /= p
    rows: list[dict[str, Any]] = []
    schemes: list[tuple[str, Compressor | None]] = [(BASELINE, None), *specs]
    for label, comp in schemes:
        mean, samples, stats = _timed(comm, _caller(comm, x, comp, seed), warmup + iterations)
        # validation, untimed: the same bits everywhere, and the error against the exact mean
        reference = comm.bcast(mean if rank == 0 else None, root=0)
        consistent = bool(comm.allreduce(bool(np.array_equal(reference, mean)), op=MPI.LAND))
        gathered = comm.gather((samples, stats["bytes_sent"], stats["bytes_recv"]), root=0)
        if rank != 0:
            continue
        err = mean.astype(np.float64) - exact
        nmse = float(np.dot(err, err) / max(float(np.dot(exact, exact)), 1e-300))
        all_samples = np.stack([g[0] for g in gathered])  # (nprocs, n, phase)
        sent = np.array([g[1] for g in gathered], dtype=np.int64)
        wire = float(sent.mean())
        attrs = {"scheme": "allreduce" if comp is None else "allgather",
                 "spec": BASELINE if comp is None else comp.spec, "spec_given": label, "d": d,
                 "nprocs": p, "iterations": iterations, "warmup": warmup, "seed": seed,
                 "wire_bytes_per_rank": wire, "bits_per_coordinate": 8.0 * wire / max(d, 1),
                 "nmse": nmse, "consistent": consistent,
                 "compressor": comp.describe() if comp is not None else None}
        data: dict[str, tuple[Any, str]] = {
            k: (all_samples[:, warmup:, i], "s") for i, k in enumerate(_PHASES)}
        data["warmup_total_s"] = (all_samples[:, :warmup, 3], "s")
        data["bytes_sent"] = (sent, "bytes")
        data["bytes_recv"] = (np.array([g[2] for g in gathered], dtype=np.int64), "bytes")
        rows.append(_row(label, attrs, all_samples[:, warmup:]))
        if on_case is not None:
            on_case("mean", f"mean {label} d={d}", attrs, data)
        if progress is not None:
            progress(f"mean {label} d={d}")
    if rows:
        for r in rows:
            r["x_fp32"] = r["total"] / rows[0]["total"]
    return rows


def _row(label: str, attrs: dict[str, Any], samples: np.ndarray) -> dict[str, Any]:
    # per iteration the slowest rank finishes the collective; report the median of that
    slowest = np.median(samples.max(axis=0), axis=0)
    return {"label": label, "wire": attrs["wire_bytes_per_rank"],
            "bits": attrs["bits_per_coordinate"], "nmse": attrs["nmse"],
            "consistent": attrs["consistent"], **dict(zip(("encode", "comm", "decode", "total"),
                                                          slowest.tolist(), strict=True))}


def format_table(rows: Sequence[dict[str, Any]], d: int, nprocs: int, iterations: int) -> str:
    """The rows of :func:`run` as an aligned text table."""
    lines = [f"# mean of d={d} float32 over {nprocs} rank(s), {iterations} timed iterations; "
             f"times in us: median over iterations of the slowest rank",
             f"{'# scheme / compressor':<30}{'bytes/rank':>11}{'bits/c':>8}{'total':>10}"
             f"{'encode':>9}{'comm':>9}{'decode':>9}{'x fp32':>8}{'NMSE':>10}"]
    for r in rows:
        us = {k: 1e6 * r[k] for k in ("total", "encode", "comm", "decode")}
        flag = "" if r["consistent"] else "  INCONSISTENT ACROSS RANKS"
        lines.append(f"{r['label'][:29]:<30}{r['wire']:>11.0f}{r['bits']:>8.3f}"
                     f"{us['total']:>10.1f}{us['encode']:>9.1f}{us['comm']:>9.1f}"
                     f"{us['decode']:>9.1f}{r['x_fp32']:>8.2f}{r['nmse']:>10.2e}{flag}")
    return "\n".join(lines)
