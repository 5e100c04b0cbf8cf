"""TernGrad: per bucket, clip to ``±clip * sigma``, then ``s * sign * Bernoulli(|g| / s)``.

``terngrad:bucket=512,clip=2.5,rounding=stochastic``.  ``sigma`` is the bucket's
standard deviation and ``s = max |clip(g)|``; ``clip=0`` disables clipping.
E[Q(g)] = clip(g): unbiased for the clipped vector, and for g itself only when
nothing is clipped (``unbiased`` is True only for ``clip=0`` with stochastic
rounding).  ``rounding=nearest`` gives the deterministic ``s * round(clip(g)/s)``.

Payload layout: one float32 ``s`` per bucket, then 2 bits per entry, LSB-first
(0: ``-s``, 1: ``0``, 2: ``+s``; 3 is rejected).
"""

from __future__ import annotations

import numpy as np

from hpcq.compressors import REGISTRY
from hpcq.compressors.affine import check_bucket
from hpcq.compressors.base import Compressor, Keys, NonFiniteInputError, Param
from hpcq.kernels import ternary


@REGISTRY.register("terngrad")
class TernGrad(Compressor):
    """Ternary {-s, 0, s} per bucket after clipping at clip * std."""

    name = "terngrad"
    codec_id = 13
    summary = "TernGrad: clip at c*std, then s*sign*Bernoulli(|g|/s), 2 bits per entry"
    params = (
        Param("bucket", int, 512, "entries per scale (0: one scale for the whole vector)",
              minimum=0, slot=0),
        Param("clip", float, 2.5, "clip at clip * std of the bucket (0: no clipping)",
              minimum=0.0),
        Param("rounding", str, "stochastic", "stochastic (E[Q] = clip(g)) or nearest",
              choices=("stochastic", "nearest")),
    )

    def _validate(self) -> None:
        check_bucket(self.name, self.p["bucket"])

    @property
    def unbiased(self) -> bool:
        return bool(self.p["clip"] == 0.0 and self.p["rounding"] == "stochastic")

    def _payload_nbytes(self, n: int) -> int:
        return ternary.payload_nbytes(n, self.p["bucket"])

    def _encode_into(self, y: np.ndarray, out: np.ndarray, keys: Keys) -> int:
        if ternary.ternarize(y, out, bucket=self.p["bucket"], clip=self.p["clip"],
                             stochastic=self.p["rounding"] == "stochastic",
                             key=int(keys.private)):
            raise NonFiniteInputError
        return 0

    def _decode_payload(self, payload: np.ndarray, n: int, keys: Keys, aux: int) -> np.ndarray:
        return ternary.deternarize(payload, n, bucket=self.p["bucket"])
