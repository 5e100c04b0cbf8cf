"""Ctrl-C and SIGTERM (hpcq.interrupt) with real processes: no rank hangs, whoever gets the
signal and whenever; rank 0 says what is kept and how to resume; --resume completes the file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import find_mpiexec, mpi_env

from hpcq.interrupt import resume_command

pytestmark = pytest.mark.mpi

JOB = """format = "hpcq-job"
version = 1
[collectives]
compressors = ["qsgd:bits=4", "sign"]
schemes = ["allgather", "two-phase"]
sizes = "10,11"
iterations = 600
warmup = 1
"""
TOTAL = 8  # cases of JOB
STOP_S = 15.0  # "within a few seconds", with room for a loaded test machine


def _ranks(marker: int) -> dict[int, int]:
    """{MPI rank: pid} of the ranks whose environment carries ``marker`` (from /proc)."""
    out: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if b"HPCQ_SIGNAL_TEST=%d" % marker not in env:
            continue
        if "python" not in stat.split(")")[0]:
            continue
        if _is_rank_child(stat, marker):  # a rank's subprocess between fork and exec
            continue
        rank = next((v for v in env if v.startswith(b"PMI_RANK=")), None)
        if rank is not None:
            out[int(rank.split(b"=")[1])] = int(entry.name)
    return out


def _is_rank_child(stat: str, marker: int) -> bool:
    """Whether the process of ``stat`` is a child of a rank: a rank's subprocess (``uname``,
    ``git``) is a copy of the rank, environment and signal handlers included, until it execs."""
    ppid = stat.rsplit(")", 1)[1].split()[1]
    try:
        parent_env = Path(f"/proc/{ppid}/environ").read_bytes().split(b"\0")
        parent_stat = Path(f"/proc/{ppid}/stat").read_text()
    except OSError:
        return False
    return (b"HPCQ_SIGNAL_TEST=%d" % marker in parent_env
            and "python" in parent_stat.split(")")[0])


def _handles_sigterm(pid: int) -> bool:
    """Whether ``pid`` catches SIGTERM, i.e. hpcq.interrupt is installed (Python's own
    start-up, about a second of imports before ``main()``, is not covered)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("SigCgt:")), "0")
    return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


def _interrupt(tmp_path: Path, target: str, sig: signal.Signals, after_cases: int,
               job_text: str = JOB, args: list[str] | None = None
               ) -> tuple[subprocess.CompletedProcess[str], float, Path]:
    """Run ``job_text`` (or ``hpcq *args``) on 2 ranks, send ``sig`` to ``target``
    ("mpiexec", "rank0", "rank1") once ``after_cases`` cases are done (0: at start-up, as
    soon as both ranks handle signals)."""
    launcher = find_mpiexec()
    if launcher is None:
        pytest.skip("no MPI launcher: set $MPIEXEC or install one (pip install mpich)")
    if not Path("/proc/self/environ").exists():
        pytest.skip("finding the ranks' processes needs /proc")
    job, out = tmp_path / "job.toml", tmp_path / "out.h5"
    job.write_text(job_text)
    env = mpi_env()
    marker = os.getpid() * 1000 + len(list(tmp_path.parent.iterdir()))  # this run's tag
    env["HPCQ_SIGNAL_TEST"] = str(marker)  # inherited by the ranks: finds them in /proc
    env["PYTHONFAULTHANDLER"] = "1"  # a hung rank's stacks on SIGABRT
    argv = [launcher, "-n", "2", sys.executable, "-m", "hpcq",
            *(args or ["run", str(job)]), "-o", str(out)]
    log = tmp_path / "stderr.txt"
    with log.open("w") as err:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            ranks = _ranks(marker)
            if len(ranks) == 2 and all(map(_handles_sigterm, ranks.values())) and (
                    after_cases == 0 or log.read_text().count("case ") >= after_cases):
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before the signal:\n{log.read_text()}"
        pid = proc.pid if target == "mpiexec" else ranks[int(target[-1])]
        os.kill(pid, sig)
        start = time.monotonic()
        try:
            proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            for pid in _ranks(marker).values():  # their stacks (faulthandler) into the log
                os.kill(pid, signal.SIGABRT)
            time.sleep(2)
            pytest.fail(f"{target} got {sig.name}: no exit in {STOP_S} s\n{log.read_text()}")
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(argv, proc.returncode, "", log.read_text()), took, out


@pytest.mark.parametrize("target,sig", [("mpiexec", signal.SIGINT), ("rank1", signal.SIGTERM),
                                        ("rank0", signal.SIGINT)])
