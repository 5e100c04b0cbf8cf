"""QSGD with entropy-coded levels (``code=``): same vector as fixed-length, shorter message."""

import numpy as np
import pytest

import hpcq
from hpcq.compressors import (
    HEADER_BYTES,
    NonFiniteInputError,
    decode,
    from_header,
    lengths,
    parse_header,
)
from hpcq.compressors.qsgd import CODES, FLAG_PACKED, static_code_lengths

ENTROPY = [c for c in CODES if c != "fixed"]
BASES = ["qsgd:bits=4", "qsgd:s=4,bucket=0", "qsgd:bits=2,bucket=64,norm=linf",
         "qsgd:bits=8,bucket=0", "qsgd:bits=3,rounding=nearest", "hadamard:block=64+qsgd:bits=4"]
DS = [0, 1, 7, 8, 9, 100, 513, 4099]


def _x(d, seed=0):
    return np.random.default_rng(seed).standard_normal(d).astype(np.float32)


def _fixed(c):
    return hpcq.compressor(c.spec.replace(f",code={c.p['code']}", ""))


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("code", ENTROPY)
def test_same_vector_as_fixed_and_never_longer(base, code):
    c = hpcq.compressor(f"{base},code={code}")
    f = _fixed(c)
    assert c.wire_bytes(1000) is None and c.bits_per_coordinate(1000) is None
    assert f.wire_bytes(1000) is not None and f.p["code"] == "fixed"
    for d in DS:
        x = _x(d, seed=d)
        buf, ref = c.encode(x, seed=3, step=d, rank=1), f.encode(x, seed=3, step=d, rank=1)
        y = c.decode(buf)
        assert y.dtype == np.float32 and y.shape == (d,)
        np.testing.assert_array_equal(y, f.decode(ref))  # bit-exact: the same quantization
        np.testing.assert_array_equal(decode(buf), y)  # rebuilt from the header alone
        assert from_header(buf).p["code"] == code  # (rounding is not in the header)
        np.testing.assert_array_equal(c.levels(buf), f.levels(ref))
        assert buf.shape[0] <= ref.shape[0]
        h = parse_header(buf)
        assert h.payload_nbytes == buf.shape[0] - HEADER_BYTES
        payload, side = c.message_bits(buf)
        assert payload + side <= 8 * h.payload_nbytes < payload + side + 16
        assert sum(c.message_bits(buf)) <= sum(c.theory_bits(d)) + 8
        if h.flags & FLAG_PACKED:
            assert buf.shape[0] == ref.shape[0] and c.message_bits(buf) == c.theory_bits(d)
        out = np.ones(d, np.float32)
        np.testing.assert_array_equal(c.decode(buf, out=out, add=True), y + 1)


def test_spec_header_slot_and_choices():
    assert hpcq.compressor("qsgd").spec == "qsgd:bits=4,s=7,bucket=512,norm=l2,rounding=stochastic"
    c = hpcq.compressor("qsgd:s=4,bucket=0,code=rans")
    assert c.spec.endswith(",code=rans") and c._header_params()[3] == CODES.index("rans")
    assert hpcq.compressor("qsgd")._header_params()[3] == 0  # old fixed-length headers
    with pytest.raises(ValueError, match="valid: fixed, elias"):
        hpcq.compressor("qsgd:code=zip")
    assert hpcq.compressors()["qsgd"]["params"]["code"]["choices"] == list(CODES)
    msg = c.encode(_x(100))
    with pytest.raises(ValueError, match="parameters"):  # a decoder of another code
        hpcq.compressor("qsgd:s=4,bucket=0,code=huffman").decode(msg)


