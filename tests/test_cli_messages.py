"""Bad input ends as one line naming the file, key or argument and the fix (issue 16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hpcq.cli import main
from hpcq.compressors import compressor

HEAD = 'format = "hpcq-job"\nversion = 1\n'


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("hpcq: error: ")
    return lines[0]


@pytest.mark.parametrize("spec,text", [
    ("qsgd:bits=4,,", "an empty parameter"), ("qsgd:", "nothing after ':'"),
    ("qsgd:bits=\u0664", "non-ASCII"), ("hadamard:+sign", "nothing after ':'"),
    ("qsgd:,bits=4", "an empty parameter")])
def test_malformed_compressor_specs(spec: str, text: str) -> None:
    with pytest.raises(ValueError, match=text):
        compressor(spec)


def test_well_formed_specs_still_parse() -> None:
    assert compressor("qsgd").spec == compressor("qsgd:bits=4").spec
    assert compressor(" qsgd : bits = 4 ").p["bits"] == 4
    assert compressor("hadamard+sign").rotation > 0


@pytest.mark.parametrize("sizes,text", [("5:3", "LO is above HI"), ("", "is empty"),
                                        ("a", "expected log2 sizes")])
def test_bad_sizes_in_a_job_name_the_file_and_key(tmp_path: Path, sizes: str, text: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "j.toml"
    job.write_text(HEAD + f'[collectives]\nsizes = "{sizes}"\n')
    assert main(["run", str(job), "--dry-run"]) == 2
    line = _one_line(capsys)
    assert f"{job}: [collectives] sizes:" in line and text in line and "--sizes" not in line


def test_binary_job_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "j.toml"
    job.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    assert main(["run", str(job), "--dry-run"]) == 2
    line = _one_line(capsys)
    assert str(job) in line and "not a text file" in line


def test_append_and_resume_together(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "-o", "x.h5", "--append", "--resume"]) == 2
    assert "--append and --resume together" in _one_line(capsys)


def test_submit_array_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "j.toml"
    job.write_text(HEAD)
    assert main(["submit", str(job), "--array", "0", "--dry-run"]) == 2
    assert "--array 0: give N >= 1" in _one_line(capsys)


def test_merge_into_an_existing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o.h5"
    out.write_bytes(b"")
    assert main(["merge", str(out), "-o", str(out)]) == 2
    line = _one_line(capsys)
    assert "merge writes a new file" in line and "--append" not in line


def test_output_is_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "-o", str(tmp_path)]) == 2
    assert "is a directory; give a file name" in _one_line(capsys)


def test_encode_seed_must_be_an_integer() -> None:
    with pytest.raises(ValueError, match="seed must be an integer"):
        compressor("fp16").encode(np.ones(3, np.float32), seed=1.5)  # type: ignore[arg-type]


def test_huge_quadratic_refused_at_validation(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "j.toml"
    job.write_text(HEAD + '[train]\nproblems = ["quadratic:d=1099511627776"]\nmethods = ["gd"]\n'
                   'compressors = ["fp32"]\n')
    assert main(["run", str(job), "--dry-run"]) == 2
    line = _one_line(capsys)
    assert str(job) in line and "d=1099511627776 is above its maximum" in line


def test_corrupt_gz_data_named_at_validation(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    import gzip

    data = tmp_path / "d.svm.gz"
    good = gzip.compress(b"".join(b"1 1:0.5 2:1.5\n" for _ in range(200)))
    data.write_bytes(good[:20] + bytes(b ^ 0xFF for b in good[20:40]) + good[40:])
    job = tmp_path / "j.toml"
    job.write_text(HEAD + f'[train]\nproblems = ["logistic:data={data}"]\nmethods = ["gd"]\n'
                   'compressors = ["fp32"]\n')
    assert main(["run", str(job), "--dry-run"]) == 2
    line = _one_line(capsys)
    assert str(data) in line and "corrupt" in line
