"""The fp8, mx and natural codecs through the compressor API: specs, wire, fuzzing, bias."""


import naive
import numpy as np
import pytest

import hpcq
from hpcq.compressors import HEADER_BYTES, NonFiniteInputError, compressors, decode, parse_header
from hpcq.compressors.base import Keys
from hpcq.kernels import mx

SPECS = ["fp8", "fp8:format=e5m2", "fp8:scale=block", "fp8:format=e5m2,scale=block,bucket=7",
         *(f"mx:format={f}" for f in mx.MX_FORMATS), "natural", "hadamard:block=64+mx:format=mxfp4",
         "hadamard+fp8"]
DS = [0, 1, 7, 31, 32, 33, 100, 1000]


def _x(d, seed=0):
    return np.random.default_rng(seed).standard_normal(d).astype(np.float32)


@pytest.mark.parametrize("spec", SPECS)
def test_round_trip_wire_and_header(spec):
    c = hpcq.compressor(spec)
    for d in DS:
        x = _x(d, seed=d)
        buf = c.encode(x, seed=5, step=d, rank=2)
        assert buf.shape == (c.wire_bytes(d),)
        y = c.decode(buf)
        assert y.dtype == np.float32 and y.shape == (d,)
        np.testing.assert_array_equal(decode(buf), y)  # rebuilt from the header alone
        if d and c.name != "natural":  # deterministic: every message within the bound
            x64 = x.astype(np.float64)
            assert np.sum((y - x64) ** 2) <= c.error_bound(d) * np.sum(x64**2)
        acc = np.ones(d, np.float32)
        np.testing.assert_array_equal(c.decode(buf, out=acc, add=True), y + 1)
        np.testing.assert_array_equal(c.decode(buf, out=acc), y)


def test_payloads_are_the_kernels_and_the_naive_references():
    x = _x(100, seed=9)
    p = hpcq.compressor("fp8:format=e5m2,scale=block,bucket=32").encode(x)[HEADER_BYTES:]
    scales, codes = naive.fp8_scaled(x, "e5m2", 32)
    np.testing.assert_array_equal(p[:16].view(np.float32), scales)
    np.testing.assert_array_equal(p[16:], codes)
    p = hpcq.compressor("mx:format=mxfp6_e2m3").encode(x)[HEADER_BYTES:]
    scales, codes = naive.mx_blocks(x, "mxfp6_e2m3")
    np.testing.assert_array_equal(p[:4], scales)
    np.testing.assert_array_equal(p[4:], naive.pack_codes(codes, 6))
    assert len(p) == 4 + 75  # 100 elements of 6 bits in 75 bytes
    c = hpcq.compressor("natural")
    buf = c.encode(x, seed=3, step=4, rank=1)
    keys = Keys.derive(3, 4, 1)
    np.testing.assert_array_equal(c.decode(buf), naive.natural_round(x, int(keys.private)))


def test_spec_errors_name_the_parameter():
    with pytest.raises(ValueError, match=r"fp8: parameter format='e4m4'; valid: e4m3, e5m2"):
        hpcq.compressor("fp8:format=e4m4")
    with pytest.raises(ValueError, match="mx: parameter format='mxfp5'; valid: mxfp8_e4m3"):
        hpcq.compressor("mx:format=mxfp5")
    with pytest.raises(ValueError, match="fp8: parameter scale='row'"):
        hpcq.compressor("fp8:scale=row")
    with pytest.raises(ValueError, match="fp8: parameter bucket=0 is below its minimum"):
        hpcq.compressor("fp8:scale=block,bucket=0")
    with pytest.raises(ValueError, match="natural: unknown parameter"):
        hpcq.compressor("natural:bits=8")
    listing = compressors()
    assert listing["natural"]["unbiased"] and not listing["mx"]["unbiased"]
    assert listing["mx"]["params"]["format"]["choices"] == list(mx.MX_FORMATS)
    assert hpcq.compressor("mx:format=mxfp4").bits_per_coordinate(1 << 20) == pytest.approx(
        4.25, abs=1e-3)
    assert hpcq.compressor("natural").theory_bits(10) == (90, 0)


