"""Elias gamma and omega integer codes, and QSGD's gap + level code built on them.

Both codes are written in the LSB-first order of hpcq's bit streams
(:mod:`hpcq.kernels.entropy`), with the lengths of the textbook codes
(:func:`hpcq.compressors.lengths.elias_gamma_bits`, ``elias_omega_bits``):

* gamma, ``n >= 1``, ``N = floor(log2 n)``: N zero bits, a one, then the N bits of
  ``n`` below its leading one, least significant first (``2N + 1`` bits; the
  decoder counts trailing zeros of its bit buffer);
* omega (Elias's recursive code, QSGD's): the groups ``binary(n)``,
  ``binary(floor(log2 n))``, ... down to a group for a value of 2 or 3, written
  smallest first, each as a one bit (its leading one) followed by its remaining
  bits least significant first, then a terminating zero.  The decoder starts from
  ``v = 1`` and, while the next bit is a one, reads ``v`` bits ``m`` and sets
  ``v = 2^v + m``.

Values are limited to ``1 <= n < 2^32`` (codes of at most 63 / 43 bits).

QSGD's code (Alistarh et al. 2017, papers.md 5; :func:`~hpcq.compressors.lengths.qsgd_elias_bits`)
over a packed stream of codes ``c`` in ``0..2s`` (level ``c - s``): for every
non-zero level, in order of position, the code of its gap (its position minus the
previous non-zero's, or position + 1 for the first), one sign bit (1: negative)
and the code of its magnitude; omega by default, gamma on request.  The number of
non-zeros travels beside the stream (the message header's aux word), so zeros
after the last non-zero cost nothing.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hpcq.kernels._config import EXACT, INLINE
from hpcq.kernels.blockpack import BLOCK, pack_block, stream_views, unpack_block
from hpcq.kernels.entropy import (
    CORRUPT,
    OK,
    TRUNCATED,
    bits_consumed,
    check_status,
    check_stream,
    ctz64,
    finish_read,
    floor_log2,
    flush_bits,
    put_bits,
    put_long,
    refill,
)

_U = np.uint64
_ONE = np.uint64(1)
MAX_VALUE = (1 << 32) - 1


@njit(**INLINE)
def omega_code(n):  # type: ignore[no-untyped-def]
    """(bits, length) of the omega code of ``1 <= n < 2^32``, LSB-first."""
    code = _U(0)  # the terminating zero
    length = 1
    v = _U(n)
    while v > _ONE:
        k = floor_log2(v)
        group = _ONE | ((v - (_ONE << _U(k))) << _ONE)  # leading one first, then the rest
        code = group | (code << _U(k + 1))
        length += k + 1
        v = _U(k)
    return code, length


@njit(**INLINE)
def put_int(out, cap, acc, nb, pos, n, omega):  # type: ignore[no-untyped-def]
    """Append the gamma or omega code of ``n``."""
    if omega:
        code, length = omega_code(n)
        return put_long(out, cap, acc, nb, pos, code, length)
    k = floor_log2(_U(n))
    acc, nb, pos = put_bits(out, cap, acc, nb, pos, _ONE << _U(k), k + 1)
    return put_bits(out, cap, acc, nb, pos, _U(n) - (_ONE << _U(k)), k)


@njit(**INLINE)
def get_int(buf, end, acc, nb, pos, omega):  # type: ignore[no-untyped-def]
    """Read one code: ``(value, acc, nb, pos)``; value 0 flags an invalid code."""
    acc = _U(acc)
    if nb < 57:
        acc, nb, pos = refill(buf, end, acc, nb, pos)
    if omega:
        v = _ONE
        while True:
            bit = acc & _ONE
            acc >>= _ONE
            nb -= 1
            if bit == _U(0):
                return v, acc, nb, pos
            if v > _U(31):  # the next group would exceed 32 bits
                return _U(0), acc, nb, pos
            k = np.int64(v)
            if nb < 32:
                acc, nb, pos = refill(buf, end, acc, nb, pos)
            m = acc & ((_ONE << _U(k)) - _ONE)
            acc >>= _U(k)
            nb -= k
            v = (_ONE << _U(k)) | m
    k = ctz64(acc)
    if k > 31:
        return _U(0), acc, nb, pos
    acc >>= _U(k + 1)
    nb -= k + 1
    if nb < 32:
        acc, nb, pos = refill(buf, end, acc, nb, pos)
    m = acc & ((_ONE << _U(k)) - _ONE)
    acc >>= _U(k)
    nb -= k
    return (_ONE << _U(k)) | m, acc, nb, pos


# ------------------------------------------------------------------ code tables
@njit(**INLINE)
def put_span(out, cap, acc, nb, pos, values):  # type: ignore[no-untyped-def]
    """The non-zero span of ``values`` as Elias-gamma integers: ``lo + 1``, its length,
    then each value + 1 (the Huffman and rANS tables); returns ``(acc, nb, pos)``."""
    nz = np.flatnonzero(values)
    lo, hi = nz[0], nz[-1]
    acc, nb, pos = put_int(out, cap, acc, nb, pos, lo + 1, False)
    acc, nb, pos = put_int(out, cap, acc, nb, pos, hi - lo + 1, False)
    for k in range(lo, hi + 1):
        acc, nb, pos = put_int(out, cap, acc, nb, pos, np.int64(values[k]) + 1, False)
    return acc, nb, pos


@njit(**INLINE)
def get_span(buf, end, acc, nb, pos, dest, vmax):  # type: ignore[no-untyped-def]
    """Read a :func:`put_span` into ``dest`` (zeroed outside the span):
    ``(ok, first, last, acc, nb, pos)``; not ok when the span does not fit ``dest`` or
    a value is above ``vmax``.  The caller checks the span's end points (after
    :func:`table_end`, so that a truncated table reads as truncated)."""
    lo, acc, nb, pos = get_int(buf, end, acc, nb, pos, False)
    span, acc, nb, pos = get_int(buf, end, acc, nb, pos, False)
    if lo == _U(0) or span == _U(0) or lo - _ONE + span > _U(dest.shape[0]):
        return False, 0, 0, acc, nb, pos
    dest[:] = 0
    first = np.int64(lo) - 1
    last = first + np.int64(span) - 1
    for k in range(first, last + 1):
        v, acc, nb, pos = get_int(buf, end, acc, nb, pos, False)
        if v == _U(0) or v > _U(vmax) + _ONE:
            return False, 0, 0, acc, nb, pos
        dest[k] = v - _ONE
    return True, first, last, acc, nb, pos


@njit(**INLINE)
def table_end(acc, nb, pos, end):  # type: ignore[no-untyped-def]
    """``(status, bytes)`` after a table read from ``buf[0:end]``: truncated if it ran past
    the end, corrupt unless its padding bits are zero; bytes: whole bytes it used."""
    used = bits_consumed(nb, pos)
    if used > 8 * end:
        return TRUNCATED, 0
    pad = (8 - used % 8) % 8
    if pad and (_U(acc) & ((_ONE << _U(pad)) - _ONE)) != _U(0):
        return CORRUPT, 0
    return OK, (used + 7) // 8


@njit(**INLINE)
def _invalid(nb, pos, end):  # type: ignore[no-untyped-def]
    """The status of an invalid code: truncation when it runs into the end of the stream."""
    return TRUNCATED if bits_consumed(nb, pos) + 64 > 8 * end else CORRUPT


# ------------------------------------------------------------------ integer arrays
@njit(**EXACT)
def _encode_ints(values, omega, out):  # type: ignore[no-untyped-def]
    """Codes of ``values`` (all in 1..2^32-1) into ``out``; (bits, bytes), bytes -1 if full."""
    cap = out.shape[0]
    acc, nb, pos = _U(0), 0, np.int64(0)
    bits = 0
    for i in range(values.shape[0]):
        before = 8 * pos + nb
        acc, nb, pos = put_int(out, cap, acc, nb, pos, values[i], omega)
        if pos < 0:
            return bits, np.int64(-1)
        bits += 8 * pos + nb - before
    return bits, flush_bits(out, cap, acc, nb, pos)


@njit(**EXACT)
def _decode_ints(buf, omega, out):  # type: ignore[no-untyped-def]
    """Read ``len(out)`` codes from the whole of ``buf``; a status."""
    end = buf.shape[0]
    acc, nb, pos = _U(0), 0, np.int64(0)
    for i in range(out.shape[0]):
        v, acc, nb, pos = get_int(buf, end, acc, nb, pos, omega)
        if v == _U(0):
            return _invalid(nb, pos, end)
        if bits_consumed(nb, pos) > 8 * end:
            return TRUNCATED
        out[i] = v
    return finish_read(acc, nb, pos, 0, end)


def _int_bound(n: int) -> int:
    return 8 * n + 8  # both codes take at most 63 bits per value


def encode_ints(values: np.ndarray, *, omega: bool = True) -> tuple[np.ndarray, int]:
    """Gamma (``omega=False``) or omega codes of the integers ``values`` (each in 1..2^32-1).

    Returns ``(bytes, bits)``: the zero-padded stream and its exact length in bits.
    """
    v = np.asarray(values)
    if v.ndim != 1 or (v.size and v.dtype.kind not in "iu"):
        raise TypeError(f"values must be a 1-D integer array, got {v.dtype} {v.shape}")
    if v.size and (int(v.min()) < 1 or int(v.max()) > MAX_VALUE):
        raise ValueError(f"Elias codes here take integers in 1..{MAX_VALUE}")
    v = np.ascontiguousarray(v, dtype=np.uint64)
    out = np.empty(_int_bound(v.shape[0]), np.uint8)
    bits, nbytes = _encode_ints(v, bool(omega), out)
    return out[:nbytes].copy(), int(bits)


def decode_ints(buf: np.ndarray, n: int, *, omega: bool = True) -> np.ndarray:
    """Inverse of :func:`encode_ints`: ``n`` integers (uint64) from the whole of ``buf``.

    ValueError when the stream is truncated, holds an invalid code, or has bytes or
    non-zero padding after the last code.
    """
    if not isinstance(buf, np.ndarray) or buf.dtype != np.uint8 or buf.ndim != 1:
        raise TypeError("buf must be a 1-D uint8 array")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    out = np.empty(n, np.uint64)
    check_status(_decode_ints(np.ascontiguousarray(buf), bool(omega), out),
                 "omega" if omega else "gamma")
    return out


# ------------------------------------------------------------------ QSGD's code
@njit(**EXACT)
def _qsgd_encode(codes, n, width, s, omega, out):  # type: ignore[no-untyped-def]
    """(bits, bytes, non-zeros) of QSGD's code of the packed ``codes``; bytes -1 if ``out``
    is too small, -2 if a code exceeds 2s."""
    cap = out.shape[0]
    buf = np.empty(BLOCK, np.uint8)
    words = buf.view(np.uint64)
    acc, nb, pos = _U(0), 0, np.int64(0)
    prev = -1
    nnz = 0
    for b0 in range(0, n, BLOCK):
        cnt = min(BLOCK, n - b0)
        unpack_block(codes, _U(b0 >> 3), cnt, width, buf, words)
        for j in range(cnt):
            c = np.int64(buf[j])
            if c == s:
                continue
            if c > 2 * s:
                return 0, np.int64(-2), 0
            i = b0 + j
            acc, nb, pos = put_int(out, cap, acc, nb, pos, i - prev, omega)
            acc, nb, pos = put_bits(out, cap, acc, nb, pos, _ONE if c < s else _U(0), 1)
            acc, nb, pos = put_int(out, cap, acc, nb, pos, abs(c - s), omega)
            if pos < 0:
                return 0, np.int64(-1), 0
            prev = i
            nnz += 1
    bits = 8 * pos + nb
    return bits, flush_bits(out, cap, acc, nb, pos), nnz


@njit(**INLINE)
def _set_code(out, i, width, c):  # type: ignore[no-untyped-def]
    """Overwrite code ``i`` (``width`` <= 8 bits) of the packed uint8 stream ``out``."""
    bit = i * width
    b = bit >> 3
    sh = bit & 7
    mask = ((1 << width) - 1) << sh
    v = (c << sh) & mask
    out[b] = np.uint8((np.int64(out[b]) & ~mask & 0xFF) | (v & 0xFF))
    if sh + width > 8:
        out[b + 1] = np.uint8((np.int64(out[b + 1]) & ~(mask >> 8) & 0xFF) | (v >> 8))


@njit(**EXACT)
def _qsgd_decode(buf, n, nnz, width, s, omega, codes):  # type: ignore[no-untyped-def]
    """Fill the packed stream ``codes`` (views) with level 0 (code s), then place the
    ``nnz`` non-zeros read from the whole of ``buf``; a status."""
    blk = np.empty(BLOCK, np.uint8)
    words = blk.view(np.uint64)
    for b0 in range(0, n, BLOCK):
        cnt = min(BLOCK, n - b0)
        blk[:] = s
        pack_block(blk, words, cnt, codes, _U(b0 >> 3), width)
    end = buf.shape[0]
    acc, nb, pos = _U(0), 0, np.int64(0)
    at = -1
    for _ in range(nnz):
        gap, acc, nb, pos = get_int(buf, end, acc, nb, pos, omega)
        if gap == _U(0):
            return _invalid(nb, pos, end)
        if gap > _U(n - 1 - at):
            return TRUNCATED if bits_consumed(nb, pos) > 8 * end else CORRUPT
        at += np.int64(gap)
        neg = acc & _ONE
        acc >>= _ONE
        nb -= 1
        mag, acc, nb, pos = get_int(buf, end, acc, nb, pos, omega)
        if mag == _U(0):
            return _invalid(nb, pos, end)
        if mag > _U(s):
            return TRUNCATED if bits_consumed(nb, pos) > 8 * end else CORRUPT
        if bits_consumed(nb, pos) > 8 * end:
            return TRUNCATED
        c = s - np.int64(mag) if neg else s + np.int64(mag)
        _set_code(codes[0], at, width, c)
    return finish_read(acc, nb, pos, 0, end)


def qsgd_encode(codes: np.ndarray, n: int, width: int, s: int, out: np.ndarray, *,
                omega: bool = True) -> tuple[int, int, int]:
    """QSGD's Elias code of ``n`` packed codes (``0..2s``, zero level ``s``) into ``out``.

    Returns ``(bits, nbytes, nnz)``; ``nbytes = -1`` when the code does not fit in
    ``out`` (the caller falls back to the packed codes).  ValueError for a code above
    ``2s`` or a message of 2^32 entries or more (gaps must fit the code).
    """
    check_stream(codes, n, width)
    if not (1 <= s and 2 * s < (1 << width)):
        raise ValueError(f"s={s} does not fit codes of {width} bits")
    if n > MAX_VALUE:
        raise ValueError(f"QSGD's Elias code here takes fewer than 2^32 entries, got {n}")
    bits, nbytes, nnz = _qsgd_encode(stream_views(codes), n, int(width), int(s), bool(omega),
                                     out)
    if nbytes == -2:
        raise ValueError(f"a code exceeds the top level {2 * s}")
    return int(bits), int(nbytes), int(nnz)


def qsgd_decode(buf: np.ndarray, n: int, nnz: int, width: int, s: int, codes: np.ndarray, *,
                omega: bool = True) -> np.ndarray:
    """Inverse of :func:`qsgd_encode`: the packed codes (into ``codes``, of the packed length).

    ValueError for a truncated or corrupted stream: a gap past the end, a magnitude of
    0 or above s, an invalid code, trailing bytes or non-zero padding.
    """
    check_stream(codes, n, width)
    if not 0 <= nnz <= n:
        raise ValueError(f"corrupted stream: {nnz} non-zeros in {n} entries")
    check_status(_qsgd_decode(np.ascontiguousarray(buf), n, int(nnz), int(width), int(s),
                              bool(omega), stream_views(codes)), "qsgd elias")
    return codes

