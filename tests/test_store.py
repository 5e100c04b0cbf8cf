"""The HDF5 result store: round trips, refusal to overwrite, crash safety, schema checks."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpcq.store import SCHEMA_VERSION, ResultFile, read_attrs, read_cases, read_runs

PROV = {"software": "hpcq", "softwareVersion": "0.0.test", "date": "2025-01-01T00:00:00+00:00",
        "nprocs": 2, "hostnames": ["a", "b"], "threads_per_rank": [1, 1], "git_dirty": False,
        "config_toml": 'format = "hpcq-job"\n', "slurm_job_id": None}


def _write(path: Path, **kw: object) -> ResultFile:
    store = ResultFile(path, PROV, **kw)  # type: ignore[arg-type]
    store.write_case("mean", "first", {"d": 8, "nmse": 0.5, "spec": "qsgd:bits=4",
                                        "compressor": {"params": {"bits": 4}}, "ok": True},
                     {"total_s": (np.arange(6.0).reshape(2, 3), "s"),
                      "bytes_sent": (np.array([10, 12]), "bytes"), "first_s": (0.25, "s")})
    store.write_case("kernels", "second", {"d": 16}, {"big": (np.ones(1 << 17), "1")})
    return store


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    _write(path).close()
    attrs = read_attrs(path)
    assert attrs["hpcq_format"] == SCHEMA_VERSION
    assert attrs["hostnames"] == ["a", "b"] and attrs["threads_per_rank"] == [1, 1]
    assert attrs["config_toml"] == PROV["config_toml"] and attrs["git_dirty"] is False
    assert "slurm_job_id" not in attrs and "end_time" in attrs
    first, second = read_cases(path)
    assert first["group"] == "case00000" and first["kind"] == "mean" and first["complete"]
    assert first["label"] == "first" and first["d"] == 8 and first["nmse"] == 0.5
    assert first["compressor.params.bits"] == 4 and first["ok"] is True
    np.testing.assert_array_equal(first["total_s"], np.arange(6.0).reshape(2, 3))
    assert first["first_s"] == 0.25 and isinstance(first["first_s"], float)
    assert first["units"] == {"total_s": "s", "bytes_sent": "bytes", "first_s": "s"}
    assert second["big"].shape == (1 << 17,)
    assert [c["label"] for c in read_cases(path, kind="kernels")] == ["second"]
    with h5py.File(path) as f:  # large datasets are stored compressed
        assert f["cases/case00001/big"].compression == "gzip"


def test_refuses_to_overwrite_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    _write(path).close()
    with pytest.raises(FileExistsError, match=r"r\.h5.*--append"):
        ResultFile(path, PROV)
    _write(path, append=True).close()
    cases = read_cases(path)
    assert [c["group"] for c in cases] == [f"case{i:05d}" for i in range(4)]
    assert [c["run"] for c in cases] == [0, 0, 1, 1]
    assert len(read_runs(path)) == 2 and all("end_time" in r for r in read_runs(path))


def test_killed_run_keeps_completed_cases(tmp_path: Path) -> None:
    path = tmp_path / "crash.h5"
    script = f"""
import os, signal, sys
import numpy as np
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_store import _write
store = _write(__import__("pathlib").Path({str(path)!r}))
# die in the middle of a third case: after its data, before it is marked complete
import hpcq.store as s
real = s._write_attrs
def dying(obj, attrs):
    real(obj, attrs)
    if "finished" in attrs:
        os.kill(os.getpid(), signal.SIGKILL)
s._write_attrs = dying
store.write_case("mean", "third", {{}}, {{"x": (np.zeros(3), "s")}})
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert [c["label"] for c in read_cases(path)] == ["first", "second"]
    partial = read_cases(path, include_incomplete=True)
    assert [c["complete"] for c in partial] in ([True, True], [True, True, False])
    # a later --append continues after everything there, partial groups included
    store = ResultFile(path, PROV, append=True)
    name = store.write_case("mean", "fourth", {}, {})
    assert name == f"case{len(partial):05d}"


def test_rejects_foreign_and_newer_files(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(ValueError, match="foreign.h5.*not an hpcq result file"):
        read_cases(foreign)
    with pytest.raises(ValueError, match="not an hpcq result file"):
        ResultFile(foreign, PROV, append=True)
    text = tmp_path / "text.h5"
    text.write_text("hello")
    with pytest.raises(ValueError, match="text.h5.*not a readable HDF5 file"):
        read_cases(text)
    newer = tmp_path / "newer.h5"
    _write(newer).close()
    with h5py.File(newer, "a") as f:
        f.attrs["hpcq_format"] = "2.0.0"
    with pytest.raises(ValueError, match="newer.h5.*schema 2.0.0, newer"):
        read_cases(newer)
