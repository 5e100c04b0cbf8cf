"""vqSGD kernels: point sets, sampling against an inverse-CDF reference, decoding."""

import importlib.util

import naive
import numpy as np
import pytest

from hpcq.kernels import vq
from hpcq.kernels.sparsify import index_width


def _have_fwht():
    """kernels/hadamard.py is written in parallel with this codec; skip its cases until it lands."""
    if importlib.util.find_spec("hpcq.kernels.hadamard") is None:
        return False
    from hpcq.kernels import hadamard

    return all(hasattr(hadamard, f) for f in ("fwht", "rotate", "unrotate"))


HAVE_FWHT = _have_fwht()
POINTS = ["cross", "simplex"] + (["hadamard"] if HAVE_FWHT else [])


def _g(n, seed=0):
    return np.random.default_rng(seed).standard_normal(n).astype(np.float32)


def _codes(buf, npts, reps):
    from hpcq.kernels.bitpack import unpack_codes  # widths here stay <= 16

    return unpack_codes(buf, index_width(npts), reps).astype(np.int64)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16, 33])
def test_simplex_is_regular_with_centroid_0_and_circumradius_n(n):
    p = naive.simplex_points(n)
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), n, rtol=1e-12)
    np.testing.assert_allclose(p.sum(axis=0), 0, atol=1e-9 * n)
    gram = p @ p.T
    np.testing.assert_allclose(gram[~np.eye(n + 1, dtype=bool)], -n, rtol=1e-9)
    # the kernel decodes index j to vertex j
    for j in range(n + 1):
        buf = naive.pack_codes([j], index_width(n + 1))
        np.testing.assert_allclose(vq.vq_decode(1.0, buf, "simplex", 1, n), p[j], rtol=1e-5,
                                   atol=1e-5)


