"""Sparsify kernels: O(d) top-k selection, random-k packing, sparse decoding."""

import naive
import numpy as np
import pytest

from hpcq.kernels import sparsify as sp
from hpcq.kernels import subset

KEY = np.uint64(0x1234_5678_9ABC_DEF0)


def _x(n, seed=0, ties=True):
    x = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    if ties and n > 3:
        x[: n // 3] = np.round(x[: n // 3])  # many equal magnitudes, and zeros
        x[1] = -0.0
    return x


def _check_topk(x, k, bits):
    n = x.shape[0]
    idx, vals, codes, m, bad = sp.topk_encode(x, k, bits, KEY)
    assert bad == 0
    ref = naive.topk_indices(x, k)
    w = sp.index_width(n)
    np.testing.assert_array_equal(idx, naive.pack_codes(ref, w)[: (k * w + 7) // 8])
    if bits == 0:
        np.testing.assert_array_equal(vals, x[ref])
    else:
        assert m == np.abs(x).max()
        want = naive.sym_codes(x[ref], m, bits, KEY, ref)
        np.testing.assert_array_equal(codes, naive.pack_codes(want, bits)[: len(codes)])
    return idx, vals, codes, m


@pytest.mark.parametrize("n", [1, 2, 7, 9, 100, 1000, 5001])
@pytest.mark.parametrize("bits", [0, 1, 4, 8])
def test_topk_matches_full_sort(n, bits):
    x = _x(n, n)
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        _check_topk(x, k, bits)


def test_topk_edge_values():
    x = np.array([0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38, 1e-38, 5, -5, 5, 0], np.float32)
    for k in range(len(x) + 1):
        _check_topk(x, k, 0)
    _check_topk(np.zeros(50, np.float32), 7, 3)  # all tied, scale 0
    _check_topk(np.full(50, -2.5, np.float32), 49, 2)
    x = np.ones(3000, np.float32)
    x[::7] = 1 + 2**-23  # candidates differ only in the last bit
    _check_topk(x, 500, 0)


def test_topk_nonfinite_is_counted():
    x = _x(100)
    x[[3, 50]] = [np.nan, -np.inf]
    assert sp.topk_encode(x, 10, 0, KEY)[4] == 2


def test_topk_chunked_and_parallel_are_identical(monkeypatch):
    x = _x(20_011, 3)
    ref = [sp.topk_encode(x, k, b, KEY) for k, b in [(1, 0), (200, 0), (5000, 3)]]
    monkeypatch.setattr(sp, "use_parallel", lambda n: True)
    monkeypatch.setattr(sp, "_CHUNK", 1000)  # 21 chunks, unequal last one
    for (k, b), r in zip([(1, 0), (200, 0), (5000, 3)], ref, strict=True):
        got = sp.topk_encode(x, k, b, KEY)
        for a, c in zip(got, r, strict=True):
            np.testing.assert_array_equal(a, c)


def test_py_func_matches_compiled(monkeypatch):
    x = _x(300, 4)
    ref = [sp.topk_encode(x, 40, b, KEY) for b in (0, 3)]
    bm = subset.sample_bitmap(300, 40, KEY)
    rref = sp.randk_encode(x, bm, 40, 3, True, KEY)
    dref = sp.sparse_decode(300, 40, ref[1][1], ref[1][2], 3, ref[1][3], 2.0, idx_buf=ref[1][0])
    for name in ("_hist", "_collect", "_select", "_emit", "_scatter_stream", "_scatter_idx",
                 "_nonfinite"):
        monkeypatch.setattr(sp, name, getattr(sp, name).py_func)
    for name in ("_bitmap_indices", "_floyd"):
        monkeypatch.setattr(subset, name, getattr(subset, name).py_func)
    for b, r in zip((0, 3), ref, strict=True):
        for a, c in zip(sp.topk_encode(x, 40, b, KEY), r, strict=True):
            np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(subset.sample_bitmap(300, 40, KEY), bm)
    for a, c in zip(sp.randk_encode(x, bm, 40, 3, True, KEY), rref, strict=True):
        np.testing.assert_array_equal(a, c)
    got = sp.sparse_decode(300, 40, ref[1][1], ref[1][2], 3, ref[1][3], 2.0, idx_buf=ref[1][0])
    np.testing.assert_array_equal(got, dref)
    np.testing.assert_array_equal(
        sp.sparse_decode(300, 40, rref[1], rref[2], 3, rref[3], 1.0, bitmap=bm),
        sp.sparse_decode(300, 40, rref[1], rref[2], 3, rref[3], 1.0, idx_buf=rref[0]))


@pytest.mark.parametrize("width", [1, 5, 8, 13, 17, 24, 31, 32])
def test_get_wide_reads_packed_codes(width):
    from numba import njit

    @njit
    def read(buf, n, w, out):
        for i in range(n):
            out[i] = sp.get_wide(buf, i, w)

    codes = np.random.default_rng(width).integers(0, 2**width, 101, dtype=np.uint64)
    out = np.empty(101, np.uint64)
    read(naive.pack_codes(codes, width), 101, width, out)
    np.testing.assert_array_equal(out, codes)


def test_randk_encode_matches_reference_and_checks_all_of_x():
    x = _x(777, 9)
    bm = subset.sample_bitmap(777, 50, KEY)
    ref = naive.floyd_subset(777, 50, KEY)
    idx, vals, codes, m, bad = sp.randk_encode(x, bm, 50, 0, True, KEY)
    np.testing.assert_array_equal(vals, x[ref])
    np.testing.assert_array_equal(idx, naive.pack_codes(ref, 10))
    idx, vals, codes, m, bad = sp.randk_encode(x, bm, 50, 5, False, KEY)
    assert idx.size == 0 and m == np.abs(x[ref]).max()
    want = naive.sym_codes(x[ref], m, 5, KEY, ref)
    np.testing.assert_array_equal(codes, naive.pack_codes(want, 5))
    y = x.copy()
    y[np.setdiff1d(np.arange(777), ref)[0]] = np.inf  # not among the selected entries
    assert sp.randk_encode(y, bm, 50, 0, True, KEY)[4] == 1


def test_sparse_decode_round_trip_and_rejects_bad_streams():
    x = _x(500, 2)
    idx, vals, codes, m, _ = sp.topk_encode(x, 60, 0, KEY)
    ref = naive.topk_indices(x, 60)
    want = np.zeros(500, np.float32)
    want[ref] = x[ref] * np.float32(3.0)
    np.testing.assert_array_equal(sp.sparse_decode(500, 60, vals, codes, 0, m, 3.0, idx_buf=idx),
                                  want)
    w = sp.index_width(500)
    for bad_idx, why in [(ref[::-1], "increasing"), (np.r_[ref[:-1], 511], "range"),
                         (np.r_[ref[:2], ref[1], ref[3:]], "increasing")]:
        buf = naive.pack_codes(bad_idx, w)
        with pytest.raises(ValueError, match=why):
            sp.sparse_decode(500, 60, vals, codes, 0, m, 1.0, idx_buf=buf)
    v2 = vals.copy()
    v2[5] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        sp.sparse_decode(500, 60, v2, codes, 0, m, 1.0, idx_buf=idx)
    with pytest.raises(ValueError, match="scale"):
        sp.sparse_decode(500, 60, vals, codes, 3, float("inf"), 1.0, idx_buf=idx)
    with pytest.raises(ValueError, match="too short"):
        sp.sparse_decode(500, 60, vals, codes, 0, m, 1.0, idx_buf=idx[:-2])
    with pytest.raises(ValueError, match="too few values"):
        sp.sparse_decode(500, 60, vals[:10], codes, 0, m, 1.0, idx_buf=idx)


def test_quantized_values_are_unbiased_and_on_grid():
    v = np.array([-1.0, -0.3, 0.0, 0.2, 0.9999, 1.0], np.float32)
    x = np.concatenate([v, np.zeros(10, np.float32)])
    acc = np.zeros(16)
    trials = 2000
    for s in range(trials):
        idx, vals, codes, m, _ = sp.topk_encode(x, 6, 2, np.uint64(s))
        acc += sp.sparse_decode(16, 6, vals, codes, 2, m, 1.0, idx_buf=idx)
    # step 2/3: variance <= step^2/4 per entry
    assert np.all(np.abs(acc / trials - x) < 5 * (1 / 3) / np.sqrt(trials))


def test_wrappers_check_arguments():
    with pytest.raises(TypeError):
        sp.topk_encode(np.zeros(4), 1, 0, KEY)
    with pytest.raises(ValueError, match="k must be"):
        sp.topk_encode(np.zeros(4, np.float32), 5, 0, KEY)
    with pytest.raises(ValueError, match="value bits"):
        sp.topk_encode(np.zeros(4, np.float32), 1, 9, KEY)
    with pytest.raises(ValueError, match="bitmap"):
        sp.randk_encode(np.zeros(65, np.float32), np.zeros(1, np.uint64), 1, 0, True, KEY)
    assert [sp.index_width(n) for n in (1, 2, 3, 4, 5, 1024, 1025)] == [1, 1, 2, 2, 3, 10, 11]
