"""``Compressor.theory_bits``: the bits the papers count, consistent with the wire payload.

For every codec, ``payload_bits + side_bits`` is the wire payload minus the padding of
each bit stream to a whole byte (< 8 bits per stream; the codecs' ``_theory_bits``
docstrings say which streams they have), and the 60-byte header is in neither.
"""

import math

import numpy as np
import pytest

import hpcq
from hpcq.compressors import HEADER_BYTES, REGISTRY
from hpcq.compressors.qsgd import QSGD
from hpcq.compressors.randk import RandK
from hpcq.compressors.topk import SparseCodec

SPECS = [
    "fp32", "fp16", "bf16",
    "qsgd", "qsgd:s=4,bucket=0", "qsgd:bits=2,bucket=64,norm=linf", "qsgd:s=127",
    "uniform", "uniform:bits=1,bucket=0", "uniform:bits=3,scale=minmax,bucket=64",
    "sign", "sign:bucket=0,scale=drive", "sign:bucket=8",
    "terngrad", "terngrad:bucket=0", "terngrad:clip=0,bucket=64",
    "topk", "topk:k=5", "topk:ratio=0.1,bits=4", "topk:ratio=1.0,bits=1",
    "randk:ratio=0.1", "randk:k=7,shared=false", "randk:ratio=0.3,bits=3",
    "randk:ratio=0.6,shared=false,bits=8",
    "vqsgd", "vqsgd:reps=4", "vqsgd:points=simplex,reps=3", "vqsgd:points=hadamard,reps=5",
    "vqsgd:norm=l1,reps=7",
    "fixedrange", "fixedrange:bits=2.5", "fixedrange:bits=0.3", "fixedrange:bits=16",
    "fp8", "fp8:format=e5m2,scale=block", "fp8:scale=block,bucket=5",
    "mx", "mx:format=mxfp6_e3m2", "mx:format=mxfp6_e2m3", "mx:format=mxfp4", "mx:format=mxint8",
    "natural",
    "eden:bits=1", "eden:bits=2", "eden:bits=2.5,scale=mse", "eden:bits=4",
    "eden:bits=2.5,scale=mse,code=rans", "eden:bits=4,code=rans",
]
PREFIXES = ["", "hadamard:block=64+", "hadamard+"]
DS = [1, 2, 7, 8, 9, 16, 100, 511, 513, 1000, 4096 + 3]


def _slack(c, n):
    """Most padding bits in a payload of ``n`` entries: < 8 per independently byte-padded
    bit stream (see each ``_theory_bits``)."""
    if c.name in ("fp32", "fp16", "bf16"):
        return 0  # whole values only
    if isinstance(c, SparseCodec):
        sent_idx = not (isinstance(c, RandK) and c.p["shared"])
        return 7 * (int(c.p["bits"] > 0) + int(sent_idx))  # b-bit codes, indices; fp32: none
    if c.name == "eden" and c._widths(n)[2]:
        # the one exception: with fractional bits the hi stream is padded to 4 bytes, so
        # that the lo stream's uint16/uint32 word views are aligned (< 32 bits), then lo (< 8)
        return 31 + 7
    return 7  # the codes (scales are whole float32s)


def test_every_registered_codec_is_covered():
    assert {s.partition(":")[0] for s in SPECS} == set(REGISTRY.names())


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("spec", SPECS)
def test_theory_bits_match_the_payload_up_to_padding(spec, prefix):
    c = hpcq.compressor(prefix + spec)
    assert c.theory_bits(0) == (0, 0)
    rng = np.random.default_rng(0)
    for d in DS:
        payload, side = c.theory_bits(d)
        assert type(payload) is int and type(side) is int and payload >= 0 and side >= 0
        slack = _slack(c, c._layout(d)[1])
        if c.wire_bytes(d) is None:  # variable length (rANS): the fixed count bounds a message
            msg = c.encode(rng.standard_normal(d).astype(np.float32), seed=d)
            assert 8 * (msg.shape[0] - HEADER_BYTES) <= payload + side + slack, (d, payload)
            continue
        wire = 8 * (c.wire_bytes(d) - HEADER_BYTES)
        assert payload + side <= wire <= payload + side + slack, (d, payload, side)
        # the bits belong to the padded length the codec encodes, not to d
        n = c._layout(d)[1]
        assert c.theory_bits(d) == c._theory_bits(n)


