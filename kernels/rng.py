"""Counter-based random numbers for kernels: a SplitMix64 hash of (key, index).

Every random draw in hpcq is a pure function of ``(seed, [rank,] step, purpose)``
folded into a 64-bit *key* by :func:`derive_key` (Python side), and of the
element index inside the kernel.  There is no generator state, so a kernel gives
the same bits whatever the thread count, the ``prange`` chunking or the order
in which elements are visited, and any element's draw can be recomputed alone.

The stream for a key is SplitMix64's: draw ``i`` is ``mix64(key + (i + 1) * G)``
with ``G`` the 64-bit golden-ratio increment; distinct keys are 64-bit hashes,
so two streams overlap within 2^26 draws with probability about 2^-37.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hpcq.kernels._config import EXACT, INLINE

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S40 = np.uint64(40)
_ONE = np.uint64(1)
_INV24 = np.float32(1.0 / (1 << 24))

_MASK64 = (1 << 64) - 1

#: Purposes: independent streams for the same (seed, step).
PURPOSE_ROUNDING = 1  # private to a rank: stochastic rounding, sampling
PURPOSE_SIGNS = 2  # shared by all ranks: Hadamard rotation signs
PURPOSE_INDICES = 3  # shared by all ranks: random-k indices, bit allocation


@njit(**INLINE)
def mix64(z):  # type: ignore[no-untyped-def]
    """SplitMix64 finaliser: a bijective avalanche of a uint64."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(**INLINE)
def bits64(key, i):  # type: ignore[no-untyped-def]
    """64 random bits for element ``i`` of stream ``key``."""
    return mix64(key + (np.uint64(i) + _ONE) * GOLDEN)


@njit(**INLINE)
def uniform24(key, i):  # type: ignore[no-untyped-def]
    """A float32 uniform on [0, 1) with 24 random bits, for element ``i``."""
    return np.float32(bits64(key, i) >> _S40) * _INV24


def _mix64_py(z: int) -> int:
    z &= _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def derive_key(*words: int) -> np.uint64:
    """Fold integers (seed, purpose, step, rank, ...) into one 64-bit stream key.

    Order matters and every word is hashed in, so ``(seed=1, step=2)`` and
    ``(seed=2, step=1)`` give unrelated streams.  Negative words are taken
    modulo 2^64.
    """
    k = 0x6A09E667F3BCC908  # arbitrary non-zero start (sqrt(2) fraction)
    for w in words:
        k = _mix64_py(k ^ (int(w) & _MASK64)) + 0x9E3779B97F4A7C15
    return np.uint64(_mix64_py(k))


_START = np.uint64(0x6A09E667F3BCC908)


@njit(**INLINE)
def _fold(k, w):  # type: ignore[no-untyped-def]
    return mix64(k ^ w) + GOLDEN


@njit(**EXACT)
def derive_keys3(seed, step, rank, p_private, p_indices, p_signs):  # type: ignore[no-untyped-def]
    """The keys ``derive_key(seed, p, step, rank)`` (private) and ``derive_key(seed, p, step)``.

    One compiled call instead of three Python loops (about 0.5 us instead of 7 us):
    every encode and decode derives its keys, so this is on the small-message path.
    All arguments are uint64.
    """
    a = mix64(_fold(_fold(_fold(_fold(_START, seed), p_private), step), rank))
    b = mix64(_fold(_fold(_fold(_START, seed), p_indices), step))
    c = mix64(_fold(_fold(_fold(_START, seed), p_signs), step))
    return a, b, c


def bits64_py(key: int, i: int) -> int:
    """Pure-Python twin of :func:`bits64` (for references and tests)."""
    return _mix64_py((int(key) + (i + 1) * 0x9E3779B97F4A7C15) & _MASK64)
