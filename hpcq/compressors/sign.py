"""Scaled sign: 1 bit per entry and one float32 scale per bucket (EF-signSGD, DRIVE).

``sign:bucket=512,scale=l1|drive``.  ``Q(x)_i = s_b * sign(x_i)`` with sign(0) = +1
and, per bucket ``b``, ``s_b = ||x_b||_1 / len(b)`` (``l1``: EF-signSGD's scale, the
MSE-minimising one) or ``s_b = ||x_b||_2^2 / ||x_b||_1`` (``drive``: DRIVE's scale,
unbiased over a random rotation, so use it as ``hadamard+sign:scale=drive``).
Biased for a fixed x: use it with error feedback.

Payload layout: the float32 scales of all buckets, then one bit per entry
(1: ``x_i >= 0``), LSB-first.  A negative or non-finite scale is rejected.
"""

from __future__ import annotations

import numpy as np

from hpcq.compressors import REGISTRY
from hpcq.compressors.affine import check_bucket
from hpcq.compressors.base import Compressor, Keys, NonFiniteInputError, Param
from hpcq.kernels import quantize, sign

SCALES = {"l1": sign.L1, "drive": sign.DRIVE}


@REGISTRY.register("sign")
class Sign(Compressor):
    """Scaled sign: ``scale * sign(x)`` per bucket, 1 bit per entry."""

    name = "sign"
    codec_id = 12
    summary = "scaled sign, 1 bit per entry: ||x||_1/d (EF-signSGD) or DRIVE's ||x||^2/||x||_1"
    params = (
        Param("bucket", int, 512, "entries per scale (0: one scale for the whole vector)",
              minimum=0, slot=0),
        Param("scale", str, "l1", "l1 = ||x||_1/len, drive = ||x||_2^2/||x||_1",
              choices=tuple(SCALES)),
    )

    def _validate(self) -> None:
        check_bucket(self.name, self.p["bucket"])

    def _error_bound(self, n: int) -> float:
        """Deterministic, per bucket of ``nb`` entries (the longest: ``min(bucket, n)``):
        since ``x_i sign(x_i) = |x_i|`` (also for sign(0) = +1),
        ``||x - c sign(x)||^2 = ||x||^2 - 2 c ||x||_1 + nb c^2``.

        * l1, ``c = ||x||_1 / nb``: ``||x||^2 - ||x||_1^2 / nb <= (1 - 1/nb) ||x||^2``
          (``||x||_1 >= ||x||``); attained by a one-hot bucket.
        * drive, ``c = ||x||^2 / ||x||_1``: ``(nb ||x||^2 / ||x||_1^2 - 1) ||x||^2 <=
          (nb - 1) ||x||^2``; attained by a one-hot bucket.  Very loose after a rotation
          (DRIVE's point: about ``pi/2 - 1`` for a random rotation), but a bound for every
          input cannot use that.
        """
        b = self.p["bucket"]
        nb = min(b, n) if b else n
        return 1.0 - 1.0 / nb if self.p["scale"] == "l1" else float(nb - 1)

    def _payload_nbytes(self, n: int) -> int:
        return sign.payload_nbytes(n, self.p["bucket"])

    def _theory_bits(self, n: int) -> tuple[int, int]:
        """``(n, 32 per bucket)``: one bit per entry and a float32 scale per bucket (DRIVE:
        ``d`` bits + 32 with ``bucket=0``).  Wire padding < 8 bits."""
        return n, 32 * quantize.n_buckets(n, self.p["bucket"])

    def _encode_into(self, y: np.ndarray, out: np.ndarray, keys: Keys) -> int:
        if sign.sign_encode(y, out, bucket=self.p["bucket"], mode=SCALES[self.p["scale"]]):
            raise NonFiniteInputError
        return 0

    decodes_into = True

    def _decode_payload(self, payload: np.ndarray, n: int, keys: Keys, aux: int,
                        out: np.ndarray | None = None, add: bool = False) -> np.ndarray:
        return sign.sign_decode(payload, n, bucket=self.p["bucket"], out=out, add=add)
