"""Entropy coders (kernels/elias.py, huffman.py, rans.py, entropy.py) against naive codes.

The naive references are here, not in naive.py: bit lists of the documented
LSB-first layouts, packed with ``np.packbits(bitorder="little")``.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hpcq.compressors import lengths
from hpcq.kernels import elias, entropy, huffman, rans
from hpcq.kernels.bitpack import pack_codes, packed_nbytes, unpack_codes
from hpcq.kernels.blockpack import stream_views

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ naive codes
def gamma_bits(n):
    """N zeros, a one, the N bits below the leading one, least significant first."""
    k = int(n).bit_length() - 1
    return [0] * k + [1] + [(int(n) >> j) & 1 for j in range(k)]


def omega_bits(n):
    """Groups binary(n), binary(floor log2 n), ... smallest first, each: 1, rest LSB-first; 0."""
    groups, v = [], int(n)
    while v > 1:
        k = v.bit_length() - 1
        groups.append([1] + [(v >> j) & 1 for j in range(k)])
        v = k
    return [b for g in reversed(groups) for b in g] + [0]


def to_bytes(bits):
    if not bits:
        return np.zeros(0, np.uint8)
    return np.packbits(np.array(bits, np.uint8), bitorder="little")


def qsgd_bits(levels, code):
    out, prev = [], -1
    for i, lv in enumerate(levels):
        if lv:
            out += code(i - prev) + [int(lv < 0)] + code(abs(int(lv)))
            prev = i
    return out


def sequences(nsym, n, seed=0):
    """Adversarial and random symbol sequences over an alphabet of nsym."""
    rng = np.random.default_rng(seed)
    geo = np.minimum(rng.geometric(0.5, n) - 1, nsym - 1)
    return {
        "zeros": np.zeros(n, np.uint8),
        "one symbol": np.full(n, nsym - 1, np.uint8),
        "uniform": rng.integers(0, nsym, n).astype(np.uint8),
        "geometric": geo.astype(np.uint8),
        "two": (rng.random(n) < 0.01).astype(np.uint8) * (nsym - 1),
    }


def gaussian_levels(n, s, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.standard_normal(n) * scale), -s, s).astype(np.int64)


# ------------------------------------------------------------------ helpers
def test_bit_helpers():
    from numba import njit

    @njit
    def run(x, n):
        return entropy.ctz64(x), entropy.floor_log2(x), entropy.reverse_bits(x, n)

    assert run(np.uint64(8), 4) == (3, 3, 1)
    assert run(np.uint64(1), 3) == (0, 0, 4)
    assert run(np.uint64(0b1101), 4) == (0, 3, 0b1011)
    assert run(np.uint64(1 << 63), 1)[:2] == (63, 63)


@pytest.mark.parametrize("width", range(1, 9))
def test_histogram_matches_bincount(width):
    rng = np.random.default_rng(width)
    for n in (0, 1, 7, 8, 9, 511, 512, 513, 5000):
        c = rng.integers(0, 1 << width, n).astype(np.uint8)
        h = entropy.symbol_histogram(pack_codes(c, width), n, width)
        np.testing.assert_array_equal(h, np.bincount(c, minlength=256))
    packed = pack_codes(np.arange(100, dtype=np.uint8) % 8, 3)
    counts = np.zeros(256, np.int64)
    entropy.histogram.py_func(stream_views(packed), 100, 3, counts)
    np.testing.assert_array_equal(counts[:8], [13, 13, 13, 13, 12, 12, 12, 12])
    with pytest.raises(ValueError, match="does not hold"):
        entropy.symbol_histogram(packed[:-1], 100, 3)
    with pytest.raises(ValueError, match="widths 1..8"):
        entropy.symbol_histogram(packed, 100, 9)


# ------------------------------------------------------------------ Elias
VALUES = np.array([1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 100, 255, 256, 65535, 65536, 2**31 - 1,
                   2**31, 2**32 - 1], np.uint64)


@pytest.mark.parametrize("omega", [True, False])
def test_elias_matches_naive_codes_and_closed_form_lengths(omega):
    rng = np.random.default_rng(1)
    vals = np.concatenate([VALUES, rng.integers(1, 2**32, 300).astype(np.uint64),
                           rng.geometric(0.3, 300).astype(np.uint64)])
    buf, bits = elias.encode_ints(vals, omega=omega)
    naive_code = omega_bits if omega else gamma_bits
    ref = [b for v in vals for b in naive_code(v)]
    assert bits == len(ref)
    np.testing.assert_array_equal(buf, to_bytes(ref))
    closed = lengths.elias_omega_bits(vals) if omega else lengths.elias_gamma_bits(vals)
    assert bits == int(np.sum(closed))
    for v in VALUES:  # one at a time: each code's own length
        assert elias.encode_ints(np.array([v]), omega=omega)[1] == int(
            lengths.elias_omega_bits(int(v)) if omega else lengths.elias_gamma_bits(int(v)))
    np.testing.assert_array_equal(elias.decode_ints(buf, vals.shape[0], omega=omega), vals)


def test_elias_input_checks_and_empty():
    assert elias.encode_ints(np.zeros(0, np.int64))[1] == 0
    assert elias.decode_ints(np.zeros(0, np.uint8), 0).shape == (0,)
    for bad in ([0], [2**32], [-3]):
        with pytest.raises(ValueError, match="1..4294967295"):
            elias.encode_ints(np.array(bad, np.int64))
    with pytest.raises(TypeError):
        elias.encode_ints(np.ones(3))


@pytest.mark.parametrize("omega", [True, False])
def test_elias_decoder_rejects_corruption(omega):
    vals = np.arange(1, 200, dtype=np.uint64)
    buf, _ = elias.encode_ints(vals, omega=omega)
    with pytest.raises(ValueError, match="truncated"):
        elias.decode_ints(buf[:-2], 199, omega=omega)
    with pytest.raises(ValueError, match="corrupted"):
        elias.decode_ints(np.concatenate([buf, [0]]).astype(np.uint8), 199, omega=omega)
    with pytest.raises(ValueError):  # 33 zeros: no gamma code; omega groups past 32 bits
        elias.decode_ints(np.array([0, 0, 0, 0, 0, 0, 0, 0] if not omega else [0xFF] * 8,
                                   np.uint8), 1, omega=omega)


@pytest.mark.parametrize("width,s", [(2, 1), (3, 3), (4, 7), (4, 4), (8, 127)])
@pytest.mark.parametrize("omega", [True, False])
def test_qsgd_code_is_the_papers_code(width, s, omega):
    rng = np.random.default_rng(width + s)
    cases = [gaussian_levels(1000, s, scale=s / 3), gaussian_levels(777, s, scale=0.1),
             np.zeros(100, np.int64), np.full(50, -s), np.full(9, s),
             rng.integers(-s, s + 1, 4099), np.zeros(0, np.int64)]
    one = np.zeros(1000, np.int64)
    one[[0, 999]] = [s, -1]
    cases.append(one)
    for lv in cases:
        n = lv.shape[0]
        codes = pack_codes((lv + s).astype(np.uint8), width)
        out = np.empty(8 * n + 16, np.uint8)
        bits, nbytes, nnz = elias.qsgd_encode(codes, n, width, s, out, omega=omega)
        ref = qsgd_bits(lv, omega_bits if omega else gamma_bits)
        assert bits == len(ref) and nnz == np.count_nonzero(lv)
        np.testing.assert_array_equal(out[:nbytes], to_bytes(ref))
        if omega:  # QSGD's count, without its 32-bit norm
            assert bits == lengths.qsgd_elias_bits(lv) - 32
        back = np.full(codes.shape[0], 0xAA, np.uint8)
        elias.qsgd_decode(out[:nbytes], n, nnz, width, s, back, omega=omega)
        np.testing.assert_array_equal(back, codes)


def test_qsgd_code_capacity_and_checks():
    s, n = 7, 1000
    lv = gaussian_levels(n, s, scale=2)
    codes = pack_codes((lv + s).astype(np.uint8), 4)
    big = np.full(4000, 0x5A, np.uint8)
    bits, nbytes, nnz = elias.qsgd_encode(codes, n, 4, s, big)
    for cap in (nbytes, nbytes - 1, 3, 0):
        buf = np.full(4000, 0x5A, np.uint8)
        got = elias.qsgd_encode(codes, n, 4, s, buf[:cap])[1]
        assert got == (nbytes if cap == nbytes else -1)
        assert np.all(buf[cap:] == 0x5A)  # nothing written past the capacity
    bad = pack_codes(np.array([15, 7, 7], np.uint8), 4)
    with pytest.raises(ValueError, match="top level 14"):
        elias.qsgd_encode(bad, 3, 4, 7, big)
    dec = np.empty_like(codes)
    with pytest.raises(ValueError, match="non-zeros"):
        elias.qsgd_decode(big[:nbytes], n, n + 1, 4, s, dec)
    with pytest.raises(ValueError):  # too few non-zeros announced: bytes left over
        elias.qsgd_decode(big[:nbytes], n, nnz - 5, 4, s, dec)
    with pytest.raises(ValueError):  # more non-zeros announced: past the end (or of the stream)
        elias.qsgd_decode(big[:nbytes], n, nnz + 10, 4, s, dec)
    with pytest.raises(ValueError, match="truncated"):
        elias.qsgd_decode(big[:nbytes - 8], n, nnz, 4, s, dec)


def test_qsgd_code_py_func_matches_compiled():
    s, n = 3, 300
    lv = gaussian_levels(n, s)
    codes = pack_codes((lv + s).astype(np.uint8), 3)
    a, b = np.zeros(600, np.uint8), np.zeros(600, np.uint8)
    ra = elias._qsgd_encode(stream_views(codes), n, 3, s, True, a)
    rb = elias._qsgd_encode.py_func(stream_views(codes), n, 3, s, True, b)
    assert tuple(map(int, ra)) == tuple(map(int, rb))
    np.testing.assert_array_equal(a, b)
    dec = np.empty_like(codes)
    assert elias._qsgd_decode.py_func(a[:ra[1]], n, ra[2], 3, s, True, stream_views(dec)) == 0
    np.testing.assert_array_equal(dec, codes)


# ------------------------------------------------------------------ Huffman
def test_huffman_lengths_are_optimal():
    rng = np.random.default_rng(0)
    known = {(1, 1, 2, 4, 8): (4, 4, 3, 2, 1), (5, 5, 5, 5): (2, 2, 2, 2), (7,): (1,),
             (3, 0, 3): (1, 0, 1), (0, 0): (0, 0)}
    for counts, want in known.items():
        np.testing.assert_array_equal(huffman.code_lengths(np.array(counts)), want)
    for trial in range(200):
        k = int(rng.integers(1, 40))
        counts = rng.integers(0, 1000, k) * (rng.random(k) < 0.8)
        if trial % 3 == 0:
            counts = np.floor(1e6 * 0.5 ** np.arange(k)).astype(np.int64)  # geometric
        ln = huffman.code_lengths(counts)
        assert int(np.sum(counts * ln)) == lengths.huffman_bits(counts)
        assert np.all((ln > 0) == (counts > 0))
        if np.count_nonzero(counts) > 1:  # a complete code: Kraft's sum is exactly 1
            assert sum(2.0 ** -int(v) for v in ln if v) == 1.0
    lens = np.zeros(5, np.uint8)
    huffman._code_lengths.py_func(np.array([1, 1, 2, 4, 8]), 24, lens)
    np.testing.assert_array_equal(lens, [4, 4, 3, 2, 1])


def test_huffman_length_limit():
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    counts = np.array(fib, np.int64)  # the optimal code is 39 deep
    ln = huffman.code_lengths(counts)
    assert int(ln.max()) <= huffman.MAX_LEN  # halved counts: near-optimal instead
    assert np.sum(counts * ln) <= 1.01 * lengths.huffman_bits(counts)
    assert sum(2.0 ** -int(v) for v in ln) <= 1.0
    assert int(huffman.code_lengths(counts, limit=8).max()) <= 8
    assert int(huffman.code_lengths(counts[:20]).max()) == 19  # under the limit: optimal
    sym = np.repeat(np.arange(40, dtype=np.uint8), np.minimum(counts, 3000))
    np.random.default_rng(0).shuffle(sym)
    _round_trip_huffman(sym, 8, 40, huffman.code_lengths(counts))


def test_canonical_codes():
    # lengths (2, 1, 3, 3): codes b: 10, a: 0, c: 110, d: 111 (MSB-first), reversed for the stream
    codes = huffman.canonical_codes(np.array([2, 1, 3, 3]))
    np.testing.assert_array_equal(codes, [0b01, 0b0, 0b011, 0b111])


def _round_trip_huffman(sym, width, nsym, static=None):
    n = sym.shape[0]
    codes = pack_codes(sym, width)
    cap = 4 * n + 200
    out = np.empty(cap, np.uint8)
    nbytes, bits = huffman.encode(codes, n, width, nsym, out, lengths=static)
    assert 0 <= nbytes <= cap
    counts = np.bincount(sym, minlength=nsym)
    ln = huffman.code_lengths(counts) if static is None else static
    assert bits == int(np.sum(counts * ln[:nsym]))
    if static is None and n:
        assert bits == lengths.huffman_bits(counts) or int(ln.max()) == huffman.MAX_LEN
    back = np.full(codes.shape[0], 0xAA, np.uint8)
    huffman.decode(out[:nbytes], n, width, nsym, back, lengths=static)
    np.testing.assert_array_equal(back, codes)
    return out[:nbytes], bits


@pytest.mark.parametrize("width", range(1, 9))
def test_huffman_round_trip_adversarial(width):
    nsym = (1 << width) - (width > 1)
    for n in (0, 1, 2, 7, 8, 9, 100, 511, 512, 513, 5003):
        for name, sym in sequences(nsym, n, seed=n).items():
            buf, bits = _round_trip_huffman(sym, width, nsym)
            if name in ("zeros", "one symbol") and n:
                assert bits == n  # one bit per symbol, as lengths.huffman_bits counts it


def test_huffman_generic_path_and_static_table():
    # width 2 with codes longer than 14 bits: one code at a time, not a byte at a time
    sym = np.zeros(40000, np.uint8)
    sym[:3] = [1, 2, 3]
    sym[3:40] = 2
    np.random.default_rng(1).shuffle(sym)
    static = np.array([1, 2, 3, 15], np.uint8)  # a valid (incomplete) prefix code
    _round_trip_huffman(sym, 2, 4, static)
    _round_trip_huffman(sym, 2, 4)
    with pytest.raises(ValueError, match="no codeword"):
        huffman.encode(pack_codes(sym, 2), 40000, 2, 4, np.empty(20000, np.uint8),
                       lengths=np.array([1, 1, 0, 0], np.uint8))


def test_huffman_py_func_matches_compiled():
    sym = np.minimum(np.random.default_rng(2).geometric(0.4, 300) - 1, 14).astype(np.uint8)
    for width in (4, 5):
        codes = pack_codes(sym, width)
        ln = huffman.code_lengths(np.bincount(sym, minlength=15))
        tab, lens = np.zeros(256, np.uint32), np.zeros(256, np.uint8)
        tab[:15], lens[:15] = huffman.canonical_codes(ln), ln
        a, b = np.zeros(400, np.uint8), np.zeros(400, np.uint8)
        ra = huffman._encode(stream_views(codes), 300, width, tab, lens, a, 3)
        rb = huffman._encode.py_func(stream_views(codes), 300, width, tab, lens, b, 3)
        assert (int(ra[0]), int(ra[1])) == (int(rb[0]), int(rb[1]))
        np.testing.assert_array_equal(a, b)
        lut, tbits, count, syms = huffman.decoder_tables(ln)
        dec = np.empty_like(codes)
        status = huffman._decode.py_func(a[:ra[1]], 3, 300, width, lut, tbits, count, syms,
                                         stream_views(dec))
        assert status == 0
        np.testing.assert_array_equal(dec, codes)


def test_huffman_capacity_and_bad_tables():
    sym = sequences(15, 3000)["geometric"]
    codes = pack_codes(sym, 4)
    nbytes, _ = huffman.encode(codes, 3000, 4, 15, np.empty(4000, np.uint8))
    for cap in (nbytes, nbytes - 1, 2, 0):
        buf = np.full(4000, 0x5A, np.uint8)
        assert huffman.encode(codes, 3000, 4, 15, buf[:cap])[0] == (nbytes if cap == nbytes
                                                                    else -1)
        assert np.all(buf[cap:] == 0x5A)
    with pytest.raises(ValueError, match="alphabet"):
        huffman.encode(codes, 3000, 4, 3, np.empty(4000, np.uint8))
    with pytest.raises(ValueError, match="Kraft"):
        huffman.decoder_tables(np.array([1, 1, 1], np.uint8))
    with pytest.raises(ValueError, match="no codes"):
        huffman.decoder_tables(np.zeros(3, np.uint8))


# ------------------------------------------------------------------ rANS
def _round_trip_rans(sym, width, nsym):
    n = sym.shape[0]
    codes = pack_codes(sym, width)
    out = np.empty(4 * n + 600, np.uint8)
    nbytes = rans.encode(codes, n, width, nsym, out)
    assert nbytes >= 0
    back = np.full(codes.shape[0], 0xAA, np.uint8)
    rans.decode(out[:nbytes], n, width, nsym, back)
    np.testing.assert_array_equal(back, codes)
    return out[:nbytes]


@pytest.mark.parametrize("width", range(1, 9))
def test_rans_round_trip_adversarial(width):
    nsym = (1 << width) - (width > 1)
    for n in (0, 1, 2, 3, 4, 5, 7, 8, 9, 100, 511, 512, 513, 5003):
        for name, sym in sequences(nsym, n, seed=n).items():
            buf = _round_trip_rans(sym, width, nsym)
            if name in ("zeros", "one symbol") and n:  # table + 4 states, no more
                assert buf.shape[0] - rans.table_nbytes(buf, nsym) == 16


def test_rans_is_within_a_few_tenths_of_a_percent_of_the_entropy():
    for scale, s in ((0.05, 7), (1.0, 7), (3.0, 127)):
        lv = gaussian_levels(200_000, s, seed=3, scale=scale)
        buf = _round_trip_rans((lv + s).astype(np.uint8), 8, 2 * s + 1)
        h = lengths.huffman_bound_bits(lengths.level_counts(lv))
        table = rans.table_nbytes(buf, 2 * s + 1)
        stream = 8 * (buf.shape[0] - table - 16)
        assert h <= stream + 64 and stream <= 1.005 * h + 64, (scale, stream, h)


def test_rans_frequencies():
    freq, p = rans.frequencies(np.array([10, 0, 3, 1]))
    assert p == rans.prob_bits(14, 3) and freq.sum() == 1 << p and freq[1] == 0
    assert np.all(freq[[0, 2, 3]] >= 1)
    freq, p = rans.frequencies(np.array([1] * 255 + [10**9]))  # many rare symbols
    assert p == 16 and freq.sum() == 1 << 16 and freq.min() == 1
    freq, p = rans.frequencies(np.array([0, 5]))
    assert freq.tolist() == [0, 1 << p]
    with pytest.raises(ValueError, match="not all zero"):
        rans.frequencies(np.zeros(3))


def test_rans_py_func_matches_compiled():
    sym = np.minimum(np.random.default_rng(4).geometric(0.3, 203) - 1, 14).astype(np.uint8)
    codes = pack_codes(sym, 4)
    freq, p = rans.frequencies(np.bincount(sym, minlength=15))
    a, b = np.zeros(600, np.uint8), np.zeros(600, np.uint8)
    ea = rans._encode(stream_views(codes), 203, 4, freq, p, a, 5)
    eb = rans._encode.py_func(stream_views(codes), 203, 4, freq, p, b, 5)
    assert int(ea) == int(eb)
    np.testing.assert_array_equal(a[:ea], b[:eb])
    dec = np.empty_like(codes)
    assert rans._decode.py_func(a[:ea], 5, 203, 4, freq, p, stream_views(dec)) == 0
    np.testing.assert_array_equal(dec, codes)


def test_rans_capacity_and_corruption():
    sym = sequences(15, 3000)["geometric"]
    codes = pack_codes(sym, 4)
    nbytes = rans.encode(codes, 3000, 4, 15, np.empty(4000, np.uint8))
    for cap in (nbytes, nbytes - 1, 5, 0):
        buf = np.full(4000, 0x5A, np.uint8)
        assert rans.encode(codes, 3000, 4, 15, buf[:cap]) == (nbytes if cap == nbytes else -1)
        assert np.all(buf[cap:] == 0x5A)
    good = np.empty(4000, np.uint8)
    good = good[:rans.encode(codes, 3000, 4, 15, good)]
    dec = np.empty_like(codes)
    for bad in (good[:-1], np.concatenate([good, [0]]).astype(np.uint8), good[:10]):
        with pytest.raises(ValueError):
            rans.decode(bad, 3000, 4, 15, dec)
    with pytest.raises(ValueError, match="bytes for an empty"):
        rans.decode(good, 0, 4, 15, dec[:0])


# ------------------------------------------------------------------ fuzzing
CODERS = {
    "huffman": (lambda c, n, w, k, out: huffman.encode(c, n, w, k, out)[0],
                lambda b, n, w, k, codes, aux: huffman.decode(b, n, w, k, codes)),
    "rans": (lambda c, n, w, k, out: rans.encode(c, n, w, k, out),
             lambda b, n, w, k, codes, aux: rans.decode(b, n, w, k, codes)),
    "elias": (lambda c, n, w, k, out: elias.qsgd_encode(c, n, w, k // 2, out)[1],
              lambda b, n, w, k, codes, aux: elias.qsgd_decode(b, n, aux, w, k // 2, codes)),
}


def fuzz(name, trials=300, seed=0):
    """Corrupt good streams (bit flips, cuts, extensions, random bytes): every decode
    raises ValueError or yields n codes in the alphabet.  Returns the ValueError count."""
    enc, dec = CODERS[name]
    rng = np.random.default_rng(seed)
    caught = 0
    for t in range(trials):
        n, nsym = int(rng.integers(1, 700)), 15
        lv = gaussian_levels(n, 7, seed=t, scale=float(rng.choice([0.2, 1, 4])))
        sym = (lv + 7).astype(np.uint8)
        codes = pack_codes(sym, 4)
        out = np.empty(8 * n + 600, np.uint8)
        good = out[:enc(codes, n, 4, nsym, out)].copy()
        aux = int(np.count_nonzero(lv))
        kind = t % 4
        if kind == 0 and good.size:
            buf = good.copy()
            for pos in rng.integers(0, good.size, rng.integers(1, 4)):
                buf[pos] ^= np.uint8(1 << rng.integers(0, 8))
        elif kind == 1:
            buf = good[: int(rng.integers(0, max(good.size, 1)))]
        elif kind == 2:
            buf = np.concatenate([good, rng.integers(0, 256, rng.integers(1, 9))]).astype(
                np.uint8)
        else:
            buf = rng.integers(0, 256, rng.integers(0, 64)).astype(np.uint8)
        back = np.empty(packed_nbytes(n, 4), np.uint8)
        try:
            dec(buf, n, 4, nsym, back, aux)
        except ValueError:
            caught += 1
            continue
        assert unpack_codes(back, 4, n).max() < 16
    return caught


@pytest.mark.parametrize("name", sorted(CODERS))
def test_fuzzed_streams_never_crash(name):
    assert fuzz(name) > 150


@pytest.mark.slow
def test_decoders_never_read_or_write_out_of_bounds():
    """The fuzz again, compiled with bounds checks (a fresh cache): an IndexError fails it."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO / 'tests')!r})
        import test_kernels_entropy as t
        for name in sorted(t.CODERS):
            t.fuzz(name, trials=120, seed=7)
        print("ok")
    """)
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1",
               NUMBA_CACHE_DIR=str(REPO / ".numba_cache" / "boundscheck"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=900, cwd=REPO)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]
