"""A job larger than [job] max_cases is refused at validation, with the count, quickly."""

from __future__ import annotations

import time

import pytest

from hpcq.config import JobError, parse_job
from hpcq.runner import expand_job

HEAD = 'format = "hpcq-job"\nversion = 1\n'
COLL = '[collectives]\ncompressors = ["sign", "fp16"]\nschemes = ["allgather"]\nsizes = "6,7"\n'


def test_huge_sweep_refused_before_any_case() -> None:
    values = ", ".join(str(i) for i in range(1, 1001))
    text = (HEAD + COLL + f'[sweep]\n"job.seed" = [{values}]\n'
            f'"collectives.iterations" = [{values}]\n')
    start = time.perf_counter()
    with pytest.raises(JobError, match=r"1000000 sweep points, above \[job\] max_cases = 100000"):
        expand_job(parse_job(text, "big.toml"))
    assert time.perf_counter() - start < 5.0


def test_case_limit_counts_cases_and_is_adjustable() -> None:
    job = parse_job(HEAD + COLL, "j.toml", overrides=["job.max_cases=3"])
    with pytest.raises(JobError, match=r"j.toml: the job makes at least 4 cases, above \[job\] "
                                       r"max_cases = 3.*--set job.max_cases=4"):
        expand_job(job)
    cases, _ = expand_job(parse_job(HEAD + COLL, "j.toml", overrides=["job.max_cases=4"]))
    assert len(cases) == 4
