"""OCP Microscaling (MX) formats: blocks of 32 elements sharing one E8M0 scale.

``mx:format=mxfp8_e4m3|mxfp8_e5m2|mxfp6_e3m2|mxfp6_e2m3|mxfp4|mxint8`` per the OCP
Microscaling Formats Specification v1.0 (see :mod:`hpcq.kernels.mx` for the conversion,
section 6.3: ``X = 2^(floor(log2 max|V|) - emax_elem)``, elements rounded to nearest
even and clamped to the largest normal).  Bits per coordinate: 8, 8, 6, 6, 4, 8, plus
8 per block of 32 (0.25).  Deterministic and biased (by rounding): use it with error
feedback, or average many ranks.

Payload: the E8M0 scale bytes, then the elements packed LSB-first (FP6 4 per 3 bytes,
FP4 2 per byte).  A decoder rejects a NaN scale (0xFF), element codes that are not
finite and element x scale products beyond float32.
"""

from __future__ import annotations

import numpy as np

from hpcq.compressors import REGISTRY
from hpcq.compressors.base import Compressor, Keys, NonFiniteInputError, Param
from hpcq.kernels import fp8, mx


def element_error(fmt: str) -> tuple[float, float, float]:
    """``(r, h, y_lo)`` of MX format ``fmt`` (see :meth:`MX._error_bound`)."""
    elem, _, emax = mx.MX_FORMATS[fmt]
    if elem == "int8":  # steps of 2^-6; a clamped value (127.5 .. 128) / 64 errs < 1/127.5
        return 1.0 / 127.5, 2.0**-7, 1.0
    e, m, bias, maxc = fp8.FORMATS[elem]
    r = max(2.0 ** -(m + 1), 1.0 - fp8.max_finite(elem) / 2.0 ** (emax + 1))
    return r, 2.0 ** (-bias - m), 2.0 ** min(emax, 1)


@REGISTRY.register("mx")
class MX(Compressor):
    """OCP MX: 32 elements (FP8, FP6, FP4 or INT8) and one E8M0 power-of-two scale per block."""

    name = "mx"
    codec_id = 41
    summary = "OCP Microscaling v1.0: 32-element blocks, E8M0 scale, FP8/FP6/FP4/INT8 elements"
    params = (
        Param("format", str, "mxfp8_e4m3", "MX format", choices=tuple(mx.MX_FORMATS), slot=0),
    )

    def _error_bound(self, n: int) -> float:
        """``r^2 + (L - 1) h^2 / y_lo^2``, ``L = min(32, n)``, per block of scaled entries
        ``y = V / X`` (decoding multiplies back by X, exactly):

        * ``r``: relative error of an entry in the element's normal range: ``2^-(m+1)``
          from rounding, or ``1 - F / 2^(emax+1)`` from the clamp of ``[F, 2^(emax+1))``
          to the largest normal F (the larger: E4M3, E5M2, E3M2 1/8, E2M3 1/16, E2M1 1/4;
          INT8 1/127.5);
        * ``h``: the absolute error below the normal range (half the subnormal step;
          INT8 2^-7);
        * ``y_lo``: the block max's least scaled value, ``2^emax``, or 2 when the
          scale is clamped at 2^-127 (a float32-normal max is >= 2^-126): 2^min(emax, 1).

        The max is in the normal range, so ``||q - y||^2 <= r^2 ||y||^2 + (L - 1) h^2``
        and ``||y||^2 >= y_lo^2``.
        """
        r, h, y_lo = element_error(self.p["format"])
        return r * r + (min(mx.K, n) - 1) * (h / y_lo) ** 2

    def _payload_nbytes(self, n: int) -> int:
        return mx.payload_nbytes(n, self.p["format"])

    def _theory_bits(self, n: int) -> tuple[int, int]:
        """``(w n, 8 per block)``, ``w`` the element width; the packed elements are padded
        to a whole byte (FP6, FP4)."""
        return mx.MX_FORMATS[self.p["format"]][1] * n, 8 * (-(-n // mx.K))

    def _rounding_error(self, n: int) -> float:
        return 0.0  # power-of-two scaling: exact in float32's normal range

    def _encode_into(self, y: np.ndarray, out: np.ndarray, keys: Keys) -> int:
        if mx.mx_encode(y, out, fmt=self.p["format"]):
            raise NonFiniteInputError
        return 0

    decodes_into = True

    def _decode_payload(self, payload: np.ndarray, n: int, keys: Keys, aux: int,
                        out: np.ndarray | None = None, add: bool = False) -> np.ndarray:
        return mx.mx_decode(payload, n, fmt=self.p["format"], out=out, add=add)
