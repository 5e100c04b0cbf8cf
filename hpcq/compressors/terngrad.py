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

import math

import numpy as np

from hpcq.compressors import REGISTRY
from hpcq.compressors.affine import ROUND_DELTA, affine_omega, check_bucket
from hpcq.compressors.base import Compressor, Keys, NonFiniteInputError, Param
from hpcq.kernels import quantize, ternary


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

    def _error_bound(self, n: int) -> float:
        """Per bucket of ``nb`` entries (the longest: ``min(bucket, n)``), levels ``{-s, 0, s}``.

        * ``clip=0``: ``s = max |g|``, QSGD's linf case with one level: the max entry is
          exact, stochastic ``min((nb - 1)/4, sqrt(nb - 1)/2)``, nearest
          ``min((nb - 1)/4, sqrt(nb - 1)/4, 1)``
          (:func:`~hpcq.compressors.affine.affine_omega`).
        * ``clip=c > 0``: ``s = min(max |g|, c sigma) <= c sigma <= c ||g|| / sqrt(nb)``
          (the population std is at most the rms).  Clipped entries decode to ``+-s``
          exactly, an error ``|g_i| - s <= |g_i|`` (at most ``||g||^2`` in all).  The others
          round stochastically with
          ``Var <= min(s^2/4, s |g_i|)``, summing to at most ``min(nb s^2/4, s sqrt(nb) ||g||)
          <= min(c^2/4, c) ||g||^2``: ``omega = 1 + min(c^2/4, c)`` (loose: clipping and
          rounding errors cannot both be maximal; c=2.5 gives 2.56, about 1 is typical).
          Nearest: every entry's error is at most ``|g_i|`` (0 is a level, or it is
          clipped), so ``omega = 1``.  A constant bucket (``sigma = 0``) decodes to zeros:
          omega >= 1 cannot be avoided with clipping.

        Each up to terms in ROUND_DELTA (2^-18 of a step).
        """
        b = self.p["bucket"]
        nb = min(b, n) if b else n
        c = float(self.p["clip"])
        st = self.p["rounding"] == "stochastic"
        if c == 0.0:
            return affine_omega(nb - 1, 1.0, math.sqrt(max(nb - 1, 0)) / 2.0, st)
        d = ROUND_DELTA
        if st:
            return 1.0 + min(c * c * (0.25 + d * d), c + c * c * (d + d * d))
        return (1.0 + 2.0 * d * c) ** 2

    def _payload_nbytes(self, n: int) -> int:
        return ternary.payload_nbytes(n, self.p["bucket"])

    def _theory_bits(self, n: int) -> tuple[int, int]:
        """``(2 n, 32 per bucket)``: TernGrad's 2 bits per entry plus the float32 scaler of
        each bucket (the paper's per-layer scaler is ``bucket=0``).  Wire padding < 8 bits."""
        return 2 * n, 32 * quantize.n_buckets(n, self.p["bucket"])

    def _encode_into(self, y: np.ndarray, out: np.ndarray, keys: Keys) -> int:
        if ternary.ternarize(y, out, bucket=self.p["bucket"], clip=self.p["clip"],
                             stochastic=self.p["rounding"] == "stochastic",
                             key=int(keys.private)):
            raise NonFiniteInputError
        return 0

    def _decode_payload(self, payload: np.ndarray, n: int, keys: Keys, aux: int) -> np.ndarray:
        return ternary.deternarize(payload, n, bucket=self.p["bucket"])
