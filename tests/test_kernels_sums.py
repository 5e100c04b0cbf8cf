"""Fixed-order vectorised sums: values, identical bits in every caller, the sign-bit packer."""

import numpy as np
import pytest
from numba import njit, prange

from hpcq.kernels import sums
from hpcq.kernels._config import EXACT, EXACT_PARALLEL


@njit(**EXACT)
def _all(x, i0, n):
    return (sums.sum_abs(x, i0, n), sums.sum_sq(x, i0, n), sums.sum_id(x, i0, n),
            sums.sum_abs64(x, i0, n), sums.sum_sq64(x, i0, n), sums.sum_id64(x, i0, n))


def _per_bucket(x, b, out):
    for k in prange(out.shape[0]):
        out[k] = sums.sum_sq(x, k * b, b)


_serial = njit(**EXACT)(_per_bucket)
_parallel = njit(**EXACT_PARALLEL)(_per_bucket)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values(dtype):
    x = np.random.default_rng(0).standard_normal(5000).astype(dtype)
    for n in (0, 1, 7, 16, 63, 64, 65, 127, 500, 4096):
        got = _all(x, np.uint64(3), n)
        x64 = x[3:3 + n].astype(np.float64)
        ref = (np.abs(x64).sum(), x64 @ x64, x64.sum())
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got[:3], ref, rtol=tol, atol=tol)
        np.testing.assert_allclose(got[3:], ref, rtol=1e-12, atol=1e-12)


def test_same_bits_in_every_caller():
    """The point of the module: a fastmath reduction rounds differently per call site."""
    x = np.random.default_rng(1).standard_normal(64 * 1000).astype(np.float32)
    a, b = np.empty(1000, np.float32), np.empty(1000, np.float32)
    _serial(x, 64, a)
    _parallel(x, 64, b)
    np.testing.assert_array_equal(a, b)
    assert _all(x, 0, 64)[1] == a[0]


def test_float32_overflow_gives_inf_and_float64_does_not():
    x = np.full(100, 3e38, np.float32)
    got = _all(x, 0, 100)
    assert np.isinf(got[0]) and np.isinf(got[1])
    assert got[3] == pytest.approx(3e40, rel=1e-6) and np.isfinite(got[4])


@njit(**EXACT)
def _bits(x, i0, n, codes, b0):
    return sums.sign_bits_sum_abs(x, i0, n, codes, b0)


def test_sign_bits_match_packbits_and_stay_in_their_bytes():
    x = np.random.default_rng(2).standard_normal(5000).astype(np.float32)
    x[::7] = 0.0
    x[3::11] = -0.0
    for n in (0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 100, 512, 4096, 4992):
        codes = np.full(700, 0xAA, np.uint8)
        s = _bits(x, 8, n, codes, 1)
        ref = np.packbits(x[8:8 + n] >= 0, bitorder="little")
        np.testing.assert_array_equal(codes[1:1 + len(ref)], ref)
        assert codes[0] == 0xAA and np.all(codes[1 + len(ref):] == 0xAA)
        assert s == pytest.approx(np.abs(x[8:8 + n].astype(np.float64)).sum(), rel=1e-5)
