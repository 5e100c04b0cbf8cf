"""EDEN: Lloyd-Max centroids, the paper's NMSE, fractional bits, rANS, fuzzing; rotated means."""

import numpy as np
import pytest

import hpcq
from hpcq.compressors import HEADER_BYTES, NonFiniteInputError, decode, parse_header
from hpcq.compressors.eden import FLAG_PACKED, lloyd_max, lloyd_max_mse

#: Max (1960) / Lloyd (1982): positive centroids and MSE of the Gaussian quantizer.
PUBLISHED = {
    1: ([0.7979], 0.3634),
    2: ([0.4528, 1.510], 0.1175),
    3: ([0.2451, 0.7560, 1.344, 2.152], 0.03454),
    4: ([0.1284, 0.3881, 0.6568, 0.9424, 1.256, 1.618, 2.069, 2.733], 0.009497),
}
#: EDEN's NMSE (Vargaftik et al. 2022, unbiased scale, large d) at 1..4 bits.
EDEN_NMSE = {1: 0.571, 2: 0.133, 3: 0.036, 4: 0.0096}


def _x(d, seed=0):
    return np.random.default_rng(seed).standard_normal(d).astype(np.float32)


def _nmse(c, x, seed=0, step=0):
    y = c.decode(c.encode(x, seed=seed, step=step)).astype(np.float64)
    return float(np.sum((y - x) ** 2) / np.sum(x.astype(np.float64) ** 2))


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_lloyd_max_matches_the_published_tables(bits):
    cents, mse = PUBLISHED[bits]
    np.testing.assert_allclose(lloyd_max(bits), cents, atol=6e-4)
    assert lloyd_max_mse(bits) == pytest.approx(mse, rel=1e-3)


def test_lloyd_max_is_a_fixed_point_for_every_width():
    from hpcq.compressors.eden import _centroid_map

    for bits in range(1, 9):
        c = lloyd_max(bits)
        assert c.shape == (1 << (bits - 1),) and np.all(np.diff(c) > 0) and not c.flags.writeable
        np.testing.assert_allclose(_centroid_map(c)[0], c, rtol=0, atol=1e-13)
    assert lloyd_max(1)[0] == pytest.approx(np.sqrt(2 / np.pi), rel=1e-15)
    # D shrinks about 4x per bit (Panter-Dite: D ~ (sqrt(3) pi / 2) 4^-b)
    ratios = [lloyd_max_mse(b) / lloyd_max_mse(b + 1) for b in range(4, 8)]
    assert all(3.7 < r < 4.0 for r in ratios), ratios


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_single_message_nmse_within_3_percent_of_eden(bits):
    x = _x(1 << 18, seed=bits)
    r = np.mean([_nmse(hpcq.compressor(f"eden:bits={bits}"), x, seed=s) for s in range(2)])
    assert r == pytest.approx(EDEN_NMSE[bits], rel=0.03)
    # the MSE scale: about D itself, below the unbiased one
    m = _nmse(hpcq.compressor(f"eden:bits={bits},scale=mse"), x)
    assert m == pytest.approx(lloyd_max_mse(bits), rel=0.03) and m < r


def test_mean_over_p_ranks_tracks_nmse_over_p():
    """EDEN's vNMSE: E||mean - m||^2 / mean_i ||x_i||^2 ~ NMSE / p (shared rotation)."""
    d, c = 1 << 16, hpcq.compressor("eden:bits=2")
    for p in (2, 4):
        xs = [_x(d, seed=10 + i) for i in range(p)]
        msgs = [c.encode(x, seed=5, step=3, rank=i) for i, x in enumerate(xs)]
        err = c.mean_of(msgs, d).astype(np.float64) - np.mean(xs, axis=0, dtype=np.float64)
        v = np.sum(err**2) / np.mean([np.sum(x.astype(np.float64) ** 2) for x in xs])
        assert v == pytest.approx(EDEN_NMSE[2] / p, rel=0.06)


