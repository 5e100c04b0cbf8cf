"""``hpcq bench collectives``: cases, guarantees, in-process cases, runs on 2 and 3 ranks."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hpcq.bench import Progress, collectives_table, guarantees
from hpcq.bench import collectives as bc
from hpcq.collectives import SCHEMES
from hpcq.store import read_cases

SCHEMES_ALL = ("allgather", "two-phase", "ps", "ps-compressed", "allreduce-fp32")


def _expand(schemes, specs, sizes=(1024,), **kw):
    return bc.expand(schemes, specs, sizes, **{"iterations": 10, "warmup": 2, "seed": 0, **kw})


# ------------------------------------------------------------------ expand
def test_expand_sizes_outer_baselines_once_first() -> None:
    cases = _expand(
        ["allgather", "allreduce-fp32", "two-phase", "allreduce-fp16"],
        ["qsgd:bits=4", "sign"],
        [1024, 4096],
    )
    assert [c.label for c in cases[:6]] == [
        "allreduce-fp32 d=2^10",
        "allreduce-fp16 d=2^10",
        "allgather qsgd:bits=4 d=2^10",
        "allgather sign d=2^10",
        "two-phase qsgd:bits=4 d=2^10",
        "two-phase sign d=2^10",
    ]
    assert [c.d for c in cases] == [1024] * 6 + [4096] * 6
    assert [(c.scheme, c.spec) for c in cases[:2]] == [
        ("allreduce-fp32", "fp32"),
        ("allreduce-fp16", "fp16"),
    ]
    assert all(c.iterations == 10 and c.warmup == 2 for c in cases)


def test_expand_drops_duplicates_and_keys_are_canonical() -> None:
    cases = _expand(["allgather", "allgather"], ["qsgd:bits=4", "qsgd:bits=4,bucket=512"])
    assert len(cases) == 1 and cases[0].spec == "qsgd:bits=4"
    params = cases[0].params()
    assert json.loads(json.dumps(params)) == params
    assert params["spec"].startswith("qsgd:") and "bucket=512" in params["spec"]
    assert _expand(["allreduce-bf16"], [])[0].params()["spec"] == "bf16"
    assert bc.Case("allgather", "sign", 1000, 5, 1, 0).label == "allgather sign d=1000"


@pytest.mark.parametrize(
    ("schemes", "specs", "match"),
    [
        (["allgather", "nope"], ["sign"], r"unknown scheme 'nope'; valid: allgather, .*two-phase"),
        (["ps-reduce"], ["qsgd:bits=4"], r"ps-reduce cannot do qsgd.*fp32, fp16, bf16"),
        (["allgather"], ["qsgd:bits=99"], r"compressor 'qsgd:bits=99'"),
        (["allgather"], ["nocodec"], r"unknown compressor 'nocodec'; valid: .*qsgd"),
        (["two-phase"], [], r"scheme two-phase needs at least one compressor"),
    ],
)
def test_expand_errors_are_one_line(schemes, specs, match) -> None:
    with pytest.raises(ValueError, match=match) as err:
        _expand(schemes, specs)
    assert "\n" not in str(err.value)


def test_expand_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="iterations must be >= 1"):
        _expand(["allreduce-fp32"], [], iterations=0)
    with pytest.raises(ValueError, match="sizes"):
        _expand(["allreduce-fp32"], [], sizes=[])
    with pytest.raises(ValueError, match="seed >= 0"):
        _expand(["allreduce-fp32"], [], seed=-1)


def test_iterations_for_large_sizes() -> None:
    assert bc.iterations_for(1024, 100) == 100 and bc.iterations_for(1 << 20, 100) == 100
    assert bc.iterations_for(1 << 22, 100) == 25
    assert bc.iterations_for(1 << 26, 100) == 5 and bc.iterations_for(1 << 26, 3) == 3
    assert _expand(["allreduce-fp32"], [], [1 << 24])[0].iterations == 5


# ------------------------------------------------------------------ guarantees
def _sum16_mean(xs: list[np.ndarray], dtype: type) -> np.ndarray:
    """Rounded at every addition, in order (fp16 is exact in numpy's float16 arithmetic)."""
    acc = xs[0].astype(dtype)
    for x in xs[1:]:
        acc = (acc.astype(np.float32) + x.astype(dtype).astype(np.float32)).astype(dtype)
    return acc.astype(np.float32) / np.float32(len(xs))


@pytest.mark.parametrize("p", [2, 8, 64])
def test_cast_bound_holds_for_a_rounded_sum(p: int) -> None:
    rng = np.random.default_rng(p)
    # mixed signs and magnitudes, so cancellation makes the relative error large
    xs = [
        (rng.standard_normal(4096) * 10.0 ** rng.integers(-6, 3, 4096)).astype(np.float32)
        for _ in range(p)
    ]
    exact = np.sum([x.astype(np.float64) for x in xs], axis=0) / p
    a = np.sum([np.abs(x.astype(np.float64)) for x in xs], axis=0)
    for kind, dtype in (("fp16", np.float16), ("fp32", np.float32)):
        got = _sum16_mean(xs, dtype)
        nmse = float(np.sum((got - exact) ** 2) / np.sum(exact**2))
        bound = guarantees.cast_bound(
            f"allreduce-{kind}", kind, p, 4096, float(a.sum()), float(a @ a), float(exact @ exact)
        )
        assert bound is not None and nmse <= bound, (kind, nmse, bound)
        u = guarantees.UNIT_ROUNDOFF[kind]
        # the bound is about (p u)^2 ||a||^2 / ||sum||^2, not much looser
        assert bound <= 2 * ((p + 1) * u) ** 2 * float(a @ a) / float(exact @ exact) / p**2 + 1e-9


def test_cast_bound_gives_up_when_gamma_diverges() -> None:
    assert guarantees.gamma(300, 2.0**-8) == float("inf")
    assert guarantees.cast_bound("allreduce-bf16", "bf16", 300, 8, 8.0, 8.0, 1.0) is None
    assert guarantees.cast_kind("ps-reduce", bc._compressor("fp16")) == "fp16"
    assert guarantees.cast_kind("allgather", bc._compressor("fp16")) is None


class _Codec:
    """A stand-in codec with a given omega."""

    name, p = "stub", {}

    def __init__(self, omega: float | None, unbiased: bool) -> None:
        self.omega, self.unbiased = omega, unbiased

    def error_bound(self, d: int) -> float | None:
        return self.omega


def _bound(name: str, comp, d: int, p: int, sq_norms, mean_sq: float):  # type: ignore[no-untyped-def]
    """The NMSE guarantee of compressed scheme ``name`` (the scheme's own ``bound``)."""
    from hpcq.collectives import BoundInputs, scheme

    return scheme(name).bound(comp, d, p, BoundInputs(tuple(sq_norms), mean_sq))


def test_codec_bound_composes_two_compressions(monkeypatch) -> None:
    def fake(omega, unbiased, sq_norms, mean_sq):  # the independent-unbiased form
        return None if omega is None else omega * sum(sq_norms) / (len(sq_norms) ** 2 * mean_sq)

    monkeypatch.setattr(sys.modules["hpcq.compressors"], "mean_nmse_bound", fake, raising=False)
    b1, w = 0.5, 0.5
    args = (1000, 1, [1.0], 1.0)
    unb = _Codec(w, True)
    assert _bound("allgather", unb, *args) == pytest.approx(b1, rel=1e-6)
    assert _bound("two-phase", unb, *args) == pytest.approx(
        b1 + w * (1 + b1), rel=1e-6
    )
    biased = _Codec(w, False)
    want = (b1**0.5 + w**0.5 * (1 + b1**0.5)) ** 2
    assert _bound("ps-compressed", biased, *args) == pytest.approx(want, rel=1e-6)
    assert _bound("ps", _Codec(None, True), *args) is None
    assert _bound("allgather", _Codec(0.0, True), *args) < 1e-12  # rounding only


def test_check_rule_floor_standard_error_and_cap() -> None:
    assert guarantees.allowed(None) is None and guarantees.allowed(1.0) == 1.5 + 1e-12
    assert guarantees.allowed(1.0, [1.0, 1.0, 1.0]) == 1.5 + 1e-12  # concentrated: the floor
    heavy = [0.1, 0.1, 0.1, 5.7]  # mean 1.5, standard error 1.4: heavy tail, allowed ~5.2 -> cap
    assert guarantees.allowed(1.0, heavy) == pytest.approx(4.0 + 1e-12)
    mid = [0.5, 1.5, 2.5, 1.5]  # standard error 0.41: bound + 3 se = 2.22
    assert guarantees.allowed(1.0, mid) == pytest.approx(1.0 + 3 * np.std(mid, ddof=1) / 2)
    assert [guarantees.validation_draws(1 << k) for k in (10, 15, 16, 18, 26)] == [32, 32, 16, 4, 4]


def test_shared_random_k_is_not_independent() -> None:
    assert not guarantees.independent_errors(bc._compressor("randk:ratio=0.1"))
    assert guarantees.independent_errors(bc._compressor("randk:ratio=0.1,shared=false"))
    assert guarantees.independent_errors(bc._compressor("qsgd:bits=4"))


# ------------------------------------------------------------------ run_case, in process
def _self_case(scheme: str, spec: str, d: int = 1000, check: bool = True):
    from mpi4py import MPI

    case = bc.Case(scheme, spec, d, iterations=4, warmup=2, seed=3)
    out = bc.run_case(MPI.COMM_SELF, case, check=check)
    assert out is not None
    return case, *out


@pytest.mark.parametrize(
    ("scheme", "spec"),
    [
        ("allreduce-fp32", "fp32"),
        ("allreduce-bf16", "bf16"),
        ("ps-reduce", "fp16"),
        ("allgather", "qsgd:bits=4"),
        ("two-phase", "hadamard+sign:scale=drive"),
        ("ps-compressed", "topk:ratio=0.05"),
        ("ps", "qsgd:bits=4"),
    ],
)
def test_run_case_on_comm_self(scheme: str, spec: str) -> None:
    from mpi4py import MPI

    case, attrs, data, row = _self_case(scheme, spec)
    assert {k: (np.shape(v), u) for k, (v, u) in data.items()} == {
        "encode_s": ((1, 4), "s"),
        "comm_s": ((1, 4), "s"),
        "decode_s": ((1, 4), "s"),
        "total_s": ((1, 4), "s"),
        "overhead_s": ((1, 4), "s"),
        "exposed_comm_s": ((1, 4), "s"),
        "warmup_total_s": ((1, 2), "s"),
        "nmse_draws": ((32,), "1"),
        "bytes_sent": ((1,), "bytes"),
        "bytes_recv": ((1,), "bytes"),
    }
    np.testing.assert_allclose(
        data["total_s"][0], data["encode_s"][0] + data["comm_s"][0] + data["decode_s"][0]
    )
    assert attrs["scheme"] == scheme and attrs["spec_given"] == spec and attrs["nprocs"] == 1
    assert attrs["d"] == 1000 and attrs["logical_bytes"] == 4000 and attrs["seed"] == 3
    assert attrs["bits_per_coordinate"] == pytest.approx(8 * attrs["wire_bytes_per_rank"] / 1000)
    assert attrs["compressor"]["spec"] == attrs["spec"]
    lat = data["total_s"][0]
    assert attrs["latency_min_s"] == lat.min() and attrs["latency_max_s"] == lat.max()
    assert attrs["latency_p50_s"] == pytest.approx(np.median(lat))
    assert attrs["consistent"] and attrs["check"] == "pass" and row["label"]
    # the NMSE of the validation calls (steps 6, 7, ...), recomputed
    x = bc.rank_vector(3, 0, 1000).astype(np.float64)
    comp = None if SCHEMES.get(scheme).cast else bc._compressor(spec)
    want = []
    for step in range(6, 6 + 32):
        mean, _ = SCHEMES.get(scheme)(MPI.COMM_SELF, x.astype(np.float32), comp, seed=3, step=step)
        want.append(float(np.sum((mean - x) ** 2) / np.sum(x * x)))
    np.testing.assert_allclose(data["nmse_draws"][0], want, rtol=1e-12, atol=1e-300)
    assert attrs["nmse"] == pytest.approx(np.mean(want), rel=1e-12, abs=1e-300)
    assert attrs["validation_draws"] == 32 and attrs["nmse_std"] >= 0
    assert attrs["nmse_bound"] is None or attrs["nmse"] <= attrs["nmse_allowed"]


def test_fp32_is_exact_on_one_rank_and_the_check_can_fail(monkeypatch) -> None:
    _, attrs, _, _ = _self_case("allreduce-fp32", "fp32")
    assert attrs["nmse"] == 0.0 and 0 < attrs["nmse_bound"] < 1e-12
    assert attrs["check"] == "pass" and attrs["x_fp32"] == 1.0
    comp = bc._compressor("qsgd:bits=4")
    monkeypatch.setattr(type(comp), "error_bound", lambda self, d: 0.0, raising=False)
    _, attrs, _, row = _self_case("allgather", "qsgd:bits=4")
    assert attrs["nmse"] > 1e-3 and attrs["nmse_bound"] < 1e-12
    assert attrs["check"] == row["check"] == "fail"
    _, attrs, _, _ = _self_case("allgather", "qsgd:bits=4", check=False)
    assert attrs["check"] == "none"


def test_format_table_has_every_case_and_the_fp32_ratio() -> None:
    rows = [
        _self_case(s, c, d=d)[3]
        for d in (1024, 2048)
        for s, c in (("allreduce-fp32", "fp32"), ("allgather", "sign"))
    ]
    text = collectives_table.format_table(rows, nprocs=1)
    lines = text.splitlines()
    assert sum(line.startswith("allgather sign ") for line in lines) == 2
    assert "# d = 1024 " in text and "# d = 2048 " in text and "busbw" in text
    fp32 = [line for line in lines if line.startswith("allreduce-fp32")]
    assert len(fp32) == 2 and all("  1.00" in line for line in fp32)
    assert max(len(line) for line in lines if not line.startswith("# ")) <= 120


def test_compile_for_covers_casts_and_chunks() -> None:
    cases = _expand(["two-phase", "allreduce-fp16", "ps-reduce"], ["fp16"], [1001])
    assert bc.compile_for(cases, nprocs=3) >= 0.0


# ------------------------------------------------------------------ progress
def test_progress_plain_lines_with_weighted_eta() -> None:
    out = io.StringIO()
    prog = Progress(3, out, weights=[1, 1, 2])
    prog("a")
    prog.start -= 10.0  # pretend the cases took 10 s so far
    assert prog.eta(10.0) == pytest.approx(30.0)  # 1 of 4 units done
    prog("b")
    prog("c")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("case 1/3 a: ") and "eta" in lines[0]
    assert lines[2].startswith("case 3/3 c: ") and lines[2].endswith("eta 0 s")


def test_progress_live_bar_on_a_terminal() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    prog = Progress(2, out)
    prog("a long label")
    prog("b")
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "[##########..........] 1/2" in text and "2/2" in text


# ------------------------------------------------------------------ MPI
ARGS = ("--compressors", "qsgd:bits=4", "topk:ratio=0.05", "--iterations", "3", "--warmup", "1")


@pytest.mark.mpi
def test_bench_two_ranks_writes_every_case(mpirun, tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    done = mpirun(
        2,
        "bench",
        "collectives",
        "--sizes",
        "10:12",
        *ARGS,
        "--schemes",
        "allgather",
        "two-phase",
        "ps",
        "allreduce-fp32",
        "allreduce-fp16",
        "--check",
        "-o",
        str(out),
    )
    labels = [
        f"{s} {c}"
        for s in ("allgather", "two-phase", "ps")
        for c in ("qsgd:bits=4", "topk:ratio=0.05")
    ] + ["allreduce-fp32", "allreduce-fp16"]
    rows = [line for line in done.stdout.splitlines() if line and not line.startswith("#")]
    assert len(rows) == 3 * len(labels)
    assert all(any(r.startswith(label + " ") for r in rows) for label in labels)
    assert "CHECK FAILED" not in done.stdout and "case 24/24" in done.stderr
    cases = read_cases(out, kind="collectives")
    assert len(cases) == 24 and {c["nprocs"] for c in cases} == {2}
    assert {c["d"] for c in cases} == {1024, 2048, 4096}
    for c in cases:
        assert c["total_s"].shape == c["overhead_s"].shape == (2, 3), c["label"]
        assert c["warmup_total_s"].shape == (2, 1) and c["bytes_sent"].shape == (2,)
        assert c["units"]["total_s"] == "s" and c["units"]["bytes_sent"] == "bytes"
        assert c["consistent"] and c["check"] == "pass" and c["compressor.spec"] == c["spec"]
        assert c["nmse_draws"].shape == (c["validation_draws"],) and c["nmse"] <= c["nmse_allowed"]


@pytest.mark.mpi
def test_bench_three_ranks_d_not_divisible(mpirun, tmp_path: Path) -> None:
    # 3 ranks on 2 cores: MPICH busy-polls, so one size and two cases
    out = tmp_path / "out.h5"
    mpirun(
        3,
        "bench",
        "collectives",
        "--sizes",
        "10",
        "--compressors",
        "qsgd:bits=4",
        "--schemes",
        "two-phase",
        "allreduce-bf16",
        "--iterations",
        "2",
        "--warmup",
        "1",
        "--check",
        "-o",
        str(out),
        timeout=240,
    )
    cases = read_cases(out, kind="collectives")
    assert [c["scheme"] for c in cases] == ["allreduce-bf16", "two-phase"]
    assert all(c["total_s"].shape == (3, 2) and c["check"] == "pass" for c in cases)


@pytest.mark.mpi
def test_bench_failed_check_keeps_every_case(mpirun, tmp_path: Path) -> None:
    out = tmp_path / "out.h5"
    done = mpirun(
        2,
        "--sizes",
        "10",
        *ARGS,
        "--schemes",
        "allreduce-fp32",
        "allgather",
        "--check",
        "-o",
        str(out),
        payload="bench_collectives_fail.py",
        expect=1,
    )
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("hpcq: error: check failed"), done.stderr
    assert "allgather qsgd:bits=4 d=2^10; allgather topk:ratio=0.05 d=2^10" in errors[0]
    cases = read_cases(out, kind="collectives")
    assert [c["check"] for c in cases] == ["pass", "fail", "fail"]


@pytest.mark.mpi
def test_bench_bad_scheme_is_one_line_on_every_rank(mpirun) -> None:
    done = mpirun(2, "bench", "collectives", "--schemes", "allgather", "nope", expect=2)
    assert done.stderr.strip().splitlines() == [
        f"hpcq: error: --schemes: unknown scheme 'nope'; valid: {', '.join(SCHEMES.names())}"
    ]
