"""--resume refuses a file written by another job text or rank count unless --allow-mixed."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpcq.store import ResultFile, check_resume, read_cases

JOB = 'format = "hpcq-job"\nversion = 1\n[collectives]\ncompressors = ["sign"]\n' \
      'schemes = ["allgather"]\nsizes = "{}"\niterations = 5\nwarmup = 1\n'


def test_check_resume_names_what_differs(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    ResultFile(path, {"software": "hpcq", "nprocs": 2, "config_toml": "a"}).close()
    check_resume(path, "a", 2)
    with pytest.raises(ValueError, match=r"written on 2 rank\(s\) \(run 0\), this run has 4"):
        check_resume(path, "a", 4)
    with pytest.raises(ValueError, match="another job file .*--allow-mixed"):
        check_resume(path, "b", 2)


def test_resume_with_another_job_is_refused(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from hpcq.cli import main

    first, second, out = tmp_path / "a.toml", tmp_path / "b.toml", tmp_path / "r.h5"
    first.write_text(JOB.format("6"))
    second.write_text(JOB.format("7"))
    assert main(["run", str(first), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["run", str(second), "-o", str(out), "--resume"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1 and "another job file" in err[0] and str(out) in err[0]
    assert len(read_cases(out)) == 1
    assert main(["run", str(second), "-o", str(out), "--resume", "--allow-mixed"]) == 0
    assert len(read_cases(out)) == 2


def test_merge_keeps_a_case_measured_at_another_rank_count(tmp_path: Path) -> None:
    from hpcq.store import merge

    files = []
    for nprocs in (2, 4, 4):
        path = tmp_path / f"r{len(files)}.h5"
        with ResultFile(path, {"software": "hpcq", "nprocs": nprocs}) as f:
            f.write_case("collectives", "same case", {}, {}, key='{"d":8}')
        files.append(path)
    counts = merge(files, tmp_path / "all.h5", {"software": "hpcq"})
    assert counts == {"inputs": 3, "cases": 2, "duplicates": 1}
    assert len(read_cases(tmp_path / "all.h5")) == 2
