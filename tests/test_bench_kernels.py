"""``hpcq bench kernels``: size parsing, the NumPy references, and a tiny run writing a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hpcq.bench import numpy_ref, resolve_compressors
from hpcq.bench.kernels import DEFAULT_SPECS, format_table, parse_sizes, repeats_for, run
from hpcq.cli import main
from hpcq.kernels.bitpack import pack_codes
from hpcq.store import read_attrs, read_cases


def test_parse_sizes() -> None:
    assert parse_sizes("12:14") == [4096, 8192, 16384]
    assert parse_sizes("12:16:2") == [4096, 16384, 65536]
    assert parse_sizes("10, 20") == [1024, 1 << 20]
    for bad in ("", "a:b", "12:14:0", "1:2:3:4", "31", "-1"):
        with pytest.raises(ValueError, match="log2 sizes|holds no size"):
            parse_sizes(bad)


def test_fewer_repeats_at_large_sizes() -> None:
    assert repeats_for(1 << 20, 10) == 10
    assert repeats_for(1 << 22, 10) == 3 and repeats_for(1 << 24, 10) == 3
    assert repeats_for(1 << 24, 2) == 2


@pytest.mark.parametrize("width", range(1, 17))
def test_numpy_pack_uses_the_wire_bit_order(width: int) -> None:
    codes = np.random.default_rng(width).integers(0, 1 << width, 37).astype(np.uint16)
    packed = numpy_ref.pack(codes, width)
    np.testing.assert_array_equal(packed, pack_codes(codes, width))
    np.testing.assert_array_equal(numpy_ref.unpack(packed, 37, width), codes)


def test_numpy_fwht_is_orthonormal_hadamard() -> None:
    h = np.array([[1.0]])
    for _ in range(4):
        h = np.block([[h, h], [h, -h]])
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    np.testing.assert_allclose(numpy_ref.fwht(x), x @ h.T / 4.0, rtol=1e-5, atol=1e-5)


def test_numpy_references_implement_the_same_schemes() -> None:
    # same bits and scales as the codec, so about the same error (different random streams)
    x = np.random.default_rng(3).standard_normal(4096).astype(np.float32)
    checked = 0
    for label, comp in resolve_compressors(DEFAULT_SPECS, skip_unavailable=True)[0]:
        ref = numpy_ref.reference(comp, x, seed=1)
        if ref is None:
            continue
        y = ref.decode(ref.encode(x))
        assert y.shape == x.shape and y.dtype == np.float32, label
        ours = comp.decode(comp.encode(x, seed=1))
        nmse_ref = float(np.sum((y - x) ** 2) / np.sum(x**2))
        nmse = float(np.sum((ours - x) ** 2) / np.sum(x**2))
        assert nmse / 2 <= nmse_ref <= 2 * nmse + 1e-12, (label, nmse, nmse_ref)
        checked += 1
    assert checked >= 2  # fp16 and bf16 at least


def test_run_rows_and_table() -> None:
    specs = resolve_compressors(["fp16", "bf16"], skip_unavailable=False)[0]
    cases: list[tuple[str, str]] = []
    labels: list[str] = []
    rows = run(specs, [256, 1024], repeats=2, warmup=1,
               on_case=lambda kind, label, attrs, data: cases.append((kind, label)),
               progress=labels.append)
    assert [k for k, _ in cases] == ["kernels.memcpy", "kernels.fwht", "kernels", "kernels"] * 2
    assert labels == [label for _, label in cases] and "fp16 d=2^10" in labels
    table = format_table(rows).splitlines()
    assert len(table) == 1 + len(rows) == 9
    fwht_rows = [r for r in rows if r["label"].startswith("fwht")]
    assert len(fwht_rows) == 2 and all(r["enc"][0] > 0 and r["enc_x_numpy"] > 0 for r in fwht_rows)
    assert all(r["bits"] > 16 for r in rows if "bits" in r)
    assert all(r["into"][0] > 0 and r["into_x_memcpy"] > 0 for r in rows if "bits" in r)
    assert "into GB/s" in table[0]


def test_cli_writes_a_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k.h5"
    assert main(["bench", "kernels", "--sizes", "8,10", "--repeats", "2", "--warmup", "1",
                 "--threads", "1", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "memcpy" in printed and "x numpy" in printed and str(out) in printed
    attrs = read_attrs(out)
    assert attrs["software"] == "hpcq" and attrs["threads_per_rank"] == [1]
    assert attrs["command_line"].startswith("hpcq bench kernels --sizes 8,10")
    cases = read_cases(out)
    available = resolve_compressors(DEFAULT_SPECS, skip_unavailable=True)[0]
    assert len(cases) == 2 * (2 + len(available))
    k = next(c for c in cases if c["kind"] == "kernels")
    assert k["encode_s"].shape == (2,) and k["encode_warmup_s"].shape == (1,)
    assert k["decode_into_s"].shape == (2,) and (k["decode_into_s"] > 0).all()
    assert k["units"]["encode_first_s"] == "s" and k["threads"] == 1
    assert k["bits_per_coordinate"] == 8.0 * k["wire_bytes"] / k["d"]
    # and never over an existing file
    assert main(["bench", "kernels", "--sizes", "8", "--compressors", "fp16", "-o",
                 str(out)]) == 2
    assert "--append" in capsys.readouterr().err
