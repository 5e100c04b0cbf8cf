# mypy: disable-error-code="no-any-return"
# (NumPy arithmetic on untyped arrays is typed Any; these are plain NumPy expressions)
"""Straightforward vectorised NumPy versions of the codecs: the benchmark's yardstick.

What a careful user would write without Numba: per-bucket scales through
``reshape``, ``rng.random`` for the rounding noise, ``np.floor``, shifts or
``np.packbits`` for packing, a reshape butterfly for the Hadamard transform,
``np.argpartition`` for top-k.  Each implements the same scheme as the codec
(same bits per entry, same scales) so that timing ratios are fair, but not its
exact wire bytes (no header, different random streams).  Only speed is taken
from them; :func:`reference` returns None for codecs that have no reference here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from hpcq.compressors import Compressor
from hpcq.compressors.base import rotation_block_for

Payload = Any


class NumpyRef(NamedTuple):
    """A reference codec: ``decode(encode(x))`` approximates ``x`` like the real one."""

    encode: Callable[[np.ndarray], Payload]
    decode: Callable[[Payload], np.ndarray]


def pack(codes: np.ndarray, width: int) -> np.ndarray:
    """Pack unsigned ``codes`` of ``width`` bits LSB-first into bytes (kernels/bitpack order)."""
    if 8 % width == 0:
        per = 8 // width
        c = np.pad(codes.astype(np.uint8), (0, -codes.shape[0] % per)).reshape(-1, per)
        out = c[:, 0].copy()
        for j in range(1, per):
            out |= c[:, j] << np.uint8(j * width)
        return out
    bits = (codes.astype(np.uint16)[:, None] >> np.arange(width, dtype=np.uint16)) & 1
    return np.packbits(bits.astype(np.uint8).ravel(), bitorder="little")


def unpack(buf: np.ndarray, n: int, width: int) -> np.ndarray:
    """Inverse of :func:`pack`: ``n`` codes of ``width`` bits."""
    if 8 % width == 0:
        per = 8 // width
        shifts = np.arange(per, dtype=np.uint8) * np.uint8(width)
        codes = (buf[:, None] >> shifts) & np.uint8((1 << width) - 1)
        return codes.ravel()[:n]
    bits = np.unpackbits(buf, bitorder="little")[: n * width].reshape(n, width)
    return (bits.astype(np.uint16) << np.arange(width, dtype=np.uint16)).sum(axis=1)


def _buckets(x: np.ndarray, bucket: int) -> np.ndarray:
    """``x`` as rows of ``bucket`` entries; the short last bucket is padded with its last
    value, which changes neither its max-abs nor its min and max."""
    b = bucket if bucket > 0 else max(x.shape[0], 1)
    return np.pad(x, (0, -x.shape[0] % b), mode="edge").reshape(-1, b)


def _affine(x: np.ndarray, rng: np.random.Generator, bucket: int, width: int, nlev: int,
            lo_step: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
            stochastic: bool) -> NumpyRef:
    """Shared body of uniform and QSGD: code = floor((x - lo) / step + u), packed."""
    n = x.shape[0]

    def encode(v: np.ndarray) -> Payload:
        rows = _buckets(v, bucket)
        lo, step = lo_step(rows)
        inv = np.divide(1.0, step, out=np.zeros_like(step), where=step > 0)
        u = rng.random(rows.shape, dtype=np.float32) if stochastic else np.float32(0.5)
        codes = np.clip(np.floor((rows - lo) * inv + u), 0, nlev - 1).astype(np.uint16)
        return lo, step, pack(codes.ravel()[:n], width)

    def decode(p: Payload) -> np.ndarray:
        lo, step, packed = p
        codes = _buckets(unpack(packed, n, width).astype(np.float32), bucket)
        return (lo + codes * step).ravel()[:n]

    return NumpyRef(encode, decode)


def _uniform(c: Compressor, x: np.ndarray, rng: np.random.Generator) -> NumpyRef:
    bits, nlev = int(c.p["bits"]), 1 << int(c.p["bits"])

    def lo_step(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if c.p.get("scale", "maxabs") == "minmax":
            lo, hi = rows.min(axis=1, keepdims=True), rows.max(axis=1, keepdims=True)
        else:
            hi = np.abs(rows).max(axis=1, keepdims=True)
            lo = -hi
        return lo, (hi - lo) / np.float32(nlev - 1)

    return _affine(x, rng, int(c.p.get("bucket", 512)), bits, nlev, lo_step,
                   c.p.get("rounding", "stochastic") == "stochastic")


def _qsgd(c: Compressor, x: np.ndarray, rng: np.random.Generator) -> NumpyRef:
    s = int(c.p.get("s") or 0) or (1 << (int(c.p["bits"]) - 1)) - 1
    width = int(np.ceil(np.log2(2 * s + 1)))

    def lo_step(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if c.p.get("norm", "l2") == "linf":
            norm = np.abs(rows).max(axis=1, keepdims=True)
        else:
            norm = np.sqrt(np.einsum("ij,ij->i", rows, rows))[:, None]
        return -norm, norm / np.float32(s)

    return _affine(x, rng, int(c.p.get("bucket", 512)), width, 2 * s + 1, lo_step,
                   c.p.get("rounding", "stochastic") == "stochastic")


def _sign(c: Compressor, x: np.ndarray, rng: np.random.Generator) -> NumpyRef:
    n, bucket = x.shape[0], int(c.p.get("bucket", 512))

    def encode(v: np.ndarray) -> Payload:
        rows = _buckets(v, bucket)
        l1 = np.abs(rows).sum(axis=1, keepdims=True)
        if c.p.get("scale", "l1") == "drive":
            scale = np.divide((rows * rows).sum(axis=1, keepdims=True), l1,
                              out=np.zeros_like(l1), where=l1 > 0)
        else:
            scale = l1 / np.float32(rows.shape[1])
        return scale, np.packbits(v >= 0, bitorder="little")

    def decode(p: Payload) -> np.ndarray:
        scale, packed = p
        signs = np.unpackbits(packed, count=n, bitorder="little").astype(np.float32) * 2 - 1
        return (_buckets(signs, bucket) * scale).ravel()[:n]

    return NumpyRef(encode, decode)


def _terngrad(c: Compressor, x: np.ndarray, rng: np.random.Generator) -> NumpyRef:
    n, bucket, clip = x.shape[0], int(c.p.get("bucket", 512)), float(c.p.get("clip", 2.5))

    def encode(v: np.ndarray) -> Payload:
        rows = _buckets(v, bucket)
        if clip > 0:
            lim = np.float32(clip) * rows.std(axis=1, keepdims=True)
            rows = np.clip(rows, -lim, lim)
        s = np.abs(rows).max(axis=1, keepdims=True)
        keep = rng.random(rows.shape, dtype=np.float32) * s < np.abs(rows)
        codes = np.where(keep, np.where(rows < 0, 2, 1), 0).astype(np.uint8)
        return s, pack(codes.ravel()[:n], 2)

    def decode(p: Payload) -> np.ndarray:
        s, packed = p
        codes = _buckets(unpack(packed, n, 2).astype(np.float32), bucket)
        return (np.where(codes == 2, -1.0, codes) * s).astype(np.float32).ravel()[:n]

    return NumpyRef(encode, decode)


def _topk(c: Compressor, x: np.ndarray, rng: np.random.Generator) -> NumpyRef:
    n = x.shape[0]
    k = int(c.p["k"]) if c.p.get("k") else max(1, round(float(c.p.get("ratio", 0.01)) * n))
    k = min(k, n)

    def encode(v: np.ndarray) -> Payload:
        idx = np.sort(np.argpartition(np.abs(v), n - k)[n - k:]).astype(np.uint32)
        return idx, v[idx]

    def decode(p: Payload) -> np.ndarray:
        out = np.zeros(n, dtype=np.float32)
        out[p[0]] = p[1]
        return out

    return NumpyRef(encode, decode)


def fwht(rows: np.ndarray) -> np.ndarray:
    """Orthonormal Walsh-Hadamard transform of every row (length a power of two)."""
    m, b = rows.shape
    h = 1
    while h < b:
        pairs = rows.reshape(m, b // (2 * h), 2, h)
        rows = np.stack((pairs[:, :, 0] + pairs[:, :, 1], pairs[:, :, 0] - pairs[:, :, 1]),
                        axis=2).reshape(m, b)
        h *= 2
    return rows * np.float32(1.0 / np.sqrt(b))


def _rotated(c: Compressor, x: np.ndarray, rng: np.random.Generator) -> NumpyRef | None:
    """Randomized Hadamard rotation (fresh random signs per message) around the inner codec."""
    n = x.shape[0]
    block = rotation_block_for(n, c.rotation)
    padded = -(-n // block) * block
    inner = _MAKERS.get(c.name)
    if inner is None:
        return None
    core = inner(c, np.zeros(padded, dtype=np.float32), rng)

    def encode(v: np.ndarray) -> Payload:
        signs = rng.integers(0, 2, padded, dtype=np.int8).astype(np.float32) * 2 - 1
        y = np.pad(v, (0, padded - n)) * signs
        return signs, core.encode(fwht(y.reshape(-1, block)).ravel())

    def decode(p: Payload) -> np.ndarray:
        signs, inner_payload = p
        y = fwht(core.decode(inner_payload).reshape(-1, block)).ravel() * signs
        return y[:n]

    return NumpyRef(encode, decode)


def _minifloat(y: np.ndarray, elem: str) -> np.ndarray:
    """Codes of float32 ``y`` in a small float format (RNE, saturating) with uint32 array ops:
    rebias and round the mantissa for normal results, a magic-number add below them."""
    from hpcq.kernels.fp8 import FORMATS

    e, m, bias, maxc = FORMATS[elem]
    b = y.view(np.uint32)
    f = b & np.uint32(0x7FFFFFFF)
    sh = np.uint32(23 - m)
    magic = np.uint32((151 - bias - m) << 23)
    with np.errstate(over="ignore"):
        normal = (f - np.uint32((127 - bias) << 23) + np.uint32((1 << (22 - m)) - 1)
                  + ((f >> sh) & np.uint32(1))) >> sh
    sub = (f.view(np.float32) + magic.view(np.float32)).view(np.uint32) - magic
    code = np.where(f < np.uint32((128 - bias) << 23), sub, np.minimum(normal, np.uint32(maxc)))
    return (code | ((b >> np.uint32(31)) << np.uint32(e + m))).astype(np.uint8)


def _fp8(c: Compressor, x: np.ndarray, rng: np.random.Generator) -> NumpyRef:
    from hpcq.kernels.fp8 import max_finite, table

    n, fmt = x.shape[0], c.p["format"]
    bucket = int(c.p["bucket"]) if c.p["scale"] == "block" else 0
    big, values = max_finite(fmt), table(fmt)

    def encode(v: np.ndarray) -> Payload:
        rows = _buckets(v, bucket)
        s = (np.abs(rows).max(axis=1, keepdims=True) / np.float32(big)).astype(np.float32)
        inv = np.divide(1.0, s, out=np.zeros_like(s), where=s > 0)
        return s, _minifloat((rows * inv).astype(np.float32).ravel()[:n], fmt)

    def decode(p: Payload) -> np.ndarray:
        s, codes = p
        return (_buckets(values[codes], bucket) * s).ravel()[:n]

    return NumpyRef(encode, decode)


def _mx(c: Compressor, x: np.ndarray, rng: np.random.Generator) -> NumpyRef:
    from hpcq.kernels.mx import MX_FORMATS, element_table

    n, fmt = x.shape[0], c.p["format"]
    elem, width, emax = MX_FORMATS[fmt]
    values = element_table(fmt)

    def encode(v: np.ndarray) -> Payload:
        rows = _buckets(v, 32)
        amax = np.abs(rows).max(axis=1, keepdims=True)
        eb = (amax.view(np.uint32) >> 23).astype(np.int32) - 127
        se = np.maximum(np.where(amax > 0, eb, -126) - emax, -127)
        y = np.ldexp(rows, -se).astype(np.float32).ravel()[:n]
        if elem == "int8":
            codes = np.clip(np.rint(y * 64), -127, 127).astype(np.int8).view(np.uint8)
        else:
            codes = _minifloat(y, elem)
        return (se + 127).astype(np.uint8), pack(codes, width)

    def decode(p: Payload) -> np.ndarray:
        se, packed = p
        codes = unpack(packed, n, width)
        scale = np.ldexp(np.float32(1), se.astype(np.int32) - 127).astype(np.float32)
        return (_buckets(values[codes], 32) * scale).ravel()[:n]

    return NumpyRef(encode, decode)


def _natural(c: Compressor, x: np.ndarray, rng: np.random.Generator) -> NumpyRef:
    n = x.shape[0]

    def encode(v: np.ndarray) -> Payload:
        b = v.view(np.uint32)
        up = rng.integers(0, 1 << 23, n, dtype=np.uint32) < (b & np.uint32(0x7FFFFF))
        exps = (((b >> 23) & np.uint32(0xFF)) + up).astype(np.uint8)
        return exps, np.packbits(b >> 31, bitorder="little")

    def decode(p: Payload) -> np.ndarray:
        exps, signs = p
        s = np.unpackbits(signs, count=n, bitorder="little").astype(np.uint32)
        return ((s << 31) | (exps.astype(np.uint32) << 23)).view(np.float32)

    return NumpyRef(encode, decode)


_MAKERS: dict[str, Callable[[Compressor, np.ndarray, np.random.Generator], NumpyRef]] = {
    "fp32": lambda c, x, rng: NumpyRef(np.copy, np.copy),
    "fp16": lambda c, x, rng: NumpyRef(lambda v: v.astype(np.float16),
                                       lambda p: p.astype(np.float32)),
    "bf16": lambda c, x, rng: NumpyRef(_to_bf16, lambda p: (p.astype(np.uint32) << 16)
                                       .view(np.float32)),
    "uniform": _uniform,
    "qsgd": _qsgd,
    "sign": _sign,
    "terngrad": _terngrad,
    "topk": _topk,
    "fp8": _fp8,
    "mx": _mx,
    "natural": _natural,
}


def _to_bf16(v: np.ndarray) -> np.ndarray:
    b = v.view(np.uint32)
    return ((b + np.uint32(0x7FFF) + ((b >> 16) & np.uint32(1))) >> 16).astype(np.uint16)


def reference(c: Compressor, x: np.ndarray, seed: int = 0) -> NumpyRef | None:
    """The NumPy reference of codec ``c`` for vectors like ``x``, or None if there is none.

    Parameters
    ----------
    c : Compressor
        The codec (its name, parameters and rotation prefix choose the reference).
    x : numpy.ndarray
        A float32 vector of the length the reference will be used on.
    seed : int
        Seed of the reference's own NumPy generator.
    """
    rng = np.random.default_rng(seed)
    try:
        if c.rotation:
            return _rotated(c, x, rng)
        maker = _MAKERS.get(c.name)
        return None if maker is None else maker(c, x, rng)
    except KeyError:
        return None  # a codec whose parameters differ from what the reference knows