def test_fractional_bits_interpolate():
    x = _x(1 << 16, seed=3)
    prev = 1.0
    for bits in (1.0, 1.5, 2.0, 2.5, 3.0):
        c = hpcq.compressor(f"eden:bits={bits}")
        payload, side = c.theory_bits(len(x))
        assert payload == round(bits * len(x)) and side == 32 * 16
        r = _nmse(c, x)
        assert r < prev
        prev = r
    r2, r25, r3 = (_nmse(hpcq.compressor(f"eden:bits={b}"), x) for b in (2, 2.5, 3))
    assert r3 < r25 < r2 and r25 < (r2 + r3) / 2 * 1.05


def test_spec_rotation_and_header():
    c = hpcq.compressor("eden:bits=2")
    assert c.spec == "hadamard:block=4096+eden:bits=2.0,scale=unbiased,code=fixed"
    assert hpcq.compressor(c.spec).spec == c.spec
    assert hpcq.compressor("hadamard:block=256+eden").rotation == 256
    x = _x(1000)
    m = c.encode(x, seed=2, step=9)
    assert parse_header(m).flags & 1
    np.testing.assert_array_equal(decode(m), c.decode(m))
    assert hpcq.compressor("eden:bits=2.5,code=rans").unbiased is False
    for bad, match in (("eden:bits=0.5", "below its minimum"), ("eden:bits=9", "above"),
                       ("eden:scale=l2", "valid: unbiased, mse"), ("eden:code=huffman", "valid")):
        with pytest.raises(ValueError, match=match):
            hpcq.compressor(bad)
    assert "eden" in hpcq.compressors()
    with pytest.raises(NonFiniteInputError, match=r"x\[17\]"):
        x[17] = np.nan
        c.encode(x)


@pytest.mark.parametrize("d", [0, 1, 7, 100, 4099])
@pytest.mark.parametrize("spec", ["eden:bits=1", "eden:bits=2.5", "hadamard:block=64+eden:bits=3",
                                  "eden:bits=8,scale=mse"])
