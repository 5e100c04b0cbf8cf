"""``[train]`` tables: validation, expansion, and runs on 2 MPI ranks against the serial loop."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from hpcq.config import JobError, parse_job
from hpcq.problems import problem
from hpcq.runner import expand_job
from hpcq.store import read_cases

HEAD = 'format = "hpcq-job"\nversion = 1\n'


def _job(body: str):
    return parse_job(HEAD + body, "t.toml")


def test_expansion_crosses_methods_compressors_bits_and_seeds() -> None:
    job = _job('[train]\nproblems = ["lstsq:m=64,n=8,kappa=4"]\n'
               'methods = ["gd", "dqgd", "dqgd:bits=3", "vqsgd"]\n'
               'compressors = ["fp32", "qsgd:bits=4"]\nbits = [1, 2.5]\nseeds = [0, 1]\n')
    cases, _ = expand_job(job)
    labels = [c.label for c in cases]
    # per seed: gd x 2 compressors, dqgd x 2 bits, dqgd:bits=3 once, vqsgd once
    assert len(cases) == 2 * (2 + 2 + 1 + 1)
    assert "dqgd:bits=2.5" in labels  # labels as the job wrote them, keys canonical
    assert "dqgd:bits=2.5,range=predetermined,D=0.0,momentum=-1.0" in {c.bench.method
                                                                    for c in cases}
    assert len({c.key for c in cases}) == len(cases)
    assert {c.bench.seed for c in cases} == {0, 1}


@pytest.mark.parametrize("body,match", [
    ("[train]\nstep = -0.1\n", r"\[train\] step = -0.1 must be >= 0"),
    ("[train]\nbits = [0]\nmethods = [\"dqgd\"]\n", "bits: 0 must be > 0"),
    ("[train]\nbits = [\"four\"]\n", "must be a list of numbers"),
    ("[train]\nproblems = [\"lstsq:m=8,n=16\"]\n", r"\[train\] problems: .*n"),
    ("[train]\nproblems = [\"lstsq:data=/no/such/file.svm\"]\n", "no such file"),
    ("[train]\nmethods = [\"dqgd:bits=0\"]\n", r"methods: method dqgd: bits=0.0 must be > 0"),
    ("[train]\nmethods = [\"gd\"]\ncompressors = [\"qsgd:bits=99\"]\n", "compressors"),
    ("[train]\nscheme = \"butterfly\"\n", "unknown scheme"),
    ("[train]\nmethods = [\"dqgd\"]\nbatch = 4\n", "batch"),
    ("[train]\nproblems = [\"mlp:hidden=4\"]\nmethods = [\"gd\"]\n", "step"),
])
def test_bad_train_tables_name_the_key(body: str, match: str) -> None:
    with pytest.raises(JobError, match=match):
        expand_job(_job(body))


JOB = HEAD + """
[job]
name = "t"
seed = 3

[[train]]
problems = ["lstsq:m=200,n=24,kappa=10"]
methods = ["gd", "ecq-sgd:alpha=0.5,beta=0.9", "dqgd:bits=6", "hb"]
compressors = ["fp32"]
iterations = 30

[[train]]
problems = ["lstsq:m=200,n=24,kappa=10"]
methods = ["gd"]
compressors = ["qsgd:bits=4", "topk:ratio=0.25"]
scheme = "two-phase"
iterations = 10

[[train]]
problems = ["lstsq:m=200,n=24,kappa=10"]
methods = ["gd"]
compressors = ["qsgd:bits=4"]
staleness = 1
iterations = 10
"""


def _gd(prob, eta: float, steps: int) -> np.ndarray:
    x = prob.x0().copy()
    for _ in range(steps):
        x = x - eta * prob.grad(x)
    return x


@pytest.mark.mpi
def test_train_job_on_two_ranks(mpirun, tmp_path: Path) -> None:
    (tmp_path / "job.toml").write_text(JOB)
    done = mpirun(2, "run", "job.toml", "-o", "out.h5", timeout=240)
    assert "# hpcq train: 2 rank(s)" in done.stdout
    cases = {c["label"]: c for c in read_cases(tmp_path / "out.h5", kind="train")}
    assert len(cases) == 7
    serial = problem("lstsq:m=200,n=24,kappa=10", seed=3)
    for label in ("gd fp32", "ecq-sgd:alpha=0.5,beta=0.9 fp32"):
        c = cases[label]
        assert c["nprocs"] == 2 and c["t_iter"].shape == (2, 30)
        ref = _gd(serial, c["step_size"], 30)
        assert np.linalg.norm(c["x_final"] - ref) <= 1e-5 * np.linalg.norm(ref), label
        # every iteration's bytes are the fp32 message (24 * 4 + the 60-byte header)
        assert np.all(c["bytes_sent"] == 24 * 4 + 60)
    dq = next(c for k, c in cases.items() if k.startswith("dqgd"))
    assert dq["info.clipped_steps"] == 0
    assert math.isclose(dq["rate"], cases["gd fp32"]["rate"], abs_tol=0.02)
    # the link's message: rank 0 sends it, rank 1 receives it
    assert np.all(dq["bytes_sent"][1] == 0) and np.all(dq["bytes_recv"][0] == 0)
    assert np.all(dq["bytes_sent"][0] == dq["bytes_recv"][1])
    assert np.all(dq["payload_bits"][0] == 24 * 6)
    hb = next(c for k, c in cases.items() if k.startswith("hb"))
    assert hb["rate"] < cases["gd fp32"]["rate"]
    stale = next(c for k, c in cases.items() if "tau=1" in k)
    assert stale["staleness"] == 1 and stale["step_rule"] == "1/(L(alpha+tau))"
    for c in cases.values():
        assert np.all(np.isfinite(c["loss"])), c["label"]
        assert c["loss"][-1] < c["loss"][0], c["label"]


def test_the_documented_example_job_is_valid() -> None:
    """The complete example of docs/jobs.md parses and expands (it is what users copy)."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "jobs.md").read_text()
    example = text.split("```toml\n", 1)[1].split("```", 1)[0]
    cases, notes = expand_job(parse_job(example, "docs/jobs.md"))
    kinds = {c.kind for c in cases}
    assert {"train", "collectives"} <= kinds and not notes
