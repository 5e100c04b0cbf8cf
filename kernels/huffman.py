"""Canonical Huffman codes over a small alphabet (<= 256 symbols) of packed codes.

Code lengths come from the symbol counts by Huffman's algorithm (two queues over
the leaves sorted by (count, symbol); on equal weights a leaf goes first), so the
coded length ``sum_k d_k len_k`` is :func:`hpcq.compressors.lengths.huffman_bits`,
the optimum.  A single symbol gets length 1 (a code needs a bit).  Lengths are
limited to :data:`MAX_LEN` = 24: should the optimum exceed it (it takes
Fibonacci-like counts summing to at least about 2^17), the counts are halved
(rounding up) until it does not, and the code is then near-optimal instead.

Codes are canonical (deflate's rule: by length, then by symbol, counting up),
MSB-first as trees go, so they enter the LSB-first stream bit-reversed.  Decoding
looks the next :data:`LUT_BITS` bits up in a table (symbol and length); longer
codes take a canonical bit-by-bit path (puff's ``decode``).

Table (sent per message unless both ends hold a static one): Elias gamma codes
(:mod:`hpcq.kernels.elias`) of ``lo + 1``, ``hi - lo + 1`` and, for each symbol
``lo..hi`` (the first and last with a code), ``len + 1``; zero-padded to a byte.
The decoder checks it: symbols inside the alphabet, lengths <= 24, a non-zero
first and last length, and Kraft's inequality.  The coded stream follows.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hpcq.kernels._config import EXACT, INLINE
from hpcq.kernels.bitpack import get_code
from hpcq.kernels.blockpack import BLOCK, pack_block, stream_views, unpack_block
from hpcq.kernels.elias import get_span, put_span, table_end
from hpcq.kernels.entropy import (
    CORRUPT,
    OK,
    TRUNCATED,
    bits_consumed,
    check_status,
    check_stream,
    finish_read,
    flush_bits,
    histogram,
    refill,
    reverse_bits,
)

MAX_LEN = 24
LUT_BITS = 11
_U = np.uint64
_ONE = np.uint64(1)
_FF = np.uint64(0xFF)


# ------------------------------------------------------------------ lengths and codes
@njit(**EXACT)
def _huffman_depths(counts, lengths):  # type: ignore[no-untyped-def]
    """Optimal code lengths of the symbols with ``counts > 0`` into ``lengths``; the longest."""
    nz = np.flatnonzero(counts > 0)
    m = nz.shape[0]
    lengths[:] = 0
    if m == 0:
        return 0
    if m == 1:
        lengths[nz[0]] = 1
        return 1
    order = np.argsort(counts[nz], kind="mergesort")  # stable: ties by symbol
    w = np.empty(2 * m - 1, np.int64)
    parent = np.empty(2 * m - 1, np.int64)
    for i in range(m):
        w[i] = counts[nz[order[i]]]
    leaf, node = 0, m
    for nxt in range(m, 2 * m - 1):
        tot = 0
        for _ in range(2):
            if leaf < m and (node >= nxt or w[leaf] <= w[node]):
                pick = leaf
                leaf += 1
            else:
                pick = node
                node += 1
            parent[pick] = nxt
            tot += w[pick]
        w[nxt] = tot
    depth = np.zeros(2 * m - 1, np.int64)
    for i in range(2 * m - 3, -1, -1):
        depth[i] = depth[parent[i]] + 1
    longest = 0
    for i in range(m):
        lengths[nz[order[i]]] = depth[i]
        longest = max(longest, depth[i])
    return longest


@njit(**EXACT)
def _code_lengths(counts, limit, lengths):  # type: ignore[no-untyped-def]
    """Huffman lengths, counts halved (rounding up) until the longest is <= ``limit``."""
    c = counts.copy()
    longest = _huffman_depths(c, lengths)
    while longest > limit:
        for k in range(c.shape[0]):
            if c[k] > 0:
                c[k] = (c[k] + 1) >> 1
        longest = _huffman_depths(c, lengths)
    return longest


@njit(**EXACT)
def _canonical(lengths, codes):  # type: ignore[no-untyped-def]
    """LSB-first (bit-reversed) canonical codes of ``lengths`` into ``codes`` (uint32)."""
    bl = np.zeros(MAX_LEN + 2, np.int64)
    for k in range(lengths.shape[0]):
        bl[lengths[k]] += 1
    bl[0] = 0
    nxt = np.zeros(MAX_LEN + 2, np.int64)
    code = 0
    for b in range(1, MAX_LEN + 1):
        code = (code + bl[b - 1]) << 1
        nxt[b] = code
    for k in range(lengths.shape[0]):
        b = np.int64(lengths[k])
        codes[k] = 0
        if b:
            codes[k] = np.uint32(reverse_bits(nxt[b], b))
            nxt[b] += 1


@njit(**EXACT)
def _decoder_tables(lengths, lut, count, syms):  # type: ignore[no-untyped-def]
    """Fill the lookup table (symbol | length << 8; 0: longer or invalid), the count of
    codes per length and the symbols in canonical order; False if Kraft's sum exceeds 1."""
    count[:] = 0
    for k in range(lengths.shape[0]):
        count[lengths[k]] += 1
    count[0] = 0
    left = 1
    for b in range(1, MAX_LEN + 1):
        left = (left << 1) - count[b]
        if left < 0:
            return False
    offs = np.zeros(MAX_LEN + 2, np.int64)
    for b in range(1, MAX_LEN + 1):
        offs[b + 1] = offs[b] + count[b]
    for k in range(lengths.shape[0]):
        if lengths[k]:
            syms[offs[lengths[k]]] = k
            offs[lengths[k]] += 1
    codes = np.empty(lengths.shape[0], np.uint32)
    _canonical(lengths, codes)
    lut[:] = 0
    size = lut.shape[0]
    for k in range(lengths.shape[0]):
        b = np.int64(lengths[k])
        if 0 < b and (1 << b) <= size:
            for e in range(np.int64(codes[k]), size, 1 << b):
                lut[e] = np.uint16(k | (b << 8))
    return True


