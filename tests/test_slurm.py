"""hpcq submit on a real SLURM (ci/slurm-local.sh starts one on localhost as root).

Skipped, with the reason, where no SLURM answers: `bash ci/slurm-local.sh up` (root, Debian)
starts a single-node cluster; `.ci/run` does that where it can.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcq.store import merge, read_attrs, read_cases


def _slurm_idle() -> str | None:
    """None when a SLURM partition answers with an idle node, else why not."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM client here (bash ci/slurm-local.sh up starts one, as root)"
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                              timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer"
    if "idle" not in done.stdout.split():
        return f"no idle SLURM node ({' '.join((done.stdout + done.stderr).split())[:120]})"
    return None


pytestmark = [pytest.mark.mpi,
              pytest.mark.skipif(_slurm_idle() is not None, reason=str(_slurm_idle()))]

JOB = """format = "hpcq-job"
version = 1
[job]
name = "slurmtest"
[collectives]
compressors = ["qsgd:bits=4", "sign"]
schemes = ["allreduce-fp32", "allgather"]
sizes = "10,11"
iterations = 3
warmup = 1
"""


def _submit(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    from conftest import mpi_env

    (tmp_path / "job.toml").write_text(JOB)
    # the job inherits this environment (sbatch --export=ALL): this Python's hpcq, the cache
    return subprocess.run([sys.executable, "-m", "hpcq", "submit", "job.toml",
                           "--ntasks-per-node", "2", "--time", "10", "--wait",
                           "--output-dir", str(tmp_path), *extra],
                          cwd=tmp_path, env=mpi_env(), capture_output=True, text=True,
                          timeout=300)


def test_submit_wait_runs_the_job_on_two_ranks(warm_cache: None, tmp_path: Path) -> None:
    done = _submit(tmp_path)
    logs = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert done.returncode == 0, done.stderr + logs
    job_id = done.stdout.split("as job ")[1].split()[0]
    out = tmp_path / f"hpcq-slurmtest-{job_id}.h5"
    attrs = read_attrs(out)
    assert attrs["nprocs"] == 2 and attrs["slurm_job_id"] == job_id
    assert len(read_cases(out, kind="collectives")) == 6


def test_array_tasks_split_the_cases_and_merge(warm_cache: None, tmp_path: Path) -> None:
    done = _submit(tmp_path, "--array", "2")
    logs = "".join(p.read_text() for p in tmp_path.glob("*.log"))
    assert done.returncode == 0, done.stderr + logs
    files = sorted(tmp_path.glob("hpcq-slurmtest-*_*.h5"))
    assert len(files) == 2, logs
    sizes = [len(read_cases(f)) for f in files]
    assert sizes == [3, 3]
    counts = merge(files, tmp_path / "all.h5", {"software": "hpcq"})
    assert counts["cases"] == 6 and counts["duplicates"] == 0
