"""FP8/FP6/FP4 casts and MX blocks: bit for bit against ml_dtypes and the naive references."""

import naive
import numpy as np
import pytest

from hpcq.kernels import fp8, mx

ml_dtypes = pytest.importorskip("ml_dtypes")

DTYPES = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2,
          "e3m2": ml_dtypes.float6_e3m2fn, "e2m3": ml_dtypes.float6_e2m3fn,
          "e2m1": ml_dtypes.float4_e2m1fn}


def _hard_float32s(seed=0):
    """Random float32 over the whole range, subnormals, and the ties and edges of every format:
    each representable value, the midpoints between neighbours and one float32 ulp either side."""
    rng = np.random.default_rng(seed)
    parts = [rng.standard_normal(20000) * 10.0 ** rng.uniform(-44, 38, 20000),
             rng.uniform(-1, 1, 2000) * 2.0**-126,  # float32 subnormals
             np.array([0.0, -0.0, 3.4028235e38, -3.4028235e38, 1.4e-45])]
    for fmt in DTYPES:
        v = np.unique(np.abs(fp8.value_table(fmt)[np.isfinite(fp8.value_table(fmt))]))
        mids = (v[1:] + v[:-1]) / 2
        for base in (v, mids, 2 * v[-1:], v[-1:] + (v[-1] - v[-2]) / 2):
            b32 = base.astype(np.float32)
            parts += [b32, -b32, np.nextafter(b32, np.float32(np.inf)),
                      np.nextafter(b32, np.float32(-np.inf))]
    with np.errstate(over="ignore"):
        x = np.concatenate(parts).astype(np.float32)
    return x[np.isfinite(x)]


def _all_float16s():
    h = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    return h[np.isfinite(h)]


@pytest.mark.parametrize("fmt", list(DTYPES))
def test_cast_is_ml_dtypes_bit_for_bit(fmt):
    """Every finite float16 and hard float32s: the same bits as ml_dtypes after clamping to
    the largest finite value (ml_dtypes gives NaN/Inf beyond it, the kernel saturates)."""
    big = fp8.max_finite(fmt)
    for x in (_all_float16s().astype(np.float32), _hard_float32s()):
        ref = np.clip(x, -big, big).astype(DTYPES[fmt]).view(np.uint8)
        np.testing.assert_array_equal(fp8.cast(x, fmt), ref)
    h = _all_float16s()  # ml_dtypes straight from float16, too
    np.testing.assert_array_equal(fp8.cast(h.astype(np.float32), fmt),
                                  np.clip(h, -big, big).astype(DTYPES[fmt]).view(np.uint8))


@pytest.mark.parametrize("fmt", list(DTYPES))
def test_value_table_and_naive_match_ml_dtypes(fmt):
    tab = fp8.value_table(fmt)
    codes = np.arange(len(tab), dtype=np.uint8)
    ref = codes.view(DTYPES[fmt]).astype(np.float32)
    finite = np.isfinite(tab)
    np.testing.assert_array_equal(tab[finite], ref[finite])
    assert not np.any(np.isfinite(ref[~finite]))  # NaN codes (e4m3), Inf/NaN (e5m2) only
    x = _hard_float32s(1)[:5000]
    q = naive.minifloat_round(x.astype(np.float64), fmt)
    np.testing.assert_array_equal(naive.minifloat_code(q, fmt), fp8.cast(x, fmt))


def test_cast_py_func_matches_and_saturates():
    x = _hard_float32s(2)[::50].copy()
    for fmt in ("e4m3", "e5m2", "e2m1"):
        m, bias, maxc, ss = fp8._format(fmt)
        out = np.empty(len(x), np.uint8)
        assert fp8._cast.py_func(x, m, bias, maxc, ss, out) == 0
        np.testing.assert_array_equal(out, fp8.cast(x, fmt))
    big = np.array([1e30, -1e30, 449.0, 464.0, 465.0], np.float32)
    assert fp8.table("e4m3")[fp8.cast(big, "e4m3")].tolist() == [448, -448, 448, 448, 448]
    with pytest.raises(ValueError, match="NaN/Inf"):
        fp8.cast(np.array([1.0, np.nan], np.float32), "e4m3")
    with pytest.raises(ValueError, match="unknown format 'e3m4'"):
        fp8.cast(big, "e3m4")


