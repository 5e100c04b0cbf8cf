"""hpcq verdict on small synthetic result files: the fit it recovers, its output, bad input."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from hpcq.analysis.verdict import load_inputs, read, verdict
from hpcq.cli import main
from hpcq.collectives import SCHEMES
from hpcq.store import ResultFile

ALPHA, RATE = 2e-5, 1e9  # the synthetic link: 20 us per step, 1 Gbit/s
CODEC = "qsgd:bits=4,s=7,bucket=512,norm=l2,rounding=stochastic"


def _file(path: Path, cpu: str = "Test CPU", schemes: tuple[str, ...] = (
        "allreduce-fp32", "allreduce-bf16", "allgather")) -> Path:
    """Collectives cases at p = 2 whose times follow alpha L + 8/r B exactly."""
    prov = {"software": "hpcq", "cpu_model": cpu,
            "emulated_link": "rate=1gbit,burst=500000,latency=100ms",
            "emulated_link_measured_gbit": RATE / 1e9, "nprocs": 2}
    with ResultFile(path, prov) as f:
        for sch in schemes:
            cost = SCHEMES.get(sch).cost
            spec = {"allreduce-fp32": "fp32", "allreduce-bf16": "bf16"}.get(sch, CODEC)
            for log2 in (14, 18, 22):
                d = 1 << log2
                wire = {"fp32": 4.0 * d, "bf16": 2.0 * d}.get(spec, 0.5 * d + 60)
                comm = ALPHA * cost.steps(2) + 8 / RATE * cost.volume(2, wire, d)
                codec = 0.0 if spec == "fp32" else 1e-9 * d
                f.write_case("collectives", f"{sch} {d}", {
                    "scheme": sch, "spec": spec, "spec_given": spec.split(",")[0],
                    "nprocs": 2, "d": d, "wire_bytes_per_rank": wire, "comm_median_s": comm,
                    "encode_median_s": codec, "decode_median_s": 2 * codec,
                    "latency_p50_s": comm + 3 * codec, "nmse": 0.01 if spec == CODEC else 0.0,
                    "compressor": {"header_bytes": 60}},
                    {"total_s": (np.full((2, 3), comm + 3 * codec), "s")})
    return path


@pytest.fixture
def parts(tmp_path: Path) -> Path:
    return _file(tmp_path / "parts.h5")


def test_fit_recovers_the_synthetic_link(parts: Path) -> None:
    inputs = load_inputs([parts])
    nominal, got, found = inputs.links["1gbit"]
    assert nominal == got == RATE
    fp32 = found[("allreduce-fp32", "fp32")]
    assert fp32.alpha_s == pytest.approx(ALPHA, rel=1e-6)
    assert fp32.beta_cpu_s_per_byte == pytest.approx(0.0, abs=1e-15)
    assert fp32.bytes_per_element == pytest.approx(4.0)
    codec = found[("allgather", CODEC)]
    assert codec.bytes_per_element == pytest.approx(0.5) and codec.header_bytes == 60


def test_verdict_rows_sources_and_file(parts: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    t0 = time.perf_counter()
    code = main(["verdict", "--workload", "resnet50", "--nodes", "1,4", "--ranks-per-node",
                 "2", "--link", "1gbit", "--compute-ms", "100", "--from", str(parts),
                 "-o", str(tmp_path / "v.h5")])
    assert code == 0 and time.perf_counter() - t0 < 10
    out = capsys.readouterr().out
    assert "# conclusion:" in out and "allgather qsgd:bits=4" in out
    assert "accuracy cost not measured: hpcq run" in out  # no training cases in the file
    v = read(tmp_path / "v.h5")
    rows = {(r["label"], int(r["nodes"])): r for r in v["rows"]}
    assert rows[("allreduce-fp32", 1)]["source"] == "fitted"
    assert rows[("allreduce-fp32", 4)]["source"] == "extrapolated"  # p = 8 > measured 2
    ref = min(rows[(b, 1)]["iteration_s"] for b in ("allreduce-fp32", "allreduce-bf16"))
    r = rows[("allgather qsgd:bits=4", 1)]
    assert r["speedup"] == pytest.approx(ref / r["iteration_s"])
    assert r["nmse"] == pytest.approx(0.01) and r["breakeven_kind"] in (
        "crossing", "always", "never", "only above")
    # the link is slow and compute short: at 2 ranks 4-bit allgather beats both allreduces
    assert r["speedup"] > 1 and v["conclusion"].startswith("allgather qsgd:bits=4 is")


def test_other_link_is_modelled_and_a_missing_baseline_named(tmp_path: Path) -> None:
    inputs = load_inputs([_file(tmp_path / "p.h5", schemes=("allreduce-fp32", "allgather"))])
    v = verdict(inputs, "bert-base", nodes=[2], ranks_per_node=1, link="100gbit",
                compute_ms=50)
    assert {r["source"] for r in v.rows} == {"link-modelled"}
    assert any(m.startswith("allreduce-bf16: hpcq netem --rate 100gbit") for m in v.missing)


@pytest.mark.parametrize("argv, needle", [
    (["--workload", "resnet5"], "unknown workload 'resnet5'"),
    (["--link", "10gbyte"], "--link '10gbyte'"),
    (["--nodes", "4,0"], "node counts must be > 0"),
    (["--compute-ms", "0"], "--compute-ms must be > 0"),
])
def test_bad_input_is_one_line(parts: Path, tmp_path: Path, argv: list[str], needle: str,
                               capsys: pytest.CaptureFixture[str]) -> None:
    base = {"--workload": "resnet50", "--nodes": "4", "--link": "1gbit", "--compute-ms": "10"}
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    args = [x for kv in base.items() for x in kv]
    code = main(["verdict", *args, "--from", str(parts), "-o", str(tmp_path / "v.h5")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_mixed_machines_need_allow_mixed(parts: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    other = _file(tmp_path / "other.h5", cpu="Other CPU")
    argv = ["verdict", "--workload", "tiny", "--nodes", "2", "--link", "1gbit",
            "--compute-ms", "1", "--from", str(parts), str(other), "-o", ""]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "different machines" in err and "--allow-mixed" in err
    assert len(err.strip().splitlines()) == 1
    assert main([*argv, "--allow-mixed"]) == 0


def test_a_codec_that_never_reaches_fp32_accuracy_is_said_so(parts: Path, tmp_path: Path
                                                             ) -> None:
    from mpi4py import MPI

    from hpcq.config import job_from_tables
    from hpcq.runner import run_job

    job = job_from_tables("test", {"train": {
        "problems": ["lstsq:m=2048,n=256,kappa=10"], "methods": ["gd"],
        "compressors": ["fp32", "qsgd:bits=4"], "iterations": 100}})
    train = tmp_path / "train.h5"
    assert run_job(MPI.COMM_SELF, None, job=job, output=str(train)) == 0
    v = verdict(load_inputs([parts, train], allow_mixed=True), "resnet50", nodes=[1],
                ranks_per_node=2,
                link="1gbit", compute_ms=400)
    row = next(r for r in v.rows if r["scheme"] == "allgather")
    # 4-bit QSGD's noise floor stays above the distance fp32 reaches at half its run
    assert row["tta_ratio"] == float("inf") and "not reached in 100 iterations" in row["tta_note"]
    if row["speedup"] > 1:
        assert v.conclusion.endswith("but does not reach fp32's accuracy in its training runs")
