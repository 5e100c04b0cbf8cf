"""The paper jobs of ``jobs/papers/`` at their small size, on 2 ranks, with their figure scripts.

Each job must finish, its script must draw its figures from the file, and the headline of
each paper that the small size can show must hold (the README states the same findings).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hpcq.store import read_cases

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.mpi


def _run(mpirun, tmp_path: Path, name: str) -> list[dict]:
    out = tmp_path / f"{name}.h5"
    mpirun(2, "run", str(REPO / "jobs" / "papers" / f"{name}.toml"), "-o", str(out),
           timeout=600)
    from importlib import import_module

    script = import_module(f"hpcq.analysis.scripts.paper_{name}")
    assert script.main([str(out), "-o", str(tmp_path / "fig")]) == 0
    figures = sorted(p.name for p in (tmp_path / "fig").glob(f"paper_{name}*"))
    assert any(f.endswith(".png") for f in figures) and any(f.endswith(".pdf") for f in figures)
    return read_cases(out)


def _rates(cases: list[dict], problem_prefix: str) -> dict[str, float]:
    return {c["label"]: c.get("rate", math.nan) for c in cases
            if c["kind"] == "train" and c["problem"].startswith(problem_prefix)}


def test_dqgd_job(mpirun, tmp_path: Path) -> None:
    cases = _run(mpirun, tmp_path, "dqgd")
    rates = _rates(cases, "lstsq:matrix=spectrum,m=256,n=64,L=1.0,kappa=10.0")
    gd = rates["gd fp32"]
    # above the threshold log2(8 / 0.818) = 3.3 bits: no loss against GD (papers.md T4)
    for r in (6, 7, 8):
        assert rates[f"dqgd:bits={r}"] - gd <= 0.02, r
    # naive quantized GD at the same bits is far slower, and below the threshold DQ-GD's
    # predetermined range cannot hold: the run diverges and says so
    assert rates["naive-qgd:bits=6"] > rates["dqgd:bits=6"] + 0.05
    assert rates["dqgd:bits=1"] == math.inf
    heavy = [c for c in cases if c["kind"] == "train" and "heavy" in c["problem"]]
    assert len({c["seed"] for c in heavy}) == 5


def test_vqsgd_job(mpirun, tmp_path: Path) -> None:
    cases = _run(mpirun, tmp_path, "vqsgd")
    coll = [c for c in cases if c["kind"] == "collectives"]
    assert coll and all(c["check"] == "pass" for c in coll)
    for c in coll:
        if c["spec"].startswith("vqsgd"):  # the measured error is the theory's, within 10%
            assert 0.9 <= c["nmse"] / c["nmse_bound"] <= 1.1, c["spec"]
    train = {c["label"]: c for c in cases if c["kind"] == "train"}
    assert train["vqsgd:reps=256"]["final_loss"] < train["vqsgd:reps=1"]["final_loss"]


def test_khirirat_job(mpirun, tmp_path: Path) -> None:
    cases = [c for c in _run(mpirun, tmp_path, "khirirat") if c["kind"] == "train"]
    lstsq = {(c["compressor"].split(":")[0], c["staleness"]): c["final_gap"] for c in cases
             if c["problem"].startswith("lstsq")}
    # staleness costs accuracy at a fixed iteration budget, for every compressor
    for comp in ("fp32", "randk", "qsgd", "terngrad"):
        assert lstsq[(comp, 0)] < lstsq[(comp, 1)] < lstsq[(comp, 4)], comp


def test_ecq_job(mpirun, tmp_path: Path) -> None:
    cases = [c for c in _run(mpirun, tmp_path, "ecq") if c["kind"] == "train"]
    syn512 = {c["label"]: c for c in cases if ",n=512," in c["problem"]}
    qsgd = syn512["gd qsgd:s=4,bucket=0"]["final_dist"]
    ecq = syn512["ecq-sgd:alpha=0.2,beta=0.9 qsgd:s=4,bucket=0"]["final_dist"]
    sgd = syn512["gd fp32"]["final_dist"]
    # ECQ-SGD ends much closer to 32-bit SGD than QSGD does, at QSGD's bits
    assert ecq < qsgd and ecq - sgd < 0.5 * (qsgd - sgd)
    # alpha = beta = 1 (classic error feedback) with l2 scaling and s = 4 diverges here
    assert syn512["ef-sgd qsgd:s=4,bucket=0"]["diverged"]
