"""Every registered codec's decoder on mutated messages: only ValueError, bounded allocation,
and with the payload CRC on, no corrupted payload decodes at all.

Iterates over the registry, so codecs added later are covered without editing this file.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

import numpy as np
import pytest

from hpcq.compressors import REGISTRY, compressor
from hpcq.compressors.base import _CRC, _HEAD, FLAG_PAYLOAD_CRC, HEADER_BYTES

TRIALS = 60  # mutations per message
SIZES = (1, 37, 300)


def _specs() -> list[str]:
    specs = []
    for name in REGISTRY:
        specs.append(name)
        specs.append(f"hadamard:block=64+{name}")
    specs += ["qsgd:bucket=0,code=elias", "qsgd:bucket=0,code=elias-gamma",
              "qsgd:code=huffman", "qsgd:code=rans", "sign:scale=drive"]
    return specs


def _codec(spec: str) -> Any:
    try:
        return compressor(spec)
    except ValueError as e:  # a codec that takes no rotation, say: nothing to fuzz there
        pytest.skip(f"{spec}: {e}")


def _reheader(msg: np.ndarray, **fields: int) -> np.ndarray:
    """``msg`` with header fields replaced and the header CRC made valid again."""
    names = ("magic", "version", "codec", "flags", "p0", "p1", "p2", "p3", "aux", "d", "seed",
             "step", "plen")
    values = dict(zip(names, _HEAD.unpack_from(msg[:_HEAD.size].tobytes())))
    values.update(fields)
    head = _HEAD.pack(*(values[n] for n in names))
    out = msg.copy()
    out[:_HEAD.size] = np.frombuffer(head, np.uint8)
    out[_HEAD.size:HEADER_BYTES] = np.frombuffer(_CRC.pack(zlib.crc32(head)), np.uint8)
    return out


def _decode_or_value_error(c: Any, msg: np.ndarray, bound: int) -> np.ndarray | None:
    try:
        y = c.decode(msg)
    except ValueError:
        return None
    assert y.dtype == np.float32 and y.ndim == 1
    assert y.shape[0] <= bound, f"{c.spec}: decoded {y.shape[0]} entries (bound {bound})"
    return y


@pytest.mark.parametrize("spec", _specs())
def test_mutated_messages_raise_only_value_error(spec: str) -> None:
    c = _codec(spec)
    rng = np.random.default_rng(zlib.crc32(spec.encode()))
    for d in SIZES:
        x = rng.standard_normal(d).astype(np.float32)
        msg = c.encode(x, seed=int(rng.integers(1 << 30)), step=3)
        bound = max(d, 64) * 2  # rotation pads to the block at most
        assert _decode_or_value_error(c, msg, bound) is not None
        for _ in range(TRIALS):
            m = msg.copy()
            how = rng.integers(6)
            if how == 0:  # flipped bits anywhere
                for i in rng.integers(0, m.shape[0], size=int(rng.integers(1, 4))):
                    m[i] ^= np.uint8(1 << int(rng.integers(8)))
            elif how == 1:  # truncated or padded
                m = m[: int(rng.integers(0, m.shape[0]))] if rng.random() < 0.5 else \
                    np.concatenate([m, rng.integers(0, 256, int(rng.integers(1, 9)), np.uint8)])
            elif how == 2:  # random payload bytes under a valid header
                m[HEADER_BYTES:] = rng.integers(0, 256, m.shape[0] - HEADER_BYTES, np.uint8)
            elif how == 3:  # a header claiming a huge d
                m = _reheader(m, d=[1 << 31, 1 << 40, (1 << 64) - 1][int(rng.integers(3))])
                with pytest.raises(ValueError):
                    c.decode(m)
                continue
            elif how == 4:  # another aux word, seed or step
                m = _reheader(m, aux=int(rng.integers(1 << 32)),
                              seed=int(rng.integers(1 << 63)), step=int(rng.integers(1 << 32)))
            else:  # another payload length
                m = _reheader(m, plen=int(rng.integers(0, 2 * m.shape[0])))
            _decode_or_value_error(c, m, bound)


@pytest.mark.parametrize("spec", ["fp32", "fp16", "bf16", "qsgd:bits=4", "topk:ratio=0.1",
                                  "hadamard+sign"])
def test_payload_crc_catches_every_flipped_byte(spec: str) -> None:
    c = compressor(spec)
    rng = np.random.default_rng(7)
    x = rng.standard_normal(500).astype(np.float32)
    plain, checked = c.encode(x, seed=2), c.encode(x, seed=2, crc=True)
    assert checked.shape[0] == plain.shape[0] + 4
    assert struct.unpack_from("<H", checked, 6)[0] & FLAG_PAYLOAD_CRC
    assert np.array_equal(c.decode(checked), c.decode(plain))
    for i in range(HEADER_BYTES, checked.shape[0]):
        m = checked.copy()
        m[i] ^= np.uint8(1 << int(rng.integers(8)))
        with pytest.raises(ValueError, match="checksum"):
            c.decode(m)


@pytest.mark.parametrize("spec", [s for s in _specs() if "code=" not in s])
@pytest.mark.parametrize("magnitude", [1e35, 1e37, 3.4e38])
def test_finite_input_never_decodes_to_non_finite(spec: str, magnitude: float) -> None:
    c = _codec(spec)
    rng = np.random.default_rng(3)
    for x in (rng.standard_normal(256).astype(np.float32) * np.float32(magnitude / 4),
              np.where(np.arange(256) == 3, np.float32(magnitude),
                       rng.standard_normal(256).astype(np.float32))):
        if not np.isfinite(x).all():
            continue
        try:
            y = c.decode(c.encode(x, seed=5))
        except ValueError:
            continue  # refused at encode, with a message naming the overflow
        assert np.isfinite(y).all(), f"{spec}: finite input near {magnitude} decoded to Inf/NaN"


def test_seed_must_be_an_integer() -> None:
    with pytest.raises(ValueError, match="seed must be an integer"):
        compressor("sign").encode(np.ones(4, np.float32), seed=1.5)  # type: ignore[arg-type]
