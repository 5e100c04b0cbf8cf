"""Blocks of one-byte codes to and from the LSB-first packed stream of :mod:`hpcq.kernels.bitpack`.

The fused quantizers compute ``BLOCK`` codes at a time with a vectorised loop into a
small buffer that stays in L1 (one byte per code), then pack them here into their
``8 * width``-bit groups with shifts (:func:`pack_block`), or the reverse
(:func:`unpack_block`).  For widths 1, 2 and 4 whole groups are whole uint8/16/32
items and the loops over groups vectorise; width 1 gathers 8 bits with one multiply.
Offsets are uint64: numba then omits its negative-index test, which would otherwise
stop LLVM from vectorising the loops.  (Packing straight from a block of registers
would be better still, but LLVM does not vectorise the stride-8 interleaving it needs.)
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hpcq.kernels._config import INLINE

BLOCK = 512  # codes per block; 512 beats 64 (store-forwarding stalls) and 4096 (L1 misses)
_U = np.uint64
_U8 = np.uint64(8)


def stream_views(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8, uint16, uint32) views of a packed stream (trimmed to whole items), made once."""
    n = codes.shape[0]
    return codes, codes[: n & ~1].view(np.uint16), codes[: n & ~3].view(np.uint32)


@njit(**INLINE)
def _squeeze(v, w):  # type: ignore[no-untyped-def]
    """8 codes, one per byte of ``v``, to 8w LSB-first bits."""
    v = (v & _U(0x00FF00FF00FF00FF)) | (((v >> _U8) & _U(0x00FF00FF00FF00FF)) << w)
    v = (v & _U(0x0000FFFF0000FFFF)) | (((v >> _U(16)) & _U(0x0000FFFF0000FFFF)) << (w + w))
    return (v & _U(0xFFFFFFFF)) | ((v >> _U(32)) << (_U(4) * w))


@njit(**INLINE)
def _spread(v, w):  # type: ignore[no-untyped-def]
    """Inverse of :func:`_squeeze`: 8w LSB-first bits to one code per byte."""
    m4 = (_U(1) << (_U(4) * w)) - _U(1)
    v = (v & m4) | ((v >> (_U(4) * w)) & m4) << _U(32)
    m2 = ((_U(1) << (w + w)) - _U(1)) * _U(0x0000000100000001)
    v = (v & m2) | ((v >> (w + w)) & m2) << _U(16)
    m1 = ((_U(1) << w) - _U(1)) * _U(0x0001000100010001)
    return (v & m1) | ((v >> w) & m1) << _U8


@njit(**INLINE)
def pack_block(buf, words, cnt, codes, g0, width):  # type: ignore[no-untyped-def]
    """Pack ``cnt`` (<= BLOCK) one-byte codes of ``buf`` (``words``: its uint64 view) as groups
    ``g0, g0 + 1, ...`` of the stream ``codes`` = :func:`stream_views` (uint64 ``g0``)."""
    w = _U(width)
    ng = _U(cnt >> 3)  # whole groups; for width 1, 2, 4 whole uint8/16/32 items
    if width == 4:
        for q in range(ng):
            codes[2][g0 + q] = np.uint32(_squeeze(words[q], w))
    elif width == 2:
        for q in range(ng):
            codes[1][g0 + q] = np.uint16(_squeeze(words[q], w))
    elif width == 1:  # one multiply gathers the 8 bits (no carries: the products never overlap)
        for q in range(ng):
            codes[0][g0 + q] = np.uint8((words[q] * _U(0x0102040810204080)) >> _U(56))
    elif width == 8:
        for j in range(ng * _U8):
            codes[0][g0 * _U8 + j] = buf[j]
    else:
        for q in range(ng):
            v = _squeeze(words[q], w)
            for r in range(w):
                codes[0][(g0 + q) * w + r] = np.uint8(v & _U(0xFF))
                v >>= _U8
    if cnt & 7:  # a short last group: zero its missing codes, write the bytes its bits reach
        for j in range(cnt, (cnt + 7) & ~7):
            buf[j] = 0
        v = _squeeze(words[ng], w)
        for r in range(_U(((cnt & 7) * width + 7) >> 3)):
            codes[0][(g0 + ng) * w + r] = np.uint8(v & _U(0xFF))
            v >>= _U8


@njit(**INLINE)
def unpack_block(codes, g0, cnt, width, buf, words):  # type: ignore[no-untyped-def]
    """Inverse of :func:`pack_block`: ``cnt`` codes from group ``g0`` on, one byte each in buf."""
    w = _U(width)
    ng = _U(cnt >> 3)
    if width == 4:
        for q in range(ng):
            words[q] = _spread(_U(codes[2][g0 + q]), w)
    elif width == 2:
        for q in range(ng):
            words[q] = _spread(_U(codes[1][g0 + q]), w)
    elif width == 1:
        for q in range(ng):
            words[q] = _spread(_U(codes[0][g0 + q]), w)
    elif width == 8:
        for j in range(ng * _U8):
            buf[j] = codes[0][g0 * _U8 + j]
    else:
        for q in range(ng):
            v = _U(0)
            for r in range(w):
                v |= _U(codes[0][(g0 + q) * w + r]) << (_U8 * r)
            words[q] = _spread(v, w)
    if cnt & 7:
        v = _U(0)
        for r in range(_U(((cnt & 7) * width + 7) >> 3)):
            v |= _U(codes[0][(g0 + ng) * w + r]) << (_U8 * r)
        words[ng] = _spread(v, w)