def test_entropy_coded_sizes_on_gaussian_data():
    """Much shorter than 4 bits per level; rANS near the entropy; Huffman at its optimum."""
    x = _x(1 << 16, seed=1)
    base = "qsgd:bits=4"
    f = hpcq.compressor(base)
    lv = f.levels(f.encode(x, seed=2))
    counts = lengths.level_counts(lv)
    ent, huff = lengths.huffman_bound_bits(counts), lengths.huffman_bits(counts)
    sizes = {}
    for code in ENTROPY:
        c = hpcq.compressor(f"{base},code={code}")
        payload, side = c.message_bits(c.encode(x, seed=2))
        sizes[code] = payload
    assert sizes["rans"] <= 1.01 * ent + 200
    assert huff <= sizes["huffman"] <= huff + 8
    assert sizes["huffman-static"] <= 1.01 * huff  # the Gaussian model is nearly the histogram
    assert sizes["elias"] == lengths.qsgd_elias_bits(lv) - 32 + (-(lengths.qsgd_elias_bits(lv)
                                                                   - 32) % 8)
    assert max(sizes.values()) < 0.45 * 4 * x.shape[0]


def test_ecq_sgd_ratio_needs_entropy_coding():
    """papers.md T11: s = 4 fixed-length caps the ratio near 8x; entropy coding passes 80x."""
    d = 1 << 18
    x = _x(d, seed=5)
    fixed = hpcq.compressor("qsgd:s=4,bucket=0")
    assert 32 * d / sum(fixed.theory_bits(d)) < 8
    for code in ("rans", "elias"):
        c = hpcq.compressor(f"qsgd:s=4,bucket=0,code={code}")
        assert 32 * d / sum(c.message_bits(c.encode(x))) > 80


def test_falls_back_to_packed_codes_when_they_win():
    x = np.random.default_rng(0).uniform(-1, 1, 200).astype(np.float32)
    for code in ENTROPY:  # 255 levels spread evenly: no entropy code beats 8 bits
        c = hpcq.compressor(f"qsgd:bits=8,bucket=0,norm=linf,code={code}")
        buf = c.encode(x, seed=1)
        f = _fixed(c)
        if code != "huffman-static":  # (its model puts almost nothing on the outer levels)
            assert parse_header(buf).flags & FLAG_PACKED, code
        if parse_header(buf).flags & FLAG_PACKED:
            assert buf.shape[0] == f.wire_bytes(200)
            np.testing.assert_array_equal(buf[HEADER_BYTES:], f.encode(x, seed=1)[HEADER_BYTES:])
        np.testing.assert_array_equal(c.decode(buf), f.decode(f.encode(x, seed=1)))


def test_nonfinite_input_is_rejected():
    x = _x(100)
    x[17] = np.nan
    for code in ENTROPY:
        with pytest.raises(NonFiniteInputError, match=r"x\[17\]"):
            hpcq.compressor(f"qsgd:code={code}").encode(x)


@pytest.mark.parametrize("code", ENTROPY)
def test_fuzzed_messages_never_crash_or_mislength(code):
    rng = np.random.default_rng(11)
    c = hpcq.compressor(f"qsgd:bits=4,bucket=64,code={code}")
    good = c.encode(_x(300) * np.where(np.arange(300) % 7, 0.05, 1).astype(np.float32), seed=4)
    caught = 0
    for _ in range(300):
        buf = good.copy()
        lo = 0 if rng.random() < 0.2 else HEADER_BYTES
        for pos in rng.integers(lo, len(buf), rng.integers(1, 4)):
            buf[pos] ^= np.uint8(1 << rng.integers(0, 8))
        cut = len(buf) if rng.random() < 0.8 else int(rng.integers(0, len(buf)))
        try:
            y = c.decode(buf[:cut])
        except ValueError:
            caught += 1
            continue
        assert y.shape == (300,) and y.dtype == np.float32
    assert caught > 100