# ------------------------------------------------------------------ table on the wire
@njit(**EXACT)
def _write_table(lengths, out, cap):  # type: ignore[no-untyped-def]
    """The table of ``lengths`` at ``out[0:]``; bytes written, -1 if ``cap`` is too small."""
    acc, nb, pos = put_span(out, cap, _U(0), 0, np.int64(0), lengths)
    return flush_bits(out, cap, acc, nb, pos)


@njit(**EXACT)
def _read_table(buf, nsym, lengths):  # type: ignore[no-untyped-def]
    """(status, bytes) of the table at the start of ``buf`` for an alphabet of ``nsym``."""
    end = buf.shape[0]
    ok, first, last, acc, nb, pos = get_span(buf, end, _U(0), 0, np.int64(0),
                                             lengths[:nsym], MAX_LEN)
    if not ok:
        return CORRUPT, 0
    status, nbytes = table_end(acc, nb, pos, end)
    if status != OK:
        return status, 0
    if lengths[first] == 0 or lengths[last] == 0:
        return CORRUPT, 0
    return OK, nbytes


# ------------------------------------------------------------------ coding
@njit(**INLINE)
def _put64(words, w, acc, nb, code, length):  # type: ignore[no-untyped-def]
    """Append ``length`` (1..56) bits of ``code`` to the aligned word buffer ``words``."""
    acc = _U(acc) | (_U(code) << _U(nb))
    nb += length
    if nb >= 64:
        words[w] = acc
        w += 1
        nb -= 64
        acc = _U(code) >> _U(length - nb)  # 1..63: nb was < 64 before
    return words, w, acc, nb


@njit(**EXACT)
def _byte_tables(table, lens, width, bcode, blen):  # type: ignore[no-untyped-def]
    """Codeword and length of every packed byte of 8/width codes (length 0: a code lacks one)."""
    per = 8 // width
    m = (1 << width) - 1
    for v in range(256):
        code = _U(0)
        total = 0
        for t in range(per):
            c = (v >> (t * width)) & m
            if lens[c] == 0:
                total = 0
                break
            code |= _U(table[c]) << _U(total)
            total += np.int64(lens[c])
        bcode[v] = code
        blen[v] = total


