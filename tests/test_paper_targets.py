"""papers.md section 6 reproduction targets T8, T9, T11, T14, T15, T16 not tested elsewhere.

Already covered elsewhere: T8/T9 at d = 16 (cross s = 1, 4; simplex s = 1, 4; hadamard
s = 1: mean error, MSE within 3 %, ||ghat|| for cross) in
``test_compressors_sparse_vq.py::test_vqsgd_unbiased_norms_and_mse``; T15's
``max |R(e_1)| = 1/sqrt(B)`` in ``test_kernels_hadamard.py``.  Every statistical check
here uses fixed seeds, so it is deterministic; the tolerances are a few standard errors.

Two targets do not hold as papers.md states them; the tests pin what is true instead:

* T14, "Elias-coded length for s = sqrt(d) <= 2.8d + 32": QSGD's 2.8d + 32 (its
  Corollary 3.3) is for a separate dense-regime code; its gap-based Elias code (Theorem
  3.2, :func:`~hpcq.compressors.lengths.qsgd_elias_bits`) meets it on gaussian vectors
  (about 2.78d + 32) but takes exactly 3d + 32 bits on the flat vector 1/sqrt(d).
* T16, DRIVE "E[x_hat] = x over the random rotation": true for uniformly random (Haar)
  rotations, not for the randomized Hadamard rotation hpcq (and DRIVE in practice) uses:
  for a 3-sparse x the exact expectation over the Hadamard signs is far from x.  Dense
  gaussian x shows no measurable bias.
"""

import itertools
import math

import naive
import numpy as np
import pytest

import hpcq
from hpcq.compressors import HEADER_BYTES
from hpcq.compressors.lengths import (
    elias_omega_bits,
    huffman_bits,
    huffman_bound_bits,
    level_counts,
    qsgd_elias_bits,
)
from hpcq.kernels import hadamard, rng
from hpcq.kernels.bitpack import unpack_codes


def _x(d, seed=0):
    return np.random.default_rng(seed).standard_normal(d).astype(np.float32)


def _sq(v):
    return float(np.sum(np.asarray(v, np.float64) ** 2))


def _draws(c, x, n, seed=11):
    """``n`` decoded messages of ``x`` (steps 0..n-1 of one seed), as float64 rows."""
    return np.array([c.decode(c.encode(x, seed=seed, step=t)) for t in range(n)], np.float64)


# ------------------------------------------------------------------ T8: vqSGD cross-polytope
def test_t8_cross_polytope_at_a_million_coordinates():
    d = 1 << 20
    g = _x(d, 1)
    c = hpcq.compressor("vqsgd")
    y = c.decode(c.encode(g, seed=3)).astype(np.float64)
    assert np.count_nonzero(y) == 1  # one point +-sqrt(d) ||g|| e_i
    assert np.linalg.norm(y) == pytest.approx(math.sqrt(d * _sq(g)), rel=2e-7)
    for s in (1, 4, 16):
        c = hpcq.compressor(f"vqsgd:reps={s}")
        assert sum(c.theory_bits(d)) == s * math.ceil(math.log2(2 * d)) + 32  # 21 s + 32
        assert c.wire_bytes(d) - HEADER_BYTES == 4 + (21 * s + 7) // 8
    y = c.decode(c.encode(g, seed=4)).astype(np.float64)  # s = 16: at most 16 points
    assert 1 <= np.count_nonzero(y) <= 16
    step = math.sqrt(d * _sq(g)) / 16
    np.testing.assert_allclose(y[y != 0] / step, np.round(y[y != 0] / step), atol=1e-5)


# ------------------------------------------------------------------ T9: simplex and Hadamard
def _simplex_vertices(d):
    """The codec's own vertices p_j: decode hand-made messages (norm 1, one index j)."""
    c = hpcq.compressor("vqsgd:points=simplex")
    width = max(1, d.bit_length())  # ceil(log2(d + 1))
    buf = c.encode(_x(d), seed=1)
    assert c.wire_bytes(d) - HEADER_BYTES == 4 + (width + 7) // 8
    out = []
    for j in range(d + 1):
        m = buf.copy()
        m[HEADER_BYTES:HEADER_BYTES + 4] = np.frombuffer(np.float32(1).tobytes(), np.uint8)
        m[HEADER_BYTES + 4:] = naive.pack_codes([j], width)
        out.append(c.decode(m))
    return np.array(out, np.float64)


