"""The job runner: --set, [sweep], case keys, --resume, and a run killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import find_mpiexec, mpi_env

from hpcq.cli import main
from hpcq.runner import JobError, expand_job, parse_job, parse_override, variants
from hpcq.store import read_cases, read_runs

HEAD = 'format = "hpcq-job"\nversion = 1\n'
SMALL = HEAD + """
[job]
name = "small"
seed = 1

[collectives]
compressors = ["qsgd:bits=4", "sign"]
schemes = ["allreduce-fp32", "allgather"]
sizes = "8,9"
iterations = 2
warmup = 1
"""


def test_parse_override() -> None:
    assert parse_override("job.seed=3") == ("job", "seed", 3)
    assert parse_override('collectives.sizes="10:12"') == ("collectives", "sizes", "10:12")
    assert parse_override("job.name=run 1") == ("job", "name", "run 1")  # not TOML: a string
    assert parse_override('collectives.schemes=["ps"]') == ("collectives", "schemes", ["ps"])
    assert parse_override("collectives.check=true") == ("collectives", "check", True)
    with pytest.raises(JobError, match="TABLE.KEY=VALUE"):
        parse_override("seed=3")


def test_set_overrides_before_validation() -> None:
    job = parse_job(SMALL, "small.toml", ["collectives.iterations=7", "job.name=other"])
    assert job.collectives[0].iterations == 7 and job.job.name == "other"
    with pytest.raises(JobError, match=r"\[collectives\] iterations = 0 must be >= 1"):
        parse_job(SMALL, "small.toml", ["collectives.iterations=0"])
    with pytest.raises(JobError, match=r"has no \[kernels\] table"):
        parse_job(SMALL, "small.toml", ["kernels.repeats=3"])
    with pytest.raises(JobError, match="unknown table 'jobs'"):
        parse_job(SMALL, "small.toml", ["jobs.seed=3"])


def test_sweep_is_a_cartesian_product_of_variants() -> None:
    text = SMALL + '[sweep]\n"job.seed" = [0, 1, 2]\n"collectives.iterations" = [2, 5]\n'
    job = parse_job(text, "s.toml")
    points = [dict(point) for point, _ in variants(job)]
    assert len(points) == 6 and points[0] == {"job.seed": 0, "collectives.iterations": 2}
    assert points[-1] == {"job.seed": 2, "collectives.iterations": 5}
    cases, _ = expand_job(job)
    base, _ = expand_job(parse_job(SMALL, "s.toml"))
    assert len(cases) == 6 * len(base)
    assert len({c.key for c in cases}) == len(cases)  # every case has its own key
    assert {c.sweep for c in cases} == {tuple(p.items()) for p in points}


def test_identical_cases_run_once() -> None:
    # the sweep changes only the collectives table: the kernels cases are the same in every
    # variant and are kept once
    text = (SMALL + '[kernels]\ncompressors = ["sign"]\nsizes = "8"\n'
            '[sweep]\n"collectives.iterations" = [2, 3]\n')
    cases, _ = expand_job(parse_job(text, "s.toml"))
    kinds = [c.kind for c in cases]
    assert kinds.count("kernels") == 1 and kinds.count("kernels.memcpy") == 1
    assert kinds.count("collectives") == 2 * len(expand_job(parse_job(SMALL, "s.toml"))[0])


def test_collectives_blocks() -> None:
    text = HEAD + ('[[collectives]]\ncompressors = ["sign"]\nschemes = ["allgather"]\n'
                   'sizes = "8"\n[[collectives]]\ncompressors = ["fp16"]\n'
                   'schemes = ["ps-reduce"]\nsizes = "8"\n')
    cases, _ = expand_job(parse_job(text, "b.toml", ["collectives.iterations=4"]))
    assert [c.label.split()[0] for c in cases] == ["allgather", "ps-reduce"]
    assert all(c.bench.iterations == 4 for c in cases)


def test_resume_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "small.toml"
    job.write_text(SMALL)
    out = tmp_path / "out.h5"
    assert main(["run", str(job), "-o", str(out), "--set", 'collectives.sizes="8"']) == 0
    first = read_cases(out)
    assert len(first) == 3
    assert main(["run", str(job), "--resume"]) == 2  # no output name to resume
    assert "--resume needs the result file" in capsys.readouterr().err
    assert main(["run", str(job), "-o", str(out), "--resume", "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("[done]") == 3 and "# 6 cases, 3 already in" in listing
    assert main(["run", str(job), "-o", str(out), "--resume"]) == 0
    cases = read_cases(out)
    assert len(cases) == 6 and len({c["case_key"] for c in cases}) == 6
    runs = read_runs(out)
    assert len(runs) == 2 and runs[1].get("resumed")
    assert main(["run", str(job), "-o", str(out), "--resume"]) == 0  # nothing left: no-op
    assert len(read_cases(out)) == 6


def test_check_failure_writes_then_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from hpcq.compressors.base import Compressor

    monkeypatch.setattr(Compressor, "error_bound", lambda self, d: 0.0)
    job = tmp_path / "c.toml"
    job.write_text(SMALL + "check = true\n")
    out = tmp_path / "out.h5"
    assert main(["run", str(job), "-o", str(out), "--set", 'collectives.sizes="8"']) == 1
    err = capsys.readouterr().err
    assert "check failed" in err and "allgather qsgd:bits=4" in err and str(out) in err
    cases = read_cases(out)
    assert len(cases) == 3  # written before the failure was reported
    assert [c["check"] for c in cases] == ["pass", "fail", "fail"]


@pytest.mark.mpi
def test_sigkill_then_resume(warm_cache: None, tmp_path: Path) -> None:
    """A run killed with SIGKILL keeps every completed case; --resume finishes it, no duplicates."""
    launcher = find_mpiexec()
    if launcher is None:
        pytest.skip("no MPI launcher")
    job = tmp_path / "long.toml"
    job.write_text(HEAD + """
[collectives]
compressors = ["qsgd:bits=4", "sign", "hadamard+qsgd:bits=2"]
schemes = ["allgather", "two-phase"]
sizes = "13,14"
iterations = 1500
warmup = 1
""")
    out = tmp_path / "out.h5"
    argv = [launcher, "-n", "2", sys.executable, "-m", "hpcq", "run", str(job), "-o", str(out)]
    total = len(expand_job(parse_job(job.read_text(), str(job)))[0])
    proc = subprocess.Popen(argv, cwd=tmp_path, env=mpi_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    done_before = 0
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists():
                try:
                    done_before = len(read_cases(out))
                except (OSError, ValueError):
                    pass  # never expected (writes are atomic); the assertions below decide
                if done_before >= 2:
                    break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    assert 2 <= done_before < total, f"the run was not caught in the middle ({done_before})"
    kept = read_cases(out)  # readable, every complete case intact
    assert len(kept) >= done_before
    assert all(c["total_s"].shape == (2, 1500) for c in kept)
    resumed = subprocess.run([*argv[:-2], "-o", str(out), "--resume"], cwd=tmp_path,
                             env=mpi_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr
    cases = read_cases(out)
    keys = [c["case_key"] for c in cases]
    assert len(cases) == total and len(set(keys)) == total
    assert [json.loads(k)["scheme"] for k in keys].count("allgather") == total // 2
    assert len(read_runs(out)) == 2
