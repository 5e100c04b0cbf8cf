"""Range ANS (rANS) over a small alphabet (<= 256 symbols) with a per-message frequency table.

The coder is ryg_rans's byte-wise one (F. Giesen, public domain): a 32-bit state
``x`` in ``[L, 256 L)``, ``L = 2^23``, frequencies quantized to ``M = 2^P``
(``P <= 16``).  Encoding runs over the symbols backwards: emit low bytes while
``x >= x_max(s) = 2^(31-P) f_s``, then ``x = (x // f_s) M + c_s + x mod f_s``,
with the division done by a precomputed reciprocal (Alverson's method, as
ryg_rans does, including its ``f = 1`` case).  The decoder reads the state then
runs forwards: ``slot = x mod M``, ``s`` = the symbol owning the slot,
``x = f_s (x >> P) + slot - c_s``, then pulls bytes while ``x < L``.  It checks that
it ends in the encoder's initial state ``L`` having read every byte: a corrupted
stream fails (with probability about ``1 - 2^-32``) instead of decoding silently.

Frequencies: ``P = min(16, max(bitlength(N - 1) + 1, bitlength(k) + 1))`` for N
symbols of k kinds (small messages get exact-ish frequencies and a small decode
table); each present symbol gets ``max(1, round(d_s M / N))`` and the difference to
M is taken from (or given to) the most frequent ones.  A single kind of symbol
gets ``f = M`` and costs nothing but the table and the 4-byte state.

Stream: Elias gamma codes (:mod:`hpcq.kernels.elias`) of ``P``, ``lo + 1``,
``hi - lo + 1`` and each frequency ``+ 1`` for the symbols ``lo..hi``, zero-padded
to a byte; then the final encoder state (4 bytes little-endian) and the bytes it
emitted, in the order the decoder reads them.  The decoder checks the table
(alphabet, non-zero first and last frequency, sum exactly M).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hpcq.kernels._config import EXACT, INLINE
from hpcq.kernels.blockpack import BLOCK, pack_block, stream_views, unpack_block
from hpcq.kernels.elias import get_int, get_span, put_int, put_span, table_end
from hpcq.kernels.entropy import (
    CORRUPT,
    OK,
    TRUNCATED,
    check_status,
    check_stream,
    flush_bits,
    histogram,
)

MAX_PROB_BITS = 16
RANS_L = 1 << 23
_U = np.uint64
_ONE = np.uint64(1)
_L = np.uint64(RANS_L)
_FF = np.uint64(0xFF)


# ------------------------------------------------------------------ frequencies
@njit(**EXACT)
def _normalize(counts, pbits, freq):  # type: ignore[no-untyped-def]
    """Quantize ``counts`` to frequencies summing to 2^pbits (present symbols >= 1)."""
    total = 0
    for k in range(counts.shape[0]):
        total += counts[k]
    m = np.int64(1) << pbits
    s = 0
    for k in range(counts.shape[0]):
        f = 0
        if counts[k] > 0:
            f = max(np.int64(1), (counts[k] * m + total // 2) // total)
        freq[k] = f
        s += f
    while s != m:  # settle the rounding on the largest frequencies (k <= 256 symbols)
        best = 0
        for k in range(counts.shape[0]):
            if freq[k] > freq[best]:
                best = k
        if s < m:
            freq[best] += m - s
            s = m
        else:  # the largest gives what it can (> 0: k symbols <= M, so it is > 1)
            dec = min(s - m, freq[best] - 1)
            freq[best] -= dec
            s -= dec


def prob_bits(total: int, kinds: int) -> int:
    """P for a message of ``total`` symbols of ``kinds`` kinds (module docstring)."""
    return min(MAX_PROB_BITS, max((total - 1).bit_length() + 1, kinds.bit_length() + 1))


# ------------------------------------------------------------------ coding
@njit(**INLINE)
def _put(x, s, enc, out, ptr):  # type: ignore[no-untyped-def]
    """Encode symbol ``s`` into state ``x``, emitting bytes below ``out[ptr]``; ptr < 0: full
    (``enc[s]`` = x_max, reciprocal, shift, bias, complement of the frequency)."""
    x = _U(x)
    xmax = enc[s, 0]
    while x >= xmax:
        ptr -= 1
        if ptr < 0:
            return x, ptr
        out[ptr] = np.uint8(x & _FF)
        x >>= _U(8)
    q = ((x * enc[s, 1]) >> _U(32)) >> enc[s, 2]
    return x + enc[s, 3] + q * enc[s, 4], ptr


@njit(**INLINE)
def _get(x, slot_sym, fc, mask, pb, buf, pos, end):  # type: ignore[no-untyped-def]
    """Decode one symbol from state ``x``: (symbol, x, pos); zeros past ``end`` (counted)."""
    x = _U(x)
    slot = x & mask
    s = slot_sym[slot]
    e = fc[s]
    x = (e >> _U(32)) * (x >> pb) + slot - (e & _U(0xFFFFFFFF))
    while x < _L:  # x >= 128 here (x >= L before), so this ends within 3 bytes
        b = _U(buf[pos]) if pos < end else _U(0)
        x = (x << _U(8)) | b
        pos += 1
    return s, x, pos


@njit(**EXACT)
def _encode(codes, n, width, freq, pbits, out, start):  # type: ignore[no-untyped-def]
    """rANS-code the packed ``codes`` after ``out[:start]``; the end byte, -1 if full,
    -2 if a code has frequency 0.

    Four interleaved states (code i uses state i mod 4), so four dependency chains
    overlap.  Bytes are emitted backwards from the end of ``out``, then moved down."""
    k = freq.shape[0]
    m = np.int64(1) << pbits
    enc = np.zeros((256, 5), np.uint64)  # zero x_max: no frequency (rejected below)
    cum = 0
    for s in range(k):
        f = freq[s]
        if f == 0:
            continue
        enc[s, 0] = _U(((RANS_L >> pbits) << 8) * f)
        enc[s, 4] = _U(m - f)
        if f < 2:
            enc[s, 1] = _U(0xFFFFFFFF)
            enc[s, 3] = _U(cum + m - 1)
        else:
            sh = 0
            while f > (np.int64(1) << sh):
                sh += 1
            enc[s, 1] = _U(((np.int64(1) << (sh + 31)) + f - 1) // f)
            enc[s, 2] = _U(sh - 1)
            enc[s, 3] = _U(cum)
        cum += f
    room = out.shape[0] - start
    tail = out[start:]
    ptr = room
    x0 = x1 = x2 = x3 = _L
    buf = np.empty(BLOCK, np.uint8)
    words = buf.view(np.uint64)
    for b0 in range((n - 1) // BLOCK * BLOCK, -1, -BLOCK):
        cnt = min(BLOCK, n - b0)
        unpack_block(codes, _U(b0 >> 3), cnt, width, buf, words)
        for j in range(cnt):
            if enc[buf[j], 0] == _U(0):
                return np.int64(-2)
        j = cnt - 1
        while j >= 0 and (b0 + j) & 3 != 3:  # a last, partial group of four
            r = (b0 + j) & 3
            if r == 0:
                x0, ptr = _put(x0, buf[j], enc, tail, ptr)
            elif r == 1:
                x1, ptr = _put(x1, buf[j], enc, tail, ptr)
            else:
                x2, ptr = _put(x2, buf[j], enc, tail, ptr)
            j -= 1
        while j >= 3:
            x3, ptr = _put(x3, buf[j], enc, tail, ptr)
            x2, ptr = _put(x2, buf[j - 1], enc, tail, ptr)
            x1, ptr = _put(x1, buf[j - 2], enc, tail, ptr)
            x0, ptr = _put(x0, buf[j - 3], enc, tail, ptr)
            j -= 4
        if ptr < 0:
            return np.int64(-1)
    if ptr < 16:
        return np.int64(-1)
    for x in (x3, x2, x1, x0):  # x0 ends up first: the decoder reads it first
        ptr -= 4
        for i in range(4):
            tail[ptr + i] = np.uint8((x >> _U(8 * i)) & _FF)
    size = room - ptr
    for i in range(size):  # dest <= src: an ascending copy is safe
        tail[i] = tail[ptr + i]
    return np.int64(start + size)


@njit(**EXACT)
def _decode(buf, start, n, width, freq, pbits, codes):  # type: ignore[no-untyped-def]
    """Decode ``n`` symbols from ``buf[start:]`` (all of it) into the packed ``codes``."""
    end = buf.shape[0]
    k = freq.shape[0]
    m = np.int64(1) << pbits
    slot_sym = np.empty(m, np.uint8)
    fc = np.zeros(256, np.uint64)  # frequency << 32 | cumulative frequency
    c = 0
    for s in range(k):
        fc[s] = (_U(freq[s]) << _U(32)) | _U(c)
        for t in range(c, c + freq[s]):
            slot_sym[t] = s
        c += freq[s]
    if end - start < 16:
        return TRUNCATED
    st = np.zeros(4, np.uint64)
    for r in range(4):
        for i in range(4):
            st[r] |= _U(buf[start + 4 * r + i]) << _U(8 * i)
        if st[r] < _L or st[r] >= _L << _U(8):  # an encoder's final state is in [L, 256 L)
            return CORRUPT
    x0, x1, x2, x3 = st[0], st[1], st[2], st[3]
    pos = start + 16
    mask = _U(m - 1)
    pb = _U(pbits)
    blk = np.empty(BLOCK, np.uint8)
    words = blk.view(np.uint64)
    for b0 in range(0, n, BLOCK):
        cnt = min(BLOCK, n - b0)
        q = cnt & ~3  # blocks start at multiples of 4: code b0 + j uses state j mod 4
        for j in range(0, q, 4):
            blk[j], x0, pos = _get(x0, slot_sym, fc, mask, pb, buf, pos, end)
            blk[j + 1], x1, pos = _get(x1, slot_sym, fc, mask, pb, buf, pos, end)
            blk[j + 2], x2, pos = _get(x2, slot_sym, fc, mask, pb, buf, pos, end)
            blk[j + 3], x3, pos = _get(x3, slot_sym, fc, mask, pb, buf, pos, end)
        for j in range(q, cnt):
            if j - q == 0:
                blk[j], x0, pos = _get(x0, slot_sym, fc, mask, pb, buf, pos, end)
            elif j - q == 1:
                blk[j], x1, pos = _get(x1, slot_sym, fc, mask, pb, buf, pos, end)
            else:
                blk[j], x2, pos = _get(x2, slot_sym, fc, mask, pb, buf, pos, end)
        if pos > end:
            return TRUNCATED
        pack_block(blk, words, cnt, codes, _U(b0 >> 3), width)
    if x0 != _L or x1 != _L or x2 != _L or x3 != _L or pos != end:
        return CORRUPT
    return OK


# ------------------------------------------------------------------ table on the wire
@njit(**EXACT)
def _write_table(freq, pbits, out, cap):  # type: ignore[no-untyped-def]
    acc, nb, pos = put_int(out, cap, _U(0), 0, np.int64(0), pbits, False)
    acc, nb, pos = put_span(out, cap, acc, nb, pos, freq)
    return flush_bits(out, cap, acc, nb, pos)


@njit(**EXACT)
def _read_table(buf, nsym, freq):  # type: ignore[no-untyped-def]
    """(status, P, bytes) of the table at the start of ``buf``; fills ``freq`` (nsym)."""
    end = buf.shape[0]
    pb, acc, nb, pos = get_int(buf, end, _U(0), 0, np.int64(0), False)
    if pb == _U(0) or pb > _U(MAX_PROB_BITS):
        return CORRUPT, 0, 0
    m = np.int64(1) << np.int64(pb)
    ok, first, last, acc, nb, pos = get_span(buf, end, acc, nb, pos, freq[:nsym], m)
    if not ok:
        return CORRUPT, 0, 0
    status, nbytes = table_end(acc, nb, pos, end)
    if status != OK:
        return status, 0, 0
    if freq.sum() != m or freq[first] == 0 or freq[last] == 0:
        return CORRUPT, 0, 0
    return OK, np.int64(pb), nbytes


# ------------------------------------------------------------------ wrappers
def frequencies(counts: np.ndarray, pbits: int | None = None) -> tuple[np.ndarray, int]:
    """(frequencies summing to 2^P, P) for symbol ``counts`` (module docstring)."""
    c = np.ascontiguousarray(counts, dtype=np.int64)
    kinds = int(np.count_nonzero(c))
    if c.ndim != 1 or c.shape[0] > 256 or kinds == 0 or int(c.min()) < 0:
        raise ValueError("counts must be 1-D, at most 256 symbols, >= 0, not all zero")
    p = prob_bits(int(c.sum()), kinds) if pbits is None else int(pbits)
    if not kinds <= 1 << p <= 1 << MAX_PROB_BITS:
        raise ValueError(f"P={p} cannot give {kinds} symbols a frequency (P <= {MAX_PROB_BITS})")
    freq = np.zeros(c.shape[0], np.int64)
    _normalize(c, p, freq)
    return freq, p


def encode(codes: np.ndarray, n: int, width: int, nsym: int, out: np.ndarray) -> int:
    """rANS-code ``n`` packed codes (each < ``nsym``) with their table into ``out``.

    Returns the bytes written (table + state + stream), -1 when they do not fit.
    """
    check_stream(codes, n, width)
    views = stream_views(codes)
    if n == 0:
        return 0
    counts = np.zeros(256, np.int64)
    histogram(views, n, int(width), counts)
    if int(np.flatnonzero(counts)[-1]) >= nsym:
        raise ValueError(f"a code is outside the alphabet of {nsym} symbols")
    freq, p = frequencies(counts[:nsym])
    start = int(_write_table(freq, p, out, out.shape[0]))
    if start < 0:
        return -1
    return int(_encode(views, n, int(width), freq, p, out, start))


def decode(buf: np.ndarray, n: int, width: int, nsym: int, codes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode` (all of ``buf``) into the packed stream ``codes``.

    ValueError for a corrupted or truncated stream or table.
    """
    check_stream(codes, n, width)
    if not isinstance(buf, np.ndarray) or buf.dtype != np.uint8 or buf.ndim != 1:
        raise TypeError("buf must be a 1-D uint8 array")
    buf = np.ascontiguousarray(buf)
    if n == 0:
        if buf.shape[0]:
            raise ValueError("corrupted stream: bytes for an empty message")
        return codes
    freq = np.zeros(nsym, np.int64)
    status, p, start = _read_table(buf, int(nsym), freq)
    check_status(status, "rans table")
    check_status(_decode(buf, int(start), n, int(width), freq, int(p), stream_views(codes)),
                 "rans")
    return codes


def table_nbytes(buf: np.ndarray, nsym: int) -> int:
    """Bytes taken by the table at the start of a stream from :func:`encode`."""
    status, _, nbytes = _read_table(np.ascontiguousarray(buf), int(nsym),
                                    np.zeros(nsym, np.int64))
    check_status(status, "rans table")
    return int(nbytes)