def test_wire_length_and_bound(d, spec):
    c = hpcq.compressor(spec)
    x = _x(d, seed=d)
    m = c.encode(x, seed=1)
    assert m.shape[0] == c.wire_bytes(d)
    payload, side = c.theory_bits(d)
    assert payload + side <= 8 * (m.shape[0] - HEADER_BYTES) < payload + side + 8 * 6
    if d:
        for kind in (x, np.eye(1, d, d // 2, dtype=np.float32)[0], np.full(d, 0.3, np.float32)):
            r = _nmse(c, kind, seed=4)
            assert r <= c.error_bound(d)


@pytest.mark.parametrize("bits", [1, 2, 2.5, 3, 4, 8])
def test_rans_same_vector_fewer_bits(bits):
    x = _x(1 << 16, seed=7)
    fixed = hpcq.compressor(f"eden:bits={bits}")
    coded = hpcq.compressor(f"eden:bits={bits},code=rans")
    a, b = fixed.encode(x, seed=3, step=1), coded.encode(x, seed=3, step=1)
    np.testing.assert_array_equal(fixed.decode(a), coded.decode(b))
    assert b.shape[0] <= a.shape[0] and coded.wire_bytes(len(x)) is None
    payload, side = coded.message_bits(b)
    assert 8 * (b.shape[0] - HEADER_BYTES) == payload + side
    if bits >= 2:  # the indices' entropy is below b: coded bits < b
        assert not parse_header(b).flags & FLAG_PACKED
        assert (payload + side) / len(x) < bits
    else:  # 1 bit: the two signs are equally likely, packing wins
        assert parse_header(b).flags & FLAG_PACKED


@pytest.mark.parametrize("spec", ["eden:bits=2.5,code=rans", "eden:bits=3",
                                  "eden:bits=2,code=rans"])
def test_fuzzed_messages_never_crash_or_mislength(spec):
    rng = np.random.default_rng(11)
    c = hpcq.compressor(spec)
    good = c.encode(_x(300) * np.where(np.arange(300) % 7, 0.05, 1).astype(np.float32), seed=4)
    caught = 0
    for _ in range(300):
        buf = good.copy()
        lo = 0 if rng.random() < 0.2 else HEADER_BYTES
        for pos in rng.integers(lo, len(buf), rng.integers(1, 4)):
            buf[pos] ^= np.uint8(1 << rng.integers(0, 8))
        cut = len(buf) if rng.random() < 0.8 else int(rng.integers(0, len(buf)))
        try:
            y = c.decode(buf[:cut])
        except ValueError:
            caught += 1
            continue
        assert y.shape == (300,) and y.dtype == np.float32
    assert caught > 60


def test_header_tampering_is_detected():
    c = hpcq.compressor("eden:bits=2.5,code=rans")
    good = c.encode(_x(5000))
    h = parse_header(good)
    for flags, aux, match in ((h.flags | FLAG_PACKED, h.aux, "codec flags|payload"),
                              (h.flags | 0x4, h.aux, "codec flags"),
                              (h.flags, h.payload_nbytes, "overruns"),
                              (h.flags, h.aux + 1, "rans|corrupt")):
        bad = good.copy()
        c._write_header(bad, flags, aux, h.d, h.seed, h.step, h.payload_nbytes)
        with pytest.raises(ValueError, match=match):
            c.decode(bad)


ROTATED = ["hadamard+fp32", "hadamard:block=64+fp16", "hadamard+qsgd:bits=2",
           "hadamard+uniform:bits=3", "hadamard+sign:scale=drive", "hadamard+terngrad",
           "hadamard+topk:ratio=0.1", "hadamard+randk:ratio=0.1", "hadamard+vqsgd:reps=4",
           "hadamard:block=64+fixedrange", "hadamard+qsgd:bits=4,code=rans",
           "eden:bits=2", "eden:bits=2.5,code=rans", "hadamard:block=128+eden:bits=1,scale=mse"]


@pytest.mark.parametrize("spec", ROTATED)
def test_rotated_domain_mean_equals_per_message_mean(spec):
    c = hpcq.compressor(spec)
    d = 3001
    xs = [_x(d, seed=20 + i) for i in range(4)]
    for p in (1, 2, 3, 4):
        msgs = [c.encode(xs[i], seed=9, step=2, rank=i) for i in range(p)]
        ref = np.mean([c.decode(m).astype(np.float64) for m in msgs], axis=0)
        got = c.mean_of(msgs, d)
        assert got.dtype == np.float32 and got.shape == (d,)
        assert np.linalg.norm(got - ref) <= 1e-5 * max(np.linalg.norm(ref), 1e-30), (spec, p)


def test_mean_of_falls_back_for_other_steps_and_checks_lengths():
    from hpcq.collectives import average_messages

    c = hpcq.compressor("eden:bits=3")
    x0, x1 = _x(500, 1), _x(500, 2)
    mixed = [c.encode(x0, seed=1, step=1), c.encode(x1, seed=1, step=2)]
    want = (c.decode(mixed[0]) + c.decode(mixed[1])) / np.float32(2)
    np.testing.assert_array_equal(c.mean_of(mixed, 500), want)
    same = [c.encode(x0, seed=1, step=1), c.encode(x1, seed=1, step=1, rank=1)]
    np.testing.assert_array_equal(average_messages(c, same, 500), c.mean_of(same, 500))
    with pytest.raises(ValueError, match="d=500"):
        c.mean_of(same, 499)
    with pytest.raises(ValueError, match="not by eden"):
        c.mean_of([same[0], hpcq.compressor("hadamard+sign").encode(x0, seed=1, step=1)], 500)
    assert c.mean_of([], 7).tolist() == [0.0] * 7
