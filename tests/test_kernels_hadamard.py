"""Walsh-Hadamard transform and randomized rotation: references, invariants, bits, bounds."""

import naive
import numba
import numpy as np
import pytest

from hpcq.kernels import hadamard, rng

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-6, np.float64: 1e-13}
KEY = rng.derive_key(2024, rng.PURPOSE_SIGNS, 7)


def _x(n, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(n).astype(dtype)


def _py(fn):
    """The pure-Python body of a kernel (the function itself under NUMBA_DISABLE_JIT)."""
    return getattr(fn, "py_func", fn)


def _close(got, ref, dtype):
    scale = max(1.0, float(np.abs(ref).max())) if len(ref) else 1.0
    np.testing.assert_allclose(got, ref, rtol=0, atol=TOL[dtype] * 4 * scale)


# ---------------------------------------------------------------- fwht
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", range(13))
def test_fwht_matches_dense_hadamard(dtype, k):
    B = 1 << k
    for nblocks in (1, 3):
        x = _x(B * nblocks, dtype, seed=k)
        y = hadamard.fwht(x.copy(), B)
        assert y.dtype == dtype
        _close(y, naive.fwht_dense(x, B), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [0, 3, 4, 5, 7, 8, 9, 11, 14, 16, 18])
def test_fwht_bits_are_the_textbook_butterfly(dtype, k):
    """Scale first, then levels h = 1, 2, ... of (a + b, a - b): exactly, whatever the blocking."""
    B = 1 << k
    x = _x(B * (2 if k < 16 else 1), dtype, seed=k)
    y = hadamard.fwht(x.copy(), B)
    assert y.tobytes() == naive.fwht_butterfly(x, B).tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_fwht_twice_is_identity_and_block_none(dtype):
    for k in (1, 6, 10, 15):
        x = _x(1 << k, dtype, seed=k)
        y = x.copy()
        assert hadamard.fwht(y) is y  # block=None: the whole array, in place
        hadamard.fwht(y)
        _close(y, x, dtype)
    empty = np.zeros(0, dtype)
    assert hadamard.fwht(empty, 8).shape == (0,)


def test_fwht_edge_values():
    x = np.zeros(1024, np.float32)
    assert not hadamard.fwht(x.copy(), 256).any()
    c = np.full(256, 3.0, np.float32)  # a constant block maps to sqrt(B) * c * e_0
    y = hadamard.fwht(c, 256)
    assert y[0] == 48.0 and not y[1:].any()
    big = np.full(64, 1e30, np.float32)
    assert np.isfinite(hadamard.fwht(big)).all()


# ---------------------------------------------------------------- rotation
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [1, 2, 8, 16, 64, 128, 256, 1024, 4096])
def test_rotate_matches_dense_and_inverts(dtype, B):
    for d in sorted({0, 1, B - 1, B, B + 1, 3 * B - 7, 1000}):
        if d < 0:
            continue
        x = _x(d, dtype, seed=d)
        x0 = x.copy()
        y = hadamard.rotate(x, B, KEY)
        n = hadamard.padded_length(d, B)
        assert y.shape == (n,) and y.dtype == dtype
        signs = naive.rotation_signs(KEY, n)
        _close(y, naive.rotate_dense(x, B, signs), dtype)
        z = hadamard.unrotate(y, B, KEY, d)
        assert z.shape == (d,) and np.array_equal(x, x0)
        _close(z, naive.unrotate_dense(y, B, signs, d), dtype)
        if d:  # unrotate(rotate(x)) == x to 1e-6 relative (float32)
            assert np.linalg.norm(z - x) <= 10 * TOL[dtype] * np.linalg.norm(x)
            assert np.isclose(np.linalg.norm(y), np.linalg.norm(x), rtol=10 * TOL[dtype], atol=0)


