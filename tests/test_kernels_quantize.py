"""The bucketed affine quantizer (uniform, QSGD): reference bytes, bounds, statistics, abuse."""

import naive
import numba
import numpy as np
import pytest

from hpcq.kernels import quantize as q
from hpcq.kernels.bitpack import packed_nbytes

MODES = (q.MAXABS, q.L2, q.MINMAX)
KEY = 0x1234_5678_9ABC_DEF0


def _x(n, seed=0):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def _encode(x, bucket, nlev, mode, stochastic=True, key=KEY, clip=0.0):
    out = np.empty(q.payload_nbytes(len(x), bucket, nlev, mode), np.uint8)
    assert q.quantize(x, out, bucket=bucket, nlev=nlev, mode=mode, stochastic=stochastic,
                      key=key, clip=clip) == 0
    return out


def _reference(x, bucket, nlev, mode, stochastic=True, key=KEY, clip=0.0):
    scales, codes = naive.quantize_affine(x, bucket, nlev, mode, stochastic, key, clip)
    return np.concatenate([scales.view(np.uint8), naive.pack_codes(codes, q.code_width(nlev))])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("nlev", [2, 3, 9, 16, 255, 256])
def test_bytes_match_reference(mode, nlev):
    for n, bucket in [(0, 512), (1, 0), (7, 8), (9, 8), (100, 16), (513, 512), (1000, 0),
                      (1000, 64)]:
        x = _x(n, seed=n + nlev)
        for stochastic in (True, False):
            got = _encode(x, bucket, nlev, mode, stochastic)
            assert len(got) == 4 * q.n_scales(n, bucket, mode) + packed_nbytes(
                n, q.code_width(nlev))
            np.testing.assert_array_equal(got, _reference(x, bucket, nlev, mode, stochastic),
                                          err_msg=f"n={n} bucket={bucket} st={stochastic}")
            y = q.dequantize(got, n, bucket=bucket, nlev=nlev, mode=mode)
            s, c = naive.quantize_affine(x, bucket, nlev, mode, stochastic, KEY)
            ref = naive.dequantize_affine(s, c, bucket, nlev, mode)
            np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6 * np.abs(x).max(initial=0))


@pytest.mark.parametrize("mode", MODES)
def test_large_buckets_take_two_passes_and_match(mode):
    x = _x(3 * q.PIECE + 40, seed=3)
    for bucket in (0, q.PIECE + 8, 2 * q.PIECE):
        got = _encode(x, bucket, 16, mode)
        ref = _reference(x, bucket, 16, mode)
        if mode == q.L2:  # float64 sums in another order: compare the scale, then the codes
            ns = 4 * q.n_scales(len(x), bucket, mode)
            np.testing.assert_allclose(got[:ns].view(np.float32), ref[:ns].view(np.float32),
                                       rtol=1e-7)
            got, ref = got[ns:], ref[ns:]
        np.testing.assert_array_equal(got, ref)


def test_py_func_matches_compiled():
    x = _x(300, seed=4)
    for mode in MODES:
        nb = q.n_buckets(300, 64)
        ns = q.n_scales(300, 64, mode)
        outs = []
        for f in (q._encode, q._encode.py_func):
            out = np.zeros(q.payload_nbytes(300, 64, 9, mode), np.uint8)
            bad = f(x, 64, 9, 4, mode, 0.0, True, np.uint64(KEY), 2, out[:4 * ns].view(np.float32),
                    q.stream_views(out[4 * ns:]))
            assert bad == 0
            outs.append(out)
        np.testing.assert_array_equal(outs[0], outs[1])
        dec = [np.empty(300, np.float32), np.empty(300, np.float32)]
        once = dec[0]
        for add in (False, True):  # write, then add the same values: twice the first
            for f, y in zip((q._decode, q._decode.py_func), dec, strict=True):
                assert f(outs[0][:4 * ns].view(np.float32), q.stream_views(outs[0][4 * ns:]), 64,
                         9, 4, mode, 3, y, add) == (0, 0)
            np.testing.assert_array_equal(dec[0], dec[1])
            if not add:
                once = dec[0].copy()
        np.testing.assert_array_equal(dec[0], 2 * once)
        assert nb == 5


