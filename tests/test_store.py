"""The HDF5 result store: round trips, refusal to overwrite, resume, crash safety, schemas."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

import hpcq.store as store_mod
from hpcq.store import (
    SCHEMA_VERSION,
    CaseRecord,
    ResultFile,
    completed_keys,
    read_attrs,
    read_cases,
    read_runs,
    schema_version,
)

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

#: Every attribute hpcq.provenance.collect writes (and the runner's `overrides`), by hand.
PROV = {
    "software": "hpcq",
    "softwareVersion": "0.0.test",
    "date": "2025-01-01T00:00:00+00:00",
    "start_time": "2025-01-01T00:00:00+00:00",
    "softwareDependencies": "numpy@2.0;numba@0.60;mpi4py@4.0;h5py@3.11;hdf5@1.14;python@3.11",
    "mpi_library": "MPICH Version: 4.2.0\nMPICH Device: ch4:ofi",
    "mpi_version": "4.0",
    "nprocs": 2,
    "hostnames": ["a", "b"],
    "cpu_model": "Test CPU @ 1 GHz",
    "threads_per_rank": [1, 1],
    "numba_threads_env": "",
    "command_line": "hpcq run job.toml -o 'out file.h5'",
    "config_toml": 'format = "hpcq-job"\nversion = 1\n',
    "slurm_job_id": None,
    "git_commit": "0123456789abcdef0123456789abcdef01234567",
    "git_dirty": False,
    "overrides": ["job.seed=4"],
}


def _write(path: Path, **kw: object) -> ResultFile:
    store = ResultFile(path, PROV, **kw)  # type: ignore[arg-type]
    params = {
        "d": 8,
        "nmse": 0.5,
        "spec": "qsgd:bits=4",
        "compressor": {"params": {"bits": 4, "norm": "l2"}, "unbiased": True},
        "ok": True,
        "nmse_bound": None,
    }
    data = {
        "total_s": (np.arange(6.0).reshape(2, 3), "s"),
        "bytes_sent": (np.array([10, 12]), "bytes"),
        "first_s": (0.25, "s"),
    }
    store.write_case("collectives", "first", params, data, key="k-first")
    store.write_case("kernels", "second", {"d": 16}, {"big": (np.ones(1 << 17), "1")})
    return store


def _temps(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".tmp-" in p.name)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_round_trip_of_root_attributes(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    _write(path).close()
    attrs = read_attrs(path)
    expected = {k: v for k, v in PROV.items() if v is not None}
    assert {k: attrs[k] for k in expected} == expected
    for key, value in expected.items():
        assert type(attrs[key]) is type(value), key
    assert attrs["hpcq_format"] == SCHEMA_VERSION == "1.3.0" == schema_version(path)
    assert "slurm_job_id" not in attrs
    assert set(attrs) == set(expected) | {"hpcq_format", "end_time"}
    (run,) = read_runs(path)
    assert {k: run[k] for k in expected} == expected
    assert run["resumed"] is False and run["end_time"] == attrs["end_time"]


def test_round_trip_of_cases(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    store = _write(path)
    data = {
        "f64": (np.linspace(0, 1, 12).reshape(3, 4), "s"),
        "f32": (np.arange(5, dtype=np.float32), "s"),
        "i64": (np.array([1, 2, 3], dtype=np.int64), "bytes"),
        "u8": (np.arange(7, dtype=np.uint8), "bytes"),
        "flags": (np.array([True, False]), "1"),
        "scalar_i": (7, "1"),
    }
    path.chmod(0o640)
    store.write_case("kernels.memcpy", "third", {"a": {"b": {"c": 1}}, "x": None}, data)
    store.close()
    assert path.stat().st_mode & 0o777 == 0o640  # the copy keeps the file's permissions
    first, second, third = read_cases(path)
    assert first["group"] == "case00000" and first["kind"] == "collectives" and first["complete"]
    assert first["label"] == "first" and first["d"] == 8 and first["nmse"] == 0.5
    assert first["compressor.params.bits"] == 4 and first["compressor.params.norm"] == "l2"
    assert first["compressor.unbiased"] is True and first["ok"] is True
    assert "nmse_bound" not in first  # None: not applicable, left out
    assert first["run"] == 0 and first["case_key"] == "k-first" and second["case_key"] is None
    assert first["hpcq_format"] == SCHEMA_VERSION and isinstance(first["finished"], str)
    np.testing.assert_array_equal(first["total_s"], np.arange(6.0).reshape(2, 3))
    assert first["first_s"] == 0.25 and isinstance(first["first_s"], float)
    assert first["units"] == {"total_s": "s", "bytes_sent": "bytes", "first_s": "s"}
    assert second["big"].shape == (1 << 17,)
    assert third["a.b.c"] == 1 and "x" not in third and "a" not in third
    for name, (values, unit) in data.items():
        got = np.asarray(third[name])
        np.testing.assert_array_equal(got, values)
        assert got.dtype == np.asarray(values).dtype, name
        assert third["units"][name] == unit
    assert third["scalar_i"] == 7 and isinstance(third["scalar_i"], int)
    assert [c["label"] for c in read_cases(path, kind="kernels")] == ["second"]
    with h5py.File(path) as f:  # large datasets are stored compressed, small ones contiguous
        assert f["cases/case00001/big"].compression == "gzip"
        assert f["cases/case00000/total_s"].compression is None


def test_refuses_to_overwrite_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    _write(path).close()
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match=r"r\.h5.*--append"):
        ResultFile(path, PROV)
    assert path.read_bytes() == before
    _write(path, append=True).close()
    cases = read_cases(path)
    assert [c["group"] for c in cases] == [f"case{i:05d}" for i in range(4)]
    assert [c["run"] for c in cases] == [0, 0, 1, 1]
    runs = read_runs(path)
    assert len(runs) == 2 and all("end_time" in r for r in runs)
    assert [r["resumed"] for r in runs] == [False, False]
    assert _temps(tmp_path) == []


def test_create_race_loses_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "r.h5"
    real = store_mod._publish_new

    def another_process_first(tmp: Path, target: Path) -> None:
        monkeypatch.setattr(store_mod, "_publish_new", real)
        _write(target).close()  # "another process" creates the file after our exists check
        real(tmp, target)

    monkeypatch.setattr(store_mod, "_publish_new", another_process_first)
    with pytest.raises(FileExistsError, match="created by another process"):
        ResultFile(path, PROV)
    assert [c["label"] for c in read_cases(path)] == ["first", "second"]
    assert _temps(tmp_path) == []


def test_create_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(*args: object) -> None:
        raise PermissionError("hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "r.h5"
    _write(path).close()
    assert len(read_cases(path)) == 2
    tmp = tmp_path / "other.h5"
    tmp.write_bytes(b"x")
    with pytest.raises(FileExistsError):
        store_mod._publish_new(tmp, path)
    assert len(read_cases(path)) == 2 and _temps(tmp_path) == []


def test_resume_and_completed_keys(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    assert completed_keys(path) == set()  # a missing file holds nothing
    with ResultFile(path, PROV, resume=True) as store:  # a missing file is created
        store.write_case("kernels", "a", {}, {}, key="k0")
        store.write_case("kernels", "b", {}, {}, key="k1")
        store.write_case("kernels", "no key", {}, {})
        assert store.completed_keys() == {"k0", "k1"}
    with ResultFile(path, PROV, resume=True, append=True) as store:
        assert store.run == 1 and store.completed_keys() == {"k0", "k1"}
        names = store.write_cases(
            [CaseRecord("collectives", "c", {}, {}, "k2"), CaseRecord("collectives", "d", {}, {})]
        )
        assert names == ["case00003", "case00004"]
    assert completed_keys(path) == {"k0", "k1", "k2"}
    assert [r["resumed"] for r in read_runs(path)] == [False, True]
    cases = read_cases(path)
    assert [c["case_key"] for c in cases] == ["k0", "k1", None, "k2", None]
    assert [c["run"] for c in cases] == [0, 0, 0, 1, 1]
    with pytest.raises(TypeError, match="case key"):
        ResultFile(path, PROV, append=True).write_case("kernels", "e", {}, {}, key=3)  # type: ignore[arg-type]


def test_failed_write_leaves_the_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.h5"
    store = _write(path)
    before = path.read_bytes()
    real = store_mod._write_attrs

    def dying(obj: h5py.Group, attrs: dict[str, object]) -> None:
        real(obj, attrs)
        if "finished" in attrs:
            raise RuntimeError("died in the middle of a case")

    monkeypatch.setattr(store_mod, "_write_attrs", dying)
    with pytest.raises(RuntimeError, match="middle of a case"):
        store.write_cases(
            [CaseRecord("kernels", "ok", {}, {}), CaseRecord("kernels", "lost", {}, {})]
        )
    monkeypatch.setattr(store_mod, "_write_attrs", real)

    def no_rename(self: Path, target: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(Path, "replace", no_rename)
    with pytest.raises(OSError, match="disk full"):
        store.write_case("kernels", "lost", {}, {"x": (np.zeros(3), "s")})
    monkeypatch.undo()
    assert path.read_bytes() == before  # not a byte changed, and nothing left beside it
    assert _temps(tmp_path) == []
    assert [c["label"] for c in read_cases(path)] == ["first", "second"]
    assert store.write_case("kernels", "third", {}, {}) == "case00002"  # the writer goes on
    store.close()
    assert [c["label"] for c in read_cases(path)] == ["first", "second", "third"]


def test_stale_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    _write(path).close()
    host, dead = socket.gethostname(), _dead_pid()
    # a kill between os.link and the unlink leaves a temp name that is the file itself
    os.link(path, tmp_path / f".r.h5.tmp-{host}-{dead}")
    (tmp_path / f".r.h5.tmp-{host}-{os.getpid()}").write_bytes(b"half a copy")
    keep = [f".r.h5.tmp-{host}-{os.getppid()}", ".r.h5.tmp-otherhost-1", ".x.h5.tmp-otherfile-2"]
    for name in keep:
        (tmp_path / name).write_bytes(b"not ours")
    store = ResultFile(path, PROV, append=True)  # removes ours and the dead one's only
    assert _temps(tmp_path) == sorted(keep)
    store.write_case("kernels", "third", {}, {})
    store.close()
    assert [c["label"] for c in read_cases(path)] == ["first", "second", "third"]


def test_refuses_a_file_changed_by_another_writer(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    first = _write(path)
    second = ResultFile(path, PROV, append=True)
    second.write_case("kernels", "by the second", {}, {})
    with pytest.raises(RuntimeError, match="changed by another process"):
        first.write_case("kernels", "by the first", {}, {})
    assert [c["label"] for c in read_cases(path)] == ["first", "second", "by the second"]


def test_killed_run_keeps_completed_cases(tmp_path: Path) -> None:
    path = tmp_path / "crash.h5"
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import numpy as np
import hpcq.store as s
from test_store import _write
store = _write(__import__("pathlib").Path({str(path)!r}))
# die in the middle of a third case: half of the new file written to its temporary copy
def dying(tmp, data, like):
    with tmp.open("xb") as fo:
        fo.write(data[: len(data) // 2])
    os.kill(os.getpid(), signal.SIGKILL)
s._write_new = dying
store.write_case("collectives", "third", {{}}, {{"x": (np.zeros(3), "s")}})
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert len(_temps(tmp_path)) == 1  # the half-written copy; the file itself is untouched
    partial = read_cases(path, include_incomplete=True)
    assert [(c["label"], c["complete"]) for c in partial] == [("first", True), ("second", True)]
    store = ResultFile(path, PROV, append=True)
    assert _temps(tmp_path) == []  # the dead writer's copy is gone
    assert store.write_case("collectives", "fourth", {}, {}) == "case00002"


#: Forks writers that resume the file and write cases until SIGKILLed at a random moment;
#: after each kill, snapshots the file for the test to check.
KILL_WORKER = r"""
import os, random, shutil, signal, sys, time
from pathlib import Path
import numpy as np
from hpcq.store import ResultFile