def _fp8_payload(x, fmt, bucket):
    out = np.empty(fp8.payload_nbytes(len(x), bucket), np.uint8)
    assert fp8.fp8_encode(x, out, fmt=fmt, bucket=bucket) == 0
    return out


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
@pytest.mark.parametrize("bucket", [0, 1, 7, 32, 100])
def test_fp8_scaled_matches_naive(fmt, bucket):
    rng = np.random.default_rng(bucket)
    for n in (1, 5, 31, 33, 257):
        x = (rng.standard_t(2, n) * 10.0 ** rng.uniform(-3, 3)).astype(np.float32)
        x[::13] = 0.0
        if n > 40:
            x[40:80] = 0.0  # all-zero buckets
        got = _fp8_payload(x, fmt, bucket)
        scales, codes = naive.fp8_scaled(x, fmt, bucket)
        ns = 4 * len(scales)
        np.testing.assert_array_equal(got[:ns].view(np.float32), scales)
        np.testing.assert_array_equal(got[ns:], codes)
        y = fp8.fp8_decode(got, n, fmt=fmt, bucket=bucket)
        b = bucket or n
        ref = fp8.value_table(fmt)[codes] * np.repeat(scales, b)[:n]
        np.testing.assert_array_equal(y, ref)
        # the kernels' Python bodies agree
        m, bias, maxc, ss = fp8._format(fmt)
        if bucket:
            sc, cd = np.empty(len(scales), np.float32), np.empty(n, np.uint8)
            assert fp8._blocks.py_func(x, bucket, fp8.max_finite(fmt), m, bias, maxc, ss,
                                       sc, cd) == 0
            np.testing.assert_array_equal(cd, codes)
        y2 = np.empty(n, np.float32)
        assert fp8._decode.py_func(scales, codes, b, fp8.table(fmt), y2, False) == 0
        np.testing.assert_array_equal(y2, y)


def test_fp8_bad_payloads_are_value_errors():
    x = np.linspace(-1, 1, 40).astype(np.float32)
    good = _fp8_payload(x, "e4m3", 32)
    bad = good.copy()
    bad[:4] = np.frombuffer(np.float32(-1.0).tobytes(), np.uint8)
    with pytest.raises(ValueError, match="corrupted payload"):
        fp8.fp8_decode(bad, 40, fmt="e4m3", bucket=32)
    bad = good.copy()
    bad[8 + 3] = 0x7F  # E4M3 NaN
    with pytest.raises(ValueError, match="not finite e4m3"):
        fp8.fp8_decode(bad, 40, fmt="e4m3", bucket=32)
    with pytest.raises(ValueError, match="payload must be"):
        fp8.fp8_decode(good[:-1], 40, fmt="e4m3", bucket=32)
    x[3] = np.inf
    assert fp8.fp8_encode(x, np.empty(48, np.uint8), fmt="e4m3", bucket=32) == 1


# ---------------------------------------------------------------- MX


def _mx_payload(x, fmt):
    out = np.empty(mx.payload_nbytes(len(x), fmt), np.uint8)
    assert mx.mx_encode(x, out, fmt=fmt) == 0
    return out


def _mx_inputs(seed):
    rng = np.random.default_rng(seed)
    yield rng.standard_normal(1000).astype(np.float32)  # 1000: a short last block
    yield (rng.standard_t(1.5, 333) * 1e-20).astype(np.float32)
    yield np.zeros(70, np.float32)
    wide = rng.choice([-1.0, 1.0], 256) * 10.0 ** rng.uniform(-44, 38, 256)
    yield wide.astype(np.float32)
    tiny = np.full(64, 1e-38, np.float32)  # shared exponent clamped at -127
    tiny[::3] = 2.0**-149
    yield tiny
    yield np.full(33, 3.4028235e38, np.float32) * np.resize([1, -1], 33).astype(np.float32)
    edges = np.zeros(32 * 7, np.float32)  # per block: max exactly 2^k, 2^k - ulp, ties
    for b, top in enumerate([1.0, np.nextafter(np.float32(2), np.float32(0)), 448.0, 6.0,
                             7.75, 2.0**-120, 2.0**100]):
        blk = np.linspace(-top, top, 32).astype(np.float32)
        blk[0] = top
        edges[32 * b:32 * b + 32] = blk
    yield edges
    yield np.array([0.5], np.float32)