def test_py_func_two_pass_kernels():
    x = _x(2 * q.PIECE + 16, seed=5)
    b = q.PIECE + 8
    stats = [np.empty((4, 4)), np.empty((4, 4))]
    q._stats(x, b, q.MAXABS, stats[0])
    q._stats.py_func(x, b, q.MAXABS, stats[1])
    np.testing.assert_array_equal(stats[0], stats[1])
    scales, bounds = np.empty(2, np.float32), np.empty((2, 2))
    assert q._finish_stats(stats[0], len(x), b, q.MAXABS, 0.0, scales, bounds) == 0
    codes = [np.zeros(packed_nbytes(len(x), 4), np.uint8) for _ in range(2)]
    q._quantize_pieces(x, b, 16, 4, True, np.uint64(KEY), bounds, q.stream_views(codes[0]))
    q._quantize_pieces.py_func(x, b, 16, 4, True, np.uint64(KEY), bounds,
                               q.stream_views(codes[1]))
    np.testing.assert_array_equal(codes[0], codes[1])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("nlev", [2, 15, 16])
def test_error_bounds(mode, nlev):
    x = _x(2000, seed=nlev)
    for stochastic, half in ((False, 0.5), (True, 1.0)):
        y = q.dequantize(_encode(x, 256, nlev, mode, stochastic), 2000, bucket=256, nlev=nlev,
                         mode=mode)
        for k in range(0, 2000, 256):
            lo, hi = naive.bucket_interval(x[k:k + 256], mode)
            step = (float(hi) - float(lo)) / (nlev - 1)
            err = np.abs(y[k:k + 256].astype(np.float64) - x[k:k + 256]).max()
            assert err <= half * step * (1 + 1e-5), (stochastic, err, step)


@pytest.mark.parametrize("mode", MODES)
def test_constant_and_zero_buckets_decode_exactly(mode):
    for v in (0.0, 1.5, -2.25, 3e38, 1e-45):
        if mode == q.L2 and v:  # |x_i| < ||x||: x is on no level, only zeros are exact
            continue
        x = np.full(100, v, np.float32)
        for nlev in (2, 3, 16):
            y = q.dequantize(_encode(x, 32, nlev, mode), 100, bucket=32, nlev=nlev, mode=mode)
            np.testing.assert_array_equal(y, x, err_msg=f"v={v} nlev={nlev}")


def test_endpoints_and_qsgd_zero_are_exact():
    x = np.array([-3.0, 3.0, 0.0, 1.0, 0.0, -0.5, 3.0, 0.0], np.float32)
    for nlev in (3, 9, 255):  # odd: 0 is a level of the symmetric modes
        for seed in range(20):
            y = q.dequantize(_encode(x, 8, nlev, q.MAXABS, key=seed), 8, bucket=8, nlev=nlev,
                             mode=q.MAXABS)
            assert y[0] == -3.0 and y[1] == 3.0 and y[6] == 3.0
            assert y[2] == y[4] == y[7] == 0.0


def test_stochastic_rounding_is_unbiased():
    x = np.array([0.3, -1.7, 2.0, 0.01, -0.49, 1.1, 0.0, -2.0, 0.77, 1.99, -1.0, 0.5, 0.25,
                  -0.125, 1.5, -0.6], np.float32)
    n_draws = 3000
    for mode, nlev in ((q.MAXABS, 4), (q.L2, 5), (q.MINMAX, 3)):
        ys = np.stack([q.dequantize(_encode(x, 16, nlev, mode, key=s), 16, bucket=16, nlev=nlev,
                                    mode=mode) for s in range(n_draws)]).astype(np.float64)
        lo, hi = naive.bucket_interval(x, mode)
        step = (float(hi) - float(lo)) / (nlev - 1)
        frac = (x - float(lo)) / step % 1.0
        sd = step * np.sqrt(frac * (1 - frac) / n_draws)  # std of the mean of Bernoulli steps
        assert np.all(np.abs(ys.mean(0) - x) <= 5 * sd + 1e-6 * step), mode
        # the variance of each entry is the Bernoulli one, step^2 p (1 - p)
        np.testing.assert_allclose(ys.var(0), step**2 * frac * (1 - frac), rtol=0.2,
                                   atol=0.02 * step**2)


@pytest.mark.parametrize("s", [1, 2, 4, 7])
def test_qsgd_variance_bound(s):
    d = 64
    vecs = {"gauss": _x(d, seed=s), "e1": np.eye(d, dtype=np.float32)[0],
            "flat": np.full(d, d ** -0.5, np.float32)}
    bound = min(d / s**2, np.sqrt(d) / s)
    for name, v in vecs.items():
        errs = [np.sum((q.dequantize(_encode(v, 0, 2 * s + 1, q.L2, key=k), d, bucket=0,
                                     nlev=2 * s + 1, mode=q.L2) - v) ** 2.0) for k in range(400)]
        ratio = np.mean(errs) / np.sum(v.astype(np.float64) ** 2)
        assert ratio <= bound * 1.1, (name, ratio, bound)


