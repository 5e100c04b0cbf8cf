"""Natural compression kernel: the naive reference, unbiasedness, variance, bad input."""

import naive
import numpy as np
import pytest

from hpcq.kernels import natural


def _encode(x, key):
    out = np.empty(natural.payload_nbytes(len(x)), np.uint8)
    assert natural.natural_encode(x, out, key=key) == (0, 0)
    return out


def test_matches_reference_and_py_func():
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 100):
        x = (rng.standard_normal(n) * 10.0 ** rng.uniform(-40, 37, n)).astype(np.float32)
        x[::5] = 0.0
        x[1::7] = -0.0
        x[2::11] = 2.0**-140  # float32 subnormal
        key = 1234 + n
        got = _encode(x, key)
        y = natural.natural_decode(got, n)
        np.testing.assert_array_equal(y, naive.natural_round(x, key))
        assert np.array_equal(np.signbit(y), np.signbit(x))
        np.testing.assert_array_equal(got[n:], naive.pack_codes(np.signbit(x), 1))
        out = np.empty_like(got)
        assert natural._encode.py_func(x, np.uint64(key), out) == (0, 0)
        np.testing.assert_array_equal(out, got)
        y2 = np.empty(n, np.float32)
        assert natural._decode.py_func(got, y2, False) == 0
        np.testing.assert_array_equal(y2, y)


def test_powers_of_two_are_exact_and_results_bracket_x():
    x = np.array([1.0, -0.5, 2.0**-126, 2.0**127, 3.0, -5.0, 1e-3], np.float32)
    for key in range(20):
        y = natural.natural_decode(_encode(x, key), len(x))
        assert y[:4].tolist() == x[:4].tolist()
        a = np.abs(x[4:]).astype(np.float64)
        lo = 2.0 ** np.floor(np.log2(a))
        assert np.all((np.abs(y[4:]) == lo) | (np.abs(y[4:]) == 2 * lo))


def test_unbiased_with_variance_at_most_one_eighth():
    """Mean over 4000 keys within 5 standard errors of x; E(C(x) - x)^2 = 4^e m(1 - m)."""
    x = np.array([1.0 + 1 / 3, 3.0, -1.75, 0.1, 9e-30, -9e20, 5 * 2.0**-130], np.float32)
    ys = np.array([natural.natural_decode(_encode(x, k), len(x)) for k in range(4000)],
                  np.float64)
    x64 = x.astype(np.float64)
    a = np.abs(x64)
    lo = np.where(a >= 2.0**-126, 2.0 ** np.floor(np.log2(a)), 0.0)
    span = np.where(a >= 2.0**-126, lo, 2.0**-126)
    p = (a - lo) / span
    var = span**2 * p * (1 - p)  # exact variance of the two-point rounding
    assert np.all(np.abs(ys.mean(0) - x64) <= 5 * np.sqrt(var / len(ys)) + 1e-300)
    np.testing.assert_allclose(ys.var(0), var, rtol=0.15)  # p in [0.2, 0.8]: ~4 se
    normal = a >= 2.0**-126
    assert np.all(var[normal] <= x64[normal] ** 2 / 8 * (1 + 1e-12))
    assert var[0] == pytest.approx(x64[0] ** 2 / 8)  # m = 1/3 attains the bound


def test_bad_input_and_payloads():
    x = np.array([1.0, np.inf, -np.nan, 2.0**127 * 1.5, 2.0**127], np.float32)
    out = np.empty(natural.payload_nbytes(5), np.uint8)
    assert natural.natural_encode(x, out, key=1) == (2, 1)
    good = _encode(np.ones(9, np.float32), 3)
    bad = good.copy()
    bad[4] = 255
    with pytest.raises(ValueError, match="255"):
        natural.natural_decode(bad, 9)
    with pytest.raises(ValueError, match="payload must be"):
        natural.natural_decode(good[:-1], 9)
    with pytest.raises(TypeError, match="float32"):
        natural.natural_encode(x.astype(np.float64), out, key=1)
