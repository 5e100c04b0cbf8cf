"""Uniform b-bit stochastic (or nearest) quantization on per-bucket ranges.

``uniform:bits=b,bucket=512,scale=maxabs|minmax,rounding=stochastic|nearest``.
Each bucket of ``bucket`` consecutive entries (``bucket=0``: the whole vector; the
last bucket may be short) gets ``2^b`` evenly spaced levels on ``[-m, m]``
(``scale=maxabs``, ``m = max |x|``) or on ``[min x, max x]`` (``scale=minmax``).
Stochastic rounding is unbiased; nearest is within half a step.  End points, and
so constant buckets, are reproduced exactly.

Payload layout: the float32 scales of all buckets (``m`` each, or ``min, max``
pairs), then the b-bit codes, LSB-first in groups of 8 (``ceil(n b / 8)`` bytes).
Code ``c`` decodes to ``lo + c (hi - lo) / (2^b - 1)``.
"""

from __future__ import annotations

import math

from hpcq.compressors import REGISTRY
from hpcq.compressors.affine import AffineQuantizer, affine_omega
from hpcq.compressors.base import ROUNDING_ERROR, U32, Param
from hpcq.kernels import quantize

SCALES = {"maxabs": quantize.MAXABS, "minmax": quantize.MINMAX}


@REGISTRY.register("uniform")
class Uniform(AffineQuantizer):
    """``2^bits`` evenly spaced levels per bucket, stochastic or nearest rounding."""

    name = "uniform"
    codec_id = 10
    summary = "b-bit uniform levels on each bucket's [-max|x|, max|x|] or [min, max]"
    params = (
        Param("bits", int, 4, "bits per entry", minimum=1, maximum=8, slot=0),
        Param("bucket", int, 512, "entries per scale (0: one scale for the whole vector)",
              minimum=0, slot=1),
        Param("scale", str, "maxabs", "level range per bucket", choices=tuple(SCALES), slot=2),
        Param("rounding", str, "stochastic", "stochastic (unbiased) or nearest",
              choices=("stochastic", "nearest")),
    )

    def _layout_args(self) -> dict[str, int]:
        return {"bucket": self.p["bucket"], "nlev": 1 << self.p["bits"],
                "mode": SCALES[self.p["scale"]]}

    def _theory_bits(self, n: int) -> tuple[int, int]:
        """``(n bits, 32 per bucket)`` for maxabs, ``64`` per bucket (min and max) for minmax
        (Suresh et al.'s pi_sk / pi_srk: ``d log2 k`` bits plus the two scales).  Wire
        padding < 8 bits."""
        return super()._theory_bits(n)

    def _bucket_omega(self, nb: int) -> float:
        """``2^bits`` levels (L = 2^bits - 1 steps): 0 is never a level (L is odd), so each
        erring entry contributes at most ``step^2 / 4`` (stochastic variance, or half a step
        squared for nearest; :func:`~hpcq.compressors.affine.affine_omega`).

        * maxabs: ``step = 2m/L``, ``m = max |x_b| <= ||x_b||``; the max entry is on an end
          level (exact): ``omega = (nb - 1) / L^2``.  Attained: a one-hot bucket's zeros sit
          mid-way between the levels -m/L and m/L.
        * minmax: ``step = (hi - lo)/L``; the min and max entries are exact, and
          ``(hi - lo)^2 <= 2 (hi^2 + lo^2) <= 2 ||x_b||^2`` (<= ``||x_b||^2`` if they share a
          sign): ``omega = (nb - 2) / (2 L^2)``.  Loose when the bucket is not dominated by
          its two extremes.
        """
        big_l = (1 << self.p["bits"]) - 1
        st = self.p["rounding"] == "stochastic"
        if self.p["scale"] == "maxabs":
            return affine_omega(nb - 1, 4.0 / big_l**2, None, st)
        return affine_omega(nb - 2, 2.0 / big_l**2, None, st)

    def _rounding_error(self, n: int) -> float:
        """minmax decodes ``(c - L/2) step + mid`` with ``mid = (lo + hi)/2`` in float32: an
        error of up to about ``4 u max(|lo|, |hi|)`` per entry, not relative to the entry,
        so up to ``4 u sqrt(nb)`` times ``||Q(x_b)||`` (which holds the extreme exactly)."""
        if self.p["scale"] == "maxabs":
            return ROUNDING_ERROR
        return ROUNDING_ERROR + 6.0 * U32 * math.sqrt(self._bucket_len(n))
