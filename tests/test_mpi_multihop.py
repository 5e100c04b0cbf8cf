"""Multi-hop (ring, rhd), integer (allreduce-int) and pipelined means: serial references at
size 1 and on 1-4 real ranks, the integer kernels against naive NumPy, bounds, bad input,
and a rank dying mid-ring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import naive
import numpy as np
import pytest

from hpcq.collectives import BoundInputs, Session, scheme
from hpcq.compressors import compressor
from hpcq.kernels import intsum

MULTI = ("ring", "rhd", "pipelined:chunks=3")


def _check(report: dict, nprocs: int) -> None:
    assert report["nprocs"] == nprocs
    results = report["results"]
    for key in ("ring test-nonzeros", "rhd test-nonzeros", "pipelined:chunks=3 test-nonzeros",
                "allreduce-int:bits=8 all-max integers", "ring+ef memories"):
        assert key in results
    for label, r in results.items():
        assert r["equal"], f"{label}: MPI result differs from the serial one: {r}"
        assert r["same_on_all_ranks"], label
    for name in ("ring", "rhd"):
        hops = results[f"{name} hop_error"]["hops"]
        omega = results[f"{name} hop_error"]["omega"]
        assert all(len(h) >= 1 for h in hops)
        assert all(0 <= e <= 1.5 * omega for h in hops for e in h), (name, hops, omega)
    assert len(results["ring hop_error"]["hops"][0]) == nprocs  # p - 1 hops + the allgather's
    if nprocs > 1:  # the reduce-scatters worked in the session's buffers
        assert all(results[f"{n} session buffers"]["held_bytes"] > 0 for n in ("ring", "rhd"))


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2])
def test_multihop_one_and_two_ranks(mpirun, tmp_path: Path, n: int) -> None:
    mpirun(n, "301", str(tmp_path / "r.json"), "qsgd:bits=4", "hadamard+sign:scale=drive",
           "topk:ratio=0.05", payload="multihop_check.py", timeout=240)
    _check(json.loads((tmp_path / "r.json").read_text()), n)


@pytest.mark.mpi
@pytest.mark.parametrize("n", [3, 4])
def test_multihop_three_and_four_ranks(mpirun, tmp_path: Path, n: int) -> None:
    # oversubscribed on 2 cores: one codec, d small and not divisible by p
    mpirun(n, "203", str(tmp_path / "r.json"), "qsgd:bits=4", payload="multihop_check.py",
           timeout=400)
    report = json.loads((tmp_path / "r.json").read_text())
    _check(report, n)
    assert len(report["results"]["rhd hop_error"]["hops"]) == n


def _x(d: int = 777, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(d).astype(np.float32)


@pytest.mark.mpi
def test_hop_errors_reach_the_result_file(mpirun, tmp_path: Path) -> None:
    from hpcq.store import read_cases

    mpirun(2, "bench", "collectives", "--sizes", "10", "--schemes", "ring:hop_error=true",
           "rhd", "--compressors", "qsgd:bits=4", "--iterations", "3", "--warmup", "1",
           "-o", "h.h5")
    cases = {c["scheme"].split(":")[0]: c for c in read_cases(tmp_path / "h.h5")}
    ring, rhd = cases["ring"], cases["rhd"]
    assert "hop_nmse" not in rhd and "hop_nmse_max" not in rhd  # not asked for
    per = ring["hop_nmse"]
    # each rank's compressions in order (the reduce-scatter hop, then its reduced chunk);
    # qsgd 4-bit with 512-element buckets: about 1.6 each
    assert per.shape == (2, 2) and np.all((per > 0.5) & (per < 3))
    assert ring["units"]["hop_nmse"] == "1"
    assert ring["hop_nmse_max"] == pytest.approx(per.max())


@pytest.mark.parametrize("name", MULTI)
@pytest.mark.parametrize("spec", ["qsgd:bits=4", "hadamard+sign:scale=drive", "topk:ratio=0.05"])
def test_size_one_is_the_codec(name: str, spec: str) -> None:
    from mpi4py import MPI

    comp, x = compressor(spec), _x()
    mean, st = scheme(name)(MPI.COMM_SELF, x, comp, seed=5, step=2)
    k = 3 if name.startswith("pipelined") else 1
    b = np.linspace(0, x.shape[0], k + 1).astype(int) if k == 1 else np.array([0, 259, 518, 777])
    want = np.concatenate([comp.decode(comp.encode(x[b[i]:b[i + 1]], seed=5, step=2, rank=i))
                           for i in range(k)])
    np.testing.assert_array_equal(mean, want)
    assert st.bytes_recv == 0 and st.exposed_comm_s >= 0
    assert "hop_nmse" not in st.as_dict() and "exposed_comm_s" in st.as_dict()


def test_feedback_needs_a_session_and_keeps_memories() -> None:
    from mpi4py import MPI

    comp, x = compressor("sign"), _x(200)
    with pytest.raises(ValueError, match="feedback=true needs a session"):
        scheme("ring:feedback=true")(MPI.COMM_SELF, x, comp)
    with Session() as s:
        first, _ = scheme("ring:feedback=true")(MPI.COMM_SELF, x, comp, session=s)
        second, _ = scheme("ring:feedback=true")(MPI.COMM_SELF, x, comp, step=1, session=s)
        # the memory carries the first call's error: two calls average closer to x than one
        assert np.linalg.norm((first + second) / 2 - x) < np.linalg.norm(first - x)


@pytest.mark.parametrize("spec", ["ring:hop_error=maybe", "rhd:feedback=2", "pipelined:chunks=0",
                                  "pipelined:chunks=5000", "allreduce-int:bits=12",
                                  "allreduce-int:rotate=perhaps", "ring:hops=3"])
def test_bad_parameters_are_one_line_errors(spec: str) -> None:
    with pytest.raises(ValueError) as e:
        scheme(spec)
    msg = str(e.value)
    assert "\n" not in msg and spec.split(":")[1].split("=")[0] in msg


# ---------------------------------------------------------------- the integer kernels
@pytest.mark.parametrize("bits", [8, 16, 32])
@pytest.mark.parametrize("d", [1, 7, 300])
def test_round_to_grid_equals_naive(bits: int, d: int) -> None:
    x = _x(d, seed=d)
    x[0] = np.abs(x).max()  # a coordinate at the grid's edge
    for p in (1, 3, 4):
        q = intsum.levels(bits, p)
        assert q == naive.int_levels(bits, p) and p * q <= (1 << (bits - 1)) - 1
        scale = float(np.abs(x).max()) / q
        codes = intsum.round_to_grid(x, scale, q, 12345, bits)
        np.testing.assert_array_equal(codes.astype(np.int64), naive.int_round(x, scale, q, 12345))
        assert np.abs(codes.astype(np.int64)).max() <= q
        py = np.empty_like(codes)
        with np.errstate(over="ignore"):  # uint64 wrap-around is the hash's arithmetic
            intsum._round.py_func(x, py, 1.0 / scale, float(q), np.uint64(12345))
        np.testing.assert_array_equal(py, codes)
        total = codes.astype(intsum.WORDS[bits])
        np.testing.assert_array_equal(intsum.decode_sum(total, scale, p),
                                      naive.int_decode(total, scale, p))
        out = np.empty(d, np.float32)
        intsum._decode.py_func(total, out, scale / p)
        np.testing.assert_array_equal(out, intsum.decode_sum(total, scale, p))


def test_max_abs_equals_numpy_and_skips_nan() -> None:
    rng = np.random.default_rng(3)
    for d in (0, 1, 7, 1000, 4099):
        x = (rng.standard_normal(d) * 10.0 ** rng.integers(-40, 30, d)).astype(np.float32)
        want = float(np.abs(x).max()) if d else 0.0
        assert intsum.max_abs(x) == want
        if d:
            x[d // 2] = np.nan  # skipped: round_to_grid reports it
            assert intsum.max_abs(x) == float(np.nanmax(np.abs(x)) if d > 1 else 0.0)
            x[0] = -np.inf
            assert intsum.max_abs(x) == np.inf


def test_rounding_is_unbiased_and_zero_scale_gives_zeros() -> None:
    x = np.array([0.3, -1.7, 2.25, 0.0], dtype=np.float32)
    draws = np.array([intsum.round_to_grid(x, 1.0, 100, k, 16) for k in range(4000)], np.float64)
    # variance of one draw <= 1/4, so 4000 draws: standard error <= 0.008
    np.testing.assert_allclose(draws.mean(axis=0), x, atol=0.04)
    assert not intsum.round_to_grid(np.zeros(5, np.float32), 0.0, 3, 1, 8).any()
    with pytest.raises(ValueError, match="not finite"):
        intsum.round_to_grid(np.array([1.0, np.nan], np.float32), 1.0, 3, 1, 8)
    with pytest.raises(ValueError, match="bits=8 cannot sum 256 ranks"):
        intsum.levels(8, 256)


# ---------------------------------------------------------------- guarantees
def test_bounds_grow_with_hops_and_hold_at_size_one() -> None:
    from mpi4py import MPI

    comp = compressor("qsgd:bits=4")
    d = 4096
    inputs = lambda p: BoundInputs(tuple([float(d)] * p), float(d) / p)  # noqa: E731
    ag = [scheme("allgather").bound(comp, d, p, inputs(p)) for p in (2, 4, 8)]
    rg = [scheme("ring").bound(comp, d, p, inputs(p)) for p in (2, 4, 8)]
    rh = [scheme("rhd").bound(comp, d, p, inputs(p)) for p in (2, 4, 8)]
    assert all(r > a for r, a in zip(rg, ag, strict=True)) and rg == sorted(rg)
    assert rh[2] < rg[2]  # lg p recompressions instead of p - 1
    assert scheme("rhd").bound(comp, d, 3, inputs(3)) is not None
    assert scheme("ring:feedback=true").bound(comp, d, 4, inputs(4)) is None
    assert scheme("ring").bound(compressor("fixedrange:bits=3,range=4"), d, 2, inputs(2)) is None
    x = _x(d)
    for name in ("ring", "rhd", "allreduce-int:bits=8", "allreduce-int:bits=8,rotate=true"):
        errs = []
        for step in range(8):
            mean, _ = scheme(name)(MPI.COMM_SELF, x, comp, step=step)
            errs.append(float(np.sum((mean - x.astype(np.float64)) ** 2) / np.sum(x**2.0)))
        b = scheme(name).bound(comp, d, 1, BoundInputs((float(x @ x),), float(x @ x)))
        assert 0 < np.mean(errs) <= 1.5 * b, (name, np.mean(errs), b)


def test_cost_terms() -> None:
    for name in ("ring", "rhd", "allreduce-int", "pipelined"):
        c = scheme(name).cost
        assert c.steps(1) == 0 and c.volume(1, 1000.0, 256) == 0
    assert scheme("ring").cost.steps(8) == 14 and scheme("rhd").cost.steps(8) == 6
    assert scheme("rhd").cost.steps(6) == 6  # fold + 2 levels + 2 levels + unfold
    assert scheme("ring").cost.message(2 * 3 * 100.0, 0, 4) == pytest.approx(400.0)


# ---------------------------------------------------------------- a rank dying mid-ring
DYING = """
import os, sys
import numpy as np
from mpi4py import MPI
from hpcq.collectives import scheme
from hpcq.compressors import compressor
comm = MPI.COMM_WORLD
x = np.ones(100000, dtype=np.float32)
comp = compressor("qsgd:bits=4")
scheme("ring")(comm, x, comp)
if comm.Get_rank() == 1:
    os._exit(3)  # dies between two calls: the others are inside the next ring
for step in range(1000):
    scheme("ring")(comm, x, comp, step=step)
"""


@pytest.mark.mpi
def test_a_rank_dying_mid_ring_does_not_hang_the_others(warm_cache: None, tmp_path: Path
                                                        ) -> None:
    from conftest import find_mpiexec

    launcher = find_mpiexec()
    if launcher is None:
        pytest.skip("no MPI launcher")
    script = tmp_path / "dying.py"
    script.write_text(DYING)
    t0 = time.monotonic()
    proc = subprocess.run([launcher, "-n", "3", sys.executable, str(script)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode != 0 and time.monotonic() - t0 < 120
