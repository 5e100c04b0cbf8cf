"""vqSGD (Gandikota et al.): the norm plus s point indices of a polytope around the unit ball.

Payload layout: fp32 norm (||g||_2, or ||g||_1 with ``norm=l1``), then the
``reps`` indices, ceil(log2 N) bits each (LSB-first, in draw order), N = 2n
(cross, +-sqrt(n) e_i as 2i / 2i+1), n+1 (simplex vertices) or 2D (hadamard
rows +-h_i as 2i / 2i+1, D = n padded to a power of two).  Empty for n = 0
apart from the norm.  A zero vector is sent with norm 0 and decodes to zeros.
The decoded vector ``norm * (1/s) * sum_k c_{J_k}`` is unbiased, with
MSE/||g||^2 = (n-1)/s (cross, hadamard) or (n^2-1)/s (simplex) for l2.
The point sets and the sampling are described in :mod:`hpcq.kernels.vq`.
"""

from __future__ import annotations

import numpy as np

from hpcq.compressors import REGISTRY
from hpcq.compressors.base import Compressor, Keys, NonFiniteInputError, Param
from hpcq.kernels import vq
from hpcq.kernels.sparsify import index_width


@REGISTRY.register("vqsgd")
class VQSGD(Compressor):
    """Vector quantization onto cross-polytope, simplex or Hadamard points (unbiased)."""

    name = "vqsgd"
    codec_id = 22
    summary = "vqSGD: norm + s indices of polytope points (O(s log d) bits); unbiased"
    range_check = True  # norm times a polytope radius (up to sqrt(d) and more)
    params = (
        Param("points", str, "cross", "point set", choices=vq.POINTS, slot=0),
        Param("reps", int, 1, "i.i.d. draws s averaged", minimum=1, maximum=1 << 20, slot=1),
        Param("norm", str, "l2", "normalisation of g", choices=("l2", "l1"), slot=2),
    )

    @property
    def unbiased(self) -> bool:
        return True

    def _error_bound(self, n: int) -> float:
        """``Q = (r/s) sum_k c_{J_k}``, s = reps i.i.d. draws, ``r`` the norm, points of
        squared norm ``R^2``, ``E[Q] = g``: ``E||Q - g||^2 = (r^2 R^2 - ||g||^2) / s``.

        * cross (``R^2 = n``) and hadamard (rows of +-1, ``R^2 = n`` once cut to n entries;
          uncut ``(D - 1)/s`` would be looser): l2 ``(n - 1)/s``, exact for every g;
        * simplex (circumradius n): l2 ``(n^2 - 1)/s``, exact;
        * l1 scaling (``r = ||g||_1 <= sqrt(n) ||g||``): ``(n^2 - 1)/s`` (cross, hadamard),
          ``(n^3 - 1)/s`` (simplex); equal for flat |g|, loose otherwise (about 1.6x for
          gaussian g).

        The float64 weights and 53-bit sampling move the law by far less than the default
        rounding allowance of a bound that is at least ``1/s >= 2^-20`` for n >= 2 (n = 1
        is exact).
        """
        norm_ratio2 = 1.0 if self.p["norm"] == "l2" else float(n)  # max (r / ||g||)^2
        radius2 = float(n) * n if self.p["points"] == "simplex" else float(n)  # R^2
        return (norm_ratio2 * radius2 - 1.0) / self.p["reps"]

    def _payload_nbytes(self, n: int) -> int:
        npts = vq.n_points(self.p["points"], n)
        return 4 + ((self.p["reps"] * index_width(npts) + 7) // 8 if n else 0)

    def _theory_bits(self, n: int) -> tuple[int, int]:
        """``(reps ceil(log2 N), 32)``: the indices (N = 2n cross, n + 1 simplex, 2D
        hadamard) and the float32 norm; papers.md 2(a) ``s ceil(log2 N) + 32``.  Wire
        padding < 8 bits."""
        return self.p["reps"] * index_width(vq.n_points(self.p["points"], n)), 32

    def _encode_into(self, y: np.ndarray, out: np.ndarray, keys: Keys) -> int:
        norm, idx, bad = vq.vq_encode(y, self.p["points"], self.p["reps"],
                                      self.p["norm"] == "l1", keys.private)
        if bad:
            raise NonFiniteInputError
        out[:4].view(np.float32)[0] = norm
        out[4:] = idx
        return 0

    def _decode_payload(self, payload: np.ndarray, n: int, keys: Keys, aux: int) -> np.ndarray:
        norm = float(payload[:4].view(np.float32)[0])
        return vq.vq_decode(norm, payload[4:], self.p["points"], self.p["reps"], n)