@njit(**EXACT)
def _encode(codes, n, width, table, lens, out, start):  # type: ignore[no-untyped-def]
    """Code the ``n`` packed codes into ``out[start:]``: (bits, end byte); end -1 if full,
    -2 if a code has no codeword.

    Codes of width 1, 2, 4 or 8 whose codewords for one packed byte fit in 56 bits are
    coded a byte at a time (one table lookup per byte), the others one code at a time from
    blocks.  Bits collect in aligned 64-bit words (little-endian: the stream's byte
    order), checked against the room in ``out`` after every block and copied there at
    the end."""
    room = out.shape[0] - start
    longest = 0
    for c in range(lens.shape[0]):
        longest = max(longest, np.int64(lens[c]))
    words = np.empty(max(room, 0) // 8 + (BLOCK * 56) // 64 + 2, np.uint64)
    w, acc, nb = 0, _U(0), 0
    packed = codes[0]
    done = 0
    if 8 % width == 0 and (8 // width) * longest <= 56:
        per = 8 // width
        bcode = np.empty(256, np.uint64)
        blen = np.empty(256, np.int64)
        _byte_tables(table, lens, width, bcode, blen)
        nfull = n // per
        for b0 in range(0, nfull, BLOCK):
            for b in range(b0, min(nfull, b0 + BLOCK)):
                v = packed[b]
                ln = blen[v]
                if ln == 0:
                    return 0, np.int64(-2)
                words, w, acc, nb = _put64(words, w, acc, nb, bcode[v], ln)
            if 8 * w > room:
                return 0, np.int64(-1)
        done = nfull * per
    else:
        buf = np.empty(BLOCK, np.uint8)
        bw = buf.view(np.uint64)
        for b0 in range(0, n, BLOCK):
            cnt = min(BLOCK, n - b0)
            unpack_block(codes, _U(b0 >> 3), cnt, width, buf, bw)
            for j in range(cnt):
                c = buf[j]
                ln = np.int64(lens[c])
                if ln == 0:
                    return 0, np.int64(-2)
                words, w, acc, nb = _put64(words, w, acc, nb, _U(table[c]), ln)
            if 8 * w > room:
                return 0, np.int64(-1)
        done = n
    for i in range(done, n):  # the codes of a last, partly filled byte
        c = get_code(packed, i, width)
        ln = np.int64(lens[c])
        if ln == 0:
            return 0, np.int64(-2)
        words, w, acc, nb = _put64(words, w, acc, nb, _U(table[c]), ln)
    bits = 64 * w + nb
    nbytes = (bits + 7) // 8
    if nbytes > room:
        return 0, np.int64(-1)
    if nb:
        words[w] = acc
    for k in range(nbytes):  # words hold the stream little-endian, whatever the host's order
        out[start + k] = np.uint8((words[k >> 3] >> _U(8 * (k & 7))) & _FF)
    return bits, np.int64(start + nbytes)


@njit(**EXACT)
def _decode(buf, start, n, width, lut, tbits, count, syms, codes):  # type: ignore[no-untyped-def]
    """Decode ``n`` symbols from ``buf[start:]`` (all of it) into the packed ``codes``."""
    end = buf.shape[0]
    blk = np.empty(BLOCK, np.uint8)
    words = blk.view(np.uint64)
    mask = (_ONE << _U(tbits)) - _ONE
    acc, nb, pos = _U(0), 0, np.int64(start)
    for b0 in range(0, n, BLOCK):
        cnt = min(BLOCK, n - b0)
        for j in range(cnt):
            if nb < MAX_LEN:
                acc, nb, pos = refill(buf, end, acc, nb, pos)
            e = np.int64(lut[acc & mask])
            b = e >> 8
            if b == 0:  # a long code (or none): canonical decoding bit by bit
                code, first, index = 0, 0, 0
                for b in range(1, MAX_LEN + 2):
                    if b > MAX_LEN:
                        return CORRUPT
                    code |= np.int64((acc >> _U(b - 1)) & _ONE)
                    if code - count[b] < first:
                        e = syms[index + code - first]
                        break
                    index += count[b]
                    first = (first + count[b]) << 1
                    code <<= 1
            blk[j] = np.uint8(e & 0xFF)
            acc >>= _U(b)
            nb -= b
        if bits_consumed(nb, pos) > 8 * end:
            return TRUNCATED
        pack_block(blk, words, cnt, codes, _U(b0 >> 3), width)
    return finish_read(acc, nb, pos, start, end)


# ------------------------------------------------------------------ wrappers
def code_lengths(counts: np.ndarray, limit: int = MAX_LEN) -> np.ndarray:
    """Huffman code lengths (uint8) of the symbols with ``counts > 0``; see module docstring."""
    c = np.ascontiguousarray(counts, dtype=np.int64)
    if c.ndim != 1 or c.shape[0] > 256 or (c.size and int(c.min()) < 0):
        raise ValueError("counts must be 1-D, at most 256 symbols, all >= 0")
    if not 1 <= limit <= MAX_LEN:
        raise ValueError(f"limit must be in 1..{MAX_LEN}")
    if c.shape[0] > 1 << limit:
        raise ValueError(f"{c.shape[0]} symbols do not fit codes of at most {limit} bits")
    lengths = np.zeros(c.shape[0], np.uint8)
    _code_lengths(c, int(limit), lengths)
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The LSB-first canonical codewords (uint32) of code ``lengths`` (0: no codeword)."""
    ln = np.ascontiguousarray(lengths, dtype=np.uint8)
    if ln.size and int(ln.max()) > MAX_LEN:
        raise ValueError(f"code lengths must be <= {MAX_LEN}")
    codes = np.zeros(ln.shape[0], np.uint32)
    _canonical(ln, codes)
    return codes


def encode(codes: np.ndarray, n: int, width: int, nsym: int, out: np.ndarray,
           lengths: np.ndarray | None = None) -> tuple[int, int]:
    """Huffman-code ``n`` packed codes (each < ``nsym``) into ``out``: ``(nbytes, bits)``.

    ``lengths``: a static table both ends hold (no table is written); None: built from
    this message's histogram and written first.  ``bits`` is the coded stream's exact
    length (without the table); ``nbytes`` covers table and stream, -1 when they do
    not fit in ``out``.
    """
    check_stream(codes, n, width)
    views = stream_views(codes)
    cap = out.shape[0]
    start = 0
    if lengths is None:
        counts = np.zeros(256, np.int64)
        histogram(views, n, int(width), counts)
        if n == 0:
            return 0, 0
        if int(np.flatnonzero(counts)[-1]) >= nsym:
            raise ValueError(f"a code is outside the alphabet of {nsym} symbols")
        lengths = code_lengths(counts[:nsym])
        start = int(_write_table(lengths, out, cap))
        if start < 0:
            return -1, 0
    elif n == 0:
        return 0, 0
    table = canonical_codes(lengths)
    lens = np.zeros(256, np.uint8)
    lens[: lengths.shape[0]] = lengths
    tab = np.zeros(256, np.uint32)
    tab[: table.shape[0]] = table
    bits, end = _encode(views, n, int(width), tab, lens, out, start)
    if end == -2:
        raise ValueError("a code has no codeword in the static table")
    return int(end), int(bits)


def decoder_tables(lengths: np.ndarray) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """(lookup table, its bits, count per length, symbols in canonical order) of ``lengths``;
    ValueError if they violate Kraft's inequality."""
    ln = np.ascontiguousarray(lengths, dtype=np.uint8)
    longest = int(ln.max()) if ln.size else 0
    if longest == 0 or longest > MAX_LEN:
        raise ValueError("corrupted Huffman table: no codes, or a code longer than "
                         f"{MAX_LEN} bits")
    tbits = min(longest, LUT_BITS)
    lut = np.empty(1 << tbits, np.uint16)
    count = np.zeros(MAX_LEN + 2, np.int64)
    syms = np.zeros(ln.shape[0], np.int64)
    if not _decoder_tables(ln, lut, count, syms):
        raise ValueError("corrupted Huffman table: code lengths violate Kraft's inequality")
    return lut, tbits, count, syms


def decode(buf: np.ndarray, n: int, width: int, nsym: int, codes: np.ndarray,
           lengths: np.ndarray | None = None,
           tables: tuple[np.ndarray, int, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Inverse of :func:`encode` (all of ``buf``) into the packed stream ``codes``.

    ``lengths`` / ``tables`` (:func:`decoder_tables`, to reuse them): the static table;
    else the table is read from ``buf``.  ValueError for a corrupted or truncated
    stream or table (never reads past ``buf``, never writes past ``codes``).
    """
    check_stream(codes, n, width)
    if not isinstance(buf, np.ndarray) or buf.dtype != np.uint8 or buf.ndim != 1:
        raise TypeError("buf must be a 1-D uint8 array")
    buf = np.ascontiguousarray(buf)
    if n == 0:
        if buf.shape[0]:
            raise ValueError("corrupted stream: bytes for an empty message")
        return codes
    start = 0
    if lengths is None and tables is None:
        lengths = np.zeros(nsym, np.uint8)
        status, start = _read_table(buf, int(nsym), lengths)
        check_status(status, "huffman table")
    if tables is None:
        tables = decoder_tables(lengths)  # type: ignore[arg-type]
    lut, tbits, count, syms = tables
    check_status(_decode(buf, int(start), n, int(width), lut, tbits, count, syms,
                         stream_views(codes)), "huffman")
    return codes


def table_nbytes(buf: np.ndarray, nsym: int) -> int:
    """Bytes taken by the table at the start of a stream from :func:`encode`."""
    status, nbytes = _read_table(np.ascontiguousarray(buf), int(nsym), np.zeros(nsym, np.uint8))
    check_status(status, "huffman table")
    return int(nbytes)
