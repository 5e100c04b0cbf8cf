"""Entropy-coded message lengths: what the papers count beyond fixed-length codes.

hpcq's wire format is fixed-length by default
(:meth:`~hpcq.compressors.base.Compressor.theory_bits`); these pure functions give the
lengths the papers quote for variable-length codes of the same messages, so results can
report them next to the wire bytes.  ``qsgd:code=elias|huffman|rans`` sends such codes
(:mod:`hpcq.kernels.elias`, :mod:`hpcq.kernels.huffman`, :mod:`hpcq.kernels.rans`), and
their coded lengths are these: the omega gap code's bits are
``qsgd_elias_bits(levels) - 32`` (one stream over the whole vector, the norms sent
apart), the Huffman stream's are :func:`huffman_bits` of the level counts, and rANS
comes within a fraction of a percent of :func:`huffman_bound_bits` (tests in
``tests/test_kernels_entropy.py``).

* ECQ-SGD (Wu et al., ICML 2018; papers.md 4(a), T11): a Huffman code of the quantized
  levels takes at most ``sum_k d_k log2(d / d_k)`` bits (:func:`huffman_bound_bits`; the
  empirical entropy of the d symbols, which is in fact a *lower* bound for any prefix
  code of single symbols); :func:`huffman_bits` is the exact optimal-prefix-code length.
* QSGD (Alistarh et al., NeurIPS 2017; papers.md 5, T14): the norm in 32 bits, then per
  non-zero level the Elias (recursive, i.e. omega) code of the gap to it, a sign bit and
  the Elias code of its magnitude (:func:`qsgd_elias_bits`, the paper's Theorem 3.2
  code).  Caveat: the paper's ``2.8 d + 32`` bits for ``s = sqrt(d)`` (its Corollary 3.3)
  is stated for a *different*, dense-regime encoding of its full version; this gap code
  takes exactly ``3 d + 32`` bits on the flat vector ``v = 1/sqrt(d)`` (every level 1),
  and about ``2.78 d + 32`` on gaussian vectors.

A symbol-by-symbol prefix code never goes below 1 bit per entry, so Huffman coding of the
levels caps the compression ratio at 32x; ratios like ECQ-SGD's ~80x need the entropy
bound (i.e. coding runs or blocks of symbols) or gap coding such as QSGD's.
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np


def _counts(counts: Any) -> np.ndarray:
    """The non-zero counts as int64; ValueError for negative or non-integer counts."""
    c = np.asarray(counts)
    if c.ndim > 1:
        raise ValueError(f"counts must be 1-D, got shape {c.shape}")
    if c.size and not np.issubdtype(c.dtype, np.integer):
        if not np.all(np.isfinite(c)) or np.any(c != np.round(c)):
            raise ValueError("counts must be whole numbers")
    c = c.astype(np.int64).ravel()
    if np.any(c < 0):
        raise ValueError("counts must be >= 0")
    return c[c > 0]


def huffman_bound_bits(counts: Any) -> float:
    """ECQ-SGD's Huffman bound ``sum_k d_k log2(d / d_k)`` over the non-zero counts.

    ``d_k`` symbols of kind k, ``d = sum_k d_k``: ``d`` times the empirical entropy of the
    message (papers.md 4(a), T11).  0 for one kind of symbol or an empty message.  ECQ-SGD
    calls it an upper bound on the Huffman-coded length; it is in fact a lower bound on
    any prefix code of the symbols one at a time (:func:`huffman_bits` is within ``d``
    bits above it), reachable only by coding runs or blocks of symbols.
    """
    c = _counts(counts).astype(np.float64)
    if c.size == 0:
        return 0.0
    d = c.sum()
    return float(np.sum(c * np.log2(d / c)))


def huffman_bits(counts: Any) -> int:
    """Exact length in bits of an optimal (Huffman) prefix code of a message with these
    symbol counts: ``sum_k d_k len_k``.

    Built with a min-heap: each merge of the two lightest subtrees adds one bit to every
    symbol under them, so the length is the sum of the merged weights.  A message of one
    kind of symbol takes 1 bit per symbol (a code needs at least one bit to be sent).
    With ``H`` = :func:`huffman_bound_bits` and ``d`` symbols: ``H <= L < H + d`` for two
    or more kinds (Huffman's ``H <= L < H + 1`` per symbol), and ``L = d = H + d`` for one.
    """
    c = _counts(counts)
    if c.size == 0:
        return 0
    if c.size == 1:
        return int(c[0])
    heap = [int(v) for v in c]
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        total += merged
        heapq.heappush(heap, merged)
    return total


def _as_positive(n: Any) -> np.ndarray:
    a = np.asarray(n)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise ValueError("Elias codes are defined for integers >= 1")
    a = a.astype(np.int64)
    if np.any(a < 1):
        raise ValueError("Elias codes are defined for integers >= 1")
    return a


def _floor_log2(a: np.ndarray) -> np.ndarray:
    """floor(log2 a) for int64 ``a >= 1``, exactly (no float rounding)."""
    out = np.zeros(a.shape, np.int64)
    rest = a.copy()
    for shift in (32, 16, 8, 4, 2, 1):
        big = rest >= (1 << shift)
        out[big] += shift
        rest[big] >>= shift
    return out


def elias_gamma_bits(n: Any) -> Any:
    """Length of the Elias gamma code of integers ``n >= 1``: ``2 floor(log2 n) + 1``.

    Vectorised: an int for a scalar, an int64 array for an array.
    """
    a = _as_positive(n)
    out = 2 * _floor_log2(a) + 1
    return int(out) if out.ndim == 0 else out


def elias_omega_bits(n: Any) -> Any:
    """Length of the Elias omega (recursive) code of integers ``n >= 1``, QSGD's "Elias code".

    The code of n is the binary forms of ``n``, ``floor(log2 n)``, ``floor(log2
    floor(log2 n))``, ... (each while it is > 1; ``floor(log2 m) + 1`` bits each), written
    in reverse order, then a terminating 0: ``1 + sum_m (floor(log2 m) + 1)``.  1 -> 1 bit,
    2 and 3 -> 3, 4..7 -> 6, 8 -> 7, 16 -> 11.  Vectorised like :func:`elias_gamma_bits`.
    """
    m = _as_positive(n)
    out = np.ones(m.shape, np.int64)
    while True:
        more = m > 1
        if not np.any(more):
            break
        lg = _floor_log2(np.where(more, m, 1))
        out += np.where(more, lg + 1, 0)
        m = np.where(more, lg, 1)
    return int(out) if out.ndim == 0 else out


def qsgd_elias_bits(levels: Any) -> int:
    """QSGD's Elias-coded length of a vector of signed integer levels (papers.md 5, T14).

    Counted exactly as QSGD's ``Code_s``: 32 bits for the norm, then for each non-zero
    level ``l_i``, in increasing position order, the Elias omega code of its gap (the
    distance from the previous non-zero's position, or ``i + 1`` for the first: the
    number of zeros skipped plus one, always >= 1), one sign bit and the Elias omega code
    of ``|l_i|``.  The end of the message (or the count of non-zeros) and the zeros
    after the last non-zero cost nothing: the length d travels in the header.  One norm,
    i.e. one bucket; for buckets, add the lengths of each bucket's levels.

    The paper bounds its expectation by ``(3 + (3/2 + o(1)) log2(2(s^2 + d) / (s(s +
    sqrt d)))) s(s + sqrt d) + 32`` (Theorem 3.2); see the module docstring for the
    ``2.8 d + 32`` of ``s = sqrt(d)``.
    """
    lv = np.asarray(levels)
    if lv.ndim != 1:
        raise ValueError(f"levels must be 1-D, got shape {lv.shape}")
    if lv.size and not np.issubdtype(lv.dtype, np.integer):
        raise ValueError(f"levels must be integers, got {lv.dtype}")
    pos = np.flatnonzero(lv)
    if pos.size == 0:
        return 32
    gaps = np.diff(pos, prepend=-1)
    mags = np.abs(lv[pos].astype(np.int64))
    return int(32 + np.sum(elias_omega_bits(gaps)) + pos.size + np.sum(elias_omega_bits(mags)))


def level_counts(levels: Any) -> np.ndarray:
    """Counts of each distinct level, in increasing order of level (``np.unique``'s order).

    The ``d_k`` of :func:`huffman_bound_bits` and :func:`huffman_bits`; levels that do not
    occur are left out (they cost nothing in either).
    """
    lv = np.asarray(levels).ravel()
    if lv.size == 0:
        return np.zeros(0, np.int64)
    return np.unique(lv, return_counts=True)[1].astype(np.int64)