@pytest.mark.parametrize("spec", SPECS[:-2])
def test_block_count_mismatch_names_the_payload(spec):
    """A header whose d does not fit the payload (another block count): one ValueError line."""
    c = hpcq.compressor(spec)
    good = c.encode(_x(100))
    h = parse_header(good)
    for d in (68, 99, 101, 1 << 40):
        bad = good.copy()
        c._write_header(bad, h.flags, h.aux, d, h.seed, h.step, h.payload_nbytes)
        with pytest.raises(ValueError, match=r"payload is \d+ bytes; .* takes \d+|unused bits"):
            c.decode(bad)


@pytest.mark.parametrize("spec", SPECS[:-2])
def test_fuzzed_messages_never_crash(spec):
    """Bit flips in the payload (and sometimes the header), cuts: a ValueError or a vector of
    the right length; never another exception."""
    rng = np.random.default_rng(7)
    c = hpcq.compressor(spec)
    x = _x(300) * np.where(np.arange(300) % 5, 1e-3, 10).astype(np.float32)
    good = c.encode(x, seed=2)
    caught = 0
    for _ in range(300):
        buf = good.copy()
        lo = 0 if rng.random() < 0.2 else HEADER_BYTES
        for pos in rng.integers(lo, len(buf), rng.integers(1, 6)):
            buf[pos] ^= np.uint8(1 << rng.integers(0, 8))
        if rng.random() < 0.3:  # plant a byte the encoder never writes where it matters
            buf[HEADER_BYTES + rng.integers(0, 16)] = 0xFF
        cut = len(buf) if rng.random() < 0.8 else int(rng.integers(0, len(buf)))
        try:
            y = c.decode(buf[:cut])
        except ValueError:
            caught += 1
            continue
        assert y.shape == (300,) and y.dtype == np.float32
    assert caught > 60


@pytest.mark.parametrize("spec", ["fp8", "fp8:scale=block", "mx:format=mxfp4", "natural"])
def test_nonfinite_input_is_rejected_with_its_index(spec):
    x = _x(70)
    x[41] = np.nan
    with pytest.raises(NonFiniteInputError, match=r"x\[41\] = nan"):
        hpcq.compressor(spec).encode(x)


def test_natural_unbiased_over_seeds_and_nmse_below_one_eighth():
    c = hpcq.compressor("natural")
    x = (_x(512, seed=1) * np.float32(7.0)) ** 3
    ys = np.array([c.decode(c.encode(x, seed=s)) for s in range(400)], np.float64)
    x64 = x.astype(np.float64)
    err = ys - x64
    a = np.abs(x64)
    lo = 2.0 ** np.floor(np.log2(a))
    var = lo**2 * (a / lo - 1) * (2 - a / lo)  # 4^e m (1 - m): exact, not sampled
    assert np.all(np.abs(err.mean(0)) <= 5 * np.sqrt(var / len(ys)))
    nmse = np.sum(err**2, axis=1) / np.sum(x64**2)
    assert nmse.mean() <= 0.125 and nmse.mean() > 0.05  # typical data: about 1/12
    with pytest.raises(ValueError, match="above 2\\^127"):
        c.encode(np.array([1.0, 2.0**127 * 1.25], np.float32))


def test_mx_saturation_and_e5m2_tensor_scale():
    """A block max just under 2^(emax+1) X is clamped to the largest normal (the spec's
    saturation); fp8's tensor scale maps max|x| to exactly F."""
    x = np.array([1.99, 0.5] + [0.0] * 30, np.float32)
    y = hpcq.compressor("mx:format=mxfp4").decode(hpcq.compressor("mx:format=mxfp4").encode(x))
    assert y[:2].tolist() == [1.5, 0.5]  # X = 2^(0 - 2): 1.99 / X = 7.96 -> 6
    c = hpcq.compressor("fp8:format=e5m2")
    x = np.array([-3.0, 1.0, 1e-9], np.float32)
    p = c.encode(x)[HEADER_BYTES:]
    assert p[:4].view(np.float32)[0] == np.float32(3.0 / 57344)
    np.testing.assert_allclose(c.decode(c.encode(x)), [-3.0, 1.0, 0.0], rtol=2**-3, atol=1e-9)