def test_bad_length():
    with pytest.raises(ValueError, match="d must be >= 0"):
        hpcq.compressor("qsgd").theory_bits(-1)


@pytest.mark.parametrize("d", [1, 9, 1000, 1 << 20])
def test_ecq_sgd_fixed_length_count(d):
    """papers.md T11: ``32 + d ceil(log2(2s + 1))``; s = 4 gives 4 bits per entry."""
    for s in (1, 2, 4, 7, 100):
        c = hpcq.compressor(f"qsgd:s={s},bucket=0")
        assert c.theory_bits(d) == (d * math.ceil(math.log2(2 * s + 1)), 32)
    assert hpcq.compressor("qsgd:s=4,bucket=0").theory_bits(d) == (4 * d, 32)
    # per bucket of 512: one 32-bit norm each, the last one short
    assert hpcq.compressor("qsgd:bits=4").theory_bits(d) == (4 * d, 32 * -(-d // 512))
    assert hpcq.compressor("qsgd:bits=2,norm=linf,bucket=64").theory_bits(d) == (
        2 * d, 32 * -(-d // 64))


def test_qsgd_bits_are_ceil_log2_of_its_levels():
    for bits in range(2, 9):
        c = hpcq.compressor(f"qsgd:bits={bits}")
        assert isinstance(c, QSGD)
        assert bits == math.ceil(math.log2(2 * c.p["s"] + 1))


def test_exact_values_of_the_other_codecs():
    d = 1000
    tb = lambda spec, dd=d: hpcq.compressor(spec).theory_bits(dd)  # noqa: E731
    assert tb("fp32") == (32 * d, 0)
    assert tb("fp16") == tb("bf16") == (16 * d, 0)
    assert tb("uniform:bits=3,bucket=0") == (3 * d, 32)
    assert tb("uniform:bits=2,scale=minmax,bucket=0") == (2 * d, 64)  # min and max
    assert tb("uniform:bits=2,scale=minmax,bucket=512") == (2 * d, 128)
    assert tb("sign:bucket=0") == (d, 32)
    assert tb("sign") == (d, 64)  # two buckets of 512
    assert tb("terngrad") == (2 * d, 64)  # 2 bits per entry + 32 per bucket
    assert tb("terngrad:bucket=0") == (2 * d, 32)
    assert tb("topk:k=10") == (10 * (32 + 10), 0)  # k (32 + ceil(log2 d))
    assert tb("topk:k=10", 1024) == (10 * (32 + 10), 0)
    assert tb("topk:k=10", 1025) == (10 * (32 + 11), 0)
    assert tb("topk:k=10,bits=4") == (10 * (4 + 10), 32)
    assert tb("randk:k=10") == (320, 0)  # shared indices: values only
    assert tb("randk:k=10,shared=false") == (10 * (32 + 10), 0)
    assert tb("randk:k=10,bits=3") == (30, 32)
    assert tb("fixedrange:bits=3") == (3 * d, 0)  # the range is predetermined
    assert tb("fixedrange:bits=2.5", 1001) == (2502, 0)  # floor(d R)
    assert tb("fixedrange:bits=2.5", 16) == (40, 0)
    assert tb("fixedrange:bits=0.3", 10) == (3, 0)


def test_vqsgd_counts_its_indices_and_the_norm():
    """papers.md T8: ``s ceil(log2 N) + 32``, N = 2d (cross), d + 1 (simplex), 2D (hadamard)."""
    tb = lambda spec, d: hpcq.compressor(spec).theory_bits(d)  # noqa: E731
    assert tb("vqsgd:reps=4", 16) == (4 * 5, 32)
    assert sum(tb("vqsgd:reps=4", 16)) == 4 * 5 + 32
    assert tb("vqsgd", 1 << 20) == (21, 32)
    assert tb("vqsgd:reps=3", 1000) == (3 * 11, 32)  # N = 2000
    assert tb("vqsgd:points=simplex", 16) == (5, 32)  # N = 17
    assert tb("vqsgd:points=simplex", 15) == (4, 32)  # N = 16
    assert tb("vqsgd:points=hadamard", 12) == (5, 32)  # D = 16, N = 32
    assert tb("vqsgd:points=hadamard,reps=2", 1000) == (2 * 11, 32)  # D = 1024


def test_rotation_counts_the_padded_length_and_nothing_else():
    tb = lambda spec, d: hpcq.compressor(spec).theory_bits(d)  # noqa: E731
    assert tb("hadamard+qsgd:s=4,bucket=0", 1000) == (4 * 1024, 32)
    assert tb("hadamard:block=64+sign", 100) == (128, 32)
    assert tb("hadamard+sign:scale=drive,bucket=0", 1000) == (1024, 32)  # DRIVE: 1 bit + 32
    assert tb("hadamard:block=64+fp32", 65) == (32 * 128, 0)
    assert tb("hadamard+vqsgd:reps=2", 100) == (2 * 8, 32)  # N = 2 * 128
    assert tb("hadamard+fixedrange:bits=2.5", 100) == (320, 0)


def test_qsgd_levels_are_the_decoded_levels():
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    for spec in ("qsgd:s=4,bucket=0", "qsgd:bits=3,bucket=64,norm=linf", "qsgd:s=100"):
        c = hpcq.compressor(spec)
        buf = c.encode(x, seed=2)
        lv = c.levels(buf)
        assert lv.dtype == np.int64 and lv.shape == (1000,)
        s, b = c.p["s"], c.p["bucket"] or 1000
        y = c.decode(buf).astype(np.float64)
        scales = buf[HEADER_BYTES:HEADER_BYTES + 4 * -(-1000 // b)].view(np.float32)
        want = np.round(y * s / np.repeat(scales, b)[:1000]).astype(np.int64)
        np.testing.assert_array_equal(lv, want)
        assert np.abs(lv).max() <= s
    rot = hpcq.compressor("hadamard:block=64+qsgd:s=4,bucket=0")
    assert rot.levels(rot.encode(x)).shape == (1024,)  # the padded, rotated vector's
    c = hpcq.compressor("qsgd:s=4,bucket=0")
    assert c.levels(c.encode(np.zeros(0, np.float32))).shape == (0,)
    with pytest.raises(ValueError, match="parameters"):
        hpcq.compressor("qsgd:s=5,bucket=0").levels(c.encode(x))
    with pytest.raises(ValueError, match="not by qsgd"):
        c.levels(hpcq.compressor("fp32").encode(x))
    bad = c.encode(x)
    bad[HEADER_BYTES + 4:] = 0xFF  # code 15 > 2s = 8
    with pytest.raises(ValueError, match="top level 8"):
        c.levels(bad)


def test_eden_counts_both_widths_and_one_scale_per_rotation_block():
    tb = lambda spec, d: hpcq.compressor(spec).theory_bits(d)  # noqa: E731
    assert tb("eden:bits=2", 1000) == (2 * 1024, 32)  # rotated to 1024, one block
    assert tb("eden:bits=2.5", 1000) == (512 * 3 + 512 * 2, 32)  # round(0.5 n) at 3 bits
    assert tb("hadamard:block=64+eden:bits=4", 100) == (4 * 128, 64)  # two blocks of 64
    assert tb("eden:bits=1.3,code=rans", 1 << 13) == (2458 * 2 + (8192 - 2458), 64)
    # the hi stream's alignment: 3 codes of 2 bits take 1 byte, padded to 4; lo's 5 bits 1
    c = hpcq.compressor("hadamard:block=8+eden:bits=1.375")
    assert c.theory_bits(8) == (3 * 2 + 5, 32) and c.wire_bytes(8) == HEADER_BYTES + 4 + 4 + 1