def test_signal_mid_run_keeps_cases_and_resumes(warm_cache: None, tmp_path: Path, target: str,
                                                sig: signal.Signals) -> None:
    from hpcq.store import read_cases

    done, took, out = _interrupt(tmp_path, target, sig, after_cases=2)
    report = f"{target} {sig.name}: exit {done.returncode} after {took:.1f} s\n{done.stderr}"
    assert done.returncode == 128 + sig, report
    assert "Traceback" not in done.stderr, report
    lines = [ln for ln in done.stderr.splitlines() if "hpcq: interrupted" in ln]
    assert len(lines) == 1 and lines[0].startswith(f"hpcq: interrupted by {sig.name}: "), report
    kept = len(read_cases(out))
    assert 2 <= kept < TOTAL, report
    assert f"{kept} of {TOTAL} cases kept in {out}" in lines[0], report
    assert "--resume" in lines[0] and lines[0].split("finish with: ")[1].startswith("mpiexec -n 2")
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name], report
    launcher = find_mpiexec()
    assert launcher is not None
    again = subprocess.run([launcher, "-n", "2", sys.executable, "-m", "hpcq", "run",
                            str(tmp_path / "job.toml"), "-o", str(out), "--resume"],
                           cwd=tmp_path, env=mpi_env(), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    cases = read_cases(out)
    assert len(cases) == TOTAL and len({c["case_key"] for c in cases}) == TOTAL


@pytest.mark.parametrize("target,sig", [("mpiexec", signal.SIGTERM), ("rank1", signal.SIGINT)])
def test_signal_at_start_up_never_hangs(warm_cache: None, tmp_path: Path, target: str,
                                        sig: signal.Signals) -> None:
    done, took, out = _interrupt(tmp_path, target, sig, after_cases=0)
    report = f"{target} {sig.name}: exit {done.returncode} after {took:.1f} s\n{done.stderr}"
    assert done.returncode == 128 + sig, report
    assert "Traceback" not in done.stderr, report
    lines = [ln for ln in done.stderr.splitlines() if "hpcq: interrupted" in ln]
    assert len(lines) == 1 and lines[0].startswith(f"hpcq: interrupted by {sig.name}"), report
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name], report


TRAIN_JOB = """format = "hpcq-job"
version = 1
[train]
problems = ["lstsq:m=256,n=32,kappa=10"]
methods = ["gd", "dqgd:bits=8"]
compressors = ["fp32", "qsgd:bits=4", "sign"]
iterations = 3000
log_every = 100
"""


def test_sigterm_during_training(warm_cache: None, tmp_path: Path) -> None:
    from hpcq.store import read_cases

    done, took, out = _interrupt(tmp_path, "rank1", signal.SIGTERM, 1, job_text=TRAIN_JOB)
    report = f"exit {done.returncode} after {took:.1f} s\n{done.stderr}"
    assert done.returncode == 143 and "Traceback" not in done.stderr, report
    lines = [ln for ln in done.stderr.splitlines() if "hpcq: interrupted" in ln]
    kept = len(read_cases(out))
    assert len(lines) == 1 and f"{kept} of 4 cases kept" in lines[0], report


def test_sigint_during_bench(warm_cache: None, tmp_path: Path) -> None:
    from hpcq.store import read_cases

    args = ["bench", "collectives", "--compressors", "qsgd:bits=4", "sign", "--schemes",
            "allgather", "two-phase", "--sizes", "10,11", "--iterations", "600"]
    done, took, out = _interrupt(tmp_path, "mpiexec", signal.SIGINT, 2, args=args)
    report = f"exit {done.returncode} after {took:.1f} s\n{done.stderr}"
    assert done.returncode == 130 and "Traceback" not in done.stderr, report
    lines = [ln for ln in done.stderr.splitlines() if "hpcq: interrupted" in ln]
    kept = len(read_cases(out))
    assert kept >= 2 and len(lines) == 1, report
    assert lines[0].endswith(f"{kept} of 8 cases kept in {out}"), report  # no --resume


def test_resume_command() -> None:
    assert resume_command(["hpcq", "run", "j.toml", "--append"], "o.h5", 4) == \
        "mpiexec -n 4 hpcq run j.toml -o o.h5 --resume"
    assert resume_command(["hpcq", "run", "-o", "x y.h5", "--resume"], "x y.h5", 1) == \
        "hpcq run -o 'x y.h5' --resume"
