"""Slow, obviously correct NumPy references for the kernels (style practice 3).

Each function states the definition it implements; tests compare the Numba
kernels against these on small inputs.  Import as ``import naive`` (pytest puts
tests/ on sys.path).
"""

import numpy as np


def pack_codes(codes, width):
    """LSB-first packing through np.packbits: code i's bit j is stream bit i*width + j."""
    codes = np.asarray(codes, dtype=np.uint64)
    bits = ((codes[:, None] >> np.arange(width, dtype=np.uint64)) & 1).astype(np.uint8)
    return np.packbits(bits.ravel(), bitorder="little")


# ---- sparsifiers, vqSGD and the fixed-range quantizer (kernels/sparsify.py, vq.py, fixedrange.py)


def topk_indices(x, k):
    """Indices of the k largest |x_i|, ties to the lower index, sorted ascending (full sort)."""
    order = np.lexsort((np.arange(len(x)), -np.abs(np.asarray(x, np.float64))))
    return np.sort(order[:k])


def stream_bits(codes, widths):
    """LSB-first stream of codes with per-code widths (np.packbits), padded to a byte."""
    bits = [(int(c) >> j) & 1 for c, w in zip(codes, widths, strict=True) for j in range(int(w))]
    return np.packbits(np.array(bits, np.uint8), bitorder="little")


def uniform24_py(key, i):
    """uniform24 of hpcq.kernels.rng in pure Python."""
    from hpcq.kernels.rng import bits64_py

    return np.float32(bits64_py(int(key), i) >> 40) * np.float32(2.0**-24)


def sym_codes(v, m, bits, key, idx):
    """Stochastic codes on the grid -m + c*2m/(2^b - 1); u of entry j is uniform24(key, idx_j)."""
    levels = (1 << bits) - 1
    if m == 0:
        return np.zeros(len(v), np.int64)
    t = (np.asarray(v, np.float64) + m) * (levels / (2.0 * m))
    lo = np.clip(np.floor(t), 0, levels).astype(np.int64)
    u = np.array([uniform24_py(key, int(i)) for i in idx], np.float64)
    return np.minimum(lo + (u < t - lo), levels)


def below_py(key, j, bound):
    """Uniform integer in [0, bound) from counter j: Lemire's multiply-shift with rejection."""
    from hpcq.kernels.rng import GOLDEN, _mix64_py, bits64_py

    r = bits64_py(int(key), j)
    while (r * bound) % 2**64 < (2**64 - bound) % bound:
        r = _mix64_py(r + int(GOLDEN))
    return (r * bound) >> 64


def floyd_subset(n, k, key):
    """Floyd's uniform k-subset of range(n) (a Python set; the complement when k > n/2)."""
    kk = k if 2 * k <= n else n - k
    s = set()
    for j in range(n - kk, n):
        t = below_py(key, j, j + 1)
        s.add(j if t in s else t)
    if kk != k:
        s = set(range(n)) - s
    return np.array(sorted(s), np.int64)


def simplex_points(n):
    """(n+1, n) regular simplex, centroid 0, circumradius n: the construction in kernels/vq.py."""
    t = (1 - np.sqrt(n + 1.0)) / n
    p = np.vstack([np.eye(n), np.full((1, n), t)])
    return (p - p.mean(axis=0)) * np.sqrt(n * (n + 1.0))


def sylvester(D):
    """D x D Sylvester Hadamard matrix (entries +-1) by Kronecker products."""
    h = np.ones((1, 1))
    while h.shape[0] < D:
        h = np.kron(h, np.array([[1, 1], [1, -1]]))
    return h


def vq_points(points, n):
    """All points as rows (index order of the wire format); hadamard rows span D >= n."""
    if points == "simplex":
        return simplex_points(n)
    base = np.sqrt(n) * np.eye(n) if points == "cross" else sylvester(1 << (n - 1).bit_length())
    out = np.empty((2 * base.shape[0], base.shape[1]))
    out[0::2], out[1::2] = base, -base
    return out


