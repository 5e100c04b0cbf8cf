"""The scalar-quantizer codecs (uniform, qsgd, sign, terngrad) through the Compressor API."""

import numpy as np
import pytest

import hpcq
from hpcq.compressors import NonFiniteInputError, decode, from_header, parse_header

SPECS = [
    "uniform", "uniform:bits=1,bucket=0", "uniform:bits=3,scale=minmax,rounding=nearest",
    "uniform:bits=8,bucket=8", "qsgd", "qsgd:s=4,bucket=0", "qsgd:bits=2,norm=linf",
    "qsgd:bits=8,rounding=nearest", "sign", "sign:scale=drive,bucket=0", "terngrad",
    "terngrad:clip=0,bucket=64,rounding=nearest",
]
DIMS = [0, 1, 7, 8, 9, 511, 513, 1000, 4096 + 3]


def _x(d, seed=0):
    return np.random.default_rng(seed).standard_normal(d).astype(np.float32)


@pytest.mark.parametrize("spec", SPECS + ["hadamard+" + s for s in SPECS[::3]]
                         + ["hadamard:block=64+sign:scale=drive"])
def test_wire_bytes_round_trip_and_header(spec):
    c = hpcq.compressor(spec)
    for d in DIMS:
        x = _x(d, seed=d)
        buf = c.encode(x, seed=3, step=d, rank=2)
        assert buf.dtype == np.uint8 and len(buf) == c.wire_bytes(d), d
        y = c.decode(buf)
        assert y.dtype == np.float32 and y.shape == (d,)
        if d:  # a smoke check: the error bounds are tested on the kernels
            assert np.linalg.norm(y - x) <= 5 * np.linalg.norm(x), d
        np.testing.assert_array_equal(decode(buf), y)
        rebuilt = from_header(buf)  # from the header alone: what decoding needs
        assert all(rebuilt.p[p.name] == c.p[p.name] for p in c.params if p.slot is not None)
        assert parse_header(buf).d == d


def test_specs_parameters_and_properties():
    assert hpcq.compressor("qsgd").spec == "qsgd:bits=4,s=7,bucket=512,norm=l2,rounding=stochastic"
    assert hpcq.compressor("qsgd:s=4").p["bits"] == 4
    assert hpcq.compressor("qsgd:bits=2").p["s"] == 1
    assert hpcq.compressor("qsgd:s=127,bits=8").p["bits"] == 8
    with pytest.raises(ValueError, match="bits=4 and s=3 disagree"):
        hpcq.compressor("qsgd:bits=4,s=3")
    with pytest.raises(ValueError, match="below its minimum 2"):
        hpcq.compressor("qsgd:bits=1")
    with pytest.raises(ValueError, match="above its maximum 8"):
        hpcq.compressor("uniform:bits=9")
    with pytest.raises(ValueError, match="multiple of 8"):
        hpcq.compressor("sign:bucket=100")
    with pytest.raises(ValueError, match="valid: maxabs, minmax"):
        hpcq.compressor("uniform:scale=l2")
    assert hpcq.compressor("uniform").unbiased and hpcq.compressor("qsgd").unbiased
    assert not hpcq.compressor("uniform:rounding=nearest").unbiased
    assert not hpcq.compressor("sign").unbiased and not hpcq.compressor("terngrad").unbiased
    assert hpcq.compressor("terngrad:clip=0").unbiased
    listing = hpcq.compressors()
    assert listing["qsgd"]["bits_per_coordinate_d1M"] == pytest.approx(4 + 32 / 512, abs=1e-3)
    assert listing["sign"]["bits_per_coordinate_d1M"] == pytest.approx(1 + 32 / 512, abs=1e-3)
    assert listing["terngrad"]["bits_per_coordinate_d1M"] == pytest.approx(2 + 32 / 512,
                                                                           abs=1e-3)


def test_qsgd_whole_vector_scale_is_ecq_sgd_bit_cost():
    # ECQ-SGD: 32 + d ceil(log2(2s + 1)) bits, plus hpcq's header
    c = hpcq.compressor("qsgd:s=4,bucket=0")
    assert c.wire_bytes(1000) == 60 + 4 + 1000 * 4 // 8


@pytest.mark.parametrize("spec", ["uniform:bits=2", "qsgd:bits=3", "terngrad:clip=0"])
def test_unbiased_through_the_api(spec):
    c = hpcq.compressor(spec)
    x = _x(16, seed=1)
    n = 2000
    ys = np.stack([c.decode(c.encode(x, seed=7, step=s)) for s in range(n)]).astype(np.float64)
    # |Q - x| <= one step <= 2 max|x| (the widest range here): a crude but safe bound on the std
    sd = ys.std(0) / np.sqrt(n)
    assert np.all(np.abs(ys.mean(0) - x) <= 5 * sd + 1e-6), spec


