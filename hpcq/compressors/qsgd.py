"""QSGD: s levels per sign, scaled by each bucket's l2 (or l_inf) norm.

``qsgd:bits=b (or s=levels),bucket=512,norm=l2|linf,rounding=stochastic|nearest,code=fixed``.
``q_i = norm * sgn(x_i) * xi_i`` with ``xi_i`` in ``{0, 1/s, ..., 1}``; stochastic
rounding between the two nearest levels makes it unbiased with
``E||Q(v) - v||^2 <= min(d/s^2, sqrt(d)/s) ||v||^2`` per bucket (l2).  The 2s+1
values take ``bits = ceil(log2(2s + 1))`` bits: ``bits=b`` means ``s = 2^(b-1) - 1``
(default bits=4, s=7), ``s=`` sets bits, and both must agree.  ``bucket=0`` is one
norm for the whole vector (ECQ-SGD's quantizer: ``qsgd:s=4,bucket=0``).

Payload layout: one float32 norm per bucket, then the codes ``c = s + s q_i / norm``
(0..2s) of ``bits`` bits, LSB-first in groups of 8.  Codes above 2s are rejected.

``code=`` entropy-codes the codes (papers.md 4(a), 5; T11, T14) instead of packing
them; the message length then depends on the data (``wire_bytes`` is None):

* ``elias``: QSGD's own code (:mod:`hpcq.kernels.elias`): per non-zero level the
  Elias omega code of the gap to it, a sign bit and the omega code of its
  magnitude, gaps counted over the whole vector; aux word = the number of
  non-zeros.  ``elias-gamma``: the same with gamma codes;
* ``huffman``: a canonical Huffman code built from this message's histogram, its
  table (code lengths) sent first (:mod:`hpcq.kernels.huffman`);
* ``huffman-static``: a table both ends derive from (s, norm, bucket length) alone:
  Huffman lengths of the level distribution of a Gaussian vector
  (:func:`static_code_lengths`); no table is sent, and the aux word holds its CRC-32,
  so a decoder whose own table differs fails instead of misreading;
* ``rans``: rANS with this message's quantized frequencies, table first
  (:mod:`hpcq.kernels.rans`).

Entropy-coded payload: the norms as above, then the table (if any) and the coded
stream, each zero-padded to a byte.  Whenever that would not be shorter than the
packed codes, the message carries the packed codes instead (the fixed-length
layout) and sets header flag bit 1 (:data:`FLAG_PACKED`): an entropy-coded message
is never longer than the fixed-length one.  The quantization is the same for every
``code``, so a message decodes to exactly the vector the fixed-length one would.
"""
from __future__ import annotations

import math
import zlib
from functools import lru_cache
from typing import Any

import numpy as np

from hpcq.compressors import REGISTRY
from hpcq.compressors.affine import AffineQuantizer, affine_omega
from hpcq.compressors.base import FLAG_CODEC, HEADER_BYTES, Header, Keys, NonFiniteInputError, Param
from hpcq.kernels import elias, huffman, quantize, rans
from hpcq.kernels.bitpack import packed_nbytes, unpack_codes

NORMS = {"l2": quantize.L2, "linf": quantize.MAXABS}
DEFAULT_BITS = 4
#: An entropy-coded message holds at most this many entries per byte of its coded stream,
#: so a decoder never allocates more than the payload can describe (with gaps that skip
#: zeros, 160 bytes could otherwise claim d = 2^40).  Real messages stay far below it
#: (QSGD s=1 on d = 2^40: about 2^15); the encoder packs the codes instead when a message
#: would exceed it (a vector of almost only zeros).
ENTROPY_MAX_ENTRIES_PER_BYTE = 1 << 16
#: ``code=`` values; their index is the header word, so new ones go at the end.
CODES = ("fixed", "elias", "elias-gamma", "huffman", "huffman-static", "rans")
#: Header flag: an entropy-coded spec sent the packed codes (they were not longer).
FLAG_PACKED = 0x2