def vq_weights(g, points, l1=False):
    """Convex weights a with sum_j a_j c_j = v (closed forms of papers.md 2(a))."""
    g = np.asarray(g, np.float64)
    n = len(g)
    norm = np.float32(np.abs(g).sum() if l1 else np.sqrt((g * g).sum()))
    v = g / np.float64(norm)
    if points == "simplex":
        return np.maximum(1.0 / (n + 1) + simplex_points(n) @ v / (n * (n + 1)), 0.0)
    if points == "hadamard":
        dim = 1 << (n - 1).bit_length()
        c = sylvester(dim) @ np.concatenate([v, np.zeros(dim - n)]) / np.sqrt(dim)
    else:
        dim, c = n, v
    gamma = max(1 - np.abs(c).sum() / np.sqrt(dim), 0.0)
    a = np.empty(2 * dim)
    a[0::2] = np.maximum(c, 0) / np.sqrt(dim) + gamma / (2 * dim)
    a[1::2] = np.maximum(-c, 0) / np.sqrt(dim) + gamma / (2 * dim)
    return a


def vq_sample(g, points, reps, key, l1=False):
    """reps indices by inverse CDF of vq_weights with 53-bit uniforms u_k = bits64(key, k)."""
    from hpcq.kernels.rng import bits64_py

    cum = np.cumsum(vq_weights(g, points, l1))
    u = np.array([(bits64_py(int(key), k) >> 11) * 2.0**-53 for k in range(reps)])
    return np.searchsorted(cum, u * cum[-1], side="right")


def vq_decode(norm, idx, points, n):
    """norm * mean of the chosen points (first n coordinates)."""
    return (norm * vq_points(points, n)[np.asarray(idx)].mean(axis=0)[:n]).astype(np.float32)


def fixedrange(x, widths, r, stochastic=False, key=0):
    """Mid-rise codes on [-r, r] with per-entry widths (0: no code), their stream and decode."""
    x = np.asarray(x, np.float64)
    codes, dec = [], np.zeros(len(x), np.float32)
    for i, (v, w) in enumerate(zip(x, widths, strict=True)):
        if w == 0:
            continue
        top, delta = 2 ** int(w) - 1, 2 * r / 2 ** int(w)
        if stochastic:
            t = min(max((v + r) / delta - 0.5, 0.0), top)
            k = int(np.floor(t)) + int(float(uniform24_py(key, i)) < t - np.floor(t))
        else:
            k = int(np.floor(min(max((v + r) / delta, 0.0), top)))
        codes.append(min(k, top))
        dec[i] = -r + (min(k, top) + 0.5) * delta
    return stream_bits(codes, [w for w in widths if w]), dec


# ---- Walsh-Hadamard transform and randomized rotation (kernels/hadamard.py)


def fwht_dense(x, B):
    """Orthonormal WHT of each block of B entries: x_block @ H_B / sqrt(B) (Sylvester, float64)."""
    h = np.ones((1, 1))
    while h.shape[0] < B:
        h = np.block([[h, h], [h, -h]])  # H_2B = [[H, H], [H, -H]]: H[i, j] = (-1)^popcount(i & j)
    x = np.asarray(x, np.float64).reshape(-1, B)
    return (x @ h / np.sqrt(B)).ravel()


def fwht_butterfly(x, B):
    """The textbook radix-2 FWHT in x's own dtype: scale by 1/sqrt(B) first, then levels
    h = 1, 2, ..., B/2 of (a + b, a - b).  hadamard.fwht promises these exact bits."""
    v = np.array(x).reshape(-1, B) * x.dtype.type(1.0 / np.sqrt(B))
    h = 1
    while h < B:
        w = v.reshape(v.shape[0], -1, 2, h)
        a, b = w[:, :, 0].copy(), w[:, :, 1].copy()
        w[:, :, 0], w[:, :, 1] = a + b, a - b
        h *= 2
    return v.ravel()