def test_header_tampering_is_detected():
    c = hpcq.compressor("qsgd:bits=4,code=huffman-static")
    x = _x(1000)
    good = c.encode(x)
    h = parse_header(good)
    for flags, aux, match in ((h.flags | FLAG_PACKED, h.aux, "codec flags|payload"),
                              (h.flags | 0x4, h.aux, "codec flags"),
                              (h.flags, h.aux ^ 1, "static Huffman table")):
        bad = good.copy()
        c._write_header(bad, flags, aux, h.d, h.seed, h.step, h.payload_nbytes)
        with pytest.raises(ValueError, match=match):
            c.decode(bad)
    f = hpcq.compressor("qsgd:bits=4")
    bad = f.encode(x)
    hf = parse_header(bad)
    f._write_header(bad, hf.flags | FLAG_PACKED, 0, hf.d, hf.seed, hf.step, hf.payload_nbytes)
    with pytest.raises(ValueError, match="codec flags"):
        f.decode(bad)


def test_static_table_is_a_pure_function():
    a, crc = static_code_lengths(7, "l2", 512)
    static_code_lengths.cache_clear()
    b, crc2 = static_code_lengths(7, "l2", 512)
    np.testing.assert_array_equal(a, b)
    assert crc == crc2 and a.shape == (15,) and np.all(a > 0) and a[7] == a.min()
    assert sum(2.0 ** -int(v) for v in a) == 1.0
    assert static_code_lengths(7, "linf", 512)[1] != crc


def test_allgather_mean_and_error_feedback_at_size_one():
    from mpi4py import MPI

    from hpcq.collectives import allgather_mean, iallgather_mean
    from hpcq.feedback import feedback

    x = _x(5000)
    for code in ENTROPY:
        comp = hpcq.compressor(f"qsgd:s=4,bucket=0,code={code}")
        mean, stats = allgather_mean(MPI.COMM_SELF, x, comp, seed=5, step=2)
        msg = comp.encode(x, seed=5, step=2, rank=0)
        np.testing.assert_array_equal(mean, comp.decode(msg))
        assert stats.bytes_sent == msg.shape[0] < comp.theory_bits(5000)[0] // 8
        np.testing.assert_array_equal(
            iallgather_mean(MPI.COMM_SELF, x, comp, seed=5, step=2).wait()[0], mean)
        ef = feedback("ecq", comp)
        buf, q = ef.encode(x, seed=1)
        np.testing.assert_array_equal(q, comp.decode(buf))
        np.testing.assert_allclose(x + 0, q + ef.memory, rtol=0, atol=1e-5)


def test_bench_kernels_reports_the_entropy_columns(monkeypatch):
    """``hpcq bench kernels``: coded bits against the entropy, zstd/lz4 when installed."""
    import hpcq.bench.kernels as bk
    from hpcq.bench import resolve_compressors

    specs = resolve_compressors(["qsgd:s=4,bucket=0,code=rans", "qsgd:bits=4"],
                                skip_unavailable=False)[0]
    cases = []
    rows = bk.run(specs, [4096], repeats=2, warmup=0,
                  on_case=lambda kind, label, attrs, data: cases.append((attrs, data)))
    ent = [r for r in rows if "entropy" in r]
    assert len(ent) == 1 and ent[0]["label"].endswith("code=rans")
    e = ent[0]["entropy"]
    assert e["packed_bytes"] == 4096 // 2 and e["scale_bits"] == 32
    assert e["entropy_bits"] <= e["coded_bits"] <= 1.05 * e["entropy_bits"] + 8 * 16 + 64
    attrs, data = cases[-2]  # the rans case
    assert attrs["entropy"] == {k: v for k, v in e.items() if not k.endswith("_gbs")}
    table = bk.format_table(rows)
    assert "entropy-coded levels" in table and "code=rans" in table
    have = bk._tools()
    for name in have:
        assert f"{name}_compress_s" in data and f"{name}_bytes" in e and name in table
    monkeypatch.setattr(bk, "_tools", dict)
    assert len(bk.missing_tools()) == 2
    rows = bk.run(specs[:1], [1024], repeats=1, warmup=0)
    assert "zstd1" not in bk.format_table(rows) and "entropy" in rows[-1]
