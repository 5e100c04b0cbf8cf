"""The compressor interface: spec parsing, the header, the casts, and hostile buffers."""

import numpy as np
import pytest

import hpcq
from hpcq.compressors import HEADER_BYTES, compressor, decode, from_header, parse_header
from hpcq.compressors.base import NonFiniteInputError, rotation_block_for

CASTS = ["fp32", "fp16", "bf16"]


def _x(d, seed=0):
    return np.random.default_rng(seed).standard_normal(d).astype(np.float32)


def test_spec_parsing_and_errors():
    assert hpcq.compressor("fp32").spec == "fp32"
    with pytest.raises(ValueError, match="unknown compressor 'nope'; valid: .*fp32"):
        hpcq.compressor("nope")
    with pytest.raises(ValueError, match="unknown parameter.*bits"):
        hpcq.compressor("fp16:bits=3")
    with pytest.raises(ValueError, match="key=value"):
        hpcq.compressor("fp16:bits")
    with pytest.raises(ValueError, match="unknown prefix 'rot'"):
        hpcq.compressor("rot+fp16")
    with pytest.raises(ValueError, match="power of two"):
        hpcq.compressor("hadamard:block=3+fp16")
    with pytest.raises(ValueError, match="non-empty"):
        hpcq.compressor("")


def test_listing_has_every_cast():
    listing = hpcq.compressors()
    for name in CASTS:
        assert listing[name]["bits_per_coordinate_d1M"] > 16
    assert listing["fp32"]["unbiased"] is True


@pytest.mark.parametrize("name", CASTS)
@pytest.mark.parametrize("d", [0, 1, 7, 8, 9, 511, 513, 4099])
def test_wire_bytes_is_exact_and_round_trip(name, d):
    c = hpcq.compressor(name)
    x = _x(d)
    buf = c.encode(x, seed=5, step=6, rank=1)
    assert buf.dtype == np.uint8 and len(buf) == c.wire_bytes(d)
    y = c.decode(buf)
    assert y.dtype == np.float32 and y.shape == (d,)
    rtol = {"fp32": 0, "fp16": 2**-11, "bf16": 2**-8}[name]
    np.testing.assert_allclose(y, x, rtol=rtol, atol=0)
    np.testing.assert_array_equal(decode(buf), y)  # decoder rebuilt from the header alone
    h = parse_header(buf)
    assert (h.d, h.seed, h.step) == (d, 5, 6)


def test_bf16_rounds_to_nearest_even():
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-9)], np.float32)  # ties and below half
    y = hpcq.compressor("bf16").decode(hpcq.compressor("bf16").encode(x))
    np.testing.assert_array_equal(y, np.array([1.0, 1 + 4 * 2**-8, -1.0], np.float32))


def test_fp16_kernels_match_numpy_bit_for_bit():
    from hpcq.kernels import cast

    halves = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    finite = np.isfinite(halves.view(np.float16))
    ref = halves.view(np.float16).astype(np.float32)
    np.testing.assert_array_equal(cast.from_fp16(halves)[finite], ref[finite])
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.standard_normal(20000) * s for s in (1e-8, 1e-6, 1e-4, 1, 1e4)])
    x = np.concatenate([x, [0.0, -0.0, 65504, 65519, 5.96e-8, 2.98e-8, 2.99e-8]]).astype(np.float32)
    out = np.empty(x.shape[0], np.uint16)
    assert cast.to_fp16(x, out) == 0
    np.testing.assert_array_equal(out, x.astype(np.float16).view(np.uint16))
    small = np.empty(500, np.uint16)
    cast._to_fp16.py_func(x.view(np.uint32)[:500], small)  # the body, run by Python
    np.testing.assert_array_equal(small, out[:500])
    back = np.empty(500, np.uint32)
    cast._from_fp16.py_func(out[:500], back)
    np.testing.assert_array_equal(back.view(np.float32), cast.from_fp16(out[:500]))
    assert cast.to_fp16(np.array([65520.0, np.inf], np.float32), np.empty(2, np.uint16)) == 2


