"""TernGrad: reference bytes, clipping, E[Q] = clip(g), the code-3 check."""

import naive
import numpy as np
import pytest

from hpcq.kernels import quantize as q
from hpcq.kernels import ternary

KEY = 77


def _encode(x, bucket, clip, stochastic=True, key=KEY):
    out = np.empty(ternary.payload_nbytes(len(x), bucket), np.uint8)
    assert ternary.ternarize(x, out, bucket=bucket, clip=clip, stochastic=stochastic,
                             key=key) == 0
    return out


def _ints(n, seed=0):
    """Small integers: every sum, mean and variance is exact, so std matches the two-pass one."""
    return np.random.default_rng(seed).integers(-40, 41, n).astype(np.float32)


@pytest.mark.parametrize("clip", [0.0, 1.0, 2.5])
@pytest.mark.parametrize("stochastic", [True, False])
def test_matches_reference(clip, stochastic):
    for n, bucket in [(512, 512), (4096, 512), (1024, 0), (2 * q.PIECE, q.PIECE * 2)]:
        x = _ints(n, seed=n)
        got = _encode(x, bucket, clip, stochastic)
        scales, codes = naive.quantize_affine(x, bucket, 3, q.TERNARY, stochastic, KEY, clip)
        ref = np.concatenate([scales.view(np.uint8), naive.pack_codes(codes, 2)])
        np.testing.assert_array_equal(got, ref, err_msg=f"n={n} bucket={bucket}")
        y = ternary.deternarize(got, n, bucket=bucket)
        s = np.repeat(scales, bucket or n)[:n]
        np.testing.assert_array_equal(y, (codes - 1) * s)


def test_short_buckets_and_gaussian_scales():
    x = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    got = _encode(x, 64, 2.5)
    scales, _ = naive.quantize_affine(x, 64, 3, q.TERNARY, True, KEY, 2.5)
    np.testing.assert_allclose(got[:4 * 16].view(np.float32), scales, rtol=1e-6)
    y = ternary.deternarize(got, 1000, bucket=64)
    s = np.repeat(got[:64].view(np.float32), 64)[:1000]
    assert set(np.unique(y / s)) <= {-1.0, 0.0, 1.0}


def test_unbiased_for_the_clipped_vector():
    x = np.array([3.0, -0.2, 0.5, -1.0, 0.05, 0.0, 9.0, -0.7] * 2, np.float32)
    draws = 3000
    for clip in (0.0, 1.5):
        ys = np.stack([ternary.deternarize(_encode(x, 16, clip, key=k), 16, bucket=16)
                       for k in range(draws)]).astype(np.float64)
        s = np.float64(naive.bucket_interval(x, q.TERNARY, clip)[1])
        target = np.clip(x, -s, s)  # clip(g); equals x when clip = 0
        p = np.abs(target) / s
        sd = s * np.sqrt(p * (1 - p) / draws)
        assert np.all(np.abs(ys.mean(0) - target) <= 5 * sd + 1e-6 * s), clip
    assert s < 9.0  # clipping did bite


def test_constant_bucket_clips_to_zero_and_unclipped_is_exact():
    x = np.full(64, 2.5, np.float32)
    np.testing.assert_array_equal(ternary.deternarize(_encode(x, 32, 2.5), 64, bucket=32), 0 * x)
    np.testing.assert_array_equal(ternary.deternarize(_encode(x, 32, 0.0), 64, bucket=32), x)


def test_py_func_matches_compiled():
    x = _ints(300, seed=2)
    outs = []
    for f in (q._encode, q._encode.py_func):
        out = np.zeros(ternary.payload_nbytes(300, 64), np.uint8)
        f(x, 64, 3, 2, q.TERNARY, 2.5, True, np.uint64(KEY), 2, out[:20].view(np.float32),
          q.stream_views(out[20:]))
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_code_three_and_bad_parameters_are_rejected():
    good = _encode(_ints(40, seed=3), 8, 2.5)
    buf = good.copy()
    buf[-1] |= 0b11  # entry 36 gets code 3
    with pytest.raises(ValueError, match="above the top level 2"):
        ternary.deternarize(buf, 40, bucket=8)
    buf = good.copy()
    buf[:4].view(np.float32)[0] = -1.0
    with pytest.raises(ValueError, match="scale"):
        ternary.deternarize(buf, 40, bucket=8)
    for clip in (-1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match="clip"):
            ternary.ternarize(_ints(8), np.empty(6, np.uint8), bucket=8, clip=clip,
                              stochastic=True, key=0)
    x = _ints(64)
    x[9] = np.nan
    out = np.empty(ternary.payload_nbytes(64, 16), np.uint8)
    assert ternary.ternarize(x, out, bucket=16, clip=2.5, stochastic=True, key=0) == 1
