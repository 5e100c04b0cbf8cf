"""The ``hpcq`` command: listings, one-line errors with exit codes, jobs on 1 and 2 ranks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hpcq.cli import main
from hpcq.compressors import REGISTRY
from hpcq.runner import JobError, parse_job, read_job
from hpcq.store import read_attrs, read_cases

REPO = Path(__file__).resolve().parent.parent

TINY_JOB = """\
format = "hpcq-job"
version = 1

[job]
name = "tiny"
seed = 3
skip_unavailable = true

[kernels]
compressors = ["fp16", "qsgd:bits=4"]
sizes = "8"
repeats = 2
warmup = 1

[collectives]
compressors = ["qsgd:bits=4", "hadamard+sign:scale=drive"]
schemes = ["allreduce-fp32", "allreduce-bf16", "allgather", "two-phase"]
sizes = "10"
iterations = 3
warmup = 1
check = true
"""


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if "error" in ln]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_compressors_listing(hpcq_cli) -> None:
    out = hpcq_cli("compressors").stdout
    for name in REGISTRY.names():
        assert any(line.startswith(name + " ") for line in out.splitlines()), name
    listing = json.loads(hpcq_cli("compressors", "--json").stdout)
    assert sorted(listing) == REGISTRY.names()
    assert listing["fp32"]["unbiased"] is True and listing["fp32"]["bits_per_coordinate_d1M"] > 32


def test_version_and_info(hpcq_cli) -> None:
    assert hpcq_cli("--version").stdout.startswith("hpcq ")
    info = hpcq_cli("info").stdout
    assert "numba threads" in info and "MPI" in info and "cpu" in info


def test_bad_spec_is_one_line_exit_2(hpcq_cli) -> None:
    done = hpcq_cli("bench", "kernels", "--compressors", "nosuch:bits=3", "--sizes", "8",
                    expect=2)
    line = _error_line(done.stderr)
    assert line.startswith("hpcq: error:") and "nosuch" in line and "fp32" in line


def test_bad_option_is_argparse_exit_2(hpcq_cli) -> None:
    assert "invalid choice" in hpcq_cli("nosuchcommand", expect=2).stderr


HEAD = 'format = "hpcq-job"\nversion = 1\n'


@pytest.mark.parametrize(("text", "needles"), [
    ("nonsense = [", ["invalid TOML"]),
    ('format = "x"\nversion = 1\n[collectives]\n', ["format = 'hpcq-job'"]),
    (HEAD + "[colectives]\n", ["'colectives'", "[collectives]", "[kernels]", "[sweep]"]),
    (HEAD + '[job]\nname = "a"\n', ["nothing to run"]),
    (HEAD + "[collectives]\niters = 3\n",
     ["[collectives]", "'iters'", "iterations (default 20)", 'sizes (default "16")']),
    (HEAD + '[collectives]\niterations = "many"\n',
     ['[collectives] iterations = "many" must be int']),
    (HEAD + "[collectives]\ncheck = 1\n", ["[collectives] check = 1 must be bool"]),
    (HEAD + "[collectives]\niterations = 0\n", ["iterations = 0", ">= 1"]),
    (HEAD + '[collectives]\ncompressors = "sign"\n',
     ["[collectives] compressors", "list of strings"]),
    (HEAD + '[collectives]\nschemes = ["butterfly"]\n',
     ["[collectives]", "'butterfly'", "allgather"]),
    (HEAD + '[collectives]\nschemes = ["ps-reduce"]\ncompressors = ["sign"]\n',
     ["[collectives]", "ps-reduce cannot do sign", "fp32, fp16, bf16"]),
    (HEAD + '[[collectives]]\n[[collectives]]\nsizes = "x"\n',
     ["[collectives] block 2 sizes"]),
    (HEAD + '[kernels]\ncompressors = ["nosuch"]\n', ["[kernels] compressors", "nosuch", "valid:"]),
    (HEAD + '[kernels]\nsizes = "1:x"\ncompressors = []\n', ["[kernels] sizes"]),
    (HEAD + '[kernels]\n[sweep]\n"kernels.nope" = [1]\n', ["[sweep] 'kernels.nope'",
                                                          "repeats (default 5)"]),
    (HEAD + '[kernels]\n[sweep]\n"collectives.sizes" = ["10"]\n',
     ["[sweep] 'collectives.sizes'", "no [collectives] table"]),
    (HEAD + '[kernels]\n[sweep]\n"kernels.repeats" = 3\n', ["non-empty list"]),
    (HEAD + '[kernels]\n[sweep]\n"kernels.repeats" = [3, "x"]\n', ['repeats = "x" must be int']),
])
def test_bad_job_file_names_table_and_key(tmp_path: Path, text: str, needles: list[str]) -> None:
    from hpcq.runner import expand_job

    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(JobError) as info:
        expand_job(read_job(str(path)))
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message.strip()
    for needle in needles:
        assert needle in message, message


def test_bad_job_exit_code_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(HEAD + "[collectives]\nwat = 1\n")
    assert main(["run", str(path)]) == 2
    assert _error_line(capsys.readouterr().err).startswith(f"hpcq: error: {path}: [collectives]")
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in _error_line(capsys.readouterr().err)
    assert main(["run", str(path), "--set", "nonsense"]) == 2
    assert "TABLE.KEY=VALUE" in _error_line(capsys.readouterr().err)


def test_shipped_jobs_parse() -> None:
    from hpcq.runner import expand_job

    job = read_job(None)
    assert job.train and job.job.name == "default"
    for path in sorted((REPO / "jobs").glob("**/*.toml")):
        cases, notes = expand_job(parse_job(path.read_text(), str(path)))
        assert cases and not notes, path


def test_dry_run_lists_cases(hpcq_cli, tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY_JOB)
    lines = hpcq_cli("run", "tiny.toml", "--dry-run").stdout.splitlines()
    assert "kernels.memcpy" in lines[0] and "memcpy d=2^8" in lines[0]
    assert "fp16 d=2^8" in lines[2]
    text = "\n".join(lines)
    assert "allreduce-fp32" in text and "two-phase qsgd:bits=4" in text
    assert lines[-1] == f"# {len(lines) - 1} cases"
    assert not list(tmp_path.glob("*.h5"))


def test_warmup(hpcq_cli) -> None:
    assert "compressors ready" in hpcq_cli("warmup", "--compressors", "fp16", "bf16").stdout


@pytest.mark.mpi
def test_job_on_two_ranks(mpirun, tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY_JOB)
    done = mpirun(2, "run", "tiny.toml", "-o", "out.h5")
    assert "allreduce-fp32" in done.stdout and "memcpy" in done.stdout
    assert "1/" in done.stderr and "eta" in done.stderr
    attrs = read_attrs(tmp_path / "out.h5")
    assert attrs["nprocs"] == 2 and len(attrs["hostnames"]) == 2
    assert attrs["threads_per_rank"] == [1, 1] and attrs["config_toml"] == TINY_JOB
    assert len(attrs["cpu_affinity"]) == 2 and attrs["cpu_binding"] in (
        "bound", "already bound", "oversubscribed")
    if attrs["cpu_binding"] == "bound":  # disjoint shares of the cores
        assert attrs["cpu_affinity"][0] != attrs["cpu_affinity"][1]
    assert attrs["command_line"] == "hpcq run tiny.toml -o out.h5" and "end_time" in attrs
    means = read_cases(tmp_path / "out.h5", kind="collectives")
    assert [c["scheme"] for c in means[:2]] == ["allreduce-fp32", "allreduce-bf16"]
    assert means[0]["nmse"] < 1e-12 and 0 < means[1]["nmse"] < 1e-4
    assert all(c["consistent"] and c["total_s"].shape == (2, 3) for c in means)
    assert all(c["check"] == "pass" and c["case_key"] for c in means)
    assert len(read_cases(tmp_path / "out.h5", kind="kernels")) >= 1
    # the same output again: refused on rank 0, every rank exits 2 with one line
    again = mpirun(2, "run", "tiny.toml", "-o", "out.h5", expect=2)
    assert "--append" in _error_line(again.stderr)


@pytest.mark.mpi
def test_bad_job_on_two_ranks_one_line_no_hang(mpirun, tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(HEAD + "[collectives]\nwat = 1\n")
    done = mpirun(2, "run", "bad.toml", expect=2, timeout=60)
    assert "[collectives] unknown key 'wat'" in _error_line(done.stderr)


@pytest.mark.mpi
def test_failure_on_one_rank_aborts_all(mpirun, tmp_path: Path) -> None:
    mean_only = HEAD + '[collectives]\ncompressors = ["bf16"]\nsizes = "7"\n'
    (tmp_path / "tiny.toml").write_text(mean_only)
    done = mpirun(2, str(tmp_path / "tiny.toml"), payload="fail_on_one_rank.py", expect=None,
                  timeout=60)
    assert done.returncode != 0
    assert "[rank 1] hpcq: error: simulated failure on one rank" in done.stderr


def _processes_in(cwd: Path) -> list[int]:
    """Live processes working in ``cwd`` (Linux /proc): the ranks, whatever session they are in."""
    out = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if Path(os.readlink(proc / "cwd")) == cwd and \
                    (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                out.append(int(proc.name))
        except OSError:
            continue
    return out


@pytest.mark.mpi
@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs Linux /proc")
def test_ctrl_c_ends_every_rank(warm_cache: None, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the launcher's process group) mid-run: no rank is left, no traceback."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import find_mpiexec, mpi_env

    launcher = find_mpiexec()
    if launcher is None:
        pytest.skip("no MPI launcher")
    (tmp_path / "long.toml").write_text(HEAD + '[collectives]\ncompressors = ["fp32"]\n'
                                        'schemes = ["allreduce-fp32"]\nsizes = "12"\n'
                                        "iterations = 10000000\n")
    err = tmp_path / "stderr.txt"
    with err.open("w") as sink:
        proc = subprocess.Popen([launcher, "-n", "2", sys.executable, "-m", "hpcq", "run",
                                 "long.toml"], cwd=tmp_path, env=mpi_env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=sink, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "kernels ready" not in err.read_text() and proc.poll() is None:
            assert time.monotonic() < deadline, err.read_text()
            time.sleep(0.2)
        time.sleep(1)  # well inside the benchmark's loop of Allreduce calls
        assert proc.poll() is None, err.read_text()
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        code = proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _processes_in(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _processes_in(tmp_path)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in _processes_in(tmp_path):
            os.kill(pid, signal.SIGKILL)
    text = err.read_text()
    assert code != 0 and not left, f"exit {code}, ranks left: {left}\n{text}"
    assert "Traceback" not in text, text


def test_merge_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fixture = REPO / "tests" / "fixtures" / "results-1.1.0.h5"
    out = tmp_path / "all.h5"
    assert main(["merge", str(fixture), str(fixture), "-o", str(out)]) == 0
    assert "16 case(s) from 2 file(s), 16 duplicate(s) left out" in capsys.readouterr().out
    assert len(read_cases(out)) == 16
    assert main(["merge", str(tmp_path / "nope.h5"), "-o", str(tmp_path / "x.h5")]) == 2
    assert "nope.h5" in _error_line(capsys.readouterr().err)
