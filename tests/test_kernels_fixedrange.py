"""Fixed-range (DQ-GD cube) quantizer kernels: codes, stream layout, clipping, chunk seams."""

import naive
import numpy as np
import pytest

from hpcq.kernels import fixedrange as fr
from hpcq.kernels import subset

KEY = np.uint64(77)


def _x(n, seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def _layout(n, bits, key=KEY):
    b0 = int(np.floor(np.float32(bits)))
    extra = fr.total_bits(n, bits) - n * b0
    bm = subset.sample_bitmap(n, extra, key) if extra else None
    widths = np.full(n, b0)
    if bm is not None:
        widths += np.unpackbits(bm.view(np.uint8), bitorder="little")[:n]
    return b0, bm, widths


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 100, 1001])
@pytest.mark.parametrize("bits", [0.3, 1, 1.5, 2.5, 3, 7.75, 15.5, 16])
@pytest.mark.parametrize("stochastic", [False, True])
def test_matches_reference(n, bits, stochastic):
    x = _x(n, n, 0.7)
    r = 1.25
    b0, bm, widths = _layout(n, bits)
    assert widths.sum() == fr.total_bits(n, bits) == int(np.floor(n * np.float64(np.float32(bits))))
    buf, clipped, bad = fr.encode(x, b0, bm, r, stochastic, KEY)
    ref_buf, ref_dec = naive.fixedrange(x, widths, r, stochastic, KEY)
    assert buf.shape == ((widths.sum() + 7) // 8,) and bad == 0
    np.testing.assert_array_equal(buf, ref_buf)
    assert clipped == int(np.sum(np.abs(x) > r))
    np.testing.assert_allclose(fr.decode(buf, n, b0, bm, r), ref_dec, rtol=0, atol=1e-6)


def test_nearest_is_within_half_a_cell_and_mid_points_are_fixed():
    n, r = 2000, 0.5
    x = np.linspace(-r, r, n).astype(np.float32)
    for bits in (1, 2, 3, 2.5, 8):
        b0, bm, widths = _layout(n, bits)
        y = fr.decode(fr.encode(x, b0, bm, r, False, KEY)[0], n, b0, bm, r)
        half = r / 2.0**widths
        assert np.all(np.abs(y - x) <= half * (1 + 1e-6))
        z = fr.decode(fr.encode(y, b0, bm, r, False, KEY)[0], n, b0, bm, r)
        np.testing.assert_array_equal(y, z)  # mid-points are reconstructed exactly


def test_stochastic_is_unbiased_inside_the_end_mid_points():
    r, b = 1.0, 2
    x = np.array([-0.74, -0.3, 0.0, 0.11, 0.6, 0.749], np.float32)  # mid-points at +-0.75, +-0.25
    acc = np.zeros(len(x))
    trials = 2000
    for s in range(trials):
        acc += fr.decode(fr.encode(x, b, None, r, True, np.uint64(s))[0], len(x), b, None, r)
    assert np.all(np.abs(acc / trials - x) < 5 * 0.25 / np.sqrt(trials))


def test_clipping_is_counted_not_silent():
    x = np.array([-3, -1, -0.999, 0, 1, 1.001, 7, np.float32(1) + 2**-23], np.float32)
    buf, clipped, bad = fr.encode(x, 3, None, 1.0, False, KEY)
    assert clipped == 4 and bad == 0
    y = fr.decode(buf, len(x), 3, None, 1.0)
    assert y[0] == y[1] == -0.875 and y[6] == 0.875
    x[2], x[3] = np.nan, -np.inf
    assert fr.encode(x, 3, None, 1.0, False, KEY)[2] == 2


@pytest.mark.parametrize("bits", [0.3, 1, 2.5, 3, 9.2, 16])
def test_chunk_seams_and_parallel_variant(bits, monkeypatch):
    n = 5003
    x = _x(n, 1)
    b0, bm, _ = _layout(n, bits)
    ref = [fr.encode(x, b0, bm, 2.0, st, KEY) for st in (False, True)]
    monkeypatch.setattr(fr, "CHUNK", 64)  # chunk edges fall inside bytes
    monkeypatch.setattr(fr, "use_parallel", lambda n: True)
    for st, (buf, clipped, _) in zip((False, True), ref, strict=True):
        got, gclipped, _ = fr.encode(x, b0, bm, 2.0, st, KEY)
        np.testing.assert_array_equal(got, buf)
        assert gclipped == clipped
        np.testing.assert_array_equal(fr.decode(got, n, b0, bm, 2.0),
                                      naive.fixedrange(x, _layout(n, bits)[2], 2.0, st, KEY)[1])


def test_py_func_matches_compiled(monkeypatch):
    n = 300
    x = _x(n, 2)
    b0, bm, _ = _layout(n, 2.5)
    ref = fr.encode(x, b0, bm, 1.0, True, KEY)
    dec = fr.decode(ref[0], n, b0, bm, 1.0)
    monkeypatch.setattr(fr, "CHUNK", 64)
    monkeypatch.setattr(fr, "use_parallel", lambda n: True)
    ref3 = fr.encode(x, 3, None, 1.0, True, KEY)
    dec3 = fr.decode(ref3[0], n, 3, None, 1.0)
    for name in ("_offsets", "_encode_par", "_merge_edges", "_decode_par", "_encode8_par",
                 "_decode8_par"):
        monkeypatch.setattr(fr, name, getattr(fr, name).py_func)
    got = fr.encode(x, b0, bm, 1.0, True, KEY)
    np.testing.assert_array_equal(got[0], ref[0])
    assert got[1:] == ref[1:]
    np.testing.assert_array_equal(fr.decode(got[0], n, b0, bm, 1.0), dec)
    got = fr.encode(x, 3, None, 1.0, True, KEY)
    np.testing.assert_array_equal(got[0], ref3[0])
    assert got[1:] == ref3[1:]
    np.testing.assert_array_equal(fr.decode(got[0], n, 3, None, 1.0), dec3)


def test_total_bits_is_exact_for_the_float32_rate():
    assert fr.total_bits(1000, 2.5) == 2500
    assert fr.total_bits(1000, 0.1) == 100  # float32(0.1) is slightly above 0.1
    assert fr.total_bits(1000, 0.7) == 699  # float32(0.7) is slightly below 0.7
    assert fr.total_bits(0, 3.3) == 0


def test_wrappers_check_arguments():
    x = np.zeros(10, np.float32)
    with pytest.raises(TypeError):
        fr.encode(np.zeros(3), 1, None, 1.0, False, KEY)
    with pytest.raises(ValueError, match="range"):
        fr.encode(x, 1, None, 0.0, False, KEY)
    with pytest.raises(ValueError, match="b0"):
        fr.encode(x, 17, None, 1.0, False, KEY)
    with pytest.raises(ValueError, match="16 bits"):
        fr.encode(x, 16, np.zeros(1, np.uint64), 1.0, False, KEY)
    with pytest.raises(ValueError, match="bitmap"):
        fr.encode(x, 1, np.zeros(2, np.uint64), 1.0, False, KEY)
    with pytest.raises(ValueError, match="too short"):
        fr.decode(np.zeros(3, np.uint8), 10, 3, None, 1.0)
