"""Natural compression (Horvath et al. 2019): unbiased rounding to a power of two, 9 bits.

``natural``.  Each ``x_i = ±2^e (1 + m)`` becomes ``±2^(e+1)`` with probability ``m``,
else ``±2^e`` (:mod:`hpcq.kernels.natural`): unbiased, with ``E||C(x) - x||^2 <=
||x||^2 / 8`` (the paper's variance factor 9/8).  Sent as a sign and an 8-bit exponent.

Payload: ``d`` exponent bytes (float32's biased exponent after rounding; 0 is zero),
then ``d`` sign bits LSB-first.  An entry ``|x_i| > 2^127`` (which could round to 2^128,
beyond float32) is an error, and so is an exponent byte 255 in a message.
"""

from __future__ import annotations

import numpy as np

from hpcq.compressors import REGISTRY
from hpcq.compressors.base import Compressor, Keys, NonFiniteInputError
from hpcq.kernels import natural


@REGISTRY.register("natural")
class Natural(Compressor):
    """Natural compression: sign and stochastically rounded exponent, 9 bits per entry."""

    name = "natural"
    codec_id = 42
    summary = "natural compression: unbiased stochastic rounding to a power of two, 9 bits"

    @property
    def unbiased(self) -> bool:
        return True

    def _error_bound(self, n: int) -> float:
        """1/8: an entry ``2^e (1 + m)`` has variance ``4^e m (1 - m)``, at most 1/8 of its
        square ``4^e (1 + m)^2`` (the maximum, at m = 1/3); no bias, so the squared errors
        of the entries add.  (A float32 subnormal, outside the normal range the bound
        assumes, has variance ``|x| (2^-126 - |x|)``.)"""
        return 0.125

    def _rounding_error(self, n: int) -> float:
        return 0.0  # decoded values are exact powers of two; no float arithmetic

    def _payload_nbytes(self, n: int) -> int:
        return natural.payload_nbytes(n)

    def _theory_bits(self, n: int) -> tuple[int, int]:
        """``(9 n, 0)``: sign and exponent; the sign bits are padded to a whole byte."""
        return 9 * n, 0

    def _encode_into(self, y: np.ndarray, out: np.ndarray, keys: Keys) -> int:
        bad, big = natural.natural_encode(y, out, key=int(keys.private))
        if bad:
            raise NonFiniteInputError
        if big:
            raise ValueError(f"natural: {big} value(s) above 2^127 could round to 2^128, "
                             f"beyond float32; scale the vector")
        return 0

    decodes_into = True

    def _decode_payload(self, payload: np.ndarray, n: int, keys: Keys, aux: int,
                        out: np.ndarray | None = None, add: bool = False) -> np.ndarray:
        return natural.natural_decode(payload, n, out=out, add=add)
