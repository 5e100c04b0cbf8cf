"""PowerSGD and allreduce-fp8: against tests/naive.py at 1 rank in-process and 2, 3 real ranks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import naive
import numpy as np
import pytest

from hpcq.collectives import BoundInputs, Session, Stats, scheme
from hpcq.collectives.fp8 import fp8_sum_bound, shared_scale
from hpcq.collectives.powersgd import make_plan
from hpcq.compressors import compressor
from hpcq.kernels import fp8
from hpcq.workloads.layout import Layout

MPI = pytest.importorskip("mpi4py.MPI")
sys.path.insert(0, str(Path(__file__).resolve().parent / "mpi"))

import powersgd_check as payload  # noqa: E402

LAYOUT = Layout.from_shapes([(f"t{i}", s) for i, s in enumerate(payload.SHAPES)])


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def _naive_run(spec: str, p: int, steps: int = payload.STEPS) -> list[np.ndarray]:
    s, state, out = scheme(spec), {}, []
    for step in range(steps):
        xs = [payload.inputs(r, step, LAYOUT.size) for r in range(p)]
        out.append(naive.powersgd_step(
            xs, payload.SHAPES, state, rank=s.p["rank"], min_rate=s.p["min_compression_rate"],
            start_iter=s.p["start_iter"], warm_start=s.p["warm_start"],
            eps=s.p["orthogonalization_epsilon"], seed=payload.SEED))
    return out


@pytest.mark.parametrize("spec", payload.CONFIGS)
def test_one_rank_follows_the_recursion(spec: str) -> None:
    sch = scheme(spec)
    want = _naive_run(spec, 1)
    with Session(MPI.COMM_SELF) as session:
        for step in range(payload.STEPS):
            x = payload.inputs(0, step, LAYOUT.size)
            mean, st = sch.mean(MPI.COMM_SELF, x, seed=payload.SEED, step=step,
                                session=session, layout=LAYOUT)
            assert mean.dtype == np.float32
            assert _rel(mean, want[step]) < 1e-5, (spec, step)
            if st.phases:  # the named phases add up to the three totals
                enc = sum(st.phases[k] for k in ("pack", "p", "orthogonalize", "q"))
                assert enc == pytest.approx(st.encode_s)
                assert sum(st.phases[k] for k in ("comm_rest", "comm_p", "comm_q")) == \
                    pytest.approx(st.comm_s)
                assert st.phases["decompress"] == pytest.approx(st.decode_s)
                assert f"phase_{next(iter(st.phases))}_s" in st.as_dict()


@pytest.mark.mpi
@pytest.mark.parametrize("nprocs", [2, 3])
def test_real_ranks_follow_the_recursion(mpirun, tmp_path: Path, nprocs: int) -> None:
    mpirun(nprocs, str(tmp_path / "r.json"), payload="powersgd_check.py", timeout=240)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["nprocs"] == nprocs and report["same_on_all_ranks"]
    for spec in payload.CONFIGS:
        want = _naive_run(spec, nprocs)
        for step, got in enumerate(report["powersgd"][spec]["means"]):
            assert _rel(np.array(got), want[step]) < 1e-5, (spec, step)
    for fmt, r in report["fp8"].items():
        xs = [payload.inputs(i, 100, payload.D8) * np.float32(i + 1) for i in range(nprocs)]
        got = np.array(r["mean"], np.float32)
        assert r["bytes_sent"] == payload.D8 + 4
        if nprocs == 2:  # one addition: the same in any order, so bit for bit
            np.testing.assert_array_equal(got, naive.fp8_allreduce_serial(xs, fmt, r["scale"]))
        exact = np.mean(np.array(xs, np.float64), axis=0)
        a = np.sum(np.abs(np.array(xs, np.float64)), axis=0)
        inputs = BoundInputs(tuple(float(x.astype(np.float64) @ x) for x in xs),
                             float(exact @ exact), float(a.sum()), float(a @ a))
        bound = fp8_sum_bound(fmt, nprocs, payload.D8, inputs)
        assert bound is not None and _rel(got, exact) ** 2 <= bound


def test_error_decreases_with_rank() -> None:
    # a rank-6 matrix plus noise: one step's error falls with r and is small at r = 6
    rng = np.random.default_rng(3)
    n, m = 60, 80
    a = (rng.standard_normal((n, 6)) * [30, 20, 12, 8, 5, 3]) @ rng.standard_normal((6, m))
    a += 0.1 * rng.standard_normal((n, m))
    lay = Layout.from_shapes([("w", (n, m))])
    x = a.astype(np.float32).ravel()
    errs = []
    for r in (1, 2, 4, 6):
        with Session(MPI.COMM_SELF) as session:
            mean, _ = scheme(f"powersgd:rank={r}").mean(MPI.COMM_SELF, x, session=session,
                                                        layout=lay)
        errs.append(_rel(mean, x) ** 2)
    assert all(e1 > e2 for e1, e2 in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-3 < errs[0]


def test_min_compression_rate_and_bytes() -> None:
    # 8 x 9 at rank 2: factors (8 + 9) 2 = 34 floats, 72 / 34 = 2.1
    lay = Layout.from_shapes([("w", (8, 9)), ("b", (8,))])
    assert [u.n for u in make_plan(lay, 2, 2.0, False).units] == [8]
    plan = make_plan(lay, 2, 2.2, False)
    assert plan.units == () and plan.rest == ((0, 80),)
    x = np.arange(80, dtype=np.float32)
    with Session(MPI.COMM_SELF) as session:
        _, st = scheme("powersgd:rank=2").mean(MPI.COMM_SELF, x, session=session, layout=lay)
        assert st.bytes_sent == 4 * (8 * 2 + 9 * 2 + 8)
        mean, st = scheme("powersgd:rank=2,min_compression_rate=2.2").mean(
            MPI.COMM_SELF, x, session=session, layout=lay)
        np.testing.assert_array_equal(mean, x)  # everything uncompressed: exact
        assert st.bytes_sent == 4 * 80
        # no layout: one 1-D tensor, so plain fp32
        mean, st = scheme("powersgd:rank=2").mean(MPI.COMM_SELF, x, session=session)
        np.testing.assert_array_equal(mean, x)


def test_start_iter_sends_fp32_first() -> None:
    lay = Layout.from_shapes([("w", (20, 30))])
    sch = scheme("powersgd:rank=1,start_iter=2")
    with Session(MPI.COMM_SELF) as session:
        for step in range(4):
            x = payload.inputs(0, step, lay.size)
            mean, st = sch.mean(MPI.COMM_SELF, x, session=session, layout=lay)
            if step < 2:
                np.testing.assert_array_equal(mean, x)
                assert st.bytes_sent == 4 * 600
            else:
                assert st.bytes_sent == 4 * 50 and _rel(mean, x) > 0.1


def test_refusals() -> None:
    x = np.ones(10, np.float32)
    with pytest.raises(ValueError, match="needs a session"):
        scheme("powersgd").mean(MPI.COMM_SELF, x)
    with pytest.raises(ValueError, match="rank"):
        scheme("powersgd:rank=0")
    with pytest.raises(ValueError, match="takes no compressor"):
        scheme("powersgd").check(compressor("qsgd:bits=4"))
    scheme("powersgd").check(None)
    with pytest.raises(ValueError, match="format"):
        scheme("allreduce-fp8:format=e3m4")
    with pytest.raises(ValueError, match="NaN"):
        scheme("allreduce-fp8").mean(MPI.COMM_SELF, np.array([1.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="ranks cannot sum"):
        shared_scale("e5m2", 200, 1.0)
    assert scheme("powersgd").sends == "fp32"
    assert scheme("allreduce-fp8:format=e5m2").sends == "fp8:format=e5m2"
    assert scheme("allreduce-fp16").sends == "fp16" and scheme("allgather").sends is None


def test_stats_as_dict_without_phases_is_unchanged() -> None:
    assert set(Stats(1.0, 2.0, 3.0, 4, 5).as_dict()) == {
        "encode_s", "comm_s", "decode_s", "bytes_sent", "bytes_recv", "total_s",
        "exposed_comm_s"}


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_sum8_rounds_each_pair_once(fmt: str) -> None:
    rng = np.random.default_rng(5)
    big = fp8.max_finite(fmt)
    xs = [(rng.standard_normal(4000) * big / 3).astype(np.float32) for _ in range(2)]
    a, b = fp8.cast(xs[0], fmt), fp8.cast(xs[1], fmt)
    tab = fp8.table(fmt)
    exact = tab[a].astype(np.float64) + tab[b]
    want = naive.minifloat_round(exact, fmt)
    over = np.abs(exact) > big
    assert over.any() and not over.all()
    bad = fp8.sum8(fmt, a, b)
    assert bad == int(over.sum())
    np.testing.assert_array_equal(tab[b][~over], want[~over])
    assert np.isnan(tab[b][over]).all()
    for twin in (fp8._sum, fp8._sum_par):  # both compiled paths, and the Python body
        c = fp8.cast(xs[1], fmt)
        twin.py_func(a, c, tab, np.float32(big), *fp8._format(fmt), np.uint8(0x7F))
        np.testing.assert_array_equal(c, b)


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_fp8_one_rank_is_the_serial_cast(fmt: str) -> None:
    x = (np.random.default_rng(2).standard_normal(777) * 3).astype(np.float32)
    mean, st = scheme(f"allreduce-fp8:format={fmt}").mean(MPI.COMM_SELF, x)
    s = shared_scale(fmt, 1, float(np.max(np.abs(x))))
    np.testing.assert_array_equal(mean, naive.fp8_allreduce_serial([x], fmt, s))
    assert st.bytes_sent == 777 + 4
    zero, _ = scheme(f"allreduce-fp8:format={fmt}").mean(MPI.COMM_SELF, np.zeros(5, np.float32))
    np.testing.assert_array_equal(zero, 0)


def test_benches_and_training_take_schemes_without_compressor() -> None:
    from hpcq.algorithms import method
    from hpcq.bench import collectives as bc
    from hpcq.bench import train as bt

    cases = bc.expand(["powersgd:rank=2", "allreduce-fp8", "allgather"], ["qsgd:bits=4"],
                      [64], iterations=2, warmup=1, seed=0)
    assert [(c.scheme, c.spec) for c in cases] == [
        ("powersgd:rank=2", "fp32"), ("allreduce-fp8", "fp8:format=e4m3"),
        ("allgather", "qsgd:bits=4")]
    assert cases[0].label == "powersgd:rank=2 d=2^6"
    for case in cases[:2]:
        attrs, _, _ = bc.run_case(MPI.COMM_SELF, case, check=True)
        assert attrs["check"] == "pass"
    # training: one case per method (the job's compressors do not apply), and a run
    table = type("T", (), dict(problems=("mlp:m=40,n=20,classes=3,hidden=16",), seeds=(),
                               methods=("gd",), compressors=("qsgd:bits=4", "fp32"), bits=(),
                               scheme="powersgd:rank=2", iterations=5, step=0.1, batch=0,
                               staleness=0, log_every=1))
    (case,) = bt.expand(table, 0, "[train]")
    assert case.compressor == "fp32"
    prob = bt._problem(case.problem, case.seed)
    trace = method(case.method).run(bt._context(MPI.COMM_SELF, prob, case))
    plan = make_plan(prob.layout, 2, 2.0, False)
    assert plan.units  # W1 is compressed
    sent = 4 * (plan.p_size + plan.q_size + plan.rest_size)
    assert np.isfinite(trace.loss).all() and trace.loss[-1] < trace.loss[0]
    assert np.all(np.asarray(trace.series["bytes_sent"]) == sent)
    assert np.all(np.asarray(trace.series["payload_bits"]) == 8 * sent)


def test_rank_larger_than_a_matrix_is_an_error() -> None:
    lay = Layout.from_shapes([("fc1.weight", (32, 64)), ("fc2.weight", (10, 32)), ("b", (10,))])
    # below rate 1 the hook would compress fc2 at rank 10 instead of 16: refused, named
    with pytest.raises(ValueError, match=r"rank=16 is larger than tensor 'fc2.weight' "
                                         r"\(10 x 32 as a matrix\).*rank <= 10"):
        make_plan(lay, 16, 0.1, False)
    # a whole gradient of which nothing is compressed: refused, with the largest useful rank
    # (32 x 64 at rate 2: 96 k 2 < 2048 up to k = 10)
    with pytest.raises(ValueError, match=r"leaves no matrix of this gradient to compress.*"
                                         r"rank <= 10 \(for 'fc1.weight' \(32 x 64\)\)"):
        scheme("powersgd:rank=11").check_layout(lay)
    with pytest.raises(ValueError, match="lower min_compression_rate"):
        scheme("powersgd:rank=1,min_compression_rate=100").check_layout(lay)
    scheme("powersgd:rank=10").check_layout(lay)  # fc1 compressed: fine
    scheme("powersgd:rank=4").check_layout(Layout.flat(100))  # no matrices: plain fp32
    assert make_plan(Layout.from_shapes([("b", (10,)), ("w", (8, 9))]), 2, 2.2,
                     False).units == ()  # one bucket may compress nothing


def test_workload_job_refuses_powersgd_with_nothing_to_compress() -> None:
    from hpcq.config import JobError, job_from_tables
    from hpcq.runner import run_job

    job = job_from_tables("test", {"collectives": {
        "workload": "tiny", "schemes": ["powersgd:rank=64"], "iterations": 1}})
    with pytest.raises(JobError, match="schemes: .*rank=64.*leaves no matrix"):
        run_job(MPI.COMM_SELF, None, job=job, save=False)
