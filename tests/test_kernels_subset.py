"""Uniform k-subsets: Floyd's algorithm against a set-based reference, uniformity, Lemire draws."""

import naive
import numpy as np
import pytest

from hpcq.kernels import subset

KEY = np.uint64(0x1234_5678_9ABC_DEF0)


def _members(bitmap, n):
    return np.flatnonzero(np.unpackbits(bitmap.view(np.uint8), bitorder="little")[:n])


@pytest.mark.parametrize("n", [1, 5, 63, 64, 65, 200, 1000])
def test_sample_bitmap_is_floyd(n):
    for k in sorted({0, 1, n // 4, n // 2, n // 2 + 1, n - 1, n}):
        key = np.uint64(n * 1000 + k)
        bm = subset.sample_bitmap(n, k, key)
        assert bm.shape == ((n + 63) // 64,)
        np.testing.assert_array_equal(_members(bm, n), naive.floyd_subset(n, k, key))
        assert int(sum(bin(int(w)).count("1") for w in bm)) == k  # no bit past n


def test_sample_bitmap_is_uniform():
    n, k, trials = 12, 4, 3000
    counts = np.zeros(n)
    pairs = 0
    for s in range(trials):
        m = _members(subset.sample_bitmap(n, k, np.uint64(s)), n)
        counts[m] += 1
        pairs += 0 in m and 1 in m
    p = k / n
    assert np.all(np.abs(counts - trials * p) < 5 * np.sqrt(trials * p * (1 - p)))
    p2 = k * (k - 1) / (n * (n - 1))  # joint inclusion of a pair, as without replacement
    assert abs(pairs - trials * p2) < 5 * np.sqrt(trials * p2)


def test_below_is_exact_lemire():
    for bound in (1, 2, 3, 1000, 2**31 + 1, 2**32 - 1):
        for j in range(50):
            assert int(subset.below(KEY, j, bound)) == naive.below_py(KEY, j, bound) < bound


def test_bitmap_indices_and_py_func(monkeypatch):
    bm = subset.sample_bitmap(1000, 123, KEY)
    idx = subset.bitmap_indices(bm, 123)
    np.testing.assert_array_equal(idx, naive.floyd_subset(1000, 123, KEY))
    with pytest.raises(ValueError, match="exactly 100"):
        subset.bitmap_indices(bm, 100)
    with pytest.raises(ValueError, match="exactly 200"):
        subset.bitmap_indices(bm, 200)
    with pytest.raises(TypeError):
        subset.bitmap_indices(bm.view(np.int64), 123)
    with pytest.raises(ValueError, match="k <= n"):
        subset.sample_bitmap(3, 4, KEY)
    for name in ("_bitmap_indices", "_floyd"):
        monkeypatch.setattr(subset, name, getattr(subset, name).py_func)
    np.testing.assert_array_equal(subset.sample_bitmap(1000, 123, KEY), bm)
    np.testing.assert_array_equal(subset.bitmap_indices(bm, 123), idx)