def test_ranks_and_steps_draw_independent_rounding():
    c = hpcq.compressor("qsgd:bits=2")
    x = _x(256, seed=2)
    a, b = c.encode(x, seed=1, rank=0), c.encode(x, seed=1, rank=1)
    assert not np.array_equal(a[60:], b[60:])
    np.testing.assert_array_equal(c.encode(x, seed=1, rank=1), b)


def test_input_forms():
    for spec in ("uniform", "qsgd", "sign", "terngrad"):
        c = hpcq.compressor(spec)
        x64 = np.linspace(-1, 1, 50)
        x32 = x64.astype(np.float32)
        np.testing.assert_array_equal(c.decode(c.encode(x64, seed=1)),
                                      c.decode(c.encode(x32, seed=1)))
        strided = _x(40)[::2]
        np.testing.assert_array_equal(c.decode(c.encode(strided, seed=1)),
                                      c.decode(c.encode(strided.copy(), seed=1)))


@pytest.mark.parametrize("spec", ["uniform", "qsgd", "sign", "terngrad", "hadamard+sign"])
def test_nonfinite_input_is_rejected(spec):
    for bad in (np.nan, np.inf, -np.inf):
        x = _x(1000)
        x[777] = bad
        with pytest.raises(NonFiniteInputError, match=r"x\[777\]"):
            hpcq.compressor(spec).encode(x)


def test_l2_norm_overflow_is_an_error():
    with pytest.raises(ValueError, match="overflows float32"):
        hpcq.compressor("qsgd:bucket=0").encode(np.full(64, 1e38, np.float32))


def test_foreign_and_mismatched_messages():
    buf = hpcq.compressor("qsgd").encode(_x(100))
    with pytest.raises(ValueError, match="not by uniform"):
        hpcq.compressor("uniform").decode(buf)
    with pytest.raises(ValueError, match="parameters"):
        hpcq.compressor("qsgd:bits=3").decode(buf)
    with pytest.raises(ValueError, match="rotation"):
        hpcq.compressor("hadamard+qsgd").decode(buf)
    with pytest.raises(ValueError, match="not by sign"):
        hpcq.compressor("sign").decode(hpcq.compressor("fp32").encode(_x(8)))
    with pytest.raises(ValueError, match="truncated"):
        hpcq.compressor("sign").decode(buf[:30])


@pytest.mark.parametrize("spec", ["uniform:bits=3", "qsgd:bits=4", "qsgd:s=5,norm=linf",
                                  "sign", "terngrad", "uniform:scale=minmax,bucket=16"])
def test_fuzzed_messages_never_crash_or_mislength(spec):
    """Bit flips in header and payload, truncation: a ValueError or a vector of length d."""
    rng = np.random.default_rng(99)
    c = hpcq.compressor(spec)
    good = c.encode(_x(300), seed=4)
    caught = 0
    for _ in range(300):
        buf = good.copy()
        lo = 0 if rng.random() < 0.3 else 60  # mostly payload: the header has a CRC
        for pos in rng.integers(lo, len(buf), rng.integers(1, 4)):
            buf[pos] ^= np.uint8(1 << rng.integers(0, 8))
        cut = len(buf) if rng.random() < 0.8 else int(rng.integers(0, len(buf)))
        try:
            y = c.decode(buf[:cut])
        except ValueError:
            caught += 1
            continue
        assert y.shape == (300,) and y.dtype == np.float32
    assert caught > 50


def test_corrupted_scales_and_codes_are_detected():
    c = hpcq.compressor("qsgd:bits=4,bucket=64")  # s = 7: codes 15 are invalid
    buf = c.encode(_x(128))
    bad = buf.copy()
    bad[60 + 8:].fill(0xFF)
    with pytest.raises(ValueError, match="above the top level 14"):
        c.decode(bad)
    bad = buf.copy()
    bad[60:64].view(np.float32)[0] = np.nan
    with pytest.raises(ValueError, match="scale"):
        c.decode(bad)
    t = hpcq.compressor("terngrad:bucket=64")
    bad = t.encode(_x(128))
    bad[60 + 8] = 0xFF
    with pytest.raises(ValueError, match="above the top level 2"):
        t.decode(bad)
