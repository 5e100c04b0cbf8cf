"""hpcq submit: the sbatch script (golden files), validation, a fake sbatch, array shards."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hpcq.cli import main
from hpcq.launch import Resources, render_sbatch, submit

GOLDEN = Path(__file__).resolve().parent / "golden"
REPO = Path(__file__).resolve().parent.parent


def test_golden_scripts() -> None:
    """The rendered scripts equal the reviewed ones (regenerate them on purpose only)."""
    basic = render_sbatch("/home/me/jobs/sweep.toml", "sweep", Resources(),
                          output_dir="/scratch/me/results")
    assert basic == (GOLDEN / "basic.sbatch").read_text()
    array = render_sbatch(
        "/home/me/jobs/my sweep.toml", "sweep-2",
        Resources(nodes=4, ntasks_per_node=8, cpus_per_task=2, time="1-00:00:00",
                  partition="compute", account="proj42", qos="normal", mem="64G",
                  constraint="ib", array=16,
                  setup=("module load openmpi/4.1", "source $HOME/venvs/hpcq/bin/activate")),
        output_dir="/scratch/me/results", overrides=('collectives.sizes="20"',))
    assert array == (GOLDEN / "array.sbatch").read_text()
    assert "'/home/me/jobs/my sweep.toml'" in array  # a path with a space stays one word
    assert '--shard "${SLURM_ARRAY_TASK_ID}/16"' in array and "#SBATCH --array=0-15" in array


@pytest.mark.parametrize(("name", "res", "needle"), [
    ("x; rm -rf ~", Resources(), "job name"),
    ("ok", Resources(partition="debug\n#SBATCH --uid=0"), "--partition"),
    ("ok", Resources(time="soon"), "--time"),
    ("ok", Resources(mem="lots"), "--mem"),
    ("ok", Resources(nodes=0), "--nodes"),
    ("ok", Resources(setup=("echo hi\nrm -rf /",)), "--setup"),
])
def test_nothing_unvalidated_reaches_the_script(name: str, res: Resources, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        render_sbatch("/j.toml", name, res)


@pytest.fixture
def fake_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ``sbatch`` on PATH that records its arguments and prints a job id (or fails)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "sbatch"
    script.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/args"\n'
                      'if [ -n "$FAKE_SBATCH_FAIL" ]; then echo "sbatch: error: $FAKE_SBATCH_FAIL" '
                      '>&2; exit 1; fi\necho "4242;cluster"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_submit_with_a_fake_sbatch(fake_sbatch: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    job = REPO / "jobs" / "quickstart.toml"
    assert main(["submit", str(job), "--array", "2", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "as job 4242" in out
    written = tmp_path / "hpcq-quickstart.sbatch"
    assert "#SBATCH --array=0-1" in written.read_text()
    assert (fake_sbatch / "args").read_text().split() == ["--parsable", str(written)]
    monkeypatch.setenv("FAKE_SBATCH_FAIL", "Invalid partition name specified")
    with pytest.raises(RuntimeError, match="sbatch refused .*Invalid partition name"):
        submit(written)
    assert main(["submit", str(job), "--output-dir", str(tmp_path)]) == 1
    assert "Invalid partition name" in capsys.readouterr().err


def test_submit_dry_run_and_bad_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = REPO / "jobs" / "quickstart.toml"
    assert main(["submit", str(job), "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("#!/bin/bash")
    bad = tmp_path / "bad.toml"
    bad.write_text('format = "hpcq-job"\nversion = 1\n[collectives]\nwat = 1\n')
    assert main(["submit", str(bad), "--dry-run"]) == 2
    assert "[collectives] unknown key 'wat'" in capsys.readouterr().err
    assert main(["submit", str(job), "--time", "forever", "--dry-run"]) == 2


def test_shards_split_the_cases(capsys: pytest.CaptureFixture[str]) -> None:
    job = str(REPO / "jobs" / "quickstart.toml")
    assert main(["run", job, "--dry-run"]) == 0
    every = [ln for ln in capsys.readouterr().out.splitlines() if not ln.startswith("#")]
    parts = []
    for k in range(3):
        assert main(["run", job, "--dry-run", "--shard", f"{k}/3"]) == 0
        parts += [ln.split(None, 1)[1] for ln in capsys.readouterr().out.splitlines()
                  if not ln.startswith("#")]
    assert sorted(parts) == sorted(ln.split(None, 1)[1] for ln in every)
    assert main(["run", job, "--dry-run", "--shard", "3/3"]) == 2
    assert "--shard '3/3'" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((REPO / "tests" / "golden").glob("*.sbatch"))
                         + sorted((REPO / "jobs" / "slurm").glob("*.sbatch")))
def test_scripts_are_valid_bash(path: Path) -> None:
    import subprocess

    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_setup_from_the_job_file_comes_first(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "j.toml"
    job.write_text('format = "hpcq-job"\nversion = 1\n[job]\nname = "j"\n'
                   'setup = ["module load mpi"]\n[collectives]\n')
    assert main(["submit", str(job), "--setup", "source venv/bin/activate", "--dry-run"]) == 0
    script = capsys.readouterr().out
    assert script.index("module load mpi") < script.index("source venv/bin/activate")
    job.write_text('format = "hpcq-job"\nversion = 1\n[job]\nsetup = ["a\\nb"]\n'
                   '[collectives]\n')
    assert main(["submit", str(job), "--dry-run"]) == 2
    assert "one non-empty line" in capsys.readouterr().err
