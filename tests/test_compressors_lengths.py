"""hpcq.compressors.lengths against codes built bit by bit (and decoded back)."""

import itertools
import math

import numpy as np
import pytest

from hpcq.compressors.lengths import (
    elias_gamma_bits,
    elias_omega_bits,
    huffman_bits,
    huffman_bound_bits,
    level_counts,
    qsgd_elias_bits,
)


# ------------------------------------------------------------ naive codes (strings of 0/1)
def omega_code(n):
    """Elias omega: prepend binary(n), recurse on floor(log2 n) while > 1; end with 0."""
    code = "0"
    while n > 1:
        b = bin(n)[2:]
        code = b + code
        n = len(b) - 1
    return code


def omega_decode(bits, i):
    """(value, next position) of the omega code starting at bits[i]."""
    n = 1
    while bits[i] == "1":
        b = bits[i:i + n + 1]
        i += n + 1
        n = int(b, 2)
    return n, i + 1


def gamma_code(n):
    b = bin(n)[2:]
    return "0" * (len(b) - 1) + b


def qsgd_code(levels):
    """QSGD's Code_s without the 32-bit norm: (omega(gap), sign, omega(|level|)) per non-zero."""
    out, prev = [], -1
    for i, lv in enumerate(levels):
        if lv:
            out.append(omega_code(i - prev) + ("1" if lv < 0 else "0") + omega_code(abs(lv)))
            prev = i
    return "".join(out)


def qsgd_decode(bits, d):
    levels, pos, i = np.zeros(d, np.int64), -1, 0
    while i < len(bits):
        gap, i = omega_decode(bits, i)
        neg = bits[i] == "1"
        mag, i = omega_decode(bits, i + 1)
        pos += gap
        levels[pos] = -mag if neg else mag
    return levels


def best_prefix_code_bits(counts):
    """Brute force: min sum c_i l_i over code lengths satisfying Kraft (small alphabets)."""
    counts = [c for c in counts if c > 0]
    if len(counts) == 1:
        return counts[0]
    k = len(counts)
    best = math.inf
    for ls in itertools.product(range(1, k), repeat=k):
        if sum(2.0**-n for n in ls) <= 1:
            best = min(best, sum(c * n for c, n in zip(counts, ls, strict=True)))
    return best


# ------------------------------------------------------------ tests
def test_elias_lengths_match_the_codes():
    ns = np.arange(1, 5000)
    np.testing.assert_array_equal(elias_omega_bits(ns), [len(omega_code(int(n))) for n in ns])
    np.testing.assert_array_equal(elias_gamma_bits(ns), [len(gamma_code(int(n))) for n in ns])
    assert [elias_omega_bits(n) for n in (1, 2, 3, 4, 7, 8, 16)] == [1, 3, 3, 6, 6, 7, 11]
    for n in (2**31 - 1, 2**31, 2**40 + 5, 2**62):
        assert elias_omega_bits(n) == len(omega_code(n))
        assert elias_gamma_bits(n) == len(gamma_code(n))
        assert omega_decode(omega_code(n) + "1", 0) == (n, len(omega_code(n)))
    assert isinstance(elias_omega_bits(5), int) and elias_omega_bits(np.array([5])).shape == (1,)
    for bad in (0, -3, [1, 0], 2.5):
        with pytest.raises(ValueError, match=">= 1"):
            elias_omega_bits(bad)
        with pytest.raises(ValueError, match=">= 1"):
            elias_gamma_bits(bad)


def test_huffman_is_optimal_and_within_one_bit_per_symbol_of_the_bound():
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(1, 6))
        counts = rng.integers(1, 50, k)
        L, H, d = huffman_bits(counts), huffman_bound_bits(counts), int(counts.sum())
        assert L == best_prefix_code_bits(list(counts))
        assert H <= L + 1e-9
        assert L < H + d if k > 1 else L == d
    assert huffman_bits([1, 1, 2, 4]) == 14 == huffman_bound_bits([1, 1, 2, 4])  # dyadic
    assert huffman_bits([7]) == 7 and huffman_bound_bits([7]) == 0.0
    assert huffman_bits([]) == 0 and huffman_bound_bits([]) == 0.0
    assert huffman_bits([0, 3, 0, 5]) == huffman_bits([3, 5]) == 8  # zeros are left out
    for bad in ([-1, 2], [1.5, 2]):
        with pytest.raises(ValueError):
            huffman_bits(bad)
    with pytest.raises(ValueError, match="1-D"):
        huffman_bound_bits([[1, 2]])


def test_huffman_bound_is_the_ecq_sgd_formula():
    counts = np.array([900, 40, 40, 10, 10])
    d = counts.sum()
    assert huffman_bound_bits(counts) == pytest.approx(sum(c * math.log2(d / c) for c in counts))
    big = np.array([10**6, 3, 1])
    assert huffman_bits(big) >= huffman_bound_bits(big)


def test_qsgd_elias_bits_count_a_decodable_code():
    rng = np.random.default_rng(1)
    for d, density in ((1, 1.0), (50, 0.1), (300, 0.5), (1000, 0.02)):
        for _ in range(5):
            lv = rng.integers(-9, 10, d) * (rng.random(d) < density)
            bits = qsgd_code(lv)
            assert qsgd_elias_bits(lv) == 32 + len(bits)
            np.testing.assert_array_equal(qsgd_decode(bits, d), lv)
    assert qsgd_elias_bits(np.zeros(10, np.int64)) == 32
    assert qsgd_elias_bits(np.zeros(0, np.int64)) == 32
    assert qsgd_elias_bits(np.ones(100, np.int64)) == 32 + 3 * 100  # gap 1, sign, level 1
    with pytest.raises(ValueError, match="integers"):
        qsgd_elias_bits(np.ones(3))


def test_level_counts():
    lv = np.array([0, 0, -1, 2, 0, -1, 5])
    np.testing.assert_array_equal(level_counts(lv), [2, 3, 1, 1])  # -1, 0, 2, 5
    assert level_counts(np.zeros(0, np.int64)).shape == (0,)
    assert huffman_bits(level_counts(lv)) >= huffman_bound_bits(level_counts(lv))