@REGISTRY.register("qsgd")
class QSGD(AffineQuantizer):
    """QSGD with s levels and a per-bucket norm."""

    name = "qsgd"
    codec_id = 11
    summary = "QSGD: norm * sign * {0, 1/s, ..., 1}, unbiased, per-bucket l2 or linf norm"
    params = (
        Param("bits", int, None, "bits per entry (2..8; s = 2^(bits-1) - 1); "
              f"default {DEFAULT_BITS} unless s is given", minimum=2, maximum=8),
        Param("s", int, None, "non-zero levels per sign (1..127); bits = ceil(log2(2s+1))",
              minimum=1, maximum=127, slot=0),
        Param("bucket", int, 512, "entries per norm (0: one norm for the whole vector)",
              minimum=0, slot=1),
        Param("norm", str, "l2", "scale of each bucket", choices=tuple(NORMS), slot=2),
        Param("rounding", str, "stochastic", "stochastic (unbiased) or nearest",
              choices=("stochastic", "nearest")),
        Param("code", str, "fixed", "fixed-length packing, or an entropy code of the levels "
              "(variable length)", choices=CODES, slot=3),
    )

    def _validate(self) -> None:
        super()._validate()
        bits, s = self.p["bits"], self.p["s"]
        if s is None:
            bits = DEFAULT_BITS if bits is None else bits
            s = (1 << (bits - 1)) - 1
        elif bits is None:
            bits = quantize.code_width(2 * s + 1)
        elif quantize.code_width(2 * s + 1) != bits:
            raise ValueError(f"qsgd: bits={bits} and s={s} disagree: s={s} takes "
                             f"{quantize.code_width(2 * s + 1)} bits, bits={bits} gives "
                             f"s={(1 << (bits - 1)) - 1}; give one of them")
        self.p["bits"], self.p["s"] = bits, s

    def _layout_args(self) -> dict[str, int]:
        return {"bucket": self.p["bucket"], "nlev": 2 * self.p["s"] + 1,
                "mode": NORMS[self.p["norm"]]}

    def _theory_bits(self, n: int) -> tuple[int, int]:
        """ECQ-SGD's fixed-length count ``n ceil(log2(2s + 1))``, which is ``n * bits`` (each
        of the 2s+1 values ``{0, +-1/s, ..., +-1}`` is one ``bits``-bit code, sign and level
        together; ``bits = ceil(log2(2s + 1))`` always holds),
        plus 32 per bucket norm, ``ceil(n / bucket)`` of them (one with ``bucket=0``).
        ``s=4, bucket=0``: ``(4 n, 32)``, papers.md T11.  Wire padding < 8 bits."""
        return super()._theory_bits(n)

    @property
    def spec(self) -> str:
        """The canonical spec; ``code=fixed`` (the default) is left out, so fixed-length
        QSGD keeps the spec it had before entropy codes existed."""
        return super().spec.replace(",code=fixed", "")

    # ------------------------------------------------------------ entropy codes
    def _scale_bytes(self, n: int) -> int:
        a = self._layout_args()
        return 4 * int(quantize.n_scales(n, a["bucket"], a["mode"]))

    def _payload_nbytes(self, n: int) -> int | None:  # type: ignore[override]
        return super()._payload_nbytes(n) if self.p["code"] == "fixed" else None

    def _encode_message(self, y: np.ndarray, keys: Keys) -> tuple[np.ndarray, int, int]:
        """Quantize into a fixed-length message, entropy-code its codes into a buffer one
        byte shorter than them, and keep whichever is shorter (trimmed; copied when less
        than half the size, so the large buffer is freed)."""
        n = y.shape[0]
        a = self._layout_args()
        sb, width = self._scale_bytes(n), self.p["bits"]
        fixed = packed_nbytes(n, width)
        msg = np.empty(HEADER_BYTES + sb + fixed, np.uint8)
        if quantize.quantize(y, msg[HEADER_BYTES:], stochastic=self.p["rounding"] == "stochastic",
                             key=int(keys.private), **a):
            raise NonFiniteInputError
        codes = msg[HEADER_BYTES + sb:]
        coded = np.empty(max(fixed - 1, 0), np.uint8)
        nbytes, aux = self._entropy_encode(codes, n, coded)
        if nbytes < 0 or n > ENTROPY_MAX_ENTRIES_PER_BYTE * max(nbytes, 1):
            return msg, 0, FLAG_PACKED
        end = HEADER_BYTES + sb + nbytes
        msg[HEADER_BYTES + sb:end] = coded[:nbytes]
        return (msg[:end].copy() if 2 * end < msg.shape[0] else msg[:end]), aux, 0

    def _entropy_encode(self, codes: np.ndarray, n: int, out: np.ndarray) -> tuple[int, int]:
        """(bytes written to ``out`` or -1 when they do not fit, aux word)."""
        code, width, s = self.p["code"], self.p["bits"], self.p["s"]
        if code in ("elias", "elias-gamma"):
            _, nbytes, nnz = elias.qsgd_encode(codes, n, width, s, out, omega=code == "elias")
            return nbytes, nnz
        if code == "rans":
            return rans.encode(codes, n, width, 2 * s + 1, out), 0
        if code == "huffman":
            return huffman.encode(codes, n, width, 2 * s + 1, out)[0], 0
        lengths, crc = self._static_table(n)
        return huffman.encode(codes, n, width, 2 * s + 1, out, lengths=lengths)[0], crc

    def _static_nb(self, n: int) -> int:
        b = self.p["bucket"]
        return min(b, n) if b else n

    def _static_table(self, n: int) -> tuple[np.ndarray, int]:
        """The static Huffman lengths for ``n`` entries and their CRC-32 (the aux word)."""
        return static_code_lengths(self.p["s"], self.p["norm"], self._static_nb(n))

    def _fixed_payload(self, payload: np.ndarray, n: int, h: Header) -> np.ndarray:
        """The fixed-length payload (norms, packed codes) of a message's payload."""
        flags = h.flags & FLAG_CODEC
        sb, fixed = self._scale_bytes(n), packed_nbytes(n, self.p["bits"])
        entropy = self.p["code"] != "fixed"
        if (flags and not entropy) or flags & ~FLAG_PACKED or (flags and h.aux):
            raise ValueError(f"corrupted message: codec flags {flags:#x}, aux {h.aux}")
        if not entropy or flags:
            if payload.shape[0] != sb + fixed:
                raise ValueError(f"payload is {payload.shape[0]} bytes; packed codes take "
                                 f"{sb + fixed}")
            return payload
        top = sb + fixed - 1 if n else sb
        if not sb <= payload.shape[0] <= top:
            raise ValueError(f"payload of {payload.shape[0]} bytes: an entropy-coded message "
                             f"of {n} entries takes {sb} to {top}")
        coded = payload.shape[0] - sb
        if n > ENTROPY_MAX_ENTRIES_PER_BYTE * max(coded, 1):
            raise ValueError(f"corrupted message: d={n} from {coded} entropy-coded bytes; such "
                             f"a message holds at most {ENTROPY_MAX_ENTRIES_PER_BYTE} entries "
                             f"per byte")
        out = np.empty(sb + fixed, np.uint8)
        out[:sb] = payload[:sb]
        self._entropy_decode(payload[sb:], n, h.aux, out[sb:])
        return out

    def _entropy_decode(self, stream: np.ndarray, n: int, aux: int, codes: np.ndarray) -> None:
        code, width, s = self.p["code"], self.p["bits"], self.p["s"]
        if code in ("elias", "elias-gamma"):
            elias.qsgd_decode(stream, n, aux, width, s, codes, omega=code == "elias")
        elif code == "rans" or code == "huffman":
            if aux:
                raise ValueError(f"corrupted message: aux word {aux} for {code}")
            (rans if code == "rans" else huffman).decode(stream, n, width, 2 * s + 1, codes)
        else:
            crc = self._static_table(n)[1]
            if aux != crc:
                raise ValueError(f"the message's static Huffman table (CRC-32 {aux:#010x}) is "
                                 f"not this decoder's ({crc:#010x}): ends with different tables")
            huffman.decode(stream, n, width, 2 * s + 1, codes,
                           tables=_static_decoder(s, self.p["norm"], self._static_nb(n)))

    def _decode_message(self, payload: np.ndarray, n: int, keys: Keys, h: Header,
                        **into: Any) -> np.ndarray:
        fixed = self._fixed_payload(payload, n, h)
        y: np.ndarray = quantize.dequantize(fixed, n, **self._layout_args(), **into)
        return y

    def message_bits(self, buf: np.ndarray) -> tuple[int, int]:
        """``(payload_bits, side_bits)`` of one message as sent, the way :meth:`theory_bits`
        counts them: the norms (32 each) and the entropy code's table are side bits, the
        coded stream (byte-padded; rANS's 16 bytes of final states included) or the packed
        codes (``n * bits``) payload.  :meth:`theory_bits` of an entropy-coded spec is the
        fixed-length count, which bounds every message (it falls back to packing)."""
        h, _, n = self._check_message(buf)
        payload = buf[HEADER_BYTES:HEADER_BYTES + h.payload_nbytes]
        sb = self._scale_bytes(n)
        self._fixed_payload(payload, n, h)  # a message that decodes
        if self.p["code"] == "fixed" or h.flags & FLAG_PACKED or n == 0:
            return n * self.p["bits"], 8 * sb
        stream = payload[sb:]
        table = 0
        if self.p["code"] in ("huffman", "rans"):
            coder = huffman if self.p["code"] == "huffman" else rans
            table = coder.table_nbytes(stream, 2 * self.p["s"] + 1)
        return 8 * (stream.shape[0] - table), 8 * (sb + table)

    def levels(self, buf: np.ndarray) -> np.ndarray:
        """The signed integer levels ``l_i = s q_i / norm_b`` in ``[-s, s]`` of message ``buf``.

        int64, one per encoded entry (with a rotation prefix: of the padded, rotated
        vector), read from the payload's codes (entropy-decoded first for ``code=``
        other than fixed) as ``c - s``: what the entropy-coded lengths of
        :mod:`hpcq.compressors.lengths` take.  ValueError for a message this decoder
        cannot decode, or a code above 2s.
        """
        h, _, n = self._check_message(buf)
        fixed = self._fixed_payload(buf[HEADER_BYTES:HEADER_BYTES + h.payload_nbytes], n, h)
        codes = unpack_codes(fixed[self._scale_bytes(n):], self.p["bits"], n).astype(np.int64)
        s = self.p["s"]
        if n and int(codes.max()) > 2 * s:
            raise ValueError(f"corrupted payload: a code above the top level {2 * s}")
        levels: np.ndarray = codes - s
        return levels

    def _bucket_omega(self, nb: int) -> float:
        """Levels ``m {-1, ..., -1/s, 0, 1/s, ..., 1}``: step ``m/s``, 0 a level
        (:func:`~hpcq.compressors.affine.affine_omega`).

        * l2, ``m = ||x_b||``: ``step^2 = ||x_b||^2 / s^2`` and ``step ||x_b||_1 <=
          sqrt(nb) ||x_b||^2 / s``: stochastic ``min(nb / (4 s^2), sqrt(nb) / s)`` (QSGD's
          bound, with the 1/4 that stochastic rounding's ``Var <= step^2/4`` gives), nearest
          ``min(nb / (4 s^2), sqrt(nb) / (2 s), 1)``;
        * linf, ``m = max |x_b|``: the max entry sits on the end level (exact); the other
          ``r`` (``nb - 1`` entries) have ``step ||r||_1 <= (m / s) sqrt(nb - 1) ||r|| <=
          sqrt(nb - 1) ||x_b||^2 / (2 s)`` (``m ||r|| <= (m^2 + ||r||^2) / 2``):
          stochastic ``min((nb - 1) / (4 s^2), sqrt(nb - 1) / (2 s))``, nearest
          ``min((nb - 1) / (4 s^2), sqrt(nb - 1) / (4 s), 1)``;

        each up to terms in ROUND_DELTA (2^-18 of a step).
        """
        s = self.p["s"]
        st = self.p["rounding"] == "stochastic"
        if self.p["norm"] == "l2":
            return affine_omega(nb, 1.0 / (s * s), math.sqrt(nb) / s, st)
        return affine_omega(nb - 1, 1.0 / (s * s), math.sqrt(max(nb - 1, 0)) / (2.0 * s), st)


