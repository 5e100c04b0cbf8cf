"""FP8 cast with a float32 scale: OCP E4M3 or E5M2 elements, one byte per coordinate.

``fp8:format=e4m3|e5m2,scale=tensor|block,bucket=32``.  ``tensor``: one float32 scale
``s = float32(max|x| / F)`` for the whole vector, ``F`` the format's largest finite
value (448 or 57344); ``block``: one per ``bucket`` consecutive entries (the short last
bucket included).  Each entry is cast as ``code(float32(x_i * (1 / s)))`` (the
reciprocal in float64) with :mod:`hpcq.kernels.fp8`: round to nearest even, bit for bit
``ml_dtypes.float8_e4m3fn`` / ``float8_e5m2``, except that a value past ``F`` (only
possible by a float32 rounding of ``max|x| / s``, a few ulps) is clamped to ``F`` before
the cast, where ml_dtypes would give NaN (e4m3fn) or Inf (e5m2).  Decoding:
``value(code) * s``.  An all-zero bucket has scale 0.

Payload: the float32 scales (1 for tensor, ``ceil(d / bucket)`` for block), then one
code byte per entry.  A decoder rejects a negative or non-finite scale and the codes
that are not finite (E4M3 S.1111.111, E5M2 S.11111.xx): encode never writes them.
"""

from __future__ import annotations

import numpy as np

from hpcq.compressors import REGISTRY
from hpcq.compressors.base import Compressor, Keys, NonFiniteInputError, Param
from hpcq.kernels import fp8

FORMATS = ("e4m3", "e5m2")


@REGISTRY.register("fp8")
class FP8(Compressor):
    """FP8 E4M3 / E5M2 with one float32 scale per vector or per bucket."""

    name = "fp8"
    codec_id = 40
    summary = "OCP FP8 (E4M3/E5M2, RNE, as ml_dtypes) with a float32 scale per vector or bucket"
    params = (
        Param("format", str, "e4m3", "element format", choices=FORMATS, slot=0),
        Param("scale", str, "tensor", "tensor = one scale, block = one per bucket",
              choices=("tensor", "block"), slot=1),
        Param("bucket", int, 32, "entries per scale with scale=block", minimum=1,
              maximum=1 << 24, slot=2),
    )

    def _bucket(self) -> int:
        """The kernel's bucket: 0 for one scale."""
        return int(self.p["bucket"]) if self.p["scale"] == "block" else 0

    def _error_bound(self, n: int) -> float:
        """``2^(-2(m+1)) + (L - 1) (h / F)^2`` with ``m`` mantissa bits, ``h`` half the
        subnormal step, ``F`` the largest finite value and ``L`` the longest bucket.

        Each bucket is scaled so that its max maps to ``F``: a scaled entry ``y`` in the
        normal range rounds with ``|q - y| <= 2^-(m+1) |y|`` (the clamp of the max's
        float32 rounding past ``F`` moves it by less); one below the smallest normal by at
        most ``h``.  So ``||q - y||^2 <= 2^(-2(m+1)) ||y||^2 + (L - 1) h^2`` (the max is
        normal) and ``||y||^2 >= F^2``; decoding multiplies both by the same scale.
        E4M3: 2^-8 + (L - 1) 4.7e-12; E5M2: 2^-6 + (L - 1) 1.8e-19.
        """
        e, m, bias, maxc = fp8.FORMATS[self.p["format"]]
        h = 2.0 ** (-bias - m)
        big = fp8.max_finite(self.p["format"])
        b = self._bucket()
        length = min(b, n) if b else n
        return 2.0 ** (-2 * (m + 1)) + (length - 1) * (h / big) ** 2

    def _payload_nbytes(self, n: int) -> int:
        return fp8.payload_nbytes(n, self._bucket())

    def _theory_bits(self, n: int) -> tuple[int, int]:
        """``(8 n, 32 per scale)``; the wire adds no padding."""
        return 8 * n, 32 * fp8.n_scales(n, self._bucket())

    def _encode_into(self, y: np.ndarray, out: np.ndarray, keys: Keys) -> int:
        if fp8.fp8_encode(y, out, fmt=self.p["format"], bucket=self._bucket()):
            raise NonFiniteInputError
        return 0

    decodes_into = True

    def _decode_payload(self, payload: np.ndarray, n: int, keys: Keys, aux: int,
                        out: np.ndarray | None = None, add: bool = False) -> np.ndarray:
        return fp8.fp8_decode(payload, n, fmt=self.p["format"], bucket=self._bucket(),
                              out=out, add=add)