path, snaps, kills = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
random.seed(int(sys.argv[4]))
mid = 0
# at least `kills` kills, and on until two of them have hit a commit in progress (a busy
# machine delays the writer, so a fixed count can miss every commit): at most 3 x kills
for i in range(3 * kills):
    pid = os.fork()
    if pid == 0:
        try:
            store = ResultFile(path, {"software": "hpcq", "nprocs": 4}, resume=True)
            n = len(store.completed_keys())
            while True:
                data = {"total_s": (np.full((4, 100), float(n)), "s"),
                        "bytes_sent": (np.full(4, n), "bytes")}
                store.write_case("collectives", f"case {n}", {"n": n}, data, key=f"k{n}")
                n += 1
        finally:
            os._exit(3)
    time.sleep(random.uniform(0.0, 0.2))  # a loaded machine writes a case in tens of ms
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
        sys.exit(f"writer {i} ended with status {status}, not by SIGKILL")
    if path.exists():
        shutil.copyfile(path, snaps / f"{i:02d}.h5")
    hit = sum(".tmp-" in p.name for p in path.parent.iterdir())  # killed mid-commit?
    print(hit)
    mid += hit
    if i + 1 >= kills and mid >= 2:
        break
"""


def test_sigkill_at_random_moments(tmp_path: Path) -> None:
    path, snaps, kills = tmp_path / "killed.h5", tmp_path / "snaps", 20
    snaps.mkdir()
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    )
    done = subprocess.run(
        [sys.executable, "-c", KILL_WORKER, str(path), str(snaps), str(kills), "1"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    # most kills land while a copy is being written (the writer spends its time there)
    assert sum(int(n) for n in done.stdout.split()) >= 2, done.stdout
    count = 0
    for snap in sorted(snaps.iterdir()):
        cases = read_cases(snap, include_incomplete=True)
        assert all(c["complete"] for c in cases), snap.name
        assert [c["case_key"] for c in cases] == [f"k{j}" for j in range(len(cases))], snap.name
        for j, case in enumerate(cases):
            np.testing.assert_array_equal(case["total_s"], np.full((4, 100), float(j)))
            np.testing.assert_array_equal(case["bytes_sent"], np.full(4, j))
            assert case["units"] == {"total_s": "s", "bytes_sent": "bytes"} and case["n"] == j
        assert len(cases) >= count, snap.name  # nothing ever disappears
        count = len(cases)
        runs = read_runs(snap)
        assert [r["resumed"] for r in runs] == [False] + [True] * (len(runs) - 1)
    assert len(list(snaps.iterdir())) >= kills // 2 and count >= kills // 4, count
    assert len(_temps(tmp_path)) <= 1  # at most the last writer's copy
    ResultFile(path, PROV, resume=True).close()
    assert _temps(tmp_path) == [] and completed_keys(path) == {f"k{j}" for j in range(count)}


def test_reads_schema_1_0_0(tmp_path: Path) -> None:
    path = tmp_path / "old.h5"
    shutil.copyfile(FIXTURES / "results-1.0.0.h5", path)
    before = path.read_bytes()
    assert schema_version(path) == "1.0.0"
    cases = read_cases(path)
    assert [c["kind"] for c in cases] == ["kernels.memcpy", "kernels.fwht", "kernels"] + [
        "collectives"
    ] * 3
    assert all(c["hpcq_format"] == "1.0.0" and c["case_key"] is None for c in cases)
    means = read_cases(path, kind="collectives")
    assert [c["scheme"] for c in means] == ["allreduce-fp32", "allgather", "allgather"]
    assert [c["spec_given"] for c in means] == ["allreduce-fp32", "qsgd:bits=4", "topk:ratio=0.05"]
    for case in means:
        for name in ("encode_s", "comm_s", "decode_s", "total_s"):
            assert case[name].shape == (2, 3) and case["units"][name] == "s"
        assert case["warmup_total_s"].shape == (2, 1)
        assert case["bytes_sent"].shape == (2,) and case["units"]["bytes_sent"] == "bytes"
        assert case["nprocs"] == 2 and case["iterations"] == 3 and case["consistent"] is True
    assert read_cases(path, kind="mean") == []
    assert cases[0]["copy_s"].shape == (3,) and cases[2]["compressor.params.bits"] == 4
    assert completed_keys(path) == set()
    assert [r["resumed"] for r in read_runs(path)] == [False]
    assert read_attrs(path)["nprocs"] == 2
    for kw in ({"append": True}, {"resume": True}):
        with pytest.raises(ValueError, match=r"old\.h5.*schema 1\.0\.0.*write a new file"):
            ResultFile(path, PROV, **kw)  # type: ignore[arg-type]
    assert path.read_bytes() == before and _temps(tmp_path) == []


def test_upgrade_case_1_0() -> None:
    up = store_mod._upgrade_case_1_0
    assert up({"kind": "mean", "scheme": "allreduce"}) == {
        "kind": "collectives",
        "scheme": "allreduce-fp32",
        "case_key": None,
    }
    assert up({"kind": "mean", "scheme": "allgather"})["scheme"] == "allgather"
    assert up({"kind": "kernels", "d": 4}) == {"kind": "kernels", "d": 4, "case_key": None}


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
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        completed_keys(text)
    newer = tmp_path / "newer.h5"
    _write(newer).close()
    with h5py.File(newer, "a") as f:
        f.attrs["hpcq_format"] = "2.0.0"
    with pytest.raises(ValueError, match="newer.h5.*schema 2.0.0, newer"):
        read_cases(newer)
    with pytest.raises(ValueError, match="schema 2.0.0, newer"):
        ResultFile(newer, PROV, resume=True)
    minor = tmp_path / "minor.h5"  # a newer MINOR only adds: readable, but not appendable
    _write(minor).close()
    with h5py.File(minor, "a") as f:
        f.attrs["hpcq_format"] = "1.9.0"
    assert [c["label"] for c in read_cases(minor)] == ["first", "second"]
    with pytest.raises(ValueError, match="schema 1.9.0; this hpcq writes 1.3.0"):
        ResultFile(minor, PROV, append=True)


def test_nul_in_an_attribute_is_a_clear_error(tmp_path: Path) -> None:
    from hpcq.store import ResultFile

    with pytest.raises(ValueError, match="attribute 'mpi_library' holds a NUL"):
        ResultFile(tmp_path / "r.h5", {"software": "hpcq", "mpi_library": "Open MPI\x00\x00"})
    assert not (tmp_path / "r.h5").exists()


def test_reads_the_1_1_0_fixture() -> None:
    """A file written by `hpcq run tests/fixtures/results-1.1.0.toml` on 2 ranks stays readable."""
    import json

    from hpcq.store import completed_keys, read_attrs

    path = FIXTURES / "results-1.1.0.h5"
    attrs = read_attrs(path)
    assert attrs["hpcq_format"] == "1.1.0" and attrs["nprocs"] == 2
    assert attrs["config_toml"] == (FIXTURES / "results-1.1.0.toml").read_text()
    cases = read_cases(path)
    assert len(cases) == 16 and len(completed_keys(path)) == 16
    coll = [c for c in cases if c["kind"] == "collectives"]
    assert len(coll) == 10 and {c["sweep.job.seed"] for c in coll} == {0, 1}
    for c in coll:
        assert c["total_s"].shape == (2, 3) and c["units"]["total_s"] == "s"
        assert c["check"] == "pass" and c["consistent"]
        key = json.loads(c["case_key"])
        assert key["scheme"] == c["scheme"] and key["d"] == 1024
    assert [c["scheme"] for c in coll[:3]] == ["allreduce-fp32", "allgather", "allgather"]


def test_merge_keeps_every_case_once_with_its_provenance(tmp_path: Path) -> None:
    import shutil as sh

    from hpcq.store import completed_keys, merge, read_attrs

    a, b = tmp_path / "task0.h5", tmp_path / "task1.h5"
    sh.copyfile(FIXTURES / "results-1.1.0.h5", a)
    with ResultFile(b, {"software": "hpcq", "nprocs": 3, "hostnames": ["x", "y", "z"]}) as f:
        f.write_case("collectives", "extra", {"d": 8}, {"total_s": (np.ones((3, 2)), "s")},
                     key="extra-key")
    out = tmp_path / "all.h5"
    counts = merge([a, b, a], out, {"software": "hpcq", "command_line": "hpcq merge"})
    assert counts == {"inputs": 3, "cases": 17, "duplicates": 16}
    cases = read_cases(out)
    assert len(cases) == 17 and completed_keys(out) == completed_keys(a) | {"extra-key"}
    runs = read_runs(out)
    assert runs[0]["command_line"] == "hpcq merge"
    assert [r.get("source_file") for r in runs[1:]] == [str(a), str(b), str(a)]
    extra = next(c for c in cases if c["label"] == "extra")
    assert runs[extra["run"]]["nprocs"] == 3 and extra["source_file"] == str(b)
    np.testing.assert_array_equal(extra["total_s"], np.ones((3, 2)))
    assert extra["units"]["total_s"] == "s"
    first = read_cases(a)[0]
    assert runs[cases[0]["run"]]["source_file"] == str(a)
    assert cases[0]["label"] == first["label"] and cases[0]["case_key"] == first["case_key"]
    assert read_attrs(out)["hpcq_format"] == SCHEMA_VERSION
    with pytest.raises(FileExistsError):
        merge([a], out, {"software": "hpcq"})
    with pytest.raises(ValueError, match="uses result schema 1.0.0"):
        merge([FIXTURES / "results-1.0.0.h5"], tmp_path / "x.h5", {"software": "hpcq"})
    assert not (tmp_path / "x.h5").exists()


def test_reads_the_1_2_0_fixture() -> None:
    """A file written by `hpcq run tests/fixtures/results-1.2.0.toml` on 2 ranks stays readable."""
    from hpcq.store import read_attrs

    path = FIXTURES / "results-1.2.0.h5"
    attrs = read_attrs(path)
    assert attrs["hpcq_format"] == "1.2.0" and attrs["nprocs"] == 2
    assert attrs["config_toml"] == (FIXTURES / "results-1.2.0.toml").read_text()
    train = read_cases(path, kind="train")
    assert [c["label"] for c in train] == ["gd fp32", "gd qsgd:bits=4", "dqgd:bits=4"]
    for c in train:
        assert c["t_iter"].shape == (2, 5) and c["units"]["bytes_sent"] == "bytes"
        assert list(c["log_iter"]) == [0, 1, 2, 3, 4, 5] and c["rate"] < 1
    coll = read_cases(path, kind="collectives")
    assert coll[1]["theory_bits_per_coordinate"] == pytest.approx(4 + 2 * 32 / 1024)  # 2 buckets


def test_reads_the_1_3_0_fixture() -> None:
    """A file written by `hpcq run tests/fixtures/results-1.3.0.toml` on 2 ranks stays readable:
    the timing reference without NMSE, workload cases, keys holding the rank count."""
    import json

    from hpcq.store import read_attrs

    path = FIXTURES / "results-1.3.0.h5"
    attrs = read_attrs(path)
    assert attrs["hpcq_format"] == "1.3.0" and attrs["nprocs"] == 2
    assert attrs["config_toml"] == (FIXTURES / "results-1.3.0.toml").read_text()
    coll = read_cases(path, kind="collectives")
    assert [c["scheme"] for c in coll] == ["mpi-allreduce", "allreduce-fp32", "allgather"]
    assert "nmse" not in coll[0] and coll[1]["nmse"] < 1e-12 and coll[2]["check"] == "pass"
    work = read_cases(path, kind="workload")
    assert [c["label"] for c in work] == ["tiny allreduce-fp32", "tiny allgather qsgd:bits=4"]
    assert work[1]["tensor_nmse"].shape == (8,) and work[1]["overrides"] == ["*.bias=none"]
    assert all(json.loads(c["case_key"])["nprocs"] == 2 for c in coll + work)


def test_merge_takes_1_1_0_files_into_1_3_0(tmp_path: Path) -> None:
    from hpcq.store import merge, read_attrs

    out = tmp_path / "all.h5"
    counts = merge([FIXTURES / "results-1.1.0.h5", FIXTURES / "results-1.2.0.h5"], out,
                   {"software": "hpcq"})
    # the two collectives cases of the 1.2.0 fixture are also in the 1.1.0 one (same keys)
    assert counts["cases"] == 16 + 3 and counts["duplicates"] == 2
    assert read_attrs(out)["hpcq_format"] == "1.3.0"
    assert len(read_cases(out, kind="train")) == 3
