"""EDEN's kernel against the dense definition (tests/naive.py), py_func twin, hostile input."""

import naive
import numpy as np
import pytest

from hpcq.compressors.eden import lloyd_max
from hpcq.kernels import eden, hadamard
from hpcq.kernels.blockpack import stream_views

KEY = 0x1234_5678_9ABC_DEF0


def _roundtrip(x, B, bits, offset, mode=eden.UNBIASED):
    """Kernel path: rotate, encode, decode, unrotate (float32)."""
    n = hadamard.padded_length(len(x), B)
    y = hadamard.rotate(x, B, KEY)
    lo, hi, _ = eden.layout(n, B, bits)
    out = np.zeros(eden.payload_nbytes(n, B, bits), np.uint8)
    cl, ch = lloyd_max(lo), lloyd_max(hi)
    assert eden.encode(y, out, block=B, bits=bits, offset=offset, centroids_lo=cl,
                       centroids_hi=ch, mode=mode) == 0
    yq = eden.decode(out, n, block=B, bits=bits, offset=offset, centroids_lo=cl,
                     centroids_hi=ch)
    return hadamard.unrotate(yq, B, KEY, len(x)), out


@pytest.mark.parametrize("d,B", [(1, 1), (5, 8), (100, 32), (300, 128), (1000, 64)])
@pytest.mark.parametrize("bits", [1.0, 2.0, 3.0, 2.5, 1.3, 8.0])
@pytest.mark.parametrize("mode", [eden.UNBIASED, eden.MSE])
def test_matches_the_dense_definition(d, B, bits, mode):
    x = np.random.default_rng(d).standard_normal(d).astype(np.float32)
    x[::7] = 0.0
    B = min(B, hadamard.padded_length(d, 1) if d > 1 else 1)
    B = 1 << (max(B, 1).bit_length() - 1) if d >= B else B
    offset = 12345
    got, out = _roundtrip(x, B, bits, offset, mode)
    lo, hi, _ = eden.layout(hadamard.padded_length(d, B), B, bits)
    want, scales, _ = naive.eden_roundtrip(x, B, bits, KEY, offset, lloyd_max(lo), lloyd_max(hi),
                                           mse=mode == eden.MSE)
    nb = len(scales)
    np.testing.assert_allclose(out[:4 * nb].view(np.float32), scales, rtol=1e-5)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, np.linalg.norm(x)))


def test_fractional_streams_and_widths():
    n, B = 4096, 1024
    assert eden.layout(n, B, 2.5) == (2, 3, 2048)
    assert eden.layout(n, B, 3.0) == (3, 3, 0)
    assert eden.layout(n, B, 1.25) == (1, 2, 1024)
    # scales, hi stream (padded to 4 bytes), lo stream
    assert eden.payload_nbytes(n, B, 2.5) == 16 + 2048 * 3 // 8 + 2048 * 2 // 8
    assert eden.payload_nbytes(24, 8, 1.5) == 12 + 4 + 2
    for bad in (0.5, 8.5):
        with pytest.raises(ValueError, match="bits"):
            eden.layout(n, B, bad)
    with pytest.raises(ValueError, match="multiple"):
        eden.layout(100, 64, 2.0)


def test_zero_and_constant_blocks():
    x = np.zeros(256, np.float32)
    x[128:] = 0.7  # block 0 all zero, block 1 constant
    got, out = _roundtrip(x, 128, 2.0, 7)
    scales = out[:8].view(np.float32)
    assert scales[0] == 0.0 and scales[1] > 0
    np.testing.assert_array_equal(got[:128][np.abs(got[:128]) > 1e-6], [])
    assert np.linalg.norm(got - x) ** 2 < 0.5 * np.linalg.norm(x) ** 2


def test_tiny_and_huge_norms_do_not_overflow():
    for v in (1e-40, 1e37):  # subnormal input, and squares beyond float32
        x = np.full(64, v, np.float32)
        x[::3] = -v
        got, _ = _roundtrip(x, 64, 3.0, 0)
        assert np.all(np.isfinite(got))
        assert np.linalg.norm((got - x).astype(np.float64)) <= 0.5 * np.linalg.norm(
            x.astype(np.float64))


def test_nonfinite_is_reported_and_corrupted_scales_rejected():
    y = np.random.default_rng(1).standard_normal(256).astype(np.float32)
    y[200] = np.inf
    out = np.zeros(eden.payload_nbytes(256, 128, 2.0), np.uint8)
    c = lloyd_max(2)
    assert eden.encode(y, out, block=128, bits=2.0, offset=0, centroids_lo=c, centroids_hi=c,
                       mode=eden.UNBIASED) == 1
    y[200] = 1.0
    eden.encode(y, out, block=128, bits=2.0, offset=0, centroids_lo=c, centroids_hi=c,
                mode=eden.UNBIASED)
    for v in (-1.0, np.nan, np.inf):
        bad = out.copy()
        bad[4:8] = np.frombuffer(np.float32(v).tobytes(), np.uint8)
        with pytest.raises(ValueError, match="block scale"):
            eden.decode(bad, 256, block=128, bits=2.0, offset=0, centroids_lo=c,
                        centroids_hi=c)
    with pytest.raises(ValueError, match="payload must be"):
        eden.decode(out[:-1], 256, block=128, bits=2.0, offset=0, centroids_lo=c,
                    centroids_hi=c)
    with pytest.raises(TypeError, match="float32"):
        eden.encode(y.astype(np.float64), out, block=128, bits=2.0, offset=0, centroids_lo=c,
                    centroids_hi=c, mode=eden.UNBIASED)


def test_py_func_matches_compiled():
    n, B, k = 1280, 64, 6
    y = np.random.default_rng(3).standard_normal(n).astype(np.float32)
    lo, hi, nhi = eden.layout(n, B, 2.3)
    cl, bl, tl = eden._tables(lloyd_max(lo))
    ch, bh, th = eden._tables(lloyd_max(hi))
    outs = []
    for f in (eden._encode, eden._encode.py_func):
        out = np.zeros(eden.payload_nbytes(n, B, 2.3), np.uint8)
        _, _, _, sb, sc, phi, plo = eden._split(out, n, B, 2.3)
        assert f(y, k, 77, lo, hi, nhi, bl, cl, bh, ch, eden.UNBIASED, sc.view(np.float32),
                 stream_views(phi), stream_views(plo)) == 0
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])
    _, _, _, sb, sc, phi, plo = eden._split(outs[0], n, B, 2.3)
    ys = []
    for f in (eden._decode, eden._decode.py_func):
        z = np.ones(n, np.float32)
        assert f(sc.view(np.float32), k, 77, lo, hi, nhi, tl, th, stream_views(phi),
                 stream_views(plo), z, True) == 0
        ys.append(z)
    np.testing.assert_array_equal(ys[0], ys[1])
    once = eden.decode(outs[0], n, block=B, bits=2.3, offset=77, centroids_lo=lloyd_max(lo),
                       centroids_hi=lloyd_max(hi))
    np.testing.assert_array_equal(ys[0], once + np.float32(1))
