"""Collectives: every scheme equals its serial computation (size 1 in-process, 2 and 3 ranks)."""

from __future__ import annotations

import json
from pathlib import Path

import naive
import numpy as np
import pytest

from hpcq.collectives import (
    SCHEMES,
    Stats,
    allgather_mean,
    allreduce_cast_mean,
    allreduce_mean,
    chunk_bounds,
    iallgather_mean,
    itwo_phase_mean,
    ps_mean,
    two_phase_mean,
)
from hpcq.compressors import compressor
from hpcq.feedback import ErrorFeedback

SPECS = ("fp32", "fp16", "bf16", "qsgd:bits=4", "uniform:bits=2", "sign", "hadamard+qsgd:bits=2",
         "terngrad", "topk:ratio=0.05", "randk:ratio=0.05", "vqsgd:reps=4",
         "fixedrange:bits=3,range=4")
COMPRESSED = ("allgather", "two-phase", "ps", "ps-compressed")


def _check(report: dict, nprocs: int, d: int) -> None:
    assert report["nprocs"] == nprocs and report["d"] == d
    results = report["results"]
    for name in COMPRESSED:
        assert f"{name} test-nonzeros" in results  # the variable-length (...v) paths ran
    for key in ("allreduce-fp32", "allreduce-fp16", "allreduce-bf16", "ps-reduce fp16",
                "allreduce-fp32 deferred", "allreduce-bf16 deferred", "allgather deferred",
                "itwo-phase test-nonzeros", "iallgather test-nonzeros", "ef memories"):
        assert key in results
    for label, r in results.items():
        assert r["equal"], f"{label}: MPI mean differs from the serial one: {r}"
        assert r["same_on_all_ranks"], label


@pytest.mark.mpi
def test_collectives_two_ranks(mpirun, tmp_path: Path) -> None:
    mpirun(2, "1000", str(tmp_path / "r.json"), *SPECS, payload="collectives_check.py")
    _check(json.loads((tmp_path / "r.json").read_text()), 2, 1000)


@pytest.mark.mpi
def test_collectives_three_ranks_d_not_divisible(mpirun, tmp_path: Path) -> None:
    # 3 ranks on 2 cores: MPICH busy-polls, so keep it to a few codecs
    mpirun(3, "1001", str(tmp_path / "r.json"), "qsgd:bits=4", "hadamard+sign:scale=drive",
           payload="collectives_check.py", timeout=240)
    report = json.loads((tmp_path / "r.json").read_text())
    _check(report, 3, 1001)
    assert report["results"]["ef memories"]["server_lengths"] == [334, 334, 333]