@pytest.mark.parametrize("points", POINTS)
@pytest.mark.parametrize("n", [1, 2, 5, 100, 333])
@pytest.mark.parametrize("l1", [False, True])
def test_sampling_matches_inverse_cdf_reference(points, n, l1, monkeypatch):
    monkeypatch.setattr(vq, "CHUNK", 16)  # many chunks, a short last one
    g = _g(n, n)
    if n > 1:
        g[n // 2:] = 0  # empty chunks and exact-zero weights
    w = naive.vq_weights(g, points, l1)
    assert w.min() >= 0 and abs(w.sum() - 1) < 1e-9
    npts = vq.n_points(points, n)
    assert npts == len(w)
    for seed in range(3):
        key = np.uint64(seed * 7 + 1)
        norm, buf, bad = vq.vq_encode(g, points, 9, l1, key)
        assert not bad and buf.shape == ((9 * index_width(npts) + 7) // 8,)
        g64 = g.astype(np.float64)
        ref_norm = np.abs(g64).sum() if l1 else np.linalg.norm(g64)
        assert norm == np.float32(ref_norm)
        idx = naive.vq_sample(g, points, 9, key, l1)
        np.testing.assert_array_equal(naive.pack_codes(idx, index_width(npts)), buf)
        np.testing.assert_allclose(vq.vq_decode(norm, buf, points, 9, n),
                                   naive.vq_decode(norm, idx, points, n), rtol=1e-5, atol=1e-5)


def test_simplex_tight_case_never_draws_a_zero_weight_vertex():
    n = 8
    g = (-naive.simplex_points(n)[3] / n).astype(np.float32)  # a_3 = 0 exactly
    assert abs(naive.vq_weights(g, "simplex")[3]) < 1e-7  # 0 but for float32 rounding
    for s in range(200):
        _, buf, _ = vq.vq_encode(g, "simplex", 4, False, np.uint64(s))
        assert 3 not in _codes(buf, n + 1, 4)


@pytest.mark.parametrize("points", POINTS)
def test_zero_and_nonfinite_vectors(points):
    norm, buf, bad = vq.vq_encode(np.zeros(10, np.float32), points, 3, False, np.uint64(1))
    assert norm == 0 and not bad and not buf.any()
    assert not vq.vq_decode(norm, buf, points, 3, 10).any()
    norm, buf, bad = vq.vq_encode(np.zeros(0, np.float32), points, 3, False, np.uint64(1))
    assert buf.size == 0 and vq.vq_decode(0.0, buf, points, 3, 0).shape == (0,)
    for v in (np.nan, np.inf):
        g = _g(10)
        g[4] = v
        assert vq.vq_encode(g, points, 3, False, np.uint64(1))[2]
    with pytest.raises(ValueError, match="overflows"):
        vq.vq_encode(np.full(4, 3e38, np.float32), points, 1, False, np.uint64(1))


@pytest.mark.parametrize("points", POINTS)
def test_decode_rejects_bad_norms_and_indices(points):
    n = 12
    npts = vq.n_points(points, n)
    w = index_width(npts)
    for norm in (np.nan, np.inf, -1.0):
        with pytest.raises(ValueError, match="norm"):
            vq.vq_decode(norm, np.zeros(4, np.uint8), points, 2, n)
    if npts < 1 << w:
        with pytest.raises(ValueError, match=f">= {npts}"):
            vq.vq_decode(1.0, naive.pack_codes([0, npts], w), points, 2, n)
    with pytest.raises(ValueError, match="too short"):
        vq.vq_decode(1.0, np.zeros(0, np.uint8), points, 2, n)


def test_py_func_and_parallel_variants_match(monkeypatch):
    monkeypatch.setattr(vq, "CHUNK", 64)
    g = _g(9000, 5)
    ref = {p: vq.vq_encode(g, p, 5, False, np.uint64(3)) for p in POINTS}
    dec = {p: vq.vq_decode(ref[p][0], ref[p][1], p, 5, 9000) for p in POINTS}
    monkeypatch.setattr(vq, "use_parallel", lambda n: True)
    for p in POINTS:
        got = vq.vq_encode(g, p, 5, False, np.uint64(3))
        assert got[0] == ref[p][0]
        np.testing.assert_array_equal(got[1], ref[p][1])
        np.testing.assert_array_equal(vq.vq_decode(got[0], got[1], p, 5, 9000), dec[p])
    monkeypatch.setattr(vq, "use_parallel", lambda n: False)
    g = g[:300]
    ref = {p: vq.vq_encode(g, p, 5, True, np.uint64(3)) for p in POINTS}
    dec = {p: vq.vq_decode(ref[p][0], ref[p][1], p, 5, 300) for p in POINTS}
    for name in ("_stats", "_sample", "_read_sorted", "_decode_cross", "_decode_simplex",
                 "_decode_had"):
        monkeypatch.setattr(vq, name, getattr(vq, name).py_func)
    for p in POINTS:
        got = vq.vq_encode(g, p, 5, True, np.uint64(3))
        np.testing.assert_array_equal(got[1], ref[p][1])
        np.testing.assert_array_equal(vq.vq_decode(got[0], got[1], p, 5, 300), dec[p])


@pytest.mark.skipif(not HAVE_FWHT, reason="kernels/hadamard.py not present")
def test_hadamard_decode_is_a_sylvester_row():
    n = 12
    h = naive.sylvester(16)
    for j in range(32):
        buf = naive.pack_codes([j], 5)
        want = (1 if j % 2 == 0 else -1) * h[j // 2, :n]
        np.testing.assert_array_equal(vq.vq_decode(2.0, buf, "hadamard", 1, n), 2 * want)


def test_wrappers_check_arguments():
    with pytest.raises(TypeError):
        vq.vq_encode(np.zeros(3), "cross", 1, False, np.uint64(0))
    with pytest.raises(ValueError, match="points"):
        vq.vq_encode(np.zeros(3, np.float32), "sphere", 1, False, np.uint64(0))
    with pytest.raises(ValueError, match="points"):
        vq.vq_decode(1.0, np.zeros(3, np.uint8), "cross", 0, 3)
    assert [vq.n_points(p, 5) for p in ("cross", "simplex", "hadamard")] == [10, 6, 16]
