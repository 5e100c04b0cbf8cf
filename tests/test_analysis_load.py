"""Loading many result files into one tidy table (hpcq.analysis.load)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from hpcq.analysis.load import Table, expand_paths, load, summarize
from hpcq.store import read_cases

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A directory of result files: both schema versions, a truncated file, a stray file."""
    shutil.copyfile(FIXTURES / "results-1.0.0.h5", tmp_path / "a-old.h5")
    shutil.copyfile(FIXTURES / "results-1.1.0.h5", tmp_path / "b-new.h5")
    data = (FIXTURES / "results-1.1.0.h5").read_bytes()
    (tmp_path / "c-truncated.h5").write_bytes(data[: len(data) // 3])
    (tmp_path / "notes.txt").write_text("not a result")
    return tmp_path


def test_directory_loads_every_good_file_and_names_the_bad_one(results: Path) -> None:
    table, problems = load(results, kind="collectives")
    assert len(problems) == 1 and problems[0].startswith(str(results / "c-truncated.h5"))
    assert "\n" not in problems[0]
    old = read_cases(results / "a-old.h5", kind="collectives")
    new = read_cases(results / "b-new.h5", kind="collectives")
    assert len(table) == len(old) + len(new) == 3 + 10
    assert set(table["file_format"]) == {"1.0.0", "1.1.0"}
    assert set(table["scheme"]) == {"allreduce-fp32", "allgather", "two-phase"}


def test_columns_hold_the_data(results: Path) -> None:
    table, _ = load(results / "b-new.h5", kind="collectives")
    cases = read_cases(results / "b-new.h5", kind="collectives")
    for i, case in enumerate(cases):
        slowest = case["total_s"].max(axis=0)
        assert table["total_s.median"][i] == pytest.approx(np.median(slowest))
        assert table["total_s.p95"][i] == pytest.approx(np.percentile(slowest, 95))
        assert table["bytes_sent.mean"][i] == pytest.approx(case["bytes_sent"].mean())
        assert table["nmse"][i] == case["nmse"] and table["label"][i] == case["label"]
    assert table["nhosts"][0] == 1 and table["nprocs_file"][0] == 2
    assert table["hpcq_version"][0] and table["mpi_library"][0]
    assert table["d"].dtype == np.int64 and table["nmse"].dtype == np.float64


def test_where_and_summarize(results: Path) -> None:
    table, _ = load(results / "b-new.h5", kind="collectives")
    ag = table.where(scheme="allgather", spec=lambda s: s.startswith("qsgd"))
    assert len(ag) == 2 and set(ag["sweep.job.seed"]) == {0, 1}
    combined = summarize(table, ["scheme", "spec"], "latency_p50_s")
    assert len(combined) == 5 and set(combined["runs"]) == {2}  # two seeds each
    i = list(combined["spec"]).index(ag["spec"][0])
    vals = sorted(ag["latency_p50_s"])
    assert combined["latency_p50_s.min"][i] == vals[0]
    assert combined["latency_p50_s.max"][i] == vals[1]
    with pytest.raises(KeyError, match="no column 'nosuch'"):
        table.where(nosuch=1)


def test_globs_paths_and_nothing(results: Path) -> None:
    assert expand_paths([str(results / "*.h5"), results / "a-old.h5"]) == sorted(
        results.glob("*.h5"))
    table, problems = load(str(results / "nothing-*.h5"))
    assert len(table) == 0 and "no result files" in problems[0]
    table, problems = load(results / "notes.txt")
    assert len(table) == 0 and "notes.txt" in problems[0]


def test_to_pandas_or_a_clear_error(results: Path) -> None:
    table, _ = load(results / "b-new.h5")
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs pandas"):
            table.to_pandas()
        return
    df = table.to_pandas()
    assert len(df) == len(table) and "label" in df.columns


def test_table_rejects_ragged_columns() -> None:
    with pytest.raises(ValueError, match="different lengths"):
        Table({"a": np.zeros(2), "b": np.zeros(3)})


def test_a_file_from_a_newer_hpcq_is_named_and_skipped(results: Path) -> None:
    import h5py

    newer = results / "d-newer.h5"
    shutil.copyfile(FIXTURES / "results-1.1.0.h5", newer)
    with h5py.File(newer, "a") as f:
        f.attrs["hpcq_format"] = "9.0.0"
    table, problems = load([results / "b-new.h5", newer])
    assert len(table) == len(read_cases(results / "b-new.h5"))
    assert len(problems) == 1 and str(newer) in problems[0] and "9.0.0" in problems[0]
