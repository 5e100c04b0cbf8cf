"""The compressor interface, the self-describing wire header and the rotation prefix.

Wire format of every encoded message (little-endian)
-----------------------------------------------------
======  ====  =========================================================
offset  size  field
======  ====  =========================================================
0       4     magic ``b"HPCQ"``
4       1     format version (:data:`FORMAT_VERSION`)
5       1     codec id (each compressor class has a fixed one)
6       2     flags: bit 0 = Hadamard-rotated, bits 8..12 = log2(block);
              bits 1..7 codec-specific (:data:`FLAG_CODEC`); bit 13 =
              payload CRC-32 follows the payload (:data:`FLAG_PAYLOAD_CRC`)
8       16    four uint32 codec parameters (bits, bucket, ...): what
              decode needs; must equal the decoder's own
24      4     uint32 per-message value (codec-specific, e.g. clip count)
28      8     uint64 d, the length of the original vector
36      8     uint64 seed (shared randomness is re-derived from it)
44      4     uint32 step
48      8     uint64 payload length in bytes
56      4     CRC-32 of bytes 0..55
60      ...   payload (codec-specific layout, documented per codec)
60+len  4     CRC-32 of the payload, only with flag bit 13
======  ====  =========================================================

The header's CRC covers only the header: MPI delivers bytes intact, so a payload
checksum would be pure cost on the wire.  Messages kept in files or replayed
(or sent over a transport that does not check) are encoded with ``crc=True``:
4 more bytes and one CRC-32 pass over the payload, and :meth:`Compressor.decode`
refuses a message whose payload changed (a flipped byte in an fp32 payload
otherwise decodes to a wrong, possibly non-finite, value).

The header costs :data:`HEADER_BYTES` = 60 bytes per message and is counted in
:meth:`Compressor.wire_bytes`.  A variable-length codec (``_payload_nbytes`` None, so
``wire_bytes`` None) sizes its message itself (:meth:`Compressor._encode_message`); its
actual length is the message's, and the header's payload length checks it.  The payload
starts 4-byte aligned, so fp32 scales placed first in a payload can be viewed without a copy.

Randomness: ``encode(x, seed=, step=, rank=)`` derives three independent streams
(:mod:`hpcq.kernels.rng`): *private* (seed, rank, step) for stochastic rounding
and sampling, and *shared* (seed, step) ones for the rotation signs and for
shared indices, which the decoder re-derives from the header's seed and step.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np

from hpcq.kernels import checks
from hpcq.kernels.rng import PURPOSE_INDICES, PURPOSE_ROUNDING, PURPOSE_SIGNS, derive_keys3

MAGIC = b"HPCQ"
FORMAT_VERSION = 1
_HEAD = struct.Struct("<4sBBH4IIQQIQ")
_CRC = struct.Struct("<I")
HEADER_BYTES = _HEAD.size + _CRC.size  # 60
FLAG_ROTATED = 0x1
#: Header flag: a CRC-32 of the payload follows it (``encode(..., crc=True)``).
FLAG_PAYLOAD_CRC = 0x2000
_KNOWN_FLAGS = 0x3FFF
#: The flag bits 1..7 a codec may use for itself (see :meth:`Compressor._encode_message`).
FLAG_CODEC = 0xFE
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1

#: Default rotation block: large enough to flatten coordinates well, small
#: enough that the transform of one block stays in L2.
DEFAULT_ROTATION_BLOCK = 1 << 12


#: Unit roundoff of float32 (round to nearest even).
U32 = 2.0**-24
#: Default ``eta`` of :meth:`Compressor._rounding_error`: the float32 arithmetic of a
#: codec's scales and decoding moves its decoded vector by at most ``eta`` times its norm.
#: 256 float32 roundoffs: the worst codec (sign, whose float32 sums of up to 64 terms per
#: lane give its scale a relative error of about 140 u) stays well inside.
ROUNDING_ERROR = 2.0**-16


class NonFiniteInputError(ValueError):
    """The vector to encode holds NaN or Inf (a bug upstream, never sent on the wire)."""


class Keys(NamedTuple):
    """The random-stream keys of one encode call (see module docstring)."""

    private: np.uint64  # (seed, rank, step): stochastic rounding, sampling
    indices: np.uint64  # (seed, step): shared indices / bit allocation
    signs: np.uint64  # (seed, step): rotation signs

    @staticmethod
    def derive(seed: int, step: int, rank: int = 0) -> Keys:
        """The keys for ``(seed, step, rank)``."""
        u = np.uint64
        return Keys(*derive_keys3(u(seed), u(step), u(rank), u(PURPOSE_ROUNDING),
                                  u(PURPOSE_INDICES), u(PURPOSE_SIGNS)))


@dataclass(frozen=True)
class Param:
    """One parameter of a compressor spec (``name=value`` after the colon)."""

    name: str
    kind: type  # int, float, str or bool
    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    #: Header slot (0..3) carrying this value to the decoder; None if decode does not need it.
    slot: int | None = None

    def to_word(self, v: Any) -> int:
        """The value as the uint32 stored in its header slot."""
        if self.choices is not None:
            return self.choices.index(v)
        if self.kind is float:
            return float_bits(v)
        return int(v) & _U32

    def from_word(self, w: int) -> Any:
        """Inverse of :meth:`to_word`; ValueError if the word is not a valid value."""
        if self.choices is not None:
            if w >= len(self.choices):
                raise ValueError(f"header holds an invalid {self.name} ({w})")
            return self.choices[w]
        if self.kind is float:
            return bits_float(w)
        return bool(w) if self.kind is bool else int(w)

    def parse(self, value: Any, owner: str) -> Any:
        """Convert a spec string (or a Python value) and check range and choices."""
        where = f"{owner}: parameter {self.name}"
        try:
            if self.kind is bool:
                if isinstance(value, str):
                    low = value.strip().lower()
                    if low not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(value)
                    v: Any = low in ("true", "1", "yes")
                else:
                    v = bool(value)
            elif self.kind is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError(value)
                v = int(value)
            elif self.kind is float:
                v = float(value)
                if not np.isfinite(v):
                    raise ValueError(value)
            else:
                v = str(value).strip()
        except (TypeError, ValueError):
            raise ValueError(f"{where}={value!r} is not a valid {self.kind.__name__}") from None
        if self.choices is not None and v not in self.choices:
            raise ValueError(f"{where}={v!r}; valid: {', '.join(map(str, self.choices))}")
        if self.minimum is not None and v < self.minimum:
            raise ValueError(f"{where}={v!r} is below its minimum {self.minimum}")
        if self.maximum is not None and v > self.maximum:
            raise ValueError(f"{where}={v!r} is above its maximum {self.maximum}")
        return v


def parse_params(params: Sequence[Param], values: dict[str, Any], owner: str) -> dict[str, Any]:
    """Every parameter's value: parsed from ``values`` where given, else its default.

    ``owner`` names the thing in errors (``"qsgd"``, ``"method dqgd"``); an unknown key
    is a ValueError that lists the valid ones with their defaults.  Compressors,
    problems and methods all take their parameters this way.
    """
    known = {p.name for p in params}
    unknown = sorted(set(values) - known)
    if unknown:
        valid = ", ".join(f"{p.name} (default {p.default!r})" for p in params) or "none"
        raise ValueError(f"{owner}: unknown parameter(s) {', '.join(unknown)}; valid: {valid}")
    return {p.name: p.parse(values[p.name], owner) if p.name in values else p.default
            for p in params}


class Header(NamedTuple):
    """A parsed message header."""

    codec_id: int
    flags: int
    params: tuple[int, int, int, int]
    aux: int
    d: int
    seed: int
    step: int
    payload_nbytes: int


def parse_header(buf: np.ndarray) -> Header:
    """Parse and verify the header of an encoded message; ValueError on anything wrong."""
    if not isinstance(buf, np.ndarray) or buf.dtype != np.uint8 or buf.ndim != 1:
        raise ValueError("an encoded message must be a 1-D numpy uint8 array")
    if buf.shape[0] < HEADER_BYTES:
        raise ValueError(f"truncated message: {buf.shape[0]} bytes, the header alone is "
                         f"{HEADER_BYTES}")
    raw = buf[:HEADER_BYTES].tobytes()
    (magic, version, codec_id, flags, p0, p1, p2, p3, aux, d, seed, step,
     plen) = _HEAD.unpack_from(raw)
    if magic != MAGIC:
        raise ValueError(f"not an hpcq message (magic {magic!r}, expected {MAGIC!r})")
    (crc,) = _CRC.unpack_from(raw, _HEAD.size)
    if crc != zlib.crc32(raw[: _HEAD.size]):
        raise ValueError("corrupted message: header checksum mismatch")
    if version != FORMAT_VERSION:
        raise ValueError(f"message format version {version}; this hpcq reads {FORMAT_VERSION}")
    if flags & ~_KNOWN_FLAGS:
        raise ValueError(f"message flags {flags:#x} hold bits this hpcq does not know")
    trailer = _CRC.size if flags & FLAG_PAYLOAD_CRC else 0
    if buf.shape[0] != HEADER_BYTES + plen + trailer:
        raise ValueError(f"message length {buf.shape[0]} does not match its header "
                         f"({HEADER_BYTES} + {plen} payload bytes"
                         f"{' + 4 CRC' if trailer else ''}): truncated or padded")
    if trailer:
        end = HEADER_BYTES + plen
        (want,) = _CRC.unpack_from(buf[end:].tobytes())
        if zlib.crc32(buf[HEADER_BYTES:end]) != want:
            raise ValueError("corrupted message: payload checksum mismatch")
    return Header(codec_id, flags, (p0, p1, p2, p3), aux, d, seed, step, plen)


def rotation_block_for(d: int, block: int) -> int:
    """The block actually used for length ``d``: ``block``, or less for short vectors."""
    b = 1
    while b < d and b < block:
        b <<= 1
    return b


class Compressor:
    """Base class: one codec, its parameters, and the optional Hadamard rotation.

    Subclasses set the class attributes and implement the ``_``-hooks; the
    public methods here handle validation, the header, the rotation and errors.
    Instances hold parameters only, never state (error feedback is separate).
    """

    name: ClassVar[str]
    codec_id: ClassVar[int]
    params: ClassVar[tuple[Param, ...]] = ()
    #: One-line description (shown by ``hpcq compressors``).
    summary: ClassVar[str] = ""
    #: True for a codec whose decoded values can exceed its input's largest entry by a
    #: factor that grows with d (norm times a polytope radius, d/k rescaling): :meth:`encode`
    #: then refuses an input whose decoding would not be finite.  Rotated specs always are.
    range_check: ClassVar[bool] = False

    def __init__(self, *, rotation: int = 0, **values: Any) -> None:
        self.p: dict[str, Any] = parse_params(self.params, values, self.name)
        if rotation < 0 or rotation & (rotation - 1):
            raise ValueError(f"hadamard: block={rotation} must be a power of two")
        if rotation > 1 << 24:
            raise ValueError(f"hadamard: block={rotation} is above the maximum 2^24")
        self.rotation = int(rotation)
        self._validate()

    # ----------------------------------------------------------- subclass hooks
    def _validate(self) -> None:
        """Check combinations of parameters; raise ValueError naming them."""

    def _header_params(self) -> tuple[int, int, int, int]:
        """The four uint32 parameters written in (and checked against) the header."""
        words = [0, 0, 0, 0]
        for p in self.params:
            if p.slot is not None:
                words[p.slot] = p.to_word(self.p[p.name])
        return (words[0], words[1], words[2], words[3])

    @classmethod
    def params_from_header(cls, words: tuple[int, int, int, int]) -> dict[str, Any]:
        """The parameters a header carries (the others take their defaults)."""
        return {p.name: p.from_word(words[p.slot]) for p in cls.params if p.slot is not None}

    def _payload_nbytes(self, n: int) -> int | None:
        """Exact payload length for ``n`` (possibly padded) entries, or None if data-dependent."""
        raise NotImplementedError

    def _theory_bits(self, n: int) -> tuple[int, int]:
        """``(payload_bits, side_bits)`` the papers count for ``n >= 1`` encoded entries.

        See :meth:`theory_bits`; the wire payload (:meth:`_payload_nbytes`) holds these
        bits plus the padding of each bit stream to a whole byte (documented per codec).
        """
        raise NotImplementedError

    def _encode_into(self, y: np.ndarray, out: np.ndarray, keys: Keys) -> int:
        """Encode float32 ``y`` into the payload view ``out``; return the aux word.

        Must raise :class:`NonFiniteInputError` if ``y`` holds NaN/Inf.
        """
        raise NotImplementedError

    def _decode_payload(self, payload: np.ndarray, n: int, keys: Keys, aux: int) -> np.ndarray:
        """Decode ``n`` float32 entries from a payload whose length is already checked."""
        raise NotImplementedError

    def _encode_message(self, y: np.ndarray, keys: Keys) -> tuple[np.ndarray, int, int]:
        """Variable-length codecs (``_payload_nbytes`` None) build their whole message here.

        Returns ``(message, aux, flags)``: a uint8 array of :data:`HEADER_BYTES` bytes left
        for :meth:`encode` to fill, then the payload; the aux word; and the codec's flag
        bits (1..7 of the header's flags).  The usual way: encode into a worst-case
        buffer, then return it trimmed (a copy when much shorter, so the rest is freed).
        Must raise :class:`NonFiniteInputError` if ``y`` holds NaN/Inf.
        """
        raise NotImplementedError(f"{self.name} has a data-dependent length")

    def _decode_message(self, payload: np.ndarray, n: int, keys: Keys, h: Header,
                        **into: Any) -> np.ndarray:
        """Decode with the whole header at hand (codec flag bits, aux); ``into`` holds
        ``out=`` and ``add=`` for codecs that ``decodes_into``.  By default
        :meth:`_decode_payload` with the aux word."""
        return self._decode_payload(payload, n, keys, h.aux, **into)

    @property
    def unbiased(self) -> bool:
        """True when E[decode(encode(x))] == x over the encoder's randomness."""
        return False

    def _error_bound(self, n: int) -> float | None:
        """omega of the codec alone on ``n >= 1`` encoded entries, in exact arithmetic.

        ``E||Q(y) - y||^2 <= omega ||y||^2`` for every float32 ``y`` of length ``n``,
        the float32 rounding of the codec's own scales and decoding left out (that is
        :meth:`_rounding_error`), and so is the rotation (:meth:`error_bound`
        composes it).  None: the codec guarantees no relative error (the default, so a
        codec that states nothing promises nothing; every registered codec overrides it).
        """
        return None

    def _rounding_error(self, n: int) -> float:
        """``eta``: the float32 rounding in the codec's scales and decoding moves a decoded
        vector of ``n`` entries by at most ``eta`` times the exact-arithmetic one's norm.

        Default :data:`ROUNDING_ERROR` (2^-16, 256 u): each decoded value comes from a
        float32 scale (itself rounded, from float64 or float32 sums) through a few float32
        operations, each a relative error of at most ``u = 2^-24``.  0 for codecs that
        only move bits (the casts, top-k with fp32 values).
        """
        return ROUNDING_ERROR

    # ------------------------------------------------------------ public API
    @property
    def spec(self) -> str:
        """The canonical spec string, e.g. ``hadamard:block=4096+qsgd:bits=4,...``."""
        body = ",".join(f"{k}={_fmt(v)}" for k, v in self.p.items())
        inner = f"{self.name}:{body}" if body else self.name
        return f"hadamard:block={self.rotation}+{inner}" if self.rotation else inner

    def __repr__(self) -> str:
        return f"compressor({self.spec!r})"

    def _layout(self, d: int) -> tuple[int, int]:
        """(rotation block or 0, number of encoded entries n) for length ``d``."""
        if not self.rotation:
            return 0, d
        b = rotation_block_for(d, self.rotation)
        return b, -(-d // b) * b

    def wire_bytes(self, d: int) -> int | None:
        """Exact length of :meth:`encode`'s output for length ``d``; None if data-dependent."""
        if d < 0:
            raise ValueError(f"d must be >= 0, got {d}")
        pn = self._payload_nbytes(self._layout(d)[1])
        return None if pn is None else HEADER_BYTES + pn

    def theory_bits(self, d: int) -> tuple[int, int]:
        """(payload_bits, side_bits) of one message of length d, as the papers count them.

        * ``payload_bits``: what the papers' formulas count for the values, levels or
          indices (fp32 ``32 d``, QSGD ``d ceil(log2(2s + 1))``, top-k ``k (32 +
          ceil(log2 d))``, vqSGD ``s ceil(log2 N)``, ...; each codec's ``_theory_bits``
          says which);
        * ``side_bits``: every scale, norm or range that has to travel with them (32 per
          float32 scale; 0 for a range both ends know, as in fixedrange).

        Neither counts the :data:`HEADER_BYTES` header (wire overhead, in
        :meth:`wire_bytes`) nor the padding of bit streams to whole bytes, so
        ``payload_bits + side_bits <= 8 (wire_bytes(d) - HEADER_BYTES)``, short by less
        than 8 bits per packed stream for ``d >= 1``.  With a Hadamard rotation prefix
        the codec encodes the ``n = self._layout(d)[1]`` entries of the padded, rotated
        vector, and the counts are those of ``n``; the rotation itself costs nothing (its
        signs come from the shared seed).  ``(0, 0)`` for ``d = 0``.
        """
        if d < 0:
            raise ValueError(f"d must be >= 0, got {d}")
        if d == 0:
            return 0, 0
        payload, side = self._theory_bits(self._layout(d)[1])
        return int(payload), int(side)

    def bits_per_coordinate(self, d: int) -> float | None:
        """Wire bits per input coordinate for length ``d``, header included."""
        wb = self.wire_bytes(d)
        return None if wb is None or d == 0 else 8.0 * wb / d

    def error_bound(self, d: int) -> float | None:
        """The relative squared-error guarantee omega for vectors of length ``d``.

        For every finite float32 ``x`` of length ``d`` whose values and intermediate
        results stay in float32's normal range (no underflow to subnormals),
        ``E||decode(encode(x)) - x||^2 <= omega ||x||^2``: the expectation is over the
        encoder's randomness (stochastic rounding, sampling, the rotation signs), and
        for deterministic codecs the bound holds for every message.  None when the codec
        guarantees no relative error (fixedrange: its error is absolute, set by its
        range).  0.0 for ``d = 0``.

        Composition (why it holds):

        * the codec sees ``n = self._layout(d)[1]`` entries (the rotated, padded vector,
          or ``x`` itself) and guarantees ``omega0 = self._error_bound(n)`` in exact
          arithmetic;
        * its float32 rounding: with ``g = 1 + eta`` (:meth:`_rounding_error`), the
          computed decode is within ``eta ||Q0(y)||`` of the exact one ``Q0(y)``, and
          ``sqrt(E||Q0(y)||^2) <= (1 + sqrt(omega0)) ||y||`` (Minkowski), so
          ``sqrt(omega) <= sqrt(omega0) + eta (1 + sqrt(omega0)) = g (1 + sqrt(omega0)) - 1``;
        * the Hadamard rotation ``R`` (block ``B = 2^k``) is orthonormal in exact
          arithmetic, so the codec's bound carries over (cutting the padding only drops
          error).  In float32 (:mod:`hpcq.kernels.hadamard`: a scaling by the rounded
          ``1/sqrt(B)`` and k levels of butterflies ``a +- b``, each one rounding) the
          computed transform is within ``delta = (1 + u)^(k + 2) - 1`` of the exact one,
          relative to its input's norm, both ways.  With ``yhat = R~ x``,
          ``xhat = R~'(Q(yhat))``:  ``xhat - x = (R~' - R^T) Q(yhat) + R^T (Q(yhat) - yhat)
          + R^T (yhat - R x)``, whose L2 norm is at most
          ``delta (1 + s)(1 + delta) + s (1 + delta) + delta`` times ``||x||``
          (``s = sqrt(omega)`` of the codec) ``= (1 + delta)^2 (1 + s) - 1``: the rotation
          multiplies ``g`` by ``(1 + delta)^2``.

        Casts keep their exact omega (``eta = 0``, no rotation): fp32 0, fp16 2^-22,
        bf16 2^-16.
        """
        if d < 0:
            raise ValueError(f"d must be >= 0, got {d}")
        if d == 0:
            return 0.0
        block, n = self._layout(d)
        w = self._error_bound(n)
        if w is None:
            return None
        g = 1.0 + self._rounding_error(n)
        if block:
            g *= rotation_rounding(block) ** 2
        if g == 1.0:
            return float(w)
        r = g * (1.0 + math.sqrt(w)) - 1.0
        return r * r

    def describe(self) -> dict[str, Any]:
        """Name, spec, parameters and properties, for result files and listings."""
        return {
            "name": self.name,
            "spec": self.spec,
            "params": dict(self.p),
            "rotation_block": self.rotation,
            "unbiased": self.unbiased,
            "header_bytes": HEADER_BYTES,
            "bits_per_coordinate_d1M": self.bits_per_coordinate(1 << 20),
            "error_bound_d1M": self.error_bound(1 << 20),
        }

    def encode(self, x: np.ndarray, *, seed: int = 0, step: int = 0, rank: int = 0,
               crc: bool = False) -> np.ndarray:
        """Encode the 1-D float vector ``x`` into a self-describing uint8 message.

        ``crc=True`` appends a CRC-32 of the payload (for messages kept in files or
        replayed; see the module docstring).
        """
        x_in = x
        x = _as_vector(x, self.name)
        d = x.shape[0]
        for name, v in (("seed", seed), ("step", step), ("rank", rank)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{self.name}: {name} must be an integer, got {v!r}")
        if not (0 <= seed <= _U64 and 0 <= step <= _U32 and rank >= 0):
            raise ValueError(f"seed must be in [0, 2^64), step in [0, 2^32) and rank >= 0; "
                             f"got seed={seed}, step={step}, rank={rank}")
        keys = Keys.derive(seed, step, rank)
        block, n = self._layout(d)
        y = x if not block else _hadamard().rotate(x, block, keys.signs)
        pn = self._payload_nbytes(n)
        try:
            if pn is None:  # variable length: the codec sizes the message itself
                out, aux, codec_flags = self._encode_message(y, keys)
                pn = out.shape[0] - HEADER_BYTES
            else:
                out = np.empty(HEADER_BYTES + pn + (_CRC.size if crc else 0), dtype=np.uint8)
                aux = self._encode_into(y, out[HEADER_BYTES:HEADER_BYTES + pn], keys)
                codec_flags = 0
        except NonFiniteInputError:
            i = checks.first_nonfinite(x)
            what = "is not finite" if not np.isfinite(x_in[i]) else "overflows float32"
            raise NonFiniteInputError(
                f"{self.name}: x[{i}] = {x_in[i]} {what}; NaN/Inf gradients are never encoded"
            ) from None
        flags = (FLAG_ROTATED | (block.bit_length() - 1) << 8) if block else 0
        flags |= FLAG_PAYLOAD_CRC if crc else 0
        if crc:  # a variable-length message has no room for it yet: one copy
            if out.shape[0] == HEADER_BYTES + pn:
                out = np.concatenate([out, np.zeros(_CRC.size, np.uint8)])
            out[HEADER_BYTES + pn:] = np.frombuffer(
                _CRC.pack(zlib.crc32(out[HEADER_BYTES:HEADER_BYTES + pn])), np.uint8)
        self._write_header(out, flags | (codec_flags & FLAG_CODEC), aux, d, seed, step, pn)
        if d and (block or self.range_check):
            self._check_range(out, x)
        return out

    def _check_range(self, msg: np.ndarray, x: np.ndarray) -> None:
        """Refuse a message whose decoding is not finite, the way non-finite input is.

        Only when ``||x||^2`` overflows float32 (``||x|| > 2^64``, one BLAS pass, about a
        tenth of a QSGD encode): below it every decoded value stays finite (the codecs'
        factors over the norm are at most about d), so the message is decoded once more
        here only for inputs no real gradient reaches.
        """
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.dot(x, x)):
                return
            try:
                y = self.decode(msg)
            except ValueError:  # an overflowed value read back as corrupt
                y = np.array([np.inf], np.float32)
        if not np.isfinite(y).all():
            i = int(np.argmax(np.abs(x)))
            raise NonFiniteInputError(
                f"{self.name}: x[{i}] = {x[i]:.4g}: its norm overflows float32 in "
                f"{self.spec} (the decoded vector is not finite); scale the vector down")

    def _write_header(self, out: np.ndarray, flags: int, aux: int, d: int, seed: int,
                      step: int, pn: int) -> None:
        head = _HEAD.pack(MAGIC, FORMAT_VERSION, self.codec_id, flags, *self._header_params(),
                          aux & _U32, d, seed, step, pn)
        out[: _HEAD.size] = np.frombuffer(head, dtype=np.uint8)
        out[_HEAD.size:HEADER_BYTES] = np.frombuffer(_CRC.pack(zlib.crc32(head)), dtype=np.uint8)

    #: True when :meth:`_decode_payload` writes into (or adds to) an ``out`` it is given.
    decodes_into: ClassVar[bool] = False

    def _check_message(self, buf: np.ndarray) -> tuple[Header, int, int]:
        """``(header, rotation block or 0, n)`` of a message this decoder can read;
        ValueError if the codec, parameters, rotation or payload length differ."""
        h = parse_header(buf)
        if h.codec_id != self.codec_id:
            raise ValueError(f"message was encoded by codec id {h.codec_id} "
                             f"({_codec_name(h.codec_id)}), not by {self.name}")
        if h.params != self._header_params():
            raise ValueError(f"message parameters {h.params} differ from this decoder's "
                             f"{self._header_params()} ({self.spec})")
        block, n = self._layout(h.d)
        want_flags = (FLAG_ROTATED | (block.bit_length() - 1) << 8) if block else 0
        if h.flags & 0x1F01 != want_flags:
            raise ValueError(f"message rotation flags {h.flags:#x} do not match {self.spec}")
        pn = self._payload_nbytes(n)
        if pn is not None and pn != h.payload_nbytes:
            raise ValueError(f"payload is {h.payload_nbytes} bytes; {self.spec} with d={h.d} "
                             f"takes {pn}")
        return h, block, n

    def decode(self, buf: np.ndarray, *, out: np.ndarray | None = None,
               add: bool = False) -> np.ndarray:
        """Decode a message made by :meth:`encode` of an equal compressor; float32 of length d.

        With ``out`` (a writeable C-contiguous float32 vector of length d) the result
        is written there, or added to it when ``add`` is True, and ``out`` is
        returned: averaging p messages then needs no d-length array per message,
        nor a separate pass to add it (codecs with ``decodes_into`` do it in their
        kernel; the others decode, then copy or add).  If decoding fails on a
        corrupted payload, ``out`` may be partly written.
        """
        h, block, n = self._check_message(buf)
        if out is not None and not (out.dtype == np.float32 and out.shape == (h.d,)
                                    and out.flags.c_contiguous and out.flags.writeable):
            raise ValueError(f"{self.name}: out must be a writeable C-contiguous float32 vector "
                             f"of d={h.d}, got {out.dtype} {out.shape}")
        keys = Keys.derive(h.seed, h.step)
        payload = buf[HEADER_BYTES:HEADER_BYTES + h.payload_nbytes]  # without a CRC trailer
        if out is not None and self.decodes_into and not block:
            self._decode_message(payload, n, keys, h, out=out, add=add)
            return out
        y = self._decode_message(payload, n, keys, h)
        if y.shape != (n,) or y.dtype != np.float32:  # pragma: no cover - a codec bug
            raise RuntimeError(f"{self.name} decoded {y.shape} {y.dtype}, expected ({n},) float32")
        if block:
            y = _hadamard().unrotate(y, block, keys.signs, h.d)
        if out is None:
            return y
        if add:
            out += y
        else:
            out[:] = y
        return out

    def mean_of(self, messages: Sequence[np.ndarray], d: int,
                out: np.ndarray | None = None) -> np.ndarray:
        """The float32 mean of the decoded ``messages`` (each of length ``d``), summed in order.

        Rotated messages that share one (seed, step) share their rotation signs (derived
        from those alone, :class:`Keys`), and the inverse rotation is linear: their payloads
        are decoded and added in the rotated domain, scaled by 1/p, and rotated back once,
        instead of once per message.  The result equals the per-message mean up to float32
        rounding (the sum is taken before, not after, the inverse transform).  Otherwise
        (no rotation, or messages of different seeds or steps) each message is decoded and
        added in place.  ``out`` (float32, length d) receives the mean when given.
        ValueError for a message of another length or another codec.
        """
        if out is not None and (out.dtype != np.float32 or out.shape != (d,)
                                or not out.flags.c_contiguous):
            raise ValueError(f"{self.name}: out must be a contiguous float32 array of length {d}")
        if not messages:
            if out is None:
                return np.zeros(d, dtype=np.float32)
            out[:] = 0
            return out
        if self.rotation and len(messages) > 1:
            heads = [self._check_message(m) for m in messages]
            h0 = heads[0][0]
            if all((h.seed, h.step) == (h0.seed, h0.step) for h, _, _ in heads):
                return self._mean_rotated(messages, heads, d, out)
        acc = np.empty(d, dtype=np.float32) if out is None else out
        for i, m in enumerate(messages):  # a message of another length: decode's ValueError
            self.decode(m, out=acc, add=i > 0)
        acc /= len(messages)
        return acc

    def _mean_rotated(self, messages: Sequence[np.ndarray],
                      heads: Sequence[tuple[Header, int, int]], d: int,
                      out: np.ndarray | None = None) -> np.ndarray:
        """:meth:`mean_of` of rotated messages of one (seed, step), in the rotated domain."""
        h0, block, n = heads[0]
        for h, _, _ in heads:
            if h.d != d:
                raise ValueError(f"{self.name}: a message has d={h.d}, the mean is of d={d}")
        keys = Keys.derive(h0.seed, h0.step)
        acc = np.empty(n, dtype=np.float32)
        for i, (m, (h, _, _)) in enumerate(zip(messages, heads, strict=False)):
            if self.decodes_into:
                self._decode_message(m[HEADER_BYTES:], n, keys, h, out=acc, add=i > 0)
                continue
            y = self._decode_message(m[HEADER_BYTES:], n, keys, h)
            if i:
                acc += y
            else:
                acc[:] = y
        acc /= len(messages)
        mean: np.ndarray = _hadamard().unrotate(acc, block, keys.signs, d, out=out)
        return mean


def rotation_rounding(block: int) -> float:
    """``1 + delta``: the float32 randomized Hadamard transform of block ``B = 2^k`` (either
    way) is within ``delta ||x||`` of the exact orthonormal one (:meth:`Compressor.error_bound`).

    The scaled, sign-flipped input ``x_i D_i fl(1/sqrt(B))`` is within ``(1 + u)^2 - 1`` of
    ``x_i D_i / sqrt(B)``; each butterfly level rounds every output once, an error of at most
    ``u`` times the exact level's output, whose norm is ``sqrt(2)`` times its input's; so the
    relative error grows as ``1 + r_l <= (1 + u)(1 + r_(l-1))``.  The inverse transform does
    the same in reverse order.
    """
    k = max(0, int(block).bit_length() - 1)
    return (1.0 + U32) ** (k + 2)


def mean_nmse_bound(omega: float | None, unbiased: bool, sq_norms: Sequence[float],
                    mean_sq: float) -> float | None:
    """Bound on the NMSE ``E||mean_i Q(x_i) - m||^2 / ||m||^2`` of a mean of p compressed vectors.

    Rank i compresses its own ``x_i`` with a codec of guarantee ``omega``
    (:meth:`Compressor.error_bound`), ``sq_norms[i] = ||x_i||^2``, ``m = (1/p) sum_i x_i``
    and ``mean_sq = ||m||^2``.  With ``e_i = Q(x_i) - x_i`` the mean's error is
    ``(1/p) sum_i e_i`` and ``E||e_i||^2 <= omega ||x_i||^2``:

    * ``unbiased`` (``E e_i = 0``, and the ranks' randomness independent): the cross terms
      ``E<e_i, e_j>`` vanish, so ``E||sum_i e_i||^2 = sum_i E||e_i||^2`` and the bound is
      ``omega sum_i ||x_i||^2 / (p^2 ||m||^2)``;
    * otherwise (biased, or errors that may be correlated, e.g. shared random-k indices):
      Minkowski's inequality in L2 gives ``sqrt(E||sum_i e_i||^2) <= sum_i sqrt(E||e_i||^2)``,
      so the bound is ``(sum_i sqrt(omega ||x_i||^2))^2 / (p^2 ||m||^2)``.

    (The unbiased form neglects the codecs' float32 rounding biases, about 2^-18 of a
    quantization step per coordinate.)  None when ``omega`` is None (no guarantee); 0.0
    when ``omega == 0``; inf when ``mean_sq == 0`` and the numerator is not 0.
    """
    if omega is None:
        return None
    omega = float(omega)
    if omega < 0 or math.isnan(omega):
        raise ValueError(f"omega must be >= 0, got {omega}")
    p = len(sq_norms)
    if p == 0:
        raise ValueError("sq_norms is empty: a mean of no vectors")
    if omega == 0:
        return 0.0
    sq = [float(v) for v in sq_norms]
    if any(v < 0 or math.isnan(v) for v in sq):
        raise ValueError("sq_norms must be squared norms (>= 0)")
    if unbiased:
        num = omega * math.fsum(sq)
    else:
        num = math.fsum(math.sqrt(omega * v) for v in sq) ** 2
    if num == 0:
        return 0.0
    if mean_sq <= 0:
        return math.inf
    return num / (p * p * float(mean_sq))


def _hadamard() -> Any:
    # imported on first use: the rotation kernels are compiled only when a spec asks for them
    from hpcq.kernels import hadamard

    return hadamard


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _codec_name(codec_id: int) -> str:
    from hpcq.compressors import REGISTRY

    for name, cls in REGISTRY.items():
        if cls.codec_id == codec_id:
            return name
    return "unknown"


def _as_vector(x: Any, owner: str) -> np.ndarray:
    """``x`` as a C-contiguous 1-D float32 array (float64 converted), or a clear error."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{owner}: x must be a numpy array, got {type(x).__name__}")
    if x.ndim != 1:
        raise ValueError(f"{owner}: x must be 1-D (flatten the gradient), got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{owner}: x must be float32 or float64, got {x.dtype}")
    with np.errstate(over="ignore"):  # a float64 beyond float32 range becomes Inf, caught later
        return np.ascontiguousarray(x, dtype=np.float32)


def float_bits(v: float) -> int:
    """The IEEE float32 bit pattern of ``v`` (to store a float in a uint32 header slot)."""
    return int(np.array(v, dtype=np.float32).view(np.uint32))


def bits_float(b: int) -> float:
    """Inverse of :func:`float_bits`."""
    return float(np.array(b, dtype=np.uint32).view(np.float32))