@pytest.mark.parametrize("d", [16, 10])
def test_t9_simplex_vertices_and_probabilities_at_the_tight_point(d):
    p = _simplex_vertices(d)  # (d + 1, d)
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), d, rtol=1e-6)  # circumradius d
    np.testing.assert_allclose(p.sum(axis=0), 0, atol=1e-5 * d)  # centroid 0
    gram = p @ p.T
    np.testing.assert_allclose(gram[~np.eye(d + 1, dtype=bool)], -d, rtol=1e-5)  # regular
    # the closed-form weights a_j = 1/(d+1) + <v, p_j>/(d(d+1)) on these vertices are
    # >= 0 on the unit sphere: random directions, and v = -p_j/d where a_j = 0 exactly
    v = np.random.default_rng(2).standard_normal((500, d))
    v = np.vstack([v / np.linalg.norm(v, axis=1, keepdims=True), -p / d])
    a = 1.0 / (d + 1) + v @ p.T / (d * (d + 1))
    assert a.min() >= -1e-6
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-6)
    # through the codec: at v = -p_j/d vertex j is never drawn, the others are uniform
    reps = 1 << 16
    c = hpcq.compressor(f"vqsgd:points=simplex,reps={reps}")
    for j in (0, d // 2, d):
        g = (-3.0 * p[j] / d).astype(np.float32)
        buf = c.encode(g, seed=5, step=j)
        idx = unpack_codes(buf[HEADER_BYTES + 4:], d.bit_length(), reps).astype(np.int64)
        counts = np.bincount(idx, minlength=d + 1)
        assert counts[j] == 0
        others = np.delete(counts, j)
        assert np.all(np.abs(others - reps / d) <= 5 * math.sqrt(reps / d * (1 - 1 / d)))
        y = c.decode(buf).astype(np.float64)  # the mean of 2^16 draws: unbiased
        assert _sq(y - g) <= 3 * (d * d - 1) / reps * _sq(g)


@pytest.mark.parametrize(("d", "reps"), [(16, 4), (12, 1), (12, 4)])
def test_t9_hadamard_has_the_cross_polytope_statistics(d, reps):
    """MSE/||g||^2 = (d - 1)/s within 3 % (rows cut to d entries), mean error <= 4 sqrt(d/N),
    and for s = 1 ||ghat|| = sqrt(d) ||g||, also when d is not a power of two."""
    n = 8000
    g = _x(d, 5)
    ys = _draws(hpcq.compressor(f"vqsgd:points=hadamard,reps={reps}"), g, n)
    g2 = _sq(g)
    mse = np.mean(np.sum((ys - g) ** 2, axis=1)) / g2
    assert abs(mse - (d - 1) / reps) <= 0.03 * (d - 1) / reps
    assert np.linalg.norm(ys.mean(0) - g) / math.sqrt(g2) <= 4 * math.sqrt(d / n)
    if reps == 1:
        np.testing.assert_allclose(np.linalg.norm(ys, axis=1), math.sqrt(d * g2), rtol=1e-6)
        np.testing.assert_allclose(np.abs(ys), math.sqrt(g2), rtol=1e-6)  # +-||g|| h_i


# ------------------------------------------------------------------ T11: ECQ-SGD bit accounting
def test_t11_fixed_length_message_and_ratio():
    d = 1 << 20
    for s, bits, cap in ((4, 4, 8), (1, 2, 16)):
        c = hpcq.compressor(f"qsgd:s={s},bucket=0")
        payload, side = c.theory_bits(d)
        assert payload + side == 32 + d * math.ceil(math.log2(2 * s + 1)) == 32 + bits * d
        ratio = 32 * d / (payload + side)
        assert cap * (1 - 1e-4) < ratio < cap  # 32 d / (32 + d r) < 32 / r


@pytest.mark.parametrize(("s", "density"), [(4, 1.0), (1, 1.0), (1, 0.05)])
def test_t11_entropy_coded_lengths_of_qsgd_levels(s, density):
    """The >= 80x ratios need entropy coding: a symbol-by-symbol Huffman code of the levels
    takes >= 1 bit per entry (ratio < 32x, though above the 8x / 16x fixed-length caps);
    the ECQ-SGD bound sum_k d_k log2(d/d_k) (the entropy) and QSGD's Elias gap code go
    far beyond 80x on these l2-scaled, mostly-zero messages."""
    d = 1 << 16
    gen = np.random.default_rng(7)
    x = (gen.standard_normal(d) * (gen.random(d) < density)).astype(np.float32)
    c = hpcq.compressor(f"qsgd:s={s},bucket=0")
    lv = c.levels(c.encode(x, seed=1))
    counts = level_counts(lv)
    bound, huff = huffman_bound_bits(counts), huffman_bits(counts)
    assert counts.sum() == d and len(counts) <= 2 * s + 1
    assert bound <= huff < bound + d
    fixed = sum(c.theory_bits(d))
    assert bound + 32 < fixed
    ratio = lambda bits: 32 * d / bits  # noqa: E731
    cap = 32 / math.ceil(math.log2(2 * s + 1))
    assert ratio(fixed) < cap < ratio(huff + 32) < 32
    assert ratio(bound + 32) > 80
    assert ratio(qsgd_elias_bits(lv)) > 80


# ------------------------------------------------------------------ T14: QSGD
def _qsgd_exact(x, s):
    """Per-coordinate Var Q_s(x)_i (= E(Q_i - x_i)^2) and P(Q_i != 0), one l2 norm (the
    codec's float32 norm), exactly: ``u = s|x_i|/norm`` rounds up with probability frac(u)."""
    x64 = np.asarray(x, np.float64)
    norm = float(np.float32(math.sqrt(_sq(x))))
    u = s * np.abs(x64) / norm
    f = u - np.floor(u)
    return (norm / s) ** 2 * f * (1 - f), np.where(u >= 1, 1.0, f)


def _t14_vectors(d):
    e1 = np.zeros(d, np.float32)
    e1[0] = 1
    return {"gaussian": _x(d, 3), "e1": e1,
            "flat": np.full(d, 1 / math.sqrt(d), np.float32),
            "sparse": (_x(d, 4) * (np.arange(d) % 7 == 0)).astype(np.float32)}


@pytest.mark.parametrize("s", [1, 2, 8, 32])
def test_t14_qsgd_variance_and_sparsity(s):
    d, n = 1024, 200
    c = hpcq.compressor(f"qsgd:s={s},bucket=0,norm=l2")
    bound = min(d / s**2, math.sqrt(d) / s)
    for kind, v in _t14_vectors(d).items():
        ys = _draws(c, v, n)
        v2 = _sq(v)
        err = np.sum((ys - v) ** 2, axis=1) / v2
        nnz = np.count_nonzero(ys, axis=1)
        var, p_nz = _qsgd_exact(v, s)
        mse_exact, nnz_exact = var.sum() / v2, p_nz.sum()
        assert mse_exact <= bound, kind
        assert abs(err.mean() - mse_exact) <= 5 * err.std() / math.sqrt(n) + 1e-6, kind
        assert err.mean() <= bound, kind
        assert nnz_exact <= s * (s + math.sqrt(d)), kind
        assert abs(nnz.mean() - nnz_exact) <= 5 * nnz.std() / math.sqrt(n) + 1e-9, kind
        assert nnz.mean() <= s * (s + math.sqrt(d)), kind
        # unbiased: coordinate by coordinate, standard errors from the exact variances (plus
        # 3 rare draws of slack: for P(round up) ~ 1/n the count is Poisson, not normal),
        # and on the whole (mean z^2 about 1)
        step = float(np.float32(math.sqrt(v2))) / s
        dev = ys.mean(0) - v
        assert np.all(np.abs(dev) <= 5 * np.sqrt(var / n) + 3 * step / n + 1e-6), kind
        z = dev[var > 0] / np.sqrt(var[var > 0] / n)
        assert z.size == 0 or np.mean(z**2) < 1.3, kind


@pytest.mark.parametrize("d", [1024, 4096])
def test_t14_elias_length_for_s_sqrt_d(d):
    s = math.isqrt(d)
    c = hpcq.compressor(f"qsgd:s={s},bucket=0")
    thm32 = (3 + 1.5 * math.log2(2 * (s * s + d) / (s * (s + math.sqrt(d))))) \
        * s * (s + math.sqrt(d)) + 32  # QSGD Theorem 3.2, o(1) left out
    vecs = _t14_vectors(d)
    gauss = [qsgd_elias_bits(c.levels(c.encode(vecs["gaussian"], seed=1, step=t)))
             for t in range(20)]
    assert np.mean(gauss) <= 2.8 * d + 32 <= thm32  # observed about 2.78 d + 32
    # the flat vector: every level is exactly 1 (gap 1, sign, level 1: 3 bits each), so the
    # gap code takes 3d + 32 > 2.8d + 32, the bound of QSGD's separate dense code
    flat = c.levels(c.encode(vecs["flat"], seed=1))
    np.testing.assert_array_equal(flat, 1)
    assert qsgd_elias_bits(flat) == 3 * d + 32 > 2.8 * d + 32
    e1 = c.levels(c.encode(vecs["e1"], seed=1))  # one level s at position 0
    assert np.count_nonzero(e1) == 1 and e1[0] == s
    assert qsgd_elias_bits(e1) == 32 + 1 + 1 + elias_omega_bits(s)


# ------------------------------------------------------------------ T15: Hadamard rotation
def test_t15_rotation_round_trip_below_1e6_in_float32():
    worst = 0.0
    for block in (2, 64, 4096, 1 << 16):
        for d in (block - 1, block, 3 * block + 5):
            for seed in range(3):
                x = _x(d, seed)
                key = rng.derive_key(seed, rng.PURPOSE_SIGNS, 1)
                z = hadamard.unrotate(hadamard.rotate(x, block, key), block, key, d)
                worst = max(worst, math.sqrt(_sq(z - x.astype(np.float64)) / _sq(x)))
    c = hpcq.compressor("hadamard+fp32")
    for d in (7, 1000, 4097, 100_000):
        x = _x(d, d)
        z = c.decode(c.encode(x, seed=d))
        worst = max(worst, math.sqrt(_sq(z - x.astype(np.float64)) / _sq(x)))
    assert 0 < worst < 1e-6  # observed about 1.4e-7


def _mean_estimation_nmse(spec, xs, seeds):
    """E||mean_i Q(x_i) - mean_i x_i||^2 / X_bar over ``seeds`` (shared rotation per seed,
    private rounding per client), X_bar = mean_i ||x_i||^2: (mean, standard error)."""
    c = hpcq.compressor(spec)
    m = xs.astype(np.float64).mean(0)
    xbar = np.mean([_sq(x) for x in xs])
    errs = []
    for seed in range(seeds):
        est = sum(c.decode(c.encode(x, seed=seed, rank=i)).astype(np.float64)
                  for i, x in enumerate(xs)) / len(xs)
        errs.append(_sq(est - m) / xbar)
    return float(np.mean(errs)), float(np.std(errs) / math.sqrt(seeds))


@pytest.mark.parametrize("d", [64, 256, 1024])
def test_t15_pi_srk_mean_estimation(d):
    """Suresh et al.: rotate, then k = 2^bits levels on [min, max], stochastic rounding,
    n clients: NMSE <= (2 ln d + 2)/(n (k-1)^2), below pi_sk's d/(2n(k-1)^2)."""
    n, seeds = 4, 64
    gauss = np.stack([_x(d, 10 + i) for i in range(n)])
    dipole = np.zeros((n, d), np.float32)  # pi_sk's worst case: +-1 at the ends, 0s mid-way
    for i in range(n):
        dipole[i, 2 * i], dipole[i, 2 * i + 1] = 1, -1
    for bits in (1, 2, 4):
        k = 1 << bits
        srk_bound = (2 * math.log(d) + 2) / (n * (k - 1) ** 2)
        sk_bound = d / (2 * n * (k - 1) ** 2)
        assert srk_bound < sk_bound
        spec = f"uniform:bits={bits},scale=minmax,bucket=0"
        for xs in (gauss, dipole):
            srk, se = _mean_estimation_nmse("hadamard+" + spec, xs, seeds)
            assert srk + 4 * se <= srk_bound, (bits, srk, se, srk_bound)
        sk, sk_se = _mean_estimation_nmse(spec, dipole, seeds)
        assert sk <= sk_bound + 4 * sk_se  # attained: about 0.99 of the bound
        assert srk < srk_bound < 0.5 * sk  # on the dipoles, rotating wins by far


# ------------------------------------------------------------------ T16: TernGrad and DRIVE
def test_t16_terngrad_is_unbiased_for_the_clipped_vector():
    d, n, bucket, clip = 1000, 3000, 512, 2.5
    g = _x(d, 6)
    g[[3, 600, 601]] = [9.0, -8.0, 7.5]  # outliers beyond 2.5 sigma in both buckets
    c = hpcq.compressor(f"terngrad:bucket={bucket},clip={clip}")
    buf = c.encode(g)
    scales = buf[HEADER_BYTES:HEADER_BYTES + 8].view(np.float32)
    want = np.empty(d)
    for b in range(2):
        gb = g[b * bucket:(b + 1) * bucket].astype(np.float64)
        s = np.float32(min(np.abs(gb).max(), clip * gb.std()))  # population std
        assert scales[b] == s and s < np.abs(gb).max()  # clipping happened
        want[b * bucket:(b + 1) * bucket] = np.clip(gb, -float(s), float(s))
    assert c.theory_bits(d) == (2 * d, 2 * 32)
    ys = _draws(c, g, n)
    s_of = np.repeat(scales.astype(np.float64), bucket)[:d]
    sd = np.sqrt(np.maximum(s_of * np.abs(want) - want**2, 0) / n)  # Bernoulli std error
    assert np.all(np.abs(ys.mean(0) - want) <= 5 * sd + 1e-6 * s_of)
    assert np.all(ys[:, [3, 600, 601]] == want[[3, 600, 601]])  # clipped: always +-s
    z = (ys.mean(0) - want)[sd > 0] / sd[sd > 0]
    assert np.mean(z**2) < 1.2  # no bias hiding under the 5-sigma band


def test_t16_drive_dense_vector_unbiased_and_bits():
    d, n = 1000, 3000
    x = _x(d, 8)
    c = hpcq.compressor("hadamard+sign:scale=drive,bucket=0")
    assert c.theory_bits(d) == (1024, 32)  # 1 bit per (padded) entry + one scale
    ys = _draws(c, x, n)
    z = (ys.mean(0) - x) / (ys.std(0) / math.sqrt(n))
    assert np.abs(z).max() < 5 and np.mean(z**2) < 1.2  # observed 3.2 and 0.98


def _drive_exact_mean(x, d):
    """E[x_hat] over the randomized Hadamard signs, enumerating the signs on x's support
    (the other signs average the output's other coordinates to 0)."""
    h = naive.sylvester(d) / math.sqrt(d)
    sup = np.flatnonzero(x)
    acc = np.zeros(d)
    for signs in itertools.product((1.0, -1.0), repeat=len(sup)):
        dg = np.ones(d)
        dg[sup] = signs
        z = h @ (dg * x)
        acc += dg * (h.T @ (np.where(z >= 0, 1.0, -1.0) * (x @ x) / np.abs(z).sum()))
    return acc / 2 ** len(sup)


def test_t16_drive_is_biased_with_a_hadamard_rotation_unbiased_with_haar():
    """The discrepancy with T16: hpcq computes randomized-Hadamard DRIVE exactly, whose
    expectation is not x for sparse x; a uniformly random rotation is unbiased."""
    d, n = 16, 4000
    x = np.zeros(d)
    x[:3] = [3.1, -0.93, 2.05]
    exact = _drive_exact_mean(x, d)
    np.testing.assert_allclose(exact[3:], 0, atol=1e-12)
    assert np.linalg.norm(exact - x) > 0.5 * np.linalg.norm(x)  # E = (4.73, 0, 0, ...)
    ys = _draws(hpcq.compressor("hadamard+sign:scale=drive,bucket=0"), x.astype(np.float32), n)
    sd = ys.std(0) / math.sqrt(n)
    assert np.all(np.abs(ys.mean(0) - exact) <= 5 * sd + 1e-5)
    # the same estimator with Haar rotations (QR of gaussian matrices, signs fixed): unbiased
    gen = np.random.default_rng(0)
    q, r = np.linalg.qr(gen.standard_normal((n, d, d)))
    q *= np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    z = q @ x
    scale = (x @ x) / np.abs(z).sum(1)
    xh = np.einsum("nji,nj->ni", q, np.where(z >= 0, 1.0, -1.0) * scale[:, None])
    assert np.all(np.abs(xh.mean(0) - x) <= 5 * xh.std(0) / math.sqrt(n))
