"""The result store on a full, read-only or vanished output location: one line naming the
file and the errno, the cases already there intact, no temporary file left, no crash."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hpcq.store import ResultFile, check_output, read_cases

PROV = {"software": "hpcq", "nprocs": 1}


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 600 KiB tmpfs (needs root and mount; skipped with the reason elsewhere)."""
    if os.geteuid() != 0:
        pytest.skip("a small tmpfs needs root (mount -t tmpfs)")
    where = tmp_path / "small"
    where.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


@pytest.mark.parametrize("case_kib", [40, 150, 290])
def test_disk_full_is_one_clean_error(small_fs: Path, case_kib: int) -> None:
    path = small_fs / "r.h5"
    store = ResultFile(path, PROV)
    rng = np.random.default_rng(0)
    written, err = 0, None
    for i in range(40):
        data = {"x": (rng.random(case_kib * 128), "s")}  # case_kib KiB of float64
        try:
            store.write_case("kernels", f"case {i}", {}, data, key=str(i))
        except OSError as e:
            err = e
            break
        written += 1
    assert err is not None, "the file system never filled"
    assert err.errno == errno.ENOSPC
    text = str(err)
    assert "\n" not in text and str(path) in text and "ENOSPC" in text
    assert [c["label"] for c in read_cases(path)] == [f"case {i}" for i in range(written)]
    assert sorted(p.name for p in small_fs.iterdir()) == ["r.h5"]  # no temporary file


def test_disk_full_through_the_cli(small_fs: Path, tmp_path: Path) -> None:
    """A whole `hpcq run` into a file system too small for its cases: exit 1, one line."""
    from hpcq.cli import main

    job = tmp_path / "j.toml"
    job.write_text('format = "hpcq-job"\nversion = 1\n[collectives]\n'
                   'compressors = ["qsgd:bits=4", "sign", "fp16", "bf16"]\n'
                   'schemes = ["allgather"]\nsizes = "8"\niterations = 6000\nwarmup = 1\n')
    out = small_fs / "o.h5"
    code = subprocess.run([sys.executable, "-m", "hpcq", "run", str(job), "-o", str(out)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NUMBA_NUM_THREADS": "1"})
    assert main is not None
    assert code.returncode == 1, code.stderr
    errors = [ln for ln in code.stderr.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and str(out) in errors[0] and "ENOSPC" in errors[0], code.stderr
    assert "Traceback" not in code.stderr and "Exception ignored" not in code.stderr
    assert all(c["complete"] for c in read_cases(out))
    assert [p.name for p in small_fs.iterdir() if ".tmp-" in p.name] == []


def test_vanished_directory(tmp_path: Path) -> None:
    where = tmp_path / "gone"
    where.mkdir()
    store = ResultFile(where / "r.h5", PROV)
    store.write_case("kernels", "one", {}, {})
    (where / "r.h5").unlink()
    where.rmdir()
    with pytest.raises(OSError, match=r"cannot write result file .*r\.h5.*ENOENT"):
        store.write_case("kernels", "two", {}, {})


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files anyway")
def test_read_only_file_refused_before_the_run(tmp_path: Path) -> None:
    path = tmp_path / "r.h5"
    ResultFile(path, PROV).close()
    path.chmod(0o444)
    with pytest.raises(ValueError, match="read-only"):
        check_output(path)


def test_check_output(tmp_path: Path) -> None:
    check_output(tmp_path / "new.h5")
    with pytest.raises(ValueError, match=r"directory .*missing.* does not exist; create it"):
        check_output(tmp_path / "missing" / "r.h5")
    with pytest.raises(ValueError, match="is a directory; give a file name"):
        check_output(tmp_path)
    (tmp_path / "f").write_text("")
    with pytest.raises(ValueError, match="is not a directory"):
        check_output(tmp_path / "f" / "r.h5")
    with pytest.raises(ValueError, match="KiB free"):
        check_output(tmp_path / "new.h5", need_bytes=1 << 60)


def test_run_into_missing_directory_is_one_line(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from hpcq.cli import main

    assert main(["run", "-o", str(tmp_path / "nope" / "r.h5")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist; create it" in err[0], err
    assert ".tmp-" not in err[0]
