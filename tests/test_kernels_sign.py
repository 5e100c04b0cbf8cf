"""Scaled sign: reference bytes, scales, sign(0) = +1, overflow fallback, threads, hostile input."""

import naive
import numba
import numpy as np
import pytest

from hpcq.kernels import sign
from hpcq.kernels.quantize import PIECE, stream_views


def _x(n, seed=0):
    x = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    x[::17] = 0.0
    x[5::19] = -0.0
    return x


def _encode(x, bucket, mode):
    out = np.empty(sign.payload_nbytes(len(x), bucket), np.uint8)
    assert sign.sign_encode(x, out, bucket=bucket, mode=mode) == 0
    return out


@pytest.mark.parametrize("mode", [sign.L1, sign.DRIVE])
def test_matches_reference(mode):
    for n, bucket in [(0, 8), (1, 0), (7, 8), (9, 8), (100, 16), (513, 512), (1000, 0),
                      (3 * PIECE + 24, PIECE + 8), (2 * PIECE + 5, 0)]:
        x = _x(n, seed=n)
        got = _encode(x, bucket, mode)
        scales, bits = naive.scaled_sign(x, bucket, mode)
        ns = 4 * len(scales)
        assert len(got) == ns + (n + 7) // 8
        np.testing.assert_allclose(got[:ns].view(np.float32), scales, rtol=2e-6)
        np.testing.assert_array_equal(got[ns:], naive.pack_codes(bits, 1))
        y = sign.sign_decode(got, n, bucket=bucket)
        b = bucket or max(n, 1)
        ref = np.where(bits, 1, -1) * np.repeat(got[:ns].view(np.float32), b)[:n]
        np.testing.assert_array_equal(y, ref.astype(np.float32))


def test_sign_of_zero_is_plus():
    x = np.array([0.0, -0.0, 1.0, -1.0, 0.0, -0.0, 0.0, 0.0, -0.0], np.float32)
    out = _encode(x, 8, sign.L1)
    assert out[8:].tolist() == [0b11110111, 0b1]
    np.testing.assert_array_equal(np.sign(sign.sign_decode(out, 9, bucket=8)[:8]),
                                  [1, 1, 1, -1, 1, 1, 1, 1])


def test_scales_l1_is_mse_optimal_and_drive_zero_bucket():
    x = _x(64, seed=3)
    y = sign.sign_decode(_encode(x, 64, sign.L1), 64, bucket=64)
    err = [np.sum((np.sign(y) * s - x) ** 2) for s in np.abs(y[0]) * np.array([0.9, 1, 1.1])]
    assert err[1] < err[0] and err[1] < err[2]
    z = np.zeros(16, np.float32)
    np.testing.assert_array_equal(sign.sign_decode(_encode(z, 8, sign.DRIVE), 16, bucket=8), z)


def test_float32_overflow_of_block_sums_falls_back_to_float64():
    x = np.full(1024, 3e38, np.float32)
    x[1::2] = -3e38
    for mode in (sign.L1, sign.DRIVE):
        out = _encode(x, 1024, mode)
        assert out[:4].view(np.float32)[0] == np.float32(3e38)


def test_py_func_matches_compiled():
    x = _x(700, seed=4)
    outs, sums = [], []
    for f in (sign._encode, sign._encode.py_func):
        out = np.zeros(sign.payload_nbytes(700, 64), np.uint8)
        s = np.empty((11, 2))
        assert f(x, 64, sign.DRIVE, 3, s, out[:44].view(np.float32), out[44:]) == 0
        outs.append(out)
        sums.append(s)
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(sums[0], sums[1])
    scales = np.empty(11, np.float32)
    assert sign._finish.py_func(sums[0], 700, 64, sign.DRIVE, scales) == 0
    np.testing.assert_array_equal(scales, outs[0][:44].view(np.float32))
    ys = [np.empty(700, np.float32), np.empty(700, np.float32)]
    once = ys[0]
    for add in (False, True):  # write, then add the same values: twice the first
        for f, y in zip((sign._decode, sign._decode.py_func), ys, strict=True):
            assert f(scales, stream_views(outs[0][44:]), 64, 2, y, add) == 0
        np.testing.assert_array_equal(ys[0], ys[1])
        if not add:
            once = ys[0].copy()
    np.testing.assert_array_equal(ys[0], 2 * once)


def test_thread_count_never_changes_the_bytes(monkeypatch):
    x = _x(50_000, seed=5)
    ref = {b: _encode(x, b, sign.DRIVE) for b in (512, 0)}
    monkeypatch.setattr(sign, "blocks", lambda units, n: (True, min(units, 8)))
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            for b, r in ref.items():
                np.testing.assert_array_equal(_encode(x, b, sign.DRIVE), r)
                np.testing.assert_array_equal(sign.sign_decode(r, len(x), bucket=b),
                                              np.where(x >= 0, 1, -1) * np.repeat(
                                                  r[:4 * (-(-len(x) // (b or len(x))))]
                                                  .view(np.float32), b or len(x))[:len(x)])
    finally:
        numba.set_num_threads(before)


def test_nonfinite_and_bad_payloads():
    for bad in (np.nan, np.inf, -np.inf):
        x = _x(3000, seed=1)
        x[2500] = bad
        out = np.empty(sign.payload_nbytes(3000, 512), np.uint8)
        assert sign.sign_encode(x, out, bucket=512, mode=sign.L1) == 1
    good = _encode(_x(40, seed=2), 8, sign.L1)
    for bad in (np.nan, np.inf, -0.5):
        buf = good.copy()
        buf[:20].view(np.float32)[1] = bad
        with pytest.raises(ValueError, match="scale"):
            sign.sign_decode(buf, 40, bucket=8)
    with pytest.raises(ValueError, match="payload must be"):
        sign.sign_decode(good[:-1], 40, bucket=8)
    with pytest.raises(ValueError, match="multiple of 8"):
        _encode(_x(8), 4, sign.L1)
    with pytest.raises(TypeError, match="float32"):
        sign.sign_encode(_x(8).astype(np.float64), good, bucket=8, mode=sign.L1)
