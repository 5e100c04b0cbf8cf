"""The shared shape of the bucketed affine quantizers (``uniform``, ``qsgd``).

Both are :func:`hpcq.kernels.quantize.quantize` with a different level set per
bucket; a subclass says which through :meth:`AffineQuantizer._layout_args`.
"""

from __future__ import annotations

import math

import numpy as np

from hpcq.compressors.base import Compressor, Keys, NonFiniteInputError
from hpcq.kernels import quantize

#: How far (in quantization steps) the kernels' rounding may sit from exact rounding of x.
#: :mod:`hpcq.kernels.quantize` rounds ``T = round(t 2^24)`` (t: x in steps above the
#: interval's start, from float64 arithmetic) and then rounds T up with probability
#: ``(T mod 2^24) / 2^24`` (or at one half): exact stochastic / nearest rounding of an
#: ``x'`` with ``|x' - x| <= 2^-25`` steps plus the float64 error of t.  That error is
#: below 2^-21 steps for symmetric intervals; a [min, max] interval only a few ulps wide
#: (``|lo| / step`` up to ``255 * 2^23`` when a third value fits in it) gives up to about
#: 2^-20.4.  Top-k / random-k value codes draw 24-bit uniforms: 2^-24.  2^-18 covers all.
ROUND_DELTA = 2.0**-18


def affine_omega(n_err: int, h2: float, c1: float | None, stochastic: bool) -> float:
    """Squared-error bound, in units of ``||x||^2``, of rounding ``n_err`` entries to a grid.

    ``h2`` bounds ``step^2 / ||x||^2``; ``c1`` (None when 0 is not a level) bounds
    ``step ||x_err||_1 / ||x||^2``, ``x_err`` the ``n_err`` entries that may err (the
    others, e.g. a bucket's max on the end level, are exact).  Exact rounding of ``x'``
    (``|x' - x| <= delta step``, :data:`ROUND_DELTA`), per entry:

    * stochastic: ``E(Q - x)^2 = Var + (x' - x)^2`` with ``Var = (x' - a)(b - x')
      <= step^2 / 4`` between levels a < b, and, when 0 is a level, ``Var <= step |x'|``
      (in the first cell ``Var = |x'| (step - |x'|)``, beyond it ``step^2/4 <= step |x'|``);
      so ``n_err h2 (1/4 + delta^2)`` or ``c1 + n_err h2 (delta + delta^2)``;
    * nearest: ``|Q - x| <= step/2 + delta step``, and with 0 a level also
      ``|Q - x| <= |x'| + delta step <= |x| + 2 delta step``; the squares summed give
      ``n_err h2 (1/2 + delta)^2``, or (product of the two) ``(1/2 + delta)(c1 + 2 n_err
      delta h2)``, or (Minkowski) ``(1 + 2 delta sqrt(n_err h2))^2``.
    """
    if n_err <= 0:
        return 0.0
    d = ROUND_DELTA
    if stochastic:
        w = n_err * h2 * (0.25 + d * d)
        if c1 is not None:
            w = min(w, c1 + n_err * h2 * (d + d * d))
        return w
    w = n_err * h2 * (0.5 + d) ** 2
    if c1 is not None:
        w = min(w, (0.5 + d) * (c1 + 2.0 * n_err * d * h2),
                (1.0 + 2.0 * d * math.sqrt(n_err * h2)) ** 2)
    return w


def check_bucket(name: str, bucket: int) -> None:
    """Buckets hold whole groups of 8 codes (so every bucket starts on a byte)."""
    if bucket % 8:
        raise ValueError(f"{name}: bucket={bucket} must be 0 (the whole vector) or a "
                         f"multiple of 8")


class AffineQuantizer(Compressor):
    """A codec over the bucketed affine kernel; needs ``bucket`` and ``rounding`` params."""

    def _layout_args(self) -> dict[str, int]:
        """``bucket``, ``nlev`` and ``mode`` for the kernel."""
        raise NotImplementedError

    def _validate(self) -> None:
        check_bucket(self.name, self.p["bucket"])

    @property
    def unbiased(self) -> bool:
        return bool(self.p["rounding"] == "stochastic")

    def _bucket_omega(self, nb: int) -> float:
        """omega of one bucket of ``nb`` entries (exact arithmetic), increasing in ``nb``."""
        raise NotImplementedError

    def _bucket_len(self, n: int) -> int:
        """The longest bucket over ``n`` entries (``bucket=0``: all of them)."""
        b = self.p["bucket"]
        return min(b, n) if b else n

    def _error_bound(self, n: int) -> float:
        """The worst bucket's omega: buckets are quantized independently, so
        ``E||Q(x) - x||^2 = sum_b E||Q(x_b) - x_b||^2 <= max_b omega_b sum_b ||x_b||^2``,
        and omega_b grows with the bucket length (a short last bucket does no worse)."""
        return self._bucket_omega(self._bucket_len(n))

    def _payload_nbytes(self, n: int) -> int:
        return quantize.payload_nbytes(n, **self._layout_args())

    def _theory_bits(self, n: int) -> tuple[int, int]:
        """``(n ceil(log2 nlev), 32 per float32 scale)``; the codes are one stream (< 8 bits
        of padding on the wire)."""
        a = self._layout_args()
        return (n * quantize.code_width(a["nlev"]),
                32 * quantize.n_scales(n, a["bucket"], a["mode"]))

    def _encode_into(self, y: np.ndarray, out: np.ndarray, keys: Keys) -> int:
        if quantize.quantize(y, out, stochastic=self.p["rounding"] == "stochastic",
                             key=int(keys.private), **self._layout_args()):
            raise NonFiniteInputError
        return 0

    decodes_into = True

    def _decode_payload(self, payload: np.ndarray, n: int, keys: Keys, aux: int,
                        out: np.ndarray | None = None, add: bool = False) -> np.ndarray:
        return quantize.dequantize(payload, n, **self._layout_args(), out=out, add=add)