def _half_normal_levels(s: int, norm: str, nb: int) -> np.ndarray:
    """P(|level| = k), k = 0..s, for a Gaussian bucket of ``nb`` entries (the static model).

    ``|x_i| / scale`` with ``|x_i|`` half-normal and the scale its typical value:
    ``sqrt(nb)`` for l2, ``sqrt(2 ln(2 nb))`` (about the largest of nb) for linf, whose
    largest entry always sits on level s (mass ``1/nb`` there); stochastic rounding
    sends ``r = s |x| / scale`` to k with probability ``max(0, 1 - |r - k|)``.
    """
    z = np.linspace(0.0, 12.0, 24001)
    dens = np.exp(-0.5 * z * z)
    dens /= dens.sum()
    scale = math.sqrt(nb) if norm == "l2" else math.sqrt(2.0 * math.log(2.0 * nb) + 1e-300)
    r = np.minimum(s, s * z / max(scale, 1e-300))
    k = np.arange(s + 1)[:, None]
    p = (np.maximum(0.0, 1.0 - np.abs(r[None, :] - k)) * dens[None, :]).sum(axis=1)
    if norm == "linf":
        p = p * (1.0 - 1.0 / nb)
        p[s] += 1.0 / nb
    out: np.ndarray = p
    return out


@lru_cache(maxsize=64)
def static_code_lengths(s: int, norm: str, nb: int) -> tuple[np.ndarray, int]:
    """``code=huffman-static``'s table for buckets of ``nb`` entries, and its CRC-32.

    Huffman lengths (:func:`hpcq.kernels.huffman.code_lengths`) of the model
    distribution of :func:`_half_normal_levels`, split evenly between signs, as
    integer weights ``max(1, round(p 2^24))`` (every level gets a code).  A pure
    function of its arguments, so both ends build the same table; the CRC in each
    message's header catches an end whose floating point disagrees.
    """
    p = _half_normal_levels(s, norm, max(int(nb), 1))
    w = np.empty(2 * s + 1)
    w[s] = p[0]
    w[s + 1:] = p[1:] / 2
    w[:s] = (p[1:] / 2)[::-1]
    counts = np.maximum(1, np.rint(w * (1 << 24))).astype(np.int64)
    lengths = huffman.code_lengths(counts)
    lengths.flags.writeable = False
    return lengths, zlib.crc32(lengths.tobytes())


@lru_cache(maxsize=64)
def _static_decoder(s: int, norm: str, nb: int) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    tables: tuple[np.ndarray, int, np.ndarray, np.ndarray] = huffman.decoder_tables(
        static_code_lengths(s, norm, nb)[0])
    return tables
