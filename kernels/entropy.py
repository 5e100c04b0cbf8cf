"""What the entropy coders share: LSB-first bit I/O, symbol blocks from packed streams, histograms.

The coders (:mod:`~hpcq.kernels.elias`, :mod:`~hpcq.kernels.huffman`,
:mod:`~hpcq.kernels.rans`) read their symbols from, and their decoders write them
to, the packed code streams of :mod:`hpcq.kernels.bitpack` (width 1..8, LSB-first,
groups of 8 codes), ``BLOCK`` codes at a time through
:func:`~hpcq.kernels.blockpack.unpack_block` / :func:`~hpcq.kernels.blockpack.pack_block`,
so no unpacked copy of a whole message is ever made.  A plain ``uint8`` array of
symbols is the packed stream of width 8.

Bit streams follow the wire order of :mod:`hpcq.kernels.bitpack`: stream bit ``k`` is
bit ``k % 8`` of byte ``k // 8``, and a value of ``w`` bits written "LSB-first"
puts its bit ``j`` at the next stream bit + ``j``.  The last byte is padded with
zero bits, and decoders check that it is (a corrupted stream fails as often as it can).

Writer state is ``(acc, nb, pos)``: ``nb < 32`` pending bits in the uint64 ``acc``,
``pos`` the next byte of ``out``; whole 32-bit words are flushed, and ``pos = -1``
reports that the output capacity ran out (the caller then gives up: it falls back
to fixed-length codes).  Reader state is ``(acc, nb, pos)`` too: ``nb`` unread
bits in ``acc``, ``pos`` the next byte to load.  Past the end of the buffer the
reader supplies zero bits and keeps counting (``pos`` goes beyond the length), so
the hot loops need no bounds test per symbol; the bits consumed, ``8 pos - nb``,
are compared with the length at the end (and wherever a loop could otherwise run long).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros

from hpcq.kernels._config import EXACT, INLINE
from hpcq.kernels.blockpack import BLOCK, unpack_block

_U = np.uint64
_U8 = np.uint64(8)
_U32 = np.uint64(32)
_FF = np.uint64(0xFF)
_ONE = np.uint64(1)

#: Decoder status codes (0: success).
OK, TRUNCATED, CORRUPT = 0, -1, -2

MESSAGES = {
    TRUNCATED: "truncated stream: decoding needs bits past its end",
    CORRUPT: "corrupted stream",
}


def check_status(status: int, what: str) -> None:
    """Raise ValueError for a decoder's nonzero status."""
    if status != OK:
        raise ValueError(f"{what}: {MESSAGES.get(int(status), 'corrupted stream')}")


# ------------------------------------------------------------------ bit tricks
@njit(**INLINE)
def ctz64(x):  # type: ignore[no-untyped-def]
    """Trailing zero bits of the uint64 ``x`` (64 for 0)."""
    return np.int64(trailing_zeros(_U(x))) if x != _U(0) else np.int64(64)


@njit(**INLINE)
def floor_log2(x):  # type: ignore[no-untyped-def]
    """floor(log2 x) for uint64 ``x >= 1``."""
    return np.int64(63) - np.int64(leading_zeros(_U(x)))


@njit(**INLINE)
def reverse_bits(code, length):  # type: ignore[no-untyped-def]
    """The low ``length`` bits of ``code`` in reverse order (MSB-first codes to LSB-first)."""
    r = _U(0)
    c = _U(code)
    for _ in range(length):
        r = (r << _ONE) | (c & _ONE)
        c >>= _ONE
    return r


# ------------------------------------------------------------------ writer
@njit(**INLINE)
def put_bits(out, cap, acc, nb, pos, value, nbits):  # type: ignore[no-untyped-def]
    """Append the low ``nbits`` (<= 32) bits of ``value``; flush a 32-bit word when full."""
    acc = _U(acc) | (_U(value) << _U(nb))
    nb += nbits
    if nb >= 32:
        if pos < 0 or pos + 4 > cap:
            return acc, nb, np.int64(-1)
        out[pos] = np.uint8(acc & _FF)
        out[pos + 1] = np.uint8((acc >> _U8) & _FF)
        out[pos + 2] = np.uint8((acc >> _U(16)) & _FF)
        out[pos + 3] = np.uint8((acc >> _U(24)) & _FF)
        acc >>= _U32
        nb -= 32
        pos += 4
    return acc, nb, pos


@njit(**INLINE)
def put_long(out, cap, acc, nb, pos, value, nbits):  # type: ignore[no-untyped-def]
    """Append up to 64 bits (two words when more than 32)."""
    if nbits > 32:
        acc, nb, pos = put_bits(out, cap, acc, nb, pos, _U(value) & _U(0xFFFFFFFF), 32)
        return put_bits(out, cap, acc, nb, pos, _U(value) >> _U32, nbits - 32)
    return put_bits(out, cap, acc, nb, pos, value, nbits)