def test_thread_count_never_changes_the_bytes(monkeypatch):
    x = _x(40_000, seed=9)
    cases = [(512, 16, q.MAXABS), (0, 15, q.L2), (q.PIECE + 8, 9, q.MINMAX), (64, 3, q.TERNARY)]
    serial = {c: _encode(x, c[0], c[1], c[2], clip=2.0) for c in cases}
    monkeypatch.setattr(q, "use_parallel", lambda n: True)
    before = numba.get_num_threads()
    try:
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            for c, ref in serial.items():
                np.testing.assert_array_equal(_encode(x, c[0], c[1], c[2], clip=2.0), ref)
                y = q.dequantize(ref, len(x), bucket=c[0], nlev=c[1], mode=c[2])
                monkeypatch.setattr(q, "use_parallel", lambda n: False)
                y1 = q.dequantize(ref, len(x), bucket=c[0], nlev=c[1], mode=c[2])
                monkeypatch.setattr(q, "use_parallel", lambda n: True)
                np.testing.assert_array_equal(y, y1)
    finally:
        numba.set_num_threads(before)


@pytest.mark.parametrize("bucket", [16, 0, q.PIECE + 8])
def test_nonfinite_input_is_counted(bucket):
    for bad in (np.nan, np.inf, -np.inf):
        x = _x(2 * q.PIECE, seed=1)
        x[q.PIECE + 3] = bad
        for mode in MODES:
            out = np.empty(q.payload_nbytes(len(x), bucket, 16, mode), np.uint8)
            assert q.quantize(x, out, bucket=bucket, nlev=16, mode=mode, stochastic=True,
                              key=1) >= 1


def test_extreme_magnitudes():
    for scale in (1e37, 1e-38, 1e-44):
        x = (_x(64, seed=2) * np.float32(scale)).astype(np.float32)
        for mode in (q.MAXABS, q.MINMAX):
            y = q.dequantize(_encode(x, 32, 256, mode, stochastic=False), 64, bucket=32,
                             nlev=256, mode=mode)
            assert np.all(np.isfinite(y))
            assert np.abs(y.astype(np.float64) - x).max() <= np.abs(x).max() / 255 * 1.01
    with pytest.raises(ValueError, match="overflows float32"):
        _encode(np.full(16, 3e38, np.float32), 16, 15, q.L2)


def test_decode_rejects_bad_scales_codes_and_lengths():
    x = _x(40, seed=6)
    good = _encode(x, 8, 15, q.L2)  # width 4, top code 14
    for bad in (np.nan, np.inf, -1.0):
        buf = good.copy()
        buf[:20].view(np.float32)[2] = bad
        with pytest.raises(ValueError, match="scale"):
            q.dequantize(buf, 40, bucket=8, nlev=15, mode=q.L2)
    buf = good.copy()
    buf[-1] = 0xFF  # code 15 > 14
    with pytest.raises(ValueError, match="above the top level 14"):
        q.dequantize(buf, 40, bucket=8, nlev=15, mode=q.L2)
    mm = _encode(x, 8, 16, q.MINMAX)
    mm[:8].view(np.float32)[:] = [1.0, -1.0]  # lo > hi
    with pytest.raises(ValueError, match="out of order"):
        q.dequantize(mm, 40, bucket=8, nlev=16, mode=q.MINMAX)
    with pytest.raises(ValueError, match="payload must be"):
        q.dequantize(good[:-1], 40, bucket=8, nlev=15, mode=q.L2)


def test_bad_layouts():
    x = _x(16)
    with pytest.raises(ValueError, match="multiple of 8"):
        _encode(x, 12, 4, q.MAXABS)
    with pytest.raises(ValueError, match="nlev"):
        _encode(x, 8, 257, q.MAXABS)
    with pytest.raises(ValueError, match="mode"):
        q.check_layout(16, 8, 4, 7)
    with pytest.raises(TypeError, match="float32"):
        q.quantize(x.astype(np.float64), np.empty(q.payload_nbytes(16, 8, 4, 0), np.uint8),
                   bucket=8, nlev=4, mode=0, stochastic=True, key=0)
    with pytest.raises(ValueError, match="out must be"):
        q.quantize(x, np.empty(3, np.uint8), bucket=8, nlev=4, mode=0, stochastic=True, key=0)
