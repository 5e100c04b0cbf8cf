"""Bit-packing: identity for every width, the LSB-first layout, bounds."""

import naive
import numba
import numpy as np
import pytest

from hpcq.kernels import bitpack


@pytest.mark.parametrize("width", range(1, 17))
def test_pack_matches_reference_and_round_trips(width):
    rng = np.random.default_rng(width)
    for n in list(range(0, 101)) + [12345]:
        codes = rng.integers(0, 1 << width, n).astype(np.uint16)
        packed = bitpack.pack_codes(codes, width)
        assert packed.shape[0] == bitpack.packed_nbytes(n, width) == (n * width + 7) // 8
        np.testing.assert_array_equal(packed, naive.pack_codes(codes, width))
        np.testing.assert_array_equal(bitpack.unpack_codes(packed, width, n), codes)


def test_layout_is_lsb_first():
    # codes 1, 2, 3 at width 2 -> bits 10 01 11 (LSB first) -> byte 0b00111001
    assert bitpack.pack_codes(np.array([1, 2, 3], np.uint8), 2).tolist() == [0b00111001]
    assert bitpack.pack_codes(np.array([0x1FF], np.uint16), 9).tolist() == [0xFF, 0x01]


@numba.njit
def _read_all(buf, n, width, out):
    for i in range(n):
        out[i] = bitpack.get_code(buf, i, width)


@pytest.mark.parametrize("width", [1, 3, 7, 8, 9, 13, 16])
def test_get_code_reads_each_code_without_overrun(width):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 1 << width, 1001).astype(np.uint16)
    packed = bitpack.pack_codes(codes, width)
    out = np.empty(1001, np.uint32)
    _read_all(packed, 1001, width, out)  # packed is exactly sized: no read past its end
    np.testing.assert_array_equal(out, codes)


def test_py_func_matches_compiled():
    codes = np.arange(50, dtype=np.uint16) % 32
    a = np.empty(bitpack.packed_nbytes(50, 5), np.uint8)
    b = np.empty_like(a)
    bitpack._pack(codes, 5, a)
    bitpack._pack.py_func(codes, 5, b)
    np.testing.assert_array_equal(a, b)
    u1, u2 = np.empty(50, np.uint16), np.empty(50, np.uint16)
    bitpack._unpack(a, 5, 50, u1)
    bitpack._unpack.py_func(a, 5, 50, u2)
    np.testing.assert_array_equal(u1, u2)


def test_parallel_variant_is_identical(monkeypatch):
    codes = np.random.default_rng(1).integers(0, 64, 100_003).astype(np.uint16)
    serial = bitpack.pack_codes(codes, 6)
    monkeypatch.setattr(bitpack, "use_parallel", lambda n: True)
    np.testing.assert_array_equal(bitpack.pack_codes(codes, 6), serial)
    np.testing.assert_array_equal(bitpack.unpack_codes(serial, 6, codes.shape[0]), codes)


def test_bad_input():
    with pytest.raises(ValueError, match="1..16"):
        bitpack.pack_codes(np.zeros(3, np.uint8), 17)
    with pytest.raises(ValueError, match="does not fit"):
        bitpack.pack_codes(np.array([4], np.uint8), 2)
    with pytest.raises(TypeError, match="unsigned"):
        bitpack.pack_codes(np.zeros(3, np.int32), 2)
    with pytest.raises(ValueError, match="too short"):
        bitpack.unpack_codes(np.zeros(1, np.uint8), 3, 5)