@njit(**INLINE)
def flush_bits(out, cap, acc, nb, pos):  # type: ignore[no-untyped-def]
    """Write the pending bits (the last byte zero-padded); the new ``pos``, or -1 if full."""
    acc = _U(acc)
    while nb > 0:
        if pos < 0 or pos >= cap:
            return np.int64(-1)
        out[pos] = np.uint8(acc & _FF)
        acc >>= _U8
        nb -= 8
        pos += 1
    return pos


# ------------------------------------------------------------------ reader
@njit(**INLINE)
def refill(buf, end, acc, nb, pos):  # type: ignore[no-untyped-def]
    """Top ``acc`` up to at least 57 unread bits (zeros past ``end``, still counted)."""
    acc = _U(acc)  # (a no-op compiled; keeps py_func callers, which pass Python ints, unsigned)
    if pos + 8 <= end:  # the common case: one unaligned 64-bit little-endian load
        w = _U(0)
        for k in range(8):
            w |= _U(buf[pos + k]) << _U(8 * k)
        acc |= w << _U(nb)
        step = (63 - nb) >> 3
        return acc, nb + 8 * step, pos + step
    while nb <= 56:
        if pos < end:
            acc |= _U(buf[pos]) << _U(nb)
        pos += 1
        nb += 8
    return acc, nb, pos


@njit(**INLINE)
def bits_consumed(nb, pos):  # type: ignore[no-untyped-def]
    """Stream bits read so far."""
    return 8 * pos - nb


@njit(**INLINE)
def finish_read(acc, nb, pos, start, end):  # type: ignore[no-untyped-def]
    """Status after the last symbol: the stream ``buf[start:end]`` must end exactly in the
    byte holding its last bit, with zero padding bits."""
    acc = _U(acc)
    used = bits_consumed(nb, pos) - 8 * start
    if used > 8 * (end - start):
        return TRUNCATED
    if (used + 7) // 8 != end - start:
        return CORRUPT  # trailing bytes
    pad = (8 - used % 8) % 8
    if pad and (acc & ((_ONE << _U(pad)) - _ONE)) != _U(0):
        return CORRUPT
    return OK


# ------------------------------------------------------------------ symbols
@njit(**EXACT)
def histogram(codes, n, width, counts):  # type: ignore[no-untyped-def]
    """``counts[c]`` += occurrences of code c among the ``n`` codes of a packed stream
    (``codes``: :func:`~hpcq.kernels.blockpack.stream_views`); four interleaved tables,
    so runs of one symbol do not wait on one counter."""
    buf = np.empty(BLOCK, np.uint8)
    words = buf.view(np.uint64)
    h = np.zeros((4, 256), np.int64)
    for b0 in range(0, n, BLOCK):
        cnt = min(BLOCK, n - b0)
        unpack_block(codes, _U(b0 >> 3), cnt, width, buf, words)
        q = cnt & ~3
        for j in range(0, q, 4):
            h[0, buf[j]] += 1
            h[1, buf[j + 1]] += 1
            h[2, buf[j + 2]] += 1
            h[3, buf[j + 3]] += 1
        for j in range(q, cnt):
            h[0, buf[j]] += 1
    for c in range(256):
        counts[c] += h[0, c] + h[1, c] + h[2, c] + h[3, c]


def check_stream(codes: np.ndarray, n: int, width: int) -> None:
    """A packed stream of ``n`` codes of ``width`` (1..8) bits: type and length."""
    from hpcq.kernels.bitpack import packed_nbytes

    if not isinstance(width, (int, np.integer)) or not 1 <= int(width) <= 8:
        raise ValueError(f"entropy coders take code widths 1..8, got {width!r}")
    if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8 or codes.ndim != 1:
        raise TypeError("codes must be a 1-D uint8 array (a packed code stream)")
    if n < 0 or codes.shape[0] != packed_nbytes(n, width):
        raise ValueError(f"packed stream of {codes.shape[0]} bytes does not hold {n} codes of "
                         f"{width} bits ({packed_nbytes(n, width)} bytes)")


def symbol_histogram(codes: np.ndarray, n: int, width: int) -> np.ndarray:
    """Counts of each code value 0..255 among the ``n`` codes of a packed stream (int64)."""
    from hpcq.kernels.blockpack import stream_views

    check_stream(codes, n, width)
    counts = np.zeros(256, np.int64)
    histogram(stream_views(np.ascontiguousarray(codes)), n, int(width), counts)
    return counts