@pytest.mark.parametrize("fmt", list(mx.MX_FORMATS))
def test_mx_blocks_match_the_spec_transcription(fmt):
    width = mx.MX_FORMATS[fmt][1]
    for x in _mx_inputs(1):
        n = len(x)
        got = _mx_payload(x, fmt)
        scales, codes = naive.mx_blocks(x, fmt)
        nb = len(scales)
        np.testing.assert_array_equal(got[:nb], scales)
        np.testing.assert_array_equal(got[nb:], naive.pack_codes(codes, width))
        y = mx.mx_decode(got, n, fmt=fmt)
        ref = mx.element_table(fmt)[codes].astype(np.float64) * np.repeat(
            2.0 ** (scales.astype(np.float64) - 127), 32)[:n]
        np.testing.assert_array_equal(y, ref.astype(np.float32))
        out = np.empty(len(got), np.uint8)  # the Python bodies agree
        w, emax, isint, m, bias, maxc, ss = mx._params(fmt)
        assert mx._encode.py_func(x, w, emax, isint, m, bias, maxc, ss, mx._POW2_32, out) == 0
        np.testing.assert_array_equal(out, got)
        y2 = np.empty(n, np.float32)
        assert mx._decode.py_func(got, n, w, isint, mx.element_table(fmt), mx._POW2_32, y2,
                                  False) == 0
        np.testing.assert_array_equal(y2, y)


@pytest.mark.parametrize("fmt", [f for f in mx.MX_FORMATS if f != "mxint8"])
def test_mx_elements_and_scales_are_ml_dtypes(fmt):
    """Elements are ml_dtypes' casts of V / X (clamped); scales are float8_e8m0fnu of X."""
    elem = mx.MX_FORMATS[fmt][0]
    for x in _mx_inputs(2):
        scales, codes = naive.mx_blocks(x, fmt)
        e8 = (2.0 ** (scales.astype(np.float64) - 127)).astype(ml_dtypes.float8_e8m0fnu)
        np.testing.assert_array_equal(e8.view(np.uint8), scales)
        xs = np.repeat(2.0 ** (127.0 - scales), 32)[:len(x)] * x.astype(np.float64)
        big = fp8.max_finite(elem)
        ref = np.clip(xs.astype(np.float32), -big, big).astype(DTYPES[elem]).view(np.uint8)
        np.testing.assert_array_equal(codes, ref)


def test_mx_zero_block_scale_and_int8_range():
    z = _mx_payload(np.zeros(32, np.float32), "mxfp4")
    assert z[0] == 0  # max 0 taken as 2^-126: shared_exp -126 - 2, clamped to -127
    assert _mx_payload(np.zeros(32, np.float32), "mxint8")[0] == 1  # -126 - 0
    x = np.array([1.999, -1.999, -1.0, 0.0078125 * 1.5], np.float32)  # 1.5/128: a tie
    y = mx.mx_decode(_mx_payload(x, "mxint8"), 4, fmt="mxint8")
    assert y.tolist() == [127 / 64, -127 / 64, -1.0, 2 / 128]  # clamp +-127; tie to even


def test_mx_bad_payloads_are_value_errors():
    x = np.random.default_rng(0).standard_normal(40).astype(np.float32)
    good = _mx_payload(x, "mxfp8_e4m3")
    for pos, val, msg in [(0, 0xFF, "NaN scale"), (2 + 5, 0x7F, "invalid"),
                          (2 + 5, 0xFF, "invalid")]:
        bad = good.copy()
        bad[pos] = val
        with pytest.raises(ValueError, match=msg):
            mx.mx_decode(bad, 40, fmt="mxfp8_e4m3")
    big = _mx_payload(np.full(32, -3e38, np.float32), "mxint8")
    assert big[0] == 127 + 127  # 3e38 = 1.76 * 2^127, emax 0
    big[1] = 0x80  # -2 * 2^127 = -2^128: never written, beyond float32
    with pytest.raises(ValueError, match="beyond float32"):
        mx.mx_decode(big, 32, fmt="mxint8")
    with pytest.raises(ValueError, match="payload must be"):
        mx.mx_decode(good[1:], 40, fmt="mxfp8_e4m3")
    with pytest.raises(ValueError, match="unknown MX format 'mxfp7'"):
        mx.mx_decode(good, 40, fmt="mxfp7")
    x[33] = np.nan
    assert mx.mx_encode(x, np.empty(len(good), np.uint8), fmt="mxfp8_e4m3") == 1
