"""DQ-GD's fixed-range cube quantizer: R bits per coordinate on [-r, r], clipping counted.

Payload layout: ceil(floor(n R) / 8) bytes of codes, LSB-first and back to
back, coordinate i taking b_i bits: floor(R) for all, plus one for the
floor(n R) - n floor(R) coordinates drawn uniformly without replacement from the
shared index stream of (seed, step) (nothing is sent for that choice).  Code k
of b bits decodes to the mid-point -r + (k + 0.5) 2r/2^b; b = 0 decodes to 0.
R and r are used as the float32 values the header carries; the range is in the
header and must match the decoder's, so ``with_range(r)`` builds the next
step's compressor.  The number of coordinates with |x_i| > r (clipped) is the
header's aux word: :meth:`FixedRange.clipped` reads it back.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hpcq.compressors import REGISTRY
from hpcq.compressors.base import Compressor, Keys, NonFiniteInputError, Param, parse_header
from hpcq.kernels import fixedrange
from hpcq.kernels.subset import sample_bitmap


@REGISTRY.register("fixedrange")
class FixedRange(Compressor):
    """Uniform scalar quantizer with a range both ends know (DQ-GD's cube quantizer)."""

    name = "fixedrange"
    codec_id = 23
    summary = "fixed range [-r, r], 2^R mid-rise levels, fractional R; clip count in header"
    params = (
        Param("bits", float, 3.0, "bits per coordinate R, 0 < R <= 16 (fractional allowed)",
              minimum=0.0, maximum=16.0, slot=0),
        Param("range", float, 1.0, "quantizer range r > 0 (inputs clipped to [-r, r])",
              minimum=0.0, slot=1),
        Param("rounding", str, "nearest", "nearest cell, or stochastic between mid-points",
              choices=("nearest", "stochastic"), slot=2),
    )

    def _validate(self) -> None:
        if not float(np.float32(self.p["bits"])) > 0:
            raise ValueError(f"fixedrange: bits={self.p['bits']!r} must be > 0")
        r = np.float32(self.p["range"])
        if not (np.isfinite(r) and r > 0):
            raise ValueError(f"fixedrange: range={self.p['range']!r} must be > 0 and within "
                             f"float32 range")

    def _error_bound(self, n: int) -> None:
        """None: no relative guarantee.  The error is absolute, set by the range r: at most
        a half cell ``r / 2^b`` per entry inside [-r, r] (nearest), plus ``|x_i| - r`` for
        clipped entries.  Relative to ``||x||`` it is unbounded: a vector much smaller than
        the range (``x = 1e-6``, r = 1) decodes to cell mid-points far larger than itself.
        """
        return None

    def with_range(self, r: float) -> FixedRange:
        """The same quantizer with range ``r`` (DQ-GD changes it every step)."""
        values: dict[str, Any] = {**self.p, "range": r}
        return type(self)(rotation=self.rotation, **values)

    def clipped(self, buf: np.ndarray) -> int:
        """Number of coordinates that message ``buf`` clipped to [-r, r]."""
        h = parse_header(buf)
        if h.codec_id != self.codec_id:
            raise ValueError(f"message was encoded by codec id {h.codec_id}, not {self.name}")
        return h.aux

    def _alloc(self, n: int, keys: Keys) -> tuple[int, np.ndarray | None, float]:
        """(base bits, bitmap of coordinates with one more bit or None, float32 range)."""
        r32 = float(np.float32(self.p["bits"]))
        b0 = math.floor(r32)
        extra = fixedrange.total_bits(n, r32) - n * b0
        bitmap = sample_bitmap(n, extra, keys.indices) if extra else None
        return b0, bitmap, float(np.float32(self.p["range"]))

    def _payload_nbytes(self, n: int) -> int:
        return (fixedrange.total_bits(n, self.p["bits"]) + 7) // 8

    def _theory_bits(self, n: int) -> tuple[int, int]:
        """``(floor(n R), 0)``: DQ-GD's n R bits per iteration; the range is predetermined
        (both ends compute it), so nothing else travels (DQ-GD's "range sent" variant adds
        its 32 bits itself).  Wire padding < 8 bits."""
        return fixedrange.total_bits(n, self.p["bits"]), 0

    def _encode_into(self, y: np.ndarray, out: np.ndarray, keys: Keys) -> int:
        b0, bitmap, r = self._alloc(y.shape[0], keys)
        codes, clipped, bad = fixedrange.encode(y, b0, bitmap, r,
                                                self.p["rounding"] == "stochastic",
                                                keys.private)
        if bad:
            raise NonFiniteInputError
        out[:] = codes
        return clipped

    def _decode_payload(self, payload: np.ndarray, n: int, keys: Keys, aux: int) -> np.ndarray:
        b0, bitmap, r = self._alloc(n, keys)
        return fixedrange.decode(payload, n, b0, bitmap, r)
