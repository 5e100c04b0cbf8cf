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

from hpcq.compressors import REGISTRY
from hpcq.compressors.affine import AffineQuantizer
from hpcq.compressors.base import Param
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