def test_input_forms():
    c = hpcq.compressor("fp32")
    x64 = np.linspace(-1, 1, 11)
    np.testing.assert_array_equal(c.decode(c.encode(x64)), x64.astype(np.float32))
    strided = _x(20)[::2]
    np.testing.assert_array_equal(c.decode(c.encode(strided)), strided)
    with pytest.raises(ValueError, match="1-D"):
        c.encode(np.zeros((2, 2), np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        c.encode(np.zeros(3, np.int64))
    with pytest.raises(TypeError, match="numpy array"):
        c.encode([1.0, 2.0])
    with pytest.raises(ValueError, match="seed"):
        c.encode(np.zeros(3, np.float32), seed=-1)


@pytest.mark.parametrize("name", CASTS)
def test_nonfinite_input_is_rejected_with_its_index(name):
    x = _x(10)
    x[7] = np.nan
    with pytest.raises(NonFiniteInputError, match=r"x\[7\] = nan"):
        hpcq.compressor(name).encode(x)
    big = np.array([0.0, 1e300])
    with pytest.raises(ValueError, match="overflows float32"):
        hpcq.compressor(name).encode(big)


def test_fp16_range_error():
    with pytest.raises(ValueError, match="largest fp16"):
        hpcq.compressor("fp16").encode(np.array([7e4], np.float32))


def test_decoder_rejects_foreign_and_mismatched_messages():
    buf = hpcq.compressor("fp16").encode(_x(16))
    with pytest.raises(ValueError, match="not by bf16"):
        hpcq.compressor("bf16").decode(buf)
    with pytest.raises(ValueError, match="not an hpcq message"):
        hpcq.compressor("fp16").decode(np.frombuffer(b"X" * 100, np.uint8).copy())
    with pytest.raises(ValueError, match="truncated"):
        hpcq.compressor("fp16").decode(buf[:20])
    with pytest.raises(ValueError, match="does not match its header"):
        hpcq.compressor("fp16").decode(buf[:-1])
    with pytest.raises(ValueError, match="uint8"):
        hpcq.compressor("fp16").decode(buf.view(np.int8))


@pytest.mark.parametrize("name", CASTS)
def test_fuzzed_messages_never_crash(name):
    """Bit flips anywhere: a ValueError or a vector of the right length, nothing else."""
    rng = np.random.default_rng(123)
    c = hpcq.compressor(name)
    good = c.encode(_x(100))
    for _ in range(300):
        buf = good.copy()
        for pos in rng.integers(0, len(buf), rng.integers(1, 4)):
            buf[pos] ^= np.uint8(1 << rng.integers(0, 8))
        cut = len(buf) if rng.random() < 0.7 else int(rng.integers(0, len(buf)))
        try:
            y = c.decode(buf[:cut])
        except ValueError:
            continue
        assert y.shape == (100,) and y.dtype == np.float32


def test_header_is_60_bytes_and_counted():
    c = hpcq.compressor("fp32")
    assert HEADER_BYTES == 60
    assert c.wire_bytes(10) == 60 + 40
    assert c.bits_per_coordinate(10) == 8 * 100 / 10
    assert from_header(c.encode(_x(3))).spec == "fp32"


def test_rotation_block_for_short_vectors():
    assert rotation_block_for(0, 4096) == 1
    assert rotation_block_for(5, 4096) == 8
    assert rotation_block_for(10**6, 4096) == 4096


@pytest.mark.parametrize("spec", ["qsgd:bits=4", "uniform:bits=2,bucket=0", "sign",
                                  "sign:scale=drive", "hadamard+qsgd:bits=2", "topk:ratio=0.1",
                                  "terngrad", "fp16", "vqsgd:reps=3", "randk:ratio=0.1",
                                  "randk:ratio=0.1,shared=false,bits=4", "topk:k=5,bits=3"])
def test_decode_into_and_add(spec: str) -> None:
    """decode(out=) equals decode(); decode(out=, add=True) adds exactly what decode() gives."""
    comp = compressor(spec)
    rng = np.random.default_rng(3)
    x, z = (rng.standard_normal(1000).astype(np.float32) for _ in range(2))
    mx, mz = comp.encode(x, seed=1), comp.encode(z, seed=2, rank=1)
    acc = np.full(1000, np.nan, dtype=np.float32)  # never read when not adding
    assert comp.decode(mx, out=acc) is acc
    np.testing.assert_array_equal(acc, comp.decode(mx))
    comp.decode(mz, out=acc, add=True)
    np.testing.assert_array_equal(acc, comp.decode(mx) + comp.decode(mz))
    with pytest.raises(ValueError, match="out must be a writeable C-contiguous float32"):
        comp.decode(mx, out=np.empty(999, dtype=np.float32))
    with pytest.raises(ValueError, match="out must be"):
        comp.decode(mx, out=np.empty(2000, dtype=np.float32)[::2])
