"""The ``hpcq`` command: listings, one-line errors with exit codes, jobs on 1 and 2 ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcq.cli import main
from hpcq.compressors import REGISTRY
from hpcq.runner import JobError, load_job, parse_job
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

[mean]
compressors = ["bf16", "qsgd:bits=4", "hadamard+sign:scale=drive"]
d = 1000
iterations = 3
warmup = 1
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


@pytest.mark.parametrize(("text", "needles"), [
    ("nonsense = [", ["invalid TOML"]),
    ('format = "x"\nversion = 1\n[mean]\n', ["format = 'hpcq-job'"]),
    ('format = "hpcq-job"\nversion = 1\n[meen]\n', ["'meen'", "[mean]", "[kernels]"]),
    ('format = "hpcq-job"\nversion = 1\n[job]\nname = "a"\n', ["nothing to run"]),
    ('format = "hpcq-job"\nversion = 1\n[mean]\niters = 3\n',
     ["[mean]", "'iters'", "iterations (default 20)", "d (default 131072)"]),
    ('format = "hpcq-job"\nversion = 1\n[mean]\nd = "big"\n', ["[mean] d = 'big' must be int"]),
    ('format = "hpcq-job"\nversion = 1\n[mean]\nd = true\n', ["[mean] d = True must be int"]),
    ('format = "hpcq-job"\nversion = 1\n[mean]\niterations = 0\n', ["iterations = 0", ">= 1"]),
    ('format = "hpcq-job"\nversion = 1\n[mean]\ncompressors = "sign"\n',
     ["[mean] compressors", "list of strings"]),
    ('format = "hpcq-job"\nversion = 1\n[kernels]\ncompressors = ["nosuch"]\n',
     ["[kernels] compressors", "nosuch", "valid:"]),
    ('format = "hpcq-job"\nversion = 1\n[kernels]\nsizes = "1:x"\ncompressors = []\n',
     ["[kernels] sizes"]),
])
def test_bad_job_file_names_table_and_key(tmp_path: Path, text: str, needles: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(JobError) as info:
        load_job(str(path))
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message.strip()
    for needle in needles:
        assert needle in message, message


def test_bad_job_exit_code_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('format = "hpcq-job"\nversion = 1\n[mean]\nwat = 1\n')
    assert main(["run", str(path)]) == 2
    assert _error_line(capsys.readouterr().err).startswith(f"hpcq: error: {path}: [mean]")
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "missing.toml" in _error_line(capsys.readouterr().err)


def test_shipped_jobs_parse() -> None:
    job, _ = load_job(None)
    assert job.mean is not None and job.kernels is not None and job.job.name == "default"
    for path in sorted((REPO / "jobs").glob("*.toml")):
        parse_job(path.read_text(), str(path))


def test_dry_run_lists_cases(hpcq_cli, tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY_JOB)
    lines = hpcq_cli("run", "tiny.toml", "--dry-run").stdout.splitlines()
    assert lines[:3] == ["kernels memcpy d=2^8", "kernels fwht d=2^8", "kernels fp16 d=2^8"]
    assert "mean allreduce-fp32 d=1000" in lines and "mean bf16 d=1000" in lines
    assert not list(tmp_path.glob("*.h5"))


def test_warmup(hpcq_cli) -> None:
    assert "compressors ready" in hpcq_cli("warmup", "--compressors", "fp16", "bf16").stdout


@pytest.mark.mpi
def test_job_on_two_ranks(mpirun, tmp_path: Path) -> None:
    (tmp_path / "tiny.toml").write_text(TINY_JOB)
    done = mpirun(2, "run", "tiny.toml", "-o", "out.h5")
    assert "allreduce-fp32" in done.stdout and "memcpy" in done.stdout
    assert "case 1/" in done.stderr and "eta" in done.stderr
    attrs = read_attrs(tmp_path / "out.h5")
    assert attrs["nprocs"] == 2 and len(attrs["hostnames"]) == 2
    assert attrs["threads_per_rank"] == [1, 1] and attrs["config_toml"] == TINY_JOB
    assert attrs["command_line"] == "hpcq run tiny.toml -o out.h5" and "end_time" in attrs
    means = read_cases(tmp_path / "out.h5", kind="mean")
    assert means[0]["spec"] == "allreduce-fp32" and means[0]["nmse"] < 1e-12
    assert all(c["consistent"] and c["total_s"].shape == (2, 3) for c in means)
    assert means[1]["spec_given"] == "bf16" and 0 < means[1]["nmse"] < 1e-4
    assert len(read_cases(tmp_path / "out.h5", kind="kernels")) >= 1
    # the same output again: refused on rank 0, every rank exits 2 with one line
    again = mpirun(2, "run", "tiny.toml", "-o", "out.h5", expect=2)
    assert "--append" in _error_line(again.stderr)


@pytest.mark.mpi
def test_bad_job_on_two_ranks_one_line_no_hang(mpirun, tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('format = "hpcq-job"\nversion = 1\n[mean]\nwat = 1\n')
    done = mpirun(2, "run", "bad.toml", expect=2, timeout=60)
    assert "[mean] unknown key 'wat'" in _error_line(done.stderr)


@pytest.mark.mpi
def test_failure_on_one_rank_aborts_all(mpirun, tmp_path: Path) -> None:
    mean_only = 'format = "hpcq-job"\nversion = 1\n[mean]\ncompressors = ["bf16"]\nd = 100\n'
    (tmp_path / "tiny.toml").write_text(mean_only)
    done = mpirun(2, str(tmp_path / "tiny.toml"), payload="fail_on_one_rank.py", expect=None,
                  timeout=60)
    assert done.returncode != 0
    assert "[rank 1] hpcq: error: simulated failure on one rank" in done.stderr
