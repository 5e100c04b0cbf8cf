"""Bit-packing of unsigned integer codes of any width 1..16 into a uint8 stream.

Bit order (the wire format; every packed payload in hpcq uses it)
-----------------------------------------------------------------
LSB-first.  Code ``i`` of width ``w`` occupies stream bits ``[i*w, i*w + w)``,
its bit ``j`` at stream bit ``i*w + j``; stream bit ``k`` is bit ``k % 8``
(value ``1 << (k % 8)``) of byte ``k // 8``.  This is little-endian order:
packing the codes is the same as writing the integer ``sum_i c_i << (i*w)``
little-endian.  ``n`` codes take ``ceil(n*w / 8)`` bytes; the unused high bits of the last
byte are written as zero and ignored on reading.

Eight consecutive codes always fill exactly ``w`` whole bytes, so the stream
is cut into independent groups of 8 codes: group ``g`` owns bytes
``[g*w, g*w + w)``.  The kernels run over groups (in parallel above the
threshold of :mod:`hpcq.kernels._config`), and fused quantizers use the same
group layout through :func:`put_group` / :func:`get_code`.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from hpcq.kernels._config import INLINE, twins, use_parallel

MAX_WIDTH = 16


def packed_nbytes(n: int, width: int) -> int:
    """Bytes taken by ``n`` codes of ``width`` bits."""
    return (n * width + 7) // 8


@njit(**INLINE)
def put_group(out, byte0, codes, c0, count, width):  # type: ignore[no-untyped-def]
    """Write ``count`` (<= 8) codes ``codes[c0:c0+count]`` as one group at ``out[byte0:]``.

    Writes whole bytes (no read-modify-write), so ``out`` need not be zeroed;
    a short last group writes only the bytes its bits reach.
    """
    acc = np.uint64(0)
    sh = np.uint64(0)
    w = np.uint64(width)
    for j in range(count):
        acc |= np.uint64(codes[c0 + j]) << sh
        sh += w
        # flush full bytes as soon as possible: 8 codes of 16 bits are 128 bits
        while sh >= np.uint64(8):
            out[byte0] = np.uint8(acc & np.uint64(0xFF))
            byte0 += 1
            acc >>= np.uint64(8)
            sh -= np.uint64(8)
    if sh > np.uint64(0):
        out[byte0] = np.uint8(acc & np.uint64(0xFF))


@njit(**INLINE)
def get_code(buf, i, width):  # type: ignore[no-untyped-def]
    """Read code ``i`` of ``width`` bits; never reads past ``len(buf)``."""
    bit = i * width
    b = bit >> 3
    s = bit & 7
    v = np.uint32(buf[b])
    nb = buf.shape[0]
    if s + width > 8 and b + 1 < nb:
        v |= np.uint32(buf[b + 1]) << np.uint32(8)
        if s + width > 16 and b + 2 < nb:
            v |= np.uint32(buf[b + 2]) << np.uint32(16)
    return (v >> np.uint32(s)) & np.uint32((1 << width) - 1)


def _pack_body(codes, width, out):  # type: ignore[no-untyped-def]
    n = codes.shape[0]
    ngroups = (n + 7) // 8
    for g in prange(ngroups):
        c0 = g * 8
        cnt = min(8, n - c0)
        put_group(out, g * width, codes, c0, cnt, width)


def _unpack_body(buf, width, n, out):  # type: ignore[no-untyped-def]
    ngroups = (n + 7) // 8
    mask = np.uint64((1 << width) - 1)
    w = np.uint64(width)
    for g in prange(ngroups):
        b = g * width
        c0 = g * 8
        cnt = min(8, n - c0)
        acc = np.uint64(0)
        have = np.uint64(0)
        for j in range(cnt):
            while have < w:
                acc |= np.uint64(buf[b]) << have
                b += 1
                have += np.uint64(8)
            out[c0 + j] = acc & mask
            acc >>= w
            have -= w


_pack, _pack_par = twins(_pack_body)
_unpack, _unpack_par = twins(_unpack_body)


def _check_width(width: int) -> int:
    if not isinstance(width, (int, np.integer)) or not 1 <= int(width) <= MAX_WIDTH:
        raise ValueError(f"bit width must be an integer in 1..{MAX_WIDTH}, got {width!r}")
    return int(width)


def pack_codes(codes: np.ndarray, width: int, out: np.ndarray | None = None) -> np.ndarray:
    """Pack unsigned ``codes`` (each < 2**width) into a uint8 stream (LSB-first).

    Parameters
    ----------
    codes : 1-D array of unsigned integers (uint8/uint16/uint32/uint64)
    width : bits per code, 1..16
    out : optional uint8 array of at least ``packed_nbytes(len(codes), width)`` bytes

    Returns
    -------
    The packed bytes (``out`` trimmed to the packed length when given).
    """
    width = _check_width(width)
    codes = np.asarray(codes)
    if codes.ndim != 1 or codes.dtype.kind != "u":
        raise TypeError(f"codes must be a 1-D unsigned integer array, got {codes.dtype} "
                        f"with shape {codes.shape}")
    codes = np.ascontiguousarray(codes)
    n = codes.shape[0]
    if n and int(codes.max()) >> width:
        raise ValueError(f"a code does not fit in {width} bits (max {int(codes.max())})")
    nbytes = packed_nbytes(n, width)
    if out is None:
        out = np.empty(nbytes, dtype=np.uint8)
    elif out.dtype != np.uint8 or out.ndim != 1 or out.shape[0] < nbytes:
        raise ValueError(f"out must be a 1-D uint8 array of at least {nbytes} bytes")
    out = out[:nbytes]
    (_pack_par if use_parallel(n) else _pack)(codes, width, out)
    return out


def unpack_codes(buf: np.ndarray, width: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``n`` codes of ``width`` bits, as uint16."""
    width = _check_width(width)
    buf = np.asarray(buf)
    if buf.dtype != np.uint8 or buf.ndim != 1:
        raise TypeError(f"buf must be a 1-D uint8 array, got {buf.dtype} with shape {buf.shape}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    need = packed_nbytes(n, width)
    if buf.shape[0] < need:
        raise ValueError(f"packed stream too short: {n} codes of {width} bits need {need} "
                         f"bytes, got {buf.shape[0]}")
    out = np.empty(n, dtype=np.uint16)
    (_unpack_par if use_parallel(n) else _unpack)(np.ascontiguousarray(buf), width, n, out)
    return out
