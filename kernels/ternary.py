"""TernGrad: per bucket, clip to ``[-c sigma, c sigma]``, then ``s * sign * Bernoulli``.

For a bucket ``g`` (``sigma`` = its standard deviation, population form, from float64
sums; ``c = clip``, 0 disables clipping): ``s = max |clip(g)| = min(max |g|, c sigma)``
and ``q_i = s * sign(g_i) * b_i`` with ``b_i ~ Bernoulli(|clip(g)_i| / s)``, so
``E[q] = clip(g)`` (unbiased for the clipped vector; for ``g`` itself only when nothing
is clipped).  ``rounding = nearest`` gives the deterministic ``s * round(clip(g) / s)``.

This is the affine quantizer of :mod:`hpcq.kernels.quantize` with three levels on
``[-s, s]`` (mode ``TERNARY``): code 0 is ``-s``, 1 is ``0``, 2 is ``+s``; code 3 never
occurs on the wire and is rejected on decoding.  Wire layout: one float32 ``s`` per
bucket, then the 2-bit codes LSB-first (4 per byte).  A constant bucket has
``sigma = 0``, so with clipping it decodes to zeros (``clip(g) = 0``).
"""

from __future__ import annotations

import numpy as np

from hpcq.kernels import quantize as _q

NLEV = 3
WIDTH = 2


def payload_nbytes(n: int, bucket: int) -> int:
    """One float32 scale per bucket plus 2 bits per entry."""
    return _q.payload_nbytes(n, bucket, NLEV, _q.TERNARY)


def ternarize(x: np.ndarray, out: np.ndarray, *, bucket: int, clip: float, stochastic: bool,
              key: int) -> int:
    """Encode float32 ``x`` into ``out``; return the number of buckets holding NaN/Inf."""
    if not (clip >= 0.0 and np.isfinite(clip)):
        raise ValueError(f"clip must be a finite number >= 0, got {clip}")
    return _q.quantize(x, out, bucket=bucket, nlev=NLEV, mode=_q.TERNARY,
                       stochastic=stochastic, key=key, clip=clip)


def deternarize(payload: np.ndarray, n: int, *, bucket: int) -> np.ndarray:
    """Decode ``n`` entries in ``{-s, 0, s}``; ValueError for a bad scale or a code 3."""
    return _q.dequantize(payload, n, bucket=bucket, nlev=NLEV, mode=_q.TERNARY)