def _x(d: int = 777, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(d).astype(np.float32)


@pytest.mark.parametrize("scheme", COMPRESSED)
@pytest.mark.parametrize("spec", ["qsgd:bits=4", "hadamard+sign:scale=drive", "topk:ratio=0.05",
                                  "fp16"])
def test_size_one_equals_serial(scheme: str, spec: str) -> None:
    from mpi4py import MPI

    comp = compressor(spec)
    x = _x()
    mean, stats = SCHEMES.get(scheme)(MPI.COMM_SELF, x, comp, seed=5, step=2)
    want = naive.serial_scheme_mean(scheme, comp, [x], 5, 2)
    np.testing.assert_array_equal(mean, want)
    assert mean.dtype == np.float32 and mean.shape == x.shape
    assert stats.bytes_recv == 0 and stats.bytes_sent > 0
    assert min(stats.encode_s, stats.comm_s, stats.decode_s) >= 0


def test_allgather_at_size_one_is_the_codec() -> None:
    from mpi4py import MPI

    comp = compressor("qsgd:bits=4")
    x = _x()
    mean, stats = allgather_mean(MPI.COMM_SELF, x, comp, seed=5, step=2)
    msg = comp.encode(x, seed=5, step=2, rank=0)
    np.testing.assert_array_equal(mean, comp.decode(msg))
    assert stats.bytes_sent == msg.shape[0] and stats.total_s == pytest.approx(
        stats.encode_s + stats.comm_s + stats.decode_s)
    assert set(stats.as_dict()) == {"encode_s", "comm_s", "decode_s", "total_s", "bytes_sent",
                                    "exposed_comm_s",
                                    "bytes_recv"}


def test_nonblocking_at_size_one_equals_blocking() -> None:
    from mpi4py import MPI

    comp = compressor("hadamard+qsgd:bits=2")
    x = _x(1000)
    pending = iallgather_mean(MPI.COMM_SELF, x, comp, seed=1, step=4)
    assert pending.test()  # one rank: nothing to wait for
    mean, _ = pending.wait()
    np.testing.assert_array_equal(mean, allgather_mean(MPI.COMM_SELF, x, comp, seed=1,
                                                       step=4)[0])
    assert pending.wait()[0] is mean  # a second wait returns the same result
    pending = itwo_phase_mean(MPI.COMM_SELF, x, comp, seed=1, step=4)
    np.testing.assert_array_equal(pending.wait()[0],
                                  two_phase_mean(MPI.COMM_SELF, x, comp, seed=1, step=4)[0])


def test_two_phase_feedback_at_size_one() -> None:
    from mpi4py import MPI

    comp = compressor("sign")
    worker, server = ErrorFeedback(comp), ErrorFeedback(comp)
    ref = ([ErrorFeedback(comp)], [ErrorFeedback(comp)])
    x = _x(500)
    for step in range(3):
        mean, _ = two_phase_mean(MPI.COMM_SELF, x, comp, step=step, feedback=worker,
                                 server_feedback=server)
        np.testing.assert_array_equal(mean, naive.serial_scheme_mean(
            "two-phase", comp, [x], 0, step, ref))
    np.testing.assert_array_equal(worker.memory, ref[0][0].memory)


def test_feedback_must_wrap_the_same_codec() -> None:
    from mpi4py import MPI

    with pytest.raises(ValueError, match="error feedback wraps sign"):
        allgather_mean(MPI.COMM_SELF, _x(), compressor("qsgd:bits=4"),
                       feedback=ErrorFeedback(compressor("sign")))


def test_baselines_at_size_one() -> None:
    from mpi4py import MPI

    x = _x(1000)
    mean, stats = allreduce_mean(MPI.COMM_SELF, x)
    np.testing.assert_array_equal(mean, x)
    assert mean is not x and stats.bytes_sent == 4000
    for kind in ("fp16", "bf16"):
        mean, stats = allreduce_cast_mean(MPI.COMM_SELF, x, kind)
        np.testing.assert_array_equal(mean, compressor(kind).decode(compressor(kind).encode(x)))
        assert stats.bytes_sent == 2000
        mean, _ = SCHEMES.get("ps-reduce")(MPI.COMM_SELF, x, compressor(kind))
        np.testing.assert_array_equal(mean, compressor(kind).decode(compressor(kind).encode(x)))


def test_fp16_overflow_is_an_error() -> None:
    from mpi4py import MPI

    x = _x(100)
    x[17] = 1e6
    with pytest.raises(ValueError, match=r"allreduce-fp16: x\[17\] = 1000000.0"):
        allreduce_cast_mean(MPI.COMM_SELF, x, "fp16")


def test_ps_downlink_validated() -> None:
    from mpi4py import MPI

    with pytest.raises(ValueError, match="downlink='int8'; valid: fp32, compressed"):
        ps_mean(MPI.COMM_SELF, _x(), compressor("sign"), downlink="int8")


def test_scheme_check_names_impossible_pairs() -> None:
    with pytest.raises(ValueError, match="ps-reduce cannot do qsgd.*fp32, fp16, bf16"):
        SCHEMES.get("ps-reduce").check(compressor("qsgd:bits=4"))
    with pytest.raises(ValueError, match="ps-reduce cannot do hadamard"):
        SCHEMES.get("ps-reduce").check(compressor("hadamard+fp16"))
    SCHEMES.get("ps-reduce").check(compressor("bf16"))
    with pytest.raises(ValueError, match="allreduce-fp32 always sends fp32"):
        SCHEMES.get("allreduce-fp32").check(compressor("sign"))
    SCHEMES.get("allreduce-fp32").check(None)
    with pytest.raises(ValueError, match="allgather needs a compressor"):
        SCHEMES.get("allgather").check(None)
    with pytest.raises(ValueError, match="unknown scheme 'butterfly'; valid: allgather"):
        SCHEMES.get("butterfly")


@pytest.mark.parametrize(("d", "p"), [(10, 3), (2, 4), (0, 2), (12, 4)])
def test_chunk_bounds(d: int, p: int) -> None:
    b = chunk_bounds(d, p)
    sizes = np.diff(b)
    assert b[0] == 0 and b[-1] == d and len(sizes) == p
    assert sizes.max() - sizes.min() <= 1 and list(sizes) == sorted(sizes, reverse=True)


def test_stats_total() -> None:
    s = Stats(1.0, 2.0, 3.0, 4, 5)
    assert s.total_s == 6.0 and s.as_dict()["total_s"] == 6.0