def test_inplace_variants_agree_with_out_of_place():
    for B, d in ((16, 100), (256, 5000), (1 << 14, 40000)):
        x = _x(d)
        y = hadamard.rotate(x, B, KEY)
        buf = np.zeros(hadamard.padded_length(d, B), np.float32)
        buf[:d] = x
        assert hadamard.rotate_inplace(buf, B, KEY) is buf
        assert buf.tobytes() == y.tobytes()
        z = hadamard.unrotate(y, B, KEY, d)
        assert hadamard.unrotate_inplace(buf, B, KEY) is buf
        assert buf[:d].tobytes() == z.tobytes()
        out = np.empty(len(y), np.float32)
        assert hadamard.rotate(x, B, KEY, out=out) is out and out.tobytes() == y.tobytes()
        out = np.empty(d, np.float32)
        assert hadamard.unrotate(y, B, KEY, d, out=out) is out and out.tobytes() == z.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_basis_vector_spreads_to_exactly_one_over_sqrt_block(dtype):
    """papers.md T15: R(e_1) has every |entry| equal to 1/sqrt(B), exactly."""
    for k in range(13):
        B = 1 << k
        for j in (0, B // 2, B - 1):
            e = np.zeros(B, dtype)
            e[j] = 1
            y = np.abs(hadamard.rotate(e, B, KEY))
            assert y.max() == y.min() == dtype(1 / np.sqrt(B))


def test_sign_convention_and_keys():
    n = 1000
    ones = np.ones(n, np.float32)
    d = hadamard.rotate(ones, 1, KEY)  # B = 1: y = D x
    np.testing.assert_array_equal(d, naive.rotation_signs(KEY, n))
    other = rng.derive_key(2024, rng.PURPOSE_SIGNS, 8)
    assert (hadamard.rotate(ones, 1, other) != d).sum() > n // 4
    x = _x(3000)
    a = hadamard.rotate(x, 512, KEY)
    assert a.tobytes() == hadamard.rotate(x, 512, int(KEY)).tobytes()
    assert a.tobytes() != hadamard.rotate(x, 512, other).tobytes()
    # signs follow the global index: rotating the second half alone is not the same
    assert not np.array_equal(hadamard.rotate(x[512:1024], 512, KEY), a[512:1024])


# ---------------------------------------------------------------- threads and py_func
def _all_outputs():
    out = []
    x = _x(1 << 20, seed=3)
    out.append(hadamard.fwht(x.copy()))  # one block: sub-blocks then parallel top passes
    out.append(hadamard.fwht(x.copy(), 1 << 10))  # many blocks over threads
    out.append(hadamard.fwht(x[: 1 << 19].astype(np.float64), 1 << 19))
    y = hadamard.rotate(x[:-1000], 1 << 20, KEY)
    out += [y, hadamard.unrotate(y, 1 << 20, KEY, (1 << 20) - 1000)]
    y = hadamard.rotate(x[:-1000], 1 << 12, KEY)
    out += [y, hadamard.unrotate(y, 1 << 12, KEY, (1 << 20) - 1000)]
    return out


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_one_and_two_threads_give_identical_bits():
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        serial = _all_outputs()
        numba.set_num_threads(2)
        assert hadamard.use_parallel(1 << 20)
        parallel = _all_outputs()
    finally:
        numba.set_num_threads(before)
    for a, b in zip(serial, parallel, strict=True):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_parallel_kernels_on_small_inputs(monkeypatch, dtype):
    cases = [(1 << 13, 1 << 13, (1 << 13) - 1), (1 << 12, 256, 3000), (64, 4, 50)]
    ref = []
    for n, B, d in cases:
        x = _x(n, dtype, seed=n)
        y = hadamard.rotate(x[:d], B, KEY)
        ref.append((hadamard.fwht(x.copy(), B), y, hadamard.unrotate(y, B, KEY, d)))
    monkeypatch.setattr(hadamard, "use_parallel", lambda n: True)
    for (n, B, d), r in zip(cases, ref, strict=True):
        x = _x(n, dtype, seed=n)
        y = hadamard.rotate(x[:d], B, KEY)
        got = (hadamard.fwht(x.copy(), B), y, hadamard.unrotate(y, B, KEY, d))
        for a, b in zip(got, r, strict=True):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_py_func_matches_compiled(dtype):
    r = np.random.default_rng(5)
    words = [np.uint64(v) for v in r.integers(0, 2**63, 4)]
    scale = dtype(0.25)
    lanes = 64 // np.dtype(dtype).itemsize
    for big in (False, True):
        n = lanes * (hadamard.TILE_VECS if big else 1)
        for fn in (hadamard._tile_up, hadamard._tile_down):
            x = _x(n, dtype)
            a, b = np.empty_like(x), np.empty_like(x)
            fn(x, 0, a, 0, scale, *words, big)
            _py(fn)(x, 0, b, 0, scale, *words, big)  # the pure-Python twin of the intrinsic
            assert a.tobytes() == b.tobytes()
    for s in (1, 2, 3):
        for fn in (hadamard._group_up, hadamard._group_down):
            h = 2 * lanes
            x = _x(h << s, dtype)
            a, b = x.copy(), x.copy()
            fn(a, a, 0, h, s, 0, h, lanes)
            _py(fn)(b, b, 0, h, s, 0, h, lanes)
            assert a.tobytes() == b.tobytes()
    key = np.uint64(KEY)
    for k, d in ((2, 3), (11, 1500), (12, 4096)):
        n = 1 << k
        x = _x(d, dtype)
        a, b = np.empty(n, dtype), np.empty(n, dtype)
        hadamard._up(x, a, k, d, key, True, scale)
        _py(hadamard._up)(x, b, k, d, key, True, scale)
        _py(hadamard._up_par)(x, b, k, d, key, True, scale, 2)
        assert a.tobytes() == b.tobytes()
        _py(hadamard._block_up)(x, b, 0, k, d, key, True, scale)
        assert a.tobytes() == b.tobytes()
        if k < 4:  # shorter than a vector: the scalar path
            _py(hadamard._small_up)(x, b, 0, k, d, key, True, scale)
            assert a.tobytes() == b.tobytes()
        oa, ob, wb = np.empty(d, dtype), np.empty(d, dtype), np.empty(n, dtype)
        hadamard._down(a, np.empty(n, dtype), oa, k, d, key, True, scale, 2)
        _py(hadamard._down)(a, wb, ob, k, d, key, True, scale, 2)
        assert oa.tobytes() == ob.tobytes()
        for top in (2, 3):  # the first pass's width changes the grouping, never the bits
            _py(hadamard._down_par)(a, wb, ob, k, d, key, True, scale, 2, top)
            assert oa.tobytes() == ob.tobytes()
            _py(hadamard._block_down)(a, wb, ob, 0, k, d, key, True, scale, top)
            assert oa.tobytes() == ob.tobytes()
        if k < 3:
            _py(hadamard._small_down)(a, wb, ob, 0, k, d, key, True, scale)
            assert oa.tobytes() == ob.tobytes()


# ---------------------------------------------------------------- bad input
def test_bad_input_is_rejected_with_a_clear_message():
    x = _x(64)
    with pytest.raises(ValueError, match="power of two"):
        hadamard.fwht(x, 24)
    with pytest.raises(ValueError, match="power of two"):
        hadamard.fwht(x, 0)
    with pytest.raises(TypeError, match="block"):
        hadamard.fwht(x, 8.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        hadamard.fwht(np.arange(64), 8)
    with pytest.raises(TypeError, match="float32 or float64"):
        hadamard.rotate(x.astype(np.float16), 8, KEY)
    with pytest.raises(TypeError, match="numpy array"):
        hadamard.fwht(list(x), 8)
    with pytest.raises(ValueError, match="1-D"):
        hadamard.fwht(x.reshape(8, 8), 8)
    with pytest.raises(ValueError, match="C-contiguous"):
        hadamard.fwht(_x(128)[::2], 8)
    with pytest.raises(ValueError, match="C-contiguous"):
        hadamard.rotate(_x(128)[::2], 8, KEY)
    with pytest.raises(ValueError, match="multiple of block"):
        hadamard.fwht(_x(72), 16)
    with pytest.raises(ValueError, match="power-of-two length"):
        hadamard.fwht(_x(72))
    ro = _x(64)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        hadamard.fwht(ro, 8)
    hadamard.rotate(ro, 8, KEY)  # a read-only input is fine out of place
    with pytest.raises(TypeError, match="key"):
        hadamard.rotate(x, 8, 1.5)
    with pytest.raises(ValueError, match="key"):
        hadamard.rotate(x, 8, -1)
    with pytest.raises(ValueError, match="length 64"):
        hadamard.rotate(x, 8, KEY, out=np.empty(63, np.float32))
    with pytest.raises(ValueError, match="float32 of length"):
        hadamard.rotate(x, 8, KEY, out=np.empty(64, np.float64))
    with pytest.raises(ValueError, match="overlap"):
        hadamard.rotate(x, 8, KEY, out=x)
    with pytest.raises(ValueError, match="needs 40"):
        hadamard.unrotate(x, 8, KEY, 40)
    with pytest.raises(ValueError, match="non-negative"):
        hadamard.unrotate(x, 8, KEY, -1)
    with pytest.raises(ValueError, match="multiple of block"):
        hadamard.rotate_inplace(_x(72), 16, KEY)
    with pytest.raises(ValueError, match="multiple of block"):
        hadamard.unrotate_inplace(_x(72), 16, KEY)
    assert hadamard.padded_length(0, 8) == 0
    assert hadamard.padded_length(1, 8) == 8
    assert hadamard.padded_length(16, 8) == 16
    with pytest.raises(ValueError, match="power of two"):
        hadamard.padded_length(5, 3)