def rotation_signs(key, n):
    """D[i] = -1 iff bit i % 64 of bits64(key, i // 64) is set (the documented sign convention)."""
    from hpcq.kernels.rng import bits64_py

    words = [bits64_py(int(key), q) for q in range((n + 63) // 64)]
    return np.array([-1.0 if (words[i >> 6] >> (i & 63)) & 1 else 1.0 for i in range(n)])


def rotate_dense(x, B, signs):
    """H D x / sqrt(B) per block of x zero-padded to len(signs) (float64)."""
    xp = np.zeros(len(signs))
    xp[: len(x)] = x
    return fwht_dense(xp * signs, B)


def unrotate_dense(y, B, signs, d):
    """D H y / sqrt(B) per block, cut to the first d entries (float64)."""
    return (np.asarray(signs) * fwht_dense(y, B))[:d]


# ---- scalar quantizers: uniform / QSGD / TernGrad (kernels/quantize.py, ternary.py), sign.py


def uniform24_bits(key, i0, n):
    """The 24 bits r of uniform24(key, i) = r / 2^24, i in [i0, i0 + n) (numpy SplitMix64)."""
    i = np.arange(i0, i0 + n, dtype=np.uint64)
    z = np.uint64(int(key)) + (i + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(40)).astype(np.int64)


def bucket_interval(xs, mode, clip=0.0):
    """(lo, hi) as float32 for modes 0 maxabs, 1 l2, 2 minmax, 3 ternary (clip * std, two-pass)."""
    x64 = np.asarray(xs, np.float64)
    if mode == 2:
        return np.float32(xs.min()), np.float32(xs.max())
    if mode == 1:
        m = np.float32(np.sqrt(np.sum(x64 * x64)))
    elif mode == 3 and clip > 0:
        m = np.float32(min(np.abs(x64).max(), clip * np.std(x64)))
    else:
        m = np.float32(np.abs(x64).max())
    return -m, m


def quantize_affine(x, bucket, nlev, mode, stochastic, key, clip=0.0):
    """(float32 scales, codes): per bucket nlev levels on [lo, hi]; t = clip((x - lo) / step);
    T = floor(t 2^24 + 1/2) (t to 24 fractional bits); c = (T + r) >> 24 with r the 24 bits of
    uniform24(key, i) (stochastic) or 2^23 (nearest)."""
    n = len(x)
    b = bucket or max(n, 1)
    scales, codes = [], np.zeros(n, np.int64)
    for k in range(0, n, b):
        xs = x[k:k + b]
        lo, hi = bucket_interval(xs, mode, clip)
        scales += [lo, hi] if mode == 2 else [hi]
        lo64, hi64 = float(lo), float(hi)
        t = (xs.astype(np.float64) - lo64) * ((nlev - 1) / (hi64 - lo64)) if hi64 > lo64 else 0 * xs
        T = np.floor(np.clip(t, 0, nlev - 1) * 2.0**24 + 0.5).astype(np.int64)
        r = uniform24_bits(key, k, len(xs)) if stochastic else 1 << 23
        codes[k:k + b] = (T + r) >> 24
    return np.array(scales, np.float32), codes


def dequantize_affine(scales, codes, bucket, nlev, mode):
    """lo + c (hi - lo) / (nlev - 1) in float64, rounded to float32."""
    n = len(codes)
    b = bucket or max(n, 1)
    out = np.empty(n, np.float32)
    for j, k in enumerate(range(0, n, b)):
        lo, hi = (scales[2 * j], scales[2 * j + 1]) if mode == 2 else (-scales[j], scales[j])
        c = np.asarray(codes[k:k + b], np.float64)
        out[k:k + b] = float(lo) + c * ((float(hi) - float(lo)) / (nlev - 1))
    return out


def scaled_sign(x, bucket, mode):
    """(float32 scales, bits): per bucket ||x||_1/len (mode 0) or ||x||^2/||x||_1 (mode 1, 0 if
    the bucket is zero); bit_i = x_i >= 0."""
    n = len(x)
    b = bucket or max(n, 1)
    scales = []
    for k in range(0, n, b):
        xs = np.asarray(x[k:k + b], np.float64)
        l1 = np.abs(xs).sum()
        scales.append(l1 / len(xs) if mode == 0 else (xs @ xs / l1 if l1 > 0 else 0.0))
    return np.array(scales, np.float32), (np.asarray(x) >= 0).astype(np.int64)


# ---------------------------------------------------------------- collectives
def second(seed):
    """The seed of a collective's second compression (hpcq.collectives.second_seed)."""
    return (seed + 0x9E3779B97F4A7C15) % (1 << 64)


def serial_average(comp, vectors, seed, step, rank_words):
    """decode(encode(v, rank=w)) averaged in list order, float32 (the order MPI ranks use)."""
    acc = None
    for v, w in zip(vectors, rank_words):
        y = comp.decode(comp.encode(v, seed=seed, step=step, rank=w)).copy()
        acc = y if acc is None else acc + y
    return acc / np.float32(len(vectors))


def serial_scheme_mean(scheme, comp, vectors, seed, step, feedbacks=None):
    """What scheme ``scheme`` computes over ranks' ``vectors``, serially (exact bits).

    ``feedbacks``: two-phase only, (worker memories per rank, server memories per chunk),
    ErrorFeedback objects advanced as the ranks' would be.
    """
    p, d = len(vectors), vectors[0].shape[0]
    if scheme in ("allgather", "ps"):
        return serial_average(comp, vectors, seed, step, range(p))
    if scheme == "ps-compressed":
        m = serial_average(comp, vectors, seed, step, range(p))
        return comp.decode(comp.encode(m, seed=second(seed), step=step, rank=p * p))
    if scheme == "two-phase":
        sizes = [d // p + (1 if j < d % p else 0) for j in range(p)]
        bounds = np.concatenate(([0], np.cumsum(sizes)))
        inputs = list(vectors)
        if feedbacks is not None:
            workers = feedbacks[0]
            inputs = [workers[r].compensate(vectors[r]) for r in range(p)]
        decoded = [[None] * p for _ in range(p)]  # decoded[r][j]: rank r's chunk j
        for r in range(p):
            for j in range(p):
                c = inputs[r][bounds[j]:bounds[j + 1]]
                decoded[r][j] = comp.decode(comp.encode(c, seed=seed, step=step,
                                                        rank=r * p + j)).copy()
            if feedbacks is not None:
                feedbacks[0][r].update(vectors[r], np.concatenate(decoded[r]))
        out = []
        for j in range(p):
            acc = decoded[0][j]
            for r in range(1, p):
                acc = acc + decoded[r][j]
            avg = acc / np.float32(p)
            z = avg if feedbacks is None else feedbacks[1][j].compensate(avg)
            q = comp.decode(comp.encode(z, seed=second(seed), step=step, rank=p * p + j))
            if feedbacks is not None:
                feedbacks[1][j].update(avg, q)
            out.append(q)
        return np.concatenate(out)
    raise ValueError(f"no serial reference for scheme {scheme}")


def ddp_buckets(sizes_bytes, limits):
    """DDP's bucket rule from prefix sums: each bucket (over the sizes in send order) is the
    shortest run whose bytes reach its limit (limits[0] first, then limits[1]), else the rest.
    Returns lists of indices into ``sizes_bytes``."""
    out, start = [], 0
    while start < len(sizes_bytes):
        limit = limits[0] if not out else limits[1]
        total = np.cumsum(sizes_bytes[start:])
        hit = np.nonzero(total >= limit)[0]
        stop = start + (int(hit[0]) + 1 if hit.size else len(sizes_bytes) - start)
        out.append(list(range(start, stop)))
        start = stop
    return out


def fused_buckets(sizes_bytes, limit):
    """Fusion buffers: the longest run that fits ``limit`` (at least one tensor) each time."""
    out, start = [], 0
    while start < len(sizes_bytes):
        total = np.cumsum(sizes_bytes[start:])
        fits = int(np.count_nonzero(total <= limit))
        stop = start + max(1, fits)
        out.append(list(range(start, stop)))
        start = stop
    return out


# ---- EDEN (kernels/eden.py, compressors/eden.py)


def eden_roundtrip(x, B, bits, key_signs, offset, positive_lo, positive_hi, mse=False):
    """EDEN by definition, in float64: rotate (dense Hadamard), per block z = y sqrt(B)/||y_b||,
    nearest centroid by argmin over the full symmetric set (ties to the larger value, as
    codes ascend: 0 goes to the smallest positive centroid), scale ||y||^2/<y,q> or
    <y,q>/||q||^2, unrotate.  Coordinate i takes the hi set iff (i - offset) mod n < K,
    K = round(f n).  Returns (decoded x, the float32 scales, the hi mask)."""
    d = len(x)
    n = -(-d // B) * B
    signs = rotation_signs(key_signs, n)
    y = rotate_dense(x, B, signs)
    lo = int(np.floor(bits))
    k = int(round((bits - lo) * n)) if bits != lo else 0
    hi_mask = ((np.arange(n) - offset) % n) < k
    full_lo = np.concatenate((-np.asarray(positive_lo)[::-1], positive_lo))
    full_hi = np.concatenate((-np.asarray(positive_hi)[::-1], positive_hi))
    q = np.empty(n)
    yb = y.reshape(-1, B)
    norms = np.sqrt((yb**2).sum(axis=1))
    z = (yb * (np.sqrt(B) / np.where(norms > 0, norms, 1.0))[:, None]).ravel()
    for i in range(n):
        c = full_hi if hi_mask[i] else full_lo
        dist = np.abs(z[i] - c)
        q[i] = c[np.flatnonzero(dist == dist.min())[-1]]
    qb = q.reshape(-1, B)
    dots = (yb * qb).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = dots / (qb**2).sum(axis=1) if mse else norms**2 / dots
    s = np.where(norms > 0, s, 0.0).astype(np.float32)
    yq = (qb * s.astype(np.float64)[:, None]).ravel()
    return unrotate_dense(yq, B, signs, d), s, hi_mask


# ---- FP8 / MX / natural compression (kernels/fp8.py, mx.py, natural.py)

#: element format -> (ebits, mbits, bias, largest finite value), from the OCP specifications.
MINIFLOATS = {"e4m3": (4, 3, 7, 448.0), "e5m2": (5, 2, 15, 57344.0), "e3m2": (3, 2, 3, 28.0),
              "e2m3": (2, 3, 1, 7.5), "e2m1": (2, 1, 1, 6.0)}
#: MX format -> (element format, element bits, emax_elem) (OCP MX v1.0, table 1).
MX = {"mxfp8_e4m3": ("e4m3", 8, 8), "mxfp8_e5m2": ("e5m2", 8, 15), "mxfp6_e3m2": ("e3m2", 6, 4),
      "mxfp6_e2m3": ("e2m3", 6, 2), "mxfp4": ("e2m1", 4, 2), "mxint8": ("int8", 8, 0)}


def minifloat_round(v, fmt):
    """v (float64) rounded to the format's values: the step of v's binade (or the subnormal
    step below 2^(1 - bias)), np.round (ties to even) in steps, clamped to the largest finite."""
    e, m, bias, big = MINIFLOATS[fmt]
    a = np.abs(np.asarray(v, np.float64))
    binade = np.floor(np.log2(np.maximum(a, 2.0 ** (1 - bias))))
    step = 2.0 ** (binade - m)
    return np.sign(v) * np.minimum(np.round(a / step) * step, big)


def minifloat_code(q, fmt):
    """Bit pattern of the exactly representable values q: sign, then the index of |q| among
    the format's non-negative values in increasing order (which is their code)."""
    e, m, bias, big = MINIFLOATS[fmt]
    mags = [0.0]
    for ef in range(1 << e):
        for mf in range(1 << m):
            v = mf * 2.0 ** (1 - bias - m) if ef == 0 else (1 + mf / 2**m) * 2.0 ** (ef - bias)
            if 0 < v <= big:
                mags.append(v)
    mags = np.array(mags)
    q = np.asarray(q, np.float64)
    idx = np.searchsorted(mags, np.abs(q))
    assert np.all(mags[np.minimum(idx, len(mags) - 1)] == np.abs(q)), "not representable"
    return (idx | (np.signbit(q).astype(np.int64) << (e + m))).astype(np.uint8)


def fp8_scaled(x, fmt, bucket):
    """fp8 codec: per bucket (bucket 0: one) scale float32(max|x| / F), codes of
    float32(x * (1 / scale)) (reciprocal in float64; 0 for a zero scale)."""
    x = np.asarray(x, np.float32)
    big = MINIFLOATS[fmt][3]
    b = bucket or len(x)
    scales, codes = [], []
    for i0 in range(0, len(x), b):
        xb = x[i0:i0 + b]
        s = np.float32(np.max(np.abs(xb)).astype(np.float64) / big)
        inv = 1.0 / np.float64(s) if s > 0 else 0.0
        y = (xb.astype(np.float64) * inv).astype(np.float32).astype(np.float64)
        scales.append(s)
        codes.append(minifloat_code(minifloat_round(y, fmt), fmt))
    return np.array(scales, np.float32), np.concatenate(codes) if codes else np.zeros(0, np.uint8)


def mx_blocks(v, fmt):
    """OCP MX v1.0 section 6.3, block by block of 32: shared_exp = floor(log2(max|V|)) -
    emax_elem (max 0 taken as 2^-126, as microxcaling does), clamped to >= -127; X =
    2^shared_exp; P = quantize(V / X), ties to even, clamped to the largest normal (INT8:
    round(64 V / X) in [-127, 127]).  Returns (E8M0 bytes, element codes unpacked)."""
    elem, width, emax = MX[fmt]
    v = np.asarray(v, np.float32).astype(np.float64)
    scales, codes = [], []
    for i0 in range(0, len(v), 32):
        vb = v[i0:i0 + 32]
        amax = np.max(np.abs(vb))
        se = int(np.floor(np.log2(amax if amax > 0 else 2.0**-126))) - emax
        se = max(se, -127)
        scales.append(se + 127)
        y = vb / 2.0**se
        if elem == "int8":
            codes.append(np.clip(np.round(y * 64), -127, 127).astype(np.int8).view(np.uint8))
        else:
            codes.append(minifloat_code(minifloat_round(y, elem), elem))
    return np.array(scales, np.uint8), np.concatenate(codes)


def natural_round(x, key):
    """Natural compression of float32 x with the kernels' stream: |x| = 2^e (1 + m) goes up
    to 2^(e+1) when the top 23 of bits64(key, i)'s bits, over 2^23, are below m."""
    from hpcq.kernels.rng import bits64_py

    out = np.empty(len(x), np.float32)
    for i, xi in enumerate(np.asarray(x, np.float32)):
        a = abs(float(xi))
        e = np.floor(np.log2(a)) if a >= 2.0**-126 else -127.0
        lo = 2.0**e if a >= 2.0**-126 else 0.0
        frac = (a - lo) / (2.0**e if a >= 2.0**-126 else 2.0**-126)  # m, or |x| / 2^-126
        up = (bits64_py(key, i) >> 41) < frac * 2**23
        hi = 2.0 ** (e + 1) if a >= 2.0**-126 else 2.0**-126
        out[i] = np.copysign(hi if up else lo, xi)
    return out


def two_level_mean(outer, comp, vectors, seed, step, ranks_per_node, inner="fp32",
                   mode="leader"):
    """What ``two-level:outer=...`` computes over consecutive nodes of ``ranks_per_node``:
    node sums (fp32, or bf16 words added in float32 and rounded to bf16 per addition, in
    rank order: exact for two ranks a node), scaled by L / p, then ``outer`` among them;
    with ``mode="shard"`` the outer scheme runs on each of the k shards of those sums
    (``chunk_bounds``), shard j with seed ``seed + j 0xD1B54A32D192ED03`` mod 2^64, and the
    shards are put together."""
    p = len(vectors)
    k = ranks_per_node
    nodes = p // k
    leaders = []
    for g in range(nodes):
        part = vectors[g * k:(g + 1) * k]
        if inner == "fp32":
            s = part[0].astype(np.float32).copy()
            for v in part[1:]:
                s = s + v
        else:
            s = bf16_round(part[0].astype(np.float32))
            for v in part[1:]:
                s = bf16_round(s + bf16_round(v.astype(np.float32)))
        if nodes != p:
            s = (s * np.float32(nodes / p)).astype(np.float32)
        leaders.append(s.astype(np.float32))
    if mode == "shard":
        sizes = [len(vectors[0]) // k + (j < len(vectors[0]) % k) for j in range(k)]
        cuts = np.concatenate(([0], np.cumsum(sizes)))
        return np.concatenate([
            serial_scheme_mean(outer, comp, [s[a:b] for s in leaders],
                               (seed + j * 0xD1B54A32D192ED03) % 2**64, step)
            for j, (a, b) in enumerate(zip(cuts[:-1], cuts[1:], strict=True))])
    return serial_scheme_mean(outer, comp, leaders, seed, step)


def bf16_round(x):
    """float32 rounded to nearest-even bf16 (returned as float32); finite inputs."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def gram_schmidt(a, eps=0.0):
    """Columns of float64 matrix ``a`` orthonormalised one after another (PyTorch's
    ``_orthogonalize_gram_schmidt``; a zero column stays zero)."""
    a = np.array(a, dtype=np.float64)
    for i in range(a.shape[1]):
        nrm = np.linalg.norm(a[:, i])
        a[:, i] /= (nrm if nrm > 0 else 1.0) if eps == 0 else nrm + eps
        for j in range(i + 1, a.shape[1]):
            a[:, j] -= np.dot(a[:, i], a[:, j]) * a[:, i]
    return a


def powersgd_step(xs, shapes, state, *, rank, min_rate=2.0, start_iter=0, warm_start=True,
                  eps=0.0, seed=0):
    """One PowerSGD step over p simulated ranks (``xs``: each rank's flat vector of the
    tensors ``shapes``), in float64, as PyTorch's ``powerSGD_hook`` orders it; ``state``
    (a dict) carries the step count, the error memories and Q.  Returns the mean."""
    p = len(xs)
    xs = [np.asarray(x, dtype=np.float64) for x in xs]
    it = state.get("iter", 0)
    state["iter"] = it + 1
    if it < start_iter:
        return sum(xs) / p
    offsets = np.concatenate(([0], np.cumsum([int(np.prod(s)) for s in shapes])))
    mats, rest = [], []
    for i, s in enumerate(shapes):
        n, m = (s[0], int(np.prod(s[1:]))) if len(s) >= 2 else (0, 0)
        if len(s) >= 2 and (n + m) * min(n, m, rank) * min_rate < n * m:
            mats.append((offsets[i], n, m))
        else:
            rest.append(i)
    shapes_seen = list(dict.fromkeys((n, m) for _, n, m in mats))
    mats.sort(key=lambda t: shapes_seen.index((t[1], t[2])))  # the hook's order: by shape
    out = np.zeros(offsets[-1])
    for i in rest:
        out[offsets[i]:offsets[i + 1]] = sum(x[offsets[i]:offsets[i + 1]] for x in xs) / p
    if not mats:
        return out
    errs = state.setdefault("e", [[np.zeros((n, m)) for _, n, m in mats] for _ in range(p)])
    M = [[x[o:o + n * m].reshape(n, m) + errs[r][j] for j, (o, n, m) in enumerate(mats)]
         for r, x in enumerate(xs)]
    ks = [min(n, m, rank) for _, n, m in mats]
    if not warm_start or "Q" not in state:
        draw = np.random.default_rng([seed, it]).standard_normal(
            sum(m * k for (_, _, m), k in zip(mats, ks)), dtype=np.float32)
        cuts = np.cumsum([0] + [m * k for (_, _, m), k in zip(mats, ks)])
        state["Q"] = [draw[cuts[j]:cuts[j + 1]].astype(np.float64).reshape(m, ks[j])
                      for j, (_, _, m) in enumerate(mats)]
    Q = [gram_schmidt(q, eps) for q in state["Q"]]
    P = [gram_schmidt(sum(M[r][j] @ Q[j] for r in range(p)), eps) for j in range(len(mats))]
    Q = [sum(M[r][j].T @ P[j] for r in range(p)) / p for j in range(len(mats))]
    for j, (o, n, m) in enumerate(mats):
        approx = P[j] @ Q[j].T
        out[o:o + n * m] = approx.ravel()
        for r in range(p):
            errs[r][j] = M[r][j] - approx
    state["Q"] = Q
    if not warm_start:
        del state["Q"]
    return out


def fp8_allreduce_serial(xs, fmt, scale):
    """allreduce-fp8 over the ranks' vectors ``xs`` in the order given: each cast to
    ``fmt`` as ``float32(x / scale)`` (the reciprocal in float64), then summed pairwise,
    ``acc = round(acc + next)`` (the float32 sum of two codes is exact), decoded ``* scale``
    and divided by p in float32."""
    inv = 1.0 / scale if scale > 0 else 0.0
    codes = [minifloat_round(np.float32(np.asarray(x, np.float64) * inv), fmt) for x in xs]
    acc = codes[0]
    for c in codes[1:]:
        acc = minifloat_round(acc + c, fmt)
    return ((acc.astype(np.float32) * np.float32(scale)) / np.float32(len(xs))).astype(np.float32)


# ---------------------------------------------------------------- multi-hop and integer means
def hop_seed(seed, hop):
    """The seed of a chain's hop-th compression (hpcq.collectives.hops.hop_seed)."""
    return (seed + hop * 0x9E3779B97F4A7C15) % (1 << 64)


def _codec(comp, v, seed, step, rank):
    return comp.decode(comp.encode(v, seed=seed, step=step, rank=rank)).copy()


def serial_ring_mean(comp, vectors, seed, step):
    """The ring scheme serially: chunk c's chain starts at rank c + 1; hop k's sender adds
    nothing, the receiver adds its own chunk to the decoded sum; the owner c divides by p
    and compresses once more (hop p - 1, rank word c)."""
    p, d = len(vectors), vectors[0].shape[0]
    sizes = [d // p + (1 if j < d % p else 0) for j in range(p)]
    b = np.concatenate(([0], np.cumsum(sizes)))
    out = []
    for c in range(p):
        sender = (c + 1) % p
        t = vectors[sender][b[c]:b[c + 1]].astype(np.float32)
        for k in range(p - 1):
            t = _codec(comp, t, hop_seed(seed, k), step, sender)
            sender = (sender + 1) % p
            t = t + vectors[sender][b[c]:b[c + 1]]
        out.append(_codec(comp, t / np.float32(p), hop_seed(seed, p - 1), step, c))
    return np.concatenate(out)


def serial_rhd_mean(comp, vectors, seed, step):
    """Rabenseifner serially: fold (even ranks below 2r onto the next odd one), recursive
    halving over the p' virtual ranks (v keeps the half of its segment holding its bit),
    divide by p, compress each chunk once (rank word = chunk index)."""
    p, d = len(vectors), vectors[0].shape[0]
    q = 1 << (p.bit_length() - 1)
    r = p - q
    f = 1 if r else 0
    sizes = [d // q + (1 if j < d % q else 0) for j in range(q)]
    b = np.concatenate(([0], np.cumsum(sizes)))
    real = [2 * v + 1 if v < r else v + r for v in range(q)]
    acc = []
    for v in range(q):
        x = vectors[real[v]].astype(np.float32)
        if v < r:
            x = _codec(comp, vectors[real[v] - 1], hop_seed(seed, 0), step, real[v] - 1) + x
        acc.append(x)
    seg = [(0, q)] * q
    mask, level = q >> 1, 0
    while mask:
        new = [None] * q
        for v in range(q):
            u = v ^ mask
            lo, hi = seg[v]
            mid = (lo + hi) // 2
            keep = (mid, hi) if v & mask else (lo, mid)
            # the partner sends its running sum over my keep half
            ulo = seg[u][0]
            theirs = acc[u][b[keep[0]] - b[ulo]:b[keep[1]] - b[ulo]]
            got = _codec(comp, theirs, hop_seed(seed, level + f), step, real[u])
            new[v] = (acc[v][b[keep[0]] - b[lo]:b[keep[1]] - b[lo]] + got, keep)
        acc = [n[0] for n in new]
        seg = [n[1] for n in new]
        mask, level = mask >> 1, level + 1
    top = (q.bit_length() - 1) + f
    return np.concatenate([_codec(comp, acc[v] / np.float32(p), hop_seed(seed, top), step, v)
                           for v in range(q)])


def int_levels(bits, p):
    """q = (2^(bits-1) - 1) >> ceil(log2 p): the largest code of allreduce-int."""
    return ((1 << (bits - 1)) - 1) >> int(np.ceil(np.log2(p))) if p > 1 else (1 << (bits - 1)) - 1


def int_round(x, scale, q, key):
    """Stochastic rounding of x / scale onto [-q, q] (int64): t = floor(v), 24-bit fraction
    T = floor(frac 2^24 + 1/2), c = t + ((T + r) >> 24), r = uniform24's 24 bits."""
    inv = 1.0 / scale if scale > 0 else 0.0
    v = np.clip(np.asarray(x, np.float64) * inv, -q, q)
    t = np.floor(v)
    frac = np.floor((v - t) * 2.0**24 + 0.5).astype(np.int64)
    return t.astype(np.int64) + ((frac + uniform24_bits(key, 0, len(v))) >> 24)


def int_decode(total, scale, p):
    """float32(total * (scale / p)) in float64."""
    return (np.asarray(total, np.float64) * (float(scale) / p)).astype(np.float32)
