"""QSGD: s levels per sign, scaled by each bucket's l2 (or l_inf) norm.

``qsgd:bits=b (or s=levels),bucket=512,norm=l2|linf,rounding=stochastic|nearest``.
``q_i = norm * sgn(x_i) * xi_i`` with ``xi_i`` in ``{0, 1/s, ..., 1}``; stochastic
rounding between the two nearest levels makes it unbiased with
``E||Q(v) - v||^2 <= min(d/s^2, sqrt(d)/s) ||v||^2`` per bucket (l2).  The 2s+1
values take ``bits = ceil(log2(2s + 1))`` bits: ``bits=b`` means ``s = 2^(b-1) - 1``
(default bits=4, s=7), ``s=`` sets bits, and both must agree.  ``bucket=0`` is one
norm for the whole vector (ECQ-SGD's quantizer: ``qsgd:s=4,bucket=0``).

Payload layout: one float32 norm per bucket, then the codes ``c = s + s q_i / norm``
(0..2s) of ``bits`` bits, LSB-first in groups of 8.  Codes above 2s are rejected.
"""

from __future__ import annotations

import math

import numpy as np

from hpcq.compressors import REGISTRY
from hpcq.compressors.affine import AffineQuantizer, affine_omega
from hpcq.compressors.base import HEADER_BYTES, Param
from hpcq.kernels import quantize
from hpcq.kernels.bitpack import unpack_codes

NORMS = {"l2": quantize.L2, "linf": quantize.MAXABS}
DEFAULT_BITS = 4


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

    def levels(self, buf: np.ndarray) -> np.ndarray:
        """The signed integer levels ``l_i = s q_i / norm_b`` in ``[-s, s]`` of message ``buf``.

        int64, one per encoded entry (with a rotation prefix: of the padded, rotated
        vector), read from the payload's codes as ``c - s``: what the entropy-coded
        lengths of :mod:`hpcq.compressors.lengths` take.  ValueError for a message this
        decoder cannot decode, or a code above 2s.
        """
        _, _, n = self._check_message(buf)
        a = self._layout_args()
        start = HEADER_BYTES + 4 * quantize.n_scales(n, a["bucket"], a["mode"])
        codes = unpack_codes(buf[start:], self.p["bits"], n).astype(np.int64)
        s = self.p["s"]
        if n and int(codes.max()) > 2 * s:
            raise ValueError(f"corrupted payload: a code above the top level {2 * s}")
        return codes - s

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
