"""The compressed mean over MPI ranks equals the serial computation (tests/mpi/mean_check.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hpcq.bench import resolve_compressors
from hpcq.collectives import allgather_mean, allreduce_mean
from hpcq.compressors import REGISTRY

SPECS = ("fp32", "fp16", "bf16", "qsgd:bits=4", "uniform:bits=2", "sign", "hadamard+qsgd:bits=2",
         "terngrad", "topk:ratio=0.05", "randk:ratio=0.05", "vqsgd:reps=4",
         "fixedrange:bits=3,range=4")


def _check(report: dict, nprocs: int, d: int, specs: tuple[str, ...]) -> None:
    assert report["nprocs"] == nprocs and report["d"] == d
    results = report["results"]
    expected = {label for label, _ in resolve_compressors(specs, skip_unavailable=True)[0]}
    assert expected | {"test-nonzeros", "allreduce-fp32"} <= set(results)
    assert results["test-nonzeros"]["variable"]  # the Allgatherv path ran
    for label, r in results.items():
        assert r["equal"], f"{label}: MPI mean differs from the serial one: {r}"
        assert r["same_on_all_ranks"], label


@pytest.mark.mpi
def test_mean_two_ranks(mpirun, tmp_path: Path) -> None:
    mpirun(2, "1000", str(tmp_path / "r.json"), *SPECS, payload="mean_check.py")
    _check(json.loads((tmp_path / "r.json").read_text()), 2, 1000, SPECS)


@pytest.mark.mpi
def test_mean_three_ranks_d_not_divisible(mpirun, tmp_path: Path) -> None:
    # 3 ranks on 2 cores: MPICH busy-polls, so keep it to a few codecs
    specs = ("qsgd:bits=4", "hadamard+sign:scale=drive", "bf16")
    mpirun(3, "1001", str(tmp_path / "r.json"), *specs, payload="mean_check.py", timeout=180)
    _check(json.loads((tmp_path / "r.json").read_text()), 3, 1001, specs)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.split("+")[-1].split(":")[0] in REGISTRY])
def test_mean_at_size_one_is_the_codec(spec: str) -> None:
    from mpi4py import MPI

    comp = resolve_compressors([spec], skip_unavailable=False)[0][0][1]
    x = np.random.default_rng(1).standard_normal(777).astype(np.float32)
    mean, stats = allgather_mean(MPI.COMM_SELF, x, comp, seed=5, step=2)
    np.testing.assert_array_equal(mean, comp.decode(comp.encode(x, seed=5, step=2, rank=0)))
    assert stats["bytes_recv"] == 0 and stats["bytes_sent"] == len(comp.encode(x, seed=5, step=2))
    assert min(stats[k] for k in ("encode_s", "comm_s", "decode_s")) >= 0


def test_allreduce_at_size_one_is_identity() -> None:
    from mpi4py import MPI

    x = np.random.default_rng(2).standard_normal(100).astype(np.float32)
    mean, stats = allreduce_mean(MPI.COMM_SELF, x)
    np.testing.assert_array_equal(mean, x)
    assert stats["bytes_sent"] == 400 and mean is not x
