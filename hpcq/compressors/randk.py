"""Random-k sparsification: k coordinates uniformly without replacement, scaled by d/k.

Payload layout: as :mod:`hpcq.compressors.topk` (k fp32 values, or an fp32 scale
m and k b-bit codes, then the indices), except that with ``shared=true`` no
indices are sent: the subset is drawn from the shared index stream of
(seed, step), which the decoder re-derives from the header.  With
``shared=false`` it is drawn from a stream of the private key and the sorted
indices (ceil(log2 n) bits each) follow the values.  The decoder multiplies the
values by n/k, so the estimate is unbiased (omega = n/k - 1; b-bit values add
the variance of stochastic rounding and stay unbiased).
"""

from __future__ import annotations

import math

import numpy as np

from hpcq.compressors import REGISTRY
from hpcq.compressors.affine import ROUND_DELTA
from hpcq.compressors.base import Keys, Param
from hpcq.compressors.topk import (
    SPARSE_PARAMS,
    SparseCodec,
    sparse_nbytes,
    sparse_theory_bits,
)
from hpcq.kernels import sparsify, subset
from hpcq.kernels.rng import PURPOSE_INDICES, derive_key


@REGISTRY.register("randk")
class RandK(SparseCodec):
    """k uniformly random coordinates, scaled by d/k; shared or sent indices."""

    name = "randk"
    codec_id = 21
    summary = "random-k, scaled d/k (unbiased); shared=true sends values only"
    range_check = True  # values rescaled by d/k
    params = SPARSE_PARAMS + (
        Param("shared", bool, True, "indices from the shared (seed, step) stream, not sent",
              slot=3),
    )

    @property
    def unbiased(self) -> bool:
        return True

    def _error_bound(self, n: int) -> float:
        """``n/k - 1`` for fp32 values (exact, for every x): each entry is kept with
        probability k/n and scaled by n/k, so ``E||Q||^2 = (n/k) ||x||^2`` and, unbiased,
        ``E||Q - x||^2 = E||Q||^2 - ||x||^2``.  Shared or sent indices: the same subset law.

        With ``bits=b`` (``L = 2^b - 1`` steps of ``2 m_S / L`` on [-m_S, m_S], ``m_S`` the
        largest selected |x_i|, exact): given the subset S, the other k - 1 values gain a
        variance of at most ``m_S^2 / L^2`` each, ``m_S^2 <= ||x_S||^2`` and ``E||x_S||^2 =
        (k/n) ||x||^2``; scaled by ``(n/k)^2`` this adds ``(n/k)(k - 1)/L^2``.  The codes
        round ``x'`` within ``delta`` steps of x (ROUND_DELTA): ``x'^2 <= x^2 + 2 delta step
        |x| + delta^2 step^2`` and the bias ``-2 x E[Q - x]`` add ``(n/k)(4 delta sqrt(k)/L
        + 4 delta^2 k / L^2) + 4 delta sqrt(k) / L`` (with ``step sum_S |x_i| <= 2 sqrt(k)
        ||x_S||^2 / L``).  Loose for typical data, whose selected values are far below m_S.
        """
        k = self.k_for(n)
        w = n / k - 1.0
        if self.p["bits"] == 0:
            return w
        big_l = float((1 << self.p["bits"]) - 1)
        d = ROUND_DELTA
        drift = 4.0 * d * math.sqrt(k) / big_l
        return w + (n / k) * ((k - 1) / big_l**2 + drift + 4.0 * d * d * k / big_l**2) + drift

    def _payload_nbytes(self, n: int) -> int:
        return sparse_nbytes(n, self.k_for(n), self.p["bits"], not self.p["shared"])

    def _theory_bits(self, n: int) -> tuple[int, int]:
        """``(32 k, 0)`` with shared indices (only the values travel), ``(k (32 +
        ceil(log2 n)), 0)`` with sent ones; b-bit values: ``b k`` (plus the indices) and a
        32-bit scale.  Wire padding < 8 bits per stream."""
        return sparse_theory_bits(n, self.k_for(n), self.p["bits"], not self.p["shared"])

    def _encode_into(self, y: np.ndarray, out: np.ndarray, keys: Keys) -> int:
        n, k, shared = y.shape[0], self.k_for(y.shape[0]), self.p["shared"]
        # a private subset uses its own stream: the rounding draws of keys.private stay independent
        key = keys.indices if shared else derive_key(int(keys.private), PURPOSE_INDICES)
        bitmap = subset.sample_bitmap(n, k, key)
        return self._write(out, sparsify.randk_encode(y, bitmap, k, self.p["bits"], not shared,
                                                      keys.private))

    def _scale(self, n: int, k: int) -> float:
        return n / k if k else 1.0

    def _shared_bitmap(self, n: int, k: int, keys: Keys) -> np.ndarray | None:
        return subset.sample_bitmap(n, k, keys.indices) if self.p["shared"] else None
